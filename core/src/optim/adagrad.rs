//! AdaGrad (Duchi, Hazan & Singer 2011) and RMSProp (Tieleman & Hinton
//! 2012), one rule with two ways of keeping the squared gradients: each
//! coordinate's rate is `lr / (√G + ε)`, where AdaGrad's `G ← G + g²` sums
//! every gradient seen and RMSProp's `G ← ρG + (1 − ρ)g²` forgets, so an
//! early stretch of large gradients does not lower the rates for the rest of
//! the run. RMSProp's average is bias-corrected as in Adam (`G / (1 − ρᵗ)`),
//! so its first steps are not inflated by an average that has barely started.

use super::chunks::{self, Step};
use super::{Common, OptimError, Optimizer, positive};

/// AdaGrad, or RMSProp when built with [`AdaGrad::forgetting`].
#[derive(Debug, Clone)]
pub struct AdaGrad {
    common: Common,
    eps: f32,
    /// RMSProp's ρ; `None` for AdaGrad's plain sum.
    rho: Option<f32>,
    sum_sq: Vec<f32>,
}

impl AdaGrad {
    /// AdaGrad for `len` parameters.
    pub fn new(common: Common, eps: f32, len: usize) -> Result<Self, OptimError> {
        common.validate()?;
        positive("eps", eps)?;
        Ok(Self {
            common,
            eps,
            rho: None,
            sum_sq: vec![0.0; len],
        })
    }

    /// RMSProp for `len` parameters, keeping `rho` in (0, 1) of the average each step.
    pub fn forgetting(common: Common, eps: f32, rho: f32, len: usize) -> Result<Self, OptimError> {
        if !(rho > 0.0 && rho < 1.0) {
            return Err(OptimError::BadSetting {
                key: "rho",
                value: rho.into(),
                allowed: "must be in (0, 1)",
            });
        }
        Ok(Self {
            rho: Some(rho),
            ..Self::new(common, eps, len)?
        })
    }
}

impl Optimizer for AdaGrad {
    fn apply(&mut self, params: &mut [f32], step: &Step<'_>) -> Result<(), OptimError> {
        chunks::check(self.sum_sq.len(), params, &step.grad)?;
        let lr = self.common.rate(step);
        let (c, eps) = (self.common, self.eps);
        // (keep, add, correction): G ← keep·G + add·g², read as G / correction.
        let (keep, add, correction) = match self.rho {
            None => (1.0, 1.0, 1.0),
            Some(rho) => (rho, 1.0 - rho, 1.0 - rho.powf((self.common.steps() + 1) as f32)),
        };
        let buffers = [&mut self.sum_sq[..]];
        chunks::for_each_block(
            params,
            &step.grad,
            buffers,
            step.stepped,
            |_, params, grad, [sum_sq]| {
                for ((w, &g), acc) in params.iter_mut().zip(grad).zip(sum_sq) {
                    let g = c.decayed(g, *w);
                    *acc = keep * *acc + add * g * g;
                    let eta = lr / ((*acc / correction).sqrt() + eps);
                    *w -= eta * g;
                }
            },
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
        vec![&self.sum_sq]
    }

    fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>> {
        vec![&mut self.sum_sq]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr(lr: f32) -> Common {
        Common::with_lr(lr)
    }

    #[test]
    fn steps_by_hand() {
        let mut opt = AdaGrad::new(lr(0.5), 1e-8, 1).unwrap();
        let mut w = vec![1.0];
        opt.step(&mut w, &[2.0], 0).unwrap(); // G = 4, w −= 0.5·2/2 = 0.5
        assert!((w[0] - 0.5).abs() < 1e-6);
        opt.step(&mut w, &[-3.0], 0).unwrap(); // G = 13, w += 0.5·3/√13
        assert!((w[0] - (0.5 + 1.5 / 13f32.sqrt())).abs() < 1e-6, "{w:?}");
        assert!(AdaGrad::new(lr(0.5), 0.0, 1).is_err());
    }

    #[test]
    fn rmsprop_steps_by_hand() {
        let mut opt = AdaGrad::forgetting(lr(0.5), 1e-8, 0.5, 1).unwrap();
        let mut w = vec![1.0];
        // G = 0.5·4 = 2, corrected 2 / 0.5 = 4: w −= 0.5·2/2 = 0.5.
        opt.step(&mut w, &[2.0], 0).unwrap();
        assert!((w[0] - 0.5).abs() < 1e-6);
        // G = 0.5·2 + 0.5·1 = 1.5, corrected 1.5 / 0.75 = 2: w −= 0.5·1/√2.
        opt.step(&mut w, &[1.0], 0).unwrap();
        assert!((w[0] - (0.5 - 0.5 / 2f32.sqrt())).abs() < 1e-6, "{w:?}");
        assert!(AdaGrad::forgetting(lr(0.5), 1e-8, 1.0, 1).is_err());
        assert!(AdaGrad::forgetting(lr(0.5), 0.0, 0.9, 1).is_err());
    }

    #[test]
    fn rmsprop_forgets_an_early_burst_that_adagrad_keeps() {
        let step_after_burst = |mut opt: AdaGrad| {
            let mut w = vec![0.0];
            for _ in 0..5 {
                opt.step(&mut w, &[100.0], 0).unwrap();
            }
            for _ in 0..100 {
                opt.step(&mut w, &[1.0], 0).unwrap();
            }
            let before = w[0];
            opt.step(&mut w, &[1.0], 0).unwrap();
            before - w[0]
        };
        let rmsprop = step_after_burst(AdaGrad::forgetting(lr(0.01), 1e-8, 0.9, 1).unwrap());
        let adagrad = step_after_burst(AdaGrad::new(lr(0.01), 1e-8, 1).unwrap());
        assert!((rmsprop - 0.01).abs() < 1e-3, "RMSProp is back near lr: {rmsprop}");
        // AdaGrad: 0.01 / √(5·10⁴ + 101) ≈ 4.5e-5.
        assert!(adagrad < 1e-4, "AdaGrad still remembers the burst: {adagrad}");
    }
}
