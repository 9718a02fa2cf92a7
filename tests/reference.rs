//! Tests of the CPU reference (`src/reference`): every backward pass against central finite
//! differences of its forward pass, forward passes against values worked out by hand, and the
//! output shapes of the seed's layers.

use dcgan_wgpu::reference::{activation, adamw, batchnorm, conv, linear, loss};
use dcgan_wgpu::shapes::{Activation, AdamW, BN_EPS, BatchNormShape, ConvShape, LinearShape};

// ---------------------------------------------------------------------------------------------
// Helpers

/// splitmix64: a tiny deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `L = sum(r .* y)` in `f64`: a random projection of a vector output, so `dL/dy = r`.
fn project(r: &[f32], y: &[f32]) -> f64 {
    assert_eq!(r.len(), y.len());
    r.iter()
        .zip(y)
        .map(|(&r, &y)| f64::from(r) * f64::from(y))
        .sum()
}

/// Coordinates a gradient is probed at: all of them, or a random sample of large tensors.
fn probe_coordinates(len: usize, rng: &mut Rng) -> Vec<usize> {
    const MAX_PROBES: usize = 24;
    if len <= MAX_PROBES {
        (0..len).collect()
    } else {
        (0..MAX_PROBES).map(|_| rng.below(len)).collect()
    }
}

/// Asserts that `analytic` matches central finite differences of `loss` around `at`:
/// `|analytic - numeric| <= tol * (1 + |numeric|)` at every probed coordinate.
fn check_gradient(
    what: &str,
    at: &[f32],
    analytic: &[f32],
    loss: impl Fn(&[f32]) -> f64,
    h: f32,
    tol: f64,
    rng: &mut Rng,
) {
    assert_eq!(at.len(), analytic.len(), "{what}: gradient length");
    for i in probe_coordinates(at.len(), rng) {
        let mut plus = at.to_vec();
        let mut minus = at.to_vec();
        plus[i] += h;
        minus[i] -= h;
        // Divide by the step actually taken after rounding to f32, not by 2h.
        let numeric = (loss(&plus) - loss(&minus)) / (f64::from(plus[i]) - f64::from(minus[i]));
        let analytic = f64::from(analytic[i]);
        assert!(
            (analytic - numeric).abs() <= tol * (1.0 + numeric.abs()),
            "{what}[{i}]: analytic {analytic} vs finite differences {numeric}"
        );
    }
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * (1.0 + e.abs()),
            "{what}[{i}]: {a} vs expected {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Conv2d and ConvTranspose2d

/// Conv outputs are bilinear in (x, w), so central differences have no truncation error; what is
/// left is the f32 rounding of the outputs divided by the step.
const CONV_TOL: f64 = 1e-3;

fn conv_shape(
    transposed: bool,
    batch: usize,
    (in_channels, out_channels): (usize, usize),
    (in_h, in_w): (usize, usize),
    (kernel, stride, padding): (usize, usize, usize),
) -> ConvShape {
    ConvShape {
        batch,
        in_channels,
        out_channels,
        in_h,
        in_w,
        kernel,
        stride,
        padding,
        transposed,
    }
}

/// Whether the geometry leaves at least one output pixel (PyTorch rejects the others).
fn has_output(s: &ConvShape) -> bool {
    let (k, stride, p) = (s.kernel, s.stride, s.padding);
    let fits = |input: usize| {
        if s.transposed {
            (input - 1) * stride + k > 2 * p
        } else {
            input + 2 * p >= k
        }
    };
    fits(s.in_h) && fits(s.in_w)
}

fn check_conv_gradients(s: &ConvShape, rng: &mut Rng) {
    let x = rng.vec(s.input_len(), -1.0, 1.0);
    let w = rng.vec(s.weight_len(), -1.0, 1.0);
    let bias = rng.vec(s.out_channels, -1.0, 1.0);
    let r = rng.vec(s.output_len(), -1.0, 1.0);
    let h = 1e-2;
    check_gradient(
        &format!("dx {s:?}"),
        &x,
        &conv::backward_input(s, &r, &w),
        |x| project(&r, &conv::forward(s, x, &w, Some(&bias))),
        h,
        CONV_TOL,
        rng,
    );
    check_gradient(
        &format!("dw {s:?}"),
        &w,
        &conv::backward_weight(s, &x, &r),
        |w| project(&r, &conv::forward(s, &x, w, Some(&bias))),
        h,
        CONV_TOL,
        rng,
    );
    check_gradient(
        &format!("dbias {s:?}"),
        &bias,
        &conv::backward_bias(s, &r),
        |b| project(&r, &conv::forward(s, &x, &w, Some(b))),
        h,
        CONV_TOL,
        rng,
    );
}

#[test]
fn conv_backward_matches_finite_differences() {
    let mut rng = Rng(1);
    let mut checked = 0;
    for transposed in [false, true] {
        for batch in [1, 3] {
            for size in [1, 3, 7] {
                for stride in [1, 2] {
                    for padding in 0..=3 {
                        for kernel in 1..=4 {
                            let channels = (1 + rng.below(5), 1 + rng.below(5));
                            let geometry = (kernel, stride, padding);
                            let s = conv_shape(transposed, batch, channels, (size, size), geometry);
                            if has_output(&s) {
                                check_conv_gradients(&s, &mut rng);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 250, "only {checked} conv shapes checked");
}

#[test]
fn conv_backward_matches_finite_differences_on_non_square_images() {
    let mut rng = Rng(2);
    for transposed in [false, true] {
        for (size, geometry) in [
            ((3, 7), (3, 2, 1)),
            ((7, 1), (1, 1, 0)),
            ((4, 5), (4, 2, 2)),
        ] {
            let s = conv_shape(transposed, 2, (3, 2), size, geometry);
            check_conv_gradients(&s, &mut rng);
        }
    }
}

#[test]
fn conv_bias_is_added_per_output_channel() {
    let s = conv_shape(false, 1, (1, 2), (2, 2), (1, 1, 0));
    let x = [1.0, 2.0, 3.0, 4.0];
    let w = [1.0, -1.0];
    let no_bias = [1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0];
    assert_eq!(conv::forward(&s, &x, &w, None), no_bias);
    let with_bias = [1.5, 2.5, 3.5, 4.5, 9.0, 8.0, 7.0, 6.0];
    assert_eq!(conv::forward(&s, &x, &w, Some(&[0.5, 10.0])), with_bias);
}

#[test]
fn conv2d_weight_layout_is_out_in() {
    // Conv2d weight [C_out=3, C_in=2]: y[co] = sum_ci w[co, ci] * x[ci].
    let s = conv_shape(false, 1, (2, 3), (1, 1), (1, 1, 0));
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        conv::forward(&s, &[10.0, 100.0], &w, None),
        [210.0, 430.0, 650.0]
    );
}

#[test]
fn conv_transpose_weight_layout_is_in_out() {
    // ConvTranspose2d weight [C_in=2, C_out=3]: y[co] = sum_ci w[ci, co] * x[ci].
    let s = conv_shape(true, 1, (2, 3), (1, 1), (1, 1, 0));
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        conv::forward(&s, &[10.0, 100.0], &w, None),
        [410.0, 520.0, 630.0]
    );
}

#[test]
fn conv2d_stride_2_padding_1_by_hand() {
    // x = [[1,2,3],[4,5,6],[7,8,9]], 3x3 ones kernel, stride 2, padding 1: a 2x2 output of
    // windows clipped to the image.
    let s = conv_shape(false, 1, (1, 1), (3, 3), (3, 2, 1));
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    assert_eq!(
        conv::forward(&s, &x, &[1.0; 9], None),
        [12.0, 16.0, 24.0, 28.0]
    );
}

#[test]
fn conv2d_7_to_3_never_reads_the_last_row_and_column() {
    // The seed's Conv2d(k4, s2, p1) on 7x7: floor((7 + 2 - 4)/2) + 1 = 3. The windows span
    // rows -1..=2, 1..=4, 3..=6: the bottom/right padding row 7 is never read.
    let s = conv_shape(false, 1, (1, 1), (7, 7), (4, 2, 1));
    assert_eq!((s.out_h(), s.out_w()), (3, 3));
    let y = conv::forward(&s, &[1.0; 49], &[1.0; 16], None);
    assert_eq!(y, [9.0, 12.0, 12.0, 12.0, 16.0, 16.0, 12.0, 16.0, 16.0]);
}

#[test]
fn conv_transpose_stride_2_stamps_the_kernel() {
    // Kernel 2, stride 2: each input pixel writes its own 2x2 block, input * w.
    let s = conv_shape(true, 1, (1, 1), (2, 2), (2, 2, 0));
    let y = conv::forward(&s, &[1.0, 2.0, 3.0, 4.0], &[1.0, 10.0, 100.0, 1000.0], None);
    #[rustfmt::skip]
    let expected = [
        1.0, 10.0, 2.0, 20.0,
        100.0, 1000.0, 200.0, 2000.0,
        3.0, 30.0, 4.0, 40.0,
        300.0, 3000.0, 400.0, 4000.0,
    ];
    assert_eq!(y, expected);
}

#[test]
fn conv_transpose_stride_2_padding_1_by_hand() {
    // 2x2 input a, b / c, d; 3x3 kernel w1..w9; stride 2, padding 1: (2-1)*2 - 2 + 3 = 3.
    // Input (iy, ix) writes output (2*iy - 1 + ky, 2*ix - 1 + kx); writes at -1 are dropped,
    // so a contributes w5 w6 / w8 w9 to the top-left 2x2, and the centre gets w9*a + w7*b +
    // w3*c + w1*d.
    let s = conv_shape(true, 1, (1, 1), (2, 2), (3, 2, 1));
    let w: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let (a, b, c, d) = (1.0, 10.0, 100.0, 1000.0);
    let y = conv::forward(&s, &[a, b, c, d], &w, None);
    #[rustfmt::skip]
    let expected = [
        5.0 * a, 6.0 * a + 4.0 * b, 5.0 * b,
        8.0 * a + 2.0 * c, 9.0 * a + 7.0 * b + 3.0 * c + 1.0 * d, 8.0 * b + 2.0 * d,
        5.0 * c, 6.0 * c + 4.0 * d, 5.0 * d,
    ];
    assert_eq!(y, expected);
}

#[test]
fn seed_conv_transpose_k1_p2_crops_32_to_28() {
    // The seed's last generator layer: output (n, 0, y, x) = sum_ci input (n, ci, y+2, x+2) * w[ci].
    let mut rng = Rng(3);
    let s = conv_shape(true, 2, (3, 1), (32, 32), (1, 1, 2));
    assert_eq!((s.out_h(), s.out_w()), (28, 28));
    let x = rng.vec(s.input_len(), -1.0, 1.0);
    let w = rng.vec(s.weight_len(), -1.0, 1.0);
    let mut expected = Vec::new();
    for n in 0..2 {
        for y in 0..28 {
            for x_ in 0..28 {
                let input = |ci: usize| f64::from(x[((n * 3 + ci) * 32 + y + 2) * 32 + x_ + 2]);
                let sum: f64 = (0..3).map(|ci| input(ci) * f64::from(w[ci])).sum();
                expected.push(sum as f32);
            }
        }
    }
    assert_eq!(conv::forward(&s, &x, &w, None), expected);
}

#[test]
fn conv_transpose_is_the_input_gradient_of_conv2d() {
    // ConvTranspose2d(B -> A) forward == Conv2d(A -> B) backward_input on the same weight
    // array, whose layout [B, A, k, k] is [C_out, C_in] of the one and [C_in, C_out] of the other.
    let mut rng = Rng(4);
    for (size, geometry) in [(8, (4, 2, 1)), (5, (3, 1, 1)), (6, (2, 2, 0))] {
        let conv2d = conv_shape(false, 2, (3, 4), (size, size), geometry);
        let low_res = (conv2d.out_h(), conv2d.out_w());
        let transposed = conv_shape(true, 2, (4, 3), low_res, geometry);
        assert_eq!(transposed.output_len(), conv2d.input_len());
        let z = rng.vec(conv2d.output_len(), -1.0, 1.0);
        let w = rng.vec(conv2d.weight_len(), -1.0, 1.0);
        assert_close(
            &conv::forward(&transposed, &z, &w, None),
            &conv::backward_input(&conv2d, &z, &w),
            1e-6,
            "transposed forward vs Conv2d input gradient",
        );
    }
}

#[test]
fn seed_layer_output_shapes_match_the_semantics_table() {
    let transposed =
        |c_in, c_out, size, geometry| conv_shape(true, 1, (c_in, c_out), (size, size), geometry);
    let conv2d =
        |c_in, c_out, size, geometry| conv_shape(false, 1, (c_in, c_out), (size, size), geometry);
    let generator = [
        (transposed(50, 512, 1, (4, 1, 0)), 4),
        (transposed(512, 256, 4, (4, 2, 1)), 8),
        (transposed(256, 128, 8, (4, 2, 1)), 16),
        (transposed(128, 64, 16, (4, 2, 1)), 32),
        (transposed(64, 1, 32, (1, 1, 2)), 28),
    ];
    let discriminator = [
        (conv2d(1, 64, 28, (4, 2, 1)), 14),
        (conv2d(64, 128, 14, (4, 2, 1)), 7),
        (conv2d(128, 256, 7, (4, 2, 1)), 3),
        (conv2d(256, 1, 3, (4, 2, 1)), 1),
    ];
    for (s, size) in generator.iter().chain(&discriminator) {
        assert_eq!((s.out_h(), s.out_w()), (*size, *size), "{s:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm2d

/// BN is smooth but not linear: with h = 1e-2 on O(1) data the truncation error
/// (h^2/6 * f''') and the f32 rounding of the outputs (a whole channel moves with one input,
/// through the statistics) stay below 1e-4.
const BN_TOL: f64 = 1e-3;

fn bn_shape(batch: usize, channels: usize, height: usize, width: usize) -> BatchNormShape {
    BatchNormShape {
        batch,
        channels,
        height,
        width,
    }
}

#[test]
fn batchnorm_backward_matches_finite_differences() {
    let mut rng = Rng(5);
    let shapes = [
        bn_shape(1, 2, 3, 3),
        bn_shape(3, 3, 1, 1),
        bn_shape(2, 1, 2, 3),
        bn_shape(3, 4, 5, 5),
        bn_shape(1, 1, 1, 2),
    ];
    for s in shapes {
        // Give every channel its own offset and scale, so the statistics matter.
        let offsets = rng.vec(s.channels, -2.0, 2.0);
        let scales = rng.vec(s.channels, 0.5, 2.0);
        let x: Vec<f32> = (0..s.len())
            .map(|i| {
                let c = (i / (s.height * s.width)) % s.channels;
                offsets[c] + scales[c] * rng.uniform(-1.0, 1.0)
            })
            .collect();
        let gamma = rng.vec(s.channels, 0.5, 1.5);
        let beta = rng.vec(s.channels, -1.0, 1.0);
        let r = rng.vec(s.len(), -1.0, 1.0);
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| {
            let (mut mean, mut var) = (vec![0.0; s.channels], vec![1.0; s.channels]);
            let (y, _) = batchnorm::forward_train(&s, x, gamma, beta, &mut mean, &mut var);
            project(&r, &y)
        };
        let (mut mean, mut var) = (vec![0.0; s.channels], vec![1.0; s.channels]);
        let (_, stats) = batchnorm::forward_train(&s, &x, &gamma, &beta, &mut mean, &mut var);
        let grads = batchnorm::backward(&s, &x, &gamma, &stats, &r);
        let h = 1e-2;
        let what = format!("{s:?}");
        let dx_loss = |x: &[f32]| loss(x, &gamma, &beta);
        check_gradient(
            &format!("dx {what}"),
            &x,
            &grads.dx,
            dx_loss,
            h,
            BN_TOL,
            &mut rng,
        );
        let dgamma_loss = |g: &[f32]| loss(&x, g, &beta);
        check_gradient(
            &format!("dgamma {what}"),
            &gamma,
            &grads.dgamma,
            dgamma_loss,
            h,
            BN_TOL,
            &mut rng,
        );
        let dbeta_loss = |b: &[f32]| loss(&x, &gamma, b);
        check_gradient(
            &format!("dbeta {what}"),
            &beta,
            &grads.dbeta,
            dbeta_loss,
            h,
            BN_TOL,
            &mut rng,
        );
    }
}

/// Batch 2, 2 channels, 1x2 images. Channel 0 holds 1, 2, 3, 4 and channel 1 holds
/// 10, 30, 50, 70, interleaved in NCHW order.
fn bn_hand_batch() -> (BatchNormShape, [f32; 8]) {
    (
        bn_shape(2, 2, 1, 2),
        [1.0, 2.0, 10.0, 30.0, 3.0, 4.0, 50.0, 70.0],
    )
}

#[test]
fn batchnorm_training_statistics_by_hand() {
    // Channel 0: mean 2.5, biased variance 1.25, unbiased 5/3.
    // Channel 1: mean 40, biased variance 2000/4 = 500, unbiased 2000/3.
    let (s, x) = bn_hand_batch();
    let (mut running_mean, mut running_var) = (vec![0.0, 0.0], vec![1.0, 1.0]);
    let (y, stats) = batchnorm::forward_train(
        &s,
        &x,
        &[1.0, 2.0],
        &[0.0, 1.0],
        &mut running_mean,
        &mut running_var,
    );
    let inv_std = [1.0 / (1.25 + BN_EPS).sqrt(), 1.0 / (500.0 + BN_EPS).sqrt()];
    assert_close(&stats.mean, &[2.5, 40.0], 1e-7, "batch mean");
    assert_close(&stats.inv_std, &inv_std, 1e-6, "inverse std");
    let expected_y = [
        -1.5 * inv_std[0],
        -0.5 * inv_std[0],
        -30.0 * inv_std[1] * 2.0 + 1.0,
        -10.0 * inv_std[1] * 2.0 + 1.0,
        0.5 * inv_std[0],
        1.5 * inv_std[0],
        10.0 * inv_std[1] * 2.0 + 1.0,
        30.0 * inv_std[1] * 2.0 + 1.0,
    ];
    assert_close(&y, &expected_y, 1e-6, "normalised output");
    // running = 0.9 * running + 0.1 * batch statistic (unbiased variance).
    assert_close(&running_mean, &[0.25, 4.0], 1e-7, "running mean");
    let expected_var = [0.9 + 0.1 * 5.0 / 3.0, 0.9 + 0.1 * 2000.0 / 3.0];
    assert_close(&running_var, &expected_var, 1e-7, "running var");
    // A second training forward (the seed runs D three times per step) moves them again.
    batchnorm::forward_train(
        &s,
        &x,
        &[1.0, 2.0],
        &[0.0, 1.0],
        &mut running_mean,
        &mut running_var,
    );
    assert_close(
        &running_mean,
        &[0.475, 7.6],
        1e-7,
        "running mean after two batches",
    );
    let expected_var = [
        0.9 * expected_var[0] + 0.1 * 5.0 / 3.0,
        0.9 * expected_var[1] + 0.1 * 2000.0 / 3.0,
    ];
    assert_close(
        &running_var,
        &expected_var,
        1e-7,
        "running var after two batches",
    );
}

#[test]
fn batchnorm_eval_uses_running_statistics() {
    let (s, x) = bn_hand_batch();
    let y = batchnorm::forward_eval(
        &s,
        &x,
        &[1.0, 2.0],
        &[0.0, 1.0],
        &[2.0, 10.0],
        &[4.0, 100.0],
    );
    let (a, b) = (1.0 / (4.0 + BN_EPS).sqrt(), 2.0 / (100.0 + BN_EPS).sqrt());
    let expected = [
        -a,
        0.0,
        1.0,
        20.0 * b + 1.0,
        a,
        2.0 * a,
        40.0 * b + 1.0,
        60.0 * b + 1.0,
    ];
    assert_close(&y, &expected, 1e-6, "eval output");
}

#[test]
#[should_panic(expected = "more than 1 value per channel")]
fn batchnorm_training_rejects_a_single_value_per_channel() {
    let s = bn_shape(1, 2, 1, 1);
    batchnorm::forward_train(
        &s,
        &[1.0, 2.0],
        &[1.0; 2],
        &[0.0; 2],
        &mut [0.0; 2],
        &mut [1.0; 2],
    );
}

// ---------------------------------------------------------------------------------------------
// Activations

/// Smooth pointwise functions, h = 1e-3: truncation (h^2/6 * f''') and f32 rounding of one
/// output divided by 2h (about 3e-5) both stay below 1e-4.
const ACTIVATION_TOL: f64 = 5e-4;

const ACTIVATIONS: [Activation; 5] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.2),
    Activation::Tanh,
    Activation::Sigmoid,
];

#[test]
fn activation_backward_matches_finite_differences() {
    let mut rng = Rng(6);
    for a in ACTIVATIONS {
        // Keep clear of ReLU's kink at 0, where finite differences straddle two slopes.
        let x: Vec<f32> = (0..40)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 } * rng.uniform(0.05, 3.0))
            .collect();
        let r = rng.vec(x.len(), -1.0, 1.0);
        let analytic = activation::backward(a, &x, &r);
        let loss = |x: &[f32]| project(&r, &activation::forward(a, x));
        check_gradient(
            &format!("{a:?}"),
            &x,
            &analytic,
            loss,
            1e-3,
            ACTIVATION_TOL,
            &mut rng,
        );
    }
}

#[test]
fn activations_by_hand() {
    let x = [-2.0, 0.0, 3.0];
    let dy = [1.0; 3];
    assert_eq!(activation::forward(Activation::Relu, &x), [0.0, 0.0, 3.0]);
    assert_eq!(
        activation::forward(Activation::LeakyRelu(0.2), &x),
        [-0.4, 0.0, 3.0]
    );
    // PyTorch: ReLU's derivative at 0 is 0; LeakyReLU's is the slope (`x > 0 ? dy : dy*slope`).
    assert_eq!(
        activation::backward(Activation::Relu, &x, &dy),
        [0.0, 0.0, 1.0]
    );
    assert_eq!(
        activation::backward(Activation::LeakyRelu(0.2), &x, &dy),
        [0.2, 0.2, 1.0]
    );
    assert_eq!(activation::forward(Activation::Identity, &x), x);
    assert_eq!(
        activation::backward(Activation::Identity, &x, &[5.0; 3]),
        [5.0; 3]
    );
    assert_eq!(activation::forward(Activation::Sigmoid, &[0.0]), [0.5]);
    assert_eq!(
        activation::backward(Activation::Sigmoid, &[0.0], &[1.0]),
        [0.25]
    );
    assert_eq!(activation::forward(Activation::Tanh, &[0.0]), [0.0]);
    assert_eq!(
        activation::backward(Activation::Tanh, &[0.0], &[1.0]),
        [1.0]
    );
    assert_close(
        &activation::forward(Activation::Tanh, &[1.0]),
        &[0.761_594_2],
        1e-7,
        "tanh(1)",
    );
}

// ---------------------------------------------------------------------------------------------
// Linear

/// Linear is bilinear like conv: only output rounding, divided by the step.
const LINEAR_TOL: f64 = 1e-3;

#[test]
fn linear_backward_matches_finite_differences() {
    let mut rng = Rng(7);
    for (batch, in_features, out_features) in [(1, 1, 1), (3, 4, 2), (5, 1, 1), (2, 7, 3)] {
        let s = LinearShape {
            batch,
            in_features,
            out_features,
        };
        let x = rng.vec(batch * in_features, -1.0, 1.0);
        let w = rng.vec(out_features * in_features, -1.0, 1.0);
        let b = rng.vec(out_features, -1.0, 1.0);
        let r = rng.vec(batch * out_features, -1.0, 1.0);
        let h = 1e-2;
        let what = format!("{s:?}");
        let dx = linear::backward_input(&s, &r, &w);
        let x_loss = |x: &[f32]| project(&r, &linear::forward(&s, x, &w, &b));
        check_gradient(
            &format!("dx {what}"),
            &x,
            &dx,
            x_loss,
            h,
            LINEAR_TOL,
            &mut rng,
        );
        let dw = linear::backward_weight(&s, &x, &r);
        let w_loss = |w: &[f32]| project(&r, &linear::forward(&s, &x, w, &b));
        check_gradient(
            &format!("dw {what}"),
            &w,
            &dw,
            w_loss,
            h,
            LINEAR_TOL,
            &mut rng,
        );
        let db = linear::backward_bias(&s, &r);
        let b_loss = |b: &[f32]| project(&r, &linear::forward(&s, &x, &w, b));
        check_gradient(
            &format!("dbias {what}"),
            &b,
            &db,
            b_loss,
            h,
            LINEAR_TOL,
            &mut rng,
        );
    }
}

#[test]
fn linear_by_hand() {
    // The seed's Linear(1 -> 1): y = x*w + b, batch 2.
    let seed = LinearShape {
        batch: 2,
        in_features: 1,
        out_features: 1,
    };
    assert_eq!(
        linear::forward(&seed, &[2.0, -1.0], &[3.0], &[0.5]),
        [6.5, -2.5]
    );
    // Weight [out=2, in=3]: y[o] = sum_i w[o, i] x[i] + b[o].
    let s = LinearShape {
        batch: 1,
        in_features: 3,
        out_features: 2,
    };
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        linear::forward(&s, &[1.0, 10.0, 100.0], &w, &[0.0, 1.0]),
        [321.0, 655.0]
    );
    assert_eq!(
        linear::backward_input(&s, &[1.0, 10.0], &w),
        [41.0, 52.0, 63.0]
    );
}

// ---------------------------------------------------------------------------------------------
// Binary cross-entropy

/// The loss is a single f32 (about 6e-8 relative), divided by 2h = 2e-3; the truncation error
/// h^2/6 * f''' stays small for p in [0.2, 0.8].
const BCE_TOL: f64 = 1e-3;

#[test]
fn bce_backward_matches_finite_differences() {
    let mut rng = Rng(8);
    let p = rng.vec(12, 0.2, 0.8);
    // Hard targets and soft ones.
    let t: Vec<f32> = (0..12)
        .map(|i| match i % 3 {
            0 => 0.0,
            1 => 1.0,
            _ => rng.uniform(0.0, 1.0),
        })
        .collect();
    let analytic = loss::bce_backward(&p, &t);
    let l = |p: &[f32]| f64::from(loss::bce_forward(p, &t));
    check_gradient("BCE dp", &p, &analytic, l, 1e-3, BCE_TOL, &mut rng);

    let z = rng.vec(12, -4.0, 4.0);
    let analytic = loss::bce_with_logits_backward(&z, &t);
    let l = |z: &[f32]| f64::from(loss::bce_with_logits_forward(z, &t));
    check_gradient(
        "BCE with logits dz",
        &z,
        &analytic,
        l,
        1e-3,
        BCE_TOL,
        &mut rng,
    );
}

#[test]
fn bce_clamps_the_logarithms_at_minus_100() {
    // A confident wrong answer costs 100, not infinity; a confident right one costs 0.
    assert_eq!(loss::bce_forward(&[0.0], &[1.0]), 100.0);
    assert_eq!(loss::bce_forward(&[1.0], &[0.0]), 100.0);
    assert_eq!(loss::bce_forward(&[0.0, 1.0], &[0.0, 1.0]), 0.0);
    assert_eq!(loss::bce_forward(&[0.0, 1.0], &[1.0, 1.0]), 50.0);
    // NaN passes the clamp, as with torch.clamp: divergence stays visible.
    assert!(loss::bce_forward(&[f32::NAN, 0.5], &[1.0, 1.0]).is_nan());
    assert!(loss::bce_forward(&[f32::NAN], &[0.0]).is_nan());
    assert_close(
        &[loss::bce_forward(&[0.5], &[1.0])],
        &[std::f32::consts::LN_2],
        1e-7,
        "BCE(0.5, 1)",
    );
}

#[test]
fn bce_backward_by_hand() {
    // (p - t) / max(p(1-p), 1e-12) / n with n = 4.
    let g = loss::bce_backward(&[0.5, 1.0, 1.0, 0.0], &[1.0, 0.0, 1.0, 0.0]);
    assert_eq!(g[0], -2.0 / 4.0);
    assert_close(&g[1..2], &[1e12 / 4.0], 1e-6, "gradient at p=1, t=0");
    assert_eq!(g[2..], [0.0, 0.0]);
}

/// `BCE(sigmoid(z), t)` and its gradient with respect to `z`, through the two reference ops.
fn sigmoid_then_bce(z: &[f32], t: &[f32]) -> (f32, Vec<f32>) {
    let p = activation::forward(Activation::Sigmoid, z);
    let dz = activation::backward(Activation::Sigmoid, z, &loss::bce_backward(&p, t));
    (loss::bce_forward(&p, t), dz)
}

#[test]
fn bce_with_logits_agrees_with_sigmoid_then_bce_for_moderate_logits() {
    let mut rng = Rng(9);
    let z = rng.vec(16, -8.0, 8.0);
    let t: Vec<f32> = (0..16).map(|i| (i % 2) as f32).collect();
    let (clamped_loss, clamped_dz) = sigmoid_then_bce(&z, &t);
    let logits_loss = loss::bce_with_logits_forward(&z, &t);
    assert_close(&[clamped_loss], &[logits_loss], 1e-5, "loss");
    assert_close(
        &clamped_dz,
        &loss::bce_with_logits_backward(&z, &t),
        1e-5,
        "dz",
    );
}

#[test]
fn sigmoid_then_bce_saturates_where_bce_with_logits_does_not() {
    // z = 20, target 0: sigmoid rounds to exactly 1, so the clamped form reports 100 and
    // passes back exactly 0 through the sigmoid; the logits form gives the true loss ~20 and
    // the gradient (1 - 0)/n.
    let (z, t) = ([20.0], [0.0]);
    let (clamped_loss, clamped_dz) = sigmoid_then_bce(&z, &t);
    assert_eq!(activation::forward(Activation::Sigmoid, &z), [1.0]);
    assert_eq!((clamped_loss, clamped_dz[0]), (100.0, 0.0));
    assert_close(
        &[loss::bce_with_logits_forward(&z, &t)],
        &[20.0],
        1e-7,
        "logits loss",
    );
    assert_eq!(loss::bce_with_logits_backward(&z, &t), [1.0]);

    // z = -40, target 1: sigmoid is still positive (4e-18) and the loss right (40), but
    // p(1-p) is under the 1e-12 floor, so the gradient collapses from -1 to about -4e-6.
    let (z, t) = ([-40.0], [1.0]);
    let (clamped_loss, clamped_dz) = sigmoid_then_bce(&z, &t);
    assert_close(&[clamped_loss], &[40.0], 1e-6, "clamped loss at z=-40");
    assert!(
        clamped_dz[0] < 0.0 && clamped_dz[0] > -1e-5,
        "clamped dz {}",
        clamped_dz[0]
    );
    assert_close(
        &[loss::bce_with_logits_forward(&z, &t)],
        &[40.0],
        1e-7,
        "logits loss",
    );
    assert_eq!(loss::bce_with_logits_backward(&z, &t), [-1.0]);
}

// ---------------------------------------------------------------------------------------------
// AdamW

#[test]
fn adamw_first_step_moves_each_parameter_by_lr() {
    // Step 1: m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps) ~ lr * sign(g)
    // when |g| >> eps, after the decoupled decay p *= 1 - lr*wd.
    let h = AdamW::default();
    let mut p = [0.5, -0.3, 2.0, 1.0];
    let g = [0.1, -3.0, 1e-3, -40.0];
    let (mut m, mut v) = ([0.0; 4], [0.0; 4]);
    let before = p;
    adamw::step(&h, 1, &mut p, &g, &mut m, &mut v);
    for i in 0..4 {
        let expected = (f64::from(before[i]) * (1.0 - h.lr * h.weight_decay)
            - h.lr * f64::from(g[i].signum())) as f32;
        assert!(
            (p[i] - expected).abs() < 3e-7,
            "p[{i}] = {} vs {expected}",
            p[i]
        );
    }
}

#[test]
fn adamw_with_zero_gradient_only_decays() {
    let h = AdamW::default();
    let mut p = [0.5, -0.3, 2.0];
    let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
    adamw::step(&h, 1, &mut p, &[0.0; 3], &mut m, &mut v);
    let decay = (1.0 - h.lr * h.weight_decay) as f32;
    assert_eq!(p, [0.5 * decay, -0.3 * decay, 2.0 * decay]);
    assert_eq!((m, v), ([0.0; 3], [0.0; 3]));
}

#[test]
fn adamw_matches_the_textbook_formula_over_several_steps() {
    // Loshchilov & Hutter's AdamW as torch.optim.AdamW writes it, in f64:
    // p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    // p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
    let mut rng = Rng(10);
    let seed_hyperparameters = AdamW::default();
    let strong_decay = AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    for h in [seed_hyperparameters, strong_decay] {
        let mut p = rng.vec(6, -1.0, 1.0);
        let (mut m, mut v) = (vec![0.0; 6], vec![0.0; 6]);
        let mut p64: Vec<f64> = p.iter().map(|&p| f64::from(p)).collect();
        let (mut m64, mut v64) = (vec![0.0f64; 6], vec![0.0f64; 6]);
        let (lr, b1, b2) = (h.lr, h.beta1, h.beta2);
        let (eps, wd) = (h.eps, h.weight_decay);
        for t in 1..=10 {
            let g = rng.vec(6, -1.0, 1.0);
            adamw::step(&h, t, &mut p, &g, &mut m, &mut v);
            for i in 0..6 {
                let g = f64::from(g[i]);
                p64[i] *= 1.0 - lr * wd;
                m64[i] = b1 * m64[i] + (1.0 - b1) * g;
                v64[i] = b2 * v64[i] + (1.0 - b2) * g * g;
                let m_hat = m64[i] / (1.0 - b1.powi(t as i32));
                let v_hat = v64[i] / (1.0 - b2.powi(t as i32));
                p64[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
        // f32 rounding of p (6e-8) over 10 steps, amplified a little through m / sqrt(v).
        for i in 0..6 {
            assert!(
                (f64::from(p[i]) - p64[i]).abs() < 2e-6,
                "{h:?} p[{i}]: {} vs {}",
                p[i],
                p64[i]
            );
            assert!((f64::from(m[i]) - m64[i]).abs() < 1e-6, "{h:?} m[{i}]");
            assert!(
                (f64::from(v[i]) - v64[i]).abs() < 1e-6 * v64[i].max(1e-3),
                "{h:?} v[{i}]"
            );
        }
    }
}
