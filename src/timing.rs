//! Timing dispatches alone: the per-kernel breakdown of `bench`, the kernel
//! micro-benchmarks and the autotuner.

use std::time::Instant;

use anyhow::Result;

use crate::buffers;
use crate::device::Gpu;
use crate::kernels::Dispatch;

/// Seconds of each dispatch, each run alone in the order given: GPU timestamps where
/// the adapter has them ([`gpu_seconds`]), otherwise the wall clock ([`wall_seconds`]).
pub fn seconds(gpu: &Gpu, dispatches: &[&Dispatch]) -> Result<Vec<f64>> {
    if gpu.timestamps {
        gpu_seconds(gpu, dispatches)
    } else {
        wall_seconds(gpu, dispatches)
    }
}

/// GPU time of each dispatch from timestamps around one compute pass per dispatch,
/// all in one submission, so only the kernels themselves are measured.
pub fn gpu_seconds(gpu: &Gpu, dispatches: &[&Dispatch]) -> Result<Vec<f64>> {
    let count = (2 * dispatches.len()) as u32;
    anyhow::ensure!(
        count <= wgpu::QUERY_SET_MAX_QUERIES,
        "too many dispatches to time in one submission"
    );
    let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("timing"),
        ty: wgpu::QueryType::Timestamp,
        count,
    });
    let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timing resolve"),
        size: u64::from(count) * 8,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    for (i, dispatch) in dispatches.iter().enumerate() {
        let i = i as u32;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&dispatch.label),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &queries,
                beginning_of_pass_write_index: Some(2 * i),
                end_of_pass_write_index: Some(2 * i + 1),
            }),
        });
        dispatch.record(&mut pass);
    }
    encoder.resolve_query_set(&queries, 0..count, &resolve, 0);
    gpu.queue.submit([encoder.finish()]);
    let ticks: Vec<u64> = buffers::read(gpu, &resolve, 0, count as usize)?;
    let period = f64::from(gpu.queue.get_timestamp_period()) * 1e-9;
    Ok(ticks
        .chunks_exact(2)
        .map(|pair| pair[1].saturating_sub(pair[0]) as f64 * period)
        .collect())
}

/// Wall time of each dispatch submitted alone and waited for (submission and
/// synchronisation overhead included): for adapters without timestamp queries.
pub fn wall_seconds(gpu: &Gpu, dispatches: &[&Dispatch]) -> Result<Vec<f64>> {
    gpu.wait()?;
    dispatches
        .iter()
        .map(|dispatch| {
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            dispatch.record(&mut encoder.begin_compute_pass(&Default::default()));
            let commands = encoder.finish();
            let started = Instant::now();
            gpu.queue.submit([commands]);
            gpu.wait()?;
            Ok(started.elapsed().as_secs_f64())
        })
        .collect()
}
