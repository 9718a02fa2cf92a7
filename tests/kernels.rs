//! Every non-convolution kernel against the CPU reference: BatchNorm2d, activations,
//! bias gradients, Linear, the Sigmoid + BCE head, AdamW, noise and the data gather.

mod common;

use common::{
    Ctx, abs, assert_bits_equal, assert_within, random, sum_bound, to_nchw, to_nhwc, with_gpu,
};
use dcgan_wgpu::buffers;
use dcgan_wgpu::kernels::activation::{self, ActivationPass};
use dcgan_wgpu::kernels::adamw::{self, Hyper};
use dcgan_wgpu::kernels::batchnorm::{self, BatchNormPass};
use dcgan_wgpu::kernels::gemm::{Epilogue, Tiling};
use dcgan_wgpu::kernels::linear::{self, LinearPass};
use dcgan_wgpu::kernels::loss::{self, MetricSlots};
use dcgan_wgpu::kernels::{bias, data, noise};
use dcgan_wgpu::reference;
use dcgan_wgpu::shapes::{Activation, AdamW, BatchNormShape, LinearShape};

const ACTIVATIONS: [Activation; 5] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.2),
    Activation::Tanh,
    Activation::Sigmoid,
];

/// Transcendental functions on GPUs are accurate to a few ulp, not correctly rounded.
fn ulps(n: f32, value: f32) -> f32 {
    n * f32::EPSILON * value.abs().max(1.0)
}

#[test]
fn activations_forward_and_backward_match_reference() {
    with_gpu(|ctx| {
        // Include exact zeros: ReLU's gradient there is 0, as in PyTorch.
        let mut x = random(1000, 1, 4.0);
        x[0] = 0.0;
        x[1] = -0.0;
        let dy = random(1000, 2, 1.0);
        let (xb, dyb) = (ctx.upload(&x), ctx.upload(&dy));
        for a in ACTIVATIONS {
            let out = ctx.zeros(x.len());
            ctx.run(
                &activation::launch(ActivationPass::Forward, a, x.len()),
                &[("x", &xb), ("y", &out)],
            );
            let want = reference::activation::forward(a, &x);
            assert_within(&format!("{a:?} forward"), &ctx.read(&out), &want, |i| {
                ulps(8.0, want[i])
            });
            ctx.run(
                &activation::launch(ActivationPass::Backward, a, x.len()),
                &[("x", &xb), ("dy", &dyb), ("dx", &out)],
            );
            let want = reference::activation::backward(a, &x, &dy);
            assert_within(&format!("{a:?} backward"), &ctx.read(&out), &want, |i| {
                ulps(16.0, want[i])
            });
        }
        for a in [Activation::Tanh, Activation::Sigmoid] {
            let y = reference::activation::forward(a, &x);
            let (yb, out) = (ctx.upload(&y), ctx.zeros(x.len()));
            ctx.run(
                &activation::launch(ActivationPass::BackwardFromOutput, a, x.len()),
                &[("y", &yb), ("dy", &dyb), ("dx", &out)],
            );
            let want = reference::activation::backward(a, &x, &dy);
            assert_within(&format!("{a:?} from output"), &ctx.read(&out), &want, |i| {
                ulps(16.0, want[i])
            });
        }
    });
}

struct BatchNormCase {
    s: BatchNormShape,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    running: Vec<f32>,
}

impl BatchNormCase {
    fn new(s: BatchNormShape, seed: u64) -> BatchNormCase {
        // An offset mean and a spread like a convolution output's.
        let x = random(s.len(), seed, 2.0).iter().map(|v| v + 0.5).collect();
        let gamma = random(s.channels, seed + 1, 0.5)
            .iter()
            .map(|g| g + 1.0)
            .collect();
        let beta = random(s.channels, seed + 2, 0.5);
        let mut running = random(s.channels, seed + 3, 0.1);
        running.extend(random(s.channels, seed + 4, 0.1).iter().map(|v| v + 1.0));
        BatchNormCase {
            s,
            x,
            gamma,
            beta,
            running,
        }
    }

    fn affine(&self) -> Vec<f32> {
        [self.gamma.clone(), self.beta.clone()].concat()
    }
}

fn bn_shapes() -> Vec<BatchNormShape> {
    let shape = |batch, channels, height, width| BatchNormShape {
        batch,
        channels,
        height,
        width,
    };
    vec![
        shape(2, 512, 4, 4),
        shape(2, 64, 32, 32),
        shape(3, 5, 7, 7),
        shape(1, 3, 3, 1),
        shape(7, 4, 1, 1),
    ]
}

#[test]
fn batchnorm_training_forward_and_backward_match_reference() {
    with_gpu(|ctx| {
        for (i, s) in bn_shapes().into_iter().enumerate() {
            for activation in [
                Activation::Identity,
                Activation::Relu,
                Activation::LeakyRelu(0.2),
            ] {
                check_batchnorm(ctx, &BatchNormCase::new(s, 10 * i as u64), activation);
            }
        }
    });
}

fn check_batchnorm(ctx: &mut Ctx, case: &BatchNormCase, activation: Activation) {
    let s = case.s;
    let n = s.per_channel();
    let what = format!("{s:?} {activation:?}");
    let (c, h, w) = (s.channels, s.height, s.width);
    let x = ctx.upload(&to_nhwc(&case.x, c, h, w));
    let affine = ctx.upload(&case.affine());
    let running = ctx.upload(&case.running);
    let stats = ctx.zeros(batchnorm::stats_len(s.channels));
    let partials = ctx.zeros(batchnorm::partials_len(&s));
    let y = ctx.zeros(s.len());
    let launch = |pass| batchnorm::launch(&s, activation, pass, false);
    ctx.run(
        &launch(BatchNormPass::TrainPartials),
        &[("x", &x), ("partials", &partials)],
    );
    ctx.run(
        &launch(BatchNormPass::TrainCombine),
        &[
            ("affine", &affine),
            ("running", &running),
            ("stats", &stats),
            ("partials", &partials),
        ],
    );
    ctx.run(
        &launch(BatchNormPass::Apply),
        &[("x", &x), ("stats", &stats), ("y", &y)],
    );
    let (mut mean, mut var) = (
        case.running[..s.channels].to_vec(),
        case.running[s.channels..].to_vec(),
    );
    let (normalised, saved) = reference::batchnorm::forward_train(
        &s,
        &case.x,
        &case.gamma,
        &case.beta,
        &mut mean,
        &mut var,
    );
    let want = reference::activation::forward(activation, &normalised);
    // Sums over n values in f32 (mean and variance), then a few operations more.
    let scale = |v: f32| sum_bound(n, 4.0 * v.abs().max(1.0));
    assert_within(
        &format!("{what} forward"),
        &to_nchw(&ctx.read(&y), c, h, w),
        &want,
        |i| scale(want[i]),
    );
    let running_now = ctx.read(&running);
    let want_running = [mean, var].concat();
    assert_within(
        &format!("{what} running stats"),
        &running_now,
        &want_running,
        |i| scale(want_running[i]),
    );

    // Backward: the gradient arrives at the activation output.
    let dy = random(s.len(), 99, 1.0);
    let grad = ctx.upload(&to_nhwc(&dy, c, h, w));
    let affine_grad = ctx.upload(&vec![0.25; 2 * s.channels]);
    ctx.run(
        &launch(BatchNormPass::BackwardPartials),
        &[
            ("x", &x),
            ("stats", &stats),
            ("grad", &grad),
            ("partials", &partials),
        ],
    );
    ctx.run(
        &batchnorm::launch(&s, activation, BatchNormPass::BackwardCombine, true),
        &[
            ("stats", &stats),
            ("affine_grad", &affine_grad),
            ("partials", &partials),
        ],
    );
    ctx.run(
        &launch(BatchNormPass::BackwardApply),
        &[
            ("x", &x),
            ("affine", &affine),
            ("stats", &stats),
            ("grad", &grad),
        ],
    );
    let dnormalised = reference::activation::backward(activation, &normalised, &dy);
    let want = reference::batchnorm::backward(&s, &case.x, &case.gamma, &saved, &dnormalised);
    let magnitude = abs(&dnormalised).iter().sum::<f32>() / n as f32;
    assert_within(
        &format!("{what} dx"),
        &to_nchw(&ctx.read(&grad), c, h, w),
        &want.dx,
        |_| sum_bound(n, 8.0 * magnitude.max(1.0)),
    );
    let want_affine: Vec<f32> = [want.dgamma, want.dbeta]
        .concat()
        .iter()
        .map(|g| g + 0.25)
        .collect();
    assert_within(
        &format!("{what} dgamma, dbeta (accumulated)"),
        &ctx.read(&affine_grad),
        &want_affine,
        |i| sum_bound(n, 4.0 * n as f32 * magnitude.max(want_affine[i].abs())),
    );
}

#[test]
fn batchnorm_eval_forward_matches_reference() {
    with_gpu(|ctx| {
        let s = bn_shapes()[2];
        let case = BatchNormCase::new(s, 5);
        let activation = Activation::Relu;
        let (c, h, w) = (s.channels, s.height, s.width);
        let x = ctx.upload(&to_nhwc(&case.x, c, h, w));
        let affine = ctx.upload(&case.affine());
        let running = ctx.upload(&case.running);
        let stats = ctx.zeros(batchnorm::stats_len(s.channels));
        let y = ctx.zeros(s.len());
        let launch = |pass| batchnorm::launch(&s, activation, pass, false);
        ctx.run(
            &launch(BatchNormPass::EvalStats),
            &[
                ("affine", &affine),
                ("running", &running),
                ("stats", &stats),
            ],
        );
        ctx.run(
            &launch(BatchNormPass::Apply),
            &[("x", &x), ("stats", &stats), ("y", &y)],
        );
        let (mean, var) = case.running.split_at(s.channels);
        let normalised =
            reference::batchnorm::forward_eval(&s, &case.x, &case.gamma, &case.beta, mean, var);
        let want = reference::activation::forward(activation, &normalised);
        let got = to_nchw(&ctx.read(&y), c, h, w);
        assert_within("eval forward", &got, &want, |i| ulps(8.0, want[i]));
        assert_eq!(
            ctx.read(&running),
            case.running,
            "eval mode must not touch running stats"
        );
    });
}

#[test]
fn bias_gradient_is_the_channel_sum() {
    with_gpu(|ctx| {
        for (batch, channels, plane) in [(3, 5, 49), (128, 1, 1), (2, 64, 1024)] {
            let dy = random(batch * channels * plane, 3, 1.0);
            let nhwc = to_nhwc(&dy, channels, plane, 1);
            let (dyb, out) = (ctx.upload(&nhwc), ctx.upload(&vec![1.0; channels]));
            ctx.run(
                &bias::channel_sum(batch, channels, plane, true),
                &[("dy", &dyb), ("dbias", &out)],
            );
            let want: Vec<f32> = (0..channels)
                .map(|c| {
                    1.0 + (0..batch)
                        .flat_map(|b| (0..plane).map(move |p| (b * channels + c) * plane + p))
                        .map(|i| dy[i] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            assert_within("channel sum", &ctx.read(&out), &want, |_| {
                sum_bound(batch * plane, (batch * plane) as f32)
            });
        }
    });
}

#[test]
fn linear_forward_and_backward_match_reference() {
    with_gpu(|ctx| {
        let shapes = [
            LinearShape {
                batch: 5,
                in_features: 1,
                out_features: 1,
            },
            LinearShape {
                batch: 3,
                in_features: 7,
                out_features: 4,
            },
            LinearShape {
                batch: 128,
                in_features: 1,
                out_features: 1,
            },
        ];
        for s in shapes {
            let x = random(s.batch * s.in_features, 1, 1.0);
            let w = random(s.out_features * s.in_features, 2, 1.0);
            let b = random(s.out_features, 3, 1.0);
            let dy = random(s.batch * s.out_features, 4, 1.0);
            let (xb, wb, bb, dyb) = (
                ctx.upload(&x),
                ctx.upload(&w),
                ctx.upload(&b),
                ctx.upload(&dy),
            );
            for tiling in [Tiling::PORTABLE, Tiling::NARROW] {
                let with_bias = Epilogue {
                    bias: true,
                    ..Epilogue::default()
                };
                let y = ctx.zeros(s.batch * s.out_features);
                ctx.run(
                    &linear::launch(&s, LinearPass::Forward, with_bias, tiling),
                    &[("x", &xb), ("w", &wb), ("y", &y), ("bias", &bb)],
                );
                let want = reference::linear::forward(&s, &x, &w, &b);
                assert_within("linear forward", &ctx.read(&y), &want, |_| {
                    sum_bound(s.in_features + 1, (s.in_features + 1) as f32)
                });
                let dx = ctx.zeros(s.batch * s.in_features);
                ctx.run(
                    &linear::launch(&s, LinearPass::InputGrad, Epilogue::default(), tiling),
                    &[("dy", &dyb), ("w", &wb), ("dx", &dx)],
                );
                let want = reference::linear::backward_input(&s, &dy, &w);
                assert_within("linear dx", &ctx.read(&dx), &want, |_| {
                    sum_bound(s.out_features, s.out_features as f32)
                });
                let dw = ctx.zeros(s.out_features * s.in_features);
                ctx.run(
                    &linear::launch(&s, LinearPass::WeightGrad, Epilogue::default(), tiling),
                    &[("dy", &dyb), ("x", &xb), ("dw", &dw)],
                );
                let want = reference::linear::backward_weight(&s, &x, &dy);
                assert_within("linear dw", &ctx.read(&dw), &want, |_| {
                    sum_bound(s.batch, s.batch as f32)
                });
            }
        }
    });
}

const SLOTS: MetricSlots = MetricSlots {
    per_step: 4,
    loss: 1,
    mean_probability: 2,
};

fn run_head(ctx: &mut Ctx, logits: &[f32], target: f32, slot: u32) -> (Vec<f32>, Vec<f32>) {
    let z = ctx.upload(logits);
    let dz = ctx.zeros(logits.len());
    let metrics = ctx.zeros(4 * SLOTS.per_step);
    let step = buffers::uniform(&ctx.gpu, "step", &[0u32, 0, slot, 0]);
    ctx.run(
        &loss::sigmoid_bce(logits.len(), target, SLOTS),
        &[
            ("logits", &z),
            ("dlogits", &dz),
            ("metrics", &metrics),
            ("step", &step),
        ],
    );
    (ctx.read(&dz), ctx.read(&metrics))
}

#[test]
fn sigmoid_bce_head_matches_pytorch_semantics() {
    with_gpu(|ctx| {
        // Ordinary logits, and saturated ones where the sigmoid rounds to 0 or 1.
        let mut logits = random(37, 5, 6.0);
        logits.extend([30.0, -30.0, 100.0, -100.0, 17.0, -17.0]);
        for target in [1.0, 0.0] {
            let (dz, metrics) = run_head(ctx, &logits, target, 2);
            let p = reference::activation::forward(Activation::Sigmoid, &logits);
            let t = vec![target; logits.len()];
            let loss = reference::loss::bce_forward(&p, &t);
            let dp = reference::loss::bce_backward(&p, &t);
            let want_dz = reference::activation::backward(Activation::Sigmoid, &logits, &dp);
            let slot = 2 * SLOTS.per_step;
            let got_loss = metrics[slot + SLOTS.loss];
            assert!(
                (got_loss - loss).abs() <= 1e-5 * loss.abs().max(1.0),
                "loss {got_loss} vs {loss}"
            );
            let mean_p = p.iter().sum::<f32>() / p.len() as f32;
            let got_p = metrics[slot + SLOTS.mean_probability];
            assert!((got_p - mean_p).abs() <= 1e-6, "mean p {got_p} vs {mean_p}");
            assert_within(&format!("dlogits, target {target}"), &dz, &want_dz, |i| {
                ulps(32.0, want_dz[i]) / logits.len() as f32
            });
            // Saturated the wrong way: loss clamped at 100 per element, zero gradient.
            let wrong = if target == 1.0 { -100.0 } else { 100.0 };
            let (dz, metrics) = run_head(ctx, &[wrong], target, 0);
            assert_eq!(metrics[SLOTS.loss], 100.0);
            assert_eq!(dz[0], 0.0);
            // A NaN logit (a diverged discriminator) gives a NaN loss, as in PyTorch,
            // not the clamp's 100.
            let (_, metrics) = run_head(ctx, &[0.5, f32::NAN], target, 1);
            let slot = SLOTS.per_step;
            assert!(metrics[slot + SLOTS.loss].is_nan(), "{metrics:?}");
            assert!(metrics[slot + SLOTS.mean_probability].is_nan());
        }
    });
}

#[test]
fn adamw_matches_reference_over_several_steps() {
    with_gpu(|ctx| {
        let h = AdamW::default();
        let count = 1000;
        let mut p = random(count, 1, 0.1);
        let (mut m, mut v) = (vec![0.0; count], vec![0.0; count]);
        let (pb, mb, vb) = (ctx.upload(&p), ctx.upload(&m), ctx.upload(&v));
        for t in 1..=5 {
            // Tiny, zero and large gradients: AdamW is most sensitive near zero.
            let mut g = random(count, 10 + t as u64, 1.0);
            g[0] = 0.0;
            g[1] = 1e-12;
            g[2] = 1e3;
            let gb = ctx.upload(&g);
            let hyper = buffers::uniform(&ctx.gpu, "hyper", &Hyper::at_step(&h, t));
            ctx.run(
                &adamw::step(count),
                &[
                    ("params", &pb),
                    ("grads", &gb),
                    ("exp_avg", &mb),
                    ("exp_avg_sq", &vb),
                    ("hyper", &hyper),
                ],
            );
            reference::adamw::step(&h, t, &mut p, &g, &mut m, &mut v);
        }
        // Same float operations in the same order, except sqrt and division rounding.
        assert_within("params", &ctx.read(&pb), &p, |i| ulps(4.0, p[i]) * 0.1);
        assert_within("exp_avg", &ctx.read(&mb), &m, |i| ulps(2.0, m[i]) * 1e-3);
        assert_within("exp_avg_sq", &ctx.read(&vb), &v, |i| {
            4.0 * f32::EPSILON * v[i].abs()
        });
    });
}

#[test]
fn noise_is_standard_normal_and_reproducible() {
    with_gpu(|ctx| {
        let count = 50 * 128 + 3;
        let out = ctx.zeros(count);
        let launch = noise::normal(count, 42);
        let draw = |ctx: &mut Ctx, step: u32| {
            let info = buffers::uniform(&ctx.gpu, "step", &[step, 0u32, 0, 0]);
            ctx.run(&launch, &[("noise", &out), ("step", &info)]);
            ctx.read(&out)
        };
        let first = draw(ctx, 7);
        let again = draw(ctx, 7);
        let next = draw(ctx, 8);
        assert_bits_equal("same step", &first, &again);
        assert!(
            first.iter().zip(&next).all(|(a, b)| a != b),
            "steps must differ"
        );
        let want = reference::noise::normal(count, 42, 7);
        assert_within("noise vs reference", &first, &want, |i| {
            1e-5 * want[i].abs().max(1.0)
        });
        let mean = first.iter().map(|&v| v as f64).sum::<f64>() / count as f64;
        let var = first
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / count as f64;
        // 6,403 draws: the sample mean's standard error is 0.0125.
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.06,
            "mean {mean}, var {var}"
        );
    });
}

#[test]
fn data_gather_normalises_the_shuffled_batch() {
    with_gpu(|ctx| {
        let (images, pixels) = (10, 784);
        let bytes: Vec<u8> = (0..images * pixels).map(|i| (i * 37 % 256) as u8).collect();
        let mut packed = bytes.clone();
        packed.resize(bytes.len().div_ceil(4) * 4, 0);
        let words: Vec<u32> = bytemuck::cast_slice(&packed).to_vec();
        let order = [3u32, 9, 0, 7, 1, 2, 8, 4, 6, 5];
        let batch = 4;
        let out = ctx.zeros(batch * pixels);
        let px = buffers::upload(&ctx.gpu, "pixels", &words);
        let ord = buffers::upload(&ctx.gpu, "order", &order);
        let table = ctx.upload(&data::normalisation_table());
        let step = buffers::uniform(&ctx.gpu, "step", &[0u32, 5, 0, 0]);
        ctx.run(
            &data::gather(batch, pixels),
            &[
                ("pixels", &px),
                ("order", &ord),
                ("table", &table),
                ("images", &out),
                ("step", &step),
            ],
        );
        let got = ctx.read(&out);
        for b in 0..batch {
            let image = order[5 + b] as usize;
            for p in 0..pixels {
                let byte = bytes[image * pixels + p] as f32;
                let want = (byte / 255.0 - 0.5) / 0.5;
                assert_eq!(
                    got[b * pixels + p].to_bits(),
                    want.to_bits(),
                    "image {image} pixel {p}"
                );
            }
        }
    });
}
