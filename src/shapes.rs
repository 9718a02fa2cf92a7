//! Shapes of the operations, shared by the CPU reference and the GPU kernels.
//!
//! Tensors are `f32`, row-major, in PyTorch's layouts: activations NCHW,
//! Conv2d weights `[C_out, C_in, k, k]`, ConvTranspose2d weights `[C_in, C_out, k, k]`.
//! Kernels, strides and paddings are square (as in the seed); images need not be.

/// Conv2d or ConvTranspose2d geometry. `in_*` is the input of the *forward* op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub transposed: bool,
}

impl ConvShape {
    /// Output extent of one spatial dimension (PyTorch's formulas, output_padding 0).
    pub fn out_extent(&self, input: usize) -> usize {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if self.transposed {
            ((input - 1) * s + k)
                .checked_sub(2 * p)
                .expect("ConvTranspose2d padding crops the whole output")
        } else {
            (input + 2 * p)
                .checked_sub(k)
                .expect("Conv2d kernel larger than the padded input")
                / s
                + 1
        }
    }
    pub fn out_h(&self) -> usize {
        self.out_extent(self.in_h)
    }
    pub fn out_w(&self) -> usize {
        self.out_extent(self.in_w)
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }
    pub fn weight_len(&self) -> usize {
        self.in_channels * self.out_channels * self.kernel * self.kernel
    }
    /// Multiply-adds of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> usize {
        let pixels = if self.transposed {
            self.in_h * self.in_w
        } else {
            self.out_h() * self.out_w()
        };
        self.batch * pixels * self.weight_len()
    }
}

/// BatchNorm2d over an NCHW tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchNormShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl BatchNormShape {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements per channel: the count the batch statistics are taken over.
    pub fn per_channel(&self) -> usize {
        self.batch * self.height * self.width
    }
}

/// `y[b, o] = sum_i x[b, i] * w[o, i] + bias[o]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearShape {
    pub batch: usize,
    pub in_features: usize,
    pub out_features: usize,
}

/// Pointwise activations, forward and backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

/// BatchNorm2d constants (PyTorch defaults).
pub const BN_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

/// AdamW hyperparameters (`torch.optim.AdamW`; the seed's lr and betas by default).
/// Python floats in PyTorch, so `f64` here: the per-step scalars are computed in double
/// precision and rounded to `f32` where PyTorch's tensor ops take them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}
