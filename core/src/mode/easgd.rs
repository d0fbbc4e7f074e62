//! `easgd`: elastic averaging SGD (Zhang, Choromanska & LeCun, "Deep
//! learning with Elastic Averaging SGD", 2015), asynchronous form.
//!
//! Executor: keeps its own model `x` from task to task and trains it with
//! local steps (the job's momentum: EAMSGD). Every `tau` steps it reads the
//! centre `x̃`, takes the elastic difference `e = α(x − x̃)`, moves itself by
//! `−e` and pushes `e`.
//!
//! Server: the centre moves by `+e` for every push; the centre is what is
//! evaluated and saved. Executors explore around it; the elastic force
//! keeps them near while letting the centre average their progress.
//!
//! `alpha` defaults to `0.9 / N` with N executors taking part, the paper's
//! choice of a total pull `β = Nα = 0.9`: with more executors each one is
//! pulled less, so the centre moves as far per round whatever N is.

use super::{
    Compute, ExecutorLoop, KeyError, Link, LocalSteps, LoopError, ModeKeys, ServerModel, ServerRule, Shape, TaskPlan,
    Update, Work,
};
use crate::optim::OptimizerConfig;

/// The keys `easgd` reads beyond the common ones.
pub const KEYS: &[&str] = &["tau", "alpha"];

/// Local steps between elastic updates when the job gives none.
pub const DEFAULT_TAU: u32 = 4;

/// The total pull of all executors, when `alpha` is not given.
pub const BETA: f32 = 0.9;

/// Checks `tau` and `alpha`.
pub fn check(keys: &ModeKeys) -> Result<(), KeyError> {
    if let Some(t) = keys.tau.filter(|t| !(1..=100_000).contains(t)) {
        return Err(KeyError {
            key: "tau",
            value: t.to_string(),
            allowed: "must be between 1 and 100000".into(),
        });
    }
    if let Some(a) = keys.alpha.filter(|a| !(*a > 0.0 && *a < 1.0)) {
        return Err(KeyError {
            key: "alpha",
            value: a.to_string(),
            allowed: "must be in (0, 1)".into(),
        });
    }
    Ok(())
}

/// An elastic update every `tau` minibatches. Past `reference_executors`,
/// each executor's minibatch shrinks by `reference / N` at the job's rate,
/// so each takes as many local steps per epoch as with the reference count.
pub fn shape(keys: &ModeKeys, batch: u32, peers: u32) -> Shape {
    let tau = keys.tau.unwrap_or(DEFAULT_TAU);
    Shape {
        batch: super::minibatch_share(keys, batch, peers).0,
        rate_scale: 1.0,
        push_every: tau,
        fetch_every: tau,
    }
}

/// The executor's half: a local model on an elastic tie to the centre.
pub struct Worker {
    local: LocalSteps,
    alpha: Option<f32>,
    /// The local model `x`, once it has started from the centre.
    x: Option<Vec<f32>>,
    centre: Vec<f32>,
}

impl Worker {
    /// The loop for a stage of `len` parameters.
    pub fn new(keys: &ModeKeys, optimizer: &OptimizerConfig, len: usize) -> Self {
        Self {
            local: LocalSteps::new(optimizer, len),
            alpha: keys.alpha,
            x: None,
            centre: vec![0.0; len],
        }
    }
}

impl ExecutorLoop for Worker {
    fn run_task(&mut self, plan: &TaskPlan, compute: &mut dyn Compute, link: &mut dyn Link) -> Result<Work, LoopError> {
        let alpha = self.alpha.unwrap_or(BETA / plan.peers.max(1) as f32);
        let x = match &mut self.x {
            Some(x) => x,
            None => {
                let mut x = vec![0.0; self.centre.len()];
                super::downpour::fetch_now(link, &mut x)?;
                self.x.insert(x)
            }
        };
        self.local.start_task(plan.lr, plan.momentum, plan.shape.rate_scale);
        let mut total = Work::default();
        let mut e = vec![0.0; x.len()];
        while compute.remaining() > 0 {
            let work = compute.local_steps(x, &mut self.local, plan.shape.push_every as usize)?;
            total.add(work);
            let version = super::downpour::fetch_now(link, &mut self.centre)?;
            for ((e, w), c) in e.iter_mut().zip(x.iter_mut()).zip(&self.centre) {
                *e = alpha * (*w - c);
                *w -= *e;
            }
            link.push(version, work, &e)?;
            // The window of local steps is not what easgd pushes.
            self.local.take_window(x);
            self.local.requested();
        }
        Ok(total)
    }
}

/// The server's half: the centre moves by every elastic difference.
pub struct Server;

impl ServerRule for Server {
    fn push(&mut self, model: &mut ServerModel, update: Update<'_>) {
        model.add(update.values, update.base_version);
    }
}
