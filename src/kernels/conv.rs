//! Conv2d and ConvTranspose2d kernels: the three gathers of `shaders/conv.wgsl`
//! mapped onto the six passes of the two layers, on NHWC activations.
//!
//! Roles: forward binds `x`, `w`, `y`, plus `bn` for a fused BatchNorm-apply on `x`
//! and `bias`; input gradient binds `dy`, `w`, `dx`; weight gradient binds `x`, `dy`,
//! `dw`, plus `bn`. Forward and input gradient read `w` packed as [`weight_layout`]
//! says (see [`pack`]); the weight gradient writes PyTorch's layout. The bias
//! gradient is a channel sum (see [`super::bias`]).

use super::gemm::{self, Epilogue, Form, GemmSpec, Prologue, Tiling};
use super::{Access, Launch, Program, sources};
use crate::shapes::ConvShape;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    Forward,
    InputGrad,
    WeightGrad,
}

/// The fused work around a convolution pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConvFusion {
    /// BatchNorm-apply + activation of the previous layer, applied as `x` is read
    /// (forward and weight gradient).
    pub prologue: Option<Prologue>,
    /// Bias, output activation, or accumulation into the result.
    pub epilogue: Epilogue,
}

/// Packed weight layouts (PyTorch's is `[COARSE_C, FINE_C, k, k]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// `[COARSE_C, k, k, FINE_C]`, read by `to_coarse`.
    CoarseMajor,
    /// `[FINE_C, k, k, COARSE_C]`, read by `to_fine`.
    FineMajor,
}

/// The "fine" and "coarse" sides of the layer (see conv.wgsl).
struct Geometry {
    fine: (usize, usize, usize),
    coarse: (usize, usize, usize),
}

fn geometry(s: &ConvShape) -> Geometry {
    let input = (s.in_channels, s.in_h, s.in_w);
    let output = (s.out_channels, s.out_h(), s.out_w());
    if s.transposed {
        Geometry {
            fine: output,
            coarse: input,
        }
    } else {
        Geometry {
            fine: input,
            coarse: output,
        }
    }
}

/// The gather (`to_coarse`, `to_fine`, `weight_grad`) that computes `pass`.
fn gather(s: &ConvShape, pass: ConvPass) -> &'static str {
    match (pass, s.transposed) {
        (ConvPass::Forward, false) | (ConvPass::InputGrad, true) => "to_coarse",
        (ConvPass::Forward, true) | (ConvPass::InputGrad, false) => "to_fine",
        (ConvPass::WeightGrad, _) => "weight_grad",
    }
}

/// The packed layout a pass reads its weights in (none for the weight gradient).
pub fn weight_layout(s: &ConvShape, pass: ConvPass) -> Option<WeightLayout> {
    match gather(s, pass) {
        "to_coarse" => Some(WeightLayout::CoarseMajor),
        "to_fine" => Some(WeightLayout::FineMajor),
        _ => None,
    }
}

/// Four channels per load where the channel count allows it.
fn width(channels: usize) -> u32 {
    if channels.is_multiple_of(4) { 4 } else { 1 }
}

/// How the matrix product of a pass is vectorised.
pub fn form(s: &ConvShape, pass: ConvPass) -> Form {
    let Geometry { fine, coarse } = geometry(s);
    match gather(s, pass) {
        "to_coarse" => Form::Dot {
            width: width(fine.0),
        },
        "to_fine" => Form::Dot {
            width: width(coarse.0),
        },
        _ => Form::Outer {
            a_width: width(coarse.0),
            b_width: width(fine.0),
            unroll: 4,
        },
    }
}

/// GEMM sizes (m, n, k, groups) of a gather.
fn gemm_size(s: &ConvShape, op: &str) -> (usize, usize, usize, usize) {
    let Geometry { fine, coarse } = geometry(s);
    let kk = s.kernel * s.kernel;
    match op {
        "to_coarse" => (s.batch * coarse.1 * coarse.2, coarse.0, fine.0 * kk, 1),
        "to_fine" => {
            let taps = s.kernel.div_ceil(s.stride);
            let phase_pixels = fine.1.div_ceil(s.stride) * fine.2.div_ceil(s.stride);
            (
                s.batch * phase_pixels,
                fine.0,
                taps * taps * coarse.0,
                s.stride * s.stride,
            )
        }
        _ => (coarse.0, kk * fine.0, s.batch * coarse.1 * coarse.2, 1),
    }
}

/// Binding roles of (src_a, src_b, dst) for a pass.
fn operand_roles(s: &ConvShape, pass: ConvPass) -> [&'static str; 3] {
    match (pass, s.transposed) {
        (ConvPass::Forward, _) => ["x", "w", "y"],
        (ConvPass::InputGrad, _) => ["dy", "w", "dx"],
        // weight_grad reads the coarse side as A: the output of a Conv2d, the input
        // of a ConvTranspose2d.
        (ConvPass::WeightGrad, false) => ["dy", "x", "dw"],
        (ConvPass::WeightGrad, true) => ["x", "dy", "dw"],
    }
}

/// The kernel for one pass of a convolution layer.
pub fn launch(s: &ConvShape, pass: ConvPass, fusion: ConvFusion, tiling: Tiling) -> Launch {
    let op = gather(s, pass);
    let (m, n, k, groups) = gemm_size(s, op);
    let constants = constants(s);
    let roles = operand_roles(s, pass);
    // The prologue applies to whichever operand is the layer input x.
    let x_is_a = roles[0] == "x";
    let x_is_b = roles[1] == "x";
    let prologue = fusion.prologue;
    let form = form(s, pass);
    let spec = GemmSpec {
        op,
        family: sources::CONV,
        constants,
        m,
        n,
        k,
        form,
        prologue_a: prologue.filter(|_| x_is_a),
        prologue_b: prologue.filter(|_| x_is_b),
        epilogue: fusion.epilogue,
    };
    assert!(
        prologue.is_none() || x_is_a || x_is_b,
        "a fused prologue needs a pass that reads x"
    );
    let (source, bindings) = gemm::program(&spec, tiling);
    let mut all_roles = roles.to_vec();
    if prologue.is_some() {
        all_roles.push("bn");
    }
    if fusion.epilogue.bias {
        all_roles.push("bias");
    }
    let kind = if s.transposed {
        "conv_transpose2d"
    } else {
        "conv2d"
    };
    let label = format!(
        "{kind}.{} {}x{}x{}x{}->{} k{} s{} p{} [{}]",
        match pass {
            ConvPass::Forward => "forward",
            ConvPass::InputGrad => "input_grad",
            ConvPass::WeightGrad => "weight_grad",
        },
        s.batch,
        s.in_channels,
        s.in_h,
        s.in_w,
        s.out_channels,
        s.kernel,
        s.stride,
        s.padding,
        tiling.name()
    );
    Launch {
        program: Program {
            label,
            source,
            entry: "main",
            bindings,
        },
        workgroups: tiling.workgroups(m, n, groups),
        roles: all_roles,
    }
}

fn constants(s: &ConvShape) -> String {
    let Geometry { fine, coarse } = geometry(s);
    super::u32_constants(&[
        ("BATCH", s.batch),
        ("FINE_C", fine.0),
        ("FINE_H", fine.1),
        ("FINE_W", fine.2),
        ("COARSE_C", coarse.0),
        ("COARSE_H", coarse.1),
        ("COARSE_W", coarse.2),
        ("KSIZE", s.kernel),
        ("STRIDE", s.stride),
        ("PAD", s.padding),
    ])
}

/// Repack a layer's weights (role `w`, PyTorch's layout) into `layout` (role `packed`).
pub fn pack(s: &ConvShape, layout: WeightLayout) -> Launch {
    let entry = match layout {
        WeightLayout::CoarseMajor => "pack_coarse_major",
        WeightLayout::FineMajor => "pack_fine_major",
    };
    let source = super::u32_constants(&[
        ("FINE_C", geometry(s).fine.0),
        ("COARSE_C", geometry(s).coarse.0),
        ("KSIZE", s.kernel),
    ]) + sources::CONV_PACK;
    Launch {
        program: Program {
            label: format!(
                "conv.{entry} {}x{}x{}x{}",
                s.in_channels, s.out_channels, s.kernel, s.kernel
            ),
            source,
            entry,
            bindings: vec![(0, Access::Read), (1, Access::ReadWrite)],
        },
        workgroups: super::element_grid(s.weight_len(), 64),
        roles: vec!["w", "packed"],
    }
}

/// GEMM dimensions (m, n, k, groups) of a pass, for choosing a tiling.
pub fn gemm_dims(s: &ConvShape, pass: ConvPass) -> (usize, usize, usize, usize) {
    gemm_size(s, gather(s, pass))
}
