//! Dropout (Srivastava, Hinton et al. 2014): while computing gradients, each
//! input or hidden unit is zeroed with a probability and the survivors are
//! scaled by `1 / (1 − p)` (inverted dropout), so evaluation uses the
//! weights as they are.
//!
//! Masks are drawn a block of units at a time and applied in the same pass:
//! one 64-bit draw decides four units (each 16-bit quarter compared with
//! `p·2¹⁶`, so `p` is honoured to within 2⁻¹⁶), and the keep/drop choice
//! over a block is a branch-free select the compiler vectorises. With a
//! 2000-unit layer the masks were a visible share of a fine-tuning step
//! when each unit took a branch on its own draw.

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

/// Units decided per block of draws.
const BLOCK: usize = 256;

/// Keep/drop decisions, four units per 64-bit draw: a unit is kept when its
/// 16 bits are at or above `threshold`.
struct Draws<'a> {
    rng: &'a mut Xoshiro256PlusPlus,
    threshold: u16,
    bits: [u16; BLOCK],
}

impl<'a> Draws<'a> {
    fn new(p: f32, rng: &'a mut Xoshiro256PlusPlus) -> Self {
        // p < 1, so the product stays below 2¹⁶ (the cast saturates anyway).
        let threshold = (f64::from(p) * 65_536.0).round() as u16;
        Self {
            rng,
            threshold,
            bits: [0; BLOCK],
        }
    }

    /// Fresh bits for the next `n ≤ BLOCK` units.
    fn block(&mut self, n: usize) -> &[u16] {
        for quad in self.bits[..n.next_multiple_of(4)].chunks_exact_mut(4) {
            let r = self.rng.next_u64();
            quad.copy_from_slice(&[r as u16, (r >> 16) as u16, (r >> 32) as u16, (r >> 48) as u16]);
        }
        &self.bits[..n]
    }

    /// One unit's decision on a draw of its own, for strided views.
    fn keep_one(&mut self) -> bool {
        self.rng.next_u64() as u16 >= self.threshold
    }

    /// Walks `len` units a block at a time: `f(start, bits, threshold)`
    /// with the block's first unit and fresh bits for each of its units.
    fn for_each(&mut self, len: usize, mut f: impl FnMut(usize, &[u16], u16)) {
        let threshold = self.threshold;
        for start in (0..len).step_by(BLOCK) {
            let bits = self.block((len - start).min(BLOCK));
            f(start, bits, threshold);
        }
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
    if let (Some(out), Some(mask)) = (out.as_slice_mut(), mask.as_slice_mut()) {
        draws.for_each(out.len(), |start, bits, threshold| {
            let (out, mask) = (
                &mut out[start..start + bits.len()],
                &mut mask[start..start + bits.len()],
            );
            for ((o, m), &b) in out.iter_mut().zip(mask.iter_mut()).zip(bits) {
                let factor = if b >= threshold { scale } else { 0.0 };
                *m = factor;
                *o *= factor;
            }
        });
        return;
    }
    // Views that are not one contiguous block (not what the models pass).
    Zip::from(out).and(mask).for_each(|o, m| {
        let factor = if draws.keep_one() { scale } else { 0.0 };
        *m = factor;
        *o *= factor;
    });
}

/// Writes `x` with units dropped with probability `p` (and the survivors
/// scaled) into `out`.
pub fn drop_inputs(x: ArrayView2<'_, f32>, out: &mut ArrayViewMut2<'_, f32>, p: f32, rng: &mut Xoshiro256PlusPlus) {
    let scale = 1.0 / (1.0 - p);
    let mut draws = Draws::new(p, rng);
    if let (Some(out), Some(x)) = (out.as_slice_mut(), x.as_slice()) {
        draws.for_each(out.len(), |start, bits, threshold| {
            let (out, x) = (&mut out[start..start + bits.len()], &x[start..start + bits.len()]);
            for ((o, &v), &b) in out.iter_mut().zip(x).zip(bits) {
                *o = if b >= threshold { v * scale } else { 0.0 };
            }
        });
        return;
    }
    // Views that are not one contiguous block (not what the models pass).
    Zip::from(out)
        .and(x)
        .for_each(|o, &v| *o = if draws.keep_one() { v * scale } else { 0.0 });
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
    fn strided_views_are_dropped_alike() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let (p, scale) = (0.25f32, 1.0 / 0.75f32);
        let mut out = Array2::from_elem((300, 40), 1.0f32);
        let mut mask = Array2::zeros((300, 40));
        // Every other column: not one contiguous block.
        let (mut o, mut m) = (
            out.slice_mut(ndarray::s![.., ..;2]),
            mask.slice_mut(ndarray::s![.., ..;2]),
        );
        drop_units(&mut o, &mut m, p, &mut rng);
        let dropped = m.iter().filter(|&&f| f == 0.0).count() as f32 / m.len() as f32;
        assert!((dropped - p).abs() < 0.015, "dropped {dropped}");
        assert!(o.iter().zip(&m).all(|(&v, &f)| v == f && (f == 0.0 || f == scale)));
        assert!(
            out.slice(ndarray::s![.., 1..;2]).iter().all(|&v| v == 1.0),
            "the other columns are untouched"
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
