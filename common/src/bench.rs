//! Measuring `gradient()` throughput: samples per second and achieved GFLOP/s
//! on synthetic batches (throughput does not depend on the pixel values).

use std::time::Instant;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::model::{GradientEngine, Model, ModelError};

/// Throughput of one timed window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Examples per second.
    pub samples_per_s: f64,
    /// Achieved GFLOP/s, counting the model's matrix products.
    pub gflops: f64,
}

/// Median of a non-empty list (the mean of the middle two for even lengths).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Runs `gradient()` on batches of `batch` rows, on the current rayon pool,
/// for `trials` windows of about `seconds` each (after a warm-up), and
/// returns the throughput of every window.
pub fn gradient_throughput<M: Model>(
    model: M,
    batch: usize,
    trials: usize,
    seconds: f64,
) -> Result<Vec<Throughput>, ModelError> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
    let x = Array2::from_shape_fn((batch, model.input_dim()), |_| rng.random::<f32>());
    let y: Vec<u8> = match model.classes() {
        Some(c) => (0..batch).map(|_| rng.random_range(0..c) as u8).collect(),
        None => Vec::new(),
    };
    let params = model.init(1);
    let flops = model.flops_per_example() as f64;
    let mut engine = GradientEngine::new(model, batch, 7);
    for _ in 0..5 {
        engine.gradient(&params, x.view(), &y)?;
    }
    let mut out = Vec::with_capacity(trials);
    for _ in 0..trials {
        let start = Instant::now();
        let mut steps = 0usize;
        while start.elapsed().as_secs_f64() < seconds {
            engine.gradient(&params, x.view(), &y)?;
            steps += 1;
        }
        let samples_per_s = (steps * batch) as f64 / start.elapsed().as_secs_f64();
        out.push(Throughput {
            samples_per_s,
            gflops: samples_per_s * flops / 1e9,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
