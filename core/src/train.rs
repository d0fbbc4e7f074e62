//! The minibatch loop every trainer shares: a dataset's rows in a shuffled
//! order handed out a minibatch at a time ([`Minibatches`]), gathered into
//! buffers allocated once ([`Batch`]), and every loss checked for divergence
//! ([`check_loss`]). Executors run it over their partitions (see
//! [`crate::mode`]); [`Trainer`], the in-process reference, over a whole
//! dataset with an [`Optimizer`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ndarray::{Array2, ArrayView2, s};
use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::Dataset;
use crate::model::{GradientEngine, Model, ModelError};
use crate::optim::{OptimError, Optimizer};

/// What can stop a training epoch.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model refused the batch or parameters.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The optimizer refused the step.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The loss became NaN or infinite: the learning rate is too high.
    #[error("training diverged (loss {loss} at step {step}); lower the learning rate")]
    Diverged {
        /// The loss seen.
        loss: f32,
        /// Steps taken in the epoch (or task) before it.
        step: usize,
    },
}

/// The loss of step `step`, or [`TrainError::Diverged`] if it is not finite:
/// once a loss is NaN every later step is too, and an update built from it
/// would ruin the shared model.
pub fn check_loss(loss: f32, step: usize) -> Result<f32, TrainError> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(TrainError::Diverged { loss, step })
    }
}

/// A pass over `len` rows in a shuffled order, handed out a minibatch at a
/// time. Claiming is atomic, so several threads can share one pass (each
/// minibatch goes to exactly one of them).
#[derive(Debug)]
pub struct Minibatches {
    order: Vec<usize>,
    batch: usize,
    next: AtomicUsize,
}

/// The seeds of one task's random streams, from the job's seed and the
/// task's place (epoch, partition) — never from which executor or thread
/// runs it, so a task draws the same wherever and whenever it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSeeds {
    /// The order of the partition's rows.
    pub order: u64,
    /// Everything the gradient draws (dropout masks, Gibbs samples).
    pub draws: u64,
}

impl TaskSeeds {
    /// The seeds of partition `partition` in epoch `epoch` of a job seeded `seed`.
    pub fn new(seed: u64, epoch: u32, partition: u32) -> Self {
        let place = (u64::from(epoch) << 32) ^ u64::from(partition);
        Self {
            order: seed ^ place,
            draws: (seed ^ place.rotate_left(17)).wrapping_mul(0xD1B5_4A32_D192_ED03),
        }
    }
}

impl Minibatches {
    /// The rows `0..len` shuffled by `rng`, in minibatches of `batch` (the
    /// last one may be smaller).
    pub fn shuffled(len: usize, batch: usize, rng: &mut impl Rng) -> Self {
        let mut order: Vec<usize> = (0..len).collect();
        order.shuffle(rng);
        Self {
            order,
            batch: batch.max(1),
            next: AtomicUsize::new(0),
        }
    }

    /// Like [`Minibatches::shuffled`] with a generator seeded by `seed`.
    pub fn seeded(len: usize, batch: usize, seed: u64) -> Self {
        Self::shuffled(len, batch, &mut Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// The largest minibatch.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Minibatches not yet claimed.
    pub fn remaining(&self) -> usize {
        let next = self.next.load(Ordering::Relaxed).min(self.order.len());
        (self.order.len() - next).div_ceil(self.batch)
    }

    /// The rows of the next minibatch, or `None` when the pass is over.
    pub fn claim(&self) -> Option<&[usize]> {
        let start = self.next.fetch_add(self.batch, Ordering::Relaxed);
        (start < self.order.len()).then(|| &self.order[start..(start + self.batch).min(self.order.len())])
    }
}

/// Buffers for one minibatch, allocated once.
#[derive(Debug, Clone)]
pub struct Batch {
    x: Array2<f32>,
    y: Vec<u8>,
    rows: usize,
}

impl Batch {
    /// Room for up to `max_rows` rows of `dim` features.
    pub fn new(max_rows: usize, dim: usize) -> Self {
        Self {
            x: Array2::zeros((max_rows.max(1), dim)),
            y: Vec::with_capacity(max_rows),
            rows: 0,
        }
    }

    /// Copies `rows` of `data` in (at most the buffer's size).
    pub fn fill(&mut self, data: &Dataset, rows: &[usize]) {
        let rows = &rows[..rows.len().min(self.x.nrows())];
        data.gather(rows, &mut self.x, &mut self.y);
        self.rows = rows.len();
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The features.
    pub fn x(&self) -> ArrayView2<'_, f32> {
        self.x.slice(s![..self.rows, ..])
    }

    /// The labels, or none for an unsupervised model (`supervised` false).
    pub fn labels(&self, supervised: bool) -> &[u8] {
        if supervised { &self.y } else { &[] }
    }
}

/// Statistics of one pass over a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Mean training loss over the epoch's minibatches.
    pub train_loss: f32,
    /// Examples processed.
    pub samples: usize,
    /// Wall time of the epoch in seconds.
    pub elapsed_s: f64,
}

impl EpochStats {
    /// Training throughput.
    pub fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.elapsed_s.max(f64::MIN_POSITIVE)
    }
}

/// Minibatch SGD over a dataset in this process, with every buffer allocated
/// up front.
pub struct Trainer<M: Model> {
    engine: GradientEngine<M>,
    optimizer: Box<dyn Optimizer>,
    batch: Batch,
    rng: Xoshiro256PlusPlus,
}

impl<M: Model> Trainer<M> {
    /// A trainer drawing minibatches of `batch_size` in an order seeded by `seed`.
    pub fn new(model: M, optimizer: Box<dyn Optimizer>, batch_size: usize, seed: u64) -> Self {
        let batch_size = batch_size.max(1);
        let dim = model.input_dim();
        Self {
            engine: GradientEngine::new(model, batch_size, seed),
            optimizer,
            batch: Batch::new(batch_size, dim),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// The model being trained.
    pub fn model(&self) -> &M {
        self.engine.model()
    }

    /// The optimizer, e.g. to change a momentum schedule between epochs.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.optimizer.as_mut()
    }

    /// One shuffled pass over `data`, updating `params` in place.
    pub fn epoch(&mut self, params: &mut [f32], data: &Dataset) -> Result<EpochStats, TrainError> {
        let start = Instant::now();
        let batches = Minibatches::shuffled(data.len(), self.engine.max_batch(), &mut self.rng);
        let supervised = self.engine.model().classes().is_some();
        let mut loss_sum = 0.0f64;
        let mut steps = 0;
        while let Some(rows) = batches.claim() {
            self.batch.fill(data, rows);
            let (loss, grad) = self
                .engine
                .gradient(params, self.batch.x(), self.batch.labels(supervised))?;
            let loss = check_loss(loss, steps)?;
            self.optimizer.step(params, grad, 0)?;
            loss_sum += f64::from(loss);
            steps += 1;
        }
        Ok(EpochStats {
            train_loss: (loss_sum / steps.max(1) as f64) as f32,
            samples: data.len(),
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_in_minibatches_shared_by_threads() {
        let batches = Minibatches::seeded(1000, 7, 3);
        assert_eq!(batches.remaining(), 143);
        let claimed = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while let Some(rows) = batches.claim() {
                        claimed.lock().unwrap().extend_from_slice(rows);
                    }
                });
            }
        });
        let mut rows = claimed.into_inner().unwrap();
        rows.sort_unstable();
        assert_eq!(rows, (0..1000).collect::<Vec<_>>());
        assert_eq!(batches.remaining(), 0);
        assert!(batches.claim().is_none());
    }

    #[test]
    fn a_non_finite_loss_is_divergence() {
        assert_eq!(check_loss(0.5, 0).unwrap(), 0.5);
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(matches!(check_loss(bad, 9), Err(TrainError::Diverged { step: 9, .. })));
        }
    }
}
