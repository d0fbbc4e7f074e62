//! DC-ASGD (Zheng et al., "Asynchronous Stochastic Gradient Descent with
//! Delay Compensation", ICML 2017): SGD whose stale gradients are corrected
//! by a first-order Taylor step from the parameters they were computed at,
//! with the Hessian approximated by the gradient's outer product (its
//! diagonal, `λ·g⊙g`):
//!
//! ```text
//! g̃ = g + λ · g ⊙ g ⊙ (w − w_bak)
//! w = w − η · g̃
//! ```
//!
//! `w_bak` is the parameters the update was computed from; the parameter
//! server keeps recent versions for it (see [`crate::mode::ServerModel`]).
//! This is the paper's adaptive form, DC-ASGD-a: `λ = λ₀ / √(MS + ε)` per
//! coordinate, with `MS` a moving average (0.95) of `g²`, which makes `λ₀`
//! independent of the gradients' scale (the paper's λ₀ = 2 is the
//! default). Without a delay (`w = w_bak`) it is plain SGD.

use super::chunks::{self, Step};
use super::{Common, OptimError, Optimizer, non_negative};

/// DC-ASGD.
#[derive(Debug, Clone)]
pub struct DcAsgd {
    common: Common,
    lambda: f32,
    /// Moving average of the squared gradients.
    mean_square: Vec<f32>,
}

/// The weight of the past in the mean square.
const MOMENT: f32 = 0.95;
/// Keeps the compensation finite where gradients vanish.
const EPS: f32 = 1e-7;

impl DcAsgd {
    /// DC-ASGD for `len` parameters with compensation strength `lambda` (≥ 0).
    pub fn new(common: Common, lambda: f32, len: usize) -> Result<Self, OptimError> {
        common.validate()?;
        non_negative("lambda", lambda)?;
        Ok(Self {
            common,
            lambda,
            mean_square: vec![0.0; len],
        })
    }
}

impl Optimizer for DcAsgd {
    fn wants_base(&self) -> bool {
        true
    }

    fn apply(&mut self, params: &mut [f32], step: &Step<'_>) -> Result<(), OptimError> {
        let len = self.mean_square.len();
        chunks::check(len, params, &step.grad)?;
        // Without the parameters it was computed from, nothing to compensate.
        let own;
        let base = match step.base {
            Some(base) => base,
            None => {
                own = params.to_vec();
                &own
            }
        };
        chunks::check(len, base, &step.grad)?;
        let lr = self.common.rate(step);
        let (c, lambda) = (self.common, self.lambda);
        let buffers = [&mut self.mean_square[..]];
        chunks::for_each_block(
            params,
            &step.grad,
            buffers,
            step.stepped,
            |offset, params, grad, [ms]| {
                let base = &base[offset..offset + params.len()];
                for (((w, &g), &b), ms) in params.iter_mut().zip(grad).zip(base).zip(ms) {
                    let g = c.decayed(g, *w);
                    *ms = MOMENT * *ms + (1.0 - MOMENT) * g * g;
                    let l = lambda / (ms.sqrt() + EPS);
                    *w -= lr * (g + l * g * g * (*w - b));
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
        vec![&self.mean_square]
    }

    fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>> {
        vec![&mut self.mean_square]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dc(lambda: f32) -> DcAsgd {
        DcAsgd::new(Common::with_lr(0.5), lambda, 1).unwrap()
    }

    #[test]
    fn compensates_a_stale_gradient_by_hand() {
        let mut opt = dc(2.0);
        // MS = 0.05·1 = 0.05, λ = 2/√0.05; computed at w_bak = 1, applied at
        // w = 3: g̃ = 1 + λ·1·1·(3 − 1).
        let mut w = vec![3.0];
        opt.step_from(&mut w, &[1.0], 4, &[1.0]).unwrap();
        let g = 1.0 + 2.0 / 0.05f32.sqrt() * 2.0;
        assert!((w[0] - (3.0 - 0.5 * g)).abs() < 1e-4, "{w:?}");
    }

    #[test]
    fn without_delay_or_lambda_it_is_sgd() {
        for (lambda, base) in [(2.0, 3.0), (0.0, 1.0)] {
            let mut w = vec![3.0];
            dc(lambda).step_from(&mut w, &[1.0], 0, &[base]).unwrap();
            assert_eq!(w, vec![2.5]);
        }
        assert!(DcAsgd::new(Common::default(), -1.0, 1).is_err());
    }
}
