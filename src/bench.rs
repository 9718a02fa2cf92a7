//! `dcgan-wgpu bench`: time full training steps on one or every adapter.
//!
//! Per adapter: ms/step (median, min, max), images/s, achieved GFLOP/s from the
//! analytic FLOP count of a step, dispatches and submissions per step, device memory
//! held by the executor, and a per-kernel breakdown: GPU timestamps (one pass per
//! dispatch) where the adapter has them, otherwise each dispatch's wall time alone.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use crate::data::{self, Dataset, DownloadPolicy};
use crate::device::{self, AdapterChoice, Gpu};
use crate::executor::{Executor, ExecutorConfig, Inputs};
use crate::model::{self, Layer, Network};
use crate::shapes::AdamW;

#[derive(Args, Clone, Debug)]
pub struct BenchOptions {
    /// Images per step.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..=4096))]
    pub batch_size: u32,
    /// Length of the generator's noise vector.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub noise_dim: u32,
    /// Feature maps of the model (the seed's width is 64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub feature_maps: u32,
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Untimed steps first (the driver compiles shaders at their first dispatch).
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Real images from this directory (MNIST files); synthetic u8 images otherwise.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Bench every adapter wgpu finds (default: the chosen or the most capable one).
    #[arg(long)]
    pub all_adapters: bool,
    /// Skip the per-kernel breakdown.
    #[arg(long)]
    pub no_profile: bool,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Use cached or default kernel tilings instead of timing untimed kernels first.
    #[arg(long)]
    pub no_autotune: bool,
}

/// Multiply-adds of every matrix product in one training step (the seed's order:
/// D forward three times, D weight gradients twice, D input gradients on all three
/// passes but the first layer's only on the generator's pass, G forward once and
/// G's weight and input gradients).
pub fn step_flops(generator: &Network, discriminator: &Network, batch: usize) -> f64 {
    let per_layer = |net: &Network| -> Vec<f64> {
        net.layers
            .iter()
            .enumerate()
            .map(|(i, layer)| match layer {
                Layer::Conv { .. } => net.conv_shape(layer, batch, net.input_of(i)).macs() as f64,
                Layer::Linear {
                    in_features,
                    out_features,
                    ..
                } => (batch * in_features * out_features) as f64,
                _ => 0.0,
            })
            .collect()
    };
    let (g, d) = (per_layer(generator), per_layer(discriminator));
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let first = |v: &[f64]| v.first().copied().unwrap_or(0.0);
    let d_macs = 3.0 * sum(&d) + 2.0 * sum(&d) + 2.0 * (sum(&d) - first(&d)) + sum(&d);
    let g_macs = sum(&g) + sum(&g) + (sum(&g) - first(&g));
    2.0 * (d_macs + g_macs)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Kernel family of a dispatch label: its name up to the shapes.
fn family(label: &str) -> &str {
    label.split_whitespace().next().unwrap_or(label)
}

fn training_images(o: &BenchOptions, batch: usize) -> Result<(Vec<u8>, usize)> {
    match &o.data_dir {
        Some(dir) => {
            let set = data::load_training_set(Dataset::Mnist, dir, &DownloadPolicy::Never)?;
            Ok((set.images.pixels, set.images.count))
        }
        None => {
            // Enough synthetic images for every timed step to read new ones.
            let count = (batch * 4).max(1024);
            let pixels = (0..count * 784)
                .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            Ok((pixels, count))
        }
    }
}

fn bench_adapter(o: &BenchOptions, gpu: Gpu) -> Result<serde_json::Value> {
    let batch = o.batch_size as usize;
    let (pixels, images) = training_images(o, batch)?;
    let batch = batch.min(images);
    let (noise_dim, width) = (o.noise_dim as usize, o.feature_maps as usize);
    let adapter = gpu.describe();
    let generator = model::seed_generator(noise_dim, width);
    let discriminator = model::seed_discriminator(width);
    let flops = step_flops(&generator, &discriminator, batch);
    let compile_started = Instant::now();
    let mut ex = Executor::new(
        gpu,
        ExecutorConfig {
            generator,
            discriminator,
            batch,
            extra_batches: Vec::new(),
            samples: 1,
            optimizer: AdamW::default(),
            inputs: Inputs::Dataset {
                pixels,
                image_pixels: 784,
                seed: 1,
            },
            capture: false,
            autotune: !o.no_autotune,
        },
    )?;
    ex.initialise(1)?;
    let batches = images / batch;
    let start_of = |step: u32| (step as usize % batches) * batch;
    for step in 0..o.warmup {
        ex.step(batch, start_of(step), false)?;
        ex.finish()?;
    }
    let warmup_seconds = compile_started.elapsed().as_secs_f64();
    let mut seconds = Vec::new();
    for step in 0..o.steps {
        let started = Instant::now();
        ex.step(batch, start_of(step), true)?;
        let metrics = ex.finish()?;
        seconds.push(started.elapsed().as_secs_f64());
        let last = metrics.last().context("no metrics")?;
        anyhow::ensure!(
            last.loss_d().is_finite(),
            "the benchmark diverged (loss D {})",
            last.loss_d()
        );
    }
    seconds.sort_by(f64::total_cmp);
    let med = median(&seconds);
    let mut kernels = Vec::new();
    if !o.no_profile {
        let profile = ex.profile_step(batch, 0)?;
        let total: f64 = profile.iter().map(|(_, s)| s).sum();
        let mut families: Vec<(String, f64, usize)> = Vec::new();
        for (label, s) in &profile {
            match families.iter_mut().find(|(f, _, _)| f == family(label)) {
                Some(entry) => {
                    entry.1 += s;
                    entry.2 += 1;
                }
                None => families.push((family(label).to_string(), *s, 1)),
            }
        }
        families.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (name, s, count) in families {
            kernels.push(
                json!({"kernel": name, "dispatches": count, "ms": s * 1e3, "share": s / total}),
            );
        }
        let mut slowest = profile.clone();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        kernels.push(json!({"slowest_dispatches": slowest.iter().take(12).map(|(l, s)| json!({"dispatch": l, "ms": s * 1e3})).collect::<Vec<_>>()}));
    }
    Ok(json!({
        "adapter": adapter,
        "batch": batch,
        "feature_maps": width,
        "noise_dim": noise_dim,
        "steps": o.steps,
        "ms_per_step": {"median": med * 1e3, "min": seconds[0] * 1e3, "max": seconds[seconds.len() - 1] * 1e3},
        "images_per_second": batch as f64 / med,
        "gflop_per_step": flops / 1e9,
        "gflop_per_second": flops / med / 1e9,
        "dispatches_per_step": ex.dispatches_per_step(batch),
        "submissions_per_step": 1,
        "device_memory_mib": ex.device_bytes() as f64 / (1 << 20) as f64,
        "pipelines": ex.pipelines(),
        "warmup_seconds": warmup_seconds,
        "kernel_timing": if ex.gpu.timestamps { "gpu timestamps, one pass per dispatch" } else { "wall time, one submission per dispatch" },
        "kernels": kernels,
    }))
}

fn print_table(result: &serde_json::Value) {
    let ms = &result["ms_per_step"];
    println!("adapter: {}", result["adapter"].as_str().unwrap_or("?"));
    println!(
        "  batch {}  width {}  | {:.1} ms/step (median of {}; min {:.1}, max {:.1}) | {:.1} images/s | {:.1} GFLOP/step, {:.2} GFLOP/s",
        result["batch"],
        result["feature_maps"],
        ms["median"].as_f64().unwrap_or(0.0),
        result["steps"],
        ms["min"].as_f64().unwrap_or(0.0),
        ms["max"].as_f64().unwrap_or(0.0),
        result["images_per_second"].as_f64().unwrap_or(0.0),
        result["gflop_per_step"].as_f64().unwrap_or(0.0),
        result["gflop_per_second"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  {} dispatches and {} submission per step, {:.1} MiB of device memory, {} pipelines (warm-up {:.1} s)",
        result["dispatches_per_step"],
        result["submissions_per_step"],
        result["device_memory_mib"].as_f64().unwrap_or(0.0),
        result["pipelines"],
        result["warmup_seconds"].as_f64().unwrap_or(0.0),
    );
    let Some(kernels) = result["kernels"].as_array() else {
        return;
    };
    if !kernels.is_empty() {
        println!(
            "  per kernel ({}):",
            result["kernel_timing"].as_str().unwrap_or("?")
        );
    }
    for k in kernels {
        if let Some(name) = k["kernel"].as_str() {
            println!(
                "    {name:<32} {:>4} dispatches {:>10.2} ms {:>6.1} %",
                k["dispatches"],
                k["ms"].as_f64().unwrap_or(0.0),
                100.0 * k["share"].as_f64().unwrap_or(0.0)
            );
        } else if let Some(list) = k["slowest_dispatches"].as_array() {
            println!("  slowest dispatches:");
            for d in list {
                println!(
                    "    {:>10.2} ms  {}",
                    d["ms"].as_f64().unwrap_or(0.0),
                    d["dispatch"].as_str().unwrap_or("")
                );
            }
        }
    }
}

pub fn bench(o: &BenchOptions, adapter: Option<&AdapterChoice>) -> Result<()> {
    let gpus: Vec<Gpu> = if o.all_adapters {
        device::adapters()
            .into_iter()
            .map(Gpu::from_adapter)
            .collect::<Result<_>>()?
    } else {
        vec![Gpu::open(adapter)?]
    };
    let mut results = Vec::new();
    for gpu in gpus {
        let name = gpu.describe();
        let result = bench_adapter(o, gpu).with_context(|| format!("benchmarking {name}"))?;
        if !o.json {
            print_table(&result);
        }
        results.push(result);
    }
    if o.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "results": results }))?
        );
    }
    Ok(())
}
