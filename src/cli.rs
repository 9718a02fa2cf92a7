//! The command line: `train`, `sample`, `bench`, `adapters`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::checkpoint;
use crate::device::{self, AdapterChoice, Gpu};
use crate::executor::graph::Net;
use crate::executor::{Executor, ExecutorConfig, Inputs, NamedTensor, TensorData};
use crate::model;
use crate::shapes::AdamW;
use crate::train::{self, TrainOptions};

#[derive(Parser, Debug)]
#[command(
    name = "dcgan-wgpu",
    version,
    about = "Train a DCGAN on any Vulkan, Metal or DX12 GPU (WGSL compute shaders, no CUDA, no Python)"
)]
pub struct Cli {
    /// GPU adapter: an index from `dcgan-wgpu adapters`, a backend (vulkan, metal,
    /// dx12, gl) or part of its name. Default: WGPU_ADAPTER_NAME, else the most capable.
    #[arg(long, global = true)]
    pub adapter: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train the seed's DCGAN (the main job).
    // `--lr -1` reaches the range check instead of reading as a flag.
    #[command(allow_negative_numbers = true)]
    Train(TrainOptions),
    /// Draw a grid of samples from a generator checkpoint.
    Sample(SampleOptions),
    /// Time full training steps on one or every adapter, with a per-kernel breakdown.
    Bench(crate::bench::BenchOptions),
    /// List the GPU adapters wgpu finds.
    Adapters,
}

#[derive(clap::Args, Debug)]
pub struct SampleOptions {
    /// A generator checkpoint written by `train` (generator_<epoch>.safetensors).
    #[arg(long)]
    pub generator: PathBuf,
    /// Where to write the PNG grid.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub count: u32,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Read the noise from this safetensors file (tensor `noise`, [count, noise_dim, 1, 1]).
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Also write the raw images to this safetensors file (tensor `images`).
    #[arg(long)]
    pub raw_output: Option<PathBuf>,
}

pub fn run(cli: Cli) -> Result<()> {
    let adapter = cli.adapter.as_deref().map(AdapterChoice::parse);
    match cli.command {
        Command::Train(options) => train::train(&options, adapter.as_ref()).map(|_| ()),
        Command::Sample(options) => sample(&options, adapter.as_ref()),
        Command::Bench(options) => crate::bench::bench(&options, adapter.as_ref()),
        Command::Adapters => list_adapters(),
    }
}

fn list_adapters() -> Result<()> {
    let all = device::adapters();
    if all.is_empty() {
        bail!(
            "no GPU adapter found: install a GPU driver, or Mesa's lavapipe (apt-get install mesa-vulkan-drivers)"
        );
    }
    for (i, adapter) in all.iter().enumerate() {
        let info = adapter.get_info();
        let subgroups = if adapter.features().contains(wgpu::Features::SUBGROUP) {
            format!(
                "subgroups {}-{}",
                info.subgroup_min_size, info.subgroup_max_size
            )
        } else {
            "no subgroups".to_string()
        };
        println!("{i}: {} [{subgroups}]", device::describe(&info));
    }
    Ok(())
}

/// The model width a generator checkpoint was trained with, from its shapes.
fn generator_size(tensors: &[NamedTensor]) -> Result<(usize, usize)> {
    let first = tensors
        .iter()
        .find(|t| t.name == "layers.0.weight")
        .context("not a generator checkpoint: no layers.0.weight")?;
    match first.shape[..] {
        [noise_dim, channels, 4, 4] if noise_dim > 0 && channels > 0 && channels % 8 == 0 => {
            Ok((noise_dim, channels / 8))
        }
        [_, 1, 4, 4] => bail!(
            "not a dcgan-wgpu generator checkpoint: layers.0.weight has shape {:?}, a \
             discriminator's; pass a generator_<epoch>.safetensors",
            first.shape
        ),
        _ => bail!(
            "not a dcgan-wgpu generator checkpoint: layers.0.weight has shape {:?}",
            first.shape
        ),
    }
}

/// Refuse output paths that would overwrite an input or that cannot be written,
/// before the (slow) GPU setup.
fn check_sample_outputs(o: &SampleOptions) -> Result<()> {
    let inputs = [Some(&o.generator), o.noise.as_ref()];
    let outputs = [
        (Some(&o.out), "png", "--out"),
        (o.raw_output.as_ref(), "safetensors", "--raw-output"),
    ];
    for (path, extension, flag) in outputs {
        let Some(path) = path else { continue };
        if path.extension().and_then(|e| e.to_str()) != Some(extension) {
            bail!("{flag} {} must end in .{extension}", path.display());
        }
        if inputs.iter().flatten().any(|input| *input == path) {
            bail!("{flag} {} would overwrite an input file", path.display());
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = parent
            && !dir.is_dir()
        {
            bail!(
                "{flag} {}: the folder {} does not exist",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn sample(o: &SampleOptions, adapter: Option<&AdapterChoice>) -> Result<()> {
    check_sample_outputs(o)?;
    let (tensors, _) = checkpoint::load(&o.generator)?;
    let (noise_dim, width) = generator_size(&tensors)?;
    let count = o.count as usize;
    let noise = match &o.noise {
        Some(path) => {
            let (given, _) = checkpoint::load(path)?;
            let noise = given
                .iter()
                .find(|t| t.name == "noise")
                .context("the noise file has no tensor `noise`")?;
            let TensorData::F32(values) = &noise.data else {
                bail!("`noise` must be float32")
            };
            if noise.shape != [count, noise_dim, 1, 1] {
                bail!(
                    "`noise` has shape {:?}; this generator with --count {count} needs [{count}, {noise_dim}, 1, 1]",
                    noise.shape
                );
            }
            values.clone()
        }
        None => crate::reference::noise::normal(count * noise_dim, o.seed, 0),
    };
    let gpu = Gpu::open(adapter)?;
    let config = ExecutorConfig {
        generator: model::seed_generator(noise_dim, width),
        discriminator: model::seed_discriminator(width),
        batch: 0,
        extra_batches: Vec::new(),
        samples: count,
        optimizer: AdamW::default(),
        inputs: Inputs::External,
        capture: false,
        autotune: false,
    };
    let mut ex = Executor::new(gpu, config)?;
    ex.load_state_dict(Net::Generator, &tensors)
        .with_context(|| {
            format!(
                "{} does not fit the seed's generator",
                o.generator.display()
            )
        })?;
    let images = ex.sample(&noise)?;
    crate::grid::save(&o.out, &images, 28)?;
    if let Some(path) = &o.raw_output {
        let raw = NamedTensor {
            name: "images".into(),
            shape: vec![count, 1, 28, 28],
            data: TensorData::F32(images),
        };
        checkpoint::save(path, &[raw], Default::default())?;
    }
    println!("wrote {count} samples to {}", o.out.display());
    Ok(())
}
