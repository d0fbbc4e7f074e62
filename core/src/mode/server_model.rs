//! The master parameters every server rule descends: versions, staleness,
//! and the recent versions a delay-compensating optimizer needs.

use std::collections::VecDeque;

use crate::optim::{Grad, OptimError, Optimizer, Step};

/// The master parameters and their descent rule, as every server rule
/// sees them: a version counted per applied update, and the staleness of
/// every update applied. For a delay-compensating optimizer it also keeps
/// the parameters of recent versions, the points updates were computed at.
pub struct ServerModel {
    params: Vec<f32>,
    optimizer: Box<dyn Optimizer>,
    version: u64,
    staleness_sum: u64,
    refused: u64,
    /// Recent versions' parameters, oldest first (only if the optimizer wants them).
    history: VecDeque<(u64, Vec<f32>)>,
    keep: usize,
    /// The job's minibatch: an update's examples over this are the job
    /// minibatches it advances the schedule's warm-up by (0: one per update).
    batch: u32,
}

impl ServerModel {
    /// A model at `version` (a resumed checkpoint's count, or 0) whose
    /// applied updates' staleness summed to `staleness_sum`.
    pub fn new(params: Vec<f32>, optimizer: Box<dyn Optimizer>, version: u64, staleness_sum: u64) -> Self {
        Self {
            params,
            optimizer,
            version,
            staleness_sum,
            refused: 0,
            history: VecDeque::new(),
            keep: 0,
            batch: 0,
        }
    }

    /// Counts the schedule's warm-up in minibatches of `batch` examples
    /// rather than in updates, whatever minibatch the executors run.
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }

    /// Keeps the parameters of the last `versions` versions when the
    /// optimizer compensates for delay (older bases use the oldest kept).
    pub fn keep_versions(&mut self, versions: usize) {
        if self.optimizer.wants_base() {
            self.keep = versions.max(1);
            self.remember();
        }
    }

    fn remember(&mut self) {
        if self.keep == 0 {
            return;
        }
        let mut slot = if self.history.len() >= self.keep {
            self.history.pop_front().map(|(_, v)| v).unwrap_or_default()
        } else {
            Vec::new()
        };
        slot.clear();
        slot.extend_from_slice(&self.params);
        self.history.push_back((self.version, slot));
    }

    /// The parameters.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True for a model without parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Updates applied so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sum of the staleness of every applied update.
    pub fn staleness_sum(&self) -> u64 {
        self.staleness_sum
    }

    /// Updates refused (wrong length, out of their round, or refused by the optimizer).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Counts an update refused by a rule.
    pub fn refuse(&mut self) {
        self.refused += 1;
    }

    /// The optimizer, for schedules, snapshots and checkpoints.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// The optimizer, mutably.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.optimizer.as_mut()
    }

    /// One `descent()` step with `update` (a gradient, or summed step
    /// directions) computed from version `base_version`; a new version.
    pub fn descend(&mut self, update: &[f32], base_version: u64, examples: u64) -> Result<(), OptimError> {
        self.descend_with(Grad::Values(update), base_version, examples)
    }

    /// [`ServerModel::descend`] with an update the step forms as it reads it.
    pub fn descend_with(&mut self, update: Grad<'_>, base_version: u64, examples: u64) -> Result<(), OptimError> {
        let staleness = self.version.saturating_sub(base_version);
        let base = (self.keep > 0)
            .then(|| {
                self.history
                    .iter()
                    .find(|(v, _)| *v >= base_version)
                    .or(self.history.back())
            })
            .flatten();
        let minibatches = match (examples, self.batch) {
            (0, _) | (_, 0) => 1.0,
            (examples, batch) => examples as f64 / f64::from(batch),
        };
        let step = Step {
            base: base.map(|(_, b)| b.as_slice()),
            minibatches,
            ..Step::new(update, staleness)
        };
        match self.optimizer.apply(&mut self.params, &step) {
            Ok(()) => {
                self.version += 1;
                self.staleness_sum += staleness;
                self.remember();
                Ok(())
            }
            Err(e) => {
                self.refused += 1;
                Err(e)
            }
        }
    }

    /// Adds `delta` to the parameters as a new version, outside the
    /// optimizer (elastic averaging moves its centre this way).
    pub fn add(&mut self, delta: &[f32], base_version: u64) {
        if delta.len() != self.params.len() {
            self.refused += 1;
            return;
        }
        self.params.iter_mut().zip(delta).for_each(|(w, d)| *w += d);
        self.staleness_sum += self.version.saturating_sub(base_version);
        self.version += 1;
        self.remember();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimizerConfig, OptimizerKind};

    #[test]
    fn a_delay_compensating_optimizer_gets_the_version_an_update_was_computed_at() {
        let dc = OptimizerConfig {
            kind: OptimizerKind::Dcasgd,
            lr: 1.0,
            lambda: Some(1.0),
            ..OptimizerConfig::default()
        };
        let mut model = ServerModel::new(vec![0.0], dc.build(1).unwrap(), 0, 0);
        model.keep_versions(8);
        // The same steps by hand, each from the parameters of its version.
        let (mut by_hand, mut w) = (dc.build(1).unwrap(), vec![0.0]);
        let mut versions = vec![w.clone()];
        for base_version in [0, 1, 0] {
            model.descend(&[1.0], base_version, 0).unwrap();
            let base = versions[base_version as usize].clone();
            by_hand.step_from(&mut w, &[1.0], 0, &base).unwrap();
            versions.push(w.clone());
        }
        assert_eq!(model.params(), &w[..]);
        // Without the versions kept, the stale step is not compensated.
        let mut blind = ServerModel::new(vec![0.0], dc.build(1).unwrap(), 0, 0);
        for base_version in [0, 1, 0] {
            blind.descend(&[1.0], base_version, 0).unwrap();
        }
        assert_ne!(blind.params(), model.params());
        assert_eq!((model.version(), model.staleness_sum()), (3, 2));
    }

    #[test]
    fn the_warmup_counts_examples_not_updates() {
        let warm = OptimizerConfig {
            lr: 1.0,
            warmup_steps: Some(4),
            ..OptimizerConfig::default()
        };
        // One update of 64 examples, then four of 16: each reaches the same rate.
        let mut full = ServerModel::new(vec![0.0], warm.build(1).unwrap(), 0, 0).with_batch(64);
        full.descend(&[1.0], 0, 64).unwrap();
        let mut quarters = ServerModel::new(vec![0.0], warm.build(1).unwrap(), 0, 0).with_batch(64);
        for version in 0..4 {
            quarters.descend(&[4.0], version, 16).unwrap();
        }
        // 64 examples bring the ramp to 1/4 of the rate; four updates of 16
        // bring it there in quarters (rates 1/16, 2/16, 3/16, 4/16).
        assert_eq!(full.params(), &[-0.25]);
        assert_eq!(quarters.params(), &[-(4.0 * (1.0 + 2.0 + 3.0 + 4.0) / 16.0)]);
        assert_eq!(quarters.optimizer().minibatches(), 1.0);
    }
}
