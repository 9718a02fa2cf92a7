//! A launch of every kernel family in every variant, for validation and listings.

use super::activation::{self, ActivationPass};
use super::batchnorm::{self, BatchNormPass};
use super::conv::{self, ConvFusion, ConvPass, WeightLayout};
use super::gemm::{Epilogue, Prologue, Tiling};
use super::linear::{self, LinearPass};
use super::loss::{self, MetricSlots};
use super::{Launch, adamw, bias, data, noise};
use crate::shapes::{Activation, BatchNormShape, ConvShape, LinearShape};

const ACTIVATIONS: [Activation; 5] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.2),
    Activation::Tanh,
    Activation::Sigmoid,
];

/// Tilings the GEMM-based kernels must compile under (where the form fits).
pub const TILINGS: [Tiling; 5] = [
    Tiling::PORTABLE,
    Tiling::NARROW,
    Tiling {
        lanes: 8,
        rows_per_lane: 4,
        tile_cols: 16,
        subgroup: true,
    },
    Tiling {
        lanes: 8,
        rows_per_lane: 8,
        tile_cols: 32,
        subgroup: true,
    },
    Tiling {
        lanes: 32,
        rows_per_lane: 4,
        tile_cols: 128,
        subgroup: true,
    },
];

/// Every kernel entry point with every fusion option, at small shapes.
pub fn every_kernel() -> Vec<Launch> {
    let mut all = Vec::new();
    // Channel counts of 4 and 8 take the vector loads, 3 and 5 the scalar ones.
    for (in_channels, out_channels) in [(4, 8), (3, 5)] {
        let conv = ConvShape {
            batch: 2,
            in_channels,
            out_channels,
            in_h: 7,
            in_w: 5,
            kernel: 4,
            stride: 2,
            padding: 1,
            transposed: false,
        };
        let prologue = Prologue {
            channels: in_channels,
            activation: Activation::LeakyRelu(0.2),
        };
        for transposed in [false, true] {
            let s = ConvShape { transposed, ..conv };
            all.push(conv::pack(&s, WeightLayout::CoarseMajor));
            all.push(conv::pack(&s, WeightLayout::FineMajor));
            for pass in [ConvPass::Forward, ConvPass::InputGrad, ConvPass::WeightGrad] {
                let form = conv::form(&s, pass);
                for tiling in TILINGS.into_iter().filter(|t| t.fits(form)) {
                    all.push(conv::launch(&s, pass, ConvFusion::default(), tiling));
                    let epilogue = Epilogue {
                        bias: pass == ConvPass::Forward,
                        activation: Activation::Tanh,
                        accumulate: pass == ConvPass::WeightGrad,
                    };
                    let prologue = (pass != ConvPass::InputGrad).then_some(prologue);
                    all.push(conv::launch(
                        &s,
                        pass,
                        ConvFusion { prologue, epilogue },
                        tiling,
                    ));
                }
            }
        }
    }
    // 8 input features take the forward's vector loads, 5 the scalar ones.
    for in_features in [8, 5] {
        let lin = LinearShape {
            batch: 3,
            in_features,
            out_features: 2,
        };
        for pass in [
            LinearPass::Forward,
            LinearPass::InputGrad,
            LinearPass::WeightGrad,
        ] {
            let epilogue = Epilogue {
                bias: pass == LinearPass::Forward,
                ..Epilogue::default()
            };
            let form = linear::form(&lin, pass);
            for tiling in TILINGS.into_iter().filter(|t| t.fits(form)) {
                all.push(linear::launch(&lin, pass, epilogue, tiling));
            }
        }
    }
    let bn = BatchNormShape {
        batch: 2,
        channels: 3,
        height: 4,
        width: 4,
    };
    for activation in ACTIVATIONS {
        for pass in [ActivationPass::Forward, ActivationPass::Backward] {
            all.push(activation::launch(pass, activation, 10));
        }
        for pass in [
            BatchNormPass::TrainPartials,
            BatchNormPass::TrainCombine,
            BatchNormPass::EvalStats,
            BatchNormPass::Apply,
            BatchNormPass::BackwardPartials,
            BatchNormPass::BackwardCombine,
            BatchNormPass::BackwardApply,
        ] {
            // Four channels (vector loads) and three (scalar).
            for channels in [4, 3] {
                let shape = BatchNormShape { channels, ..bn };
                all.push(batchnorm::launch(&shape, activation, pass, true));
            }
        }
    }
    for activation in [Activation::Tanh, Activation::Sigmoid] {
        all.push(activation::launch(
            ActivationPass::BackwardFromOutput,
            activation,
            10,
        ));
    }
    all.push(bias::channel_sum(2, 3, 5, true));
    let slots = MetricSlots {
        per_step: 6,
        loss: 0,
        mean_probability: 3,
    };
    all.push(loss::sigmoid_bce(5, 1.0, slots));
    all.push(adamw::step(100));
    all.push(noise::normal(10, 42));
    all.push(data::gather(4, 784));
    all
}
