//! GPU kernels: WGSL sources from `shaders/`, specialised with generated constants and
//! glue code, compiled once per distinct source, and dispatched with explicit bind groups.
//!
//! Every shape is baked into the shader as a constant, so the driver's compiler turns
//! index arithmetic into shifts and multiplies and can unroll; a training step uses a
//! few dozen distinct kernels, each compiled once.

pub mod activation;
pub mod adamw;
pub mod batchnorm;
pub mod bias;
pub mod catalog;
pub mod conv;
pub mod data;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod noise;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};

use crate::device::Gpu;

/// The WGSL files, one per operation family.
pub mod sources {
    pub const ACTIVATION: &str = include_str!("../../shaders/activation.wgsl");
    pub const ADAMW: &str = include_str!("../../shaders/adamw.wgsl");
    pub const BATCHNORM: &str = include_str!("../../shaders/batchnorm.wgsl");
    pub const BIAS: &str = include_str!("../../shaders/bias.wgsl");
    pub const CONV: &str = include_str!("../../shaders/conv.wgsl");
    pub const CONV_PACK: &str = include_str!("../../shaders/conv_pack.wgsl");
    pub const DATA: &str = include_str!("../../shaders/data.wgsl");
    pub const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
    pub const GEMM: &str = include_str!("../../shaders/gemm.wgsl");
    pub const LINEAR: &str = include_str!("../../shaders/linear.wgsl");
    pub const LOSS: &str = include_str!("../../shaders/loss.wgsl");
    pub const NOISE: &str = include_str!("../../shaders/noise.wgsl");
    pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
    pub const STEP: &str = include_str!("../../shaders/step.wgsl");

    /// Every file with its name, for validation and listings.
    pub const ALL: [(&str, &str); 14] = [
        ("activation.wgsl", ACTIVATION),
        ("adamw.wgsl", ADAMW),
        ("batchnorm.wgsl", BATCHNORM),
        ("bias.wgsl", BIAS),
        ("conv.wgsl", CONV),
        ("conv_pack.wgsl", CONV_PACK),
        ("data.wgsl", DATA),
        ("elementwise.wgsl", ELEMENTWISE),
        ("gemm.wgsl", GEMM),
        ("linear.wgsl", LINEAR),
        ("loss.wgsl", LOSS),
        ("noise.wgsl", NOISE),
        ("reduce.wgsl", REDUCE),
        ("step.wgsl", STEP),
    ];
}

/// How a kernel uses one of its bindings (binding `i` is the `i`-th entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
    Uniform,
}

/// A complete shader, the entry point to run, and the bindings that entry point
/// uses: `(binding number, access)` pairs of group 0.
#[derive(Clone, Debug)]
pub struct Program {
    pub label: String,
    pub source: String,
    pub entry: &'static str,
    pub bindings: Vec<(u32, Access)>,
}

/// A program, the grid it runs on, and what each binding holds (`roles[i]` names
/// binding `i`, e.g. "x", "w", "y"), so callers bind tensors by meaning, not position.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: Program,
    pub workgroups: [u32; 3],
    pub roles: Vec<&'static str>,
}

impl Launch {
    pub fn label(&self) -> &str {
        &self.program.label
    }
}

/// A range of `f32`/`u32` elements in a buffer, bound to one kernel binding.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub len: u64,
}

impl<'a> View<'a> {
    pub fn whole(buffer: &'a wgpu::Buffer) -> View<'a> {
        View {
            buffer,
            offset: 0,
            len: buffer.size() / 4,
        }
    }
}

/// Most workgroups wgpu allows in one dimension of a dispatch.
pub const MAX_GROUPS_PER_DIM: u32 = 65535;

/// Spread `groups` workgroups over x and y; kernels rebuild the linear index as
/// `id.x + id.y * num_workgroups.x` and skip the excess.
pub fn grid(groups: u32, z: u32) -> [u32; 3] {
    let groups = groups.max(1);
    let x = groups.min(MAX_GROUPS_PER_DIM);
    [x, groups.div_ceil(x), z]
}

/// `const NAME: u32 = value;` lines.
pub fn u32_constants(list: &[(&str, usize)]) -> String {
    list.iter()
        .map(|(name, value)| {
            let value = u32::try_from(*value).expect("shape too large for u32 indexing");
            format!("const {name}: u32 = {value}u;\n")
        })
        .collect()
}

/// A WGSL `f32` literal that round-trips exactly.
pub fn f32_literal(x: f32) -> String {
    format!("{x:?}f")
}

/// Declarations of storage bindings `@group(0) @binding(i)` in order.
pub fn binding_declarations(bindings: &[(&str, Access, &str)]) -> String {
    bindings
        .iter()
        .enumerate()
        .map(|(i, (name, access, ty))| {
            let space = match access {
                Access::Read => "storage, read",
                Access::ReadWrite => "storage, read_write",
                Access::Uniform => "uniform",
            };
            format!("@group(0) @binding({i}) var<{space}> {name}: {ty};\n")
        })
        .collect()
}

/// `const NAME: bool = value;` / `const NAME: f32 = value;` lines.
pub fn bool_constant(name: &str, value: bool) -> String {
    format!("const {name}: bool = {value};\n")
}

pub fn f32_constant(name: &str, value: f32) -> String {
    format!("const {name}: f32 = {};\n", f32_literal(value))
}

/// A program for an entry point of a family file that declares its own bindings:
/// generated constants and glue first, then the libraries and the family file.
pub fn family_program(
    label: String,
    entry: &'static str,
    generated: String,
    files: &[&str],
    bindings: Vec<(u32, Access)>,
) -> Program {
    let mut source = generated;
    for file in files {
        source += file;
    }
    Program {
        label,
        source,
        entry,
        bindings,
    }
}

/// Workgroups for one invocation per element with `lanes`-wide workgroups.
pub fn element_grid(count: usize, lanes: usize) -> [u32; 3] {
    grid(count.div_ceil(lanes) as u32, 1)
}

/// Lanes of the per-channel reductions (a power of two).
pub const REDUCE_LANES: usize = 64;

/// Replace every `{{NAME}}` in `template`; a placeholder left unfilled is a bug.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    assert!(
        !out.contains("{{"),
        "unfilled placeholder in template: {}",
        out.lines().find(|l| l.contains("{{")).unwrap_or_default()
    );
    out
}

/// Parse and validate WGSL with naga; the error carries naga's report with source lines.
pub fn validate(label: &str, source: &str) -> Result<naga::Module> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| anyhow!("{label}: WGSL parse error:\n{}", e.emit_to_string(source)))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| {
        anyhow!(
            "{label}: WGSL validation error:\n{}",
            e.emit_to_string(source)
        )
    })?;
    Ok(module)
}

/// A compiled pipeline with the bind group layout it was built for.
pub struct Compiled {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// One recorded kernel invocation: what `Executor` replays every step.
pub struct Dispatch {
    pub label: String,
    pub compiled: Arc<Compiled>,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.compiled.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Compiles each distinct program once and binds buffers to launches.
#[derive(Default)]
pub struct Kernels {
    pipelines: HashMap<String, Arc<Compiled>>,
}

impl Kernels {
    pub fn new() -> Kernels {
        Kernels::default()
    }

    /// Number of distinct pipelines compiled so far.
    pub fn len(&self) -> usize {
        self.pipelines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// Run one launch on its own submission and wait (tests, one-off work).
    pub fn run(&mut self, gpu: &Gpu, launch: &Launch, given: &[(&str, View)]) -> Result<()> {
        let dispatch = self.bind(gpu, launch, given)?;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            dispatch.record(&mut pass);
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.wait()
    }

    pub fn compile(&mut self, gpu: &Gpu, program: &Program) -> Result<Arc<Compiled>> {
        let key = format!("{}\n{}", program.entry, program.source);
        if let Some(compiled) = self.pipelines.get(&key) {
            return Ok(compiled.clone());
        }
        validate(&program.label, &program.source)?;
        let device = &gpu.device;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = program
            .bindings
            .iter()
            .map(|&(binding, access)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match access {
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&program.label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&program.label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&program.label),
            source: wgpu::ShaderSource::Wgsl(program.source.as_str().into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&program.label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(program.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let compiled = Arc::new(Compiled { pipeline, layout });
        self.pipelines.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// Compile `launch` (if new) and bind each role to the view given for it.
    pub fn bind(&mut self, gpu: &Gpu, launch: &Launch, given: &[(&str, View)]) -> Result<Dispatch> {
        let program = &launch.program;
        debug_assert_eq!(launch.roles.len(), program.bindings.len());
        let views = launch
            .roles
            .iter()
            .map(|role| {
                given
                    .iter()
                    .find(|(name, _)| name == role)
                    .map(|(_, view)| *view)
                    .ok_or_else(|| anyhow!("{}: no buffer given for `{role}`", program.label))
            })
            .collect::<Result<Vec<View>>>()?;
        if let Some((unused, _)) = given.iter().find(|(name, _)| !launch.roles.contains(name)) {
            anyhow::bail!("{}: has no binding `{unused}`", program.label);
        }
        let compiled = self
            .compile(gpu, program)
            .with_context(|| format!("compiling {}", program.label))?;
        let entries: Vec<wgpu::BindGroupEntry> = views
            .iter()
            .zip(&program.bindings)
            .map(|(view, &(binding, _))| wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: view.buffer,
                    offset: view.offset * 4,
                    size: NonZeroU64::new(view.len * 4),
                }),
            })
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&program.label),
            layout: &compiled.layout,
            entries: &entries,
        });
        Ok(Dispatch {
            label: program.label.clone(),
            compiled,
            bind_group,
            workgroups: launch.workgroups,
        })
    }
}
