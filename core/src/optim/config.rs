//! `[optimizer]`: which descent rule and its settings, as a job file names
//! them, checked and built into an [`Optimizer`].

use serde::{Deserialize, Serialize};

use super::{AdaGrad, AdaRevision, Averaged, Common, DcAsgd, OptimError, Optimizer, OptimizerKind, Schedule, Sgd};

/// An optimizer and its settings, as a job file's `[optimizer]` table names
/// them. Settings that belong to another kind are refused, not ignored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// `sgd`, `adagrad`, `adarevision` or `rmsprop`.
    pub kind: OptimizerKind,
    /// Base learning rate (> 0).
    pub lr: f32,
    /// L2 weight decay (≥ 0).
    pub weight_decay: f32,
    /// Divide the rate by `max(1, staleness)` for stale updates.
    pub staleness_scaled: bool,
    /// SGD only: momentum μ in `[0, 1)` (default 0).
    pub momentum: Option<f32>,
    /// SGD only: Nesterov's form of momentum (default false).
    pub nesterov: Option<bool>,
    /// AdaGrad, AdaRevision and RMSProp: ε added to the root (default 1e-8).
    pub eps: Option<f32>,
    /// RMSProp only: how much of the squared-gradient average each step keeps, in (0, 1) (default 0.99).
    pub rho: Option<f32>,
    /// AdaRevision only: oldest staleness remembered exactly (default 32).
    pub max_staleness: Option<u32>,
    /// DC-ASGD only: the delay compensation's strength λ₀ ≥ 0 (default 2).
    pub lambda: Option<f32>,
    /// Multiplies the rate after every epoch: epoch `e` uses `lr · lr_decay^(e−1)` (default 1).
    pub lr_decay: Option<f32>,
    /// Parameter-server steps over which the rate ramps up linearly from
    /// `lr / warmup_steps` to `lr` at the start of the stage (default 0: none).
    pub warmup_steps: Option<u32>,
    /// Keep an exponential moving average of the parameters with this decay
    /// per step, in `[0, 1)`; evaluation and the saved model use the
    /// average (default: none).
    pub average: Option<f32>,
    /// `(after, m)`: momentum `m` from epoch `after + 1` on (RBM pre-training
    /// sets it from `[pretrain]`; not a key of `[optimizer]`).
    #[serde(skip)]
    pub final_momentum: Option<(u32, f32)>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr: 0.01,
            weight_decay: 0.0,
            staleness_scaled: false,
            momentum: None,
            nesterov: None,
            eps: None,
            rho: None,
            max_staleness: None,
            lambda: None,
            lr_decay: None,
            warmup_steps: None,
            average: None,
            final_momentum: None,
        }
    }
}

impl OptimizerConfig {
    /// The learning-rate and momentum schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            lr: self.lr,
            lr_decay: self.lr_decay.unwrap_or(1.0),
            warmup_steps: self.warmup_steps.unwrap_or(0),
            staleness_scaled: self.staleness_scaled,
            momentum: self.momentum.unwrap_or(0.0),
            final_momentum: self.final_momentum,
        }
    }

    /// A fresh optimizer's bookkeeping for these settings.
    pub fn common(&self) -> Common {
        Common::new(self.schedule(), self.weight_decay)
    }

    /// The same settings with SGD's momentum and the weight decay removed:
    /// for a server applying step directions that already carry both (the
    /// executors' local steps apply them). Decaying again at the server made
    /// its parameters drift from every executor's copy between fetches.
    pub fn for_local_steps(&self) -> Self {
        Self {
            momentum: None,
            nesterov: None,
            final_momentum: None,
            weight_decay: 0.0,
            ..*self
        }
    }

    /// The same settings with SGD's momentum removed and the weight decay
    /// kept: for a server whose executors keep the momentum for it.
    pub fn without_momentum(&self) -> Self {
        Self {
            momentum: None,
            nesterov: None,
            final_momentum: None,
            ..*self
        }
    }

    /// Checks every setting without building anything.
    pub fn validate(&self) -> Result<(), OptimError> {
        self.build(0).map(|_| ())
    }

    /// Builds the optimizer for a parameter vector of `len` values.
    pub fn build(&self, len: usize) -> Result<Box<dyn Optimizer>, OptimError> {
        let not_for = |key: &'static str, given: bool| {
            if given {
                Err(OptimError::NotFor { key, kind: self.kind })
            } else {
                Ok(())
            }
        };
        let eps = self.eps.unwrap_or(1e-8);
        if let Some(decay) = self.lr_decay
            && !(decay > 0.0 && decay <= 1.0)
        {
            return Err(OptimError::BadSetting {
                key: "lr_decay",
                value: decay.into(),
                allowed: "must be in (0, 1]",
            });
        }
        let inner: Box<dyn Optimizer> = match self.kind {
            OptimizerKind::Sgd => {
                not_for("eps", self.eps.is_some())?;
                not_for("rho", self.rho.is_some())?;
                not_for("max_staleness", self.max_staleness.is_some())?;
                not_for("lambda", self.lambda.is_some())?;
                Box::new(Sgd::new(self.common(), self.nesterov.unwrap_or(false), len)?)
            }
            OptimizerKind::Adagrad => {
                not_for("momentum", self.momentum.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("rho", self.rho.is_some())?;
                not_for("max_staleness", self.max_staleness.is_some())?;
                not_for("lambda", self.lambda.is_some())?;
                Box::new(AdaGrad::new(self.common(), eps, len)?)
            }
            OptimizerKind::Rmsprop => {
                not_for("momentum", self.momentum.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("max_staleness", self.max_staleness.is_some())?;
                not_for("lambda", self.lambda.is_some())?;
                Box::new(AdaGrad::forgetting(self.common(), eps, self.rho.unwrap_or(0.99), len)?)
            }
            OptimizerKind::Adarevision => {
                not_for("momentum", self.momentum.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("rho", self.rho.is_some())?;
                not_for("lambda", self.lambda.is_some())?;
                let max_staleness = self.max_staleness.unwrap_or(32) as usize;
                Box::new(AdaRevision::new(self.common(), eps, max_staleness, len)?)
            }
            OptimizerKind::Dcasgd => {
                for (key, given) in [
                    ("momentum", self.momentum.is_some()),
                    ("nesterov", self.nesterov.is_some()),
                    ("eps", self.eps.is_some()),
                    ("rho", self.rho.is_some()),
                    ("max_staleness", self.max_staleness.is_some()),
                ] {
                    not_for(key, given)?;
                }
                Box::new(DcAsgd::new(self.common(), self.lambda.unwrap_or(2.0), len)?)
            }
        };
        Ok(match self.average {
            Some(decay) => Box::new(Averaged::new(inner, decay, len)?),
            None => inner,
        })
    }
}
