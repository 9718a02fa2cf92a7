//! Autotuning: candidates fit the product's form, the default is a candidate, and a
//! tuned choice is timed once, cached on disk, and found again.

mod common;

use dcgan_wgpu::autotune::{self, Autotuner};
use dcgan_wgpu::kernels::View;
use dcgan_wgpu::kernels::conv::{ConvFusion, ConvPass};
use dcgan_wgpu::kernels::matmul::MatMul;
use dcgan_wgpu::shapes::ConvShape;

fn seed_layer(pass: ConvPass) -> MatMul {
    MatMul::Conv {
        shape: ConvShape {
            batch: 4,
            in_channels: 64,
            out_channels: 32,
            in_h: 8,
            in_w: 8,
            kernel: 4,
            stride: 2,
            padding: 1,
            transposed: true,
        },
        pass,
        fusion: ConvFusion::default(),
    }
}

#[test]
fn candidates_fit_and_the_tuned_choice_is_cached() {
    common::with_gpu(|ctx| {
        let cache = tempfile::tempdir().unwrap();
        // SAFETY of the environment: this test binary runs this one test only.
        unsafe { std::env::set_var("DCGAN_WGPU_CACHE_DIR", cache.path()) };
        for pass in [ConvPass::Forward, ConvPass::InputGrad, ConvPass::WeightGrad] {
            let matmul = seed_layer(pass);
            let candidates = autotune::candidates(&ctx.gpu, &matmul);
            assert!(!candidates.is_empty());
            assert!(
                candidates.iter().all(|t| t.fits(matmul.form())),
                "{candidates:?}"
            );
            assert!(candidates.contains(&autotune::default_tiling(&ctx.gpu, &matmul)));
        }
        let matmul = seed_layer(ConvPass::Forward);
        let MatMul::Conv { shape, .. } = matmul else {
            unreachable!()
        };
        let (x, w, y) = (
            ctx.zeros(shape.input_len()),
            ctx.zeros(shape.weight_len()),
            ctx.zeros(shape.output_len()),
        );
        let mut tuner = Autotuner::load(&ctx.gpu);
        assert_eq!(tuner.cached(&ctx.gpu, &matmul), None);
        let mut timed = 0;
        let (best, seconds) = tuner
            .tune(&ctx.gpu, &matmul, |launch| {
                timed += 1;
                let views = [
                    ("x", View::whole(&x)),
                    ("w", View::whole(&w)),
                    ("y", View::whole(&y)),
                ];
                ctx.kernels.bind(&ctx.gpu, launch, &views)
            })
            .unwrap();
        assert_eq!(timed, autotune::candidates(&ctx.gpu, &matmul).len());
        assert!(seconds > 0.0);
        tuner.save().unwrap();
        let reloaded = Autotuner::load(&ctx.gpu);
        assert_eq!(reloaded.cached(&ctx.gpu, &matmul), Some(best));
        assert_eq!(
            reloaded.cached(&ctx.gpu, &seed_layer(ConvPass::InputGrad)),
            None
        );

        // An edited or stale entry (a tiling no candidate has) is ignored, not run.
        let path = cache.path().join("tilings.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let lanes = format!("\"lanes\": {}", best.lanes);
        assert!(text.contains(&lanes), "{text}");
        std::fs::write(&path, text.replace(&lanes, "\"lanes\": 0")).unwrap();
        assert_eq!(Autotuner::load(&ctx.gpu).cached(&ctx.gpu, &matmul), None);
    });
}
