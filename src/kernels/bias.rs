//! Bias gradients: per-channel sums of the output gradient (`shaders/bias.wgsl`).
//! Roles: `dy`, `dbias`.

use super::{Access, Launch, REDUCE_LANES, sources};

/// Sum `dy` of shape `[batch, channels, plane]` over batch and plane.
pub fn channel_sum(batch: usize, channels: usize, plane: usize, accumulate: bool) -> Launch {
    let generated = super::u32_constants(&[
        ("BATCH", batch),
        ("CHANNELS", channels),
        ("PLANE", plane),
        ("REDUCE_LANES", REDUCE_LANES),
    ]) + &super::bool_constant("ACCUMULATE", accumulate);
    Launch {
        program: super::family_program(
            format!("bias.channel_sum {batch}x{channels}x{plane}"),
            "channel_sum",
            generated,
            &[sources::REDUCE, sources::BIAS],
            vec![(0, Access::Read), (1, Access::ReadWrite)],
        ),
        workgroups: super::grid(channels as u32, 1),
        roles: vec!["dy", "dbias"],
    }
}
