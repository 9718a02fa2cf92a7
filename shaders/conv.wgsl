// Conv2d and ConvTranspose2d, forward and backward, as three gathers over one geometry.
//
// Both layers relate a "fine" tensor to a "coarse" one: fine position f and coarse
// position u meet through tap k when f = u * STRIDE - PAD + k (in each spatial
// dimension), and the weight is laid out [COARSE_C, FINE_C, KSIZE, KSIZE]:
//   Conv2d           fine = input,  coarse = output, weight [C_out, C_in, k, k]
//   ConvTranspose2d  fine = output, coarse = input,  weight [C_in, C_out, k, k]
// so the six passes are three matrix products (operands for gemm.wgsl):
//   to_coarse    coarse[b,cc,u] = sum_{cf,k} fine[b,cf,uS-P+k] W[cc,cf,k]
//                (Conv2d forward; ConvTranspose2d input gradient)
//   to_fine      fine[b,cf,f] = sum_{cc,k : f = uS-P+k} coarse[b,cc,u] W[cc,cf,k]
//                (ConvTranspose2d forward; Conv2d input gradient)
//   weight_grad  dW[cc,cf,k] = sum_{b,u} coarse[b,cc,u] fine[b,cf,uS-P+k]
//                (both weight gradients)
// to_fine gathers instead of scattering (no float atomics, deterministic): fine
// positions split into STRIDE x STRIDE phases by (f + PAD) mod STRIDE, and each phase
// is a dense convolution over the taps k = phase + t * STRIDE. Padding beyond
// KSIZE - 1 (cropping) and coarse positions that never reach the fine tensor both
// fall out of the bounds checks.
//
// Constants (generated): BATCH, FINE_C, FINE_H, FINE_W, COARSE_C, COARSE_H, COARSE_W,
// KSIZE, STRIDE, PAD. Operands arrive in src_a / src_b, the result goes to dst through
// epilogue(); prologue_a / prologue_b apply a fused BatchNorm + activation to
// activations read from the previous layer's raw output.

const TAPS: u32 = (KSIZE + STRIDE - 1u) / STRIDE;
const PHASE_H: u32 = (FINE_H + STRIDE - 1u) / STRIDE;
const PHASE_W: u32 = (FINE_W + STRIDE - 1u) / STRIDE;
const FINE_PLANE: u32 = FINE_H * FINE_W;
const COARSE_PLANE: u32 = COARSE_H * COARSE_W;

fn inside(y: i32, x: i32, h: u32, w: u32) -> bool {
    return y >= 0 && y < i32(h) && x >= 0 && x < i32(w);
}

// ---- to_coarse: rows are coarse pixels (b, uy, ux), columns coarse channels,
// ---- k runs over (cf, ky, kx).

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
    return CoarsePixel(b * FINE_C * FINE_PLANE, y, x, m < GEMM_M);
}

fn to_coarse_a_at(p: CoarsePixel, k: u32) -> f32 {
    let kx = k % KSIZE;
    let ky = (k / KSIZE) % KSIZE;
    let cf = k / (KSIZE * KSIZE);
    let y = p.y + i32(ky);
    let x = p.x + i32(kx);
    let ok = p.valid && inside(y, x, FINE_H, FINE_W);
    let index = select(0u, p.fine_image + cf * FINE_PLANE + u32(y) * FINE_W + u32(x), ok);
    return select(0.0, prologue_a(cf, src_a[index]), ok);
}

struct WeightRow {
    base: u32,
    valid: bool,
}

fn to_coarse_b_col(g: u32, n: u32) -> WeightRow {
    return WeightRow(n * GEMM_K, n < GEMM_N);
}

fn to_coarse_b_at(w: WeightRow, k: u32) -> f32 {
    return select(0.0, src_b[select(0u, w.base + k, w.valid)], w.valid);
}

fn to_coarse_store(g: u32, m: u32, n: u32, value: f32) {
    if m >= GEMM_M || n >= GEMM_N {
        return;
    }
    let ux = m % COARSE_W;
    let uy = (m / COARSE_W) % COARSE_H;
    let b = m / COARSE_PLANE;
    let index = ((b * COARSE_C + n) * COARSE_H + uy) * COARSE_W + ux;
    dst[index] = epilogue(n, index, value);
}

// ---- to_fine: group g is the phase (py, px); rows are that phase's fine pixels
// ---- (b, jy, jx) at f = f0 + STRIDE * j, columns fine channels, k runs over
// ---- (cc, ty, tx) with tap k = phase + STRIDE * t.

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
    // Coarse position reached through tap t = 0; tap t steps back by t.
    let uy = i32((pos.y + PAD - g / STRIDE) / STRIDE);
    let ux = i32((pos.z + PAD - g % STRIDE) / STRIDE);
    let phase = vec2<u32>(g / STRIDE, g % STRIDE);
    return FinePixel(pos.x * COARSE_C * COARSE_PLANE, uy, ux, phase, valid);
}

fn to_fine_a_at(p: FinePixel, k: u32) -> f32 {
    let tx = k % TAPS;
    let ty = (k / TAPS) % TAPS;
    let cc = k / (TAPS * TAPS);
    let ky = p.phase.x + STRIDE * ty;
    let kx = p.phase.y + STRIDE * tx;
    let y = p.uy - i32(ty);
    let x = p.ux - i32(tx);
    let ok = p.valid && ky < KSIZE && kx < KSIZE && inside(y, x, COARSE_H, COARSE_W);
    let index = select(0u, p.coarse_image + cc * COARSE_PLANE + u32(y) * COARSE_W + u32(x), ok);
    return select(0.0, prologue_a(cc, src_a[index]), ok);
}

struct WeightColumn {
    fine_channel: u32,
    phase: vec2<u32>,
    valid: bool,
}

fn to_fine_b_col(g: u32, n: u32) -> WeightColumn {
    return WeightColumn(n, vec2<u32>(g / STRIDE, g % STRIDE), n < GEMM_N);
}

fn to_fine_b_at(w: WeightColumn, k: u32) -> f32 {
    let tx = k % TAPS;
    let ty = (k / TAPS) % TAPS;
    let cc = k / (TAPS * TAPS);
    let ky = w.phase.x + STRIDE * ty;
    let kx = w.phase.y + STRIDE * tx;
    let ok = w.valid && ky < KSIZE && kx < KSIZE;
    let index = ((cc * FINE_C + w.fine_channel) * KSIZE + ky) * KSIZE + kx;
    return select(0.0, src_b[select(0u, index, ok)], ok);
}

fn to_fine_store(g: u32, m: u32, n: u32, value: f32) {
    let pos = fine_position(g, m);
    if m >= GEMM_M || n >= GEMM_N || pos.y >= FINE_H || pos.z >= FINE_W {
        return;
    }
    let index = ((pos.x * FINE_C + n) * FINE_H + pos.y) * FINE_W + pos.z;
    dst[index] = epilogue(n, index, value);
}

// ---- weight_grad: rows are coarse channels, columns (cf, ky, kx), k runs over
// ---- coarse pixels (b, uy, ux).

struct CoarseChannel {
    channel: u32,
    valid: bool,
}

fn weight_grad_a_row(g: u32, m: u32) -> CoarseChannel {
    return CoarseChannel(m, m < GEMM_M);
}

fn weight_grad_a_at(r: CoarseChannel, k: u32) -> f32 {
    let pixel = k % COARSE_PLANE;
    let b = k / COARSE_PLANE;
    let index = (b * COARSE_C + r.channel) * COARSE_PLANE + pixel;
    return select(0.0, prologue_a(r.channel, src_a[select(0u, index, r.valid)]), r.valid);
}

struct FineTap {
    channel: u32,
    ky: u32,
    kx: u32,
    valid: bool,
}

fn weight_grad_b_col(g: u32, n: u32) -> FineTap {
    let kx = n % KSIZE;
    let ky = (n / KSIZE) % KSIZE;
    return FineTap(n / (KSIZE * KSIZE), ky, kx, n < GEMM_N);
}

fn weight_grad_b_at(t: FineTap, k: u32) -> f32 {
    let ux = k % COARSE_W;
    let uy = (k / COARSE_W) % COARSE_H;
    let b = k / COARSE_PLANE;
    let y = i32(uy * STRIDE + t.ky) - i32(PAD);
    let x = i32(ux * STRIDE + t.kx) - i32(PAD);
    let ok = t.valid && inside(y, x, FINE_H, FINE_W);
    let index = (b * FINE_C + t.channel) * FINE_PLANE + u32(y) * FINE_W + u32(x);
    return select(0.0, prologue_b(t.channel, src_b[select(0u, index, ok)]), ok);
}

fn weight_grad_store(g: u32, m: u32, n: u32, value: f32) {
    if m >= GEMM_M || n >= GEMM_N {
        return;
    }
    let index = m * GEMM_N + n;
    dst[index] = epilogue(n, index, value);
}
