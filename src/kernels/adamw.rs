//! AdamW over a flat parameter buffer (`shaders/adamw.wgsl`).
//! Roles: `params`, `grads`, `exp_avg`, `exp_avg_sq`, `hyper`.

use bytemuck::{Pod, Zeroable};

use super::{Access, Launch, sources};
use crate::shapes::AdamW;

/// The per-step scalars of `shaders/adamw.wgsl`, computed in f64 as Python does
/// and rounded to f32 where PyTorch's kernels take them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Hyper {
    pub decay: f32,
    pub lerp_weight: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub step_size: f32,
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    pub unused: f32,
}

impl Hyper {
    /// Scalars of step `t` (1 for the first step).
    pub fn at_step(h: &AdamW, t: u32) -> Hyper {
        let bias_correction1 = 1.0 - h.beta1.powf(f64::from(t));
        let bias_correction2 = 1.0 - h.beta2.powf(f64::from(t));
        Hyper {
            decay: (1.0 - h.lr * h.weight_decay) as f32,
            lerp_weight: (1.0 - h.beta1) as f32,
            beta2: h.beta2 as f32,
            one_minus_beta2: (1.0 - h.beta2) as f32,
            step_size: (h.lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: h.eps as f32,
            unused: 0.0,
        }
    }
}

pub fn step(count: usize) -> Launch {
    Launch {
        program: super::family_program(
            format!("adamw.step n{count}"),
            "step",
            super::u32_constants(&[("COUNT", count)]),
            &[sources::ADAMW],
            vec![
                (0, Access::ReadWrite),
                (1, Access::Read),
                (2, Access::ReadWrite),
                (3, Access::ReadWrite),
                (4, Access::Uniform),
            ],
        ),
        workgroups: super::element_grid(count, 256),
        roles: vec!["params", "grads", "exp_avg", "exp_avg_sq", "hyper"],
    }
}
