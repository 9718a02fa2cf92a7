//! Shared by the GPU test binaries: one device per binary, random data, and
//! comparisons that report the largest deviation.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use dcgan_wgpu::buffers;
use dcgan_wgpu::device::Gpu;
use dcgan_wgpu::kernels::{Kernels, Launch, View, gemm::Tiling};

pub struct Ctx {
    pub gpu: Gpu,
    pub kernels: Kernels,
}

impl Ctx {
    pub fn upload(&self, data: &[f32]) -> wgpu::Buffer {
        buffers::upload(&self.gpu, "test", data)
    }

    pub fn zeros(&self, len: usize) -> wgpu::Buffer {
        buffers::storage(&self.gpu, "test", len)
    }

    pub fn read(&self, buffer: &wgpu::Buffer) -> Vec<f32> {
        buffers::read_all(&self.gpu, buffer).expect("read-back")
    }

    pub fn run(&mut self, launch: &Launch, bindings: &[(&str, &wgpu::Buffer)]) {
        let views: Vec<(&str, View)> = bindings
            .iter()
            .map(|(role, buffer)| (*role, View::whole(buffer)))
            .collect();
        self.kernels
            .run(&self.gpu, launch, &views)
            .unwrap_or_else(|e| panic!("{}: {e:#}", launch.label()));
    }

    /// The tilings this adapter can run: the portable ones, plus a subgroup one.
    pub fn tilings(&self) -> Vec<Tiling> {
        let mut all = vec![Tiling::PORTABLE, Tiling::NARROW];
        if let Some(lanes) = self.gpu.subgroup_size {
            all.push(Tiling {
                lanes,
                rows_per_lane: 4,
                tile_cols: 4 * lanes,
                subgroup: true,
            });
        }
        all
    }
}

/// Run `f` with this binary's GPU. With no adapter: fail under CI=true, otherwise
/// print one loud line and skip.
pub fn with_gpu(f: impl FnOnce(&mut Ctx)) {
    static CTX: OnceLock<Option<Mutex<Ctx>>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| match Gpu::open(None) {
        Ok(gpu) => {
            eprintln!("GPU tests run on {}", gpu.describe());
            Some(Mutex::new(Ctx {
                gpu,
                kernels: Kernels::new(),
            }))
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no GPU adapter: {e:#}");
            }
            eprintln!(
                "SKIPPED GPU TEST: no GPU adapter ({e:#}). Install a Vulkan driver, \
                 e.g. `apt-get install mesa-vulkan-drivers` for lavapipe."
            );
            None
        }
    });
    if let Some(ctx) = ctx {
        let mut guard = ctx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard);
    }
}

/// Deterministic uniform values in [-scale, scale] (splitmix64).
pub fn random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

pub fn abs(values: &[f32]) -> Vec<f32> {
    values.iter().map(|v| v.abs()).collect()
}

/// Assert `|got - want| <= bound[i]` everywhere; report the worst element.
pub fn assert_within(what: &str, got: &[f32], want: &[f32], bound: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f32, 0.0f32);
    for i in 0..got.len() {
        let error = (got[i] - want[i]).abs();
        let limit = bound(i);
        assert!(
            error <= limit && got[i].is_finite(),
            "{what}: element {i}: got {}, want {}, error {error:e} > bound {limit:e}",
            got[i],
            want[i]
        );
        if error / limit.max(f32::MIN_POSITIVE) > worst.1 / worst.2.max(f32::MIN_POSITIVE) {
            worst = (i, error, limit);
        }
    }
    eprintln!(
        "{what}: max error {:e} (bound there {:e}) over {} values",
        worst.1,
        worst.2,
        got.len()
    );
}

/// Bound for a sum of `terms` products computed in f32 in another order:
/// |error| <= terms * eps * sum|products| (plus a hair for denormal-level values).
pub fn sum_bound(terms: usize, abs_sum: f32) -> f32 {
    2.0 * terms as f32 * f32::EPSILON * abs_sum + 1e-6
}

pub fn assert_bits_equal(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let differing = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "{what}: {differing} values differ between runs"
    );
}

/// NCHW data in NHWC order (the GPU's activation layout).
pub fn to_nhwc(data: &[f32], channels: usize, height: usize, width: usize) -> Vec<f32> {
    let plane = height * width;
    let image = channels * plane;
    let mut out = vec![0.0; data.len()];
    for (i, value) in data.iter().enumerate() {
        let (b, c, p) = (i / image, (i / plane) % channels, i % plane);
        out[(b * plane + p) * channels + c] = *value;
    }
    out
}

/// NHWC data in NCHW order (PyTorch's layout).
pub fn to_nchw(data: &[f32], channels: usize, height: usize, width: usize) -> Vec<f32> {
    let plane = height * width;
    let image = channels * plane;
    let mut out = vec![0.0; data.len()];
    for (i, value) in out.iter_mut().enumerate() {
        let (b, c, p) = (i / image, (i / plane) % channels, i % plane);
        *value = data[(b * plane + p) * channels + c];
    }
    out
}
