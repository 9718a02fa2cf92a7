// BatchNorm2d over NHWC, split so that its cheap per-element work fuses into the
// neighbouring convolutions:
//   train_stats      batch mean and biased variance per channel (one workgroup each),
//                    the running-statistics update (unbiased variance), and the
//                    per-channel affine map  y = x * scale + shift
//   eval_stats       the same affine map from the running statistics
//   apply            y = act(x * scale + shift), when no convolution fuses it
//   backward_reduce  per channel: sum(g) and sum((x - mean) * g), where g is the
//                    gradient at the BatchNorm output (through the activation); they
//                    are the beta and gamma gradients (times invstd)
//   backward_apply   dx = (g - (x - mean) * dotp * invstd^2 / N - sum(g) / N) * invstd * gamma
// The forms follow PyTorch's CPU kernels (output = x * alpha + beta, and the
// backward above) so the two agree to rounding.
//
// Constants (generated): CHANNELS, COUNT (= batch * H * W, values per channel),
// REDUCE_LANES, EPS, MOMENTUM, ACCUMULATE (add parameter gradients to what is there),
// and the activation glue bn_activation(x) / bn_activation_backward(x, dy).

// Layouts of the small per-channel buffers, CHANNELS entries per field. Scale and
// shift come first: convolutions that fuse the affine map read [scale | shift].
const STAT_SCALE: u32 = 0u;
const STAT_SHIFT: u32 = 1u;
const STAT_MEAN: u32 = 2u;
const STAT_INVSTD: u32 = 3u;
const STAT_SUM_G: u32 = 4u;
const STAT_DOT_G: u32 = 5u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
// [gamma | beta]
@group(0) @binding(1) var<storage, read> affine: array<f32>;
// [running_mean | running_var]
@group(0) @binding(2) var<storage, read_write> running: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
// In: gradient at the activation output. Out (backward_apply): gradient at x.
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
// [dgamma | dbeta]
@group(0) @binding(6) var<storage, read_write> affine_grad: array<f32>;

fn stat(field: u32, c: u32) -> f32 {
    return stats[field * CHANNELS + c];
}

// Index of the i-th element of channel c (channels are innermost).
fn element(c: u32, i: u32) -> u32 {
    return i * CHANNELS + c;
}

fn channel_of(index: u32) -> u32 {
    return index % CHANNELS;
}

fn linear_index(workgroup: vec3<u32>, workgroups: vec3<u32>, lane: u32, lanes: u32) -> u32 {
    return (workgroup.x + workgroup.y * workgroups.x) * lanes + lane;
}

fn set_affine_map(c: u32, mean: f32, invstd: f32) {
    let scale = affine[c] * invstd;
    stats[STAT_MEAN * CHANNELS + c] = mean;
    stats[STAT_INVSTD * CHANNELS + c] = invstd;
    stats[STAT_SCALE * CHANNELS + c] = scale;
    stats[STAT_SHIFT * CHANNELS + c] = affine[CHANNELS + c] - mean * scale;
}

@compute @workgroup_size(REDUCE_LANES)
fn train_stats(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // One workgroup per channel; the grid is uniform so the barriers are too.
    let c = workgroup.x + workgroup.y * workgroups.x;
    let in_range = c < CHANNELS;
    var sum = 0.0;
    for (var i = lane; in_range && i < COUNT; i += REDUCE_LANES) {
        sum += x[element(c, i)];
    }
    let mean = workgroup_sum(lane, sum) / f32(COUNT);
    var squares = 0.0;
    for (var i = lane; in_range && i < COUNT; i += REDUCE_LANES) {
        let d = x[element(c, i)] - mean;
        squares += d * d;
    }
    let sum_squares = workgroup_sum(lane, squares);
    if lane == 0u && in_range {
        let variance = sum_squares / f32(COUNT);
        set_affine_map(c, mean, 1.0 / sqrt(variance + EPS));
        let unbiased = sum_squares / f32(max(COUNT, 2u) - 1u);
        running[c] = MOMENTUM * mean + (1.0 - MOMENTUM) * running[c];
        running[CHANNELS + c] = MOMENTUM * unbiased + (1.0 - MOMENTUM) * running[CHANNELS + c];
    }
}

@compute @workgroup_size(64)
fn eval_stats(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    if c < CHANNELS {
        set_affine_map(c, running[c], 1.0 / sqrt(running[CHANNELS + c] + EPS));
    }
}

@compute @workgroup_size(256)
fn apply(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_index(workgroup, workgroups, lane, 256u);
    if i < COUNT * CHANNELS {
        let c = channel_of(i);
        y[i] = bn_activation(x[i] * stat(STAT_SCALE, c) + stat(STAT_SHIFT, c));
    }
}

// Gradient at the BatchNorm output, through the activation.
fn output_grad(c: u32, index: u32) -> f32 {
    let normalized = x[index] * stat(STAT_SCALE, c) + stat(STAT_SHIFT, c);
    return bn_activation_backward(normalized, grad[index]);
}

@compute @workgroup_size(REDUCE_LANES)
fn backward_reduce(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let c = workgroup.x + workgroup.y * workgroups.x;
    let in_range = c < CHANNELS;
    var sum_g = 0.0;
    var dot_g = 0.0;
    let mean = select(0.0, stat(STAT_MEAN, c), in_range);
    for (var i = lane; in_range && i < COUNT; i += REDUCE_LANES) {
        let index = element(c, i);
        let g = output_grad(c, index);
        sum_g += g;
        dot_g += (x[index] - mean) * g;
    }
    let total_g = workgroup_sum(lane, sum_g);
    let total_dot = workgroup_sum(lane, dot_g);
    if lane == 0u && in_range {
        stats[STAT_SUM_G * CHANNELS + c] = total_g;
        stats[STAT_DOT_G * CHANNELS + c] = total_dot;
        let dgamma = total_dot * stat(STAT_INVSTD, c);
        affine_grad[c] = select(0.0, affine_grad[c], ACCUMULATE) + dgamma;
        affine_grad[CHANNELS + c] = select(0.0, affine_grad[CHANNELS + c], ACCUMULATE) + total_g;
    }
}

@compute @workgroup_size(256)
fn backward_apply(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_index(workgroup, workgroups, lane, 256u);
    if i < COUNT * CHANNELS {
        let c = channel_of(i);
        let invstd = stat(STAT_INVSTD, c);
        let k = stat(STAT_DOT_G, c) * invstd * invstd / f32(COUNT);
        let grad_mean = stat(STAT_SUM_G, c) / f32(COUNT);
        let g = output_grad(c, i);
        grad[i] = (g - (x[i] - stat(STAT_MEAN, c)) * k - grad_mean) * invstd * affine[c];
    }
}
