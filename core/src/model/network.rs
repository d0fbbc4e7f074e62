//! The seam every model is seen through. The driver, the executors, MPI
//! followers, evaluation and the benches hold a model as an
//! `Arc<dyn Network>` and its gradient computation as a `Box<dyn Engine>`,
//! whatever the model is; a model's own code implements [`Model`] (the
//! gradient of a shard of a minibatch) and [`Network`] (what else the rest of
//! deepdist asks of it). One virtual call per minibatch is all the seam
//! costs: the shards' work inside [`GradientEngine`] stays monomorphic.

use std::sync::Arc;

use ndarray::{Array2, ArrayView2};

use super::{GradientEngine, Layout, Model, ModelError};
use crate::data::Dataset;

/// How a stage's model did on held-out examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageEval {
    /// Loss and accuracy of a classifier.
    Supervised(super::Evaluation),
    /// Mean squared reconstruction error of an unsupervised model (an RBM).
    Reconstruction(f32),
}

/// A model as the rest of deepdist sees it: its parameters' layout, fresh
/// parameters, gradient engines for the executors' cores, and evaluation.
pub trait Network: Send + Sync + std::fmt::Debug {
    /// Names and shapes of the tensors inside the flat parameter vector.
    fn layout(&self) -> &Layout;

    /// Features per input row.
    fn input_dim(&self) -> usize;

    /// Number of classes the labels index, or `None` for unsupervised models.
    fn classes(&self) -> Option<usize>;

    /// Fresh parameters, deterministic for a seed.
    fn init(&self, seed: u64) -> Vec<f32>;

    /// Fresh parameters for training on `sample`, an early part of the
    /// training data (an RBM starts its visible biases from the data's mean);
    /// by default [`Network::init`].
    fn init_for(&self, seed: u64, sample: &Dataset) -> Vec<f32> {
        let _ = sample;
        self.init(seed)
    }

    /// A gradient engine for minibatches of up to `max_batch` rows, split into
    /// `threads` shards (one per core of the pool that runs it).
    fn engine(&self, max_batch: usize, threads: usize, seed: u64) -> Box<dyn Engine>;

    /// Scores `params` on `data`, whose features are this model's inputs.
    fn evaluate(&self, params: &[f32], data: &Dataset) -> Result<StageEval, ModelError>;

    /// The model's outputs for every row of `x` (class probabilities, for a
    /// classifier); a model without outputs to predict says so.
    fn predict(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Result<Array2<f32>, ModelError> {
        let _ = (params, x);
        Err(ModelError::BadSpec(
            "this model has no outputs to predict (an unsupervised stage)".into(),
        ))
    }

    /// Floating-point operations of one example's gradient, counting the
    /// matrix products (2 per multiply-add).
    fn flops_per_example(&self) -> u64;

    /// The network's layers for people, one per line, when it has more to
    /// say than its tensors' shapes (saved with the model, shown by `eval`).
    fn describe(&self) -> Option<String> {
        None
    }
}

/// A model's batch gradients on every core, behind the seam: what
/// [`GradientEngine`] does for one model type, for any.
pub trait Engine: Send {
    /// The network the engine computes for.
    fn network(&self) -> &dyn Network;

    /// Number of shards a batch is split into.
    fn threads(&self) -> usize;

    /// The largest batch this engine takes.
    fn max_batch(&self) -> usize;

    /// Mean loss over the batch and the gradient of that mean at `params`;
    /// anything accumulated and not yet taken is discarded.
    fn gradient(&mut self, params: &[f32], x: ArrayView2<'_, f32>, y: &[u8]) -> Result<(f32, &[f32]), ModelError>;

    /// Adds the gradient of this batch's mean loss to the running total and
    /// returns the mean loss.
    fn accumulate(&mut self, params: &[f32], x: ArrayView2<'_, f32>, y: &[u8]) -> Result<f32, ModelError>;

    /// The sum accumulated since the last take (zero if none).
    fn take(&mut self) -> &[f32];

    /// Forgets any accumulated gradient.
    fn discard(&mut self);

    /// Another engine for the same network (a Hogwild! thread's own).
    fn fork(&self, max_batch: usize, threads: usize, seed: u64) -> Box<dyn Engine>;

    /// Restarts every random stream (dropout's masks, sampling) from `seed`,
    /// so what a task draws depends on the task, not on the tasks this
    /// engine ran before.
    fn reseed(&mut self, seed: u64);
}

impl<M: Model + Network + Clone + 'static> Engine for GradientEngine<M> {
    fn network(&self) -> &dyn Network {
        self.model()
    }

    fn threads(&self) -> usize {
        GradientEngine::threads(self)
    }

    fn max_batch(&self) -> usize {
        GradientEngine::max_batch(self)
    }

    fn gradient(&mut self, params: &[f32], x: ArrayView2<'_, f32>, y: &[u8]) -> Result<(f32, &[f32]), ModelError> {
        GradientEngine::gradient(self, params, x, y)
    }

    fn accumulate(&mut self, params: &[f32], x: ArrayView2<'_, f32>, y: &[u8]) -> Result<f32, ModelError> {
        GradientEngine::accumulate(self, params, x, y)
    }

    fn take(&mut self) -> &[f32] {
        GradientEngine::take(self)
    }

    fn discard(&mut self) {
        GradientEngine::discard(self)
    }

    fn fork(&self, max_batch: usize, threads: usize, seed: u64) -> Box<dyn Engine> {
        Box::new(GradientEngine::with_threads(
            self.model().clone(),
            max_batch,
            threads,
            seed,
        ))
    }

    fn reseed(&mut self, seed: u64) {
        GradientEngine::reseed(self, seed)
    }
}

/// Writes the [`Network`] methods a [`Model`] already answers — `layout`,
/// `input_dim`, `classes`, `init`, `engine` and `flops_per_example` — inside
/// a model's `impl Network`, leaving it to write `evaluate` (and what else it
/// adds). The model must be `Clone + 'static`.
#[macro_export]
macro_rules! network_from_model {
    () => {
        fn layout(&self) -> &$crate::model::Layout {
            $crate::model::Model::layout(self)
        }

        fn input_dim(&self) -> usize {
            $crate::model::Model::input_dim(self)
        }

        fn classes(&self) -> Option<usize> {
            $crate::model::Model::classes(self)
        }

        fn init(&self, seed: u64) -> Vec<f32> {
            $crate::model::Model::init(self, seed)
        }

        fn engine(&self, max_batch: usize, threads: usize, seed: u64) -> Box<dyn $crate::model::Engine> {
            Box::new($crate::model::GradientEngine::with_threads(
                self.clone(),
                max_batch,
                threads,
                seed,
            ))
        }

        fn flops_per_example(&self) -> u64 {
            $crate::model::Model::flops_per_example(self)
        }
    };
}

/// A shared network: how stages, evaluators and workers hold a model.
pub type SharedNetwork = Arc<dyn Network>;

/// Whether two networks compute the same thing: the same layout over the
/// same inputs and outputs (an engine built for one serves the other).
pub fn same_network(a: &dyn Network, b: &dyn Network) -> bool {
    a.layout() == b.layout() && a.input_dim() == b.input_dim() && a.classes() == b.classes()
}
