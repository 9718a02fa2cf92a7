//! The discriminator's head: Sigmoid + BCELoss forward and backward in one kernel
//! (`shaders/loss.wgsl`). Roles: `logits`, `dlogits`, `metrics`, `step`.

use super::{Access, Launch, REDUCE_LANES, sources};

/// Where a loss kernel writes in its step's slot of the metrics ring.
#[derive(Clone, Copy, Debug)]
pub struct MetricSlots {
    pub per_step: usize,
    pub loss: usize,
    pub mean_probability: usize,
}

pub fn sigmoid_bce(batch: usize, target: f32, slots: MetricSlots) -> Launch {
    let generated = super::u32_constants(&[
        ("BATCH", batch),
        ("REDUCE_LANES", REDUCE_LANES),
        ("METRICS_PER_STEP", slots.per_step),
        ("METRIC_LOSS", slots.loss),
        ("METRIC_MEAN_PROBABILITY", slots.mean_probability),
    ]) + &super::f32_constant("TARGET", target);
    Launch {
        program: super::family_program(
            format!("loss.sigmoid_bce b{batch} target {target}"),
            "sigmoid_bce",
            generated,
            &[
                sources::ACTIVATION,
                sources::REDUCE,
                sources::STEP,
                sources::LOSS,
            ],
            vec![
                (0, Access::Read),
                (1, Access::ReadWrite),
                (2, Access::ReadWrite),
                (3, Access::Uniform),
            ],
        ),
        workgroups: [1, 1, 1],
        roles: vec!["logits", "dlogits", "metrics", "step"],
    }
}
