//! Standard-normal noise (`shaders/noise.wgsl`). Roles: `noise`, `step`.

use super::{Access, Launch, sources};

pub fn normal(count: usize, seed: u64) -> Launch {
    let generated = super::u32_constants(&[
        ("COUNT", count),
        ("SEED_LO", (seed & 0xffff_ffff) as usize),
        ("SEED_HI", (seed >> 32) as usize),
    ]);
    Launch {
        program: super::family_program(
            format!("noise.normal n{count}"),
            "normal",
            generated,
            &[sources::STEP, sources::NOISE],
            vec![(0, Access::ReadWrite), (1, Access::Uniform)],
        ),
        workgroups: super::element_grid(count.div_ceil(4), 64),
        roles: vec!["noise", "step"],
    }
}
