//! Adapter discovery and device setup.
//!
//! Every backend wgpu was built with is enumerated; the user picks an adapter by
//! index, by a substring of its name or by backend (`--adapter`), or through
//! `WGPU_ADAPTER_NAME` / `WGPU_BACKEND`. Without a choice the most capable one
//! wins (discrete > integrated > virtual > CPU, native APIs before GL).

use anyhow::{Context, Result, bail};

/// The device and queue every kernel runs on, plus what we learned of the adapter.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The subgroup size when subgroup operations are available and the size is
    /// fixed (kernels broadcast across lanes by constant lane index).
    pub subgroup_size: Option<u32>,
    /// Timestamp queries between passes were requested (for profiling).
    pub timestamps: bool,
    pub limits: wgpu::Limits,
}

/// How the user named an adapter on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterChoice {
    Index(usize),
    Backend(wgpu::Backend),
    Name(String),
}

impl AdapterChoice {
    pub fn parse(text: &str) -> AdapterChoice {
        if let Ok(index) = text.parse() {
            return AdapterChoice::Index(index);
        }
        match text.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => AdapterChoice::Backend(wgpu::Backend::Vulkan),
            "metal" | "mtl" => AdapterChoice::Backend(wgpu::Backend::Metal),
            "dx12" | "d3d12" => AdapterChoice::Backend(wgpu::Backend::Dx12),
            "gl" | "gles" | "opengl" => AdapterChoice::Backend(wgpu::Backend::Gl),
            _ => AdapterChoice::Name(text.to_string()),
        }
    }

    fn matches(&self, index: usize, info: &wgpu::AdapterInfo) -> bool {
        match self {
            AdapterChoice::Index(i) => *i == index,
            AdapterChoice::Backend(b) => info.backend == *b,
            AdapterChoice::Name(name) => info
                .name
                .to_ascii_lowercase()
                .contains(&name.to_ascii_lowercase()),
        }
    }
}

const NO_ADAPTER_HELP: &str = "install a GPU driver with Vulkan, Metal or DX12 support, or Mesa's \
     CPU Vulkan driver lavapipe (Debian/Ubuntu: apt-get install mesa-vulkan-drivers)";

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::all().with_env();
    wgpu::Instance::new(desc)
}

/// All adapters wgpu can see, in a stable order (the index `--adapter N` refers to).
pub fn adapters() -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all().with_env()))
}

fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let api = u8::from(info.backend == wgpu::Backend::Gl);
    (kind, api)
}

/// Pick an adapter: explicit choice, then `WGPU_ADAPTER_NAME`, then the most capable.
pub fn select_adapter(choice: Option<&AdapterChoice>) -> Result<wgpu::Adapter> {
    let all = adapters();
    if all.is_empty() {
        bail!("no GPU adapter found: {NO_ADAPTER_HELP}");
    }
    let from_env = std::env::var("WGPU_ADAPTER_NAME")
        .ok()
        .map(AdapterChoice::Name);
    let choice = choice.or(from_env.as_ref());
    let names = || {
        all.iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {}", describe(&a.get_info())))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match choice {
        Some(choice) => all
            .iter()
            .enumerate()
            .filter(|(i, a)| choice.matches(*i, &a.get_info()))
            .min_by_key(|(_, a)| preference(&a.get_info()))
            .map(|(_, a)| a.clone())
            .with_context(|| {
                format!(
                    "no adapter matches {choice:?}; available: {} (see `dcgan-wgpu adapters`)",
                    names()
                )
            }),
        None => Ok(all
            .iter()
            .min_by_key(|a| preference(&a.get_info()))
            .expect("not empty")
            .clone()),
    }
}

/// One line naming an adapter: name, backend, type and driver.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    let driver = if info.driver_info.is_empty() {
        info.driver.clone()
    } else {
        format!("{} {}", info.driver, info.driver_info)
    };
    format!(
        "{} ({:?}, {:?}, {})",
        info.name, info.backend, info.device_type, driver
    )
}

/// The limits our kernels need: WebGPU's defaults, with buffer sizes raised as
/// far as the adapter allows (large batches need large activations).
fn required_limits(adapter: &wgpu::Limits) -> wgpu::Limits {
    const WANTED_BINDING: u64 = 1 << 30;
    let defaults = wgpu::Limits::default();
    wgpu::Limits {
        max_storage_buffer_binding_size: adapter
            .max_storage_buffer_binding_size
            .min(WANTED_BINDING),
        max_buffer_size: adapter.max_buffer_size.min(WANTED_BINDING),
        max_storage_buffers_per_shader_stage: defaults
            .max_storage_buffers_per_shader_stage
            .min(adapter.max_storage_buffers_per_shader_stage),
        ..defaults
    }
}

impl Gpu {
    /// Open the chosen adapter (see [`select_adapter`]).
    pub fn open(choice: Option<&AdapterChoice>) -> Result<Gpu> {
        Gpu::from_adapter(select_adapter(choice)?)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let offered = adapter.features();
        let wanted = wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = offered & wanted;
        let limits = required_limits(&adapter.limits());
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("dcgan-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .with_context(|| format!("could not open the GPU device {}", describe(&info)))?;
        Ok(Gpu {
            device,
            queue,
            subgroup_size: (features.contains(wgpu::Features::SUBGROUP)
                && info.subgroup_min_size == info.subgroup_max_size)
                .then_some(info.subgroup_min_size),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            info,
            limits,
        })
    }

    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Wait for all submitted work; a lost device becomes a clear error.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .context("the GPU device stopped responding (device lost or driver reset); rerun, or pick another adapter with --adapter")
    }
}
