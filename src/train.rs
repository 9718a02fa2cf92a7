//! `dcgan-wgpu train`: the seed's training run on the GPU.
//!
//! Outputs in `<out-dir>/<run-id>/`: `config.json`, `metrics.csv` (every step),
//! `images/epoch{E}_batch{B}.png` every `--print-every` batches and after the last
//! step (a fixed noise batch, generator in eval mode), and `generator_{E}.safetensors` /
//! `discriminator_{E}.safetensors` after every epoch.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::checkpoint;
use crate::data::{self, Dataset, DownloadPolicy};
use crate::device::{AdapterChoice, Gpu};
use crate::executor::graph::{Net, metric};
use crate::executor::{Executor, ExecutorConfig, Inputs, StepMetrics};
use crate::grid;
use crate::model;
use crate::shapes::AdamW;

/// Images in every sample grid (8 x 8).
pub const GRID_IMAGES: usize = 64;

#[derive(Args, Clone, Debug)]
pub struct TrainOptions {
    /// Dataset to train on.
    #[arg(long, value_enum, default_value_t = Dataset::Mnist)]
    pub dataset: Dataset,
    /// Where the dataset's IDX files are looked up (also in DIR/<dataset>/); missing
    /// files are downloaded into DIR/<dataset>/.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Never download: fail if the files are not in --data-dir.
    #[arg(long)]
    pub offline: bool,
    /// Passes over the training set.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,
    /// Images per step (the last batch of an epoch may be smaller).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..=4096))]
    pub batch_size: u32,
    /// Length of the generator's noise vector.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub noise_dim: u32,
    /// Feature maps of the first discriminator layer (the seed's width is 64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub feature_maps: u32,
    /// AdamW learning rate (both networks).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// AdamW beta1.
    #[arg(long, default_value_t = 0.5)]
    pub beta1: f64,
    /// AdamW beta2.
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// AdamW decoupled weight decay (torch.optim.AdamW's default).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Print progress and save a sample grid every N batches.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub print_every: u32,
    /// Seed of initialisation, shuffling and noise.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Runs are written to OUT_DIR/<run-id>/.
    #[arg(long, default_value = "runs")]
    pub out_dir: PathBuf,
    /// Stop after this many steps in total (tests, benchmarks).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Print the dispatches of one training step and exit.
    #[arg(long)]
    pub dump_schedule: bool,
    /// Use cached or default kernel tilings instead of timing the candidates of
    /// kernels not timed before on this adapter (choices are cached in
    /// $DCGAN_WGPU_CACHE_DIR, else $XDG_CACHE_HOME/dcgan-wgpu, else ~/.cache/dcgan-wgpu).
    #[arg(long)]
    pub no_autotune: bool,
}

impl TrainOptions {
    fn optimizer(&self) -> Result<AdamW> {
        let in_unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(v)
            } else {
                bail!("--{name} must be in [0, 1), got {v}")
            }
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("--weight-decay must be >= 0, got {}", self.weight_decay);
        }
        Ok(AdamW {
            lr: self.lr,
            beta1: in_unit("beta1", self.beta1)?,
            beta2: in_unit("beta2", self.beta2)?,
            eps: 1e-8,
            weight_decay: self.weight_decay,
        })
    }
}

/// A random UUID (version 4), as the seed's `uuid.uuid4()`.
fn run_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The fixed noise every sample grid of a run is drawn from.
pub fn grid_noise(noise_dim: usize, seed: u64) -> Vec<f32> {
    crate::reference::noise::normal(GRID_IMAGES * noise_dim, seed ^ 0x6772_6964, 0)
}

/// Everything a run writes, and where.
struct Run {
    dir: PathBuf,
    metrics: std::fs::File,
    /// (epoch, batch) of steps whose metrics have not arrived yet.
    pending: VecDeque<(u64, usize, usize)>,
    print_steps: Vec<u64>,
    started: Instant,
    steps_at_start: u64,
    status_line: bool,
}

impl Run {
    fn create(out_dir: &Path) -> Result<Run> {
        let dir = out_dir.join(run_id());
        std::fs::create_dir_all(dir.join("images"))
            .with_context(|| format!("could not create the run directory {}", dir.display()))?;
        let mut metrics = std::fs::File::create(dir.join("metrics.csv"))?;
        writeln!(
            metrics,
            "step,epoch,batch,loss_d,{}",
            metric::NAMES.join(",")
        )?;
        Ok(Run {
            dir,
            metrics,
            pending: VecDeque::new(),
            print_steps: Vec::new(),
            started: Instant::now(),
            steps_at_start: 0,
            status_line: std::io::stderr().is_terminal(),
        })
    }

    /// Log arrived metrics; print the lines of print steps; fail on NaN.
    fn record(&mut self, arrived: Vec<StepMetrics>, steps_done: u64) -> Result<()> {
        for m in arrived {
            let Some(&(step, epoch, batch)) = self.pending.front() else {
                break;
            };
            debug_assert_eq!(step, m.step);
            self.pending.pop_front();
            let values: Vec<String> = m.values.iter().map(|v| v.to_string()).collect();
            writeln!(
                self.metrics,
                "{step},{epoch},{batch},{},{}",
                m.loss_d(),
                values.join(",")
            )?;
            if !m.values.iter().all(|v| v.is_finite()) {
                bail!(
                    "training diverged at epoch {epoch}, batch {batch}: loss G = {}, loss D = {}, \
                     D(x) = {}; checkpoints of finished epochs are in {}; try a lower --lr",
                    m.loss_g(),
                    m.loss_d(),
                    m.d_x(),
                    self.dir.display()
                );
            }
            if self.print_steps.first() == Some(&step) {
                self.print_steps.remove(0);
                let rate = (steps_done - self.steps_at_start) as f64
                    / self.started.elapsed().as_secs_f64();
                self.clear_status();
                println!(
                    "epoch {epoch} batch {batch:>4}: loss G {:.4e}  loss D {:.4e}  D(x) {:.3}  D(G(z)) {:.3}  {rate:.2} steps/s",
                    m.loss_g(),
                    m.loss_d(),
                    m.d_x(),
                    m.d_g_z()
                );
            }
        }
        Ok(())
    }

    fn status(&self, epoch: usize, batch: usize, batches: usize, steps_done: u64) {
        if self.status_line {
            let rate = (steps_done - self.steps_at_start) as f64
                / self.started.elapsed().as_secs_f64().max(1e-9);
            let filled = (batch * 30 / batches.max(1)).min(30);
            eprint!(
                "\r  epoch {epoch} [{}{}] {batch}/{batches}  {rate:.2} steps/s ",
                "#".repeat(filled),
                ".".repeat(30 - filled)
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn clear_status(&self) {
        if self.status_line {
            eprint!("\r{}\r", " ".repeat(72));
        }
    }
}

fn config_json(o: &TrainOptions, gpu: &Gpu, run: &Run, images: usize) -> serde_json::Value {
    serde_json::json!({
        "run_id": run.dir.file_name().map(|n| n.to_string_lossy().to_string()),
        "dataset": o.dataset.name(),
        "data_dir": o.data_dir,
        "training_images": images,
        "epochs": o.epochs,
        "batch_size": o.batch_size,
        "noise_dim": o.noise_dim,
        "feature_maps": o.feature_maps,
        "lr": o.lr,
        "beta1": o.beta1,
        "beta2": o.beta2,
        "eps": 1e-8,
        "weight_decay": o.weight_decay,
        "print_every": o.print_every,
        "seed": o.seed,
        "max_steps": o.max_steps,
        "adapter": gpu.describe(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// Metadata stored in every checkpoint, so `sample` can rebuild the model.
fn checkpoint_metadata(o: &TrainOptions, epoch: usize) -> HashMap<String, String> {
    HashMap::from([
        ("format".into(), "pt".into()),
        ("noise_dim".into(), o.noise_dim.to_string()),
        ("feature_maps".into(), o.feature_maps.to_string()),
        ("epoch".into(), epoch.to_string()),
    ])
}

/// Set by Ctrl-C: the run stops after the current step and saves its checkpoints.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A first Ctrl-C stops the run cleanly (an epoch on a software adapter lasts many
/// minutes, and its training would be lost); a second one quits at once.
fn stop_cleanly_on_ctrl_c() {
    // Fails only if a handler is already installed (then that one stays).
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: stopping after this step and saving checkpoints (Ctrl-C again quits now)"
        );
    });
}

/// Fail before the (slow) GPU setup when runs cannot be written to `out_dir`.
fn check_writable(out_dir: &Path) -> Result<()> {
    let cannot = || {
        format!(
            "cannot write runs to {}: pass a writable --out-dir",
            out_dir.display()
        )
    };
    std::fs::create_dir_all(out_dir).with_context(cannot)?;
    let probe = out_dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(cannot)?;
    std::fs::remove_file(&probe).with_context(cannot)
}

pub fn train(o: &TrainOptions, adapter: Option<&AdapterChoice>) -> Result<PathBuf> {
    let optimizer = o.optimizer()?;
    if !o.dump_schedule {
        check_writable(&o.out_dir)?;
    }
    let gpu = Gpu::open(adapter)?;
    let policy = if o.offline {
        DownloadPolicy::Never
    } else {
        DownloadPolicy::Official
    };
    let image_pixels = data::IMAGE_SIDE * data::IMAGE_SIDE;
    let (pixels, images) = if o.dump_schedule {
        // The schedule does not depend on the images: one blank batch will do.
        let images = o.batch_size as usize;
        (vec![0; images * image_pixels], images)
    } else {
        let set = data::load_training_set(o.dataset, &o.data_dir, &policy)?;
        eprintln!(
            "dcgan-wgpu: {} training images from {}; adapter {}",
            set.images.count,
            o.dataset.name(),
            gpu.describe()
        );
        (set.images.pixels, set.images.count)
    };
    let batch = (o.batch_size as usize).min(images);
    let last = images % batch;
    let batches = images.div_ceil(batch);
    let (noise_dim, width) = (o.noise_dim as usize, o.feature_maps as usize);
    let config = ExecutorConfig {
        generator: model::seed_generator(noise_dim, width),
        discriminator: model::seed_discriminator(width),
        batch,
        extra_batches: if last > 0 { vec![last] } else { Vec::new() },
        samples: GRID_IMAGES,
        optimizer,
        inputs: Inputs::Dataset {
            pixels,
            image_pixels,
            seed: o.seed,
        },
        capture: false,
        autotune: !o.no_autotune && !o.dump_schedule,
    };
    let describe = gpu.describe();
    let mut ex = Executor::new(gpu, config)?;
    if o.dump_schedule {
        for line in ex.schedule(batch)? {
            println!("{line}");
        }
        println!(
            "{} dispatches, 1 submission per step",
            ex.dispatches_per_step(batch)
        );
        return Ok(PathBuf::new());
    }
    ex.initialise(o.seed)?;
    let mut run = Run::create(&o.out_dir)?;
    stop_cleanly_on_ctrl_c();
    let config = config_json(o, &ex.gpu, &run, images);
    checkpoint::write_atomically(
        &run.dir.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    println!("Preparing training run {} on {describe}", run.dir.display());
    let noise = grid_noise(noise_dim, o.seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let mut order: Vec<u32> = (0..images as u32).collect();
    let max_steps = o.max_steps.unwrap_or(u64::MAX);
    // The last step's (epoch, batch) when it drew no grid: the run ends with one.
    let mut last_without_grid = None;
    let stop = |ex: &Executor| ex.steps_done() >= max_steps || INTERRUPTED.load(Ordering::SeqCst);
    for epoch in 0..o.epochs as usize {
        if stop(&ex) {
            break;
        }
        println!("Starting epoch {epoch}...");
        order.shuffle(&mut rng);
        ex.set_epoch_order(&order)?;
        for b in 0..batches {
            if stop(&ex) {
                // Stopped early: keep what this epoch trained too.
                break;
            }
            let size = batch.min(images - b * batch);
            let print = b % o.print_every as usize == 0;
            run.pending.push_back((ex.steps_done(), epoch, b));
            if print {
                run.print_steps.push(ex.steps_done());
            }
            ex.step(size, b * batch, print)?;
            if print {
                save_grid(&mut ex, &noise, &run.dir, epoch, b)?;
            }
            last_without_grid = (!print).then_some((epoch, b));
            let arrived = ex.poll_metrics()?;
            run.record(arrived, ex.steps_done())?;
            run.status(epoch, b + 1, batches, ex.steps_done());
        }
        // Every step's metrics are checked before the epoch's checkpoints are
        // written, so a diverged model is never saved (one wait per epoch).
        let arrived = ex.finish()?;
        run.record(arrived, ex.steps_done())?;
        save_checkpoints(&ex, o, &run.dir, epoch)?;
    }
    if let Some((epoch, b)) = last_without_grid {
        save_grid(&mut ex, &noise, &run.dir, epoch, b)?;
    }
    let arrived = ex.finish()?;
    run.record(arrived, ex.steps_done())?;
    run.clear_status();
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!(
            "interrupted after {} steps; checkpoints of the last epoch, finished or not, are in {}",
            ex.steps_done(),
            run.dir.display()
        );
    }
    let elapsed = run.started.elapsed().as_secs_f64();
    println!(
        "Finished unique run {} ({} steps in {elapsed:.1} s, {:.3} s/step)",
        run.dir.display(),
        ex.steps_done(),
        elapsed / ex.steps_done().max(1) as f64
    );
    Ok(run.dir)
}

/// The sample grid of the fixed noise after `epoch`'s batch `b`.
fn save_grid(ex: &mut Executor, noise: &[f32], dir: &Path, epoch: usize, b: usize) -> Result<()> {
    let samples = ex.sample(noise)?;
    grid::save(
        &dir.join(format!("images/epoch{epoch}_batch{b}.png")),
        &samples,
        28,
    )
}

fn save_checkpoints(ex: &Executor, o: &TrainOptions, dir: &Path, epoch: usize) -> Result<()> {
    for (net, name) in [
        (Net::Generator, "generator"),
        (Net::Discriminator, "discriminator"),
    ] {
        let path = dir.join(format!("{name}_{epoch}.safetensors"));
        let tensors = ex.state_dict(net)?;
        if let Some(t) = tensors.iter().find(|t| !t.is_finite()) {
            bail!(
                "training diverged in epoch {epoch}: the {name}'s {} holds NaN or infinite values \
                 (not saved); try a lower --lr",
                t.name
            );
        }
        checkpoint::save(&path, &tensors, checkpoint_metadata(o, epoch))?;
    }
    Ok(())
}
