//! The in-process SGD loop: shuffled minibatches through a
//! [`GradientEngine`] and an [`Optimizer`]. Executors run the same loop over
//! their partitions; the local trainer and the real-data tests run it over a
//! whole dataset.

use std::time::Instant;

use ndarray::{Array2, s};
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
        /// Steps taken in the epoch.
        step: usize,
    },
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

/// Minibatch SGD over a dataset, with every buffer allocated up front.
pub struct Trainer<M: Model> {
    engine: GradientEngine<M>,
    optimizer: Box<dyn Optimizer>,
    batch_size: usize,
    x: Array2<f32>,
    y: Vec<u8>,
    order: Vec<usize>,
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
            batch_size,
            x: Array2::zeros((batch_size, dim)),
            y: Vec::with_capacity(batch_size),
            order: Vec::new(),
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
        self.order.clear();
        self.order.extend(0..data.len());
        self.order.shuffle(&mut self.rng);
        let mut loss_sum = 0.0f64;
        let mut steps = 0;
        for rows in self.order.chunks(self.batch_size) {
            data.gather(rows, &mut self.x, &mut self.y);
            let labels: &[u8] = if self.engine.model().classes().is_some() {
                &self.y
            } else {
                &[]
            };
            let (loss, grad) = self
                .engine
                .gradient(params, self.x.slice(s![..rows.len(), ..]), labels)?;
            if !loss.is_finite() {
                return Err(TrainError::Diverged { loss, step: steps });
            }
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
