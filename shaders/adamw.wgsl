// AdamW over a whole network at once: parameters, gradients and both moments are flat
// buffers with the same layout. The float operations follow torch.optim.AdamW's
// single-tensor path (the one PyTorch uses on the CPU):
//   p *= 1 - lr * wd
//   m = lerp(m, g, 1 - beta1)
//   v = v * beta2 + (1 - beta2) * g * g
//   p += -(lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The scalars depend on the step t; the CPU computes them in double precision, as
// Python does, and writes them before each step.
// Constants (generated): COUNT.

struct Hyper {
    decay: f32,
    lerp_weight: f32,
    beta2: f32,
    one_minus_beta2: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    unused: f32,
}

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(4) var<uniform> hyper: Hyper;

// torch.lerp: the form depends on which end the weight is nearer.
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if abs(weight) < 0.5 {
        return start + weight * (end - start);
    }
    return end - (end - start) * (1.0 - weight);
}

@compute @workgroup_size(256)
fn step(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = (workgroup.x + workgroup.y * workgroups.x) * 256u + lane;
    if i >= COUNT {
        return;
    }
    let g = grads[i];
    let p = params[i] * hyper.decay;
    let m = lerp(exp_avg[i], g, hyper.lerp_weight);
    let v = exp_avg_sq[i] * hyper.beta2 + hyper.one_minus_beta2 * g * g;
    let denom = sqrt(v) / hyper.bias_correction2_sqrt + hyper.eps;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    params[i] = p + -hyper.step_size * m / denom;
}
