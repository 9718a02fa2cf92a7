//! Conv2d and ConvTranspose2d (`s.transposed`), forward and backward.
//!
//! Both operations are a sum of *taps*: one input element times one weight, added to one
//! output element. `for_each_tap` lists the taps straight from PyTorch's definitions:
//!
//! - Conv2d: `y[n,co,oy,ox] += x[n,ci,oy*s-p+ky, ox*s-p+kx] * w[co,ci,ky,kx]`, taps that
//!   would read outside the input (the zero padding) skipped;
//! - ConvTranspose2d: `y[n,co,iy*s-p+ky, ix*s-p+kx] += x[n,ci,iy,ix] * w[ci,co,ky,kx]`, taps
//!   that would write outside the output dropped. A padding above `kernel - 1` therefore crops
//!   the output (the seed's k1 s1 p2 layer: 32x32 to 28x28).
//!
//! Forward and the three backward passes are each one line over the same taps, so every
//! backward pass is the exact derivative of the forward pass by construction; the hand-checked
//! tests pin down the geometry of the taps themselves.

use super::round_to_f32;
use crate::shapes::ConvShape;

/// One multiply-add of the forward pass: `y[output] += x[input] * w[weight]`.
struct Tap {
    input: usize,
    weight: usize,
    output: usize,
}

/// `y = conv(x, w) + bias`, shape `[batch, out_channels, out_h, out_w]`.
pub fn forward(s: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(x.len(), s.input_len(), "conv input length");
    assert_eq!(w.len(), s.weight_len(), "conv weight length");
    let mut y = vec![0.0f64; s.output_len()];
    for_each_tap(s, |t| {
        y[t.output] += f64::from(x[t.input]) * f64::from(w[t.weight])
    });
    if let Some(bias) = bias {
        assert_eq!(bias.len(), s.out_channels, "conv bias length");
        let pixels = s.out_h() * s.out_w();
        for (i, y) in y.iter_mut().enumerate() {
            *y += f64::from(bias[(i / pixels) % s.out_channels]);
        }
    }
    round_to_f32(&y)
}

/// `dx = dL/dx` given `dy = dL/dy`.
pub fn backward_input(s: &ConvShape, dy: &[f32], w: &[f32]) -> Vec<f32> {
    assert_eq!(dy.len(), s.output_len(), "conv output gradient length");
    assert_eq!(w.len(), s.weight_len(), "conv weight length");
    let mut dx = vec![0.0f64; s.input_len()];
    for_each_tap(s, |t| {
        dx[t.input] += f64::from(dy[t.output]) * f64::from(w[t.weight])
    });
    round_to_f32(&dx)
}

/// `dw = dL/dw` given the forward input `x` and `dy = dL/dy`, in the weight's layout.
pub fn backward_weight(s: &ConvShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), s.input_len(), "conv input length");
    assert_eq!(dy.len(), s.output_len(), "conv output gradient length");
    let mut dw = vec![0.0f64; s.weight_len()];
    for_each_tap(s, |t| {
        dw[t.weight] += f64::from(x[t.input]) * f64::from(dy[t.output])
    });
    round_to_f32(&dw)
}

/// `dbias[co] = sum of dy[n, co, :, :]`.
pub fn backward_bias(s: &ConvShape, dy: &[f32]) -> Vec<f32> {
    assert_eq!(dy.len(), s.output_len(), "conv output gradient length");
    let pixels = s.out_h() * s.out_w();
    let mut dbias = vec![0.0f64; s.out_channels];
    for (i, &g) in dy.iter().enumerate() {
        dbias[(i / pixels) % s.out_channels] += f64::from(g);
    }
    round_to_f32(&dbias)
}

/// Calls `visit` once for every tap of the forward pass (see the module docs).
///
/// The stride always steps over the *strided* side, the output of Conv2d and the input of
/// ConvTranspose2d; the other, *dense* side is indexed at `strided*stride - padding + k`.
fn for_each_tap(s: &ConvShape, mut visit: impl FnMut(Tap)) {
    let (out_h, out_w) = (s.out_h(), s.out_w());
    let (strided_h, strided_w, dense_h, dense_w) = if s.transposed {
        (s.in_h, s.in_w, out_h, out_w)
    } else {
        (out_h, out_w, s.in_h, s.in_w)
    };
    let k = s.kernel;
    for n in 0..s.batch {
        for ci in 0..s.in_channels {
            for co in 0..s.out_channels {
                let weight_base = if s.transposed {
                    (ci * s.out_channels + co) * k * k
                } else {
                    (co * s.in_channels + ci) * k * k
                };
                let input_base = (n * s.in_channels + ci) * s.in_h * s.in_w;
                let output_base = (n * s.out_channels + co) * out_h * out_w;
                for ky in 0..k {
                    for kx in 0..k {
                        for sy in 0..strided_h {
                            let Some(dense_y) = dense_index(s, sy, ky, dense_h) else {
                                continue;
                            };
                            for sx in 0..strided_w {
                                let Some(dense_x) = dense_index(s, sx, kx, dense_w) else {
                                    continue;
                                };
                                let ((iy, ix), (oy, ox)) = if s.transposed {
                                    ((sy, sx), (dense_y, dense_x))
                                } else {
                                    ((dense_y, dense_x), (sy, sx))
                                };
                                visit(Tap {
                                    input: input_base + iy * s.in_w + ix,
                                    weight: weight_base + ky * k + kx,
                                    output: output_base + oy * out_w + ox,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `strided*stride - padding + k` if it lies in `0..dense_extent`, else `None`
/// (a zero-padding read of Conv2d, or a cropped write of ConvTranspose2d).
fn dense_index(s: &ConvShape, strided: usize, k: usize, dense_extent: usize) -> Option<usize> {
    (strided * s.stride + k)
        .checked_sub(s.padding)
        .filter(|&i| i < dense_extent)
}
