//! `average`: model averaging, or local SGD — the "traditional" scheme
//! DeepDist compared itself with (and Zinkevich et al. 2010, McDonald et al.
//! 2010, Stich 2019).
//!
//! Executor: from the current model, `sync_every` local steps (with the
//! job's momentum, kept from round to round); then it pushes how far it
//! moved and waits for the round's model, which it adopts as it is.
//!
//! Server: [`super::sync::Rounds`] — once every executor holding a task has
//! pushed for the round, the model moves by the examples-weighted mean of
//! their moves (with the job's `sgd` optimizer that is exactly the average
//! of the executors' models).

use super::{Compute, ExecutorLoop, KeyError, Link, LocalSteps, LoopError, ModeKeys, Shape, TaskPlan, Work};
use crate::optim::OptimizerConfig;

/// The keys `average` reads beyond the common ones.
pub const KEYS: &[&str] = &["sync_every"];

/// Local steps between averages when the job gives none.
pub const DEFAULT_SYNC_EVERY: u32 = 8;

/// Checks `sync_every`.
pub fn check(keys: &ModeKeys) -> Result<(), KeyError> {
    match keys.sync_every {
        Some(n) if !(1..=100_000).contains(&n) => Err(KeyError {
            key: "sync_every",
            value: n.to_string(),
            allowed: "must be between 1 and 100000".into(),
        }),
        _ => Ok(()),
    }
}

/// A round every `sync_every` minibatches. Past `reference_executors`, each
/// executor's minibatch shrinks by `reference / N` at the job's rate: a
/// round then covers the examples it covers with the reference count, and
/// the average of N noisier local trajectories matches the reference's two,
/// so an epoch holds as many rounds of the same size whatever N is.
pub fn shape(keys: &ModeKeys, batch: u32, peers: u32) -> Shape {
    let every = keys.sync_every.unwrap_or(DEFAULT_SYNC_EVERY);
    Shape {
        batch: super::minibatch_share(keys, batch, peers).0,
        rate_scale: 1.0,
        push_every: every,
        fetch_every: every,
    }
}

/// The executor's half: local steps, then the round's average.
pub struct Worker {
    local: LocalSteps,
    params: Vec<f32>,
}

impl Worker {
    /// The loop for a stage of `len` parameters.
    pub fn new(optimizer: &OptimizerConfig, len: usize) -> Self {
        Self {
            local: LocalSteps::new(optimizer, len),
            params: vec![0.0; len],
        }
    }
}

impl ExecutorLoop for Worker {
    fn run_task(&mut self, plan: &TaskPlan, compute: &mut dyn Compute, link: &mut dyn Link) -> Result<Work, LoopError> {
        let (local, params) = (&mut self.local, &mut self.params[..]);
        let mut version = super::downpour::fetch_now(link, params)?;
        local.start_task(plan.lr, plan.momentum, plan.shape.rate_scale);
        let mut total = Work::default();
        while compute.remaining() > 0 {
            let work = compute.local_steps(params, local, plan.shape.push_every as usize)?;
            total.add(work);
            link.push(version, work, local.take_window(params))?;
            if compute.remaining() == 0 {
                break;
            }
            // The round's model holds this executor's move (averaged): it
            // replaces the local copy, nothing is rebased.
            version = super::sync::wait_for_next(link, params, version)?;
            local.requested();
        }
        Ok(total)
    }
}
