//! Choosing a tiling per matrix product and adapter.
//!
//! Software Vulkan (lavapipe) rewards large per-lane register tiles with subgroup
//! broadcasts; GPUs reward small per-lane tiles and many lanes. A default per adapter
//! type is used until autotuning has timed the candidates of a product on this
//! adapter; the winner is cached on disk (keyed by adapter, generator version and the
//! product), so each is timed once per machine. Every candidate comes from the same
//! generator, whose variants the kernel tests hold to the CPU reference.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::checkpoint::write_atomically;
use crate::device::Gpu;
use crate::kernels::gemm::Tiling;
use crate::kernels::matmul::MatMul;
use crate::kernels::{Dispatch, Launch};
use crate::timing;

/// Bump when generated kernels change, so cached choices are timed again.
const GENERATOR_VERSION: u32 = 1;

fn is_cpu(gpu: &Gpu) -> bool {
    gpu.info.device_type == wgpu::DeviceType::Cpu
}

/// The tilings worth timing for `matmul` on this adapter (all fit its form).
pub fn candidates(gpu: &Gpu, matmul: &MatMul) -> Vec<Tiling> {
    let form = matmul.form();
    let (_, n, _) = matmul.dims();
    let mut all = Vec::new();
    match gpu.subgroup_size {
        Some(lanes) if is_cpu(gpu) => {
            for (rows, cols) in [(8, 4), (8, 8), (4, 8), (4, 16)] {
                all.push(Tiling {
                    lanes,
                    rows_per_lane: rows,
                    tile_cols: cols * lanes,
                    subgroup: true,
                });
            }
        }
        _ => {
            for (lanes, rows, cols) in [(64, 4, 4), (64, 4, 8), (64, 8, 8), (128, 4, 4), (64, 2, 4)]
            {
                all.push(Tiling {
                    lanes,
                    rows_per_lane: rows,
                    tile_cols: cols,
                    subgroup: false,
                });
            }
        }
    }
    // Narrow products: tiles no wider than the columns (rounded up to a vector).
    all.retain(|t| t.tile_cols as usize <= n.next_multiple_of(4).max(4));
    all.push(Tiling::PORTABLE);
    all.push(Tiling {
        tile_cols: 1,
        ..Tiling::PORTABLE
    });
    all.dedup();
    all.retain(|t| t.fits(form));
    all
}

/// The tiling used without timing: the first candidate the columns fill.
pub fn default_tiling(gpu: &Gpu, matmul: &MatMul) -> Tiling {
    let (_, n, _) = matmul.dims();
    let all = candidates(gpu, matmul);
    let preferred = if is_cpu(gpu) {
        // The widest tile up to 64 columns: large enough to amortise loads (the
        // usual winner of the timing on lavapipe); wider ones compile for tens of
        // seconds.
        all.iter()
            .filter(|t| {
                t.tile_rows() == 8 * t.lanes
                    && t.tile_cols as usize <= 64.min(n.next_multiple_of(4))
            })
            .max_by_key(|t| t.tile_cols)
    } else {
        all.iter()
            .find(|t| t.tile_cols <= 4 && t.lanes == 64 && t.rows_per_lane == 4)
    };
    preferred.or(all.first()).copied().unwrap_or(Tiling::NARROW)
}

fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("DCGAN_WGPU_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("dcgan-wgpu")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/dcgan-wgpu")))?;
    Some(base.join("tilings.json"))
}

fn tiling_json(t: Tiling) -> Value {
    json!({"lanes": t.lanes, "rows_per_lane": t.rows_per_lane, "tile_cols": t.tile_cols, "subgroup": t.subgroup})
}

fn tiling_from(v: &Value) -> Option<Tiling> {
    Some(Tiling {
        lanes: v["lanes"].as_u64()? as u32,
        rows_per_lane: v["rows_per_lane"].as_u64()? as u32,
        tile_cols: v["tile_cols"].as_u64()? as u32,
        subgroup: v["subgroup"].as_bool()?,
    })
}

/// Chosen tilings, read from and written to the on-disk cache.
pub struct Autotuner {
    adapter: String,
    entries: BTreeMap<String, Value>,
    dirty: bool,
}

impl Autotuner {
    pub fn load(gpu: &Gpu) -> Autotuner {
        let entries = cache_path()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice::<BTreeMap<String, Value>>(&bytes).ok())
            .unwrap_or_default();
        Autotuner {
            adapter: format!(
                "{} | {:?} | {}",
                gpu.info.name, gpu.info.backend, gpu.info.driver_info
            ),
            entries,
            dirty: false,
        }
    }

    fn key(&self, matmul: &MatMul) -> String {
        format!("v{GENERATOR_VERSION} | {} | {}", self.adapter, matmul.key())
    }

    /// The cached choice for `matmul` on this adapter, if timed before.
    /// A choice that is not among today's candidates (an edited or stale cache)
    /// is ignored.
    pub fn cached(&self, gpu: &Gpu, matmul: &MatMul) -> Option<Tiling> {
        self.entries
            .get(&self.key(matmul))
            .and_then(|v| tiling_from(&v["tiling"]))
            .filter(|t| candidates(gpu, matmul).contains(t))
    }

    /// Time every candidate of `matmul` (bound by `bind`) and remember the fastest.
    pub fn tune(
        &mut self,
        gpu: &Gpu,
        matmul: &MatMul,
        mut bind: impl FnMut(&Launch) -> Result<Dispatch>,
    ) -> Result<(Tiling, f64)> {
        let mut best: Option<(Tiling, f64)> = None;
        for tiling in candidates(gpu, matmul) {
            let dispatch = bind(&matmul.launch(tiling))?;
            let seconds = time(gpu, &dispatch)?;
            if best.is_none_or(|(_, s)| seconds < s) {
                best = Some((tiling, seconds));
            }
        }
        let (tiling, seconds) = best.context("no tiling fits this product")?;
        self.entries.insert(
            self.key(matmul),
            json!({"tiling": tiling_json(tiling), "ms": seconds * 1e3}),
        );
        self.dirty = true;
        Ok((tiling, seconds))
    }

    /// Write the cache (atomically) if anything was added.
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let Some(path) = cache_path() else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
        }
        write_atomically(
            &path,
            serde_json::to_string_pretty(&self.entries)?.as_bytes(),
        )?;
        self.dirty = false;
        Ok(())
    }
}

/// Best of three runs after a warm-up run (which also compiles the shader), on the
/// wall clock: what a training step pays, submission overhead included.
fn time(gpu: &Gpu, dispatch: &Dispatch) -> Result<f64> {
    let seconds = timing::wall_seconds(gpu, &[dispatch; 4])?;
    Ok(seconds[1..].iter().copied().fold(f64::INFINITY, f64::min))
}
