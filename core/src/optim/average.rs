//! Parameter averaging (Polyak & Juditsky 1992, in the exponential form of
//! TensorFlow's `ExponentialMovingAverage`): any optimizer, plus a moving
//! average of the parameters it produces. Asynchronous SGD with dropout
//! leaves the parameters jittering around a good point; the average sits
//! nearer to it, so it is what gets evaluated and saved, while executors keep
//! training the parameters themselves.

use std::sync::{Mutex, PoisonError};

use super::{CHUNK, Common, OptimError, Optimizer, Step};

/// An optimizer that also keeps `avg ← d·avg + (1 − d)·w` after each step.
pub struct Averaged {
    inner: Box<dyn Optimizer>,
    decay: f32,
    avg: Vec<f32>,
}

impl Averaged {
    /// Averages the parameters `inner` steps, `len` values, with `decay` in `[0, 1)`.
    pub fn new(inner: Box<dyn Optimizer>, decay: f32, len: usize) -> Result<Self, OptimError> {
        if !(0.0..1.0).contains(&decay) {
            return Err(OptimError::BadSetting {
                key: "average",
                value: decay.into(),
                allowed: "must be in [0, 1)",
            });
        }
        Ok(Self {
            inner,
            decay,
            avg: vec![0.0; len],
        })
    }

    /// The decay for the step after `t` steps: smaller at first, so the
    /// average does not remember the starting point for long (the first
    /// step copies the parameters).
    fn decay_after(&self, t: u64) -> f32 {
        let t = t as f32;
        self.decay.min(t / (t + 10.0))
    }
}

impl Optimizer for Averaged {
    /// Folds each chunk of parameters into the average as the inner step
    /// leaves it, while it is still in cache.
    fn apply(&mut self, params: &mut [f32], step: &Step<'_>) -> Result<(), OptimError> {
        let d = self.decay_after(self.inner.steps());
        // The inner step hands over chunks of `CHUNK` values from many
        // threads; each locks its own piece of the average.
        let avg: Vec<Mutex<&mut [f32]>> = self.avg.chunks_mut(CHUNK).map(Mutex::new).collect();
        let outer = step.stepped;
        let fold = |offset: usize, params: &[f32]| {
            if let Some(avg) = avg.get(offset / CHUNK) {
                let mut avg = avg.lock().unwrap_or_else(PoisonError::into_inner);
                for (a, &w) in avg.iter_mut().zip(params) {
                    *a = d * *a + (1.0 - d) * w;
                }
            }
            if let Some(outer) = outer {
                outer(offset, params);
            }
        };
        let step = Step {
            stepped: Some(&fold),
            ..*step
        };
        self.inner.apply(params, &step)
    }

    fn wants_base(&self) -> bool {
        self.inner.wants_base()
    }

    fn average(&self) -> Option<&[f32]> {
        (self.inner.steps() > 0).then_some(self.avg.as_slice())
    }

    fn common(&self) -> &Common {
        self.inner.common()
    }

    fn common_mut(&mut self) -> &mut Common {
        self.inner.common_mut()
    }

    /// The inner optimizer's buffers with the average as one more, last.
    fn buffers(&self) -> Vec<&Vec<f32>> {
        let mut buffers = self.inner.buffers();
        buffers.push(&self.avg);
        buffers
    }

    fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut buffers = self.inner.buffers_mut();
        buffers.push(&mut self.avg);
        buffers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimizerConfig, OptimizerKind};

    fn averaged_sgd(decay: f32) -> Box<dyn Optimizer> {
        OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 1.0,
            average: Some(decay),
            ..OptimizerConfig::default()
        }
        .build(1)
        .unwrap()
    }

    #[test]
    fn first_step_copies_then_the_average_lags_the_parameters() {
        let mut opt = averaged_sgd(0.5);
        assert_eq!(opt.average(), None, "nothing to average before a step");
        let mut p = vec![10.0f32];
        opt.step(&mut p, &[1.0], 0).unwrap();
        assert_eq!((p[0], opt.average().unwrap()[0]), (9.0, 9.0));
        // Second step: decay min(0.5, 1/11) = 1/11.
        opt.step(&mut p, &[1.0], 0).unwrap();
        let expected = 9.0 / 11.0 + 8.0 * 10.0 / 11.0;
        assert!((opt.average().unwrap()[0] - expected).abs() < 1e-5);
        // Far along, the decay is the configured one and the average trails.
        for _ in 0..100 {
            opt.step(&mut p, &[1.0], 0).unwrap();
        }
        let lag = opt.average().unwrap()[0] - p[0];
        assert!(
            (lag - 1.0).abs() < 1e-3,
            "a steady descent of 1 per step trails by d/(1−d) = 1, got {lag}"
        );
    }

    #[test]
    fn every_chunk_of_a_long_model_is_averaged() {
        let n = 2 * CHUNK + 3;
        let mut opt = OptimizerConfig {
            average: Some(0.5),
            ..OptimizerConfig::default()
        }
        .build(n)
        .unwrap();
        let mut p: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let g = vec![1.0; n];
        opt.step(&mut p, &g, 0).unwrap();
        assert_eq!(opt.average().unwrap(), &p[..], "the first step copies every chunk");
    }

    #[test]
    fn an_average_of_a_jittering_parameter_is_steadier() {
        let mut opt = averaged_sgd(0.9);
        let mut p = vec![0.0f32];
        for i in 0..200 {
            // Alternating gradients make the parameter jump between 0 and -1.
            let g = if i % 2 == 0 { 1.0 } else { -1.0 };
            opt.step(&mut p, &[g], 0).unwrap();
        }
        let avg = opt.average().unwrap()[0];
        assert!(
            (avg + 0.5).abs() < 0.1,
            "average {avg} should sit near the middle, −0.5"
        );
    }

    #[test]
    fn bad_decay_and_a_state_without_its_average_are_refused() {
        let sgd = || OptimizerConfig::default().build(2).unwrap();
        assert!(Averaged::new(sgd(), 1.0, 2).is_err());
        assert!(Averaged::new(sgd(), -0.1, 2).is_err());
        let mut opt = Averaged::new(sgd(), 0.9, 2).unwrap();
        let bare = sgd().state();
        assert!(matches!(opt.restore(bare), Err(OptimError::BadState(_))));
    }
}
