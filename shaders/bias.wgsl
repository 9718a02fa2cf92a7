// Bias gradients of Conv2d, ConvTranspose2d and Linear: the gradient (NHWC, or
// [batch, features]) summed over the batch and the spatial positions of each channel,
// one workgroup per channel.
// Constants (generated): BATCH, CHANNELS, PLANE (1 for Linear), REDUCE_LANES,
// ACCUMULATE (add to what the gradient buffer holds).

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;

@compute @workgroup_size(REDUCE_LANES)
fn channel_sum(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let c = workgroup.x + workgroup.y * workgroups.x;
    let in_range = c < CHANNELS;
    var sum = 0.0;
    for (var i = lane; in_range && i < BATCH * PLANE; i += REDUCE_LANES) {
        sum += dy[i * CHANNELS + c];
    }
    let total = workgroup_sum(lane, sum);
    if lane == 0u && in_range {
        dbias[c] = select(0.0, dbias[c], ACCUMULATE) + total;
    }
}
