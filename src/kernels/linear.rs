//! Linear kernels: the operands of `shaders/linear.wgsl` on the GEMM skeleton.
//!
//! Roles: forward binds `x`, `w`, `y` (+ `bias`); input gradient `dy`, `w`, `dx`;
//! weight gradient `dy`, `x`, `dw`. The bias gradient is [`super::bias::channel_sum`]
//! with a plane of 1.

use super::gemm::{self, Epilogue, Form, GemmSpec, Tiling};
use super::{Launch, Program, sources};
use crate::shapes::LinearShape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearPass {
    Forward,
    InputGrad,
    WeightGrad,
}

/// How a pass is vectorised: the forward pass reads rows of x and W four floats at a
/// time when the features allow; the gradients read along strides, one at a time.
pub fn form(s: &LinearShape, pass: LinearPass) -> Form {
    let width = if pass == LinearPass::Forward && s.in_features.is_multiple_of(4) {
        4
    } else {
        1
    };
    Form::Dot { width }
}

/// (m, n, k) of a pass.
pub fn gemm_dims(s: &LinearShape, pass: LinearPass) -> (usize, usize, usize) {
    match pass {
        LinearPass::Forward => (s.batch, s.out_features, s.in_features),
        LinearPass::InputGrad => (s.batch, s.in_features, s.out_features),
        LinearPass::WeightGrad => (s.out_features, s.in_features, s.batch),
    }
}

pub fn launch(s: &LinearShape, pass: LinearPass, epilogue: Epilogue, tiling: Tiling) -> Launch {
    let (m, n, k) = gemm_dims(s, pass);
    let (op, roles) = match pass {
        LinearPass::Forward => ("forward", ["x", "w", "y"]),
        LinearPass::InputGrad => ("input_grad", ["dy", "w", "dx"]),
        LinearPass::WeightGrad => ("weight_grad", ["dy", "x", "dw"]),
    };
    let spec = GemmSpec {
        op,
        family: sources::LINEAR,
        constants: super::u32_constants(&[
            ("BATCH", s.batch),
            ("IN_F", s.in_features),
            ("OUT_F", s.out_features),
        ]),
        m,
        n,
        k,
        form: form(s, pass),
        prologue_a: None,
        prologue_b: None,
        epilogue,
    };
    let (source, bindings) = gemm::program(&spec, tiling);
    let mut roles = roles.to_vec();
    if epilogue.bias {
        roles.push("bias");
    }
    Launch {
        program: Program {
            label: format!(
                "linear.{op} {}x{}->{} [{}]",
                s.batch,
                s.in_features,
                s.out_features,
                tiling.name()
            ),
            source,
            entry: "main",
            bindings,
        },
        workgroups: tiling.workgroups(m, n, 1),
        roles,
    }
}
