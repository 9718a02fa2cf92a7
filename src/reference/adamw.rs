//! One step of `torch.optim.AdamW` (PyTorch's single-tensor CPU path), in `f32`.
//!
//! PyTorch computes the scalars in Python (`f64`) and rounds each to `f32` when a tensor op
//! uses it; the tensor ops run in `f32` in this order, each rounded:
//!
//! ```text
//! param.mul_(1 - lr*wd)                              decoupled weight decay, first
//! exp_avg.lerp_(grad, 1 - beta1)                     m
//! exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1-beta2)  v = v*b2 + ((1-b2)*g)*g
//! denom = (exp_avg_sq.sqrt() / sqrt(1 - beta2^t)).add_(eps)
//! param.addcdiv_(exp_avg, denom, value=-lr/(1 - beta1^t))  p + (-step_size*m)/denom
//! ```
//!
//! The decay `p *= 1 - lr*wd` is `p -= lr*wd*p` rounded PyTorch's way. Mirrored here except
//! for fused multiply-adds PyTorch's vectorised kernels may use (its vectorised `lerp` is one
//! FMA; with beta1 = 0.5 the product is exact, so it makes no difference); its CUDA kernels
//! also round `addcdiv` as `p + s*(m/denom)` rather than `p + (s*m)/denom`.

use crate::shapes::AdamW;

/// Updates `p` and its moments `m`, `v` in place with gradient `g`, at step `t` (1, 2, ...).
pub fn step(h: &AdamW, t: u32, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    assert!(t >= 1, "AdamW steps count from 1");
    assert_eq!(p.len(), g.len(), "AdamW gradient length");
    assert_eq!(p.len(), m.len(), "AdamW first moment length");
    assert_eq!(p.len(), v.len(), "AdamW second moment length");
    let (lr, beta1, beta2) = (h.lr, h.beta1, h.beta2);
    let decay = (1.0 - lr * h.weight_decay) as f32;
    let m_weight = (1.0 - beta1) as f32;
    let v_weight = (1.0 - beta2) as f32;
    let bias_correction1 = 1.0 - beta1.powf(f64::from(t));
    let bias_correction2 = 1.0 - beta2.powf(f64::from(t));
    let neg_step_size = (-(lr / bias_correction1)) as f32;
    let bias_correction2_sqrt = bias_correction2.sqrt() as f32;
    for i in 0..p.len() {
        p[i] *= decay;
        m[i] = lerp(m[i], g[i], m_weight);
        v[i] = v[i] * beta2 as f32 + v_weight * g[i] * g[i];
        let denom = v[i].sqrt() / bias_correction2_sqrt + h.eps as f32;
        p[i] += neg_step_size * m[i] / denom;
    }
}

/// `start + weight*(end - start)`, in the two forms PyTorch's `lerp` picks between for accuracy.
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}
