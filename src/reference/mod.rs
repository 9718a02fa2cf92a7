//! The CPU reference: plain, obviously-correct Rust for every operation; the oracle for the GPU kernels.
