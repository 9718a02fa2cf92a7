// Conv2d and ConvTranspose2d, forward and backward, as three gathers over one geometry,
// on NHWC activations.
//
// Both layers relate a "fine" tensor to a "coarse" one: fine position f and coarse
// position u meet through tap k when f = u * STRIDE - PAD + k (in each spatial
// dimension), and the weight (PyTorch's layout) is [COARSE_C, FINE_C, KSIZE, KSIZE]:
//   Conv2d           fine = input,  coarse = output, weight [C_out, C_in, k, k]
//   ConvTranspose2d  fine = output, coarse = input,  weight [C_in, C_out, k, k]
// so the six passes are three matrix products (operands for gemm.wgsl):
//   to_coarse    coarse[b,u,cc] = sum_{k,cf} fine[b,uS-P+k,cf] W[cc,cf,k]
//                (Conv2d forward; ConvTranspose2d input gradient)
//   to_fine      fine[b,f,cf] = sum_{k,cc : f = uS-P+k} coarse[b,u,cc] W[cc,cf,k]
//                (ConvTranspose2d forward; Conv2d input gradient)
//   weight_grad  dW[cc,cf,k] = sum_{b,u} coarse[b,u,cc] fine[b,uS-P+k,cf]
//                (both weight gradients)
// to_fine gathers instead of scattering (no float atomics, deterministic): fine
// positions split into STRIDE x STRIDE phases by (f + PAD) mod STRIDE, and each phase
// is a dense convolution over the taps k = phase + t * STRIDE. Padding beyond
// KSIZE - 1 (cropping) and coarse positions that never reach the fine tensor both
// fall out of the bounds checks.
//
// Channels are innermost everywhere, so the two forward-style gathers run k over
// (tap, channel) and load A_WIDTH / B_WIDTH channels at once; their weights come
// packed so that those channels are
// contiguous too (conv_pack.wgsl). weight_grad loads vectors along its rows (coarse channels) and
// columns (fine channels) instead, and writes PyTorch's layout.
//
// Constants (generated): BATCH, FINE_C, FINE_H, FINE_W, COARSE_C, COARSE_H, COARSE_W,
// KSIZE, STRIDE, PAD. Operands arrive through load_a / load_b, the result goes to dst
// through epilogue(); prologue_a / prologue_b apply a fused BatchNorm + activation to
// activations read from the previous layer's raw output.

const TAPS: u32 = (KSIZE + STRIDE - 1u) / STRIDE;
const PHASE_H: u32 = (FINE_H + STRIDE - 1u) / STRIDE;
const PHASE_W: u32 = (FINE_W + STRIDE - 1u) / STRIDE;
const FINE_IMAGE: u32 = FINE_H * FINE_W * FINE_C;
const COARSE_PLANE: u32 = COARSE_H * COARSE_W;

fn inside(y: i32, x: i32, h: u32, w: u32) -> bool {
    return y >= 0 && y < i32(h) && x >= 0 && x < i32(w);
}

// ---- to_coarse: rows are coarse pixels (b, uy, ux), columns coarse channels, k runs
// ---- over (ky, kx, cf) with cf fastest. B is packed [COARSE_C, KSIZE, KSIZE, FINE_C].

struct CoarsePixel {
    fine_image: u32,
    y: i32,
    x: i32,
    valid: bool,
}

fn to_coarse_a_row(g: u32, m: u32) -> CoarsePixel {
    let ux = m % COARSE_W;
    let uy = (m / COARSE_W) % COARSE_H;
    let b = m / COARSE_PLANE;
    let y = i32(uy * STRIDE) - i32(PAD);
    let x = i32(ux * STRIDE) - i32(PAD);
    return CoarsePixel(b * FINE_IMAGE, y, x, m < GEMM_M);
}

fn to_coarse_a_at(p: CoarsePixel, k: u32) -> AVec {
    let cf = k % FINE_C;
    let tap = k / FINE_C;
    let y = p.y + i32(tap / KSIZE);
    let x = p.x + i32(tap % KSIZE);
    let ok = p.valid && inside(y, x, FINE_H, FINE_W);
    let index = p.fine_image + (u32(y) * FINE_W + u32(x)) * FINE_C + cf;
    return select(A_ZERO, prologue_a(cf, load_a(select(0u, index, ok))), ok);
}

struct WeightRow {
    base: u32,
    valid: bool,
}

fn to_coarse_b_col(g: u32, n: u32) -> WeightRow {
    return WeightRow(n * GEMM_K, n < GEMM_N);
}

fn to_coarse_b_at(w: WeightRow, k: u32) -> BVec {
    return select(B_ZERO, load_b(select(0u, w.base + k, w.valid)), w.valid);
}

fn to_coarse_store(g: u32, m: u32, n: u32, value: f32) {
    if m < GEMM_M && n < GEMM_N {
        let index = m * COARSE_C + n;
        dst[index] = epilogue(n, index, value);
    }
}

// ---- to_fine: group g is the phase (py, px); rows are that phase's fine pixels
// ---- (b, jy, jx) at f = f0 + STRIDE * j, columns fine channels, k runs over
// ---- (ty, tx, cc) with cc fastest and tap k = phase + STRIDE * t.
// ---- B is packed [FINE_C, KSIZE, KSIZE, COARSE_C].

struct FinePixel {
    coarse_image: u32,
    uy: i32,
    ux: i32,
    phase: vec2<u32>,
    valid: bool,
}

// First fine position of phase p: (f0 + PAD) mod STRIDE == p.
fn phase_start(p: u32) -> u32 {
    return (p + STRIDE - PAD % STRIDE) % STRIDE;
}

// (b, fy, fx) of row m of phase g.
fn fine_position(g: u32, m: u32) -> vec3<u32> {
    let jx = m % PHASE_W;
    let jy = (m / PHASE_W) % PHASE_H;
    let b = m / (PHASE_H * PHASE_W);
    let fy = phase_start(g / STRIDE) + STRIDE * jy;
    let fx = phase_start(g % STRIDE) + STRIDE * jx;
    return vec3<u32>(b, fy, fx);
}

fn to_fine_a_row(g: u32, m: u32) -> FinePixel {
    let pos = fine_position(g, m);
    let valid = m < GEMM_M && pos.y < FINE_H && pos.z < FINE_W;
    let phase = vec2<u32>(g / STRIDE, g % STRIDE);
    // Coarse position reached through tap t = 0; tap t steps back by t.
    let uy = i32((pos.y + PAD - phase.x) / STRIDE);
    let ux = i32((pos.z + PAD - phase.y) / STRIDE);
    return FinePixel(pos.x * COARSE_PLANE * COARSE_C, uy, ux, phase, valid);
}

// Tap (ty, tx) of the k-th element in a phase, as kernel offsets (ky, kx).
fn phase_tap(phase: vec2<u32>, k: u32) -> vec2<u32> {
    let t = k / COARSE_C;
    return phase + STRIDE * vec2<u32>(t / TAPS, t % TAPS);
}

fn to_fine_a_at(p: FinePixel, k: u32) -> AVec {
    let cc = k % COARSE_C;
    let t = k / COARSE_C;
    let tap = phase_tap(p.phase, k);
    let y = p.uy - i32(t / TAPS);
    let x = p.ux - i32(t % TAPS);
    let ok = p.valid && tap.x < KSIZE && tap.y < KSIZE && inside(y, x, COARSE_H, COARSE_W);
    let index = p.coarse_image + (u32(y) * COARSE_W + u32(x)) * COARSE_C + cc;
    return select(A_ZERO, prologue_a(cc, load_a(select(0u, index, ok))), ok);
}

struct WeightColumn {
    fine_channel: u32,
    phase: vec2<u32>,
    valid: bool,
}

fn to_fine_b_col(g: u32, n: u32) -> WeightColumn {
    return WeightColumn(n, vec2<u32>(g / STRIDE, g % STRIDE), n < GEMM_N);
}

fn to_fine_b_at(w: WeightColumn, k: u32) -> BVec {
    let tap = phase_tap(w.phase, k);
    let ok = w.valid && tap.x < KSIZE && tap.y < KSIZE;
    let index = ((w.fine_channel * KSIZE + tap.x) * KSIZE + tap.y) * COARSE_C + k % COARSE_C;
    return select(B_ZERO, load_b(select(0u, index, ok)), ok);
}

fn to_fine_store(g: u32, m: u32, n: u32, value: f32) {
    let pos = fine_position(g, m);
    if m < GEMM_M && n < GEMM_N && pos.y < FINE_H && pos.z < FINE_W {
        let index = ((pos.x * FINE_H + pos.y) * FINE_W + pos.z) * FINE_C + n;
        dst[index] = epilogue(n, index, value);
    }
}

// ---- weight_grad: rows are coarse channels, columns (ky, kx, cf) with cf fastest,
// ---- k runs over coarse pixels (b, uy, ux). The result is in PyTorch's layout.

struct CoarseChannel {
    channel: u32,
    valid: bool,
}

fn weight_grad_a_row(g: u32, m: u32) -> CoarseChannel {
    return CoarseChannel(m, m < GEMM_M);
}

fn weight_grad_a_at(r: CoarseChannel, k: u32) -> AVec {
    let ok = r.valid && k < GEMM_K;
    let index = k * COARSE_C + r.channel;
    return select(A_ZERO, prologue_a(r.channel, load_a(select(0u, index, ok))), ok);
}

struct FineTap {
    channel: u32,
    ky: u32,
    kx: u32,
    valid: bool,
}

fn weight_grad_b_col(g: u32, n: u32) -> FineTap {
    let tap = n / FINE_C;
    return FineTap(n % FINE_C, tap / KSIZE, tap % KSIZE, n < GEMM_N);
}

fn weight_grad_b_at(t: FineTap, k: u32) -> BVec {
    let ux = k % COARSE_W;
    let uy = (k / COARSE_W) % COARSE_H;
    let b = k / COARSE_PLANE;
    let y = i32(uy * STRIDE + t.ky) - i32(PAD);
    let x = i32(ux * STRIDE + t.kx) - i32(PAD);
    let ok = t.valid && k < GEMM_K && inside(y, x, FINE_H, FINE_W);
    let index = b * FINE_IMAGE + (u32(y) * FINE_W + u32(x)) * FINE_C + t.channel;
    return select(B_ZERO, prologue_b(t.channel, load_b(select(0u, index, ok))), ok);
}

fn weight_grad_store(g: u32, m: u32, n: u32, value: f32) {
    if m < GEMM_M && n < GEMM_N {
        let tap = n / FINE_C;
        let index = (m * FINE_C + n % FINE_C) * KSIZE * KSIZE + tap;
        dst[index] = epilogue(n, index, value);
    }
}
