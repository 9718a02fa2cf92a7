// Sigmoid + BCELoss (mean) against a constant label, forward and backward in one
// workgroup: the discriminator's head. It computes exactly what PyTorch's separate
// Sigmoid and BCELoss compute, including BCELoss's clamp of each log at -100 and its
// gradient (p - t) / max(p (1 - p), 1e-12): when the sigmoid saturates to exactly 0
// or 1, the loss is 100 and the gradient through the sigmoid is 0, as in the seed.
// (The fused "with logits" form would keep a non-zero gradient there; it is not used
// so that training matches the seed.)
// Constants (generated): BATCH, TARGET, REDUCE_LANES, METRICS_PER_STEP, METRIC_LOSS,
// METRIC_MEAN_PROBABILITY.

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(2) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(3) var<uniform> step: StepInfo;

// ln(1 + x) without the cancellation of log(1 + x) for small x.
fn log1p(x: f32) -> f32 {
    let u = 1.0 + x;
    if u == 1.0 {
        return x;
    }
    return log(u) * (x / (u - 1.0));
}

// max(x, -100) that keeps NaN, as torch.clamp does (WGSL's max may drop it), so a
// diverged discriminator shows a NaN loss. The test is on the bits: compilers may
// assume x != x is false.
fn clamp_log(x: f32) -> f32 {
    if (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u {
        return x;
    }
    return max(x, -100.0);
}

fn bce(p: f32) -> f32 {
    return (TARGET - 1.0) * clamp_log(log1p(-p)) - TARGET * clamp_log(log(p));
}

@compute @workgroup_size(REDUCE_LANES)
fn sigmoid_bce(@builtin(local_invocation_index) lane: u32) {
    var loss = 0.0;
    var probability = 0.0;
    for (var i = lane; i < BATCH; i += REDUCE_LANES) {
        let p = sigmoid_forward(logits[i]);
        loss += bce(p);
        probability += p;
        let dp = (p - TARGET) / max((1.0 - p) * p, 1e-12) / f32(BATCH);
        dlogits[i] = sigmoid_backward_from_output(p, dp);
    }
    let total_loss = workgroup_sum(lane, loss);
    let total_probability = workgroup_sum(lane, probability);
    if lane == 0u {
        let slot = step.metrics_slot * METRICS_PER_STEP;
        metrics[slot + METRIC_LOSS] = total_loss / f32(BATCH);
        metrics[slot + METRIC_MEAN_PROBABILITY] = total_probability / f32(BATCH);
    }
}
