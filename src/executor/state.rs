//! A network's state on the GPU: parameters, gradients and AdamW moments in flat
//! buffers of one layout, running statistics, and its `state_dict` in and out.

use anyhow::{Context, Result, anyhow, bail};
use bytemuck::Zeroable;
use rand::Rng;

use crate::buffers;
use crate::device::Gpu;
use crate::kernels::adamw::Hyper;
use crate::model::{Layout, Network, TensorKind};

/// A network's parameters, gradients, AdamW moments and running statistics.
pub(super) struct NetworkState {
    pub network: Network,
    pub layout: Layout,
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub exp_avg: wgpu::Buffer,
    pub exp_avg_sq: wgpu::Buffer,
    pub running: wgpu::Buffer,
    pub hyper: wgpu::Buffer,
    /// `num_batches_tracked` of every BatchNorm layer (training forwards so far).
    pub batches_tracked: u64,
}

impl NetworkState {
    pub fn new(gpu: &Gpu, network: Network) -> Result<NetworkState> {
        network.validate().map_err(|e| anyhow!(e))?;
        let layout = network.layout();
        let name = network.name;
        buffers::ensure_fits(gpu, &format!("the {name}'s parameters"), layout.parameters)?;
        let make = |what: &str, len| buffers::storage(gpu, &format!("{name}.{what}"), len);
        Ok(NetworkState {
            params: make("params", layout.parameters),
            grads: make("grads", layout.parameters),
            exp_avg: make("exp_avg", layout.parameters),
            exp_avg_sq: make("exp_avg_sq", layout.parameters),
            running: make("running", layout.running),
            hyper: buffers::uniform(gpu, &format!("{name}.hyper"), &Hyper::zeroed()),
            batches_tracked: 0,
            network,
            layout,
        })
    }

    pub fn device_bytes(&self) -> u64 {
        [
            &self.params,
            &self.grads,
            &self.exp_avg,
            &self.exp_avg_sq,
            &self.running,
            &self.hyper,
        ]
        .iter()
        .map(|b| b.size())
        .sum()
    }

    pub fn state_dict(&self, gpu: &Gpu) -> Result<Vec<NamedTensor>> {
        let params = buffers::read_all(gpu, &self.params)?;
        let running = buffers::read_all(gpu, &self.running)?;
        let mut out = Vec::new();
        for slot in &self.layout.tensors {
            let source = match slot.kind {
                TensorKind::Parameter => &params,
                TensorKind::Running => &running,
            };
            out.push(NamedTensor {
                name: slot.name.clone(),
                shape: slot.shape.clone(),
                data: TensorData::F32(source[slot.offset..slot.offset + slot.len()].to_vec()),
            });
            if let Some(layer) = slot.name.strip_suffix("running_var") {
                out.push(NamedTensor {
                    name: format!("{layer}num_batches_tracked"),
                    shape: Vec::new(),
                    data: TensorData::I64(vec![self.batches_tracked as i64]),
                });
            }
        }
        Ok(out)
    }

    /// Whether `name` is a key of this network's `state_dict`.
    fn knows(&self, name: &str) -> bool {
        self.layout.find(name).is_some()
            || name
                .strip_suffix("num_batches_tracked")
                .is_some_and(|layer| self.layout.find(&format!("{layer}running_var")).is_some())
    }

    pub fn load_state_dict(&mut self, gpu: &Gpu, tensors: &[NamedTensor]) -> Result<()> {
        let name = self.network.name;
        if let Some(unexpected) = tensors.iter().find(|t| !self.knows(&t.name)) {
            bail!(
                "{name}: unexpected tensor {} (a checkpoint of another model?)",
                unexpected.name
            );
        }
        let mut params = vec![0.0f32; self.layout.parameters];
        let mut running = vec![0.0f32; self.layout.running];
        for slot in &self.layout.tensors {
            let given = tensors
                .iter()
                .find(|t| t.name == slot.name)
                .with_context(|| format!("{name}: missing tensor {}", slot.name))?;
            anyhow::ensure!(
                given.shape == slot.shape,
                "{name}: {} has shape {:?}, the model needs {:?}",
                slot.name,
                given.shape,
                slot.shape
            );
            let TensorData::F32(values) = &given.data else {
                bail!("{name}: {} must be float32", slot.name);
            };
            let target = match slot.kind {
                TensorKind::Parameter => &mut params,
                TensorKind::Running => &mut running,
            };
            target[slot.offset..slot.offset + slot.len()].copy_from_slice(values);
        }
        let tracked = tensors
            .iter()
            .filter(|t| t.name.ends_with("num_batches_tracked"))
            .map(|t| match &t.data {
                TensorData::I64(v) if v.len() == 1 && v[0] >= 0 => Ok(v[0] as u64),
                _ => Err(anyhow!("{name}: {} must be one non-negative int64", t.name)),
            })
            .collect::<Result<Vec<u64>>>()?;
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(&params));
        gpu.queue
            .write_buffer(&self.running, 0, bytemuck::cast_slice(&running));
        self.batches_tracked = tracked.into_iter().max().unwrap_or(0);
        Ok(())
    }

    pub fn load_moments(
        &self,
        gpu: &Gpu,
        exp_avg: &[NamedTensor],
        exp_avg_sq: &[NamedTensor],
    ) -> Result<()> {
        for (tensors, buffer) in [(exp_avg, &self.exp_avg), (exp_avg_sq, &self.exp_avg_sq)] {
            let mut flat = vec![0.0f32; self.layout.parameters];
            for slot in self
                .layout
                .tensors
                .iter()
                .filter(|t| t.kind == TensorKind::Parameter)
            {
                let given = tensors
                    .iter()
                    .find(|t| t.name == slot.name)
                    .with_context(|| format!("missing optimizer state for {}", slot.name))?;
                let TensorData::F32(values) = &given.data else {
                    bail!("optimizer state for {} must be float32", slot.name);
                };
                anyhow::ensure!(
                    values.len() == slot.len(),
                    "optimizer state for {} has the wrong size",
                    slot.name
                );
                flat[slot.offset..slot.offset + slot.len()].copy_from_slice(values);
            }
            gpu.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(&flat));
        }
        Ok(())
    }

    /// The seed's initialisation (see [`Network::initial_state`]).
    pub fn initialise(&self, gpu: &Gpu, rng: &mut impl Rng) {
        let (params, running) = self.network.initial_state(rng);
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(&params));
        gpu.queue
            .write_buffer(&self.running, 0, bytemuck::cast_slice(&running));
    }
}

/// A `state_dict` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl NamedTensor {
    /// No NaN or infinity (integer tensors always are finite).
    pub fn is_finite(&self) -> bool {
        match &self.data {
            TensorData::F32(values) => values.iter().all(|v| v.is_finite()),
            TensorData::I64(_) => true,
        }
    }
}
