//! Generates the unrolled parts of `shaders/gemm.wgsl` for one tiling variant.
//!
//! Variants differ in how a workgroup's tile is covered; which one is fastest
//! depends on the adapter (software Vulkan rewards large register tiles and
//! subgroup broadcasts; GPUs reward other shapes), so they are data, not code.

use std::fmt::Write;

use super::{Access, sources};
use crate::shapes::Activation;

/// How a workgroup covers its `lanes * rows_per_lane` x `tile_cols` tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tiling {
    /// Invocations per workgroup (the subgroup size in the subgroup variant).
    pub lanes: u32,
    /// Rows of the tile each lane owns.
    pub rows_per_lane: u32,
    /// Columns of the tile (every lane accumulates all of them).
    pub tile_cols: u32,
    /// Lanes load `tile_cols / lanes` column values each and share them with
    /// `subgroupBroadcast` instead of each loading all `tile_cols`.
    pub subgroup: bool,
}

impl Tiling {
    /// Plain register tiles: works on every adapter.
    pub const PORTABLE: Tiling = Tiling {
        lanes: 64,
        rows_per_lane: 4,
        tile_cols: 4,
        subgroup: false,
    };

    /// Small tiles for tiny matrices (a single output column, a few rows).
    pub const NARROW: Tiling = Tiling {
        lanes: 64,
        rows_per_lane: 1,
        tile_cols: 1,
        subgroup: false,
    };

    pub fn tile_rows(&self) -> u32 {
        self.lanes * self.rows_per_lane
    }

    /// Workgroup grid for an `m` x `n` product repeated over `groups`.
    pub fn workgroups(&self, m: usize, n: usize, groups: usize) -> [u32; 3] {
        let blocks = m.div_ceil(self.tile_rows() as usize) * n.div_ceil(self.tile_cols as usize);
        super::grid(blocks as u32, groups as u32)
    }

    pub fn name(&self) -> String {
        let kind = if self.subgroup { "sg" } else { "rt" };
        format!(
            "{kind}{}x{}x{}",
            self.lanes, self.rows_per_lane, self.tile_cols
        )
    }
}

/// A fused BatchNorm-apply + activation on the values an operand reads:
/// `act(v * params[c] + params[channels + c])` (see batchnorm.wgsl, which writes them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prologue {
    pub channels: usize,
    pub activation: Activation,
}

/// What happens to a result before it is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epilogue {
    /// Add `bias[n]` (binding `bias`).
    pub bias: bool,
    pub activation: Activation,
    /// Add to what `dst` holds (gradients summed over several passes).
    pub accumulate: bool,
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue {
            bias: false,
            activation: Activation::Identity,
            accumulate: false,
        }
    }
}

/// A WGSL call of `activation`'s forward on the expression `x`.
pub fn activation_forward(activation: Activation, x: &str) -> String {
    match activation {
        Activation::Identity => format!("identity_forward({x})"),
        Activation::Relu => format!("relu_forward({x})"),
        Activation::LeakyRelu(slope) => {
            format!("leaky_relu_forward({x}, {})", super::f32_literal(slope))
        }
        Activation::Tanh => format!("tanh_forward({x})"),
        Activation::Sigmoid => format!("sigmoid_forward({x})"),
    }
}

/// A WGSL call of `activation`'s backward at input `x` with incoming gradient `dy`.
pub fn activation_backward(activation: Activation, x: &str, dy: &str) -> String {
    match activation {
        Activation::Identity => format!("identity_backward({x}, {dy})"),
        Activation::Relu => format!("relu_backward({x}, {dy})"),
        Activation::LeakyRelu(slope) => format!(
            "leaky_relu_backward({x}, {}, {dy})",
            super::f32_literal(slope)
        ),
        Activation::Tanh => format!("tanh_backward({x}, {dy})"),
        Activation::Sigmoid => format!("sigmoid_backward({x}, {dy})"),
    }
}

/// The operand functions a family file provides, and the fusions around them.
pub struct GemmSpec<'a> {
    /// Prefix of the family file's functions (`to_coarse`, `forward`, ...).
    pub op: &'a str,
    /// The family file (conv.wgsl, linear.wgsl) and its generated constants.
    pub family: &'a str,
    pub constants: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub groups: usize,
    pub prologue_a: Option<Prologue>,
    pub prologue_b: Option<Prologue>,
    pub epilogue: Epilogue,
}

/// The full shader for `spec` under `tiling`, and its bindings:
/// `src_a`, `src_b`, `dst`, then `prologue_params` and `bias` when used.
pub fn program(spec: &GemmSpec, tiling: Tiling) -> (String, Vec<(u32, Access)>) {
    let prologue = spec.prologue_a.or(spec.prologue_b);
    assert!(
        spec.prologue_a.is_none() || spec.prologue_b.is_none(),
        "one fused prologue per kernel"
    );
    let mut bindings = vec![
        ("src_a", Access::Read, "array<f32>"),
        ("src_b", Access::Read, "array<f32>"),
        ("dst", Access::ReadWrite, "array<f32>"),
    ];
    if prologue.is_some() {
        bindings.push(("prologue_params", Access::Read, "array<f32>"));
    }
    if spec.epilogue.bias {
        bindings.push(("bias", Access::Read, "array<f32>"));
    }
    let mut source = spec.constants.clone();
    source += &super::u32_constants(&[("GEMM_M", spec.m), ("GEMM_N", spec.n), ("GEMM_K", spec.k)]);
    source += &super::binding_declarations(&bindings);
    source += sources::ACTIVATION;
    source += &prologue_function("prologue_a", spec.prologue_a);
    source += &prologue_function("prologue_b", spec.prologue_b);
    source += &epilogue_function(spec.epilogue);
    source += spec.family;
    source += &main_function(spec.op, tiling);
    let bindings = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u32, b.1))
        .collect();
    (source, bindings)
}

fn prologue_function(name: &str, prologue: Option<Prologue>) -> String {
    let body = match prologue {
        None => "v".to_string(),
        Some(p) => activation_forward(
            p.activation,
            &format!(
                "v * prologue_params[c] + prologue_params[{}u + c]",
                p.channels
            ),
        ),
    };
    format!("fn {name}(c: u32, v: f32) -> f32 {{\n    return {body};\n}}\n")
}

fn epilogue_function(epilogue: Epilogue) -> String {
    let mut value = "value".to_string();
    if epilogue.bias {
        value = format!("{value} + bias[n]");
    }
    value = activation_forward(epilogue.activation, &value);
    if epilogue.accumulate {
        value = format!("dst[index] + {value}");
    }
    format!("fn epilogue(n: u32, index: u32, value: f32) -> f32 {{\n    return {value};\n}}\n")
}

fn main_function(op: &str, t: Tiling) -> String {
    assert!(
        !t.subgroup || t.tile_cols.is_multiple_of(t.lanes),
        "subgroup tiles need a multiple of the subgroup size in columns"
    );
    let rows = t.rows_per_lane;
    let cols = t.tile_cols;
    let col_loads = if t.subgroup { cols / t.lanes } else { cols };
    let mut setup = String::new();
    for r in 0..rows {
        writeln!(setup, "    let row{r} = {op}_a_row(g, m0 + {r}u * LANES);").unwrap();
    }
    for q in 0..col_loads {
        let n = if t.subgroup {
            format!("n0 + {q}u * LANES + lane")
        } else {
            format!("n0 + {q}u")
        };
        writeln!(setup, "    let col{q} = {op}_b_col(g, {n});").unwrap();
    }
    for r in 0..rows {
        for c in 0..cols {
            writeln!(setup, "    var acc{r}_{c} = 0.0;").unwrap();
        }
    }
    let mut inner = String::new();
    for r in 0..rows {
        writeln!(inner, "        let a{r} = {op}_a_at(row{r}, k);").unwrap();
    }
    for q in 0..col_loads {
        writeln!(inner, "        let loaded{q} = {op}_b_at(col{q}, k);").unwrap();
    }
    for c in 0..cols {
        let value = if t.subgroup {
            format!("subgroupBroadcast(loaded{}, {}u)", c / t.lanes, c % t.lanes)
        } else {
            format!("loaded{c}")
        };
        writeln!(inner, "        let b{c} = {value};").unwrap();
    }
    for r in 0..rows {
        for c in 0..cols {
            writeln!(inner, "        acc{r}_{c} = fma(a{r}, b{c}, acc{r}_{c});").unwrap();
        }
    }
    let mut stores = String::new();
    for r in 0..rows {
        for c in 0..cols {
            writeln!(
                stores,
                "    {op}_store(g, m0 + {r}u * LANES, n0 + {c}u, acc{r}_{c});"
            )
            .unwrap();
        }
    }
    let lane = if t.subgroup {
        "@builtin(subgroup_invocation_id) lane: u32"
    } else {
        "@builtin(local_invocation_index) lane: u32"
    };
    super::fill(
        sources::GEMM,
        &[
            ("LANES", t.lanes.to_string()),
            ("TILE_ROWS", t.tile_rows().to_string()),
            ("TILE_COLS", t.tile_cols.to_string()),
            ("LANE_BUILTIN", lane.to_string()),
            ("SETUP", setup),
            ("INNER", inner),
            ("STORES", stores),
        ],
    )
}
