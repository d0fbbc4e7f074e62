//! The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of
//! Large-Batch Training"): `B_noise = tr(Σ) / |G|²`, the batch size around
//! which more examples per step stop cutting the steps a target takes. The
//! steps needed at batch `B` are about `S_min·(1 + B_noise/B)`, so a cluster
//! whose global batch grows from `b` to `N·b` can at best cut its steps by
//! `(1 + B_noise/b) / (1 + B_noise/(N·b))`.
//!
//! Estimated as the paper does, from minibatch gradients of two sizes at the
//! same parameters: `E|g_B|² = |G|² + tr(Σ)/B` for each size gives both
//! unknowns.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::Dataset;
use crate::model::{ModelError, Network};
use crate::train::Batch;

/// The noise scale and the two quantities it is the ratio of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseScale {
    /// `tr(Σ) / |G|²`, in examples.
    pub b_noise: f64,
    /// `|G|²`, the squared norm of the full-batch gradient.
    pub g2: f64,
    /// `tr(Σ)`, the per-example gradient variance summed over parameters.
    pub trace: f64,
}

impl NoiseScale {
    /// From the mean squared gradient norms at two batch sizes; `None` when
    /// the estimates leave `|G|²` or `tr(Σ)` non-positive (too few samples,
    /// or a gradient dominated by noise).
    pub fn from_norms(small: (usize, f64), big: (usize, f64)) -> Option<Self> {
        let ((bs, ns), (bb, nb)) = ((small.0 as f64, small.1), (big.0 as f64, big.1));
        if bb <= bs {
            return None;
        }
        let g2 = (bb * nb - bs * ns) / (bb - bs);
        let trace = (ns - nb) / (1.0 / bs - 1.0 / bb);
        (g2 > 0.0 && trace > 0.0).then(|| Self {
            b_noise: trace / g2,
            g2,
            trace,
        })
    }

    /// How many times fewer steps the model predicts at global batch `batch`
    /// than at `base`: the ceiling on the speed-up of growing one into the other.
    pub fn ceiling(&self, base: f64, batch: f64) -> f64 {
        ceiling(self.b_noise, base, batch)
    }
}

/// [`NoiseScale::ceiling`] for a noise scale of `b_noise` examples.
pub fn ceiling(b_noise: f64, base: f64, batch: f64) -> f64 {
    (1.0 + b_noise / base) / (1.0 + b_noise / batch)
}

/// Measures the noise scale of `network` at `params` on `data`: `rounds`
/// minibatches of `small` rows and as many of `big`, drawn by `seed`.
pub fn measure(
    network: &dyn Network,
    params: &[f32],
    data: &Dataset,
    (small, big): (usize, usize),
    rounds: usize,
    seed: u64,
) -> Result<Option<NoiseScale>, ModelError> {
    let big = big.min(data.len());
    if small == 0 || big <= small {
        return Ok(None);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut engine = network.engine(big, rayon::current_num_threads(), seed);
    let supervised = network.classes().is_some();
    let mut batch = Batch::new(big, data.dim());
    let mut mean_norm = |rows: usize, rng: &mut Xoshiro256PlusPlus| -> Result<f64, ModelError> {
        let mut sum = 0.0;
        for _ in 0..rounds.max(1) {
            let picked = sample(rng, data.len(), rows).into_vec();
            batch.fill(data, &picked);
            let (_, g) = engine.gradient(params, batch.x(), batch.labels(supervised))?;
            sum += g.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        }
        Ok(sum / rounds.max(1) as f64)
    };
    let n_small = mean_norm(small, &mut rng)?;
    let n_big = mean_norm(big, &mut rng)?;
    Ok(NoiseScale::from_norms((small, n_small), (big, n_big)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Mlp};
    use ndarray::Array2;

    #[test]
    fn the_estimators_invert_the_model_of_the_norms() {
        // |G|² = 2, tr(Σ) = 64: E|g_B|² = 2 + 64/B.
        let norm = |b: usize| 2.0 + 64.0 / b as f64;
        let n = NoiseScale::from_norms((16, norm(16)), (128, norm(128))).unwrap();
        assert!((n.g2 - 2.0).abs() < 1e-9 && (n.trace - 64.0).abs() < 1e-9);
        assert!((n.b_noise - 32.0).abs() < 1e-9);
        // From 32 to 256 examples per step: (1 + 1) / (1 + 1/8) = 16/9.
        assert!((n.ceiling(32.0, 256.0) - 16.0 / 9.0).abs() < 1e-12);
        assert!(
            NoiseScale::from_norms((16, 1.0), (128, 2.0)).is_none(),
            "more noise at the larger batch"
        );
    }

    #[test]
    fn noisier_labels_have_a_larger_noise_scale() {
        // Features that say the class, with a share of labels drawn at random.
        let data = |random: usize| {
            let n = 2048;
            let label = |i: usize| if i % 10 < random { (i * 7 / 3) % 4 } else { i % 4 };
            let x = Array2::from_shape_fn(
                (n, 8),
                |(i, j)| if j == i % 4 { 1.0 } else { 0.1 * ((i * j) % 5) as f32 },
            );
            Dataset::new(x, (0..n).map(|i| label(i) as u8).collect(), 4).unwrap()
        };
        let mlp = Mlp::new(&[8, 16, 4], Activation::Tanh).unwrap();
        let params = mlp.init(1);
        let scale = |random| {
            measure(&mlp, &params, &data(random), (8, 256), 64, 5)
                .unwrap()
                .unwrap()
                .b_noise
        };
        let (clean, noisy) = (scale(0), scale(6));
        assert!(noisy > clean * 1.5, "clean {clean}, noisy {noisy}");
    }
}
