//! Telling a job that is diverging from one that is learning slowly, from
//! its training loss epoch by epoch, so that progress, status and metrics
//! say so instead of carrying a useless model silently to its end.
//!
//! A stage is *diverging* when its training loss rose in each of the last
//! [`RISING_EPOCHS`] epochs (by at least [`JUMP_MARGIN`] in all), sits at
//! more than [`JUMP`] times the lowest it reached (and at least
//! [`JUMP_MARGIN`] above it), or, for a classifier,
//! is above that of a uniform guess (`ln classes`) after a whole epoch:
//! asynchronous SGD that blows up typically jumps in one epoch and then
//! stays on a plateau of dead units. A non-finite loss is reported by the
//! executors and fails the job outright.

/// Consecutive rises that count as divergence.
pub const RISING_EPOCHS: usize = 3;
/// How far above its best the loss may sit.
pub const JUMP: f64 = 1.5;
/// ... by at least this much, as must a steady rise: tiny losses jitter by
/// large factors (the DBN's fine-tuning, with dropout, rose from 0.0153 to
/// 0.0169 over three late epochs and ended at 98.74%).
pub const JUMP_MARGIN: f64 = 0.1;

/// The training losses of one stage so far.
#[derive(Debug, Default, Clone)]
pub struct LossWatch {
    stage: String,
    losses: Vec<f64>,
}

impl LossWatch {
    /// Records the loss of the next epoch of `stage` (a new stage starts
    /// afresh), a classifier's over `classes`; returns why the stage looks
    /// divergent, if it does.
    pub fn record(&mut self, stage: &str, loss: f64, classes: Option<usize>) -> Option<String> {
        if stage != self.stage {
            self.stage = stage.to_string();
            self.losses.clear();
        }
        self.losses.push(loss);
        if !loss.is_finite() {
            return Some(format!("training loss is {loss}"));
        }
        if let Some(uniform) = classes.filter(|&c| c > 1).map(|c| (c as f64).ln())
            && loss > uniform
        {
            return Some(format!(
                "training loss {loss:.4} is worse than a uniform guess over the classes ({uniform:.4})"
            ));
        }
        let n = self.losses.len();
        if n > RISING_EPOCHS {
            let tail = &self.losses[n - RISING_EPOCHS - 1..];
            if tail.windows(2).all(|w| w[1] > w[0]) && loss > tail[0] + JUMP_MARGIN {
                return Some(format!(
                    "training loss rose for {RISING_EPOCHS} epochs ({:.4} → {loss:.4})",
                    tail[0]
                ));
            }
        }
        let best = self.losses[..n - 1].iter().copied().fold(f64::INFINITY, f64::min);
        if best.is_finite() && loss > JUMP * best && loss > best + JUMP_MARGIN {
            return Some(format!("training loss {loss:.4} is far above its best, {best:.4}"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(losses: &[f64]) -> Vec<bool> {
        let mut w = LossWatch::default();
        losses.iter().map(|&l| w.record("train", l, None).is_some()).collect()
    }

    #[test]
    fn learning_is_not_divergence() {
        assert!(!watch(&[0.43, 0.18, 0.09, 0.05, 0.06, 0.04, 0.045, 0.03]).contains(&true));
    }

    #[test]
    fn a_jump_and_its_plateau_are_divergence() {
        // The 8-executor run before modes adapted to the cluster.
        assert_eq!(watch(&[3.87, 14.76, 16.12, 16.12]), [false, true, true, true]);
    }

    #[test]
    fn a_steady_rise_is_divergence_and_recovery_clears_it() {
        assert_eq!(watch(&[1.2, 1.3, 1.4, 1.45, 0.9]), [false, false, false, true, false]);
        let mut w = LossWatch::default();
        assert!(w.record("rbm1", 1.0, None).is_none());
        assert!(w.record("train", 5.0, None).is_none(), "a new stage starts afresh");
        assert!(w.record("train", f64::NAN, None).is_some());
    }

    #[test]
    fn a_tiny_loss_creeping_up_is_not_divergence() {
        // The end of the shipped DBN job's fine-tuning.
        assert!(!watch(&[0.0148, 0.0153, 0.0160, 0.0165, 0.0169]).contains(&true));
    }

    #[test]
    fn a_classifier_worse_than_guessing_is_divergence() {
        let mut w = LossWatch::default();
        assert!(w.record("train", 2.0, Some(10)).is_none(), "below ln 10 = 2.30");
        let why = w.record("train", 16.1, Some(10)).unwrap();
        assert!(why.contains("uniform guess"), "{why}");
    }
}
