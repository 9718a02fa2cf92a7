//! Generates the unrolled parts of `shaders/gemm.wgsl` for one variant.
//!
//! Two things vary. The *form* follows from the operation and its layouts: whether
//! operands are vectors along k ("dot", convolution forward and input gradients in
//! NHWC) or along m and n ("outer", weight gradients). The *tiling* follows from the
//! adapter (software Vulkan rewards large register tiles and subgroup broadcasts; GPUs
//! reward other shapes), so it is data, chosen per adapter and shape.

use std::fmt::Write;

use super::{Access, sources};
use crate::shapes::Activation;

/// How a workgroup covers its tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tiling {
    /// Invocations per workgroup (the subgroup size in the subgroup variant).
    pub lanes: u32,
    /// Rows of the tile each lane owns.
    pub rows_per_lane: u32,
    /// Columns of the tile (every lane accumulates all of them).
    pub tile_cols: u32,
    /// Lanes split the column loads and share them with `subgroupBroadcast`
    /// instead of each loading all of them.
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

    /// One output per lane: tiny matrices.
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

    /// Whether this tiling can run `form` (vector widths must divide the tile).
    pub fn fits(&self, form: Form) -> bool {
        let cols_per_load = if self.subgroup { self.lanes } else { 1 };
        match form {
            Form::Dot { .. } => self.tile_cols.is_multiple_of(cols_per_load),
            Form::Outer {
                a_width, b_width, ..
            } => {
                self.rows_per_lane.is_multiple_of(a_width)
                    && self.tile_cols.is_multiple_of(cols_per_load * b_width)
            }
        }
    }
}

/// How operands are vectorised (see `shaders/gemm.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// A and B are vectors of `width` (1 or 4) along k.
    Dot { width: u32 },
    /// A is a vector of `a_width` rows, B of `b_width` columns (1 or 4 each), and
    /// `unroll` steps of k run per loop iteration.
    Outer {
        a_width: u32,
        b_width: u32,
        unroll: u32,
    },
}

impl Form {
    fn widths(self) -> (u32, u32) {
        match self {
            Form::Dot { width } => (width, width),
            Form::Outer {
                a_width, b_width, ..
            } => (a_width, b_width),
        }
    }
}

/// A fused BatchNorm-apply + activation on the values an operand reads:
/// `act(v * params[c] + params[channels + c])` (batchnorm.wgsl writes them).
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
    pub form: Form,
    pub prologue_a: Option<Prologue>,
    pub prologue_b: Option<Prologue>,
    pub epilogue: Epilogue,
}

fn vector_type(width: u32) -> &'static str {
    if width == 4 { "vec4<f32>" } else { "f32" }
}

const COMPONENTS: [&str; 4] = ["x", "y", "z", "w"];

/// Component `i` of a value of `width` floats.
fn component(value: &str, width: u32, i: u32) -> String {
    if width == 1 {
        value.to_string()
    } else {
        format!("{value}.{}", COMPONENTS[i as usize])
    }
}

/// The full shader for `spec` under `tiling`, and its bindings:
/// `src_a`, `src_b`, `dst`, then `prologue_params` and `bias` when used.
pub fn program(spec: &GemmSpec, tiling: Tiling) -> (String, Vec<(u32, Access)>) {
    assert!(
        tiling.fits(spec.form),
        "{tiling:?} cannot run {:?}",
        spec.form
    );
    let prologue = spec.prologue_a.or(spec.prologue_b);
    assert!(
        spec.prologue_a.is_none() || spec.prologue_b.is_none(),
        "one fused prologue per kernel"
    );
    let (a_width, b_width) = spec.form.widths();
    let prologue_width = if spec.prologue_a.is_some() {
        a_width
    } else {
        b_width
    };
    let mut bindings = vec![
        ("src_a", Access::Read, vector_type(a_width)),
        ("src_b", Access::Read, vector_type(b_width)),
        ("dst", Access::ReadWrite, "f32"),
    ];
    if prologue.is_some() {
        bindings.push(("prologue_params", Access::Read, vector_type(prologue_width)));
    }
    if spec.epilogue.bias {
        bindings.push(("bias", Access::Read, "f32"));
    }
    let declarations: Vec<(&str, Access, String)> = bindings
        .iter()
        .map(|(name, access, ty)| (*name, *access, format!("array<{ty}>")))
        .collect();
    let declarations: Vec<(&str, Access, &str)> = declarations
        .iter()
        .map(|(n, a, t)| (*n, *a, t.as_str()))
        .collect();
    let mut source = spec.constants.clone();
    source += &super::u32_constants(&[
        ("GEMM_M", spec.m),
        ("GEMM_N", spec.n),
        ("GEMM_K", spec.k),
        ("A_WIDTH", a_width as usize),
        ("B_WIDTH", b_width as usize),
    ]);
    source += &super::binding_declarations(&declarations);
    source += &format!(
        "alias AVec = {};\nalias BVec = {};\nconst A_ZERO = AVec(0.0);\nconst B_ZERO = BVec(0.0);\n",
        vector_type(a_width),
        vector_type(b_width)
    );
    source += &loader("load_a", "src_a", "AVec", a_width);
    source += &loader("load_b", "src_b", "BVec", b_width);
    source += sources::ACTIVATION;
    source += &prologue_function("prologue_a", "AVec", a_width, spec.prologue_a);
    source += &prologue_function("prologue_b", "BVec", b_width, spec.prologue_b);
    source += &epilogue_function(spec.epilogue);
    source += spec.family;
    source += &main_function(spec.op, spec.form, tiling);
    let bindings = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u32, b.1))
        .collect();
    (source, bindings)
}

/// `load_x(index)`: the vector starting at float `index` (a multiple of the width).
fn loader(name: &str, buffer: &str, ty: &str, width: u32) -> String {
    let index = if width == 1 { "index" } else { "index / 4u" };
    format!("fn {name}(index: u32) -> {ty} {{\n    return {buffer}[{index}];\n}}\n")
}

fn prologue_function(name: &str, ty: &str, width: u32, prologue: Option<Prologue>) -> String {
    let Some(p) = prologue else {
        return format!("fn {name}(c: u32, v: {ty}) -> {ty} {{\n    return v;\n}}\n");
    };
    // Scale and shift of channels c .. c + width.
    let (scale, shift) = if width == 1 {
        (
            "prologue_params[c]".to_string(),
            format!("prologue_params[{}u + c]", p.channels),
        )
    } else {
        (
            "prologue_params[c / 4u]".to_string(),
            format!("prologue_params[{}u + c / 4u]", p.channels / 4),
        )
    };
    let parts: Vec<String> = (0..width)
        .map(|i| {
            let x = format!(
                "{} * {} + {}",
                component("v", width, i),
                component("scale", width, i),
                component("shift", width, i)
            );
            activation_forward(p.activation, &x)
        })
        .collect();
    format!(
        "fn {name}(c: u32, v: {ty}) -> {ty} {{\n    let scale = {scale};\n    let shift = {shift};\n    return {ty}({});\n}}\n",
        parts.join(", ")
    )
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

/// Columns per load: one in the dot form (its vector runs along k), else B's width.
fn column_width(form: Form) -> u32 {
    match form {
        Form::Dot { .. } => 1,
        Form::Outer { b_width, .. } => b_width,
    }
}

/// Code for the columns a lane loads (each lane all of them, or a share to broadcast).
struct Columns {
    /// Column vectors this lane loads.
    loads: u32,
    subgroup: bool,
    lanes: u32,
    width: u32,
}

impl Columns {
    /// First column of load `q` (relative to n0).
    fn load_start(&self, q: u32) -> String {
        if self.subgroup {
            format!("({q}u * LANES + lane) * {}u", self.width)
        } else {
            format!("{}u", q * self.width)
        }
    }

    /// The expression of column `c`'s value, given the loaded vectors `loaded{q}`
    /// (`suffix` distinguishes unrolled steps); broadcasts are named `shared{q}_{l}`.
    fn value(&self, c: u32, suffix: &str) -> (String, Option<String>) {
        if self.subgroup {
            let per_round = self.lanes * self.width;
            let (q, within) = (c / per_round, c % per_round);
            let (l, j) = (within / self.width, within % self.width);
            let name = format!("shared{q}_{l}{suffix}");
            let broadcast = format!("let {name} = subgroupBroadcast(loaded{q}{suffix}, {l}u);");
            (component(&name, self.width, j), Some(broadcast))
        } else {
            let (q, j) = (c / self.width, c % self.width);
            (
                component(&format!("loaded{q}{suffix}"), self.width, j),
                None,
            )
        }
    }
}

fn main_function(op: &str, form: Form, t: Tiling) -> String {
    let (a_width, _) = form.widths();
    let columns = Columns {
        loads: t.tile_cols / (if t.subgroup { t.lanes } else { 1 } * column_width(form)),
        subgroup: t.subgroup,
        lanes: t.lanes,
        width: column_width(form),
    };
    let (row_loads, rows_per_load) = match form {
        Form::Dot { .. } => (t.rows_per_lane, 1),
        Form::Outer { a_width, .. } => (t.rows_per_lane / a_width, a_width),
    };
    // Row of load r, component i: lanes interleave (neighbouring lanes read
    // neighbouring rows, or row groups in the outer form).
    let row = |r: u32, i: u32| format!("m0 + ({r}u * LANES + lane) * {rows_per_load}u + {i}u");
    let mut setup = String::new();
    for r in 0..row_loads {
        writeln!(setup, "    let row{r} = {op}_a_row(g, {});", row(r, 0)).unwrap();
    }
    for q in 0..columns.loads {
        writeln!(
            setup,
            "    let col{q} = {op}_b_col(g, n0 + {});",
            columns.load_start(q)
        )
        .unwrap();
    }
    let accumulators: Vec<(u32, u32, u32)> = (0..row_loads)
        .flat_map(|r| (0..rows_per_load).map(move |i| (r, i)))
        .flat_map(|(r, i)| (0..t.tile_cols).map(move |c| (r, i, c)))
        .collect();
    for &(r, i, c) in &accumulators {
        writeln!(setup, "    var acc{r}_{i}_{c} = 0.0;").unwrap();
    }
    let steps = match form {
        Form::Dot { .. } => 1,
        Form::Outer { unroll, .. } => unroll,
    };
    let mut inner = String::new();
    let mut column_values: Vec<Vec<String>> = Vec::new();
    for u in 0..steps {
        let suffix = if steps == 1 {
            String::new()
        } else {
            format!("_{u}")
        };
        for r in 0..row_loads {
            writeln!(
                inner,
                "        let a{r}{suffix} = {op}_a_at(row{r}, k + {u}u);"
            )
            .unwrap();
        }
        for q in 0..columns.loads {
            writeln!(
                inner,
                "        let loaded{q}{suffix} = {op}_b_at(col{q}, k + {u}u);"
            )
            .unwrap();
        }
        let mut values = Vec::new();
        let mut broadcasts: Vec<String> = Vec::new();
        for c in 0..t.tile_cols {
            let (value, broadcast) = columns.value(c, &suffix);
            if let Some(b) = broadcast
                && !broadcasts.contains(&b)
            {
                broadcasts.push(b);
            }
            values.push(value);
        }
        for b in broadcasts {
            writeln!(inner, "        {b}").unwrap();
        }
        column_values.push(values);
    }
    for &(r, i, c) in &accumulators {
        let acc = format!("acc{r}_{i}_{c}");
        let mut expression = acc.clone();
        match form {
            Form::Dot { width } => {
                for j in 0..width {
                    let a = component(&format!("a{r}"), width, j);
                    let b = component(&column_values[0][c as usize], 1, 0);
                    let b = if width == 1 {
                        b
                    } else {
                        format!("{b}.{}", COMPONENTS[j as usize])
                    };
                    expression = format!("fma({a}, {b}, {expression})");
                }
            }
            Form::Outer { .. } => {
                for (u, values) in column_values.iter().enumerate() {
                    let suffix = if steps == 1 {
                        String::new()
                    } else {
                        format!("_{u}")
                    };
                    let a = component(&format!("a{r}{suffix}"), a_width, i);
                    expression = format!("fma({a}, {}, {expression})", values[c as usize]);
                }
            }
        }
        writeln!(inner, "        {acc} = {expression};").unwrap();
    }
    let mut stores = String::new();
    for &(r, i, c) in &accumulators {
        writeln!(
            stores,
            "    {op}_store(g, {}, n0 + {c}u, acc{r}_{i}_{c});",
            row(r, i)
        )
        .unwrap();
    }
    let lane = if t.subgroup {
        "@builtin(subgroup_invocation_id) lane: u32"
    } else {
        "@builtin(local_invocation_index) lane: u32"
    };
    let k_step = match form {
        Form::Dot { width } => width,
        Form::Outer { unroll, .. } => unroll,
    };
    super::fill(
        sources::GEMM,
        &[
            ("LANES", t.lanes.to_string()),
            ("TILE_ROWS", t.tile_rows().to_string()),
            ("TILE_COLS", t.tile_cols.to_string()),
            ("K_STEP", k_step.to_string()),
            ("LANE_BUILTIN", lane.to_string()),
            ("SETUP", setup),
            ("INNER", inner),
            ("STORES", stores),
        ],
    )
}
