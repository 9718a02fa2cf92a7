//! Gathering and normalising a batch of real images on the GPU (`shaders/data.wgsl`).
//! Roles: `pixels` (u8 images packed four per u32), `order`, `table`, `images`, `step`.

use super::{Access, Launch, sources};

/// What ToTensor + Normalize((0.5,), (0.5,)) make of each byte, in PyTorch's f32
/// operations: `(b / 255 - 0.5) / 0.5`.
pub fn normalisation_table() -> Vec<f32> {
    (0..=255u8)
        .map(|b| (b as f32 / 255.0 - 0.5) / 0.5)
        .collect()
}

pub fn gather(batch: usize, image_pixels: usize) -> Launch {
    let count = batch * image_pixels;
    Launch {
        program: super::family_program(
            format!("data.gather b{batch}"),
            "gather",
            super::u32_constants(&[("IMAGE", image_pixels), ("COUNT", count)]),
            &[sources::STEP, sources::DATA],
            vec![
                (0, Access::Read),
                (1, Access::Read),
                (2, Access::Read),
                (3, Access::ReadWrite),
                (4, Access::Uniform),
            ],
        ),
        workgroups: super::element_grid(count, 256),
        roles: vec!["pixels", "order", "table", "images", "step"],
    }
}
