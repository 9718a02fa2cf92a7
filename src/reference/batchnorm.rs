//! BatchNorm2d (affine, eps [`BN_EPS`], momentum [`BN_MOMENTUM`]) over NCHW tensors.
//!
//! Training mode normalises each channel with the statistics of the batch (over N, H and W,
//! *biased* variance) and folds them into the running statistics with the *unbiased*
//! variance, as `torch.nn.BatchNorm2d` does. Eval mode normalises with the running statistics.
//! PyTorch's `num_batches_tracked` is a plain counter (one per training forward) and is left
//! to the caller.

use super::round_to_f32;
use crate::shapes::{BN_EPS, BN_MOMENTUM, BatchNormShape};

/// Per-channel batch statistics of a training forward, kept for the backward pass
/// (PyTorch's `save_mean` and `save_invstd`).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// `1 / sqrt(biased_variance + eps)`.
    pub inv_std: Vec<f32>,
}

/// Gradients of a training-mode forward with respect to its input and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormGradients {
    pub dx: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// Training-mode forward: `y = (x - mean) * inv_std * gamma + beta` with batch statistics.
///
/// Updates `running_mean = (1-m)*running_mean + m*mean` and
/// `running_var = (1-m)*running_var + m*var_unbiased` in place (`m` = [`BN_MOMENTUM`],
/// `var_unbiased` divided by `N*H*W - 1`).
pub fn forward_train(
    s: &BatchNormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
) -> (Vec<f32>, BatchStats) {
    check_lengths(s, x, gamma, beta);
    assert_eq!(running_mean.len(), s.channels, "running_mean length");
    assert_eq!(running_var.len(), s.channels, "running_var length");
    // PyTorch refuses this too ("Expected more than 1 value per channel when training"):
    // the unbiased variance would divide by zero.
    assert!(
        s.per_channel() > 1,
        "BatchNorm training needs more than 1 value per channel"
    );
    let count = s.per_channel() as f64;
    let momentum = f64::from(BN_MOMENTUM);
    let mut y = vec![0.0f64; s.len()];
    let mut stats = BatchStats {
        mean: vec![0.0; s.channels],
        inv_std: vec![0.0; s.channels],
    };
    for c in 0..s.channels {
        let mean = channel(s, c).map(|i| f64::from(x[i])).sum::<f64>() / count;
        let squared_deviations: f64 = channel(s, c)
            .map(|i| (f64::from(x[i]) - mean).powi(2))
            .sum();
        let biased_var = squared_deviations / count;
        let unbiased_var = squared_deviations / (count - 1.0);
        let inv_std = 1.0 / (biased_var + f64::from(BN_EPS)).sqrt();
        for i in channel(s, c) {
            let normalised = (f64::from(x[i]) - mean) * inv_std;
            y[i] = normalised * f64::from(gamma[c]) + f64::from(beta[c]);
        }
        running_mean[c] = ((1.0 - momentum) * f64::from(running_mean[c]) + momentum * mean) as f32;
        running_var[c] =
            ((1.0 - momentum) * f64::from(running_var[c]) + momentum * unbiased_var) as f32;
        stats.mean[c] = mean as f32;
        stats.inv_std[c] = inv_std as f32;
    }
    (round_to_f32(&y), stats)
}

/// Eval-mode forward: `y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta`.
pub fn forward_eval(
    s: &BatchNormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
) -> Vec<f32> {
    check_lengths(s, x, gamma, beta);
    let mut y = vec![0.0f64; s.len()];
    for c in 0..s.channels {
        let mean = f64::from(running_mean[c]);
        let inv_std = 1.0 / (f64::from(running_var[c]) + f64::from(BN_EPS)).sqrt();
        for i in channel(s, c) {
            y[i] = (f64::from(x[i]) - mean) * inv_std * f64::from(gamma[c]) + f64::from(beta[c]);
        }
    }
    round_to_f32(&y)
}

/// Backward of [`forward_train`], including the paths through the batch mean and variance.
///
/// With `x_hat = (x - mean) * inv_std` and `n = N*H*W` per channel:
/// `dbeta = sum dy`, `dgamma = sum dy*x_hat`,
/// `dx = gamma * inv_std * (dy - dbeta/n - x_hat * dgamma/n)`.
pub fn backward(
    s: &BatchNormShape,
    x: &[f32],
    gamma: &[f32],
    stats: &BatchStats,
    dy: &[f32],
) -> BatchNormGradients {
    assert_eq!(x.len(), s.len(), "batchnorm input length");
    assert_eq!(dy.len(), s.len(), "batchnorm output gradient length");
    assert_eq!(gamma.len(), s.channels, "gamma length");
    let count = s.per_channel() as f64;
    let mut dx = vec![0.0f64; s.len()];
    let mut dgamma = vec![0.0f64; s.channels];
    let mut dbeta = vec![0.0f64; s.channels];
    for c in 0..s.channels {
        let mean = f64::from(stats.mean[c]);
        let inv_std = f64::from(stats.inv_std[c]);
        let x_hat = |i: usize| (f64::from(x[i]) - mean) * inv_std;
        dbeta[c] = channel(s, c).map(|i| f64::from(dy[i])).sum();
        dgamma[c] = channel(s, c).map(|i| f64::from(dy[i]) * x_hat(i)).sum();
        for i in channel(s, c) {
            let centred = f64::from(dy[i]) - dbeta[c] / count - x_hat(i) * dgamma[c] / count;
            dx[i] = f64::from(gamma[c]) * inv_std * centred;
        }
    }
    BatchNormGradients {
        dx: round_to_f32(&dx),
        dgamma: round_to_f32(&dgamma),
        dbeta: round_to_f32(&dbeta),
    }
}

/// Flat NCHW indices of every element of channel `c`.
fn channel(s: &BatchNormShape, c: usize) -> impl Iterator<Item = usize> + use<> {
    let pixels = s.height * s.width;
    let (batch, channels) = (s.batch, s.channels);
    (0..batch).flat_map(move |n| {
        let start = (n * channels + c) * pixels;
        start..start + pixels
    })
}

fn check_lengths(s: &BatchNormShape, x: &[f32], gamma: &[f32], beta: &[f32]) {
    assert_eq!(x.len(), s.len(), "batchnorm input length");
    assert_eq!(gamma.len(), s.channels, "gamma length");
    assert_eq!(beta.len(), s.channels, "beta length");
}
