//! BatchNorm2d kernels (`shaders/batchnorm.wgsl`) on NHWC tensors.
//!
//! Roles: `x` (the raw input), `affine` ([gamma | beta]), `running`
//! ([running_mean | running_var]), `stats` (6 x channels: scale, shift, mean, invstd,
//! and the two backward sums; a fused convolution prologue reads the first two), `y`, `grad` (gradient at the activation output,
//! replaced by the gradient at `x`), `affine_grad` ([dgamma | dbeta]).

use super::gemm::{activation_backward, activation_forward};
use super::{Access, Launch, REDUCE_LANES, sources};
use crate::shapes::{Activation, BN_EPS, BN_MOMENTUM, BatchNormShape};

/// Floats in the per-channel `stats` buffer.
pub fn stats_len(channels: usize) -> usize {
    6 * channels
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchNormPass {
    /// Batch statistics, running-statistics update, affine map.
    TrainStats,
    /// Affine map from the running statistics.
    EvalStats,
    /// y = act(x * scale + shift).
    Apply,
    /// Per-channel gradient sums; writes (or adds to) dgamma and dbeta.
    BackwardReduce,
    /// Gradient at x, in place of the incoming gradient.
    BackwardApply,
}

/// One pass of a BatchNorm2d followed by `activation`. `accumulate` makes
/// `BackwardReduce` add to the parameter gradients instead of overwriting them.
pub fn launch(
    s: &BatchNormShape,
    activation: Activation,
    pass: BatchNormPass,
    accumulate: bool,
) -> Launch {
    let glue = format!(
        "fn bn_activation(x: f32) -> f32 {{ return {}; }}\n\
         fn bn_activation_backward(x: f32, dy: f32) -> f32 {{ return {}; }}\n",
        activation_forward(activation, "x"),
        activation_backward(activation, "x", "dy"),
    );
    let generated = super::u32_constants(&[
        ("CHANNELS", s.channels),
        ("COUNT", s.per_channel()),
        ("REDUCE_LANES", REDUCE_LANES),
    ]) + &super::f32_constant("EPS", BN_EPS)
        + &super::f32_constant("MOMENTUM", BN_MOMENTUM)
        + &super::bool_constant("ACCUMULATE", accumulate)
        + &glue;
    use Access::{Read, ReadWrite};
    let channels_grid = super::grid(s.channels as u32, 1);
    let (entry, roles, bindings, workgroups): (_, Vec<&'static str>, Vec<(u32, Access)>, _) =
        match pass {
            BatchNormPass::TrainStats => (
                "train_stats",
                vec!["x", "affine", "running", "stats"],
                vec![(0, Read), (1, Read), (2, ReadWrite), (3, ReadWrite)],
                channels_grid,
            ),
            BatchNormPass::EvalStats => (
                "eval_stats",
                vec!["affine", "running", "stats"],
                vec![(1, Read), (2, ReadWrite), (3, ReadWrite)],
                super::element_grid(s.channels, 64),
            ),
            BatchNormPass::Apply => (
                "apply",
                vec!["x", "stats", "y"],
                vec![(0, Read), (3, ReadWrite), (4, ReadWrite)],
                super::element_grid(s.len(), 256),
            ),
            BatchNormPass::BackwardReduce => (
                "backward_reduce",
                vec!["x", "stats", "grad", "affine_grad"],
                vec![(0, Read), (3, ReadWrite), (5, ReadWrite), (6, ReadWrite)],
                channels_grid,
            ),
            BatchNormPass::BackwardApply => (
                "backward_apply",
                vec!["x", "affine", "stats", "grad"],
                vec![(0, Read), (1, Read), (3, ReadWrite), (5, ReadWrite)],
                super::element_grid(s.len(), 256),
            ),
        };
    Launch {
        program: super::family_program(
            format!(
                "batchnorm.{entry} {}x{}x{}x{} {activation:?}",
                s.batch, s.channels, s.height, s.width
            ),
            entry,
            generated,
            &[sources::ACTIVATION, sources::REDUCE, sources::BATCHNORM],
            bindings,
        ),
        workgroups,
        roles,
    }
}
