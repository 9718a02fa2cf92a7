//! The graph executor: builds the schedule of a training step once (buffers,
//! pipelines, bind groups) and replays it every step as one command buffer and one
//! submission, with no allocation and no CPU-GPU wait inside the step. Losses come
//! back asynchronously ([`metrics`]): [`Executor::poll_metrics`] hands back whatever
//! has arrived.

pub mod graph;
mod metrics;
mod state;

pub use metrics::StepMetrics;
use state::NetworkState;
pub use state::{NamedTensor, TensorData};

use std::collections::HashMap;

use anyhow::{Context, Result};
use bytemuck::{Pod, Zeroable};

use crate::autotune::{self, Autotuner};
use crate::buffers;
use crate::device::Gpu;
use crate::kernels::adamw::Hyper;
use crate::kernels::matmul::MatMul;
use crate::kernels::{Dispatch, Kernels, View, data};
use crate::model::{Layout, Network};
use crate::shapes::AdamW;
use graph::{Buf, Lowering, Net, Op, Tensor};
use metrics::MetricsRing;

/// The per-step values of `shaders/step.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct StepInfo {
    step: u32,
    batch_start: u32,
    metrics_slot: u32,
    unused: u32,
}

/// Where real images and noise come from.
pub enum Inputs {
    /// The training set on the GPU, gathered in the epoch's order, and noise from
    /// the GPU generator seeded with `seed`.
    Dataset {
        pixels: Vec<u8>,
        image_pixels: usize,
        seed: u64,
    },
    /// Written by the caller before each step ([`Executor::set_inputs`]): parity tests.
    External,
}

pub struct ExecutorConfig {
    pub generator: Network,
    pub discriminator: Network,
    /// The largest batch a step will use (buffers are sized for it); 0 builds a
    /// sampler with no training step.
    pub batch: usize,
    /// Other batch sizes to plan for (the last, smaller batch of an epoch).
    pub extra_batches: Vec<usize>,
    /// Images in a sample grid (eval-mode generator forward).
    pub samples: usize,
    pub optimizer: AdamW,
    pub inputs: Inputs,
    /// Keep a copy of every layer's output of every pass (parity tests).
    pub capture: bool,
    /// Time the tiling candidates of matrix products not timed before on this
    /// adapter (see [`crate::autotune`]); otherwise cached or default tilings.
    pub autotune: bool,
}

/// A buffer copy recorded between compute passes.
struct Copy {
    from: wgpu::Buffer,
    from_offset: u64,
    to: wgpu::Buffer,
    to_offset: u64,
    bytes: u64,
}

enum Segment {
    Pass(Vec<Dispatch>),
    Copy(Copy),
}

/// A bound schedule: compute passes, with copies between them when capturing.
struct Plan {
    segments: Vec<Segment>,
}

impl Plan {
    fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        for segment in &self.segments {
            match segment {
                Segment::Pass(dispatches) => {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    for dispatch in dispatches {
                        dispatch.record(&mut pass);
                    }
                }
                Segment::Copy(c) => encoder.copy_buffer_to_buffer(
                    &c.from,
                    c.from_offset,
                    &c.to,
                    c.to_offset,
                    c.bytes,
                ),
            }
        }
    }

    fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.segments.iter().flat_map(|s| match s {
            Segment::Pass(d) => d.as_slice(),
            Segment::Copy(_) => &[],
        })
    }
}

pub struct Executor {
    pub gpu: Gpu,
    kernels: Kernels,
    states: [NetworkState; 2],
    workspace: HashMap<String, wgpu::Buffer>,
    plans: HashMap<usize, Plan>,
    sample_plan: Plan,
    sample_output: Tensor,
    samples: usize,
    step_info: wgpu::Buffer,
    metrics: MetricsRing,
    steps_done: u64,
    optimizer: AdamW,
    external_inputs: bool,
    capture: bool,
    dataset_buffers: Option<(wgpu::Buffer, wgpu::Buffer, wgpu::Buffer)>,
    images: usize,
}

impl Executor {
    pub fn new(gpu: Gpu, config: ExecutorConfig) -> Result<Executor> {
        let states = [
            NetworkState::new(&gpu, config.generator)?,
            NetworkState::new(&gpu, config.discriminator)?,
        ];
        let (external_inputs, image_pixels, images, seed) = match &config.inputs {
            Inputs::Dataset {
                pixels,
                image_pixels,
                seed,
            } => (false, *image_pixels, pixels.len() / image_pixels, *seed),
            Inputs::External => (true, states[1].network.input.per_image(), 0, 0),
        };
        let mut tuner = Autotuner::load(&gpu);
        let tiling = |m: &MatMul| {
            tuner
                .cached(&gpu, m)
                .unwrap_or_else(|| autotune::default_tiling(&gpu, m))
        };
        let metrics = MetricsRing::new(&gpu);
        let metrics_len = metrics.floats();
        let lower = |batch: usize| -> Result<Vec<Op>> {
            let mut l = Lowering {
                generator: &states[0].network,
                discriminator: &states[1].network,
                layouts: [&states[0].layout, &states[1].layout],
                batch,
                tiling: &tiling,
                capture: config.capture,
                metrics_len,
                ops: Vec::new(),
            };
            let noise_channels = states[0].network.input.per_image();
            let (real, noise) = if external_inputs {
                (
                    Tensor::work("D.real", batch * image_pixels),
                    Tensor::work("G.noise", batch * noise_channels),
                )
            } else {
                (
                    l.real_batch(image_pixels, images),
                    l.noise(noise_channels, seed),
                )
            };
            graph::training_step(&mut l, real, noise)?;
            Ok(l.ops)
        };
        // Batch 0: a sampler only (no training plans).
        let mut batches: Vec<usize> = [config.batch]
            .iter()
            .chain(&config.extra_batches)
            .copied()
            .filter(|&b| b > 0)
            .collect();
        batches.dedup();
        let mut lowered = Vec::new();
        for &batch in &batches {
            lowered.push((batch, lower(batch)?));
        }
        let (mut sample_ops, sample_output) = {
            let mut l = Lowering {
                generator: &states[0].network,
                discriminator: &states[1].network,
                layouts: [&states[0].layout, &states[1].layout],
                batch: config.samples,
                tiling: &tiling,
                capture: false,
                metrics_len,
                ops: Vec::new(),
            };
            let noise = Tensor::work(
                "sample.noise",
                config.samples * states[0].network.input.per_image(),
            );
            l.pack_weights(Net::Generator);
            let forward = l.forward(Net::Generator, noise, false, "sample")?;
            (l.ops, forward.output())
        };
        let mut executor = Executor {
            kernels: Kernels::new(),
            workspace: HashMap::new(),
            plans: HashMap::new(),
            sample_plan: Plan {
                segments: Vec::new(),
            },
            sample_output,
            samples: config.samples,
            step_info: buffers::uniform(&gpu, "step", &StepInfo::zeroed()),
            metrics,
            steps_done: 0,
            optimizer: config.optimizer,
            external_inputs,
            capture: config.capture,
            dataset_buffers: None,
            images,
            states,
            gpu,
        };
        if let Inputs::Dataset { pixels, .. } = &config.inputs {
            buffers::ensure_fits(&executor.gpu, "the training set", pixels.len().div_ceil(4))?;
            executor.upload_dataset(pixels);
        }
        executor.allocate_workspace(lowered.iter().flat_map(|(_, ops)| ops).chain(&sample_ops))?;
        if config.autotune {
            // Only the full batch's products: the last batch of an epoch and the
            // sample grid run rarely and keep default tilings, which saves minutes
            // of shader compilation on a software adapter.
            let full_batch_ops = lowered.iter().take(1).flat_map(|(_, ops)| ops);
            executor.autotune(&mut tuner, full_batch_ops)?;
            for op in lowered
                .iter_mut()
                .flat_map(|(_, ops)| ops)
                .chain(&mut sample_ops)
            {
                if let Op::Kernel {
                    launch,
                    matmul: Some(m),
                    ..
                } = op
                    && let Some(t) = tuner.cached(&executor.gpu, m)
                {
                    *launch = m.launch(t);
                }
            }
        }
        for (batch, ops) in &lowered {
            let plan = executor.bind(ops)?;
            executor.plans.insert(*batch, plan);
        }
        executor.sample_plan = executor.bind(&sample_ops)?;
        Ok(executor)
    }

    fn upload_dataset(&mut self, pixels: &[u8]) {
        let mut packed = pixels.to_vec();
        packed.resize(pixels.len().div_ceil(4) * 4, 0);
        let words: &[u32] = bytemuck::cast_slice(&packed);
        let order: Vec<u32> = (0..self.images as u32).collect();
        self.dataset_buffers = Some((
            buffers::upload(&self.gpu, "dataset pixels", words),
            buffers::upload(&self.gpu, "epoch order", &order),
            buffers::upload(
                &self.gpu,
                "normalisation table",
                &data::normalisation_table(),
            ),
        ));
    }

    /// Time the candidates of every matrix product without a cached choice.
    fn autotune<'o>(
        &mut self,
        tuner: &mut Autotuner,
        ops: impl Iterator<Item = &'o Op>,
    ) -> Result<()> {
        let mut pending: Vec<(&MatMul, &Vec<(&'static str, Tensor)>)> = Vec::new();
        for op in ops {
            if let Op::Kernel {
                matmul: Some(m),
                bindings,
                ..
            } = op
                && tuner.cached(&self.gpu, m).is_none()
                && !pending.iter().any(|(p, _)| p.key() == m.key())
            {
                pending.push((m, bindings));
            }
        }
        let mut kernels = std::mem::take(&mut self.kernels);
        let mut caching = true;
        for (i, (matmul, bindings)) in pending.iter().enumerate() {
            let views: Vec<(&str, View)> = bindings
                .iter()
                .map(|(role, t)| (*role, self.view(t)))
                .collect();
            let (tiling, seconds) = tuner.tune(&self.gpu, matmul, |launch| {
                kernels.bind(&self.gpu, launch, &views)
            })?;
            let label = matmul.launch(tiling).program.label;
            eprintln!(
                "autotune {}/{}: {label}: {:.2} ms",
                i + 1,
                pending.len(),
                seconds * 1e3
            );
            // Saved as it goes, so an interrupted first run keeps what it timed. A
            // cache that cannot be written costs time next run, not this run.
            if caching && let Err(e) = tuner.save() {
                eprintln!(
                    "warning: kernel tilings not cached ({e:#}); they are timed again next run"
                );
                caching = false;
            }
        }
        self.kernels = kernels;
        Ok(())
    }

    fn allocate_workspace<'o>(&mut self, ops: impl Iterator<Item = &'o Op>) -> Result<()> {
        let mut sizes: HashMap<String, usize> = HashMap::new();
        let mut note = |t: &Tensor| {
            if let Buf::Work(key) = &t.buf {
                let size = sizes.entry(key.clone()).or_default();
                *size = (*size).max(t.offset + t.len);
            }
        };
        for op in ops {
            match op {
                Op::Kernel { bindings, .. } => bindings.iter().for_each(|(_, t)| note(t)),
                Op::Copy { from, to } => {
                    note(from);
                    note(to);
                }
            }
        }
        for (key, &len) in &sizes {
            buffers::ensure_fits(&self.gpu, &format!("activation {key}"), len)?;
        }
        for (key, len) in sizes {
            let buffer = buffers::storage(&self.gpu, &key, len);
            self.workspace.insert(key, buffer);
        }
        Ok(())
    }

    fn buffer(&self, buf: &Buf) -> &wgpu::Buffer {
        let state = |net: &Net| &self.states[*net as usize];
        let dataset = || self.dataset_buffers.as_ref().expect("dataset inputs");
        match buf {
            Buf::Work(key) => &self.workspace[key],
            Buf::Params(n) => &state(n).params,
            Buf::Grads(n) => &state(n).grads,
            Buf::ExpAvg(n) => &state(n).exp_avg,
            Buf::ExpAvgSq(n) => &state(n).exp_avg_sq,
            Buf::Running(n) => &state(n).running,
            Buf::Hyper(n) => &state(n).hyper,
            Buf::Step => &self.step_info,
            Buf::Metrics => &self.metrics.buffer,
            Buf::Pixels => &dataset().0,
            Buf::Order => &dataset().1,
            Buf::Table => &dataset().2,
        }
    }

    fn view(&self, t: &Tensor) -> View<'_> {
        View {
            buffer: self.buffer(&t.buf),
            offset: t.offset as u64,
            len: t.len as u64,
        }
    }

    fn bind(&mut self, ops: &[Op]) -> Result<Plan> {
        let mut kernels = std::mem::take(&mut self.kernels);
        let plan = self.bind_with(&mut kernels, ops);
        self.kernels = kernels;
        plan
    }

    fn bind_with(&self, kernels: &mut Kernels, ops: &[Op]) -> Result<Plan> {
        let mut segments = Vec::new();
        let mut current = Vec::new();
        for op in ops {
            match op {
                Op::Kernel {
                    launch, bindings, ..
                } => {
                    let given: Vec<(&str, View)> = bindings
                        .iter()
                        .map(|(role, t)| (*role, self.view(t)))
                        .collect();
                    current.push(kernels.bind(&self.gpu, launch, &given)?);
                }
                Op::Copy { from, to } => {
                    segments.push(Segment::Pass(std::mem::take(&mut current)));
                    segments.push(Segment::Copy(Copy {
                        from: self.buffer(&from.buf).clone(),
                        from_offset: (from.offset * 4) as u64,
                        to: self.buffer(&to.buf).clone(),
                        to_offset: (to.offset * 4) as u64,
                        bytes: (from.len * 4) as u64,
                    }));
                }
            }
        }
        segments.push(Segment::Pass(current));
        segments.retain(|s| !matches!(s, Segment::Pass(d) if d.is_empty()));
        Ok(Plan { segments })
    }

    /// Set the order in which this epoch visits the training images.
    pub fn set_epoch_order(&mut self, order: &[u32]) -> Result<()> {
        let (_, buffer, _) = self
            .dataset_buffers
            .as_ref()
            .context("this executor has no dataset")?;
        anyhow::ensure!(
            order.len() == self.images,
            "order covers {} of {} images",
            order.len(),
            self.images
        );
        self.gpu
            .queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(order));
        Ok(())
    }

    /// Real images (normalised) and noise for the next step, when inputs are external.
    pub fn set_inputs(&mut self, real: &[f32], noise: &[f32]) -> Result<()> {
        anyhow::ensure!(self.external_inputs, "this executor gathers its own inputs");
        for (key, data) in [("D.real", real), ("G.noise", noise)] {
            let buffer = &self.workspace[key];
            anyhow::ensure!(
                (data.len() * 4) as u64 <= buffer.size(),
                "{key}: {} values do not fit",
                data.len()
            );
            self.gpu
                .queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// One training step on `batch` images starting at `batch_start` in the epoch's
    /// order: one command buffer, one submission, no waiting.
    pub fn step(&mut self, batch: usize, batch_start: usize, read_metrics: bool) -> Result<()> {
        let plan = self
            .plans
            .get(&batch)
            .with_context(|| format!("no plan for batch size {batch}"))?;
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        plan.record(&mut encoder);
        self.write_step_uniforms(batch_start);
        self.advance_counters();
        let staging = if read_metrics || self.metrics.due(self.steps_done) {
            self.metrics
                .request(&self.gpu, &mut encoder, self.steps_done)?
        } else {
            None
        };
        self.gpu.queue.submit([encoder.finish()]);
        if let Some(index) = staging {
            self.metrics.map(index);
        }
        Ok(())
    }

    /// The step's counter, batch offset, metrics slot and AdamW scalars, written
    /// before its submission (the queue orders the writes before the commands).
    fn write_step_uniforms(&self, batch_start: usize) {
        let info = StepInfo {
            step: self.steps_done as u32,
            batch_start: batch_start as u32,
            metrics_slot: MetricsRing::slot(self.steps_done),
            unused: 0,
        };
        let queue = &self.gpu.queue;
        queue.write_buffer(&self.step_info, 0, bytemuck::bytes_of(&info));
        let hyper = Hyper::at_step(&self.optimizer, self.steps_done as u32 + 1);
        for state in &self.states {
            queue.write_buffer(&state.hyper, 0, bytemuck::bytes_of(&hyper));
        }
    }

    fn advance_counters(&mut self) {
        self.steps_done += 1;
        self.states[0].batches_tracked += 1;
        self.states[1].batches_tracked += 3;
    }

    /// Metrics that have arrived from the GPU, without waiting.
    pub fn poll_metrics(&mut self) -> Result<Vec<StepMetrics>> {
        self.gpu
            .device
            .poll(wgpu::PollType::Poll)
            .context("the GPU device was lost")?;
        self.metrics.collect()
    }

    /// Wait for every step submitted so far and return the metrics not yet returned.
    pub fn finish(&mut self) -> Result<Vec<StepMetrics>> {
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        let staging = self
            .metrics
            .request(&self.gpu, &mut encoder, self.steps_done)?;
        self.gpu.queue.submit([encoder.finish()]);
        if let Some(index) = staging {
            self.metrics.map(index);
        }
        self.gpu.wait()?;
        self.metrics.collect()
    }

    /// Generator images `[n, 1, 28, 28]` for `noise`, in eval mode (running statistics).
    pub fn sample(&mut self, noise: &[f32]) -> Result<Vec<f32>> {
        let key = "sample.noise";
        anyhow::ensure!(
            noise.len() == self.samples * self.states[0].network.input.per_image(),
            "sample noise must hold {} images' worth",
            self.samples
        );
        self.gpu
            .queue
            .write_buffer(&self.workspace[key], 0, bytemuck::cast_slice(noise));
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        self.sample_plan.record(&mut encoder);
        self.gpu.queue.submit([encoder.finish()]);
        let out = &self.sample_output;
        buffers::read(&self.gpu, self.buffer(&out.buf), out.offset, out.len)
    }

    pub fn sample_count(&self) -> usize {
        self.samples
    }

    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    pub fn network(&self, net: Net) -> &Network {
        &self.states[net as usize].network
    }

    pub fn layout(&self, net: Net) -> &Layout {
        &self.states[net as usize].layout
    }

    /// The `state_dict` of a network: parameters and running statistics read from
    /// the GPU, and `num_batches_tracked` of every BatchNorm layer.
    pub fn state_dict(&self, net: Net) -> Result<Vec<NamedTensor>> {
        self.states[net as usize].state_dict(&self.gpu)
    }

    /// Replace a network's parameters and running statistics (a checkpoint, a
    /// fixture). As PyTorch's `load_state_dict(strict=True)`: every tensor of the
    /// model with its exact shape, and nothing else.
    pub fn load_state_dict(&mut self, net: Net, tensors: &[NamedTensor]) -> Result<()> {
        self.states[net as usize].load_state_dict(&self.gpu, tensors)
    }

    /// Replace AdamW's moments of a network and the step count (resuming, tests).
    pub fn load_optimizer_state(
        &mut self,
        net: Net,
        exp_avg: &[NamedTensor],
        exp_avg_sq: &[NamedTensor],
        steps_done: u64,
    ) -> Result<()> {
        self.states[net as usize].load_moments(&self.gpu, exp_avg, exp_avg_sq)?;
        self.steps_done = steps_done;
        self.metrics.skip_to(steps_done);
        Ok(())
    }

    /// Initialise both networks as the seed does, from `seed`.
    pub fn initialise(&mut self, seed: u64) -> Result<()> {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for state in &self.states {
            state.initialise(&self.gpu, &mut rng);
        }
        Ok(())
    }

    /// The flat gradient and AdamW moment buffers of a network (tests).
    pub fn optimizer_buffers(&self, net: Net) -> Result<[Vec<f32>; 3]> {
        let s = &self.states[net as usize];
        Ok([
            buffers::read_all(&self.gpu, &s.grads)?,
            buffers::read_all(&self.gpu, &s.exp_avg)?,
            buffers::read_all(&self.gpu, &s.exp_avg_sq)?,
        ])
    }

    /// A captured tensor (`capture.<pass>.layers.<i>` and friends; see [`graph`]).
    pub fn captured(&self, name: &str) -> Result<Vec<f32>> {
        anyhow::ensure!(self.capture, "this executor does not capture");
        let buffer = self
            .workspace
            .get(&format!("capture.{name}"))
            .with_context(|| format!("nothing captured as {name}"))?;
        buffers::read_all(&self.gpu, buffer)
    }

    /// The schedule of a training step at `batch`: one line per dispatch.
    pub fn schedule(&self, batch: usize) -> Result<Vec<String>> {
        let plan = self
            .plans
            .get(&batch)
            .with_context(|| format!("no plan for batch {batch}"))?;
        Ok(plan
            .dispatches()
            .map(|d| format!("{:<90} workgroups {:?}", d.label, d.workgroups))
            .collect())
    }

    /// Run one training step with every dispatch timed alone, and return each
    /// dispatch's label and time in seconds: GPU timestamps around one compute pass
    /// per dispatch where the adapter has them, otherwise the wall time of each
    /// dispatch submitted alone and waited for (submission overhead included).
    /// Metrics of the step are not read; the step counts like any other.
    pub fn profile_step(&mut self, batch: usize, batch_start: usize) -> Result<Vec<(String, f64)>> {
        let plan = self
            .plans
            .get(&batch)
            .with_context(|| format!("no plan for batch size {batch}"))?;
        let dispatches: Vec<&Dispatch> = plan.dispatches().collect();
        self.write_step_uniforms(batch_start);
        let seconds = crate::timing::seconds(&self.gpu, &dispatches)?;
        let labels: Vec<String> = dispatches.iter().map(|d| d.label.clone()).collect();
        self.advance_counters();
        self.metrics.skip_to(self.steps_done);
        Ok(labels.into_iter().zip(seconds).collect())
    }

    /// Dispatches in one training step at `batch`.
    pub fn dispatches_per_step(&self, batch: usize) -> usize {
        self.plans.get(&batch).map_or(0, |p| p.dispatches().count())
    }

    /// Bytes of device memory held by the executor's buffers.
    pub fn device_bytes(&self) -> u64 {
        let states: u64 = self.states.iter().map(NetworkState::device_bytes).sum();
        let dataset: u64 = self
            .dataset_buffers
            .iter()
            .flat_map(|(a, b, c)| [a.size(), b.size(), c.size()])
            .sum();
        let workspace: u64 = self.workspace.values().map(|b| b.size()).sum();
        states + dataset + workspace + self.metrics.device_bytes() + self.step_info.size()
    }

    /// Distinct pipelines compiled.
    pub fn pipelines(&self) -> usize {
        self.kernels.len()
    }
}
