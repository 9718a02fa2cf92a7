//! Conv2d and ConvTranspose2d kernels against the CPU reference: the seed's layer
//! shapes, odd shapes, every tiling the adapter runs, the fusions, a dispatch large
//! enough to be split, and bit-for-bit determinism.

mod common;

use common::{
    Ctx, abs, assert_bits_equal, assert_within, random, sum_bound, to_nchw, to_nhwc, with_gpu,
};
use dcgan_wgpu::kernels::conv::{self, ConvFusion, ConvPass};
use dcgan_wgpu::kernels::gemm::{Epilogue, Prologue, Tiling};
use dcgan_wgpu::reference;
use dcgan_wgpu::shapes::{Activation, ConvShape};

#[allow(clippy::too_many_arguments)]
fn shape(
    transposed: bool,
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    size: (usize, usize),
    kernel: usize,
    stride: usize,
    padding: usize,
) -> ConvShape {
    ConvShape {
        batch,
        in_channels,
        out_channels,
        in_h: size.0,
        in_w: size.1,
        kernel,
        stride,
        padding,
        transposed,
    }
}

/// The seed's layers (generator and discriminator) at batch 2, full widths.
fn seed_layers() -> Vec<ConvShape> {
    vec![
        shape(true, 2, 50, 512, (1, 1), 4, 1, 0),
        shape(true, 2, 512, 256, (4, 4), 4, 2, 1),
        shape(true, 2, 256, 128, (8, 8), 4, 2, 1),
        shape(true, 2, 128, 64, (16, 16), 4, 2, 1),
        shape(true, 2, 64, 1, (32, 32), 1, 1, 2),
        shape(false, 2, 1, 64, (28, 28), 4, 2, 1),
        shape(false, 2, 64, 128, (14, 14), 4, 2, 1),
        shape(false, 2, 128, 256, (7, 7), 4, 2, 1),
        shape(false, 2, 256, 1, (3, 3), 4, 2, 1),
    ]
}

/// Batch 1 and 3; spatial 1, 3, 7 (and non-square); stride 1 and 2; padding 0 to 3,
/// including transposed padding that crops; kernels 1 to 4.
fn odd_shapes() -> Vec<ConvShape> {
    let mut all = Vec::new();
    for transposed in [false, true] {
        all.extend([
            shape(transposed, 1, 1, 1, (1, 1), 1, 1, 0),
            shape(transposed, 3, 2, 3, (3, 3), 3, 1, 1),
            shape(transposed, 1, 3, 2, (7, 7), 4, 2, 1),
            shape(transposed, 3, 5, 4, (7, 5), 3, 2, 0),
            shape(transposed, 3, 4, 5, (3, 7), 2, 2, 1),
            shape(transposed, 1, 2, 3, (7, 7), 4, 1, 3),
            shape(transposed, 3, 3, 2, (3, 3), 1, 2, 0),
        ]);
    }
    all.extend([
        // Cropping transposed paddings beyond kernel - 1 (the seed's last layer is k1 p2).
        shape(true, 2, 3, 2, (7, 7), 1, 1, 2),
        shape(true, 1, 2, 2, (7, 7), 2, 1, 3),
        shape(true, 3, 2, 3, (5, 5), 3, 2, 3),
        // A Conv2d whose output-size floor leaves padding unread (7 -> 3, 3 -> 1).
        shape(false, 3, 3, 2, (3, 3), 4, 2, 1),
    ]);
    all
}

struct Case {
    s: ConvShape,
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
}

impl Case {
    fn new(s: ConvShape, seed: u64) -> Case {
        Case {
            s,
            x: random(s.input_len(), seed, 1.0),
            w: random(s.weight_len(), seed + 1, 1.0),
            dy: random(s.output_len(), seed + 2, 1.0),
        }
    }

    /// Terms in each output's sum (an upper bound), for the tolerance.
    fn terms(&self, pass: ConvPass) -> usize {
        let s = &self.s;
        match pass {
            ConvPass::WeightGrad => s.batch * s.in_h.max(s.out_h()) * s.in_w.max(s.out_w()),
            _ => s.in_channels.max(s.out_channels) * s.kernel * s.kernel,
        }
    }

    /// The reference result of `pass`, and the same computed on absolute values
    /// (the sum of |products| that bounds the rounding error).
    fn reference(&self, pass: ConvPass, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let s = &self.s;
        let run = |x: &[f32], w: &[f32], dy: &[f32]| match pass {
            ConvPass::Forward => reference::conv::forward(s, x, w, None),
            ConvPass::InputGrad => reference::conv::backward_input(s, dy, w),
            ConvPass::WeightGrad => reference::conv::backward_weight(s, x, dy),
        };
        (
            run(x, &self.w, &self.dy),
            run(&abs(x), &abs(&self.w), &abs(&self.dy)),
        )
    }

    /// Run `pass` on the GPU: activations go up NHWC and come back NCHW, weights are
    /// packed on the GPU into the layout the pass reads.
    fn gpu(&self, ctx: &mut Ctx, pass: ConvPass, fusion: ConvFusion, tiling: Tiling) -> Vec<f32> {
        self.gpu_with(ctx, pass, fusion, tiling, &self.x, None)
    }

    fn gpu_with(
        &self,
        ctx: &mut Ctx,
        pass: ConvPass,
        fusion: ConvFusion,
        tiling: Tiling,
        x: &[f32],
        extra: Option<(&wgpu::Buffer, Option<&wgpu::Buffer>, Vec<f32>)>,
    ) -> Vec<f32> {
        let s = &self.s;
        let launch = conv::launch(s, pass, fusion, tiling);
        let x = ctx.upload(&to_nhwc(x, s.in_channels, s.in_h, s.in_w));
        let dy = ctx.upload(&to_nhwc(&self.dy, s.out_channels, s.out_h(), s.out_w()));
        let canonical = ctx.upload(&self.w);
        let w = match conv::weight_layout(s, pass) {
            Some(layout) => {
                let packed = ctx.zeros(s.weight_len());
                ctx.run(
                    &conv::pack(s, layout),
                    &[("w", &canonical), ("packed", &packed)],
                );
                packed
            }
            None => canonical,
        };
        let (out_len, out_shape) = match pass {
            ConvPass::Forward => (s.output_len(), Some((s.out_channels, s.out_h(), s.out_w()))),
            ConvPass::InputGrad => (s.input_len(), Some((s.in_channels, s.in_h, s.in_w))),
            ConvPass::WeightGrad => (s.weight_len(), None),
        };
        let out = match &extra {
            Some((_, _, initial)) => ctx.upload(initial),
            None => ctx.zeros(out_len),
        };
        let out_role = ["y", "dx", "dw"][pass as usize];
        let mut bindings: Vec<(&str, &wgpu::Buffer)> = vec![(out_role, &out)];
        if pass != ConvPass::WeightGrad {
            bindings.push(("w", &w));
        }
        if pass != ConvPass::InputGrad {
            bindings.push(("x", &x));
        }
        if pass != ConvPass::Forward {
            bindings.push(("dy", &dy));
        }
        if let Some((bn, bias, _)) = &extra {
            bindings.push(("bn", bn));
            if let Some(bias) = bias {
                bindings.push(("bias", bias));
            }
        }
        ctx.run(&launch, &bindings);
        let got = ctx.read(&out);
        match out_shape {
            Some((c, h, w)) => to_nchw(&got, c, h, w),
            None => got,
        }
    }

    fn check(&self, ctx: &mut Ctx, pass: ConvPass, tiling: Tiling) {
        if !tiling.fits(conv::form(&self.s, pass)) {
            return;
        }
        let (want, abs_sum) = self.reference(pass, &self.x);
        let got = self.gpu(ctx, pass, ConvFusion::default(), tiling);
        let terms = self.terms(pass);
        assert_within(
            &format!("{:?} {pass:?} {}", self.s, tiling.name()),
            &got,
            &want,
            |i| sum_bound(terms, abs_sum[i]),
        );
    }
}

const PASSES: [ConvPass; 3] = [ConvPass::Forward, ConvPass::InputGrad, ConvPass::WeightGrad];

#[test]
fn seed_layer_shapes_match_reference() {
    with_gpu(|ctx| {
        let tilings = ctx.tilings();
        for (i, s) in seed_layers().into_iter().enumerate() {
            let case = Case::new(s, 100 + i as u64);
            for pass in PASSES {
                // The tile-per-row variant is too slow for the big layers on a CPU adapter.
                for &tiling in tilings.iter().filter(|t| **t != Tiling::NARROW) {
                    case.check(ctx, pass, tiling);
                }
            }
        }
    });
}

#[test]
fn odd_shapes_match_reference() {
    with_gpu(|ctx| {
        let tilings = ctx.tilings();
        for (i, s) in odd_shapes().into_iter().enumerate() {
            let case = Case::new(s, 200 + i as u64);
            for pass in PASSES {
                for &tiling in &tilings {
                    case.check(ctx, pass, tiling);
                }
            }
        }
    });
}

#[test]
fn fused_prologue_and_epilogue_match_reference() {
    with_gpu(|ctx| {
        let activation = Activation::LeakyRelu(0.2);
        for s in [
            shape(false, 2, 3, 4, (7, 7), 4, 2, 1),
            shape(false, 2, 8, 4, (7, 7), 4, 2, 1),
            shape(true, 2, 3, 4, (4, 4), 4, 2, 1),
            shape(true, 2, 8, 8, (4, 4), 4, 2, 1),
        ] {
            let case = Case::new(s, 7);
            // Per-channel scale and shift, as BatchNorm's train_stats writes them.
            let affine = random(2 * s.in_channels, 8, 1.0);
            let bias = random(s.out_channels, 9, 1.0);
            let channel = |i: usize| (i / (s.in_h * s.in_w)) % s.in_channels;
            let activated: Vec<f32> = (0..case.x.len())
                .map(|i| {
                    let c = channel(i);
                    let v = case.x[i] * affine[c] + affine[s.in_channels + c];
                    reference::activation::forward(activation, &[v])[0]
                })
                .collect();
            let prologue = Some(Prologue {
                channels: s.in_channels,
                activation,
            });
            let (bn, b) = (ctx.upload(&affine), ctx.upload(&bias));
            for tiling in ctx.tilings() {
                // Forward: tanh(conv(act(bn(x))) + bias).
                let fusion = ConvFusion {
                    prologue,
                    epilogue: Epilogue {
                        bias: true,
                        activation: Activation::Tanh,
                        accumulate: false,
                    },
                };
                if tiling.fits(conv::form(&s, ConvPass::Forward)) {
                    let zeros = vec![0.0; s.output_len()];
                    let extra = Some((&bn, Some(&b), zeros));
                    let got = case.gpu_with(ctx, ConvPass::Forward, fusion, tiling, &case.x, extra);
                    let plain = reference::conv::forward(&s, &activated, &case.w, Some(&bias));
                    let want = reference::activation::forward(Activation::Tanh, &plain);
                    let (_, abs_sum) = case.reference(ConvPass::Forward, &activated);
                    let terms = case.terms(ConvPass::Forward);
                    assert_within("fused forward", &got, &want, |i| {
                        sum_bound(terms, abs_sum[i] + bias[0].abs()) + 1e-6
                    });
                }
                // Weight gradient through the prologue, accumulated onto what is there.
                let fusion = ConvFusion {
                    prologue,
                    epilogue: Epilogue {
                        accumulate: true,
                        ..Epilogue::default()
                    },
                };
                if tiling.fits(conv::form(&s, ConvPass::WeightGrad)) {
                    let before = random(s.weight_len(), 10, 1.0);
                    let extra = Some((&bn, None, before.clone()));
                    let got =
                        case.gpu_with(ctx, ConvPass::WeightGrad, fusion, tiling, &case.x, extra);
                    let grad = reference::conv::backward_weight(&s, &activated, &case.dy);
                    let want: Vec<f32> = grad.iter().zip(&before).map(|(g, b)| g + b).collect();
                    let (_, abs_sum) = case.reference(ConvPass::WeightGrad, &activated);
                    let terms = case.terms(ConvPass::WeightGrad);
                    assert_within("fused weight gradient", &got, &want, |i| {
                        sum_bound(terms, abs_sum[i]) + f32::EPSILON * before[i].abs()
                    });
                }
            }
        }
    });
}

#[test]
fn dispatch_larger_than_one_grid_dimension_is_split() {
    with_gpu(|ctx| {
        // 2100 x 2100 outputs in 64 x 1 tiles: 68,907 workgroups > 65,535.
        let s = shape(false, 1, 1, 1, (2100, 2100), 1, 1, 0);
        let launch = conv::launch(&s, ConvPass::Forward, ConvFusion::default(), Tiling::NARROW);
        assert!(launch.workgroups[1] > 1, "{:?}", launch.workgroups);
        let case = Case::new(s, 11);
        let got = case.gpu(
            ctx,
            ConvPass::Forward,
            ConvFusion::default(),
            Tiling::NARROW,
        );
        let want = reference::conv::forward(&s, &case.x, &case.w, None);
        assert_within("split dispatch", &got, &want, |i| {
            sum_bound(1, want[i].abs())
        });
    });
}

#[test]
fn kernels_are_deterministic() {
    with_gpu(|ctx| {
        let s = shape(true, 3, 16, 8, (8, 8), 4, 2, 1);
        let case = Case::new(s, 12);
        for tiling in ctx.tilings() {
            for pass in PASSES
                .into_iter()
                .filter(|p| tiling.fits(conv::form(&s, *p)))
            {
                let first = case.gpu(ctx, pass, ConvFusion::default(), tiling);
                let second = case.gpu(ctx, pass, ConvFusion::default(), tiling);
                assert_bits_equal(&format!("{pass:?} {}", tiling.name()), &first, &second);
            }
        }
    });
}
