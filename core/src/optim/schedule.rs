//! How a stage's learning rate and momentum change as it trains: per epoch
//! (rate decay, the momentum switch of RBM pre-training) and per step
//! (warm-up, scaling by staleness). The one place a rate is computed: the
//! parameter server's optimizers and the executors' local steps both ask it.

/// A stage's learning-rate and momentum schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Base learning rate.
    pub lr: f32,
    /// Multiplies the rate after every epoch: epoch `e` uses `lr · lr_decay^(e−1)`.
    pub lr_decay: f32,
    /// Minibatches of the job's size over which the rate ramps up linearly
    /// to the epoch's rate (0: none). Counted in examples, not in server
    /// steps: the executor-count rule shrinks each executor's minibatch as
    /// executors are added, and a warm-up counted in steps would then end
    /// after fewer examples.
    pub warmup_steps: u32,
    /// Divide the rate by `max(1, staleness)`.
    pub staleness_scaled: bool,
    /// Momentum at the start.
    pub momentum: f32,
    /// `(after, m)`: momentum `m` from epoch `after + 1` on.
    pub final_momentum: Option<(u32, f32)>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            lr: 0.01,
            lr_decay: 1.0,
            warmup_steps: 0,
            staleness_scaled: false,
            momentum: 0.0,
            final_momentum: None,
        }
    }
}

impl Schedule {
    /// The learning rate of epoch `epoch` (from 1), before warm-up and staleness.
    pub fn lr_at(&self, epoch: u32) -> f32 {
        self.lr * self.lr_decay.powi(epoch.saturating_sub(1) as i32)
    }

    /// The momentum of epoch `epoch` (from 1).
    pub fn momentum_at(&self, epoch: u32) -> f32 {
        match self.final_momentum {
            Some((after, m)) if epoch > after => m,
            _ => self.momentum,
        }
    }

    /// The rate in epoch `epoch` for an update of this staleness that brings
    /// the stage to `through` job minibatches' worth of examples (the first
    /// step of the job's size brings it to 1).
    pub fn rate(&self, epoch: u32, through: f64, staleness: u64) -> f32 {
        let lr = self.lr_at(epoch);
        // An adaptive rule's first steps move every coordinate by about `lr`
        // whatever its gradient (AdaGrad's first step is `lr·sign(g)`); the
        // ramp keeps them from undoing pre-trained weights.
        let warmup = f64::from(self.warmup_steps);
        let lr = if through < warmup {
            lr * (through.max(0.0) / warmup) as f32
        } else {
            lr
        };
        if self.staleness_scaled {
            lr / staleness.max(1) as f32
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_scaling_divides_the_rate() {
        let c = Schedule {
            lr: 0.6,
            staleness_scaled: true,
            ..Schedule::default()
        };
        assert_eq!(c.rate(1, 1.0, 0), 0.6);
        assert_eq!(c.rate(1, 1.0, 1), 0.6);
        assert!((c.rate(1, 1.0, 3) - 0.2).abs() < 1e-7);
        let fixed = Schedule {
            lr: 0.6,
            ..Schedule::default()
        };
        assert_eq!(fixed.rate(1, 1.0, 3), 0.6);
    }

    #[test]
    fn warmup_ramps_the_rate_up_then_holds_it() {
        let c = Schedule {
            lr: 0.8,
            warmup_steps: 4,
            ..Schedule::default()
        };
        let rates: Vec<f32> = (1..7).map(|through| c.rate(1, f64::from(through), 0)).collect();
        assert_eq!(rates, [0.2, 0.4, 0.6, 0.8, 0.8, 0.8]);
    }

    #[test]
    fn warmup_counts_examples_whatever_the_step_size() {
        let c = Schedule {
            lr: 0.8,
            warmup_steps: 4,
            ..Schedule::default()
        };
        // Quarter-size minibatches: four steps take the ramp where one full one does.
        let quarters: Vec<f32> = (1..=4).map(|i| c.rate(1, f64::from(i) * 0.25, 0)).collect();
        assert_eq!(quarters, [0.05, 0.1, 0.15, 0.2]);
        assert_eq!(c.rate(1, 1.0, 0), quarters[3]);
    }

    #[test]
    fn the_rate_decays_by_epoch_and_momentum_switches() {
        let s = Schedule {
            lr: 0.4,
            lr_decay: 0.5,
            momentum: 0.5,
            final_momentum: Some((2, 0.9)),
            ..Schedule::default()
        };
        assert_eq!((s.lr_at(1), s.lr_at(3), s.rate(3, 100.0, 0)), (0.4, 0.1, 0.1));
        assert_eq!((s.momentum_at(2), s.momentum_at(3)), (0.5, 0.9));
    }
}
