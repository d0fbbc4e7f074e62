//! Hogwild! (`train.hogwild`, Niu et al. 2011): the cores train one shared
//! copy of the parameters at once, each on its own minibatches; see the
//! parent module for how.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use deepdist_core::data::Dataset;
use deepdist_core::mode::{Compute, LocalSteps, LoopError, Work};
use deepdist_core::model::Engine;
use deepdist_core::train::{Batch, Minibatches, check_loss};
use rayon::prelude::*;

use super::SplitBatch;

/// One parameter vector shared by the threads of a Hogwild! executor.
pub enum SharedParams {
    /// Lock-free: relaxed atomic loads and stores of the `f32` bits.
    Atomic(Vec<AtomicU32>),
    /// Every read and every step under one lock (for comparison).
    Locked(Mutex<Vec<f32>>),
}

impl SharedParams {
    /// A shared vector of `len` values; `locked` for the mutex form.
    pub fn new(len: usize, locked: bool) -> Self {
        if locked {
            SharedParams::Locked(Mutex::new(vec![0.0; len]))
        } else {
            SharedParams::Atomic((0..len).map(|_| AtomicU32::new(0)).collect())
        }
    }

    fn store_all(&mut self, values: &[f32]) {
        match self {
            SharedParams::Atomic(a) => a.iter_mut().zip(values).for_each(|(a, &v)| *a.get_mut() = v.to_bits()),
            SharedParams::Locked(m) => m.get_mut().unwrap_or_else(|p| p.into_inner()).copy_from_slice(values),
        }
    }

    fn read(&self, out: &mut [f32]) {
        match self {
            SharedParams::Atomic(a) => a
                .iter()
                .zip(out)
                .for_each(|(a, o)| *o = f32::from_bits(a.load(Ordering::Relaxed))),
            SharedParams::Locked(m) => out.copy_from_slice(&m.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Moves each coordinate by `−lr·d[i]` where `d[i]` is not zero.
    fn step(&self, d: &[f32], lr: f32) {
        match self {
            SharedParams::Atomic(a) => {
                for (a, &d) in a.iter().zip(d) {
                    if d != 0.0 {
                        // A read and a write, not one atomic update: another
                        // thread's step in between may be lost, as in Hogwild!.
                        let w = f32::from_bits(a.load(Ordering::Relaxed));
                        a.store((w - lr * d).to_bits(), Ordering::Relaxed);
                    }
                }
            }
            SharedParams::Locked(m) => {
                let mut w = m.lock().unwrap_or_else(|p| p.into_inner());
                w.iter_mut()
                    .zip(d)
                    .filter(|(_, d)| **d != 0.0)
                    .for_each(|(w, &d)| *w -= lr * d);
            }
        }
    }
}

/// What one Hogwild! thread keeps.
struct Lane {
    engine: Box<dyn Engine>,
    batch: Batch,
    /// The shared parameters as read before this thread's last gradient.
    view: Vec<f32>,
    velocity: Vec<f32>,
    /// The directions of this thread's last step.
    step: Vec<f32>,
}

/// A task's minibatches, one per core at a time, on one shared copy.
pub struct Hogwild<'a> {
    /// For `accumulate` (`sync`'s gradient), which has no local steps to share.
    split: SplitBatch<'a>,
    lanes: Vec<Lane>,
    shared: SharedParams,
}

impl<'a> Hogwild<'a> {
    /// One lane per thread of the current rayon pool; `locked` shares the
    /// copy under a mutex instead.
    pub fn new(engine: &'a mut dyn Engine, data: &'a Dataset, batches: Minibatches, seed: u64, locked: bool) -> Self {
        let len = engine.network().layout().len();
        let rows = batches.batch_size();
        let lanes = (0..rayon::current_num_threads().max(1))
            .map(|i| Lane {
                engine: engine.fork(rows, 1, seed ^ (i as u64 + 1)),
                batch: Batch::new(rows, data.dim()),
                view: vec![0.0; len],
                velocity: vec![0.0; len],
                step: vec![0.0; len],
            })
            .collect();
        Self {
            split: SplitBatch::new(engine, data, batches),
            lanes,
            shared: SharedParams::new(len, locked),
        }
    }
}

impl Compute for Hogwild<'_> {
    fn remaining(&self) -> usize {
        self.split.remaining()
    }

    fn accumulate(&mut self, params: &[f32]) -> Result<Work, LoopError> {
        self.split.accumulate(params)
    }

    fn take(&mut self) -> &[f32] {
        self.split.take()
    }

    fn local_steps(&mut self, params: &mut [f32], steps: &mut LocalSteps, n: usize) -> Result<Work, LoopError> {
        // The window holds what the shared copy moves from here.
        steps.open(params);
        self.shared.store_all(params);
        let rule = steps.rule();
        let claimed = AtomicUsize::new(0);
        let (shared, split) = (&self.shared, &self.split);
        let (data, batches, first_step) = (split.data, &split.batches, split.step);
        let results: Vec<Result<Work, LoopError>> = self
            .lanes
            .par_iter_mut()
            .map(|lane| {
                let mut work = Work::default();
                let supervised = lane.engine.network().classes().is_some();
                while claimed.fetch_add(1, Ordering::Relaxed) < n {
                    let Some(rows) = batches.claim() else { break };
                    lane.batch.fill(data, rows);
                    shared.read(&mut lane.view);
                    let (loss, grad) =
                        lane.engine
                            .gradient(&lane.view, lane.batch.x(), lane.batch.labels(supervised))?;
                    let loss = check_loss(loss, first_step + work.batches as usize)?;
                    let parts = grad.iter().zip(&lane.view).zip(&mut lane.velocity);
                    for (((&g, &w), v), d) in parts.zip(&mut lane.step) {
                        *d = rule.direction(g, w, v);
                    }
                    shared.step(&lane.step, rule.lr);
                    work.add(Work {
                        batches: 1,
                        samples: rows.len() as u32,
                        loss_sum: loss,
                    });
                }
                Ok(work)
            })
            .collect();
        let mut total = Work::default();
        for r in results {
            total.add(r?);
        }
        self.split.step += total.batches as usize;
        self.shared.read(params);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::tests::{data, steps, train};
    use deepdist_core::model::{Activation, Mlp};
    use deepdist_core::model::{GradientEngine, Model};

    #[test]
    fn two_threads_share_one_copy_and_learn_locked_or_not() {
        let (data, mlp) = (data(), Mlp::new(&[6, 5, 3], Activation::Tanh).unwrap());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            for locked in [false, true] {
                let mut engine = GradientEngine::new(mlp.clone(), 4, 1);
                let mut params = mlp.init(3);
                let mut local = steps(params.len());
                let mut total = (0.0, 0.0, 0);
                for epoch in 0..20 {
                    let batches = Minibatches::seeded(data.len(), 4, epoch);
                    let mut hogwild = Hogwild::new(&mut engine, &data, batches, 1, locked);
                    let (first, last, n) = train(&mut hogwild, &mut params, &mut local);
                    total = (if epoch == 0 { first } else { total.0 }, last, total.2 + n);
                }
                assert_eq!(total.2, 20 * 16, "every minibatch exactly once");
                assert!(
                    total.1 < total.0 * 0.9,
                    "locked {locked}: loss {} → {}",
                    total.0,
                    total.1
                );
                assert!(params.iter().all(|p| p.is_finite()));
            }
        });
    }
}
