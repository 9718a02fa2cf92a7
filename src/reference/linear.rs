//! Linear: `y[b, o] = sum_i x[b, i] * w[o, i] + bias[o]`, weight `[out, in]` as in PyTorch.

use super::round_to_f32;
use crate::shapes::LinearShape;

/// `y = x w^T + bias`, shape `[batch, out_features]`.
pub fn forward(s: &LinearShape, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), s.batch * s.in_features, "linear input length");
    assert_eq!(
        w.len(),
        s.out_features * s.in_features,
        "linear weight length"
    );
    assert_eq!(bias.len(), s.out_features, "linear bias length");
    let mut y = vec![0.0f64; s.batch * s.out_features];
    for b in 0..s.batch {
        for o in 0..s.out_features {
            let dot: f64 = (0..s.in_features)
                .map(|i| f64::from(x[b * s.in_features + i]) * f64::from(w[o * s.in_features + i]))
                .sum();
            y[b * s.out_features + o] = dot + f64::from(bias[o]);
        }
    }
    round_to_f32(&y)
}

/// `dx[b, i] = sum_o dy[b, o] * w[o, i]`.
pub fn backward_input(s: &LinearShape, dy: &[f32], w: &[f32]) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        s.batch * s.out_features,
        "linear output gradient length"
    );
    assert_eq!(
        w.len(),
        s.out_features * s.in_features,
        "linear weight length"
    );
    let mut dx = vec![0.0f64; s.batch * s.in_features];
    for b in 0..s.batch {
        for i in 0..s.in_features {
            dx[b * s.in_features + i] = (0..s.out_features)
                .map(|o| {
                    f64::from(dy[b * s.out_features + o]) * f64::from(w[o * s.in_features + i])
                })
                .sum();
        }
    }
    round_to_f32(&dx)
}

/// `dw[o, i] = sum_b dy[b, o] * x[b, i]`.
pub fn backward_weight(s: &LinearShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), s.batch * s.in_features, "linear input length");
    assert_eq!(
        dy.len(),
        s.batch * s.out_features,
        "linear output gradient length"
    );
    let mut dw = vec![0.0f64; s.out_features * s.in_features];
    for o in 0..s.out_features {
        for i in 0..s.in_features {
            dw[o * s.in_features + i] = (0..s.batch)
                .map(|b| {
                    f64::from(dy[b * s.out_features + o]) * f64::from(x[b * s.in_features + i])
                })
                .sum();
        }
    }
    round_to_f32(&dw)
}

/// `dbias[o] = sum_b dy[b, o]`.
pub fn backward_bias(s: &LinearShape, dy: &[f32]) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        s.batch * s.out_features,
        "linear output gradient length"
    );
    let dbias: Vec<f64> = (0..s.out_features)
        .map(|o| {
            (0..s.batch)
                .map(|b| f64::from(dy[b * s.out_features + o]))
                .sum()
        })
        .collect();
    round_to_f32(&dbias)
}
