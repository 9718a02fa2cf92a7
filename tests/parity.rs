//! The whole training step against PyTorch: the seed's model run by PyTorch from
//! the same inputs (tests/fixtures, made by tests/fixtures/make_fixtures.py), compared
//! layer by layer, gradient by gradient and parameter by parameter. Tolerances follow
//! tests/fixtures/README.md ("Precision"), which measured PyTorch's own f32 noise
//! against float64 for every tensor.

mod common;

use std::collections::HashMap;

use common::with_gpu;
use dcgan_wgpu::device::Gpu;
use dcgan_wgpu::executor::graph::Net;
use dcgan_wgpu::executor::{
    Executor, ExecutorConfig, Inputs, NamedTensor, StepMetrics, TensorData,
};
use dcgan_wgpu::model::{self, Layout, TensorKind};
use dcgan_wgpu::shapes::AdamW;
use safetensors::{Dtype, SafeTensors};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

struct Fixture {
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = ((bits >> 10) & 0x1f) as i32;
    let mantissa = (bits & 0x3ff) as f32;
    sign * match exponent {
        0 => mantissa * 2f32.powi(-24),
        31 => f32::INFINITY,
        e => (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

impl Fixture {
    fn open(name: &str) -> Fixture {
        let bytes = std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture file");
        let (_, meta) = SafeTensors::read_metadata(&bytes).expect("fixture header");
        let metadata = meta.metadata().clone().unwrap_or_default();
        Fixture { bytes, metadata }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("fixture")
    }

    fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// A float tensor, decoding scaled F16 (`value = f16 * 2^-scale_log2`).
    fn f32(&self, name: &str) -> Vec<f32> {
        let t = self.tensors();
        let view = t
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no {name}"));
        match view.dtype() {
            Dtype::F32 => bytemuck::pod_collect_to_vec(view.data()),
            Dtype::F16 => {
                let scale: i32 = self
                    .metadata
                    .get(&format!("scale_log2.{name}"))
                    .map_or(0, |s| s.parse().expect("scale"));
                let bits: Vec<u16> = bytemuck::pod_collect_to_vec(view.data());
                bits.iter()
                    .map(|&b| f16_to_f32(b) * 2f32.powi(-scale))
                    .collect()
            }
            other => panic!("{name}: unexpected dtype {other:?}"),
        }
    }

    fn u8(&self, name: &str) -> Vec<u8> {
        self.tensors()
            .tensor(name)
            .expect("u8 tensor")
            .data()
            .to_vec()
    }

    fn i64(&self, name: &str) -> i64 {
        bytemuck::pod_read_unaligned(self.tensors().tensor(name).expect("i64").data())
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors()
            .tensor(name)
            .expect("tensor")
            .shape()
            .to_vec()
    }

    fn meta(&self, key: &str) -> usize {
        self.metadata[key].parse().expect("integer metadata")
    }

    /// The state_dict of a network stored under `prefix` (`init.G.`, `final.D.`, ...).
    fn state_dict(&self, prefix: &str, layout: &Layout) -> Vec<NamedTensor> {
        let mut out: Vec<NamedTensor> = layout
            .tensors
            .iter()
            .map(|slot| NamedTensor {
                name: slot.name.clone(),
                shape: self.shape(&format!("{prefix}{}", slot.name)),
                data: TensorData::F32(self.f32(&format!("{prefix}{}", slot.name))),
            })
            .collect();
        for &layer in &layout.batchnorm_layers {
            let name = format!("layers.{layer}.num_batches_tracked");
            out.push(NamedTensor {
                data: TensorData::I64(vec![self.i64(&format!("{prefix}{name}"))]),
                shape: Vec::new(),
                name,
            });
        }
        out
    }

    fn moments(&self, prefix: &str, layout: &Layout, which: &str) -> Vec<NamedTensor> {
        layout
            .tensors
            .iter()
            .filter(|s| s.kind == TensorKind::Parameter)
            .map(|slot| NamedTensor {
                name: slot.name.clone(),
                shape: slot.shape.clone(),
                data: TensorData::F32(self.f32(&format!("{prefix}opt.{which}.{}", slot.name))),
            })
            .collect()
    }

    /// The real batch of a step, normalised as ToTensor + Normalize do.
    fn real(&self, step: usize) -> Vec<f32> {
        self.u8(&format!("step{step}.real_u8"))
            .iter()
            .map(|&b| (b as f32 / 255.0 - 0.5) / 0.5)
            .collect()
    }
}

/// Largest |got - want| relative to max |want| over a tensor; panics above `tol`.
fn compare(what: &str, got: &[f32], want: &[f32], tol: f32, storage_rel: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let error = (g - w).abs();
        let allowed = tol * max_ref + storage_rel * w.abs();
        assert!(
            error <= allowed && g.is_finite(),
            "{what}[{i}]: got {g}, PyTorch {w}: error {error:e} > {allowed:e} (max |ref| {max_ref:e})"
        );
        worst = worst.max(error / max_ref);
    }
    worst
}

/// Collects the worst relative deviation per category, printed at the end.
#[derive(Default)]
struct Report(HashMap<&'static str, f32>);

impl Report {
    fn note(&mut self, category: &'static str, deviation: f32) {
        let entry = self.0.entry(category).or_default();
        *entry = entry.max(deviation);
    }

    fn print(&self, config: &str) {
        let mut lines: Vec<_> = self.0.iter().collect();
        lines.sort_by_key(|(category, _)| **category);
        for (category, worst) in lines {
            eprintln!("{config}: largest deviation from PyTorch, {category}: {worst:.2e}");
        }
    }
}

fn executor(gpu: Gpu, fixture: &Fixture) -> Executor {
    let batch = fixture.meta("batch");
    let feature_maps = fixture.meta("feature_maps");
    let noise_dim = fixture.meta("noise_dim");
    let config = ExecutorConfig {
        generator: model::seed_generator(noise_dim, feature_maps),
        discriminator: model::seed_discriminator(feature_maps),
        batch,
        extra_batches: Vec::new(),
        samples: batch,
        optimizer: AdamW::default(),
        inputs: Inputs::External,
        capture: true,
        autotune: false,
    };
    let mut ex = Executor::new(gpu, config).expect("executor");
    for (net, prefix) in [(Net::Generator, "init.G."), (Net::Discriminator, "init.D.")] {
        let state = fixture.state_dict(prefix, ex.layout(net));
        ex.load_state_dict(net, &state).expect("load init state");
    }
    ex
}

fn run_step(ex: &mut Executor, fixture: &Fixture, step: usize) -> StepMetrics {
    ex.set_inputs(
        &fixture.real(step),
        &fixture.f32(&format!("step{step}.noise")),
    )
    .unwrap();
    ex.step(fixture.meta("batch"), 0, true).unwrap();
    *ex.finish().unwrap().last().expect("metrics of the step")
}

fn check_losses(
    report: &mut Report,
    fixture: &Fixture,
    metrics: &StepMetrics,
    step: usize,
    tol: f32,
) {
    let losses = fixture.f32("losses");
    let want = &losses[(step - 1) * 6..step * 6];
    for (i, (g, w)) in metrics.values.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "step {step} loss column {i}: got {g}, PyTorch {w}"
        );
        report.note("losses (absolute)", (g - w).abs());
    }
}

const PASSES: [(&str, Net, usize); 4] = [
    ("G", Net::Generator, 14),
    ("D_real", Net::Discriminator, 13),
    ("D_fake_detached", Net::Discriminator, 13),
    ("D_fake_for_G", Net::Discriminator, 13),
];

fn check_forward(report: &mut Report, ex: &Executor, fixture: &Fixture, tol: f32, storage: f32) {
    for (pass, _, layers) in PASSES {
        for i in 0..layers {
            let name = format!("step1.{pass}.layers.{i}.out");
            let want = fixture.f32(&name);
            // The executor keeps activations NHWC.
            let got = match fixture.shape(&name)[..] {
                [_, c, h, w] => common::to_nchw(
                    &ex.captured(&format!("{pass}.layers.{i}")).unwrap()[..want.len()],
                    c,
                    h,
                    w,
                ),
                _ => ex.captured(&format!("{pass}.layers.{i}")).unwrap(),
            };
            let worst = compare(
                &format!("{pass} layer {i}"),
                &got[..want.len()],
                &want,
                tol,
                storage,
            );
            report.note("forward outputs (of max |ref|)", worst);
        }
    }
    for pass in ["D_real", "D_fake_detached", "D_fake_for_G"] {
        let got = ex.captured(&format!("{pass}.running")).unwrap();
        let layout = ex.layout(Net::Discriminator);
        for &layer in &layout.batchnorm_layers {
            for (stat, offset) in [("running_mean", 0), ("running_var", 1)] {
                let slot = layout.running(layer);
                let channels = slot.len();
                let from = slot.offset + offset * channels;
                let want = fixture.f32(&format!("step1.{pass}.buffers.layers.{layer}.{stat}"));
                let worst = compare(
                    &format!("{pass} {stat} {layer}"),
                    &got[from..from + channels],
                    &want,
                    tol,
                    0.0,
                );
                report.note("running statistics (of max |ref|)", worst);
            }
        }
    }
}

fn flat_slice<'a>(flat: &'a [f32], layout: &Layout, name: &str) -> &'a [f32] {
    let slot = layout.find(name).expect("parameter");
    &flat[slot.offset..slot.offset + slot.len()]
}

fn check_gradients(report: &mut Report, ex: &Executor, fixture: &Fixture, tol: f32, storage: f32) {
    for (net, tag) in [(Net::Generator, "G"), (Net::Discriminator, "D")] {
        let [grads, _, _] = ex.optimizer_buffers(net).unwrap();
        let layout = ex.layout(net);
        for slot in layout
            .tensors
            .iter()
            .filter(|s| s.kind == TensorKind::Parameter)
        {
            let want = fixture.f32(&format!("step1.grad.{tag}.{}", slot.name));
            let got = flat_slice(&grads, layout, &slot.name);
            let worst = compare(
                &format!("grad {tag} {}", slot.name),
                got,
                &want,
                tol,
                storage,
            );
            report.note("gradients (of max |ref|)", worst);
        }
    }
    let got = ex.captured("grad.fake_images").unwrap();
    let want = fixture.f32("step1.grad.fake_images");
    report.note(
        "gradients (of max |ref|)",
        compare("grad fake images", &got, &want, tol, storage),
    );
}

/// Parameters after an AdamW step: each element may differ by the step rule's
/// allowance (README "Parameters after step 1"): lr * U where U grows to 2 when the
/// gradient is within the gradient tolerance of zero.
fn check_parameters(
    report: &mut Report,
    ex: &Executor,
    fixture: &Fixture,
    prefix: &str,
    grad_tol: f32,
    storage: f32,
) {
    let lr = 2e-4f32;
    for (net, tag) in [(Net::Generator, "G"), (Net::Discriminator, "D")] {
        let state = ex.state_dict(net).unwrap();
        let [_, exp_avg, exp_avg_sq] = ex.optimizer_buffers(net).unwrap();
        let layout = ex.layout(net);
        for tensor in &state {
            let name = format!("{prefix}{tag}.{}", tensor.name);
            match &tensor.data {
                TensorData::I64(v) => assert_eq!(v[0], fixture.i64(&name), "{name}"),
                TensorData::F32(got) => {
                    let Some(slot) = layout.find(&tensor.name) else {
                        continue;
                    };
                    let p0 = fixture.f32(&format!("init.{tag}.{}", tensor.name));
                    let want = if fixture.has(&name) {
                        fixture.f32(&name)
                    } else {
                        continue;
                    };
                    if slot.kind == TensorKind::Running {
                        report.note(
                            "running statistics (of max |ref|)",
                            compare(&name, got, &want, 1e-4, 0.0),
                        );
                        continue;
                    }
                    let grad_name = format!("step1.grad.{tag}.{}", tensor.name);
                    let g = if prefix == "step1.after." {
                        fixture.f32(&grad_name)
                    } else {
                        vec![1.0; got.len()]
                    };
                    let max_g = g.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let mut worst = 0f32;
                    for i in 0..got.len() {
                        let tau = grad_tol * max_g + storage * g[i].abs();
                        let gi = g[i].abs();
                        let u = if gi <= tau {
                            2.0
                        } else {
                            (1e-8 * tau / ((gi - tau + 1e-8) * (gi + 1e-8))).min(2.0)
                        };
                        let allowed = 2f32.powi(-22) * p0[i].abs() + 1e-9 + lr * u + 2e-7;
                        let error = (got[i] - want[i]).abs();
                        assert!(
                            error <= allowed,
                            "{name}[{i}]: got {}, PyTorch {}, error {error:e} > {allowed:e}",
                            got[i],
                            want[i]
                        );
                        worst = worst.max(error);
                    }
                    report.note("parameters after the step (absolute)", worst);
                    for (which, flat) in [("exp_avg", &exp_avg), ("exp_avg_sq", &exp_avg_sq)] {
                        let moment = format!("{prefix}{tag}.opt.{which}.{}", tensor.name);
                        if fixture.has(&moment) {
                            let got = flat_slice(flat, layout, &tensor.name);
                            report.note(
                                "AdamW moments (of max |ref|)",
                                compare(&moment, got, &fixture.f32(&moment), grad_tol, storage),
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn narrow_model_first_step_matches_pytorch_layer_by_layer() {
    with_gpu(|ctx| {
        let fixture = Fixture::open("dcgan_narrow.safetensors");
        let gpu = Gpu::open(None).expect("adapter");
        let _ = ctx;
        let mut ex = executor(gpu, &fixture);
        let mut report = Report::default();
        let metrics = run_step(&mut ex, &fixture, 1);
        // f32 summation order (PyTorch's own f32 noise is below 3e-6 of max |ref| here).
        let tol = 1e-4;
        check_forward(&mut report, &ex, &fixture, tol, 0.0);
        check_losses(&mut report, &fixture, &metrics, 1, 1e-5);
        check_gradients(&mut report, &ex, &fixture, tol, 0.0);
        check_parameters(&mut report, &ex, &fixture, "step1.after.", tol, 0.0);
        report.print("narrow, step 1");
    });
}

#[test]
fn narrow_model_teacher_forced_last_step_matches_pytorch() {
    with_gpu(|_| {
        let fixture = Fixture::open("dcgan_narrow.safetensors");
        let steps = fixture.meta("steps");
        let mut ex = executor(Gpu::open(None).expect("adapter"), &fixture);
        let before = format!("step{}.after.", steps - 1);
        for (net, tag) in [(Net::Generator, "G"), (Net::Discriminator, "D")] {
            let prefix = format!("{before}{tag}.");
            let layout = ex.layout(net).clone();
            ex.load_state_dict(net, &fixture.state_dict(&prefix, &layout))
                .unwrap();
            let exp_avg = fixture.moments(&prefix, &layout, "exp_avg");
            let exp_avg_sq = fixture.moments(&prefix, &layout, "exp_avg_sq");
            ex.load_optimizer_state(net, &exp_avg, &exp_avg_sq, steps as u64 - 1)
                .unwrap();
        }
        let mut report = Report::default();
        let metrics = run_step(&mut ex, &fixture, steps);
        check_losses(&mut report, &fixture, &metrics, steps, 1e-5);
        check_final_state(&mut report, &ex, &fixture, 1e-4, 4e-7);
        report.print(&format!(
            "narrow, step {steps} from PyTorch's state after step {}",
            steps - 1
        ));
    });
}

#[test]
fn narrow_model_eight_free_running_steps_stay_with_pytorch() {
    with_gpu(|_| {
        let fixture = Fixture::open("dcgan_narrow.safetensors");
        let mut ex = executor(Gpu::open(None).expect("adapter"), &fixture);
        let mut report = Report::default();
        for step in 1..=fixture.meta("steps") {
            let metrics = run_step(&mut ex, &fixture, step);
            // A trajectory amplifies rounding (README "Several steps"): loose bounds.
            check_losses(&mut report, &fixture, &metrics, step, 1e-4);
        }
        check_final_state(&mut report, &ex, &fixture, 1e-2, 4.0 * 2e-4);
        report.print("narrow, 8 free-running steps");
    });
}

/// Parameters, moments and running statistics against `final.*`: moments within
/// `tol` of their max, parameters within `param_abs`.
fn check_final_state(
    report: &mut Report,
    ex: &Executor,
    fixture: &Fixture,
    tol: f32,
    param_abs: f32,
) {
    for (net, tag) in [(Net::Generator, "G"), (Net::Discriminator, "D")] {
        let layout = ex.layout(net).clone();
        let prefix = format!("final.{tag}.");
        let [_, exp_avg, exp_avg_sq] = ex.optimizer_buffers(net).unwrap();
        for tensor in ex.state_dict(net).unwrap() {
            let name = format!("{prefix}{}", tensor.name);
            match &tensor.data {
                TensorData::I64(v) => assert_eq!(v[0], fixture.i64(&name), "{name}"),
                TensorData::F32(got) => {
                    let want = fixture.f32(&name);
                    if layout
                        .find(&tensor.name)
                        .is_some_and(|s| s.kind == TensorKind::Running)
                    {
                        report.note(
                            "running statistics (of max |ref|)",
                            compare(&name, got, &want, tol, 0.0),
                        );
                        continue;
                    }
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst <= param_abs,
                        "{name}: parameters off by {worst:e} > {param_abs:e}"
                    );
                    report.note("parameters (absolute)", worst);
                    for (which, flat) in [("exp_avg", &exp_avg), ("exp_avg_sq", &exp_avg_sq)] {
                        let moment = format!("{prefix}opt.{which}.{}", tensor.name);
                        let got = flat_slice(flat, &layout, &tensor.name);
                        report.note(
                            "AdamW moments (of max |ref|)",
                            compare(&moment, got, &fixture.f32(&moment), tol, 0.0),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn seed_width_first_step_matches_pytorch() {
    with_gpu(|_| {
        let fixture = Fixture::open("dcgan_full.safetensors");
        let mut ex = executor(Gpu::open(None).expect("adapter"), &fixture);
        let mut report = Report::default();
        let metrics = run_step(&mut ex, &fixture, 1);
        // Outputs are stored as scaled f16: 2^-11 relative per element on top of the
        // f32 summation-order tolerance (PyTorch's own f32 noise: up to 3.5e-5 here).
        let storage = 2f32.powi(-11);
        let tol = 2e-4;
        check_forward(&mut report, &ex, &fixture, tol, storage);
        check_losses(&mut report, &fixture, &metrics, 1, 1e-5);
        check_gradients(&mut report, &ex, &fixture, tol, storage);
        check_parameters(&mut report, &ex, &fixture, "step1.after.", tol, storage);
        report.print("seed width, step 1");
    });
}
