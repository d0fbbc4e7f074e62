//! Stochastic gradient descent with optional (Nesterov) momentum and L2
//! weight decay, in the form PyTorch uses: `v ← μv + g`, then
//! `w ← w − η·v` (or `w ← w − η·(g + μv)` with Nesterov).

use rayon::prelude::*;

use super::{CHUNK, Common, OptimError, Optimizer, OptimizerState, check_lengths};

/// SGD with momentum.
#[derive(Debug, Clone)]
pub struct Sgd {
    common: Common,
    momentum: f32,
    nesterov: bool,
    velocity: Vec<f32>,
    steps: u64,
}

impl Sgd {
    /// SGD for `len` parameters.
    pub fn new(common: Common, momentum: f32, nesterov: bool, len: usize) -> Result<Self, OptimError> {
        common.validate()?;
        check_momentum(momentum)?;
        Ok(Self {
            common,
            momentum,
            nesterov,
            velocity: vec![0.0; len],
            steps: 0,
        })
    }
}

/// One coordinate of SGD with momentum, the rule every momentum step in
/// deepdist uses (the parameter server's and the executors' local steps):
/// updates the velocity `v` with gradient `g` and returns the step direction,
/// `v` itself or, with Nesterov, `g + μ·v`.
#[inline]
pub fn direction(g: f32, v: &mut f32, momentum: f32, nesterov: bool) -> f32 {
    *v = momentum * *v + g;
    if nesterov { g + momentum * *v } else { *v }
}

fn check_momentum(momentum: f32) -> Result<(), OptimError> {
    if (0.0..1.0).contains(&momentum) {
        Ok(())
    } else {
        Err(OptimError::BadSetting {
            key: "momentum",
            value: momentum.into(),
            allowed: "must be in [0, 1)",
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [f32], grad: &[f32], staleness: u64) -> Result<(), OptimError> {
        check_lengths(self.velocity.len(), params, grad)?;
        let lr = self.common.rate(staleness, self.steps);
        let (c, mu, nesterov) = (self.common, self.momentum, self.nesterov);
        (
            params.par_chunks_mut(CHUNK),
            grad.par_chunks(CHUNK),
            self.velocity.par_chunks_mut(CHUNK),
        )
            .into_par_iter()
            .for_each(|(params, grad, velocity)| {
                for ((w, &g), v) in params.iter_mut().zip(grad).zip(velocity) {
                    let g = c.decayed(g, *w);
                    if mu == 0.0 {
                        *w -= lr * g;
                        continue;
                    }
                    *w -= lr * direction(g, v, mu, nesterov);
                }
            });
        self.steps += 1;
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn set_lr(&mut self, lr: f32) {
        self.common.lr = lr;
    }

    fn set_momentum(&mut self, momentum: f32) {
        if check_momentum(momentum).is_ok() {
            self.momentum = momentum;
        }
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            steps: self.steps,
            buffers: vec![self.velocity.clone()],
        }
    }

    fn restore(&mut self, state: OptimizerState) -> Result<(), OptimError> {
        self.steps = state.unpack(&mut [&mut self.velocity])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(lr: f32, wd: f32) -> Common {
        Common {
            lr,
            weight_decay: wd,
            ..Common::default()
        }
    }

    #[test]
    fn plain_step_with_weight_decay() {
        let mut opt = Sgd::new(common(0.1, 0.5), 0.0, false, 2).unwrap();
        let mut w = vec![1.0, -2.0];
        opt.step(&mut w, &[0.2, 0.4], 0).unwrap();
        // w − 0.1·(g + 0.5·w): 1 − 0.1·0.7 = 0.93; −2 − 0.1·(0.4 − 1) = −1.94.
        assert!((w[0] - 0.93).abs() < 1e-6 && (w[1] + 1.94).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn momentum_accumulates_by_hand() {
        let mut opt = Sgd::new(common(0.1, 0.0), 0.9, false, 1).unwrap();
        let mut w = vec![0.0];
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1, w = −0.1
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1.9, w = −0.29
        assert!((w[0] + 0.29).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn nesterov_looks_ahead_by_hand() {
        let mut opt = Sgd::new(common(0.1, 0.0), 0.9, true, 1).unwrap();
        let mut w = vec![0.0];
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1, w −= 0.1·(1 + 0.9) → −0.19
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1.9, w −= 0.1·(1 + 1.71) → −0.461
        assert!((w[0] + 0.461).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn stale_updates_take_smaller_steps_when_scaled() {
        let mut c = common(0.4, 0.0);
        c.staleness_scaled = true;
        let mut opt = Sgd::new(c, 0.0, false, 1).unwrap();
        let mut w = vec![0.0];
        opt.step(&mut w, &[1.0], 4).unwrap();
        assert!((w[0] + 0.1).abs() < 1e-7);
    }

    #[test]
    fn rejects_momentum_out_of_range() {
        assert!(Sgd::new(common(0.1, 0.0), 1.0, false, 1).is_err());
        assert!(Sgd::new(common(0.0, 0.0), 0.5, false, 1).is_err());
    }
}
