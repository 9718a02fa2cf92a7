//! Kernel micro-benchmarks at the seed's shapes: the three passes of every
//! convolution of both networks, the BatchNorm training passes, AdamW over the
//! generator's parameters, and one plain matrix multiply, each timed alone.
//!
//! `cargo bench --bench kernels [-- FILTER...]`; see `benches/README.md`. Timing uses
//! GPU timestamps (one compute pass per timed dispatch) where the adapter has them,
//! else wall time around `submit` + wait. Every benchmark runs once untimed first:
//! drivers compile a pipeline at its first dispatch.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use dcgan_wgpu::autotune::{self, Autotuner};
use dcgan_wgpu::buffers;
use dcgan_wgpu::device::Gpu;
use dcgan_wgpu::kernels::adamw::{self, Hyper};
use dcgan_wgpu::kernels::batchnorm::{self, BatchNormPass};
use dcgan_wgpu::kernels::conv::{ConvFusion, ConvPass};
use dcgan_wgpu::kernels::gemm::{Epilogue, Tiling};
use dcgan_wgpu::kernels::linear::LinearPass;
use dcgan_wgpu::kernels::matmul::MatMul;
use dcgan_wgpu::kernels::{Dispatch, Kernels, Launch, View};
use dcgan_wgpu::model::{self, Layer, Network};
use dcgan_wgpu::shapes::{Activation, AdamW, ConvShape, LinearShape};
use dcgan_wgpu::timing;
use serde_json::json;

/// The seed's noise dimension.
const NOISE_DIM: usize = 50;

const USAGE: &str = "\
usage: cargo bench --bench kernels [-- [FILTER...] [--json] [--list]]

Runs every benchmark whose name contains one of the FILTERs (all without one).
Environment: BENCH_RUNS (timed runs, median reported; default 5), BENCH_BATCH
(default 128), BENCH_FEATURE_MAPS (default 64), BENCH_JSON=1 (same as --json),
BENCH_NO_AUTOTUNE=1 (cached or default tilings; otherwise the matrix products not
timed before on this adapter have their tiling candidates timed first, as by train).
The adapter is chosen as by dcgan-wgpu (WGPU_ADAPTER_NAME, WGPU_BACKEND).";

struct Settings {
    filters: Vec<String>,
    runs: usize,
    batch: usize,
    feature_maps: usize,
    json: bool,
    autotune: bool,
    /// `cargo bench` passes `--bench`; without it (`cargo test --benches`, `--list`)
    /// the benchmarks are only listed, so test runs stay quick.
    timed: bool,
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(text) => {
            let value: usize = text
                .trim()
                .parse()
                .with_context(|| format!("{name}={text:?} is not a count"))?;
            ensure!(value >= 1, "{name} must be at least 1");
            Ok(value)
        }
        Err(_) => Ok(default),
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

impl Settings {
    /// Settings from the environment and the arguments; `None` after `--help`.
    fn parse() -> Result<Option<Settings>> {
        let mut settings = Settings {
            filters: Vec::new(),
            runs: env_count("BENCH_RUNS", 5)?,
            batch: env_count("BENCH_BATCH", 128)?,
            feature_maps: env_count("BENCH_FEATURE_MAPS", 64)?,
            json: env_flag("BENCH_JSON"),
            autotune: !env_flag("BENCH_NO_AUTOTUNE"),
            timed: false,
        };
        let mut list = false;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--bench" => settings.timed = true,
                "--json" => settings.json = true,
                "--list" => list = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                // Options libtest knows but this harness does not need.
                flag if flag.starts_with('-') => eprintln!("kernels: ignoring {flag}"),
                filter => settings.filters.push(filter.to_string()),
            }
        }
        settings.timed &= !list;
        // One query pair per timed run, in one query set.
        let most = wgpu::QUERY_SET_MAX_QUERIES as usize / 2;
        ensure!(settings.runs <= most, "BENCH_RUNS must be at most {most}");
        Ok(Some(settings))
    }

    fn selects(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

/// What a benchmark's rate is computed from.
#[derive(Clone, Copy, Debug)]
enum Work {
    /// Floating-point operations (2 per multiply-add): a rate in GFLOP/s.
    Flops(f64),
    /// Bytes the kernel must read and write at the least: a rate in GB/s.
    Bytes(f64),
}

/// What one binding of a benchmark holds.
enum Contents {
    /// A storage buffer of this many random `f32`s.
    Random(usize),
    /// A uniform buffer holding AdamW's per-step scalars.
    Hyper(Hyper),
}

/// One kernel launch at one shape, with its buffers described (not yet allocated,
/// so that filtered-out benchmarks cost nothing).
struct Case {
    name: String,
    shape: String,
    tiling: Option<Tiling>,
    /// The matrix product behind a GEMM-based launch (its tiling can be tuned).
    matmul: Option<MatMul>,
    work: Work,
    launch: Launch,
    bindings: Vec<(&'static str, Contents)>,
}

/// Random storage buffers for every role of `launch`, sized by `len_of`. Roles come
/// from the launch itself, so a kernel that gains a binding fails here, by name.
fn random_bindings(
    launch: &Launch,
    len_of: impl Fn(&str) -> Option<usize>,
) -> Result<Vec<(&'static str, Contents)>> {
    launch
        .roles
        .iter()
        .map(|&role| match len_of(role) {
            Some(len) => Ok((role, Contents::Random(len))),
            None => bail!(
                "{}: no buffer size known for role `{role}` (update benches/kernels.rs)",
                launch.label()
            ),
        })
        .collect()
}

/// The GEMM tiling the trainer would pick for an `m` x `n` x `k` product.
type TilingChoice<'a> = &'a dyn Fn(&MatMul) -> Tiling;

const CONV_PASSES: [(ConvPass, &str); 3] = [
    (ConvPass::Forward, "forward"),
    (ConvPass::InputGrad, "input_grad"),
    (ConvPass::WeightGrad, "weight_grad"),
];

fn conv_shape_text(s: &ConvShape) -> String {
    format!(
        "{}x{}x{}x{}->{}x{}x{} k{}s{}p{}",
        s.batch,
        s.in_channels,
        s.in_h,
        s.in_w,
        s.out_channels,
        s.out_h(),
        s.out_w(),
        s.kernel,
        s.stride,
        s.padding
    )
}

/// Buffer length of a convolution role (activations NHWC, weights packed or not:
/// the same count either way).
fn conv_role_len(s: &ConvShape, role: &str) -> Option<usize> {
    match role {
        "x" | "dx" => Some(s.input_len()),
        "y" | "dy" => Some(s.output_len()),
        "w" | "dw" => Some(s.weight_len()),
        _ => None,
    }
}

/// Forward, input gradient and weight gradient of every convolution of `net`,
/// without fusions: the bare implicit GEMMs.
fn conv_cases(net: &Network, batch: usize, tiling: TilingChoice) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        if !matches!(layer, Layer::Conv { .. }) {
            continue;
        }
        let s = net.conv_shape(layer, batch, net.input_of(i));
        let kind = if s.transposed {
            "conv_transpose2d"
        } else {
            "conv2d"
        };
        for (pass, pass_name) in CONV_PASSES {
            let matmul = MatMul::Conv {
                shape: s,
                pass,
                fusion: ConvFusion::default(),
            };
            let chosen = tiling(&matmul);
            let launch = matmul.launch(chosen);
            cases.push(Case {
                name: format!("{}.{i}.{kind}.{pass_name}", net.name),
                shape: conv_shape_text(&s),
                tiling: Some(chosen),
                matmul: Some(matmul),
                work: Work::Flops(2.0 * s.macs() as f64),
                bindings: random_bindings(&launch, |role| conv_role_len(&s, role))?,
                launch,
            });
        }
    }
    Ok(cases)
}

/// The BatchNorm passes of a training step, with the bytes each must move at the
/// least, in units of the activation tensor (`x` read; `grad` read, and written).
const BATCHNORM_PASSES: [(BatchNormPass, &str, f64); 5] = [
    (BatchNormPass::TrainPartials, "train_partials", 1.0),
    (BatchNormPass::TrainCombine, "train_combine", 0.0),
    (BatchNormPass::BackwardPartials, "backward_partials", 2.0),
    (BatchNormPass::BackwardCombine, "backward_combine", 0.0),
    (BatchNormPass::BackwardApply, "backward_apply", 3.0),
];

/// The activation after layer `i` (BatchNorm is always followed by one in the seed).
fn activation_after(net: &Network, i: usize) -> Activation {
    match net.layers.get(i + 1) {
        Some(Layer::Activation(a)) => *a,
        _ => Activation::Identity,
    }
}

fn batchnorm_cases(net: &Network, batch: usize) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        if !matches!(layer, Layer::BatchNorm { .. }) {
            continue;
        }
        let s = net.batchnorm_shape(i, batch);
        let activation = activation_after(net, i);
        let len_of = |role: &str| match role {
            "x" | "y" | "grad" => Some(s.len()),
            "affine" | "running" | "affine_grad" => Some(2 * s.channels),
            "stats" => Some(batchnorm::stats_len(s.channels)),
            "partials" => Some(batchnorm::partials_len(&s)),
            _ => None,
        };
        for (pass, pass_name, tensors) in BATCHNORM_PASSES {
            let launch = batchnorm::launch(&s, activation, pass, false);
            cases.push(Case {
                name: format!("{}.{i}.batchnorm.{pass_name}", net.name),
                shape: format!(
                    "{}x{}x{}x{} {activation:?}",
                    s.batch, s.channels, s.height, s.width
                ),
                tiling: None,
                matmul: None,
                work: Work::Bytes(tensors * 4.0 * s.len() as f64),
                bindings: random_bindings(&launch, len_of)?,
                launch,
            });
        }
    }
    Ok(cases)
}

/// One AdamW step over the generator's flat parameter buffer (as the trainer runs it).
fn adamw_case(generator: &Network) -> Case {
    let count = generator.layout().parameters;
    let launch = adamw::step(count);
    let state = |role| (role, Contents::Random(count));
    Case {
        name: format!("{}.adamw.step", generator.name),
        shape: format!("{count} parameters"),
        tiling: None,
        matmul: None,
        // Reads params, grads and both moments; writes params and both moments.
        work: Work::Bytes(7.0 * 4.0 * count as f64),
        bindings: vec![
            state("params"),
            state("grads"),
            state("exp_avg"),
            state("exp_avg_sq"),
            (
                "hyper",
                Contents::Hyper(Hyper::at_step(&AdamW::default(), 1)),
            ),
        ],
        launch,
    }
}

/// A plain matrix multiply (the Linear forward) with as many multiply-adds as one
/// of the generator's middle ConvTranspose2d layers at the seed's width:
/// 16 * batch x 4096 -> 512 (2048 x 4096 -> 512 at batch 128).
fn matmul_case(batch: usize, tiling: TilingChoice) -> Result<Case> {
    let s = LinearShape {
        batch: 16 * batch,
        in_features: 4096,
        out_features: 512,
    };
    let matmul = MatMul::Linear {
        shape: s,
        pass: LinearPass::Forward,
        epilogue: Epilogue::default(),
    };
    let chosen = tiling(&matmul);
    let launch = matmul.launch(chosen);
    let len_of = |role: &str| match role {
        "x" => Some(s.batch * s.in_features),
        "w" => Some(s.out_features * s.in_features),
        "y" => Some(s.batch * s.out_features),
        _ => None,
    };
    Ok(Case {
        name: "matmul.linear.forward".to_string(),
        shape: format!("{}x{}->{}", s.batch, s.in_features, s.out_features),
        tiling: Some(chosen),
        matmul: Some(matmul),
        work: Work::Flops(2.0 * (s.batch * s.in_features * s.out_features) as f64),
        bindings: random_bindings(&launch, len_of)?,
        launch,
    })
}

fn all_cases(settings: &Settings, tiling: TilingChoice) -> Result<Vec<Case>> {
    let generator = model::seed_generator(NOISE_DIM, settings.feature_maps);
    let discriminator = model::seed_discriminator(settings.feature_maps);
    let batch = settings.batch;
    let mut cases = conv_cases(&generator, batch, tiling)?;
    cases.extend(conv_cases(&discriminator, batch, tiling)?);
    cases.extend(batchnorm_cases(&generator, batch)?);
    cases.extend(batchnorm_cases(&discriminator, batch)?);
    cases.push(adamw_case(&generator));
    cases.push(matmul_case(batch, tiling)?);
    Ok(cases)
}

/// Deterministic values in [0, 1) (splitmix64): non-negative, so AdamW's second
/// moment stays a valid square, and never denormal.
fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn allocate(gpu: &Gpu, case: &Case) -> Vec<(&'static str, wgpu::Buffer)> {
    case.bindings
        .iter()
        .enumerate()
        .map(|(i, (role, contents))| {
            let buffer = match contents {
                Contents::Random(len) => buffers::upload(gpu, role, &random_values(*len, i as u64)),
                Contents::Hyper(hyper) => buffers::uniform(gpu, role, hyper),
            };
            (*role, buffer)
        })
        .collect()
}

/// Submit `dispatch` once and wait: the warm-up.
fn run_once(gpu: &Gpu, dispatch: &Dispatch) -> Result<()> {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    dispatch.record(&mut encoder.begin_compute_pass(&Default::default()));
    gpu.queue.submit([encoder.finish()]);
    gpu.wait()
}

/// Median, min and max of some timings, in seconds.
#[derive(Clone, Copy, Debug)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(mut seconds: Vec<f64>) -> Summary {
        seconds.sort_by(f64::total_cmp);
        let n = seconds.len();
        let median = if n % 2 == 1 {
            seconds[n / 2]
        } else {
            (seconds[n / 2 - 1] + seconds[n / 2]) / 2.0
        };
        Summary {
            median,
            min: seconds[0],
            max: seconds[n - 1],
        }
    }
}

/// The timed runs of a case, and the wall time of its first run (pipeline creation
/// and shader compilation included: on software adapters it dwarfs the kernel).
struct Measurement {
    summary: Summary,
    first_run: f64,
}

fn time_case(gpu: &Gpu, kernels: &mut Kernels, case: &Case, runs: usize) -> Result<Measurement> {
    let buffers = allocate(gpu, case);
    let views: Vec<(&str, View)> = buffers
        .iter()
        .map(|(role, buffer)| (*role, View::whole(buffer)))
        .collect();
    gpu.wait()?;
    let started = Instant::now();
    let dispatch = kernels.bind(gpu, &case.launch, &views)?;
    run_once(gpu, &dispatch)?;
    let first_run = started.elapsed().as_secs_f64();
    let seconds = timing::seconds(gpu, &vec![&dispatch; runs])?;
    Ok(Measurement {
        summary: Summary::of(seconds),
        first_run,
    })
}

/// The rate at the median time: ("GFLOP/s" | "GB/s", value).
fn rate(work: Work, seconds: f64) -> (&'static str, f64) {
    match work {
        Work::Flops(flops) => ("GFLOP/s", flops / seconds / 1e9),
        Work::Bytes(bytes) => ("GB/s", bytes / seconds / 1e9),
    }
}

fn tiling_name(case: &Case) -> String {
    case.tiling.map_or_else(|| "-".to_string(), |t| t.name())
}

/// The table's header; `print_row` uses the same column widths.
fn print_header(gpu: &Gpu, settings: &Settings, timer: &str) {
    println!("adapter: {}", gpu.describe());
    println!(
        "batch {}, feature maps {}; median of {} runs after 1 warm-up; timer: {timer}",
        settings.batch, settings.feature_maps, settings.runs
    );
    println!(
        "{:<42} {:<32} {:<12} {:>10} {:>10} {:>10} {:>16} {:>9}",
        "benchmark", "shape", "tiling", "median ms", "min ms", "max ms", "rate", "first s"
    );
}

fn print_row(case: &Case, m: &Measurement) {
    let (unit, value) = rate(case.work, m.summary.median);
    println!(
        "{:<42} {:<32} {:<12} {:>10.3} {:>10.3} {:>10.3} {:>16} {:>9.2}",
        case.name,
        case.shape,
        tiling_name(case),
        m.summary.median * 1e3,
        m.summary.min * 1e3,
        m.summary.max * 1e3,
        format!("{value:.2} {unit}"),
        m.first_run,
    );
}

fn json_row(case: &Case, m: &Measurement) -> serde_json::Value {
    let (unit, value) = rate(case.work, m.summary.median);
    let (key, work) = match case.work {
        Work::Flops(f) => ("flop", f),
        Work::Bytes(b) => ("bytes", b),
    };
    json!({
        "name": case.name,
        "shape": case.shape,
        "tiling": case.tiling.map(|t| t.name()),
        "label": case.launch.label(),
        "median_ms": m.summary.median * 1e3,
        "min_ms": m.summary.min * 1e3,
        "max_ms": m.summary.max * 1e3,
        key: work,
        "rate": value,
        "rate_unit": unit,
        "first_run_s": m.first_run,
    })
}

/// Time the tiling candidates of every case's product not timed before on this
/// adapter (as `train` does for its own products), and use the fastest.
fn autotune(gpu: &Gpu, kernels: &mut Kernels, cases: &mut [Case]) -> Result<()> {
    let mut tuner = Autotuner::load(gpu);
    for case in cases {
        let Some(matmul) = case.matmul else { continue };
        if tuner.cached(gpu, &matmul).is_some() {
            continue;
        }
        let buffers = allocate(gpu, case);
        let views: Vec<(&str, View)> = buffers
            .iter()
            .map(|(role, buffer)| (*role, View::whole(buffer)))
            .collect();
        let (tiling, _) = tuner.tune(gpu, &matmul, |launch| kernels.bind(gpu, launch, &views))?;
        eprintln!("autotune {}: {}", case.name, tiling.name());
        case.tiling = Some(tiling);
        case.launch = matmul.launch(tiling);
        tuner.save()?;
    }
    Ok(())
}

fn run(settings: &Settings, gpu: &Gpu) -> Result<()> {
    let tuner = Autotuner::load(gpu);
    let tiling = |m: &MatMul| {
        tuner
            .cached(gpu, m)
            .unwrap_or_else(|| autotune::default_tiling(gpu, m))
    };
    let mut cases: Vec<Case> = all_cases(settings, &tiling)?
        .into_iter()
        .filter(|c| settings.selects(&c.name))
        .collect();
    if !settings.timed {
        for case in &cases {
            println!("{}: benchmark", case.name);
        }
        return Ok(());
    }
    let timer = if gpu.timestamps {
        "GPU timestamps"
    } else {
        "wall clock around submit + wait"
    };
    if !settings.json {
        print_header(gpu, settings, timer);
    }
    let mut kernels = Kernels::new();
    if settings.autotune {
        autotune(gpu, &mut kernels, &mut cases)?;
    }
    let mut rows = Vec::new();
    for case in &cases {
        let measurement = time_case(gpu, &mut kernels, case, settings.runs)
            .with_context(|| format!("benchmark {}", case.name))?;
        if settings.json {
            rows.push(json_row(case, &measurement));
        } else {
            print_row(case, &measurement);
        }
    }
    if settings.json {
        let document = json!({
            "adapter": gpu.describe(),
            "timer": timer,
            "runs": settings.runs,
            "batch": settings.batch,
            "feature_maps": settings.feature_maps,
            "results": rows,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    Ok(())
}

fn main() -> ExitCode {
    let settings = match Settings::parse() {
        Ok(Some(settings)) => settings,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernels: {e:#}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    // Benchmarks are not tests: no adapter is a skip, not a failure.
    let gpu = match Gpu::open(None) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("SKIPPED KERNEL BENCHMARKS: no GPU adapter ({e:#})");
            return ExitCode::SUCCESS;
        }
    };
    match run(&settings, &gpu) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernels: {e:#}");
            ExitCode::FAILURE
        }
    }
}
