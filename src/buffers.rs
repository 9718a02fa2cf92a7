//! Buffer creation, upload and (blocking) read-back. Read-back is for tests,
//! checkpoints and sample grids, never inside a training step.

use anyhow::{Context, Result};
use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::device::Gpu;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Fail with a clear message when `len` 4-byte elements exceed what this device
/// holds in one buffer binding (checked before allocating: wgpu would panic).
pub fn ensure_fits(gpu: &Gpu, label: &str, len: usize) -> Result<()> {
    let most = gpu
        .limits
        .max_buffer_size
        .min(gpu.limits.max_storage_buffer_binding_size);
    let bytes = len as u64 * 4;
    anyhow::ensure!(
        bytes <= most,
        "{label} would need {} MiB in one buffer, more than the {} MiB this adapter allows: \
         use a smaller --batch-size or --feature-maps",
        bytes.div_ceil(1 << 20),
        most >> 20
    );
    Ok(())
}

/// A zeroed storage buffer of `len` 4-byte elements.
pub fn storage(gpu: &Gpu, label: &str, len: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (len.max(1) * 4) as u64,
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// A storage buffer holding `data`.
pub fn upload<T: Pod>(gpu: &Gpu, label: &str, data: &[T]) -> wgpu::Buffer {
    if data.is_empty() {
        return storage(gpu, label, 1);
    }
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: STORAGE,
        })
}

/// A uniform buffer holding `value`, rewritable with `queue.write_buffer`.
pub fn uniform<T: Pod>(gpu: &Gpu, label: &str, value: &T) -> wgpu::Buffer {
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
}

/// Copy `len` elements starting at element `offset` back to the CPU and wait.
pub fn read<T: Pod>(gpu: &Gpu, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    let bytes = (len * size) as u64;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read-back"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, (offset * size) as u64, &staging, 0, bytes);
    gpu.queue.submit([encoder.finish()]);
    let slice = staging.slice(..);
    let (sender, receiver) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |result| {
        let _ = sender.send(result);
    });
    gpu.wait()?;
    receiver
        .recv()
        .context("the GPU dropped a read-back request")?
        .context("mapping a read-back buffer failed")?;
    let data = bytemuck::cast_slice(&slice.get_mapped_range()?).to_vec();
    staging.unmap();
    Ok(data)
}

/// Read a whole f32 buffer.
pub fn read_all(gpu: &Gpu, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
    read(gpu, buffer, 0, (buffer.size() / 4) as usize)
}
