//! Sample grids: generator images in [-1, 1] tiled into one greyscale PNG.

use std::path::Path;

use anyhow::{Context, Result};

use crate::checkpoint::write_atomically;

/// Tile `images` (`count` images of `side` x `side`, values in [-1, 1]) into a
/// square-ish grid with a 2-pixel border, as torchvision's `make_grid` does.
pub fn grid(images: &[f32], side: usize) -> image::GrayImage {
    let count = images.len() / (side * side);
    let columns = (count as f64).sqrt().ceil() as usize;
    let rows = count.div_ceil(columns.max(1));
    let pad = 2;
    let width = columns * (side + pad) + pad;
    let height = rows * (side + pad) + pad;
    let mut out = image::GrayImage::new(width as u32, height as u32);
    for (index, pixels) in images.chunks_exact(side * side).enumerate() {
        let (row, column) = (index / columns, index % columns);
        for y in 0..side {
            for x in 0..side {
                let value = (pixels[y * side + x].clamp(-1.0, 1.0) + 1.0) * 127.5;
                let px = (column * (side + pad) + pad + x) as u32;
                let py = (row * (side + pad) + pad + y) as u32;
                out.put_pixel(px, py, image::Luma([value.round() as u8]));
            }
        }
    }
    out
}

/// Write the grid of `images` to `path` as PNG, atomically.
pub fn save(path: &Path, images: &[f32], side: usize) -> Result<()> {
    let mut bytes = Vec::new();
    grid(images, side)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .context("encoding a sample grid")?;
    write_atomically(path, &bytes)
}
