//! Hidden-unit nonlinearities and the softmax output.

use ndarray::{ArrayView2, ArrayViewMut2, Axis, Zip};
use serde::{Deserialize, Serialize};

use crate::cpu::wide;

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
            Activation::Sigmoid => sigmoid_inplace(z),
            Activation::Tanh => z.mapv_inplace(f32::tanh),
            Activation::Relu => z.mapv_inplace(|v| v.max(0.0)),
        }
    }

    /// Multiplies `delta` by the derivative, expressed through the unit's
    /// output `a` so the pre-activation need not be kept.
    pub fn backprop(self, delta: &mut ArrayViewMut2<'_, f32>, a: ArrayView2<'_, f32>) {
        if let (Some(d), Some(a)) = (delta.as_slice_mut(), a.as_slice()) {
            // One loop per activation, so each is a plain vectorised loop.
            match self {
                Activation::Sigmoid => wide(|| scale_by(d, a, sigmoid_slope)),
                Activation::Tanh => wide(|| scale_by(d, a, tanh_slope)),
                Activation::Relu => wide(|| scale_by(d, a, relu_slope)),
            }
            return;
        }
        let slope = self.slope();
        Zip::from(delta).and(a).for_each(|d, &a| *d *= slope(a));
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
        if let (Some(d), Some(m), Some(a)) = (delta.as_slice_mut(), mask.as_slice(), a.as_slice()) {
            match self {
                Activation::Sigmoid => wide(|| scale_dropped_by(d, m, a, keep, sigmoid_slope)),
                Activation::Tanh => wide(|| scale_dropped_by(d, m, a, keep, tanh_slope)),
                Activation::Relu => wide(|| scale_dropped_by(d, m, a, keep, relu_slope)),
            }
            return;
        }
        let slope = self.slope();
        Zip::from(delta)
            .and(mask)
            .and(a)
            .for_each(|d, &m, &a| *d *= m * slope(a * keep));
    }

    /// The derivative through the unit's output, for the loops over views
    /// that are not one block (not what the models pass).
    fn slope(self) -> fn(f32) -> f32 {
        match self {
            Activation::Sigmoid => sigmoid_slope,
            Activation::Tanh => tanh_slope,
            Activation::Relu => relu_slope,
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
    1.0 / (1.0 + exp(-v))
}

/// The logistic function of every element, in place. A plain loop over a
/// contiguous block, so the compiler vectorises it: the library's `expf` is
/// a call per element, and a fine-tuning step of the DBN takes 3,000 per
/// example.
pub fn sigmoid_inplace(z: &mut ArrayViewMut2<'_, f32>) {
    match z.as_slice_memory_order_mut() {
        Some(values) => wide(|| values.iter_mut().for_each(|v| *v = sigmoid(*v))),
        None => z.mapv_inplace(sigmoid),
    }
}

/// `e^x` within 2 ulp for every normal result, branch-free so that loops
/// over it vectorise: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-7
/// polynomial for `e^r`, and `2^n` built in the exponent bits, as two
/// factors so that each is a normal number (results underflow to 0 and
/// overflow to infinity as `expf`'s do). NaN stays NaN.
#[inline]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n · LN2_HI` is exact for every n used here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // Beyond these e^x is 0 or infinite in f32 whatever the polynomial.
    let x = x.clamp(-104.0, 89.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor to 1/7!: the remainder on |r| ≤ 0.347 is below 2⁻²⁷.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n as an integer, read from the rounded sum's low bits: a float-to-int
    // conversion would not vectorise (it must saturate and map NaN).
    let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let (a, b) = (n >> 1, n - (n >> 1));
    let power = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    p * power(a) * power(b)
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

/// `d *= slope(a)` over matching slices.
#[inline(always)]
fn scale_by(delta: &mut [f32], a: &[f32], slope: impl Fn(f32) -> f32) {
    delta.iter_mut().zip(a).for_each(|(d, &a)| *d *= slope(a));
}

/// `d *= m · slope(a · keep)` over matching slices.
#[inline(always)]
fn scale_dropped_by(delta: &mut [f32], mask: &[f32], a: &[f32], keep: f32, slope: impl Fn(f32) -> f32) {
    let parts = delta.iter_mut().zip(mask).zip(a);
    parts.for_each(|((d, &m), &a)| *d *= m * slope(a * keep));
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
    fn fast_exp_is_within_two_ulp_of_the_library() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let (want, got) = (f64::from(x).exp(), f64::from(exp(x)));
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!((exp(-1000.0), exp(1000.0)), (0.0, f32::INFINITY));
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
    }

    #[test]
    fn sigmoid_in_place_matches_per_element_on_any_layout() {
        let z = ndarray::Array2::from_shape_fn((7, 5), |(i, j)| i as f32 * 3.1 - j as f32 * 2.3);
        let want = z.mapv(|v| 1.0 / (1.0 + f64::from(-v).exp()) as f32);
        for mut m in [z.clone(), z.t().to_owned()] {
            let transposed = m.shape() != z.shape();
            let mut view = if transposed {
                m.view_mut().reversed_axes()
            } else {
                m.view_mut()
            };
            sigmoid_inplace(&mut view);
            let got = if transposed { m.t().to_owned() } else { m };
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
        }
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
