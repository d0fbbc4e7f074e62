//! Dropout (Srivastava, Hinton et al. 2014): while computing gradients, each
//! input or hidden unit is zeroed with a probability and the survivors are
//! scaled by `1 / (1 − p)` (inverted dropout), so evaluation uses the
//! weights as they are.
//!
//! Masks are drawn a whole layer at a time and applied in the same pass:
//! one 64-bit draw decides two units (each half compared with `p·2³²`),
//! which costs a fraction of a float draw per unit; with a 2000-unit layer
//! the masks were a visible share of a fine-tuning step.

use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use rand::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Dropout probabilities of a network's units.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Dropout {
    /// Probability of dropping an input unit.
    pub input: f32,
    /// Probability of dropping a hidden unit.
    pub hidden: f32,
}

/// Draws a keep/drop decision per unit, two per 64-bit draw.
struct Draws<'a> {
    rng: &'a mut Xoshiro256PlusPlus,
    /// A unit is dropped when its 32 bits are below this.
    threshold: u32,
    spare: Option<u32>,
}

impl<'a> Draws<'a> {
    fn new(p: f32, rng: &'a mut Xoshiro256PlusPlus) -> Self {
        // p < 1, so the product stays below 2³² (the cast saturates anyway).
        let threshold = (f64::from(p) * 4_294_967_296.0) as u32;
        Self {
            rng,
            threshold,
            spare: None,
        }
    }

    #[inline]
    fn keep(&mut self) -> bool {
        let bits = match self.spare.take() {
            Some(bits) => bits,
            None => {
                let both = self.rng.next_u64();
                self.spare = Some((both >> 32) as u32);
                both as u32
            }
        };
        bits >= self.threshold
    }
}

/// Drops units of `out` with probability `p`, in place, and records each
/// unit's factor (0 or `1 / (1 − p)`) in `mask` for the backward pass.
pub fn drop_units(
    out: &mut ArrayViewMut2<'_, f32>,
    mask: &mut ArrayViewMut2<'_, f32>,
    p: f32,
    rng: &mut Xoshiro256PlusPlus,
) {
    let scale = 1.0 / (1.0 - p);
    let mut draws = Draws::new(p, rng);
    Zip::from(out).and(mask).for_each(|o, m| {
        let factor = if draws.keep() { scale } else { 0.0 };
        *m = factor;
        *o *= factor;
    });
}

/// Writes `x` with units dropped with probability `p` (and the survivors
/// scaled) into `out`.
pub fn drop_inputs(x: ArrayView2<'_, f32>, out: &mut ArrayViewMut2<'_, f32>, p: f32, rng: &mut Xoshiro256PlusPlus) {
    let scale = 1.0 / (1.0 - p);
    let mut draws = Draws::new(p, rng);
    Zip::from(out)
        .and(x)
        .for_each(|o, &v| *o = if draws.keep() { v * scale } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::SeedableRng;

    #[test]
    fn drops_about_p_and_scales_the_rest() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let (rows, cols, p) = (200, 301, 0.3f32);
        let mut out = Array2::from_elem((rows, cols), 2.0f32);
        let mut mask = Array2::zeros((rows, cols));
        drop_units(&mut out.view_mut(), &mut mask.view_mut(), p, &mut rng);
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f32 / (rows * cols) as f32;
        assert!((dropped - p).abs() < 0.01, "dropped {dropped}");
        let keep = 1.0 / (1.0 - p);
        assert!(mask.iter().all(|&m| m == 0.0 || m == keep));
        assert!(out.iter().zip(&mask).all(|(&o, &m)| o == 2.0 * m));
    }

    #[test]
    fn input_dropout_keeps_values_scaled() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let x = Array2::from_shape_fn((50, 40), |(i, j)| (i * 40 + j) as f32 + 1.0);
        let mut out = Array2::zeros((50, 40));
        drop_inputs(x.view(), &mut out.view_mut(), 0.2, &mut rng);
        let kept = out.iter().filter(|&&v| v != 0.0).count() as f32 / 2000.0;
        assert!((kept - 0.8).abs() < 0.03, "kept {kept}");
        assert!(
            out.iter()
                .zip(&x)
                .all(|(&o, &v)| o == 0.0 || (o - v / 0.8).abs() < 1e-3)
        );
    }

    #[test]
    fn no_dropout_keeps_everything() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut out = Array2::from_elem((3, 7), 1.5f32);
        let mut mask = Array2::zeros((3, 7));
        drop_units(&mut out.view_mut(), &mut mask.view_mut(), 0.0, &mut rng);
        assert!(mask.iter().all(|&m| m == 1.0) && out.iter().all(|&v| v == 1.5));
    }
}
