//! Measuring `gradient()` throughput: samples per second and achieved GFLOP/s
//! on synthetic batches (throughput does not depend on the pixel values).

use std::time::Instant;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use rayon::prelude::*;

use crate::model::layered::LayerPass;
use crate::model::{Engine, Layered, ModelError, Network};

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

/// A model's `gradient()` on one synthetic batch, timed a window at a time,
/// so that the windows of several workloads (and of the GEMM peak) can take
/// turns and the machine's drift reaches them all alike.
pub struct GradientBench {
    engine: Box<dyn Engine>,
    params: Vec<f32>,
    x: Array2<f32>,
    y: Vec<u8>,
    flops: f64,
}

impl GradientBench {
    /// A warmed-up engine on the current rayon pool for batches of `batch`
    /// rows, built through the model seam as executors build theirs.
    pub fn new(model: &dyn Network, batch: usize) -> Result<Self, ModelError> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
        let x = Array2::from_shape_fn((batch, model.input_dim()), |_| rng.random::<f32>());
        let y: Vec<u8> = match model.classes() {
            Some(c) => (0..batch).map(|_| rng.random_range(0..c) as u8).collect(),
            None => Vec::new(),
        };
        let params = model.init(1);
        let flops = model.flops_per_example() as f64;
        let mut engine = model.engine(batch, rayon::current_num_threads(), 7);
        for _ in 0..5 {
            engine.gradient(&params, x.view(), &y)?;
        }
        Ok(Self {
            engine,
            params,
            x,
            y,
            flops,
        })
    }

    /// Runs `gradient()` for about `seconds` and returns the window's throughput.
    pub fn window(&mut self, seconds: f64) -> Result<Throughput, ModelError> {
        let start = Instant::now();
        let mut steps = 0usize;
        while start.elapsed().as_secs_f64() < seconds {
            self.engine.gradient(&self.params, self.x.view(), &self.y)?;
            steps += 1;
        }
        let samples_per_s = (steps * self.x.nrows()) as f64 / start.elapsed().as_secs_f64();
        Ok(Throughput {
            samples_per_s,
            gflops: samples_per_s * self.flops / 1e9,
        })
    }
}

/// One layer of a layered network timed alone: every thread of the current
/// rayon pool runs its forward and backward passes on a shard of its own, as
/// a training step's shards do.
pub struct LayerBench<'a> {
    shards: Vec<LayerPass<'a>>,
    rows: usize,
    flops: f64,
}

impl<'a> LayerBench<'a> {
    /// Layer `l` of `net` for batches of `batch` examples split over the
    /// pool's threads, warmed up.
    pub fn new(net: &'a Layered, l: usize, batch: usize) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let rows = batch.div_ceil(threads);
        let mut shards: Vec<_> = (0..threads).map(|t| net.layer_pass(l, rows, t as u64)).collect();
        shards.par_iter_mut().for_each(|s| s.run());
        Self {
            shards,
            rows,
            flops: net.layer_flops(l) as f64,
        }
    }

    /// Runs the layer for about `seconds` and returns the window's throughput.
    pub fn window(&mut self, seconds: f64) -> Throughput {
        let start = Instant::now();
        let mut steps = 0usize;
        while start.elapsed().as_secs_f64() < seconds {
            self.shards.par_iter_mut().for_each(|s| s.run());
            steps += 1;
        }
        let examples = steps * self.rows * self.shards.len();
        let samples_per_s = examples as f64 / start.elapsed().as_secs_f64();
        Throughput {
            samples_per_s,
            gflops: samples_per_s * self.flops / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_window_counts_the_examples_it_computed() {
        use crate::model::{Activation, Mlp, Model};
        let mlp = Mlp::new(&[6, 5, 3], Activation::Relu).unwrap();
        let flops = mlp.flops_per_example() as f64;
        let mut bench = super::GradientBench::new(&mlp, 4).unwrap();
        let t = bench.window(0.05).unwrap();
        assert!(t.samples_per_s > 0.0);
        assert!((t.gflops - t.samples_per_s * flops / 1e9).abs() <= 1e-9 * t.gflops.max(1.0));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
