//! dcgan-wgpu: a DCGAN trained with WGSL compute shaders on any wgpu adapter.

pub mod autotune;
pub mod bench;
pub mod buffers;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod device;
pub mod executor;
pub mod grid;
pub mod kernels;
pub mod model;
pub mod reference;
pub mod shapes;
pub mod timing;
pub mod train;
