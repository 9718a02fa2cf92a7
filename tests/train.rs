//! `dcgan-wgpu train` end to end on the real MNIST subset: the run directory holds
//! what the seed writes, checkpoints reload (into `sample`), losses are finite and move.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use dcgan_wgpu::checkpoint;
use dcgan_wgpu::device::Gpu;
use dcgan_wgpu::executor::{Executor, ExecutorConfig, Inputs, TensorData};
use dcgan_wgpu::model;
use dcgan_wgpu::shapes::AdamW;

const MNIST_5K: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mnist-5k");

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dcgan-wgpu"))
}

fn run(mut command: Command) -> (bool, String) {
    let out = command.output().expect("run dcgan-wgpu");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A model small enough that a step takes milliseconds on a software adapter.
const TINY_MODEL: [&str; 4] = ["--batch-size", "8", "--feature-maps", "8"];

/// `train` on the MNIST subset, offline, with default tilings, writing to `out_dir`.
fn train_on_mnist_5k(out_dir: &Path) -> Command {
    let mut command = binary();
    command.args([
        "train",
        "--data-dir",
        MNIST_5K,
        "--offline",
        "--no-autotune",
    ]);
    command.arg("--out-dir").arg(out_dir);
    command
}

/// `num_batches_tracked` of a checkpoint's first BatchNorm.
fn batches_tracked(checkpoint: &Path) -> i64 {
    let (tensors, _) = checkpoint::load(checkpoint).unwrap();
    let tracked = tensors
        .iter()
        .find(|t| t.name == "layers.1.num_batches_tracked")
        .expect("layers.1.num_batches_tracked");
    match &tracked.data {
        TensorData::I64(values) => values[0],
        other => panic!("num_batches_tracked is {other:?}, not int64"),
    }
}

fn only_run_dir(out_dir: &Path) -> PathBuf {
    let runs: Vec<_> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "one run directory: {runs:?}");
    runs[0].clone()
}

#[test]
fn train_writes_the_seed_outputs_and_checkpoints_reload() {
    common::with_gpu(|_| {
        let out = tempfile::tempdir().unwrap();
        let mut command = train_on_mnist_5k(out.path());
        command.args(["--batch-size", "16", "--max-steps", "24"]);
        command.args(["--print-every", "8", "--feature-maps", "16"]);
        let (ok, text) = run(command);
        assert!(ok, "train failed:\n{text}");
        assert!(
            text.contains("epoch 0 batch   16:"),
            "progress lines:\n{text}"
        );

        let dir = only_run_dir(out.path());
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(name.len(), 36, "run id is a UUID: {name}");
        for image in [
            "epoch0_batch0.png",
            "epoch0_batch8.png",
            "epoch0_batch16.png",
            // The run ends with a grid of its last step.
            "epoch0_batch23.png",
        ] {
            let grid = image::open(dir.join("images").join(image))
                .expect(image)
                .to_luma8();
            assert_eq!(
                (grid.width(), grid.height()),
                (242, 242),
                "8 x 8 grid of 28 x 28"
            );
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["batch_size"], 16);
        assert!(config["adapter"].as_str().unwrap().len() > 3);

        // Every step logged; losses finite and moving.
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let rows: Vec<Vec<f64>> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows.len(), 24);
        assert!(rows.iter().flatten().all(|v| v.is_finite()));
        let loss_g: Vec<f64> = rows.iter().map(|r| r[7]).collect();
        let spread = loss_g.iter().cloned().fold(f64::MIN, f64::max)
            - loss_g.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.05, "generator loss does not move: {loss_g:?}");

        // Checkpoints: PyTorch names, and `sample` reloads the generator.
        assert_eq!(batches_tracked(&dir.join("generator_0.safetensors")), 24);
        assert_eq!(
            batches_tracked(&dir.join("discriminator_0.safetensors")),
            72,
            "three D forwards per step"
        );
        let (tensors, _) = checkpoint::load(&dir.join("discriminator_0.safetensors")).unwrap();
        assert_eq!(tensors.len(), 21, "D state_dict entries (PyTorch has 21)");

        let grid = out.path().join("grid.png");
        let raw = out.path().join("raw.safetensors");
        let mut command = binary();
        command.args(["sample", "--count", "9", "--generator"]);
        command.arg(dir.join("generator_0.safetensors"));
        command
            .arg("--out")
            .arg(&grid)
            .arg("--raw-output")
            .arg(&raw);
        let (ok, text) = run(command);
        assert!(ok, "sample failed:\n{text}");
        let (images, _) = checkpoint::load(&raw).unwrap();
        let TensorData::F32(values) = &images[0].data else {
            panic!()
        };
        assert_eq!(images[0].shape, [9, 1, 28, 28]);
        assert!(values.iter().all(|v| v.abs() <= 1.0), "tanh output");
        let spread = values.iter().cloned().fold(f32::MIN, f32::max)
            - values.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.01, "samples are not constant");
    });
}

#[test]
fn bad_input_gives_one_clear_line() {
    let out = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--batch-size", "0"], "batch-size"),
        (vec!["train", "--lr=-1"], "--lr must be a positive number"),
        (vec!["train", "--beta1", "1.5"], "--beta1 must be in [0, 1)"),
        (vec!["train", "--dataset", "cifar"], "cifar"),
        (
            vec!["train", "--lr", "-1"],
            "--lr must be a positive number",
        ),
        (vec!["train", "--epochs", "0"], "0 is not in 1.."),
        (vec!["train", "--max-steps", "0"], "0 is not in 1.."),
        (
            vec!["sample", "--generator", "/nonexistent.safetensors"],
            "could not read checkpoint",
        ),
        (
            vec![
                "sample",
                "--generator",
                "g.safetensors",
                "--out",
                "g.safetensors",
            ],
            "--out g.safetensors must end in .png",
        ),
        (
            vec![
                "sample",
                "--generator",
                "g.safetensors",
                "--raw-output",
                "g.safetensors",
            ],
            "would overwrite an input file",
        ),
        (
            vec![
                "sample",
                "--generator",
                "g.safetensors",
                "--out",
                "/nonexistent/x.png",
            ],
            "the folder /nonexistent does not exist",
        ),
    ];
    for (args, expected) in cases {
        let mut command = binary();
        command
            .args(&args)
            .arg("--out-dir")
            .arg(out.path())
            .arg("--offline");
        if args[0] == "sample" {
            command = binary();
            command.args(&args);
        }
        let (ok, text) = run(command);
        assert!(!ok, "{args:?} should fail");
        assert!(
            text.contains(expected),
            "{args:?}: expected `{expected}` in:\n{text}"
        );
    }
    // An --out-dir that cannot be written fails before any GPU work.
    let file = out.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let mut command = binary();
    command.args(["train", "--out-dir"]).arg(file.join("runs"));
    let (ok, text) = run(command);
    assert!(!ok);
    assert!(text.contains("cannot write runs to"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    // Offline with no data: says where to put the files.
    let mut command = binary();
    command
        .args(["train", "--offline", "--data-dir"])
        .arg(out.path().join("empty"));
    let (ok, text) = run(command);
    assert!(!ok);
    assert!(text.contains("train-images-idx3-ubyte"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
}

#[test]
fn the_seed_model_on_full_mnist_holds_at_most_256_mib_of_device_memory() {
    common::with_gpu(|_| {
        // As `train` builds it for MNIST's 60,000 images: batch 128 and a last batch
        // of 96, the dataset on the GPU, and the sample grid's generator.
        let images = 60_000;
        let config = ExecutorConfig {
            generator: model::seed_generator(50, 64),
            discriminator: model::seed_discriminator(64),
            batch: 128,
            extra_batches: vec![images % 128],
            samples: 64,
            optimizer: AdamW::default(),
            inputs: Inputs::Dataset {
                pixels: vec![0; images * 784],
                image_pixels: 784,
                seed: 0,
            },
            capture: false,
            autotune: false,
        };
        let executor = Executor::new(Gpu::open(None).unwrap(), config).unwrap();
        let mib = executor.device_bytes() as f64 / (1 << 20) as f64;
        eprintln!("device memory: {mib:.1} MiB");
        // Parameters, gradients and moments alone take 58 MiB, the dataset 45 MiB.
        assert!((150.0..=256.0).contains(&mib), "{mib:.1} MiB");
    });
}

#[test]
fn dump_schedule_lists_every_dispatch_of_a_step_without_data() {
    common::with_gpu(|_| {
        let mut command = binary();
        command.args(["train", "--dump-schedule", "--data-dir", "/nonexistent"]);
        command.args(["--batch-size", "8", "--feature-maps", "8"]);
        let (ok, text) = run(command);
        assert!(ok, "{text}");
        let dispatches: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("workgroups ["))
            .collect();
        let summary = format!("{} dispatches, 1 submission per step", dispatches.len());
        assert!(text.contains(&summary), "{summary}:\n{text}");
        // The seed's order: data and noise first, the generator's update last.
        assert!(dispatches[0].starts_with("data.gather"), "{text}");
        assert!(
            dispatches.last().unwrap().starts_with("adamw.step"),
            "{text}"
        );
        for layer in [
            "conv_transpose2d.forward 8x50x1x1->64",
            "conv2d.forward 8x1x28x28->8",
        ] {
            assert!(text.contains(layer), "{layer}:\n{text}");
        }
    });
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_after_the_step_and_saves_the_epoch_so_far() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    common::with_gpu(|_| {
        let out = tempfile::tempdir().unwrap();
        let mut command = train_on_mnist_5k(out.path());
        command.args(TINY_MODEL).args(["--print-every", "5"]);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Interrupt once training is under way (the first progress lines are out).
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = stdout.lines().map(|l| l.unwrap());
        assert!(lines.any(|l| l.starts_with("epoch 0 batch   10:")));
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "an interrupted run reports it");
        assert!(stderr.contains("interrupted after"), "{stderr}");
        let dir = only_run_dir(out.path());
        let steps = batches_tracked(&dir.join("generator_0.safetensors"));
        // Every step it trained is in the checkpoint and in the log.
        assert!(steps > 10 && steps < 625, "{steps}");
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count() as i64 - 1, steps);
    });
}

#[test]
fn a_diverged_run_stops_with_a_clear_error_and_saves_no_checkpoint() {
    common::with_gpu(|_| {
        let out = tempfile::tempdir().unwrap();
        let mut command = train_on_mnist_5k(out.path());
        command.args(TINY_MODEL).args(["--max-steps", "12"]);
        // A learning rate this large turns the discriminator's outputs into NaN
        // within a few steps.
        command.args(["--lr", "1e6"]);
        let (ok, text) = run(command);
        assert!(!ok, "a diverged run must fail:\n{text}");
        assert!(text.contains("training diverged at epoch 0"), "{text}");
        let dir = only_run_dir(out.path());
        let saved: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|name| name.ends_with(".safetensors"))
            .collect();
        assert!(saved.is_empty(), "NaN checkpoints written: {saved:?}");
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert!(csv.contains("NaN"), "the diverged step is logged:\n{csv}");
    });
}

/// `sample` from a checkpoint holding only a zero `layers.0.weight` of `shape`.
fn sample_from_first_layer(shape: Vec<usize>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let tensor = dcgan_wgpu::executor::NamedTensor {
        name: "layers.0.weight".into(),
        data: TensorData::F32(vec![0.0; shape.iter().product()]),
        shape,
    };
    checkpoint::save(&path, &[tensor], Default::default()).unwrap();
    let mut command = binary();
    command.args(["sample", "--generator"]).arg(&path);
    command.arg("--out").arg(dir.path().join("x.png"));
    run(command)
}

#[test]
fn a_model_too_large_for_the_adapter_is_refused_clearly() {
    common::with_gpu(|_| {
        // 1 MiB on disk, but a generator of width 2048: gigabytes of parameters.
        let (ok, text) = sample_from_first_layer(vec![1, 16384, 4, 4]);
        assert!(!ok);
        assert!(text.contains("MiB in one buffer"), "{text}");
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    });
}

#[test]
fn a_checkpoint_of_another_model_is_refused_clearly() {
    common::with_gpu(|_| {
        // A discriminator's first layer.
        let (ok, text) = sample_from_first_layer(vec![64, 1, 4, 4]);
        assert!(!ok);
        assert!(
            text.contains("not a dcgan-wgpu generator checkpoint"),
            "{text}"
        );
        assert!(text.contains("a discriminator's"), "{text}");
    });
}
