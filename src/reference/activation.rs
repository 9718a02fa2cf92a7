//! Pointwise activations, computed in `f32` with PyTorch's formulas.

use crate::shapes::Activation;

/// `y = a(x)`, elementwise.
pub fn forward(a: Activation, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&x| apply(a, x)).collect()
}

/// `dx = dy * a'(x)`, elementwise.
///
/// At the kink `x = 0`, ReLU's derivative is 0 and LeakyReLU's is the slope, as in PyTorch
/// (`threshold_backward` and `x > 0 ? dy : dy*slope`). Tanh and Sigmoid use PyTorch's
/// formulas in the output `y`: `dy * (1 - y*y)` and `dy * (1 - y) * y`.
pub fn backward(a: Activation, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "activation input and gradient lengths");
    x.iter()
        .zip(dy)
        .map(|(&x, &dy)| match a {
            Activation::Identity => dy,
            Activation::Relu => {
                if x > 0.0 {
                    dy
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu(slope) => {
                if x > 0.0 {
                    dy
                } else {
                    dy * slope
                }
            }
            Activation::Tanh => {
                let y = x.tanh();
                dy * (1.0 - y * y)
            }
            Activation::Sigmoid => {
                let y = sigmoid(x);
                dy * (1.0 - y) * y
            }
        })
        .collect()
}

fn apply(a: Activation, x: f32) -> f32 {
    match a {
        Activation::Identity => x,
        Activation::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        Activation::LeakyRelu(slope) => {
            if x > 0.0 {
                x
            } else {
                x * slope
            }
        }
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => sigmoid(x),
    }
}

/// `1 / (1 + exp(-x))` in `f32`, as PyTorch. Rounds to exactly 1 once `exp(-x) <= 2^-24`
/// (`x >~ 16.7`) but stays positive down to `x ~ -88.7`, where `exp(-x)` overflows to
/// infinity; see [`super::loss`].
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
