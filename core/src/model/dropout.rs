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

use crate::cpu::wide;

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

/// Generators stepped side by side in [`Lanes`].
const LANES: usize = 8;

// A block is whole draws of every lane.
const _: () = assert!(BLOCK.is_multiple_of(4 * LANES));

/// Eight xoshiro256++ generators stepped together: one generator's steps
/// depend on each other, eight independent ones make a loop the compiler
/// vectorises (a 2000-unit layer takes 500 draws per example).
struct Lanes {
    s: [[u64; LANES]; 4],
}

impl Lanes {
    /// Lanes seeded from `rng`'s next draws. (An all-zero state would stay
    /// zero; it needs 256 zero bits in a row from `rng`.)
    fn seeded(rng: &mut Xoshiro256PlusPlus) -> Self {
        let mut s = [[0; LANES]; 4];
        s.iter_mut().flatten().for_each(|word| *word = rng.next_u64());
        Self { s }
    }

    /// The next 64-bit draw of every lane.
    #[inline(always)]
    fn next(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0; LANES];
        for i in 0..LANES {
            out[i] = s0[i].wrapping_add(s3[i]).rotate_left(23).wrapping_add(s0[i]);
            let t = s1[i] << 17;
            s2[i] ^= s0[i];
            s3[i] ^= s1[i];
            s1[i] ^= s2[i];
            s0[i] ^= s3[i];
            s2[i] ^= t;
            s3[i] = s3[i].rotate_left(45);
        }
        out
    }
}

/// Keep/drop decisions, four units per 64-bit draw: a unit is kept when its
/// 16 bits are at or above `threshold`.
struct Draws<'a> {
    rng: &'a mut Xoshiro256PlusPlus,
    lanes: Lanes,
    threshold: u16,
    bits: [u16; BLOCK],
}

impl<'a> Draws<'a> {
    fn new(p: f32, rng: &'a mut Xoshiro256PlusPlus) -> Self {
        // p < 1, so the product stays below 2¹⁶ (the cast saturates anyway).
        let threshold = (f64::from(p) * 65_536.0).round() as u16;
        Self {
            lanes: Lanes::seeded(rng),
            rng,
            threshold,
            bits: [0; BLOCK],
        }
    }

    /// Fresh bits for the next `n ≤ BLOCK` units.
    #[inline]
    fn block(&mut self, n: usize) -> &[u16] {
        let (lanes, bits) = (&mut self.lanes, &mut self.bits);
        let groups = n.div_ceil(4 * LANES);
        wide(|| {
            for group in bits.chunks_exact_mut(4 * LANES).take(groups) {
                for (quad, r) in group.chunks_exact_mut(4).zip(lanes.next()) {
                    quad.copy_from_slice(&[r as u16, (r >> 16) as u16, (r >> 32) as u16, (r >> 48) as u16]);
                }
            }
        });
        &self.bits[..n]
    }

    /// One unit's decision on a draw of its own, for strided views.
    fn keep_one(&mut self) -> bool {
        self.rng.next_u64() as u16 >= self.threshold
    }

    /// Walks `len` units a block at a time: `f(start, bits, threshold)`
    /// with the block's first unit and fresh bits for each of its units.
    #[inline]
    fn for_each(&mut self, len: usize, mut f: impl FnMut(usize, &[u16], u16)) {
        let threshold = self.threshold;
        for start in (0..len).step_by(BLOCK) {
            let bits = self.block((len - start).min(BLOCK));
            f(start, bits, threshold);
        }
    }
}

/// One block of [`drop_units`]: a unit whose bits are below `threshold` is
/// dropped, the others are scaled, and each unit's factor is kept in `mask`.
#[inline(always)]
fn mask_block(out: &mut [f32], mask: &mut [f32], bits: &[u16], threshold: u16, scale: f32) {
    for ((o, m), &b) in out.iter_mut().zip(mask.iter_mut()).zip(bits) {
        let factor = if b >= threshold { scale } else { 0.0 };
        *m = factor;
        *o *= factor;
    }
}

/// One block of [`drop_inputs`].
#[inline(always)]
fn drop_block(out: &mut [f32], x: &[f32], bits: &[u16], threshold: u16, scale: f32) {
    for ((o, &v), &b) in out.iter_mut().zip(x).zip(bits) {
        *o = if b >= threshold { v * scale } else { 0.0 };
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
            wide(|| mask_block(out, mask, bits, threshold, scale));
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
            wide(|| drop_block(out, x, bits, threshold, scale));
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
    fn each_lane_is_a_xoshiro256_plus_plus_generator() {
        let mut seed = Xoshiro256PlusPlus::seed_from_u64(11);
        let mut lanes = Lanes::seeded(&mut seed);
        // The same state, word by word, in one generator of the rand crate.
        let mut state = [0u8; 32];
        for (w, bytes) in state.chunks_exact_mut(8).enumerate() {
            bytes.copy_from_slice(&lanes.s[w][3].to_le_bytes());
        }
        let mut one = Xoshiro256PlusPlus::from_seed(state);
        for _ in 0..100 {
            assert_eq!(lanes.next()[3], one.next_u64());
        }
    }

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
