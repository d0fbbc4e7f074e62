//! `gradient()` on every local core: the batch is split into one contiguous
//! shard per rayon thread, each shard writes its partial gradient into its own
//! preallocated buffer, and the partials are summed in parallel chunks. After
//! construction a step allocates nothing.

use ndarray::{ArrayView2, s};
use rayon::prelude::*;

use super::mlp::{check_labels, check_params, check_width};
use super::{Model, ModelError};

/// Values per chunk when summing partial gradients: big enough to amortise
/// task overhead, small enough to spread over the cores.
const REDUCE_CHUNK: usize = 16 * 1024;

struct Shard<S> {
    scratch: S,
    grad: Vec<f32>,
    loss: f32,
    rows: usize,
}

/// Computes a model's batch gradient across the threads of the current rayon
/// pool, reusing its buffers from step to step.
pub struct GradientEngine<M: Model> {
    model: M,
    shards: Vec<Shard<M::Scratch>>,
    sum: Vec<f32>,
    max_batch: usize,
}

impl<M: Model> GradientEngine<M> {
    /// An engine for batches of up to `max_batch` rows, with one shard per
    /// thread of the current rayon pool.
    pub fn new(model: M, max_batch: usize, seed: u64) -> Self {
        Self::with_threads(model, max_batch, rayon::current_num_threads(), seed)
    }

    /// An engine with an explicit number of shards (at least one).
    pub fn with_threads(model: M, max_batch: usize, threads: usize, seed: u64) -> Self {
        let threads = threads.clamp(1, max_batch.max(1));
        let rows = max_batch.div_ceil(threads);
        let len = model.layout().len();
        let shards = (0..threads)
            .map(|i| Shard {
                // Each shard samples from its own stream.
                scratch: model.scratch(rows, seed.wrapping_add(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                grad: vec![0.0; len],
                loss: 0.0,
                rows: 0,
            })
            .collect();
        let sum = if threads > 1 { vec![0.0; len] } else { Vec::new() };
        Self {
            model,
            shards,
            sum,
            max_batch,
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Number of shards a batch is split into.
    pub fn threads(&self) -> usize {
        self.shards.len()
    }

    /// The largest batch this engine takes.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Mean loss over the batch and the gradient of that mean with respect to
    /// `params`. The gradient borrows the engine's buffer until the next call.
    pub fn gradient(&mut self, params: &[f32], x: ArrayView2<'_, f32>, y: &[u8]) -> Result<(f32, &[f32]), ModelError> {
        let rows = x.nrows();
        check_params(self.model.layout(), params)?;
        check_width(self.model.input_dim(), x)?;
        if rows == 0 || rows > self.max_batch {
            return Err(ModelError::BadBatch(format!(
                "{rows} rows (this engine takes 1 to {})",
                self.max_batch
            )));
        }
        if let Some(classes) = self.model.classes() {
            if y.len() != rows {
                return Err(ModelError::BadBatch(format!("{rows} rows but {} labels", y.len())));
            }
            check_labels(y, classes)?;
        }
        let scale = 1.0 / rows as f32;
        let threads = self.shards.len();
        let model = &self.model;
        self.shards.par_iter_mut().enumerate().for_each(|(i, shard)| {
            let (start, end) = (i * rows / threads, (i + 1) * rows / threads);
            shard.rows = end - start;
            if shard.rows == 0 {
                return;
            }
            let xs = x.slice(s![start..end, ..]);
            let ys = if y.is_empty() { y } else { &y[start..end] };
            shard.loss = model.shard_gradient(params, xs, ys, scale, &mut shard.grad, &mut shard.scratch);
        });
        let active = || self.shards.iter().filter(|s| s.rows > 0);
        let loss = active().map(|s| s.loss).sum::<f32>() * scale;
        if threads == 1 {
            return Ok((loss, &self.shards[0].grad));
        }
        let shards = &self.shards;
        self.sum.par_chunks_mut(REDUCE_CHUNK).enumerate().for_each(|(c, out)| {
            let range = c * REDUCE_CHUNK..c * REDUCE_CHUNK + out.len();
            let mut parts = shards.iter().filter(|s| s.rows > 0);
            if let Some(first) = parts.next() {
                out.copy_from_slice(&first.grad[range.clone()]);
            }
            for part in parts {
                for (o, g) in out.iter_mut().zip(&part.grad[range.clone()]) {
                    *o += g;
                }
            }
        });
        Ok((loss, &self.sum))
    }
}
