//! A job as a sequence of stages: RBM pre-training per layer, then the
//! supervised stage.

use super::{JobSpec, ModelKind};
use std::sync::Arc;

use crate::model::{ModelError, SharedNetwork};
use crate::optim::OptimizerConfig;

/// What one stage of a job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// RBM number `layer` (from 0) of a DBN, on the features of the layers below.
    Rbm {
        /// Which RBM.
        layer: u32,
    },
    /// The whole network with its softmax output, supervised.
    Supervised,
}

/// One stage: what it trains and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Name in progress and metrics: `rbm1`, `rbm2`, …, `finetune` (or `train` for an MLP).
    pub name: String,
    /// What it trains.
    pub kind: StageKind,
    /// Epochs.
    pub epochs: u32,
    /// Minibatch size.
    pub batch_size: u32,
    /// Optimizer, with its schedule.
    pub optimizer: OptimizerConfig,
}

impl JobSpec {
    /// The model stage `kind` trains, for inputs of `input_dim` and `classes` outputs.
    pub fn stage_model(&self, kind: StageKind, input_dim: usize, classes: usize) -> Result<SharedNetwork, ModelError> {
        Ok(match kind {
            StageKind::Supervised => Arc::new(self.build_mlp(input_dim, classes)?),
            StageKind::Rbm { layer } => Arc::new(self.build_dbn(input_dim, classes)?.rbm(layer as usize)?),
        })
    }

    /// The job's stages in order: for a DBN with pre-training, one per RBM,
    /// then the supervised stage.
    pub fn stages(&self) -> Vec<Stage> {
        let supervised = Stage {
            name: if self.model.kind == ModelKind::Dbn {
                "finetune"
            } else {
                "train"
            }
            .into(),
            kind: StageKind::Supervised,
            epochs: self.train.epochs,
            batch_size: self.train.batch_size,
            optimizer: self.optimizer,
        };
        let mut stages = Vec::new();
        if self.model.kind == ModelKind::Dbn {
            let p = self.pretrain.clone().unwrap_or_default();
            if p.epochs > 0 {
                for layer in 0..self.model.hidden.len() as u32 {
                    stages.push(Stage {
                        name: format!("rbm{}", layer + 1),
                        kind: StageKind::Rbm { layer },
                        epochs: p.epochs,
                        batch_size: p.batch_size,
                        optimizer: OptimizerConfig {
                            lr: p.lr,
                            weight_decay: p.weight_decay,
                            momentum: Some(p.momentum),
                            final_momentum: Some((p.momentum_epochs, p.final_momentum)),
                            ..OptimizerConfig::default()
                        },
                    });
                }
            }
        }
        stages.push(supervised);
        stages
    }
}
