//! A job as a sequence of stages, as its model kind cuts it: for a DBN, RBM
//! pre-training per layer, then the supervised stage; for most kinds, one.

use super::JobSpec;
use crate::optim::OptimizerConfig;

/// One stage: what it trains and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Name in progress, metrics and saved files: `train`, or `rbm1`, `rbm2`,
    /// …, `finetune` for a DBN.
    pub name: String,
    /// Trained with labels: scored by accuracy, and what a target is for.
    pub supervised: bool,
    /// How many of the stages before this one its input passes through (0:
    /// the data as it is; a DBN's RBM `l`: the `l` RBMs below).
    pub input_layers: u32,
    /// Epochs.
    pub epochs: u32,
    /// Minibatch size.
    pub batch_size: u32,
    /// Optimizer, with its schedule.
    pub optimizer: OptimizerConfig,
}

impl Stage {
    /// A supervised stage on the data as it is, with the job's `[train]`
    /// epochs and minibatch and its `[optimizer]`.
    pub fn supervised(name: &str, job: &JobSpec) -> Self {
        Self {
            name: name.into(),
            supervised: true,
            input_layers: 0,
            epochs: job.train.epochs,
            batch_size: job.train.batch_size,
            optimizer: job.optimizer,
        }
    }
}

impl JobSpec {
    /// The job's stages in order, as its model kind cuts it (none when this
    /// process does not know the kind).
    pub fn stages(&self) -> Vec<Stage> {
        self.kind().map(|k| k.stages(self)).unwrap_or_default()
    }
}
