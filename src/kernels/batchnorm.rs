//! BatchNorm2d kernels (`shaders/batchnorm.wgsl`) on NHWC tensors.
//!
//! Roles: `x` (the raw input), `affine` ([gamma | beta]), `running`
//! ([running_mean | running_var]), `stats` (6 x channels: scale, shift, mean, invstd,
//! and the two backward sums; a fused convolution prologue reads the first two), `y`,
//! `grad` (gradient at the activation output, replaced by the gradient at `x`),
//! `affine_grad` ([dgamma | dbeta]) and `partials` (per-chunk sums, [`partials_len`]).

use super::gemm::{activation_backward, activation_forward};
use super::{Access, Launch, sources};
use crate::shapes::{Activation, BN_EPS, BN_MOMENTUM, BatchNormShape};

/// Floats in the per-channel `stats` buffer.
pub fn stats_len(channels: usize) -> usize {
    6 * channels
}

/// Pixels are reduced in chunks of about this many, in parallel, then combined.
const PIXELS_PER_CHUNK: usize = 128;
const MAX_CHUNKS: usize = 1024;

fn chunks(s: &BatchNormShape) -> usize {
    s.per_channel()
        .div_ceil(PIXELS_PER_CHUNK)
        .clamp(1, MAX_CHUNKS)
}

/// Floats in the `partials` buffer.
pub fn partials_len(s: &BatchNormShape) -> usize {
    chunks(s) * 2 * s.channels
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchNormPass {
    /// Per-chunk Welford statistics.
    TrainPartials,
    /// Batch statistics, running-statistics update, affine map.
    TrainCombine,
    /// Affine map from the running statistics.
    EvalStats,
    /// y = act(x * scale + shift).
    Apply,
    /// Per-chunk gradient sums.
    BackwardPartials,
    /// The gradient sums; writes (or adds to) dgamma and dbeta.
    BackwardCombine,
    /// Gradient at x, in place of the incoming gradient.
    BackwardApply,
}

/// The activation glue on `CVec` (one channel or four).
fn glue(activation: Activation, width: usize) -> String {
    let components = ["x", "y", "z", "w"];
    let part = |v: &str, i: usize| {
        if width == 1 {
            v.to_string()
        } else {
            format!("{v}.{}", components[i])
        }
    };
    let forward: Vec<String> = (0..width)
        .map(|i| activation_forward(activation, &part("x", i)))
        .collect();
    let backward: Vec<String> = (0..width)
        .map(|i| activation_backward(activation, &part("x", i), &part("dy", i)))
        .collect();
    format!(
        "fn bn_activation(x: CVec) -> CVec {{ return CVec({}); }}\n\
         fn bn_activation_backward(x: CVec, dy: CVec) -> CVec {{ return CVec({}); }}\n",
        forward.join(", "),
        backward.join(", ")
    )
}

/// One pass of a BatchNorm2d followed by `activation`. `accumulate` makes
/// `BackwardCombine` add to the parameter gradients instead of overwriting them.
pub fn launch(
    s: &BatchNormShape,
    activation: Activation,
    pass: BatchNormPass,
    accumulate: bool,
) -> Launch {
    let width = if s.channels.is_multiple_of(4) { 4 } else { 1 };
    let groups = s.channels / width;
    let chunks = chunks(s);
    let vector = if width == 4 { "vec4<f32>" } else { "f32" };
    let generated = super::u32_constants(&[
        ("CHANNELS", s.channels),
        ("GROUPS", groups),
        ("COUNT", s.per_channel()),
        ("CHUNKS", chunks),
        ("CHUNK", s.per_channel().div_ceil(chunks)),
    ]) + &super::f32_constant("EPS", BN_EPS)
        + &super::f32_constant("MOMENTUM", BN_MOMENTUM)
        + &super::bool_constant("ACCUMULATE", accumulate)
        + &format!("alias CVec = {vector};\n")
        + &glue(activation, width);
    use Access::{Read, ReadWrite};
    let per_group = super::element_grid(groups, 64);
    let per_chunk = super::element_grid(chunks * groups, 64);
    let per_element = super::element_grid(s.per_channel() * groups, 64);
    let (entry, roles, bindings, workgroups): (_, Vec<&'static str>, Vec<(u32, Access)>, _) =
        match pass {
            BatchNormPass::TrainPartials => (
                "train_partials",
                vec!["x", "partials"],
                vec![(0, Read), (7, ReadWrite)],
                per_chunk,
            ),
            BatchNormPass::TrainCombine => (
                "train_combine",
                vec!["affine", "running", "stats", "partials"],
                vec![(1, Read), (2, ReadWrite), (3, ReadWrite), (7, ReadWrite)],
                per_group,
            ),
            BatchNormPass::EvalStats => (
                "eval_stats",
                vec!["affine", "running", "stats"],
                vec![(1, Read), (2, ReadWrite), (3, ReadWrite)],
                per_group,
            ),
            BatchNormPass::Apply => (
                "apply",
                vec!["x", "stats", "y"],
                vec![(0, Read), (3, ReadWrite), (4, ReadWrite)],
                per_element,
            ),
            BatchNormPass::BackwardPartials => (
                "backward_partials",
                vec!["x", "stats", "grad", "partials"],
                vec![(0, Read), (3, ReadWrite), (5, ReadWrite), (7, ReadWrite)],
                per_chunk,
            ),
            BatchNormPass::BackwardCombine => (
                "backward_combine",
                vec!["stats", "affine_grad", "partials"],
                vec![(3, ReadWrite), (6, ReadWrite), (7, ReadWrite)],
                per_group,
            ),
            BatchNormPass::BackwardApply => (
                "backward_apply",
                vec!["x", "affine", "stats", "grad"],
                vec![(0, Read), (1, Read), (3, ReadWrite), (5, ReadWrite)],
                per_element,
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
            &[sources::ACTIVATION, sources::BATCHNORM],
            bindings,
        ),
        workgroups,
        roles,
    }
}
