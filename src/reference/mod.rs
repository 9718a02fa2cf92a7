//! The CPU reference: plain, obviously-correct Rust for every operation; the oracle for the GPU kernels.
//!
//! Every function takes `f32` slices in PyTorch's layouts (see [`crate::shapes`]) and returns
//! fresh `Vec<f32>`s. Sums are accumulated in `f64` and rounded to `f32` once at the end, so the
//! reference is at least as accurate as any GPU summation order it is compared with.
//! `tests/reference.rs` checks every backward pass against central finite differences of its
//! forward pass, and the forward passes against values worked out by hand.
//!
//! `Flatten` (`[B, C, H, W]` to `[B, C*H*W]`) has no function here: on row-major NCHW data it
//! does not move a single element, so the flattened tensor is the same slice.

pub mod activation;
pub mod adamw;
pub mod batchnorm;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod noise;

/// Rounds `f64` accumulators to the `f32` outputs.
fn round_to_f32(accumulators: &[f64]) -> Vec<f32> {
    accumulators.iter().map(|&a| a as f32).collect()
}
