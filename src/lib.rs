//! dcgan-wgpu: a DCGAN trained with WGSL compute shaders on any wgpu adapter.

pub mod buffers;
pub mod data;
pub mod device;
pub mod executor;
pub mod kernels;
pub mod model;
pub mod reference;
pub mod shapes;
