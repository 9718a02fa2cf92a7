//! Binary cross-entropy with mean reduction: PyTorch's clamped `BCELoss` on probabilities,
//! and the fused, numerically stable `BCEWithLogitsLoss` on logits.
//!
//! # Where the two differ
//!
//! Mathematically `bce_with_logits(z, t) == bce(sigmoid(z), t)`, and for moderate logits the
//! two agree to rounding. They part ways where `f32` sigmoid saturates:
//!
//! - `z >~ 16.7`: `sigmoid(z)` rounds to exactly 1. With target 0 the clamped BCE reports
//!   `-max(ln(1 - 1), -100) = 100` (the true loss is about `z`), and its gradient
//!   `(p - t) / max(p(1-p), 1e-12)` (`1e12/n`) times the sigmoid's `p(1-p) = 0` is exactly 0:
//!   the discriminator stops learning from that sample. The logits form gives loss `z` and
//!   gradient `(1 - 0)/n`.
//! - `z <~ -27.6`: `p(1-p)` falls below the `1e-12` floor, so the gradient through the sigmoid
//!   shrinks towards 0 instead of staying near `-1/n` (target 1); below `z ~ -88.7`
//!   `exp(-z)` overflows, `p` becomes exactly 0 and the loss clamps at 100 as well.
//!
//! The seed uses `Sigmoid` + `BCELoss`, so the clamped form is what PyTorch parity needs; the
//! logits form is the well-behaved alternative.

use super::activation::sigmoid;

/// `max(x, -100)`, keeping NaN as `torch.clamp` does (`f32::max` would drop it).
fn clamp_log(x: f32) -> f32 {
    if x.is_nan() { x } else { x.max(-100.0) }
}

/// `-mean(t*max(ln p, -100) + (1-t)*max(ln(1-p), -100))`, as `torch.nn.BCELoss()`.
///
/// Each term is computed in `f32` like PyTorch (`ln(1-p)` as `ln_1p(-p)`), the mean in `f64`.
pub fn bce_forward(p: &[f32], t: &[f32]) -> f32 {
    assert_eq!(p.len(), t.len(), "BCE input and target lengths");
    let sum: f64 = p
        .iter()
        .zip(t)
        .map(|(&p, &t)| {
            let log_p = clamp_log(p.ln());
            let log_1mp = clamp_log((-p).ln_1p());
            f64::from((t - 1.0) * log_1mp - t * log_p)
        })
        .sum();
    (sum / p.len() as f64) as f32
}

/// `dL/dp` of [`bce_forward`]: PyTorch's `(p - t) / max((1 - p) * p, 1e-12)`, then `/ n`.
pub fn bce_backward(p: &[f32], t: &[f32]) -> Vec<f32> {
    assert_eq!(p.len(), t.len(), "BCE input and target lengths");
    let n = p.len() as f32;
    p.iter()
        .zip(t)
        .map(|(&p, &t)| (p - t) / ((1.0 - p) * p).max(1e-12) / n)
        .collect()
}

/// `mean(max(z, 0) - z*t + ln(1 + exp(-|z|)))`: BCE of `sigmoid(z)` without forming it.
pub fn bce_with_logits_forward(z: &[f32], t: &[f32]) -> f32 {
    assert_eq!(z.len(), t.len(), "BCE logits and target lengths");
    let sum: f64 = z
        .iter()
        .zip(t)
        .map(|(&z, &t)| {
            let (z, t) = (f64::from(z), f64::from(t));
            z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()
        })
        .sum();
    (sum / z.len() as f64) as f32
}

/// `dL/dz` of [`bce_with_logits_forward`]: `(sigmoid(z) - t) / n`.
pub fn bce_with_logits_backward(z: &[f32], t: &[f32]) -> Vec<f32> {
    assert_eq!(z.len(), t.len(), "BCE logits and target lengths");
    let n = z.len() as f32;
    z.iter()
        .zip(t)
        .map(|(&z, &t)| (sigmoid(z) - t) / n)
        .collect()
}
