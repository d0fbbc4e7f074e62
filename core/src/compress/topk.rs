//! Top-k sparsification with error feedback, as in Deep Gradient
//! Compression (Lin et al. 2018): each push sends only the largest values
//! of what the executor has accumulated; the rest stays in a residual on
//! the executor and joins the next push, so nothing is dropped, only
//! delayed.
//!
//! Three of DGC's corrections apply:
//! - **warm-up**: the kept fraction starts at 25% in the first epoch and is
//!   divided by four each epoch down to the job's `topk_fraction`, as the
//!   model moves most at first;
//! - **local clipping**: with `topk_clip_norm`, each update is clipped to
//!   that norm scaled by `1/√N` for `N` executors before it joins the
//!   residual (the residual would otherwise carry an outlier for long);
//! - **momentum correction** where the server would apply momentum to
//!   the pushes (`sync`): the executor keeps the velocity itself and the
//!   residual accumulates velocity, with momentum factor masking (sent
//!   values leave the velocity too); the server then steps without
//!   momentum. Where executors already step with momentum locally
//!   (`async`, `ssp`), their pushes carry it: correcting again would count
//!   it twice.

use super::sparse::Sparse;

/// How one push is made sparse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopKStep {
    /// The fraction of values sent, in (0, 1].
    pub density: f64,
    /// The norm each update is clipped to before joining the residual.
    pub clip_norm: Option<f32>,
    /// The momentum the executor keeps on the server's behalf, if any.
    pub momentum: Option<f32>,
}

/// The fraction of values a push in `epoch` (from 1) sends when the job
/// asks for `fraction`: DGC's warm-up, 25% then a quarter as many each
/// epoch, never below `fraction`.
pub fn warmup_density(fraction: f64, epoch: u32) -> f64 {
    let warm = 0.25f64.powi(epoch.clamp(1, 64) as i32);
    warm.max(fraction).min(1.0)
}

/// The executor's state between pushes: the residual (and the velocity
/// under momentum correction).
#[derive(Debug, Default)]
pub struct TopK {
    residual: Vec<f32>,
    velocity: Vec<f32>,
    magnitudes: Vec<f32>,
}

impl TopK {
    /// A selector for vectors of `len` values.
    pub fn new(len: usize) -> Self {
        Self {
            residual: vec![0.0; len],
            velocity: Vec::new(),
            magnitudes: Vec::new(),
        }
    }

    /// What is still owed to the server.
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }

    /// Adds `update` to the residual and takes its largest values out to
    /// send. An update of another length restarts the state.
    pub fn push(&mut self, update: &[f32], step: TopKStep) -> Sparse {
        let len = update.len();
        if self.residual.len() != len {
            *self = TopK::new(len);
        }
        let scale = match step.clip_norm {
            Some(clip) => {
                let norm = update.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt() as f32;
                if norm > clip { clip / norm } else { 1.0 }
            }
            None => 1.0,
        };
        match step.momentum {
            Some(m) => {
                self.velocity.resize(len, 0.0);
                for ((u, r), g) in self.velocity.iter_mut().zip(&mut self.residual).zip(update) {
                    *u = m * *u + g * scale;
                    *r += *u;
                }
            }
            None => {
                for (r, g) in self.residual.iter_mut().zip(update) {
                    *r += g * scale;
                }
            }
        }
        let k = ((step.density * len as f64).ceil() as usize).clamp(len.min(1), len);
        let threshold = self.kth_magnitude(k);
        let mut sparse = Sparse {
            len,
            indices: Vec::with_capacity(k),
            values: Vec::with_capacity(k),
        };
        // Values above the threshold first, then ties at it in index order,
        // so exactly `k` leave (fewer only when fewer are non-zero).
        let mut ties = k - self.residual.iter().filter(|r| r.abs() > threshold).count();
        for (i, r) in self.residual.iter_mut().enumerate() {
            let a = r.abs();
            let take = a > threshold || (a == threshold && ties > 0 && a > 0.0);
            if !take {
                continue;
            }
            if a == threshold {
                ties -= 1;
            }
            sparse.indices.push(i as u32);
            sparse.values.push(*r);
            *r = 0.0;
            if let Some(u) = self.velocity.get_mut(i) {
                *u = 0.0;
            }
        }
        sparse
    }

    /// The `k`-th largest magnitude in the residual (NaN sorts largest, so
    /// a diverging executor's values are sent and seen by the server).
    fn kth_magnitude(&mut self, k: usize) -> f32 {
        if k == 0 {
            return f32::INFINITY;
        }
        self.magnitudes.clear();
        self.magnitudes.extend(self.residual.iter().map(|r| r.abs()));
        let n = self.magnitudes.len();
        let (_, kth, _) = self.magnitudes.select_nth_unstable_by(n - k, f32::total_cmp);
        *kth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: TopKStep = TopKStep {
        density: 0.25,
        clip_norm: None,
        momentum: None,
    };

    #[test]
    fn sends_the_largest_and_keeps_the_rest() {
        let mut t = TopK::new(8);
        let update = [0.1, -5.0, 0.2, 3.0, 0.0, -0.3, 0.05, 0.4];
        let sent = t.push(&update, PLAIN);
        assert_eq!(sent.indices, [1, 3]);
        assert_eq!(sent.values, [-5.0, 3.0]);
        assert_eq!(t.residual(), &[0.1, 0.0, 0.2, 0.0, 0.0, -0.3, 0.05, 0.4]);
        // The residual grows until a small value's turn comes.
        let again = t.push(&update, PLAIN);
        assert_eq!(again.indices, [1, 3]);
        let third = t.push(&[0.0; 8], PLAIN);
        assert_eq!(third.indices, [5, 7]);
        assert_eq!(third.values, [-0.6, 0.8]);
    }

    #[test]
    fn error_feedback_loses_nothing() {
        let mut t = TopK::new(1000);
        let mut sent_sum = vec![0.0f64; 1000];
        let mut pushed_sum = vec![0.0f64; 1000];
        for step in 0..50 {
            let update: Vec<f32> = (0..1000).map(|i| ((i * 7 + step * 13) as f32 * 0.37).sin()).collect();
            update
                .iter()
                .zip(&mut pushed_sum)
                .for_each(|(u, s)| *s += f64::from(*u));
            let sent = t.push(&update, TopKStep { density: 0.01, ..PLAIN });
            assert_eq!(sent.values.len(), 10);
            for (&i, &v) in sent.indices.iter().zip(&sent.values) {
                sent_sum[i as usize] += f64::from(v);
            }
        }
        for i in 0..1000 {
            let owed = sent_sum[i] + f64::from(t.residual()[i]);
            assert!(
                (owed - pushed_sum[i]).abs() < 1e-3,
                "value {i}: {owed} against {}",
                pushed_sum[i]
            );
        }
    }

    #[test]
    fn ties_and_zeros_send_exactly_k_or_fewer() {
        let mut t = TopK::new(6);
        let sent = t.push(&[1.0; 6], TopKStep { density: 0.5, ..PLAIN });
        assert_eq!(sent.indices, [0, 1, 2]);
        let mut z = TopK::new(6);
        assert!(z.push(&[0.0; 6], PLAIN).indices.is_empty(), "zeros are not sent");
    }

    #[test]
    fn clipping_bounds_what_joins_the_residual() {
        let mut t = TopK::new(2);
        let sent = t.push(
            &[30.0, 40.0],
            TopKStep {
                density: 1.0,
                clip_norm: Some(5.0),
                momentum: None,
            },
        );
        assert_eq!(sent.values, [3.0, 4.0]);
    }

    #[test]
    fn momentum_correction_masks_what_was_sent() {
        let step = TopKStep {
            density: 0.5,
            clip_norm: None,
            momentum: Some(0.5),
        };
        let mut t = TopK::new(2);
        let first = t.push(&[4.0, 1.0], step);
        assert_eq!(
            (first.indices.as_slice(), first.values.as_slice()),
            (&[0][..], &[4.0][..])
        );
        // Index 0's velocity was masked: 0.5·0 + 0 = 0; index 1's is 0.5·1 + 1.
        let second = t.push(&[0.0, 1.0], step);
        assert_eq!(
            (second.indices.as_slice(), second.values.as_slice()),
            (&[1][..], &[2.5][..])
        );
    }

    #[test]
    fn warm_up_quarters_the_density_each_epoch() {
        let d: Vec<f64> = (1..=5).map(|e| warmup_density(0.01, e)).collect();
        assert_eq!(d, [0.25, 0.0625, 0.015625, 0.01, 0.01]);
        assert_eq!(warmup_density(0.5, 1), 0.5);
    }
}
