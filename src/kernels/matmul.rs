//! The matrix-product kernels (convolution passes and Linear) as values: a product
//! can be regenerated under any tiling, which is what autotuning varies.

use super::Launch;
use super::conv::{self, ConvFusion, ConvPass};
use super::gemm::{Epilogue, Form, Tiling};
use super::linear::{self, LinearPass};
use crate::shapes::{ConvShape, LinearShape};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MatMul {
    Conv {
        shape: ConvShape,
        pass: ConvPass,
        fusion: ConvFusion,
    },
    Linear {
        shape: LinearShape,
        pass: LinearPass,
        epilogue: Epilogue,
    },
}

impl MatMul {
    pub fn launch(&self, tiling: Tiling) -> Launch {
        match *self {
            MatMul::Conv {
                shape,
                pass,
                fusion,
            } => conv::launch(&shape, pass, fusion, tiling),
            MatMul::Linear {
                shape,
                pass,
                epilogue,
            } => linear::launch(&shape, pass, epilogue, tiling),
        }
    }

    pub fn form(&self) -> Form {
        match self {
            MatMul::Conv { shape, pass, .. } => conv::form(shape, *pass),
            MatMul::Linear { shape, pass, .. } => linear::form(shape, *pass),
        }
    }

    /// (m, n, k) of the product (per group for the phases of a transposed gather).
    pub fn dims(&self) -> (usize, usize, usize) {
        match self {
            MatMul::Conv { shape, pass, .. } => {
                let (m, n, k, _) = conv::gemm_dims(shape, *pass);
                (m, n, k)
            }
            MatMul::Linear { shape, pass, .. } => linear::gemm_dims(shape, *pass),
        }
    }

    /// What the product is, independent of its tiling: the cache key of autotuning.
    pub fn key(&self) -> String {
        format!("{self:?}")
    }
}
