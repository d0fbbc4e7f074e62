//! AdaRevision (McMahan & Streeter, "Delay-Tolerant Algorithms for
//! Asynchronous Distributed Online Learning", NIPS 2014).
//!
//! AdaGrad assumes each gradient was computed at the current point. Under
//! asynchrony a gradient `g` arrives after other updates `g_bck` (the sum of
//! gradients applied since its parameters were read) have moved the model.
//! Per coordinate, with `z` the sum of all gradients applied:
//!
//! ```text
//! g_bck  = z − z_read
//! η_old  = lr / (√z'_max + ε)
//! z'     = z' + g² + 2·g·g_bck
//! z'_max = max(z'_max, z')
//! η      = lr / (√z'_max + ε)
//! w      = w − η·g + (η_old − η)·g_bck     (revise past steps to the new rate)
//! z      = z + g
//! ```
//!
//! `z_read` is the gradient sum when the update's parameters were read,
//! `staleness` steps ago; the optimizer keeps a ring of the last
//! `max_staleness + 1` sums (plus the slot being written) to know it. With zero delay `g_bck = 0` and the
//! rule is exactly AdaGrad.

use super::chunks::{self, Step};
use super::{Common, OptimError, Optimizer, positive};

/// AdaRevision.
#[derive(Debug, Clone)]
pub struct AdaRevision {
    common: Common,
    eps: f32,
    /// `z'`, the delay-corrected sum of squares.
    z_prime: Vec<f32>,
    /// `z'_max`, its running maximum.
    z_max: Vec<f32>,
    /// `history[k % len]` is the gradient sum after `k` steps; the newest is `z`.
    history: Vec<Vec<f32>>,
}

impl AdaRevision {
    /// AdaRevision for `len` parameters, remembering delays up to `max_staleness`.
    pub fn new(common: Common, eps: f32, max_staleness: usize, len: usize) -> Result<Self, OptimError> {
        common.validate()?;
        positive("eps", eps)?;
        Ok(Self {
            common,
            eps,
            z_prime: vec![0.0; len],
            z_max: vec![0.0; len],
            // Slots for the sums after steps t − max_staleness ..= t, plus t + 1.
            history: vec![vec![0.0; len]; max_staleness + 2],
        })
    }

    fn slot(&self, step: u64) -> usize {
        (step % self.history.len() as u64) as usize
    }
}

impl Optimizer for AdaRevision {
    fn apply(&mut self, params: &mut [f32], step: &Step<'_>) -> Result<(), OptimError> {
        chunks::check(self.z_prime.len(), params, &step.grad)?;
        let (staleness, lr) = (step.staleness, self.common.rate(step));
        // Delays past what is remembered (or before the first step) count as
        // the oldest remembered.
        let delay = staleness.min(self.common.steps()).min(self.history.len() as u64 - 2);
        let (now, read) = (self.slot(self.common.steps()), self.slot(self.common.steps() - delay));
        let next = self.slot(self.common.steps() + 1);
        // The next slot is the oldest one, which this step overwrites; take it
        // out so `z`, `z_read` and the new sum can be borrowed together.
        let mut new_z = std::mem::take(&mut self.history[next]);
        let (z, z_read) = (&self.history[now], &self.history[read]);
        let (c, eps) = (self.common, self.eps);
        let buffers = [&mut self.z_prime[..], &mut self.z_max[..], &mut new_z[..]];
        chunks::for_each_block(
            params,
            &step.grad,
            buffers,
            step.stepped,
            |offset, params, grad, [z_prime, z_max, new_z]| {
                let range = offset..offset + params.len();
                let (z, z_read) = (&z[range.clone()], &z_read[range]);
                for i in 0..params.len() {
                    let g = c.decayed(grad[i], params[i]);
                    let g_bck = z[i] - z_read[i];
                    let eta_old = lr / (z_max[i].sqrt() + eps);
                    z_prime[i] += g * g + 2.0 * g * g_bck;
                    z_max[i] = z_max[i].max(z_prime[i]);
                    let eta = lr / (z_max[i].sqrt() + eps);
                    params[i] += -(eta * g) + (eta_old - eta) * g_bck;
                    new_z[i] = z[i] + g;
                }
            },
        );
        self.history[next] = new_z;
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
        let mut buffers = vec![&self.z_prime, &self.z_max];
        buffers.extend(self.history.iter());
        buffers
    }

    fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut buffers = vec![&mut self.z_prime, &mut self.z_max];
        buffers.extend(self.history.iter_mut());
        buffers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdaGrad;

    fn common(lr: f32) -> Common {
        Common::with_lr(lr)
    }

    #[test]
    fn equals_adagrad_with_zero_delay() {
        let n = 5;
        let mut rev = AdaRevision::new(common(0.3), 1e-8, 4, n).unwrap();
        let mut ada = AdaGrad::new(common(0.3), 1e-8, n).unwrap();
        let mut w1: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
        let mut w2 = w1.clone();
        for t in 0..20 {
            let g: Vec<f32> = (0..n).map(|i| ((t * 7 + i * 3) % 5) as f32 - 2.0).collect();
            rev.step(&mut w1, &g, 0).unwrap();
            ada.step(&mut w2, &g, 0).unwrap();
        }
        assert_eq!(w1, w2);
    }

    #[test]
    fn revises_a_delayed_update_by_hand() {
        let mut opt = AdaRevision::new(common(1.0), 1e-12, 4, 1).unwrap();
        let mut w = vec![0.0];
        opt.step(&mut w, &[1.0], 0).unwrap(); // z' = 1, w = −1, z = 1
        opt.step(&mut w, &[1.0], 0).unwrap(); // z' = 2, w = −1 − 1/√2, z = 2
        // Computed from the parameters read after step 1: g_bck = 2 − 1 = 1,
        // z' = 2 + 4 + 4 = 10, w += −2/√10 + (1/√2 − 1/√10)·1 = −1 − 3/√10.
        opt.step(&mut w, &[2.0], 1).unwrap();
        let want = -1.0 - 3.0 / 10f32.sqrt();
        assert!((w[0] - want).abs() < 1e-5, "{} vs {want}", w[0]);
    }

    #[test]
    fn delay_beyond_memory_is_clamped() {
        let mut zero = AdaRevision::new(common(0.1), 1e-8, 0, 1).unwrap();
        let mut w0 = vec![0.0];
        zero.step(&mut w0, &[1.0], 3).unwrap();
        zero.step(&mut w0, &[1.0], 3).unwrap();
        let mut opt = AdaRevision::new(common(0.1), 1e-8, 2, 2).unwrap();
        let mut w = vec![0.0, 0.0];
        for _ in 0..5 {
            opt.step(&mut w, &[1.0, -1.0], 100).unwrap();
        }
        assert!(w.iter().all(|v| v.is_finite()));
        assert!(w[0] < 0.0 && w[1] > 0.0);
    }
}
