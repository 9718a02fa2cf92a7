//! Lowering networks into the dispatches of a training step.
//!
//! A network's layer list becomes nodes: convolutions and Linear layers (matrix
//! products) and BatchNorms. A BatchNorm and its activation are not applied as a pass
//! of their own: their per-channel affine map is computed once and fused into the
//! next convolution's operand loads, so only raw convolution outputs are stored
//! (half the activation memory of storing both). Backward walks the nodes in reverse.
//!
//! Activations are NHWC (channels innermost, so convolutions load four channels at a
//! time); images, noise and logits have one channel or one pixel, where NHWC and
//! PyTorch's NCHW coincide. Convolution weights stay in PyTorch's layout for AdamW and
//! checkpoints, and are repacked for the convolutions after every optimizer step.
//!
//! Lowering produces [`Op`]s that name buffers symbolically ([`Buf`]); the executor
//! sizes the workspace from all plans at once and then binds them.

use anyhow::{Result, bail};

use crate::kernels::activation::{self, ActivationPass};
use crate::kernels::batchnorm::{self, BatchNormPass};
use crate::kernels::conv::{self, ConvFusion, ConvPass, WeightLayout};
use crate::kernels::gemm::{Epilogue, Prologue, Tiling};
use crate::kernels::linear::LinearPass;
use crate::kernels::loss::{self, MetricSlots};
use crate::kernels::matmul::MatMul;
use crate::kernels::{Launch, bias, data, noise};
use crate::model::{Extent, Layer, Layout, Network};
use crate::shapes::{Activation, BatchNormShape, ConvShape, LinearShape};

/// The two networks of a GAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Net {
    Generator,
    Discriminator,
}

impl Net {
    pub fn prefix(self) -> &'static str {
        match self {
            Net::Generator => "G",
            Net::Discriminator => "D",
        }
    }
}

/// A buffer, named by what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    /// Scratch sized by the workspace (activations, gradients, statistics).
    Work(String),
    Params(Net),
    Grads(Net),
    ExpAvg(Net),
    ExpAvgSq(Net),
    Running(Net),
    Hyper(Net),
    Step,
    Metrics,
    Pixels,
    Order,
    Table,
}

/// `len` elements of a buffer from element `offset`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub buf: Buf,
    pub offset: usize,
    pub len: usize,
}

impl Tensor {
    pub fn work(key: impl Into<String>, len: usize) -> Tensor {
        Tensor {
            buf: Buf::Work(key.into()),
            offset: 0,
            len,
        }
    }

    fn whole(buf: Buf, len: usize) -> Tensor {
        Tensor {
            buf,
            offset: 0,
            len,
        }
    }
}

/// One step of a plan: a kernel with its bindings, or a buffer copy (captures).
#[derive(Clone, Debug)]
pub enum Op {
    Kernel {
        launch: Launch,
        bindings: Vec<(&'static str, Tensor)>,
        /// For matrix products: what to regenerate under another tiling.
        matmul: Option<MatMul>,
    },
    Copy {
        from: Tensor,
        to: Tensor,
    },
}

/// Where each pass of a step writes its losses in the metrics ring (per step).
pub mod metric {
    pub const PER_STEP: usize = 6;
    pub const LOSS_D_REAL: usize = 0;
    pub const LOSS_D_FAKE: usize = 1;
    pub const LOSS_G: usize = 2;
    pub const D_X: usize = 3;
    pub const D_G_Z1: usize = 4;
    pub const D_G_Z2: usize = 5;
    pub const NAMES: [&str; PER_STEP] = [
        "loss_d_real",
        "loss_d_fake",
        "loss_g",
        "d_x",
        "d_g_z1",
        "d_g_z2",
    ];
}

/// A value flowing between layers: a stored tensor, possibly with a BatchNorm +
/// activation still to apply on read.
#[derive(Clone, Debug)]
struct Value {
    tensor: Tensor,
    extent: Extent,
    pending: Option<PendingNorm>,
}

#[derive(Clone, Debug)]
struct PendingNorm {
    stats: Tensor,
    activation: Activation,
}

impl Value {
    fn prologue(&self) -> Option<Prologue> {
        self.pending.as_ref().map(|p| Prologue {
            channels: self.extent.channels,
            activation: p.activation,
        })
    }
}

#[derive(Clone, Debug)]
enum Node {
    Conv {
        layer: usize,
        shape: ConvShape,
        input: Value,
        output: Tensor,
        /// Applied in the store; its derivative is taken from the stored output.
        activation: Activation,
    },
    Norm {
        layer: usize,
        shape: BatchNormShape,
        /// The raw (pre-normalisation) input.
        input: Tensor,
        stats: Tensor,
        activation: Activation,
    },
    Linear {
        layer: usize,
        shape: LinearShape,
        input: Tensor,
    },
}

/// The forward pass of a network: its nodes (for backward) and its output.
pub struct Forward {
    net: Net,
    nodes: Vec<Node>,
    output: Value,
}

/// What backward does with parameter gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightGrads {
    Overwrite,
    Accumulate,
    /// Only the input gradient is wanted (the generator's loss through D).
    Skip,
}

/// Picks a tiling for a matrix product.
pub type TilingPolicy<'a> = &'a dyn Fn(&MatMul) -> Tiling;

/// Lowers passes of two networks into a list of ops, for one batch size.
pub struct Lowering<'a> {
    pub generator: &'a Network,
    pub discriminator: &'a Network,
    pub layouts: [&'a Layout; 2],
    pub batch: usize,
    pub tiling: TilingPolicy<'a>,
    /// Copy every layer's output into `capture.<pass>.layers.<i>` (parity tests).
    pub capture: bool,
    /// Floats in the metrics ring.
    pub metrics_len: usize,
    pub ops: Vec<Op>,
}

impl<'a> Lowering<'a> {
    fn network(&self, net: Net) -> &'a Network {
        match net {
            Net::Generator => self.generator,
            Net::Discriminator => self.discriminator,
        }
    }

    fn layout(&self, net: Net) -> &'a Layout {
        self.layouts[net as usize]
    }

    fn kernel(&mut self, launch: Launch, bindings: Vec<(&'static str, Tensor)>) {
        self.ops.push(Op::Kernel {
            launch,
            bindings,
            matmul: None,
        });
    }

    /// A matrix product under the tiling the policy picks for it.
    fn matmul(&mut self, matmul: MatMul, bindings: Vec<(&'static str, Tensor)>) {
        let launch = matmul.launch((self.tiling)(&matmul));
        self.ops.push(Op::Kernel {
            launch,
            bindings,
            matmul: Some(matmul),
        });
    }

    fn work(&self, net: Net, what: &str, layer: usize, per_image: usize) -> Tensor {
        Tensor::work(
            format!("{}.{what}{layer}", net.prefix()),
            self.batch * per_image,
        )
    }

    fn param(&self, net: Net, name: &str, len: usize) -> Tensor {
        let slot = self.layout(net).find(name).expect("layout has the tensor");
        Tensor {
            buf: Buf::Params(net),
            offset: slot.offset,
            len,
        }
    }

    /// Layer `layer`'s weights packed for `layout` (see [`Lowering::pack_weights`]).
    fn packed(&self, net: Net, layer: usize, layout: WeightLayout, len: usize) -> Tensor {
        let which = match layout {
            WeightLayout::CoarseMajor => "coarse",
            WeightLayout::FineMajor => "fine",
        };
        Tensor::work(format!("{}.w{layer}.{which}", net.prefix()), len)
    }

    /// The weights a convolution pass binds as `w`.
    fn conv_weights(&self, net: Net, layer: usize, shape: &ConvShape, pass: ConvPass) -> Tensor {
        let layout = conv::weight_layout(shape, pass).expect("a pass that reads weights");
        self.packed(net, layer, layout, shape.weight_len())
    }

    /// Repack every convolution weight of `net` into the layouts its passes read;
    /// needed whenever the weights change (each optimizer step, a loaded checkpoint).
    pub fn pack_weights(&mut self, net: Net) {
        let network = self.network(net);
        for (i, layer) in network.layers.iter().enumerate() {
            if !matches!(layer, Layer::Conv { .. }) {
                continue;
            }
            let shape = network.conv_shape(layer, 1, network.input_of(i));
            let canonical = self.param(net, &format!("layers.{i}.weight"), shape.weight_len());
            for layout in [WeightLayout::CoarseMajor, WeightLayout::FineMajor] {
                let packed = self.packed(net, i, layout, shape.weight_len());
                self.kernel(
                    conv::pack(&shape, layout),
                    vec![("w", canonical.clone()), ("packed", packed)],
                );
            }
        }
    }

    fn grad(&self, net: Net, name: &str, len: usize) -> Tensor {
        Tensor {
            buf: Buf::Grads(net),
            ..self.param(net, name, len)
        }
    }

    fn running(&self, net: Net, layer: usize, channels: usize) -> Tensor {
        let slot = self.layout(net).running(layer);
        Tensor {
            buf: Buf::Running(net),
            offset: slot.offset,
            len: 2 * channels,
        }
    }

    /// Scratch for a BatchNorm's per-chunk sums (shared by its forward and backward).
    fn bn_partials(&self, net: Net, layer: usize, shape: &BatchNormShape) -> Tensor {
        Tensor::work(
            format!("{}.partials{layer}", net.prefix()),
            batchnorm::partials_len(shape),
        )
    }

    fn capture(&mut self, pass: &str, layer: usize, from: Tensor) {
        if self.capture {
            let to = Tensor::work(format!("capture.{pass}.layers.{layer}"), from.len);
            self.ops.push(Op::Copy { from, to });
        }
    }

    /// A pending BatchNorm + activation applied into its own buffer (when the
    /// consumer cannot fuse it, or for captures).
    fn apply_norm(&mut self, value: &Value, activation: Activation, key: String) -> Tensor {
        let pending = value.pending.as_ref().expect("a pending norm");
        let e = value.extent;
        let shape = BatchNormShape {
            batch: self.batch,
            channels: e.channels,
            height: e.height,
            width: e.width,
        };
        let out = Tensor::work(key, value.tensor.len);
        self.kernel(
            batchnorm::launch(&shape, activation, BatchNormPass::Apply, false),
            vec![
                ("x", value.tensor.clone()),
                ("stats", pending.stats.clone()),
                ("y", out.clone()),
            ],
        );
        out
    }

    fn materialise(&mut self, net: Net, value: Value, layer: usize) -> Value {
        let Some(pending) = &value.pending else {
            return value;
        };
        let key = format!("{}.applied{layer}", net.prefix());
        let tensor = self.apply_norm(&value, pending.activation, key);
        Value {
            tensor,
            extent: value.extent,
            pending: None,
        }
    }

    /// Noise `[batch, channels]` for this step into `G.noise`.
    pub fn noise(&mut self, channels: usize, seed: u64) -> Tensor {
        let out = Tensor::work("G.noise", self.batch * channels);
        self.kernel(
            noise::normal(out.len, seed),
            vec![
                ("noise", out.clone()),
                ("step", Tensor::whole(Buf::Step, 4)),
            ],
        );
        out
    }

    /// This step's real batch, gathered and normalised, into `D.real`.
    pub fn real_batch(&mut self, image_pixels: usize, images: usize) -> Tensor {
        let out = Tensor::work("D.real", self.batch * image_pixels);
        self.kernel(
            data::gather(self.batch, image_pixels),
            vec![
                (
                    "pixels",
                    Tensor::whole(Buf::Pixels, (images * image_pixels).div_ceil(4)),
                ),
                ("order", Tensor::whole(Buf::Order, images)),
                ("table", Tensor::whole(Buf::Table, 256)),
                ("images", out.clone()),
                ("step", Tensor::whole(Buf::Step, 4)),
            ],
        );
        out
    }

    /// Forward pass of `net` on `input` (training or eval mode BatchNorm).
    pub fn forward(&mut self, net: Net, input: Tensor, train: bool, pass: &str) -> Result<Forward> {
        let network = self.network(net);
        let layers = &network.layers;
        let mut value = Value {
            tensor: input,
            extent: network.input,
            pending: None,
        };
        let mut nodes = Vec::new();
        let mut i = 0;
        while i < layers.len() {
            let next_activation = match layers.get(i + 1) {
                Some(Layer::Activation(a)) => Some(*a),
                _ => None,
            };
            let extent = network.extents()[i];
            match layers[i] {
                Layer::Conv { bias, .. } => {
                    let shape = network.conv_shape(&layers[i], self.batch, value.extent);
                    let activation = match next_activation {
                        Some(a @ (Activation::Tanh | Activation::Sigmoid)) => a,
                        Some(a) => bail!(
                            "{}: layer {} ({a:?} right after a convolution) is not supported by the executor",
                            network.name,
                            i + 1
                        ),
                        None => Activation::Identity,
                    };
                    let output = self.work(net, "out", i, extent.per_image());
                    let weight = self.conv_weights(net, i, &shape, ConvPass::Forward);
                    let mut bindings = vec![
                        ("x", value.tensor.clone()),
                        ("w", weight.clone()),
                        ("y", output.clone()),
                    ];
                    if let Some(p) = &value.pending {
                        bindings.push(("bn", p.stats.clone()));
                    }
                    if bias {
                        bindings.push((
                            "bias",
                            self.param(net, &format!("layers.{i}.bias"), shape.out_channels),
                        ));
                    }
                    let fusion = ConvFusion {
                        prologue: value.prologue(),
                        epilogue: Epilogue {
                            bias,
                            activation,
                            accumulate: false,
                        },
                    };
                    if self.capture && activation != Activation::Identity {
                        // The raw convolution output, which the fused store never keeps.
                        let raw = Tensor::work(format!("capture.{pass}.layers.{i}"), output.len);
                        let plain = ConvFusion {
                            epilogue: Epilogue {
                                activation: Activation::Identity,
                                ..fusion.epilogue
                            },
                            ..fusion
                        };
                        let mut raw_bindings = bindings.clone();
                        raw_bindings[2].1 = raw;
                        let conv = |fusion| MatMul::Conv {
                            shape,
                            pass: ConvPass::Forward,
                            fusion,
                        };
                        self.matmul(conv(plain), raw_bindings);
                    }
                    let forward = MatMul::Conv {
                        shape,
                        pass: ConvPass::Forward,
                        fusion,
                    };
                    self.matmul(forward, bindings);
                    let layer = i;
                    if activation == Activation::Identity {
                        self.capture(pass, i, output.clone());
                    } else {
                        self.capture(pass, i + 1, output.clone());
                        i += 1;
                    }
                    nodes.push(Node::Conv {
                        layer,
                        shape,
                        input: value,
                        output: output.clone(),
                        activation,
                    });
                    value = Value {
                        tensor: output,
                        extent,
                        pending: None,
                    };
                }
                Layer::BatchNorm { channels } => {
                    value = self.materialise(net, value, i);
                    let shape = network.batchnorm_shape(i, self.batch);
                    let stats = Tensor::work(
                        format!("{}.stats{i}", net.prefix()),
                        batchnorm::stats_len(channels),
                    );
                    let affine = self.param(net, &format!("layers.{i}.weight"), 2 * channels);
                    let running = self.running(net, i, channels);
                    let activation = next_activation.unwrap_or(Activation::Identity);
                    if train {
                        let partials = self.bn_partials(net, i, &shape);
                        self.kernel(
                            batchnorm::launch(
                                &shape,
                                activation,
                                BatchNormPass::TrainPartials,
                                false,
                            ),
                            vec![("x", value.tensor.clone()), ("partials", partials.clone())],
                        );
                        self.kernel(
                            batchnorm::launch(
                                &shape,
                                activation,
                                BatchNormPass::TrainCombine,
                                false,
                            ),
                            vec![
                                ("affine", affine),
                                ("running", running),
                                ("stats", stats.clone()),
                                ("partials", partials),
                            ],
                        );
                    } else {
                        self.kernel(
                            batchnorm::launch(&shape, activation, BatchNormPass::EvalStats, false),
                            vec![
                                ("affine", affine),
                                ("running", running),
                                ("stats", stats.clone()),
                            ],
                        );
                    }
                    nodes.push(Node::Norm {
                        layer: i,
                        shape,
                        input: value.tensor.clone(),
                        stats: stats.clone(),
                        activation,
                    });
                    value.pending = Some(PendingNorm { stats, activation });
                    if self.capture {
                        self.apply_norm(
                            &value,
                            Activation::Identity,
                            format!("capture.{pass}.layers.{i}"),
                        );
                        if next_activation.is_some() {
                            self.apply_norm(
                                &value,
                                activation,
                                format!("capture.{pass}.layers.{}", i + 1),
                            );
                        }
                    }
                    if next_activation.is_some() {
                        i += 1;
                    }
                }
                Layer::Flatten => {
                    value = self.materialise(net, value, i);
                    let e = value.extent;
                    if e.channels > 1 && e.height * e.width > 1 {
                        bail!(
                            "{}: layer {i} flattens {e:?}; the executor keeps activations NHWC, whose \
                             flattened order differs from PyTorch's for several channels and pixels",
                            network.name
                        );
                    }
                    value.extent = extent;
                    self.capture(pass, i, value.tensor.clone());
                }
                Layer::Linear { bias, .. } => {
                    value = self.materialise(net, value, i);
                    let shape = network.linear_shape(&layers[i], self.batch);
                    let output = self.work(net, "out", i, shape.out_features);
                    let mut bindings = vec![
                        ("x", value.tensor.clone()),
                        (
                            "w",
                            self.param(
                                net,
                                &format!("layers.{i}.weight"),
                                shape.in_features * shape.out_features,
                            ),
                        ),
                        ("y", output.clone()),
                    ];
                    if bias {
                        bindings.push((
                            "bias",
                            self.param(net, &format!("layers.{i}.bias"), shape.out_features),
                        ));
                    }
                    let epilogue = Epilogue {
                        bias,
                        ..Epilogue::default()
                    };
                    let forward = MatMul::Linear {
                        shape,
                        pass: LinearPass::Forward,
                        epilogue,
                    };
                    self.matmul(forward, bindings);
                    self.capture(pass, i, output.clone());
                    nodes.push(Node::Linear {
                        layer: i,
                        shape,
                        input: value.tensor.clone(),
                    });
                    value = Value {
                        tensor: output,
                        extent,
                        pending: None,
                    };
                }
                Layer::Activation(Activation::Sigmoid) if i + 1 == layers.len() => {
                    // The discriminator's final sigmoid belongs to the loss kernel.
                    if self.capture {
                        let out =
                            Tensor::work(format!("capture.{pass}.layers.{i}"), value.tensor.len);
                        self.kernel(
                            activation::launch(
                                ActivationPass::Forward,
                                Activation::Sigmoid,
                                value.tensor.len,
                            ),
                            vec![("x", value.tensor.clone()), ("y", out)],
                        );
                    }
                }
                Layer::Activation(a) => bail!(
                    "{}: layer {i} ({a:?}) must follow a BatchNorm or a convolution, or end the discriminator",
                    network.name
                ),
            }
            i += 1;
        }
        Ok(Forward {
            net,
            nodes,
            output: value,
        })
    }

    /// Sigmoid + BCE against `target` on the discriminator's output; returns the
    /// gradient at the logits.
    pub fn loss(
        &mut self,
        forward: &Forward,
        target: f32,
        loss_metric: usize,
        mean_metric: usize,
    ) -> Tensor {
        let logits = forward.output.tensor.clone();
        let dlogits = Tensor::work("D.dlogits", logits.len);
        let slots = MetricSlots {
            per_step: metric::PER_STEP,
            loss: loss_metric,
            mean_probability: mean_metric,
        };
        self.kernel(
            loss::sigmoid_bce(logits.len, target, slots),
            vec![
                ("logits", logits),
                ("dlogits", dlogits.clone()),
                ("metrics", Tensor::whole(Buf::Metrics, self.metrics_len)),
                ("step", Tensor::whole(Buf::Step, 4)),
            ],
        );
        dlogits
    }

    /// Backward through `forward` from the gradient at its output. Returns the
    /// gradient at the network's input when `input_grad`.
    pub fn backward(
        &mut self,
        forward: &Forward,
        output_grad: Tensor,
        weights: WeightGrads,
        input_grad: bool,
    ) -> Option<Tensor> {
        let net = forward.net;
        let mut grad = output_grad;
        for (index, node) in forward.nodes.iter().enumerate().rev() {
            let needs_input_grad = index > 0 || input_grad;
            grad = match node {
                Node::Conv {
                    layer,
                    shape,
                    input,
                    output,
                    activation,
                } => self.conv_backward(
                    net,
                    *layer,
                    shape,
                    input,
                    output,
                    *activation,
                    grad,
                    weights,
                    needs_input_grad,
                )?,
                Node::Norm {
                    layer,
                    shape,
                    input,
                    stats,
                    activation,
                } => {
                    self.norm_backward(
                        net,
                        *layer,
                        shape,
                        input,
                        stats,
                        *activation,
                        &grad,
                        weights,
                    );
                    grad
                }
                Node::Linear {
                    layer,
                    shape,
                    input,
                } => self.linear_backward(
                    net,
                    *layer,
                    shape,
                    input,
                    grad,
                    weights,
                    needs_input_grad,
                )?,
            };
        }
        Some(grad)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &mut self,
        net: Net,
        layer: usize,
        shape: &ConvShape,
        input: &Value,
        output: &Tensor,
        activation: Activation,
        grad: Tensor,
        weights: WeightGrads,
        needs_input_grad: bool,
    ) -> Option<Tensor> {
        let d_pre = if activation == Activation::Identity {
            grad
        } else {
            let d_pre = next_gradient(&grad, grad.len);
            self.kernel(
                activation::launch(ActivationPass::BackwardFromOutput, activation, grad.len),
                vec![("y", output.clone()), ("dy", grad), ("dx", d_pre.clone())],
            );
            d_pre
        };
        let has_bias = self
            .layout(net)
            .find(&format!("layers.{layer}.bias"))
            .is_some();
        if weights != WeightGrads::Skip {
            let accumulate = weights == WeightGrads::Accumulate;
            let fusion = ConvFusion {
                prologue: input.prologue(),
                epilogue: Epilogue {
                    accumulate,
                    ..Epilogue::default()
                },
            };
            let mut bindings = vec![
                ("x", input.tensor.clone()),
                ("dy", d_pre.clone()),
                (
                    "dw",
                    self.grad(net, &format!("layers.{layer}.weight"), shape.weight_len()),
                ),
            ];
            if let Some(p) = &input.pending {
                bindings.push(("bn", p.stats.clone()));
            }
            let weight_grad = MatMul::Conv {
                shape: *shape,
                pass: ConvPass::WeightGrad,
                fusion,
            };
            self.matmul(weight_grad, bindings);
            if has_bias {
                let plane = shape.out_h() * shape.out_w();
                self.kernel(
                    bias::channel_sum(shape.batch, shape.out_channels, plane, accumulate),
                    vec![
                        ("dy", d_pre.clone()),
                        (
                            "dbias",
                            self.grad(net, &format!("layers.{layer}.bias"), shape.out_channels),
                        ),
                    ],
                );
            }
        }
        if !needs_input_grad {
            return None;
        }
        let dx = next_gradient(&d_pre, shape.input_len());
        let input_grad = MatMul::Conv {
            shape: *shape,
            pass: ConvPass::InputGrad,
            fusion: ConvFusion::default(),
        };
        self.matmul(
            input_grad,
            vec![
                ("dy", d_pre),
                (
                    "w",
                    self.conv_weights(net, layer, shape, ConvPass::InputGrad),
                ),
                ("dx", dx.clone()),
            ],
        );
        Some(dx)
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &mut self,
        net: Net,
        layer: usize,
        shape: &BatchNormShape,
        input: &Tensor,
        stats: &Tensor,
        activation: Activation,
        grad: &Tensor,
        weights: WeightGrads,
    ) {
        let channels = shape.channels;
        let affine_grad = match weights {
            WeightGrads::Skip => {
                Tensor::work(format!("{}.discard{layer}", net.prefix()), 2 * channels)
            }
            _ => self.grad(net, &format!("layers.{layer}.weight"), 2 * channels),
        };
        let partials = self.bn_partials(net, layer, shape);
        self.kernel(
            batchnorm::launch(shape, activation, BatchNormPass::BackwardPartials, false),
            vec![
                ("x", input.clone()),
                ("stats", stats.clone()),
                ("grad", grad.clone()),
                ("partials", partials.clone()),
            ],
        );
        self.kernel(
            batchnorm::launch(
                shape,
                activation,
                BatchNormPass::BackwardCombine,
                weights == WeightGrads::Accumulate,
            ),
            vec![
                ("stats", stats.clone()),
                ("affine_grad", affine_grad),
                ("partials", partials),
            ],
        );
        self.kernel(
            batchnorm::launch(shape, activation, BatchNormPass::BackwardApply, false),
            vec![
                ("x", input.clone()),
                (
                    "affine",
                    self.param(net, &format!("layers.{layer}.weight"), 2 * channels),
                ),
                ("stats", stats.clone()),
                ("grad", grad.clone()),
            ],
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &mut self,
        net: Net,
        layer: usize,
        shape: &LinearShape,
        input: &Tensor,
        grad: Tensor,
        weights: WeightGrads,
        needs_input_grad: bool,
    ) -> Option<Tensor> {
        let weight_len = shape.in_features * shape.out_features;
        if weights != WeightGrads::Skip {
            let accumulate = weights == WeightGrads::Accumulate;
            let epilogue = Epilogue {
                accumulate,
                ..Epilogue::default()
            };
            let weight_grad = MatMul::Linear {
                shape: *shape,
                pass: LinearPass::WeightGrad,
                epilogue,
            };
            self.matmul(
                weight_grad,
                vec![
                    ("dy", grad.clone()),
                    ("x", input.clone()),
                    (
                        "dw",
                        self.grad(net, &format!("layers.{layer}.weight"), weight_len),
                    ),
                ],
            );
            if self
                .layout(net)
                .find(&format!("layers.{layer}.bias"))
                .is_some()
            {
                self.kernel(
                    bias::channel_sum(shape.batch, shape.out_features, 1, accumulate),
                    vec![
                        ("dy", grad.clone()),
                        (
                            "dbias",
                            self.grad(net, &format!("layers.{layer}.bias"), shape.out_features),
                        ),
                    ],
                );
            }
        }
        if !needs_input_grad {
            return None;
        }
        let dx = next_gradient(&grad, shape.batch * shape.in_features);
        let input_grad = MatMul::Linear {
            shape: *shape,
            pass: LinearPass::InputGrad,
            epilogue: Epilogue::default(),
        };
        self.matmul(
            input_grad,
            vec![
                ("dy", grad),
                (
                    "w",
                    self.param(net, &format!("layers.{layer}.weight"), weight_len),
                ),
                ("dx", dx.clone()),
            ],
        );
        Some(dx)
    }

    /// AdamW over all of `net`'s parameters.
    pub fn optimizer_step(&mut self, net: Net) {
        let count = self.layout(net).parameters;
        let whole = |buf| Tensor::whole(buf, count);
        self.kernel(
            crate::kernels::adamw::step(count),
            vec![
                ("params", whole(Buf::Params(net))),
                ("grads", whole(Buf::Grads(net))),
                ("exp_avg", whole(Buf::ExpAvg(net))),
                ("exp_avg_sq", whole(Buf::ExpAvgSq(net))),
                ("hyper", Tensor::whole(Buf::Hyper(net), 8)),
            ],
        );
    }

    /// Copy a whole state buffer into a capture (D's running statistics after each pass).
    pub fn capture_buffer(&mut self, name: &str, buf: Buf, len: usize) {
        if self.capture {
            self.ops.push(Op::Copy {
                from: Tensor::whole(buf, len),
                to: Tensor::work(format!("capture.{name}"), len),
            });
        }
    }
}

/// The buffer for the gradient computed from `previous` in a backward chain. Each
/// gradient is dead once the next one is computed (BatchNorm's backward works in
/// place), so every chain, through both networks, alternates between two shared
/// buffers, each as large as the largest gradient it holds: the generator's widest
/// gradients alone would otherwise take 60 MiB at the seed's size.
fn next_gradient(previous: &Tensor, len: usize) -> Tensor {
    let key = match &previous.buf {
        Buf::Work(key) if key == "grad.a" => "grad.b",
        _ => "grad.a",
    };
    Tensor::work(key, len)
}

/// Where the value of a forward pass ends: the generator's images or the
/// discriminator's logits.
impl Forward {
    pub fn output(&self) -> Tensor {
        self.output.tensor.clone()
    }
}

/// The ops of one training step in the seed's order:
/// D on real; G forward; D on the detached fake; D update; D on the fake (updated D)
/// for G's loss; G backward; G update.
pub fn training_step(l: &mut Lowering, real: Tensor, noise: Tensor) -> Result<()> {
    l.pack_weights(Net::Discriminator);
    l.pack_weights(Net::Generator);
    let d_real = l.forward(Net::Discriminator, real, true, "D_real")?;
    l.capture_buffer(
        "D_real.running",
        Buf::Running(Net::Discriminator),
        l.layouts[1].running,
    );
    let grad = l.loss(&d_real, 1.0, metric::LOSS_D_REAL, metric::D_X);
    l.backward(&d_real, grad, WeightGrads::Overwrite, false);

    let g = l.forward(Net::Generator, noise, true, "G")?;
    let fake = g.output();

    let d_fake = l.forward(Net::Discriminator, fake.clone(), true, "D_fake_detached")?;
    l.capture_buffer(
        "D_fake_detached.running",
        Buf::Running(Net::Discriminator),
        l.layouts[1].running,
    );
    let grad = l.loss(&d_fake, 0.0, metric::LOSS_D_FAKE, metric::D_G_Z1);
    l.backward(&d_fake, grad, WeightGrads::Accumulate, false);
    l.optimizer_step(Net::Discriminator);
    l.pack_weights(Net::Discriminator);

    let d_for_g = l.forward(Net::Discriminator, fake, true, "D_fake_for_G")?;
    l.capture_buffer(
        "D_fake_for_G.running",
        Buf::Running(Net::Discriminator),
        l.layouts[1].running,
    );
    let grad = l.loss(&d_for_g, 1.0, metric::LOSS_G, metric::D_G_Z2);
    let Some(d_fake_images) = l.backward(&d_for_g, grad, WeightGrads::Skip, true) else {
        bail!("the discriminator produced no input gradient");
    };
    if l.capture {
        let len = d_fake_images.len;
        l.ops.push(Op::Copy {
            from: d_fake_images.clone(),
            to: Tensor::work("capture.grad.fake_images", len),
        });
    }
    l.backward(&g, d_fake_images, WeightGrads::Overwrite, false);
    l.optimizer_step(Net::Generator);
    Ok(())
}
