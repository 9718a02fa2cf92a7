//! Standalone activation kernels (`shaders/elementwise.wgsl`); most activations are
//! fused into BatchNorm and convolution kernels instead.
//!
//! Roles: forward binds `x`, `y`; backward binds `x`, `dy`, `dx`; backward from
//! output binds `y`, `dy`, `dx`.

use super::gemm::{activation_backward, activation_forward};
use super::{Access, Launch, sources};
use crate::shapes::Activation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationPass {
    Forward,
    Backward,
    /// The derivative taken from the forward output (Tanh, Sigmoid).
    BackwardFromOutput,
}

fn from_output(activation: Activation, y: &str, dy: &str) -> String {
    match activation {
        Activation::Tanh => format!("tanh_backward_from_output({y}, {dy})"),
        Activation::Sigmoid => format!("sigmoid_backward_from_output({y}, {dy})"),
        Activation::Identity => dy.to_string(),
        _ => panic!("{activation:?} has no derivative in terms of its output"),
    }
}

pub fn launch(pass: ActivationPass, activation: Activation, count: usize) -> Launch {
    let glue = format!(
        "fn act_forward(x: f32) -> f32 {{ return {}; }}\n\
         fn act_backward(x: f32, dy: f32) -> f32 {{ return {}; }}\n\
         fn act_backward_from_output(y: f32, dy: f32) -> f32 {{ return {}; }}\n",
        activation_forward(activation, "x"),
        activation_backward(activation, "x", "dy"),
        match pass {
            ActivationPass::BackwardFromOutput => from_output(activation, "y", "dy"),
            _ => "dy".to_string(),
        }
    );
    let generated = super::u32_constants(&[("COUNT", count)]) + &glue;
    let (entry, roles, bindings) = match pass {
        ActivationPass::Forward => (
            "forward",
            vec!["x", "y"],
            vec![(0, Access::Read), (2, Access::ReadWrite)],
        ),
        ActivationPass::Backward => (
            "backward",
            vec!["x", "dy", "dx"],
            vec![(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
        ),
        ActivationPass::BackwardFromOutput => (
            "backward_from_output",
            vec!["y", "dy", "dx"],
            vec![(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
        ),
    };
    Launch {
        program: super::family_program(
            format!("activation.{entry} {activation:?} n{count}"),
            entry,
            generated,
            &[sources::ACTIVATION, sources::ELEMENTWISE],
            bindings,
        ),
        workgroups: super::element_grid(count, 256),
        roles,
    }
}
