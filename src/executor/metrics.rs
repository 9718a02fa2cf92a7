//! Losses on their way back from the GPU: every step's kernels write into a ring in
//! GPU memory; every so often a copy of the new slots rides along in a step's
//! submission into a staging buffer from a small pool, which is mapped
//! asynchronously. Nothing waits unless every staging buffer is still in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Result, bail};

use super::graph::metric;
use crate::buffers;
use crate::device::Gpu;

/// Steps of losses the ring on the GPU holds.
pub const RING: usize = 1024;
/// Staging buffers for reading the ring back; one is in flight per read.
const STAGING_BUFFERS: usize = 4;

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

/// Losses and discriminator outputs of one step (see [`metric`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub values: [f32; metric::PER_STEP],
}

impl StepMetrics {
    pub fn loss_d(&self) -> f32 {
        self.values[metric::LOSS_D_REAL] + self.values[metric::LOSS_D_FAKE]
    }
    pub fn loss_g(&self) -> f32 {
        self.values[metric::LOSS_G]
    }
    pub fn d_x(&self) -> f32 {
        self.values[metric::D_X]
    }
    pub fn d_g_z(&self) -> f32 {
        self.values[metric::D_G_Z1]
    }
}

struct Staging {
    buffer: wgpu::Buffer,
    state: Arc<AtomicU8>,
    first_step: u64,
    steps: usize,
}

pub struct MetricsRing {
    /// The ring the loss kernels write (binding `metrics`).
    pub buffer: wgpu::Buffer,
    staging: Vec<Staging>,
    in_flight: VecDeque<usize>,
    /// First step whose metrics have not been requested yet.
    unrequested: u64,
}

impl MetricsRing {
    pub fn new(gpu: &Gpu) -> MetricsRing {
        let len = RING * metric::PER_STEP;
        MetricsRing {
            buffer: buffers::storage(gpu, "metrics", len),
            staging: (0..STAGING_BUFFERS)
                .map(|i| Staging {
                    buffer: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&format!("metrics staging {i}")),
                        size: (len * 4) as u64,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    state: Arc::new(AtomicU8::new(IDLE)),
                    first_step: 0,
                    steps: 0,
                })
                .collect(),
            in_flight: VecDeque::new(),
            unrequested: 0,
        }
    }

    /// Floats in the ring.
    pub fn floats(&self) -> usize {
        RING * metric::PER_STEP
    }

    /// The ring slot of a step.
    pub fn slot(step: u64) -> u32 {
        (step % RING as u64) as u32
    }

    /// Whether the ring is half full of unrequested steps (read it before it wraps).
    pub fn due(&self, steps_done: u64) -> bool {
        steps_done - self.unrequested >= (RING / 2) as u64
    }

    /// Forget steps before `steps_done` (a restored run, a profiled step).
    pub fn skip_to(&mut self, steps_done: u64) {
        self.unrequested = steps_done;
    }

    /// Record copies of the slots of steps not yet requested (up to `steps_done`)
    /// into a free staging buffer; call [`MetricsRing::map`] after the submission.
    pub fn request(
        &mut self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        steps_done: u64,
    ) -> Result<Option<usize>> {
        let steps = (steps_done - self.unrequested) as usize;
        if steps == 0 {
            return Ok(None);
        }
        let index = self.free_staging(gpu)?;
        let first = self.unrequested;
        let per_step = (metric::PER_STEP * 4) as u64;
        for i in 0..steps {
            let slot = u64::from(Self::slot(first + i as u64)) * per_step;
            let target = &self.staging[index].buffer;
            encoder.copy_buffer_to_buffer(
                &self.buffer,
                slot,
                target,
                i as u64 * per_step,
                per_step,
            );
        }
        let staging = &mut self.staging[index];
        staging.first_step = first;
        staging.steps = steps;
        self.unrequested = steps_done;
        Ok(Some(index))
    }

    fn free_staging(&mut self, gpu: &Gpu) -> Result<usize> {
        loop {
            let idle = self
                .staging
                .iter()
                .position(|s| s.state.load(Ordering::Acquire) == IDLE);
            if let Some(i) = idle {
                return Ok(i);
            }
            // All in flight: wait for the oldest rather than allocate.
            gpu.wait()?;
            self.collect()?;
        }
    }

    /// Start mapping a requested staging buffer (after the submission that fills it).
    pub fn map(&mut self, index: usize) {
        let staging = &self.staging[index];
        staging.state.store(PENDING, Ordering::Release);
        let state = staging.state.clone();
        let bytes = (staging.steps * metric::PER_STEP * 4) as u64;
        staging
            .buffer
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |result| {
                state.store(
                    if result.is_ok() { READY } else { FAILED },
                    Ordering::Release,
                );
            });
        self.in_flight.push_back(index);
    }

    /// Metrics of every mapped staging buffer, in step order.
    pub fn collect(&mut self) -> Result<Vec<StepMetrics>> {
        let mut out = Vec::new();
        while let Some(&index) = self.in_flight.front() {
            let staging = &self.staging[index];
            match staging.state.load(Ordering::Acquire) {
                READY => {}
                FAILED => bail!("reading losses back from the GPU failed (device lost?)"),
                _ => break,
            }
            let bytes = (staging.steps * metric::PER_STEP * 4) as u64;
            {
                let view = staging.buffer.slice(..bytes).get_mapped_range()?;
                let values: &[f32] = bytemuck::cast_slice(&view);
                for (i, chunk) in values.chunks_exact(metric::PER_STEP).enumerate() {
                    out.push(StepMetrics {
                        step: staging.first_step + i as u64,
                        values: chunk.try_into().expect("chunk of PER_STEP"),
                    });
                }
            }
            staging.buffer.unmap();
            staging.state.store(IDLE, Ordering::Release);
            self.in_flight.pop_front();
        }
        Ok(out)
    }

    /// Bytes of device memory held.
    pub fn device_bytes(&self) -> u64 {
        self.buffer.size() + self.staging.iter().map(|s| s.buffer.size()).sum::<u64>()
    }
}
