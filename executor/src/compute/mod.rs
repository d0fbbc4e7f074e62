//! How an executor's cores compute: the two [`Compute`]s a mode's loop runs on.
//!
//! - [`SplitBatch`] (the default): each minibatch is split across the cores
//!   by the [`GradientEngine`]; local steps follow one another. In an
//!   executor group ([`crate::group`]) the minibatch is first split across
//!   the group's processes, and each process splits its rows across its cores.
//! - [`Hogwild`] (`train.hogwild`, Niu et al. 2011): the cores train one
//!   shared copy of the parameters at once, each on its own minibatches,
//!   without locks. The copy is a vector of atomics read and written with
//!   relaxed ordering: threads may overwrite each other's steps (Hogwild!'s
//!   bargain), but there is no data race and no undefined behaviour. A
//!   thread reads the copy into its own buffer before each gradient, keeps
//!   its own velocity, and writes only coordinates its step changes, so
//!   sparse steps touch little. [`SharedParams::Locked`] is the same with a
//!   mutex, for comparison (`deepdist bench hogwild`).

use deepdist_core::data::Dataset;
use deepdist_core::mode::{Compute, LocalSteps, LoopError, Work};
use deepdist_core::model::Engine;
use deepdist_core::train::{Batch, Minibatches, check_loss};
use ndarray::s;

use crate::group::Group;

mod hogwild;
pub use hogwild::{Hogwild, SharedParams};

/// A task's minibatches through one engine that splits each across the cores.
pub struct SplitBatch<'a> {
    engine: &'a mut dyn Engine,
    data: &'a Dataset,
    batches: Minibatches,
    batch: Batch,
    step: usize,
    group: Option<Shared<'a>>,
}

/// A group's share of the work, and the running sum `accumulate` keeps
/// (the engine's own sum covers only this process's rows).
struct Shared<'a> {
    group: &'a mut dyn Group,
    sum: Vec<f32>,
    fresh: bool,
}

impl<'a> SplitBatch<'a> {
    /// The task's minibatches of `data` in the order `batches`.
    pub fn new(engine: &'a mut dyn Engine, data: &'a Dataset, batches: Minibatches) -> Self {
        let batch = Batch::new(batches.batch_size(), data.dim());
        Self {
            engine,
            data,
            batches,
            batch,
            step: 0,
            group: None,
        }
    }

    /// The same, each minibatch shared with the other ranks of `group`.
    pub fn grouped(
        engine: &'a mut dyn Engine,
        data: &'a Dataset,
        batches: Minibatches,
        group: &'a mut dyn Group,
    ) -> Self {
        let len = engine.network().layout().len();
        Self {
            group: Some(Shared {
                group,
                sum: vec![0.0; len],
                fresh: true,
            }),
            ..Self::new(engine, data, batches)
        }
    }

    /// The current minibatch's mean loss and gradient at `params`: this
    /// process's alone, or combined with its group's.
    fn gradient(&mut self, params: &[f32]) -> Result<(f32, &[f32]), LoopError> {
        match &mut self.group {
            Some(shared) => group_gradient(self.engine, &self.batch, &mut *shared.group, params),
            None => {
                let supervised = self.engine.network().classes().is_some();
                let (x, labels) = (self.batch.x(), self.batch.labels(supervised));
                Ok(self.engine.gradient(params, x, labels)?)
            }
        }
    }

    /// Gathers the next minibatch; false when the task has none left.
    fn next(&mut self) -> bool {
        match self.batches.claim() {
            Some(rows) => {
                self.batch.fill(self.data, rows);
                true
            }
            None => false,
        }
    }

    fn checked(&mut self, loss: f32) -> Result<Work, LoopError> {
        let loss = check_loss(loss, self.step)?;
        self.step += 1;
        Ok(Work {
            batches: 1,
            samples: self.batch.rows() as u32,
            loss_sum: loss,
        })
    }
}

impl Compute for SplitBatch<'_> {
    fn remaining(&self) -> usize {
        self.batches.remaining()
    }

    fn accumulate(&mut self, params: &[f32]) -> Result<Work, LoopError> {
        if !self.next() {
            return Ok(Work::default());
        }
        let loss = match &mut self.group {
            Some(shared) => {
                let (loss, grad) = group_gradient(self.engine, &self.batch, &mut *shared.group, params)?;
                if shared.fresh {
                    shared.sum.copy_from_slice(grad);
                } else {
                    shared.sum.iter_mut().zip(grad).for_each(|(s, g)| *s += g);
                }
                shared.fresh = false;
                loss
            }
            None => {
                let supervised = self.engine.network().classes().is_some();
                self.engine
                    .accumulate(params, self.batch.x(), self.batch.labels(supervised))?
            }
        };
        self.checked(loss)
    }

    fn take(&mut self) -> &[f32] {
        match &mut self.group {
            Some(shared) => {
                // As the engine's: zero when nothing was accumulated since the last take.
                if shared.fresh {
                    shared.sum.fill(0.0);
                }
                shared.fresh = true;
                &shared.sum
            }
            None => self.engine.take(),
        }
    }

    fn local_steps(&mut self, params: &mut [f32], steps: &mut LocalSteps, n: usize) -> Result<Work, LoopError> {
        let mut work = Work::default();
        for _ in 0..n {
            if !self.next() {
                break;
            }
            let (loss, grad) = self.gradient(params)?;
            steps.step(params, grad);
            work.add(self.checked(loss)?);
        }
        Ok(work)
    }
}

/// A minibatch's gradient computed by a group: the leader's rows here,
/// the others' on the other ranks, combined by the group.
fn group_gradient<'g>(
    engine: &mut dyn Engine,
    batch: &Batch,
    group: &'g mut dyn Group,
    params: &[f32],
) -> Result<(f32, &'g [f32]), LoopError> {
    let supervised = engine.network().classes().is_some();
    let (x, labels) = (batch.x(), batch.labels(supervised));
    group.gradient(params, x, labels, &mut |own, weight, out| {
        let (loss, grad) = engine.gradient(params, x.slice(s![..own, ..]), &labels[..own.min(labels.len())])?;
        crate::group::weighted_into(out, grad, weight);
        Ok(loss)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepdist_core::model::{Activation, GradientEngine, Mlp, Model};
    use deepdist_core::optim::OptimizerConfig;
    use ndarray::Array2;

    pub(super) fn data() -> Dataset {
        let x = Array2::from_shape_fn((64, 6), |(i, j)| ((i * 5 + j * 3) % 7) as f32 / 7.0);
        // The label is a function of the first feature: learnable.
        Dataset::new(x, (0..64).map(|i| ((i * 5) % 7 % 3) as u8).collect(), 3).unwrap()
    }

    pub(super) fn steps(len: usize) -> LocalSteps {
        let cfg = OptimizerConfig {
            lr: 0.1,
            momentum: Some(0.5),
            ..OptimizerConfig::default()
        };
        let mut steps = LocalSteps::new(&cfg, len);
        steps.start_task(0.1, 0.5, 1.0);
        steps
    }

    /// Trains 8 local steps at a time through `compute` to the end; the mean loss
    /// of the first and last round, and the minibatches seen.
    pub(super) fn train(compute: &mut dyn Compute, params: &mut [f32], steps: &mut LocalSteps) -> (f32, f32, u32) {
        let (mut first, mut last, mut batches) = (None, 0.0, 0);
        while compute.remaining() > 0 {
            let w = compute.local_steps(params, steps, 8).unwrap();
            let loss = w.loss_sum / w.batches as f32;
            first.get_or_insert(loss);
            last = loss;
            batches += w.batches;
            steps.take_window(params);
        }
        (first.unwrap_or(0.0), last, batches)
    }

    #[test]
    fn one_hogwild_thread_steps_exactly_as_split_minibatches() {
        let (data, mlp) = (data(), Mlp::new(&[6, 5, 3], Activation::Tanh).unwrap());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| {
            let mut results = Vec::new();
            for hogwild in [false, true] {
                let mut engine = GradientEngine::new(mlp.clone(), 4, 1);
                let batches = Minibatches::seeded(data.len(), 4, 7);
                let mut params = mlp.init(3);
                let mut local = steps(params.len());
                if hogwild {
                    train(
                        &mut Hogwild::new(&mut engine, &data, batches, 1, false),
                        &mut params,
                        &mut local,
                    );
                } else {
                    train(
                        &mut SplitBatch::new(&mut engine, &data, batches),
                        &mut params,
                        &mut local,
                    );
                }
                let window = local.take_window(&params).to_vec();
                results.push((params, window));
            }
            assert_eq!(results[0], results[1]);
        });
    }

    /// A group whose other rank is a second engine in this process: the
    /// split and the weighting, without MPI. The leader takes 3 of 5 rows.
    struct Loopback {
        other: GradientEngine<Mlp>,
        combined: Vec<f32>,
    }

    impl Group for Loopback {
        fn ranks(&self) -> usize {
            2
        }
        fn cores(&self) -> usize {
            2
        }
        fn setup(&mut self, _: &crate::group::Setup) -> Result<(), LoopError> {
            Ok(())
        }
        fn gradient(
            &mut self,
            params: &[f32],
            x: ndarray::ArrayView2<'_, f32>,
            labels: &[u8],
            own: &mut crate::group::OwnPart<'_>,
        ) -> Result<(f32, &[f32]), LoopError> {
            let rows = x.nrows();
            let lead = rows.div_ceil(2).min(3);
            let theirs = crate::group::rows_of(rows, 2, lead, 1);
            let w = theirs.len() as f32 / rows as f32;
            self.combined.resize(params.len(), 0.0);
            let own_loss = own(lead, 1.0 - w, &mut self.combined)?;
            let (their_loss, g) = self
                .other
                .gradient(params, x.slice(s![theirs.clone(), ..]), &labels[theirs])?;
            self.combined.iter_mut().zip(g).for_each(|(c, g)| *c += g * w);
            Ok((own_loss * (1.0 - w) + their_loss * w, &self.combined))
        }
    }

    #[test]
    fn a_group_computes_the_same_steps_and_sums_as_one_process() {
        let (data, mlp) = (data(), Mlp::new(&[6, 5, 3], Activation::Tanh).unwrap());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| {
            // Minibatches of 5 split 3 + 2: the weights must follow the rows.
            let run = |grouped: bool| {
                let mut engine = GradientEngine::new(mlp.clone(), 5, 1);
                let mut group = Loopback {
                    other: GradientEngine::new(mlp.clone(), 5, 1),
                    combined: Vec::new(),
                };
                let batches = || Minibatches::seeded(data.len(), 5, 7);
                let mut params = mlp.init(3);
                let mut local = steps(params.len());
                let mut compute = if grouped {
                    SplitBatch::grouped(&mut engine, &data, batches(), &mut group)
                } else {
                    SplitBatch::new(&mut engine, &data, batches())
                };
                let (first, last, _) = train(&mut compute, &mut params, &mut local);
                let mut compute = if grouped {
                    SplitBatch::grouped(&mut engine, &data, batches(), &mut group)
                } else {
                    SplitBatch::new(&mut engine, &data, batches())
                };
                let mut sum_loss = 0.0;
                for _ in 0..3 {
                    sum_loss += compute.accumulate(&params).unwrap().loss_sum;
                }
                let taken = compute.take().to_vec();
                assert!(compute.take().iter().all(|g| *g == 0.0), "a second take is empty");
                (params, first, last, sum_loss, taken)
            };
            let (alone, grouped) = (run(false), run(true));
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
            assert!(close(&alone.0, &grouped.0), "local steps differ");
            assert!((alone.1 - grouped.1).abs() < 1e-4 && (alone.2 - grouped.2).abs() < 1e-4);
            assert!((alone.3 - grouped.3).abs() < 1e-4, "{} vs {}", alone.3, grouped.3);
            assert!(close(&alone.4, &grouped.4), "accumulated gradients differ");
            assert!(alone.4.iter().any(|g| *g != 0.0));
        });
    }
}
