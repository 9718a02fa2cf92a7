//! dcgan-wgpu: a DCGAN trained with WGSL compute shaders on any wgpu adapter.

pub mod data;
pub mod device;
pub mod reference;
pub mod shapes;
