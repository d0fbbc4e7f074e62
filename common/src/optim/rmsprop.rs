//! RMSProp (Tieleman & Hinton 2012): AdaGrad whose sum of squared gradients
//! forgets, `G ← ρG + (1 − ρ)g²`, so an early stretch of large gradients does
//! not lower the rates for the rest of the run. The average is bias-corrected
//! as in Adam (`G / (1 − ρᵗ)`), so the first steps are not inflated by an
//! average that has barely started.

use rayon::prelude::*;

use super::{CHUNK, Common, OptimError, Optimizer, OptimizerState, check_lengths, positive};

/// RMSProp with a bias-corrected average.
#[derive(Debug, Clone)]
pub struct RmsProp {
    common: Common,
    eps: f32,
    rho: f32,
    mean_sq: Vec<f32>,
    steps: u64,
}

impl RmsProp {
    /// RMSProp for `len` parameters, forgetting with `rho` in (0, 1).
    pub fn new(common: Common, eps: f32, rho: f32, len: usize) -> Result<Self, OptimError> {
        common.validate()?;
        positive("eps", eps)?;
        if !(rho > 0.0 && rho < 1.0) {
            return Err(OptimError::BadSetting {
                key: "rho",
                value: rho.into(),
                allowed: "must be in (0, 1)",
            });
        }
        Ok(Self {
            common,
            eps,
            rho,
            mean_sq: vec![0.0; len],
            steps: 0,
        })
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, params: &mut [f32], grad: &[f32], staleness: u64) -> Result<(), OptimError> {
        check_lengths(self.mean_sq.len(), params, grad)?;
        let lr = self.common.rate(staleness, self.steps);
        let (c, eps, rho) = (self.common, self.eps, self.rho);
        let correction = 1.0 - rho.powf((self.steps + 1) as f32);
        (
            params.par_chunks_mut(CHUNK),
            grad.par_chunks(CHUNK),
            self.mean_sq.par_chunks_mut(CHUNK),
        )
            .into_par_iter()
            .for_each(|(params, grad, mean_sq)| {
                for ((w, &g), m) in params.iter_mut().zip(grad).zip(mean_sq) {
                    let g = c.decayed(g, *w);
                    *m = rho * *m + (1.0 - rho) * g * g;
                    *w -= lr * g / ((*m / correction).sqrt() + eps);
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

    fn state(&self) -> OptimizerState {
        OptimizerState {
            steps: self.steps,
            buffers: vec![self.mean_sq.clone()],
        }
    }

    fn restore(&mut self, state: OptimizerState) -> Result<(), OptimError> {
        self.steps = state.unpack(&mut [&mut self.mean_sq])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_by_hand() {
        let common = Common {
            lr: 0.5,
            ..Common::default()
        };
        let mut opt = RmsProp::new(common, 1e-8, 0.5, 1).unwrap();
        let mut w = vec![1.0];
        // G = 0.5·4 = 2, corrected 2 / 0.5 = 4: w −= 0.5·2/2 = 0.5.
        opt.step(&mut w, &[2.0], 0).unwrap();
        assert!((w[0] - 0.5).abs() < 1e-6);
        // G = 0.5·2 + 0.5·1 = 1.5, corrected 1.5 / 0.75 = 2: w −= 0.5·1/√2.
        opt.step(&mut w, &[1.0], 0).unwrap();
        assert!((w[0] - (0.5 - 0.5 / 2f32.sqrt())).abs() < 1e-6, "{w:?}");
        assert!(RmsProp::new(common, 1e-8, 1.0, 1).is_err());
        assert!(RmsProp::new(common, 0.0, 0.9, 1).is_err());
    }

    #[test]
    fn forgets_an_early_burst_of_large_gradients() {
        let common = Common {
            lr: 0.01,
            ..Common::default()
        };
        let mut opt = RmsProp::new(common, 1e-8, 0.9, 1).unwrap();
        let mut w = vec![0.0];
        for _ in 0..5 {
            opt.step(&mut w, &[100.0], 0).unwrap();
        }
        for _ in 0..100 {
            opt.step(&mut w, &[1.0], 0).unwrap();
        }
        let before = w[0];
        opt.step(&mut w, &[1.0], 0).unwrap();
        let step = before - w[0];
        // AdaGrad would now step 0.01/√(5·10⁴ + 101) ≈ 4.5e-5; RMSProp is back near lr.
        assert!((step - 0.01).abs() < 1e-3, "step {step}");
    }
}
