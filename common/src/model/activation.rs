//! Hidden-unit nonlinearities and the softmax output.

use ndarray::{ArrayView2, ArrayViewMut2, Axis, Zip};
use serde::{Deserialize, Serialize};

/// A hidden-unit nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Logistic sigmoid; the DBN's units.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Rectified linear.
    #[default]
    Relu,
}

impl Activation {
    /// Applies the nonlinearity in place.
    pub fn apply(self, z: &mut ArrayViewMut2<'_, f32>) {
        match self {
            Activation::Sigmoid => z.mapv_inplace(sigmoid),
            Activation::Tanh => z.mapv_inplace(f32::tanh),
            Activation::Relu => z.mapv_inplace(|v| v.max(0.0)),
        }
    }

    /// Multiplies `delta` by the derivative, expressed through the unit's
    /// output `a` so the pre-activation need not be kept.
    pub fn backprop(self, delta: &mut ArrayViewMut2<'_, f32>, a: ArrayView2<'_, f32>) {
        // One loop per activation, so each is a plain vectorised loop.
        match self {
            Activation::Sigmoid => Zip::from(delta).and(a).for_each(|d, &a| *d *= sigmoid_slope(a)),
            Activation::Tanh => Zip::from(delta).and(a).for_each(|d, &a| *d *= tanh_slope(a)),
            Activation::Relu => Zip::from(delta).and(a).for_each(|d, &a| *d *= relu_slope(a)),
        }
    }

    /// [`Activation::backprop`] through inverted dropout: the layer's output
    /// was `f(z)·m` with `m` either 0 or `1/keep`, so a kept unit's `f(z)` is
    /// its output times `keep`, and a dropped unit passes nothing back.
    pub fn backprop_dropped(
        self,
        delta: &mut ArrayViewMut2<'_, f32>,
        mask: ArrayView2<'_, f32>,
        a: ArrayView2<'_, f32>,
        keep: f32,
    ) {
        // Multiplying by the mask instead of branching on it: a random mask
        // defeats the branch predictor, and the branch-free loop vectorises.
        let zip = Zip::from(delta).and(mask).and(a);
        match self {
            Activation::Sigmoid => zip.for_each(|d, &m, &a| *d *= m * sigmoid_slope(a * keep)),
            Activation::Tanh => zip.for_each(|d, &m, &a| *d *= m * tanh_slope(a * keep)),
            Activation::Relu => zip.for_each(|d, &m, &a| *d *= m * relu_slope(a * keep)),
        }
    }

    /// Half-width of the uniform initialisation suited to this unit
    /// (Glorot for sigmoid and tanh, He for ReLU).
    pub fn init_bound(self, fan_in: usize, fan_out: usize) -> f32 {
        let glorot = (6.0 / (fan_in + fan_out) as f32).sqrt();
        match self {
            Activation::Sigmoid => 4.0 * glorot,
            Activation::Tanh => glorot,
            Activation::Relu => (6.0 / fan_in as f32).sqrt(),
        }
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Replaces each row of logits by its softmax, stably (max subtracted).
pub fn softmax_rows(z: &mut ArrayViewMut2<'_, f32>) {
    for mut row in z.axis_iter_mut(Axis(0)) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
}

// Each unit's derivative, expressed through its output `a`.

#[inline]
fn sigmoid_slope(a: f32) -> f32 {
    a * (1.0 - a)
}

#[inline]
fn tanh_slope(a: f32) -> f32 {
    1.0 - a * a
}

#[inline]
fn relu_slope(a: f32) -> f32 {
    if a > 0.0 { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn softmax_rows_sum_to_one_and_survive_large_logits() {
        let mut z = array![[1000.0f32, 1000.0], [0.0, f32::ln(3.0)]];
        softmax_rows(&mut z.view_mut());
        assert!((z[[0, 0]] - 0.5).abs() < 1e-6);
        assert!((z[[1, 1]] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn derivatives_match_outputs() {
        let a = array![[0.5f32, 0.0, -0.5]];
        for (act, want) in [
            (Activation::Sigmoid, [0.25, 0.0, -0.75]),
            (Activation::Tanh, [0.75, 1.0, 0.75]),
            (Activation::Relu, [1.0, 0.0, 0.0]),
        ] {
            let mut d = array![[1.0f32, 1.0, 1.0]];
            act.backprop(&mut d.view_mut(), a.view());
            assert_eq!(d.row(0).to_vec(), want.to_vec(), "{act:?}");
        }
    }
}
