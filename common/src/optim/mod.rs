//! Optimizers: the parameter server's `descent()`. Each step receives the
//! update's staleness (the number of steps applied since the parameters it
//! was computed from were read), so delay-aware rules can use it.

pub mod adagrad;
pub mod adarevision;
pub mod sgd;

use serde::{Deserialize, Serialize};

pub use adagrad::AdaGrad;
pub use adarevision::AdaRevision;
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

/// A descent rule applied by the parameter server.
pub trait Optimizer: Send {
    /// Applies one update computed `staleness` steps ago.
    fn step(&mut self, params: &mut [f32], grad: &[f32], staleness: u64) -> Result<(), OptimError>;

    /// Steps applied so far.
    fn steps(&self) -> u64;
}

/// Settings shared by every optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Common {
    /// Base learning rate.
    pub lr: f32,
    /// L2 weight decay: `λ·w` is added to every gradient.
    pub weight_decay: f32,
    /// Divide the learning rate by `max(1, staleness)`.
    pub staleness_scaled: bool,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            lr: 0.01,
            weight_decay: 0.0,
            staleness_scaled: false,
        }
    }
}

impl Common {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), OptimError> {
        positive("lr", self.lr)?;
        non_negative("weight_decay", self.weight_decay)
    }

    /// The learning rate for an update of this staleness.
    pub fn rate(&self, staleness: u64) -> f32 {
        if self.staleness_scaled {
            self.lr / staleness.max(1) as f32
        } else {
            self.lr
        }
    }

    /// The gradient with weight decay folded in.
    #[inline]
    pub fn decayed(&self, g: f32, w: f32) -> f32 {
        g + self.weight_decay * w
    }
}

/// Which optimizer, with its settings; what a job file names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD with optional (Nesterov) momentum.
    Sgd {
        /// Shared settings.
        #[serde(flatten)]
        common: Common,
        /// Momentum coefficient μ in `[0, 1)`.
        #[serde(default)]
        momentum: f32,
        /// Use Nesterov's look-ahead form.
        #[serde(default)]
        nesterov: bool,
    },
    /// AdaGrad: per-coordinate rates `lr / (√Σg² + ε)`.
    Adagrad {
        /// Shared settings.
        #[serde(flatten)]
        common: Common,
        /// ε added to the root.
        #[serde(default = "default_eps")]
        eps: f32,
    },
    /// AdaRevision (McMahan & Streeter, NIPS 2014): AdaGrad made delay-tolerant.
    Adarevision {
        /// Shared settings.
        #[serde(flatten)]
        common: Common,
        /// ε added to the root.
        #[serde(default = "default_eps")]
        eps: f32,
        /// Oldest staleness remembered exactly; older updates are treated as
        /// this stale (memory: one parameter vector per remembered step).
        #[serde(default = "default_max_staleness")]
        max_staleness: u32,
    },
}

fn default_eps() -> f32 {
    1e-8
}

fn default_max_staleness() -> u32 {
    32
}

impl OptimizerConfig {
    /// Builds the optimizer for a parameter vector of `len` values.
    pub fn build(&self, len: usize) -> Result<Box<dyn Optimizer>, OptimError> {
        Ok(match *self {
            OptimizerConfig::Sgd {
                common,
                momentum,
                nesterov,
            } => Box::new(Sgd::new(common, momentum, nesterov, len)?),
            OptimizerConfig::Adagrad { common, eps } => Box::new(AdaGrad::new(common, eps, len)?),
            OptimizerConfig::Adarevision {
                common,
                eps,
                max_staleness,
            } => Box::new(AdaRevision::new(common, eps, max_staleness as usize, len)?),
        })
    }
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

pub(crate) fn check_lengths(expected: usize, params: &[f32], grad: &[f32]) -> Result<(), OptimError> {
    if params.len() != expected || grad.len() != expected {
        return Err(OptimError::LengthMismatch {
            expected,
            params: params.len(),
            grad: grad.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_scaling_divides_the_rate() {
        let c = Common {
            lr: 0.6,
            staleness_scaled: true,
            ..Common::default()
        };
        assert_eq!(c.rate(0), 0.6);
        assert_eq!(c.rate(1), 0.6);
        assert!((c.rate(3) - 0.2).abs() < 1e-7);
        let fixed = Common {
            lr: 0.6,
            ..Common::default()
        };
        assert_eq!(fixed.rate(3), 0.6);
    }

    #[test]
    fn builds_every_kind_and_rejects_bad_settings() {
        for cfg in [
            OptimizerConfig::Sgd {
                common: Common::default(),
                momentum: 0.9,
                nesterov: true,
            },
            OptimizerConfig::Adagrad {
                common: Common::default(),
                eps: 1e-8,
            },
            OptimizerConfig::Adarevision {
                common: Common::default(),
                eps: 1e-8,
                max_staleness: 4,
            },
        ] {
            let mut opt = cfg.build(3).unwrap();
            let mut p = vec![1.0; 3];
            opt.step(&mut p, &[1.0, 0.0, -1.0], 0).unwrap();
            assert_eq!(opt.steps(), 1);
            assert!(p[0] < 1.0 && p[2] > 1.0);
            assert!(opt.step(&mut p, &[1.0], 0).is_err());
        }
        let bad = OptimizerConfig::Sgd {
            common: Common {
                lr: -1.0,
                ..Common::default()
            },
            momentum: 0.0,
            nesterov: false,
        };
        assert!(bad.build(1).is_err());
    }
}
