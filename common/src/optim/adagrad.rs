//! AdaGrad (Duchi, Hazan & Singer 2011): each coordinate's rate is
//! `lr / (√(Σ g²) + ε)`, the sum running over every gradient seen.

use rayon::prelude::*;

use super::{CHUNK, Common, OptimError, Optimizer, OptimizerState, check_lengths, positive};

/// AdaGrad.
#[derive(Debug, Clone)]
pub struct AdaGrad {
    common: Common,
    eps: f32,
    sum_sq: Vec<f32>,
    steps: u64,
}

impl AdaGrad {
    /// AdaGrad for `len` parameters.
    pub fn new(common: Common, eps: f32, len: usize) -> Result<Self, OptimError> {
        common.validate()?;
        positive("eps", eps)?;
        Ok(Self {
            common,
            eps,
            sum_sq: vec![0.0; len],
            steps: 0,
        })
    }
}

impl Optimizer for AdaGrad {
    fn step(&mut self, params: &mut [f32], grad: &[f32], staleness: u64) -> Result<(), OptimError> {
        check_lengths(self.sum_sq.len(), params, grad)?;
        let lr = self.common.rate(staleness, self.steps);
        let (c, eps) = (self.common, self.eps);
        (
            params.par_chunks_mut(CHUNK),
            grad.par_chunks(CHUNK),
            self.sum_sq.par_chunks_mut(CHUNK),
        )
            .into_par_iter()
            .for_each(|(params, grad, sum_sq)| {
                for ((w, &g), acc) in params.iter_mut().zip(grad).zip(sum_sq) {
                    let g = c.decayed(g, *w);
                    *acc += g * g;
                    let eta = lr / (acc.sqrt() + eps);
                    *w -= eta * g;
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
            buffers: vec![self.sum_sq.clone()],
        }
    }

    fn restore(&mut self, state: OptimizerState) -> Result<(), OptimError> {
        self.steps = state.unpack(&mut [&mut self.sum_sq])?;
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
        let mut opt = AdaGrad::new(common, 1e-8, 1).unwrap();
        let mut w = vec![1.0];
        opt.step(&mut w, &[2.0], 0).unwrap(); // G = 4, w −= 0.5·2/2 = 0.5
        assert!((w[0] - 0.5).abs() < 1e-6);
        opt.step(&mut w, &[-3.0], 0).unwrap(); // G = 13, w += 0.5·3/√13
        assert!((w[0] - (0.5 + 1.5 / 13f32.sqrt())).abs() < 1e-6, "{w:?}");
        assert!(AdaGrad::new(common, 0.0, 1).is_err());
    }
}
