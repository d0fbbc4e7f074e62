//! Stochastic gradient descent with optional (Nesterov) momentum and L2
//! weight decay, in the form PyTorch uses: `v ← μv + g`, then
//! `w ← w − η·v` (or `w ← w − η·(g + μv)` with Nesterov).

use super::chunks::{self, Step};
use super::{Common, OptimError, Optimizer};

/// SGD with momentum.
#[derive(Debug, Clone)]
pub struct Sgd {
    common: Common,
    nesterov: bool,
    velocity: Vec<f32>,
}

impl Sgd {
    /// SGD for `len` parameters, with the momentum of `common`'s schedule.
    pub fn new(common: Common, nesterov: bool, len: usize) -> Result<Self, OptimError> {
        common.validate()?;
        check_momentum(common.schedule.momentum)?;
        if let Some((_, m)) = common.schedule.final_momentum {
            check_momentum(m)?;
        }
        Ok(Self {
            common,
            nesterov,
            velocity: vec![0.0; len],
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

/// SGD's settings for one step, held by value, shared by every step in
/// deepdist that uses them: the parameter server's (a block at a time) and
/// the executors' local steps (one coordinate at a time, each thread with
/// its own velocity). Held by value, a block's loop keeps them in
/// registers; read through a closure's captures instead, they were loaded
/// again for every value (a store to a parameter might have changed them,
/// as far as the compiler knew) and the loop stayed scalar, about four
/// times slower than the memory it walks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRule {
    /// The server's rate: a direction `d` moves a parameter by `lr·d`.
    pub lr: f32,
    /// A step's direction is this multiple of SGD's (an executor's local
    /// steps may be a multiple of the server's rate; 1 at the server).
    pub scale: f32,
    /// Momentum (0: none, and no velocity is touched).
    pub momentum: f32,
    /// Nesterov's form of momentum.
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f32,
}

impl StepRule {
    /// One coordinate's step direction from its gradient `g` at parameter
    /// value `w`; advances its velocity `v`.
    #[inline]
    pub fn direction(&self, g: f32, w: f32, v: &mut f32) -> f32 {
        let g = g + self.weight_decay * w;
        if self.momentum == 0.0 {
            self.scale * g
        } else {
            self.scale * direction(g, v, self.momentum, self.nesterov)
        }
    }

    /// Steps one block of parameters; without momentum the velocity is not
    /// read or written.
    fn step_block(self, params: &mut [f32], grad: &[f32], velocity: &mut [f32]) {
        let mut unused = 0.0;
        if self.momentum == 0.0 {
            for (w, &g) in params.iter_mut().zip(grad) {
                *w -= self.lr * self.direction(g, *w, &mut unused);
            }
            return;
        }
        for ((w, &g), v) in params.iter_mut().zip(grad).zip(velocity) {
            *w -= self.lr * self.direction(g, *w, v);
        }
    }
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
    fn apply(&mut self, params: &mut [f32], step: &Step<'_>) -> Result<(), OptimError> {
        chunks::check(self.velocity.len(), params, &step.grad)?;
        let lr = self.common.rate(step);
        let rule = StepRule {
            lr,
            scale: 1.0,
            momentum: self.common.momentum(),
            nesterov: self.nesterov,
            weight_decay: self.common.weight_decay,
        };
        let buffers = [&mut self.velocity[..]];
        chunks::for_each_block(
            params,
            &step.grad,
            buffers,
            step.stepped,
            |_, params, grad, [velocity]| rule.step_block(params, grad, velocity),
        );
        self.common.tick(step);
        Ok(())
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn common_mut(&mut self) -> &mut Common {
        &mut self.common
    }

    fn buffers(&self) -> Vec<&Vec<f32>> {
        vec![&self.velocity]
    }

    fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>> {
        vec![&mut self.velocity]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(lr: f32, wd: f32) -> Common {
        with_momentum(lr, wd, 0.0)
    }

    fn with_momentum(lr: f32, wd: f32, momentum: f32) -> Common {
        let schedule = crate::optim::Schedule {
            lr,
            momentum,
            ..Default::default()
        };
        Common::new(schedule, wd)
    }

    #[test]
    fn plain_step_with_weight_decay() {
        let mut opt = Sgd::new(common(0.1, 0.5), false, 2).unwrap();
        let mut w = vec![1.0, -2.0];
        opt.step(&mut w, &[0.2, 0.4], 0).unwrap();
        // w − 0.1·(g + 0.5·w): 1 − 0.1·0.7 = 0.93; −2 − 0.1·(0.4 − 1) = −1.94.
        assert!((w[0] - 0.93).abs() < 1e-6 && (w[1] + 1.94).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn momentum_accumulates_by_hand() {
        let mut opt = Sgd::new(with_momentum(0.1, 0.0, 0.9), false, 1).unwrap();
        let mut w = vec![0.0];
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1, w = −0.1
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1.9, w = −0.29
        assert!((w[0] + 0.29).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn a_step_flushes_denormal_results_to_zero() {
        // Whichever thread runs the step: a velocity or weight that would land
        // in the denormal range would make every later step many times slower.
        let mut opt = Sgd::new(common(1.0, 0.0), false, 1).unwrap();
        let mut w = vec![2e-38];
        opt.step(&mut w, &[1.5e-38], 0).unwrap();
        assert_eq!(w, vec![0.0], "5e-39 is denormal and must become zero");
    }

    #[test]
    fn nesterov_looks_ahead_by_hand() {
        let mut opt = Sgd::new(with_momentum(0.1, 0.0, 0.9), true, 1).unwrap();
        let mut w = vec![0.0];
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1, w −= 0.1·(1 + 0.9) → −0.19
        opt.step(&mut w, &[1.0], 0).unwrap(); // v = 1.9, w −= 0.1·(1 + 1.71) → −0.461
        assert!((w[0] + 0.461).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn stale_updates_take_smaller_steps_when_scaled() {
        let mut c = common(0.4, 0.0);
        c.schedule.staleness_scaled = true;
        let mut opt = Sgd::new(c, false, 1).unwrap();
        let mut w = vec![0.0];
        opt.step(&mut w, &[1.0], 4).unwrap();
        assert!((w[0] + 0.1).abs() < 1e-7);
    }

    #[test]
    fn rejects_momentum_out_of_range() {
        assert!(Sgd::new(with_momentum(0.1, 0.0, 1.0), false, 1).is_err());
        assert!(Sgd::new(with_momentum(0.0, 0.0, 0.5), false, 1).is_err());
    }
}
