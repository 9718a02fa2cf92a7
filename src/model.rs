//! Models as data: a network is a list of layers, exactly as the seed's
//! `nn.Sequential`, so that layer `i` owns PyTorch's `state_dict` keys `layers.{i}.*`.
//! From the list come the parameter layout (flat buffers for AdamW), the
//! initialisation (the seed's `weights_init`), and the executor's schedule.

use rand::{Rng, RngExt};

use crate::shapes::{Activation, BatchNormShape, ConvShape, LinearShape};

/// One layer of an `nn.Sequential`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    Conv {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        transposed: bool,
        bias: bool,
    },
    BatchNorm {
        channels: usize,
    },
    Activation(Activation),
    Flatten,
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
}

/// Shape of an activation between layers: `[batch, channels, height, width]`
/// (Flatten and Linear outputs have height = width = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Extent {
    pub fn per_image(&self) -> usize {
        self.channels * self.height * self.width
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// "generator" or "discriminator".
    pub name: &'static str,
    pub input: Extent,
    pub layers: Vec<Layer>,
}

/// What a tensor of a network's `state_dict` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Trained by AdamW; lives in the flat parameter buffer.
    Parameter,
    /// BatchNorm running statistics; lives in the flat buffer of running statistics.
    Running,
}

/// One `state_dict` tensor and where it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    /// Offset in floats into the buffer of its kind.
    pub offset: usize,
}

impl TensorSlot {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Offsets of tensors in flat buffers are multiples of this many floats, so that
/// every tensor can be bound on its own (wgpu requires 256-byte aligned offsets).
pub const ALIGN: usize = 64;

fn align(offset: usize) -> usize {
    offset.div_ceil(ALIGN) * ALIGN
}

/// The flat layout of a network's parameters and running statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub tensors: Vec<TensorSlot>,
    /// Floats in the parameter buffer (and in the gradient and moment buffers).
    pub parameters: usize,
    /// Floats in the running-statistics buffer.
    pub running: usize,
    /// BatchNorm layers, whose `num_batches_tracked` counters are kept on the CPU.
    pub batchnorm_layers: Vec<usize>,
}

impl Layout {
    pub fn find(&self, name: &str) -> Option<&TensorSlot> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn slot(&self, layer: usize, suffix: &str) -> &TensorSlot {
        self.find(&format!("layers.{layer}.{suffix}"))
            .unwrap_or_else(|| panic!("layer {layer} has no {suffix}"))
    }

    /// Offset of layer `layer`'s weight; BatchNorm's bias follows its weight directly
    /// so that `[gamma | beta]` binds as one range.
    pub fn weight(&self, layer: usize) -> &TensorSlot {
        self.slot(layer, "weight")
    }

    pub fn bias(&self, layer: usize) -> &TensorSlot {
        self.slot(layer, "bias")
    }

    /// `[running_mean | running_var]` of a BatchNorm layer start here.
    pub fn running(&self, layer: usize) -> &TensorSlot {
        self.slot(layer, "running_mean")
    }

    /// Append a tensor to the buffer of its kind (at an aligned offset if `aligned`).
    fn push(&mut self, name: String, shape: Vec<usize>, kind: TensorKind, aligned: bool) {
        let end = match kind {
            TensorKind::Parameter => &mut self.parameters,
            TensorKind::Running => &mut self.running,
        };
        if aligned {
            *end = align(*end);
        }
        let slot = TensorSlot {
            name,
            shape,
            kind,
            offset: *end,
        };
        *end += slot.len();
        self.tensors.push(slot);
    }

    /// Number of trainable values (without alignment padding).
    pub fn trainable_values(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| t.kind == TensorKind::Parameter)
            .map(|t| t.len())
            .sum()
    }
}

impl Network {
    /// Output extent of every layer, in order.
    pub fn extents(&self) -> Vec<Extent> {
        let mut current = self.input;
        self.layers
            .iter()
            .map(|layer| {
                current = match *layer {
                    Layer::Conv { .. } => {
                        let s = self.conv_shape(layer, 1, current);
                        Extent {
                            channels: s.out_channels,
                            height: s.out_h(),
                            width: s.out_w(),
                        }
                    }
                    Layer::Flatten => Extent {
                        channels: current.per_image(),
                        height: 1,
                        width: 1,
                    },
                    Layer::Linear { out_features, .. } => Extent {
                        channels: out_features,
                        height: 1,
                        width: 1,
                    },
                    Layer::BatchNorm { .. } | Layer::Activation(_) => current,
                };
                current
            })
            .collect()
    }

    /// Input extent of layer `i`.
    pub fn input_of(&self, i: usize) -> Extent {
        if i == 0 {
            self.input
        } else {
            self.extents()[i - 1]
        }
    }

    pub fn output(&self) -> Extent {
        *self.extents().last().expect("a network has layers")
    }

    pub fn conv_shape(&self, layer: &Layer, batch: usize, input: Extent) -> ConvShape {
        let Layer::Conv {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            transposed,
            ..
        } = *layer
        else {
            panic!("not a convolution: {layer:?}");
        };
        ConvShape {
            batch,
            in_channels,
            out_channels,
            in_h: input.height,
            in_w: input.width,
            kernel,
            stride,
            padding,
            transposed,
        }
    }

    pub fn batchnorm_shape(&self, i: usize, batch: usize) -> BatchNormShape {
        let e = self.input_of(i);
        BatchNormShape {
            batch,
            channels: e.channels,
            height: e.height,
            width: e.width,
        }
    }

    pub fn linear_shape(&self, layer: &Layer, batch: usize) -> LinearShape {
        let Layer::Linear {
            in_features,
            out_features,
            ..
        } = *layer
        else {
            panic!("not a linear layer: {layer:?}");
        };
        LinearShape {
            batch,
            in_features,
            out_features,
        }
    }

    /// Check that consecutive layers fit together; a clear message if not.
    pub fn validate(&self) -> Result<(), String> {
        let mut current = self.input;
        for (i, layer) in self.layers.iter().enumerate() {
            let fits = match *layer {
                Layer::Conv { in_channels, .. } => in_channels == current.channels,
                Layer::BatchNorm { channels } => channels == current.channels,
                Layer::Linear { in_features, .. } => {
                    in_features == current.per_image() && current.height * current.width == 1
                }
                Layer::Activation(_) | Layer::Flatten => true,
            };
            if !fits {
                return Err(format!(
                    "{}: layer {i} ({layer:?}) does not fit its input {current:?}",
                    self.name
                ));
            }
            current = self.extents()[i];
            if current.height == 0 || current.width == 0 {
                return Err(format!("{}: layer {i} leaves no output", self.name));
            }
        }
        Ok(())
    }

    /// The `state_dict` tensors in PyTorch's order, laid out in flat buffers.
    pub fn layout(&self) -> Layout {
        use TensorKind::{Parameter, Running};
        let mut layout = Layout {
            tensors: Vec::new(),
            parameters: 0,
            running: 0,
            batchnorm_layers: Vec::new(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let mut add = |suffix: &str, shape: Vec<usize>, kind, aligned| {
                layout.push(format!("layers.{i}.{suffix}"), shape, kind, aligned)
            };
            match *layer {
                Layer::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    transposed,
                    bias,
                    ..
                } => {
                    let (a, b) = if transposed {
                        (in_channels, out_channels)
                    } else {
                        (out_channels, in_channels)
                    };
                    add("weight", vec![a, b, kernel, kernel], Parameter, true);
                    if bias {
                        add("bias", vec![out_channels], Parameter, true);
                    }
                }
                Layer::BatchNorm { channels } => {
                    add("weight", vec![channels], Parameter, true);
                    add("bias", vec![channels], Parameter, false);
                    add("running_mean", vec![channels], Running, true);
                    add("running_var", vec![channels], Running, false);
                    layout.batchnorm_layers.push(i);
                }
                Layer::Linear {
                    in_features,
                    out_features,
                    bias,
                } => {
                    add("weight", vec![out_features, in_features], Parameter, true);
                    if bias {
                        add("bias", vec![out_features], Parameter, true);
                    }
                }
                Layer::Activation(_) | Layer::Flatten => {}
            }
        }
        layout.parameters = align(layout.parameters);
        layout.running = align(layout.running);
        layout
    }

    /// Initial parameters and running statistics, as the seed's `weights_init`
    /// leaves them: convolution weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02)
    /// and biases 0, Linear layers PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    /// running mean 0 and variance 1.
    pub fn initial_state(&self, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>) {
        let layout = self.layout();
        let mut params = vec![0.0f32; layout.parameters];
        let mut running = vec![0.0f32; layout.running];
        for (i, layer) in self.layers.iter().enumerate() {
            match *layer {
                Layer::Conv { bias, .. } => {
                    fill_normal(rng, slice(&mut params, layout.weight(i)), 0.0, 0.02);
                    if bias {
                        // PyTorch's default bias init for convolutions.
                        let fan_in = layout.weight(i).len() / layout.weight(i).shape[0];
                        let bound = 1.0 / (fan_in as f32).sqrt();
                        fill_uniform(rng, slice(&mut params, layout.bias(i)), bound);
                    }
                }
                Layer::BatchNorm { .. } => {
                    fill_normal(rng, slice(&mut params, layout.weight(i)), 1.0, 0.02);
                    let var = layout.find(&format!("layers.{i}.running_var")).expect("bn");
                    slice(&mut running, var).fill(1.0);
                }
                Layer::Linear {
                    in_features, bias, ..
                } => {
                    let bound = 1.0 / (in_features as f32).sqrt();
                    fill_uniform(rng, slice(&mut params, layout.weight(i)), bound);
                    if bias {
                        fill_uniform(rng, slice(&mut params, layout.bias(i)), bound);
                    }
                }
                Layer::Activation(_) | Layer::Flatten => {}
            }
        }
        (params, running)
    }
}

fn slice<'a>(buffer: &'a mut [f32], slot: &TensorSlot) -> &'a mut [f32] {
    &mut buffer[slot.offset..slot.offset + slot.len()]
}

fn fill_normal(rng: &mut impl Rng, values: &mut [f32], mean: f32, std: f32) {
    for v in values {
        // Box-Muller on (0, 1] uniforms.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        *v = mean + std * normal as f32;
    }
}

fn fill_uniform(rng: &mut impl Rng, values: &mut [f32], bound: f32) {
    for v in values {
        *v = rng.random_range(-bound..bound);
    }
}

/// The seed's Generator: noise `[B, noise_dim, 1, 1]` to images `[B, 1, 28, 28]`.
pub fn seed_generator(noise_dim: usize, feature_maps: usize) -> Network {
    let f = feature_maps;
    let up = |in_channels, out_channels, kernel, stride, padding| Layer::Conv {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        transposed: true,
        bias: false,
    };
    let relu = Layer::Activation(Activation::Relu);
    let bn = |channels| Layer::BatchNorm { channels };
    Network {
        name: "generator",
        input: Extent {
            channels: noise_dim,
            height: 1,
            width: 1,
        },
        layers: vec![
            up(noise_dim, f * 8, 4, 1, 0),
            bn(f * 8),
            relu,
            up(f * 8, f * 4, 4, 2, 1),
            bn(f * 4),
            relu,
            up(f * 4, f * 2, 4, 2, 1),
            bn(f * 2),
            relu,
            up(f * 2, f, 4, 2, 1),
            bn(f),
            relu,
            up(f, 1, 1, 1, 2),
            Layer::Activation(Activation::Tanh),
        ],
    }
}

/// The seed's Discriminator: images `[B, 1, 28, 28]` to probabilities `[B, 1]`.
pub fn seed_discriminator(feature_maps: usize) -> Network {
    let f = feature_maps;
    let down = |in_channels, out_channels| Layer::Conv {
        in_channels,
        out_channels,
        kernel: 4,
        stride: 2,
        padding: 1,
        transposed: false,
        bias: false,
    };
    let leaky = Layer::Activation(Activation::LeakyRelu(0.2));
    let bn = |channels| Layer::BatchNorm { channels };
    Network {
        name: "discriminator",
        input: Extent {
            channels: 1,
            height: 28,
            width: 28,
        },
        layers: vec![
            down(1, f),
            bn(f),
            leaky,
            down(f, f * 2),
            bn(f * 2),
            leaky,
            down(f * 2, f * 4),
            bn(f * 4),
            leaky,
            down(f * 4, 1),
            Layer::Flatten,
            Layer::Linear {
                in_features: 1,
                out_features: 1,
                bias: true,
            },
            Layer::Activation(Activation::Sigmoid),
        ],
    }
}
