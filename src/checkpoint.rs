//! Checkpoints: a network's `state_dict` in safetensors, with PyTorch's names
//! (`layers.0.weight`, ..., `layers.1.num_batches_tracked`) so that the seed's
//! classes load them with `load_state_dict(strict=True)`. Every file is written to a
//! temporary name and renamed, so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, View};

use crate::executor::{NamedTensor, TensorData};

struct Entry<'a>(&'a NamedTensor);

impl View for Entry<'_> {
    fn dtype(&self) -> Dtype {
        match self.0.data {
            TensorData::F32(_) => Dtype::F32,
            TensorData::I64(_) => Dtype::I64,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.0.data {
            TensorData::F32(v) => bytemuck::cast_slice(v).into(),
            TensorData::I64(v) => bytemuck::cast_slice(v).into(),
        }
    }
    fn data_len(&self) -> usize {
        self.data().len()
    }
}

/// Write `bytes` to `path` atomically: a temporary file beside it, synced, renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .context("checkpoint path has no file name")?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("could not write {}", path.display()));
    }
    Ok(())
}

/// Save a state_dict (with `metadata`, e.g. the model's width) as safetensors.
pub fn save(path: &Path, tensors: &[NamedTensor], metadata: HashMap<String, String>) -> Result<()> {
    let entries: Vec<(&str, Entry)> = tensors
        .iter()
        .map(|t| (t.name.as_str(), Entry(t)))
        .collect();
    let bytes = safetensors::serialize(entries, Some(metadata))
        .with_context(|| format!("could not encode {}", path.display()))?;
    write_atomically(path, &bytes)
}

/// Load every tensor of a safetensors checkpoint (float32 and int64 only).
pub fn load(path: &Path) -> Result<(Vec<NamedTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("could not read checkpoint {}", path.display()))?;
    let bad = |what: String| {
        format!(
            "{}: {what}; is it a dcgan-wgpu or PyTorch safetensors checkpoint?",
            path.display()
        )
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!(bad(format!("not a safetensors file ({e})"))))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!(bad(format!("corrupt ({e})"))))?;
    let mut tensors = Vec::new();
    for (name, view) in file.tensors() {
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(bytemuck::pod_collect_to_vec(view.data())),
            Dtype::I64 => TensorData::I64(bytemuck::pod_collect_to_vec(view.data())),
            other => bail!(bad(format!(
                "tensor {name} has dtype {other:?}, expected F32 or I64"
            ))),
        };
        if let TensorData::F32(values) = &data
            && values.iter().any(|v| !v.is_finite())
        {
            bail!(bad(format!("tensor {name} holds NaN or infinite values")));
        }
        tensors.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, metadata))
}
