// BatchNorm2d over NHWC, split so that its cheap per-element work fuses into the
// neighbouring convolutions:
//   train_partials   per chunk of pixels and group of channels: Welford's count, mean
//                    and sum of squared deviations
//   train_combine    per group of channels: the chunks combined in a fixed order (Chan's
//                    formula), the running-statistics update (unbiased variance), and the
//                    affine map  y = x * scale + shift  (scale = gamma * invstd)
//   eval_stats       the same affine map from the running statistics
//   apply            y = act(x * scale + shift), when no convolution fuses it
//   backward_partials per chunk and group: sum(g) and sum((x - mean) * g), where g is
//                    the gradient at the BatchNorm output (through the activation)
//   backward_combine the chunks summed in order: the beta and gamma gradients
//   backward_apply   dx = (g - (x - mean) * dot * invstd^2 / N - sum(g) / N) * invstd * gamma
// The forms follow PyTorch's CPU kernels (output = x * alpha + beta, and the backward
// above), so the two agree to rounding. Every reduction runs in a fixed order: the
// same inputs give the same bits. Channels are innermost, so each invocation handles
// a group of WIDTH neighbouring channels with vector loads.
//
// Constants (generated): CHANNELS, GROUPS (= CHANNELS / WIDTH), COUNT (values per
// channel: batch * H * W), CHUNKS, CHUNK (pixels per chunk), EPS, MOMENTUM,
// ACCUMULATE (add parameter gradients to what is there), the type CVec (WIDTH floats)
// and the activation glue bn_activation(x) / bn_activation_backward(x, dy) on CVec.

// Fields of the per-channel buffers, GROUPS vectors each. Scale and shift come first:
// convolutions that fuse the affine map read [scale | shift].
const STAT_SCALE: u32 = 0u;
const STAT_SHIFT: u32 = 1u;
const STAT_MEAN: u32 = 2u;
const STAT_INVSTD: u32 = 3u;
const STAT_SUM_G: u32 = 4u;
const STAT_DOT_G: u32 = 5u;

@group(0) @binding(0) var<storage, read> x: array<CVec>;
// [gamma | beta]
@group(0) @binding(1) var<storage, read> affine: array<CVec>;
// [running_mean | running_var]
@group(0) @binding(2) var<storage, read_write> running: array<CVec>;
@group(0) @binding(3) var<storage, read_write> stats: array<CVec>;
@group(0) @binding(4) var<storage, read_write> y: array<CVec>;
// In: gradient at the activation output. Out (backward_apply): gradient at x.
@group(0) @binding(5) var<storage, read_write> grad: array<CVec>;
// [dgamma | dbeta]
@group(0) @binding(6) var<storage, read_write> affine_grad: array<CVec>;
// Per chunk and group: two vectors (Welford's mean and M2, or the two gradient sums).
@group(0) @binding(7) var<storage, read_write> partials: array<CVec>;

fn stat(field: u32, group: u32) -> CVec {
    return stats[field * GROUPS + group];
}

fn invocation(workgroup: vec3<u32>, workgroups: vec3<u32>, lane: u32) -> u32 {
    return (workgroup.x + workgroup.y * workgroups.x) * 64u + lane;
}

// Pixels of chunk `chunk`: [start, end).
fn chunk_range(chunk: u32) -> vec2<u32> {
    let start = chunk * CHUNK;
    return vec2<u32>(start, min(start + CHUNK, COUNT));
}

fn partial_index(chunk: u32, which: u32, group: u32) -> u32 {
    return (chunk * 2u + which) * GROUPS + group;
}

fn set_affine_map(group: u32, mean: CVec, invstd: CVec) {
    let scale = affine[group] * invstd;
    stats[STAT_MEAN * GROUPS + group] = mean;
    stats[STAT_INVSTD * GROUPS + group] = invstd;
    stats[STAT_SCALE * GROUPS + group] = scale;
    stats[STAT_SHIFT * GROUPS + group] = affine[GROUPS + group] - mean * scale;
}

@compute @workgroup_size(64)
fn train_partials(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = invocation(workgroup, workgroups, lane);
    if i >= CHUNKS * GROUPS {
        return;
    }
    let chunk = i / GROUPS;
    let group = i % GROUPS;
    let range = chunk_range(chunk);
    var mean = CVec(0.0);
    var m2 = CVec(0.0);
    for (var p = range.x; p < range.y; p++) {
        let value = x[p * GROUPS + group];
        let delta = value - mean;
        mean += delta / f32(p - range.x + 1u);
        m2 += delta * (value - mean);
    }
    partials[partial_index(chunk, 0u, group)] = mean;
    partials[partial_index(chunk, 1u, group)] = m2;
}

@compute @workgroup_size(64)
fn train_combine(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = invocation(workgroup, workgroups, lane);
    if group >= GROUPS {
        return;
    }
    var count = 0.0;
    var mean = CVec(0.0);
    var m2 = CVec(0.0);
    for (var chunk = 0u; chunk < CHUNKS; chunk++) {
        let range = chunk_range(chunk);
        let n = f32(range.y - range.x);
        let delta = partials[partial_index(chunk, 0u, group)] - mean;
        let total = count + n;
        mean += delta * (n / total);
        m2 += partials[partial_index(chunk, 1u, group)] + delta * delta * (count * n / total);
        count = total;
    }
    set_affine_map(group, mean, 1.0 / sqrt(m2 / f32(COUNT) + EPS));
    let unbiased = m2 / f32(max(COUNT, 2u) - 1u);
    running[group] = MOMENTUM * mean + (1.0 - MOMENTUM) * running[group];
    running[GROUPS + group] = MOMENTUM * unbiased + (1.0 - MOMENTUM) * running[GROUPS + group];
}

@compute @workgroup_size(64)
fn eval_stats(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = invocation(workgroup, workgroups, lane);
    if group < GROUPS {
        set_affine_map(group, running[group], 1.0 / sqrt(running[GROUPS + group] + EPS));
    }
}

@compute @workgroup_size(64)
fn apply(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = invocation(workgroup, workgroups, lane);
    if i < COUNT * GROUPS {
        let group = i % GROUPS;
        y[i] = bn_activation(x[i] * stat(STAT_SCALE, group) + stat(STAT_SHIFT, group));
    }
}

// Gradient at the BatchNorm output, through the activation.
fn output_grad(group: u32, i: u32) -> CVec {
    let normalised = x[i] * stat(STAT_SCALE, group) + stat(STAT_SHIFT, group);
    return bn_activation_backward(normalised, grad[i]);
}

@compute @workgroup_size(64)
fn backward_partials(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = invocation(workgroup, workgroups, lane);
    if i >= CHUNKS * GROUPS {
        return;
    }
    let chunk = i / GROUPS;
    let group = i % GROUPS;
    let range = chunk_range(chunk);
    let mean = stat(STAT_MEAN, group);
    var sum_g = CVec(0.0);
    var dot_g = CVec(0.0);
    for (var p = range.x; p < range.y; p++) {
        let index = p * GROUPS + group;
        let g = output_grad(group, index);
        sum_g += g;
        dot_g += (x[index] - mean) * g;
    }
    partials[partial_index(chunk, 0u, group)] = sum_g;
    partials[partial_index(chunk, 1u, group)] = dot_g;
}

@compute @workgroup_size(64)
fn backward_combine(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = invocation(workgroup, workgroups, lane);
    if group >= GROUPS {
        return;
    }
    var sum_g = CVec(0.0);
    var dot_g = CVec(0.0);
    for (var chunk = 0u; chunk < CHUNKS; chunk++) {
        sum_g += partials[partial_index(chunk, 0u, group)];
        dot_g += partials[partial_index(chunk, 1u, group)];
    }
    stats[STAT_SUM_G * GROUPS + group] = sum_g;
    stats[STAT_DOT_G * GROUPS + group] = dot_g;
    let dgamma = dot_g * stat(STAT_INVSTD, group);
    affine_grad[group] = select(CVec(0.0), affine_grad[group], ACCUMULATE) + dgamma;
    affine_grad[GROUPS + group] = select(CVec(0.0), affine_grad[GROUPS + group], ACCUMULATE) + sum_g;
}

@compute @workgroup_size(64)
fn backward_apply(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = invocation(workgroup, workgroups, lane);
    if i < COUNT * GROUPS {
        let group = i % GROUPS;
        let invstd = stat(STAT_INVSTD, group);
        let k = stat(STAT_DOT_G, group) * invstd * invstd / f32(COUNT);
        let grad_mean = stat(STAT_SUM_G, group) / f32(COUNT);
        let g = output_grad(group, i);
        grad[i] = (g - (x[i] - stat(STAT_MEAN, group)) * k - grad_mean) * invstd * affine[group];
    }
}
