//! Optimizers: the parameter server's `descent()`. Each step receives the
//! update's staleness (the number of steps applied since the parameters it
//! was computed from were read), so delay-aware rules can use it.

pub mod adagrad;
pub mod adarevision;
pub mod average;
mod chunks;
mod config;
pub mod dcasgd;
pub mod schedule;
pub mod sgd;

use serde::{Deserialize, Serialize};

pub use adagrad::AdaGrad;
pub use adarevision::AdaRevision;
pub use average::Averaged;
pub use chunks::{Grad, Step, Stepped};
pub use config::OptimizerConfig;
pub use dcasgd::DcAsgd;
pub use schedule::Schedule;
pub use sgd::Sgd;

/// Values per parallel task in a descent step: the step is memory-bound, so
/// chunks only need to be large enough to amortise scheduling.
pub(crate) const CHUNK: usize = 32 * 1024;

/// What can be wrong with an optimizer or a step.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptimError {
    /// A hyper-parameter out of range.
    #[error("invalid optimizer setting `{key}` = {value}: {allowed}")]
    BadSetting {
        /// The setting's name.
        key: &'static str,
        /// The value given.
        value: f64,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A setting that belongs to another kind of optimizer.
    #[error("optimizer setting `{key}` does not apply to `{kind:?}`")]
    NotFor {
        /// The setting.
        key: &'static str,
        /// The optimizer kind chosen.
        kind: OptimizerKind,
    },
    /// A saved state that does not fit this optimizer.
    #[error("optimizer state does not fit: {0}")]
    BadState(String),
    /// Parameters or gradient of a length other than the optimizer's.
    #[error("optimizer holds state for {expected} values; got {params} parameters and {grad} gradient values")]
    LengthMismatch {
        /// Values the optimizer was built for.
        expected: usize,
        /// Parameter count.
        params: usize,
        /// Gradient length.
        grad: usize,
    },
}

/// A descent rule applied by the parameter server. Each rule holds a
/// [`Common`] (its schedule, epoch and step count) and names its buffers;
/// the bookkeeping built on those is shared here.
pub trait Optimizer: Send {
    /// Applies one update: the rule's pass over the parameters, chunk by
    /// chunk on every core (see [`Step`]).
    fn apply(&mut self, params: &mut [f32], step: &Step<'_>) -> Result<(), OptimError>;

    /// Applies one update computed `staleness` steps ago.
    fn step(&mut self, params: &mut [f32], grad: &[f32], staleness: u64) -> Result<(), OptimError> {
        self.apply(params, &Step::new(Grad::Values(grad), staleness))
    }

    /// The schedule, epoch and step count.
    fn common(&self) -> &Common;

    /// [`Optimizer::common`], to change.
    fn common_mut(&mut self) -> &mut Common;

    /// The per-parameter buffers (velocity, sums of squares, ...), in a fixed order.
    fn buffers(&self) -> Vec<&Vec<f32>>;

    /// [`Optimizer::buffers`], to restore.
    fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>>;

    /// Steps applied so far.
    fn steps(&self) -> u64 {
        self.common().steps
    }

    /// Job minibatches' worth of examples applied so far.
    fn minibatches(&self) -> f64 {
        self.common().minibatches
    }

    /// Moves to epoch `epoch` (from 1) of the schedule, its rate and
    /// momentum, unless a later one is reached: updates of two epochs
    /// overlap at an epoch's end, and the rate must not follow the order in
    /// which they happen to arrive.
    fn begin_epoch(&mut self, epoch: u32) {
        let common = self.common_mut();
        common.epoch = common.epoch.max(epoch);
    }

    /// The moving average of the parameters, when this optimizer keeps one
    /// (see [`Averaged`]): what is evaluated and saved instead of the
    /// parameters themselves.
    fn average(&self) -> Option<&[f32]> {
        None
    }

    /// Whether steps need the parameters the update was computed from
    /// ([`Optimizer::step_from`]); the parameter server then keeps recent
    /// versions.
    fn wants_base(&self) -> bool {
        false
    }

    /// Applies an update computed `staleness` steps ago from parameters
    /// `base`; only delay-compensating rules look at `base`.
    fn step_from(&mut self, params: &mut [f32], grad: &[f32], staleness: u64, base: &[f32]) -> Result<(), OptimError> {
        let step = Step {
            base: Some(base),
            ..Step::new(Grad::Values(grad), staleness)
        };
        self.apply(params, &step)
    }

    /// The state a checkpoint needs to continue exactly where this left off.
    fn state(&self) -> OptimizerState {
        OptimizerState {
            steps: self.steps(),
            minibatches: self.minibatches(),
            buffers: self.buffers().into_iter().cloned().collect(),
        }
    }

    /// Takes back a state from [`Optimizer::state`] of an optimizer built
    /// the same way; refused if its shape differs.
    fn restore(&mut self, state: OptimizerState) -> Result<(), OptimError> {
        let (steps, minibatches) = (state.steps, state.minibatches);
        state.unpack(&mut self.buffers_mut())?;
        let common = self.common_mut();
        (common.steps, common.minibatches) = (steps, minibatches);
        Ok(())
    }
}

/// An optimizer's internal state: its step count and its per-parameter
/// buffers (velocity, sums of squares, ...), in the optimizer's own order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OptimizerState {
    /// Steps applied.
    pub steps: u64,
    /// Job minibatches' worth of examples applied (the warm-up's progress).
    pub minibatches: f64,
    /// The buffers.
    pub buffers: Vec<Vec<f32>>,
}

impl OptimizerState {
    /// The states of the optimizers of a sharded server whose shards hold
    /// `ranges` of the parameters: every buffer holds one value per
    /// parameter, so each shard takes its range of each.
    pub fn split(&self, ranges: &[std::ops::Range<usize>]) -> Result<Vec<OptimizerState>, OptimError> {
        let len = ranges.last().map_or(0, |r| r.end);
        if let Some(b) = self.buffers.iter().find(|b| b.len() != len) {
            return Err(OptimError::BadState(format!(
                "a buffer of {} values for {len} parameters",
                b.len()
            )));
        }
        Ok(ranges
            .iter()
            .map(|r| OptimizerState {
                steps: self.steps,
                minibatches: self.minibatches,
                buffers: self.buffers.iter().map(|b| b[r.clone()].to_vec()).collect(),
            })
            .collect())
    }

    /// The state of one optimizer over all the parameters from its shards'
    /// states, in the shards' order ([`OptimizerState::split`] undone). The
    /// step count and warm-up progress are the first shard's: every shard
    /// applies every update.
    pub fn join(parts: Vec<OptimizerState>) -> Result<OptimizerState, OptimError> {
        let mut parts = parts.into_iter();
        let Some(mut whole) = parts.next() else {
            return Ok(OptimizerState::default());
        };
        for part in parts {
            if part.buffers.len() != whole.buffers.len() {
                return Err(OptimError::BadState(format!(
                    "shards with {} and {} buffers",
                    whole.buffers.len(),
                    part.buffers.len()
                )));
            }
            for (dst, src) in whole.buffers.iter_mut().zip(part.buffers) {
                dst.extend_from_slice(&src);
            }
        }
        Ok(whole)
    }

    /// Moves the buffers into `into` (same count, same lengths).
    pub(crate) fn unpack(self, into: &mut [&mut Vec<f32>]) -> Result<(), OptimError> {
        let shape = |b: &[Vec<f32>]| b.iter().map(Vec::len).collect::<Vec<_>>();
        let expected: Vec<usize> = into.iter().map(|b| b.len()).collect();
        if shape(&self.buffers) != expected {
            return Err(OptimError::BadState(format!(
                "buffers of lengths {:?} for an optimizer with {expected:?}",
                shape(&self.buffers)
            )));
        }
        for (dst, src) in into.iter_mut().zip(self.buffers) {
            **dst = src;
        }
        Ok(())
    }
}

/// What every optimizer keeps besides its buffers: the schedule, weight
/// decay, the epoch it is in and the steps and examples applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Common {
    /// The learning-rate and momentum schedule.
    pub schedule: Schedule,
    /// L2 weight decay: `λ·w` is added to every gradient.
    pub weight_decay: f32,
    /// The schedule's epoch, from 1.
    epoch: u32,
    /// Steps applied.
    steps: u64,
    /// Job minibatches' worth of examples applied.
    minibatches: f64,
}

impl Default for Common {
    fn default() -> Self {
        Self::new(Schedule::default(), 0.0)
    }
}

impl Common {
    /// A fresh optimizer's bookkeeping: epoch 1, no steps.
    pub fn new(schedule: Schedule, weight_decay: f32) -> Self {
        Self {
            schedule,
            weight_decay,
            epoch: 1,
            steps: 0,
            minibatches: 0.0,
        }
    }

    /// A constant rate `lr`: no decay, warm-up, momentum or weight decay.
    pub fn with_lr(lr: f32) -> Self {
        Self::new(
            Schedule {
                lr,
                ..Schedule::default()
            },
            0.0,
        )
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), OptimError> {
        positive("lr", self.schedule.lr)?;
        non_negative("weight_decay", self.weight_decay)
    }

    /// The rate for `step`, by its staleness and the examples it brings the stage to.
    pub fn rate(&self, step: &Step<'_>) -> f32 {
        self.schedule
            .rate(self.epoch, self.minibatches + step.minibatches, step.staleness)
    }

    /// The momentum for the next step.
    pub fn momentum(&self) -> f32 {
        self.schedule.momentum_at(self.epoch)
    }

    /// Steps applied so far (from 0, before the step being taken).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Counts `step` taken.
    pub(crate) fn tick(&mut self, step: &Step<'_>) {
        self.steps += 1;
        self.minibatches += step.minibatches;
    }

    /// The gradient with weight decay folded in.
    #[inline]
    pub fn decayed(&self, g: f32, w: f32) -> f32 {
        g + self.weight_decay * w
    }
}

/// Which descent rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with optional (Nesterov) momentum.
    #[default]
    Sgd,
    /// AdaGrad.
    Adagrad,
    /// AdaRevision, AdaGrad made delay-tolerant.
    Adarevision,
    /// RMSProp: AdaGrad with a forgetting average of squared gradients.
    Rmsprop,
    /// DC-ASGD: SGD with delay compensation.
    Dcasgd,
}

pub(crate) fn positive(key: &'static str, v: f32) -> Result<(), OptimError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(OptimError::BadSetting {
            key,
            value: v.into(),
            allowed: "must be a finite number > 0",
        })
    }
}

pub(crate) fn non_negative(key: &'static str, v: f32) -> Result<(), OptimError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(OptimError::BadSetting {
            key,
            value: v.into(),
            allowed: "must be a finite number ≥ 0",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One configuration of every kind, with momentum, averaging and warm-up.
    fn every_kind() -> Vec<OptimizerConfig> {
        let base = OptimizerConfig::default();
        vec![
            OptimizerConfig {
                momentum: Some(0.9),
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Adagrad,
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Adarevision,
                max_staleness: Some(2),
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Adagrad,
                warmup_steps: Some(3),
                average: Some(0.9),
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Rmsprop,
                rho: Some(0.9),
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Dcasgd,
                ..base
            },
        ]
    }

    const GRADS: [[f32; 3]; 4] = [[0.5, -1.0, 2.0], [1.0, 0.25, -0.5], [-2.0, 1.0, 0.0], [0.3, 0.3, 0.3]];

    #[test]
    fn a_restored_optimizer_continues_exactly() {
        for cfg in every_kind() {
            let (mut a, mut p) = (cfg.build(3).unwrap(), vec![1.0f32; 3]);
            for (i, g) in GRADS[..2].iter().enumerate() {
                a.step(&mut p, g, i as u64).unwrap();
            }
            let mut b = cfg.build(3).unwrap();
            b.restore(a.state()).unwrap();
            let mut q = p.clone();
            for (i, g) in GRADS[2..].iter().enumerate() {
                a.step(&mut p, g, i as u64).unwrap();
                b.step(&mut q, g, i as u64).unwrap();
            }
            assert_eq!(p, q, "{:?}", cfg.kind);
            assert_eq!(a.average(), b.average());
            assert_eq!(a.state(), b.state());
            assert!(matches!(
                cfg.build(4).unwrap().restore(a.state()),
                Err(OptimError::BadState(_))
            ));
        }
    }

    #[test]
    fn shards_of_a_split_state_step_as_the_whole_did() {
        let ranges = [0..1, 1..3];
        for cfg in every_kind() {
            let (mut whole, mut p) = (cfg.build(3).unwrap(), vec![1.0f32; 3]);
            for (i, g) in GRADS[..2].iter().enumerate() {
                whole.step(&mut p, g, i as u64).unwrap();
            }
            let parts = whole.state().split(&ranges).unwrap();
            let mut q = p.clone();
            let mut shards: Vec<_> = ranges.iter().map(|r| cfg.build(r.len()).unwrap()).collect();
            for (shard, part) in shards.iter_mut().zip(parts) {
                shard.restore(part).unwrap();
            }
            for (i, g) in GRADS[2..].iter().enumerate() {
                whole.step(&mut p, g, i as u64).unwrap();
                for (shard, r) in shards.iter_mut().zip(&ranges) {
                    shard.step(&mut q[r.clone()], &g[r.clone()], i as u64).unwrap();
                }
            }
            assert_eq!(p, q, "{:?}", cfg.kind);
            let joined = OptimizerState::join(shards.iter().map(|s| s.state()).collect()).unwrap();
            assert_eq!(joined, whole.state(), "{:?}", cfg.kind);
        }
        let mut short = OptimizerConfig::default().build(2).unwrap().state();
        short.buffers = vec![vec![0.0; 2]];
        assert!(matches!(short.split(&ranges), Err(OptimError::BadState(_))));
    }

    #[test]
    fn builds_every_kind_and_rejects_bad_settings() {
        let base = OptimizerConfig::default();
        for cfg in [
            OptimizerConfig {
                momentum: Some(0.9),
                nesterov: Some(true),
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Adagrad,
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Adarevision,
                max_staleness: Some(4),
                ..base
            },
        ] {
            let mut opt = cfg.build(3).unwrap();
            let mut p = vec![1.0; 3];
            opt.step(&mut p, &[1.0, 0.0, -1.0], 0).unwrap();
            assert_eq!(opt.steps(), 1);
            assert!(p[0] < 1.0 && p[2] > 1.0);
            assert!(opt.step(&mut p, &[1.0], 0).is_err());
        }
        assert!(OptimizerConfig { lr: -1.0, ..base }.validate().is_err());
        assert!(
            OptimizerConfig {
                lr_decay: Some(1.5),
                ..base
            }
            .validate()
            .is_err()
        );
        let decaying = OptimizerConfig {
            lr: 0.4,
            lr_decay: Some(0.5),
            ..base
        };
        assert_eq!((decaying.schedule().lr_at(1), decaying.schedule().lr_at(3)), (0.4, 0.1));
        let wrong = OptimizerConfig {
            kind: OptimizerKind::Adagrad,
            momentum: Some(0.9),
            ..base
        };
        assert_eq!(
            wrong.validate().unwrap_err().to_string(),
            "optimizer setting `momentum` does not apply to `Adagrad`"
        );
    }
}
