//! Training modes: how executors' work meets at the parameter server.
//!
//! A mode is one module holding both of its halves:
//! - the executor's half, an [`ExecutorLoop`]: what to do with a task's
//!   minibatches — step locally, push, fetch, wait — through a [`Compute`]
//!   (the executor's cores) and a [`Link`] (its connection to the driver);
//! - the server's half, a [`ServerRule`]: what the parameter server does with
//!   each update and when it may answer a fetch, on a [`ServerModel`] (the
//!   master parameters and their `descent()` rule).
//!
//! Adding a mode is adding a module, its name in [`Mode`] (with its keys in
//! `job::train`) and one line in each match below.
//! The executor and the driver know modes only through these traits.

pub mod authors;
pub mod average;
mod compression;
pub mod downpour;
pub mod easgd;
pub mod local;
mod server_model;
pub mod ssp;
pub mod sync;

use std::collections::HashSet;

pub use crate::job::{Mode, ModeKeys};
pub use authors::Authors;
pub use local::LocalSteps;
pub use server_model::ServerModel;

use crate::compress::Compression;
use crate::model::ModelError;
use crate::optim::{OptimizerConfig, OptimizerKind};
use crate::tensor::{Tensor, TensorError};
use crate::train::TrainError;

impl Mode {
    /// The `[train]` keys only this mode reads (beyond those every mode reads).
    fn keys(self) -> &'static [&'static str] {
        match self {
            Mode::Async => downpour::KEYS,
            Mode::Sync => sync::KEYS,
            Mode::Ssp => ssp::KEYS,
            Mode::Average => average::KEYS,
            Mode::Easgd => easgd::KEYS,
        }
    }

    /// Checks the mode's keys: set keys of other modes are refused, values
    /// range-checked. Errors name the key (without `train.`) and what is allowed.
    pub fn check(self, keys: &ModeKeys) -> Result<(), KeyError> {
        for (key, set) in keys.given() {
            if set && !self.keys().contains(&key) {
                return Err(KeyError {
                    key,
                    value: "(set)".into(),
                    allowed: format!("does not apply to mode = \"{}\"", self.name()),
                });
            }
        }
        match self {
            Mode::Ssp => ssp::check(keys),
            Mode::Average => average::check(keys),
            Mode::Easgd => easgd::check(keys),
            Mode::Async | Mode::Sync => Ok(()),
        }
    }

    /// How an executor runs a task of a stage with minibatch `batch` when
    /// `peers` executors take part: the mode adapts minibatch, rate and
    /// windows to the cluster.
    pub fn shape(self, keys: &ModeKeys, batch: u32, peers: u32) -> Shape {
        match self {
            Mode::Async | Mode::Ssp => downpour::shape(keys, batch, peers),
            Mode::Sync => sync::shape(keys, batch, peers),
            Mode::Average => average::shape(keys, batch, peers),
            Mode::Easgd => easgd::shape(keys, batch, peers),
        }
    }

    /// The executor's half, for the tasks of one stage with `len` parameters
    /// under the stage's `optimizer` settings.
    pub fn executor_loop(self, keys: &ModeKeys, optimizer: &OptimizerConfig, len: usize) -> Box<dyn ExecutorLoop> {
        match self {
            Mode::Async => Box::new(downpour::Worker::new(keys, optimizer, len)),
            Mode::Sync => Box::new(sync::Worker::new(len)),
            Mode::Ssp => Box::new(ssp::Worker::new(optimizer, len)),
            Mode::Average => Box::new(average::Worker::new(optimizer, len)),
            Mode::Easgd => Box::new(easgd::Worker::new(keys, optimizer, len)),
        }
    }

    /// The server's half.
    pub fn server_rule(self, keys: &ModeKeys) -> Box<dyn ServerRule> {
        match self {
            Mode::Async => Box::new(downpour::Server),
            Mode::Sync | Mode::Average => Box::new(sync::Rounds::default()),
            Mode::Ssp => Box::new(ssp::Server::new(keys)),
            Mode::Easgd => Box::new(easgd::Server),
        }
    }

    /// Whether work is dealt to executors by rank ([`dealt_rank`]) rather
    /// than pulled: the modes that step in rounds, so a round holds the same
    /// examples, summed in the same order, in every run.
    pub fn deals_work(self) -> bool {
        matches!(self, Mode::Sync | Mode::Average)
    }

    /// Whether the server's optimizer keeps the job's momentum and weight
    /// decay. Where executors step locally, both are theirs: applied again to
    /// the directions they push they would count twice.
    pub fn server_momentum(self) -> bool {
        matches!(self, Mode::Sync)
    }

    /// Whether executors keep the momentum the server would apply to their
    /// pushes (top-k's momentum correction): the server then steps without.
    pub fn momentum_on_executors(self, push: Compression) -> bool {
        self.server_momentum() && push == Compression::Topk
    }

    /// Whether the server's step on an executor's pushed window moves the
    /// model exactly as that executor's local steps moved its copy: `async`
    /// with plain SGD at the job's rate (no warm-up, no staleness scaling)
    /// and values travelling `exact`ly both ways (compressed, they arrive
    /// rounded), where the executor's copy already holds its own updates.
    pub fn server_mirrors_local(self, cfg: &OptimizerConfig, exact: bool) -> bool {
        let schedule = cfg.schedule();
        self == Mode::Async
            && exact
            && cfg.kind == OptimizerKind::Sgd
            && schedule.warmup_steps == 0
            && !schedule.staleness_scaled
    }

    /// The optimizer the parameter server runs for a stage configured `cfg`
    /// whose pushes travel as `push` says.
    pub fn server_optimizer(self, cfg: &OptimizerConfig, push: Compression) -> OptimizerConfig {
        if self.momentum_on_executors(push) {
            cfg.without_momentum()
        } else if self.server_momentum() {
            *cfg
        } else {
            cfg.for_local_steps()
        }
    }
}

/// A mode key with a value that is not allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyError {
    /// The key, within `[train]`.
    pub key: &'static str,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

/// An executor's share of the job's minibatch when `peers` executors take
/// part: the whole of it up to `reference_executors`, `reference / N` of it
/// beyond (at least one example). Returns the minibatch and the share.
pub fn minibatch_share(keys: &ModeKeys, batch: u32, peers: u32) -> (usize, f64) {
    let share = (f64::from(keys.reference_executors) / f64::from(peers.max(1))).min(1.0);
    let given = batch.max(1) as usize;
    (((given as f64 * share).round() as usize).clamp(1, given), share)
}

/// How an executor runs one task: decided by the mode from the job and the
/// number of executors taking part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Minibatch size.
    pub batch: usize,
    /// Local steps are this multiple of the server's rate (a smaller
    /// minibatch takes a proportionally smaller step, so the step per
    /// example stays the job's).
    pub rate_scale: f32,
    /// Minibatches between pushes.
    pub push_every: u32,
    /// Minibatches between fetches.
    pub fetch_every: u32,
}

/// One task as its executor loop sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskPlan {
    /// The stage's epoch the task belongs to, from 1.
    pub epoch: u32,
    /// The server's learning rate in that epoch.
    pub lr: f32,
    /// The momentum in that epoch.
    pub momentum: f32,
    /// Executors taking part when the task was assigned.
    pub peers: u32,
    /// Minibatch, rate and windows.
    pub shape: Shape,
}

/// Work done by some minibatches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    /// Minibatches.
    pub batches: u32,
    /// Examples.
    pub samples: u32,
    /// Sum of the minibatches' mean losses.
    pub loss_sum: f32,
}

impl Work {
    /// Both together.
    pub fn add(&mut self, other: Work) {
        self.batches += other.batches;
        self.samples += other.samples;
        self.loss_sum += other.loss_sum;
    }
}

/// Why an executor loop stopped before the end of its task.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The connection went away or the driver cancelled the task: there is
    /// nobody to report to.
    #[error("task abandoned")]
    Abandoned,
    /// Training diverged; reported to the driver, which fails the job.
    #[error("training diverged (loss {loss} at step {step} of the task); lower the learning rate")]
    Diverged {
        /// The loss seen.
        loss: f32,
        /// Minibatches of the task before it.
        step: usize,
    },
    /// The model refused a batch or the parameters.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The driver did not answer in time, or sent something unusable.
    #[error("{0}")]
    Driver(String),
    /// The driver sent parameters of the wrong size.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The connection to the driver failed on this task's behalf.
    #[error("the connection to the driver: {0}")]
    Link(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The optimizer's state did not fit the parameters.
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    /// This executor cannot take the task on (its model is above the
    /// executor's limit).
    #[error("refused: {0}")]
    Refused(#[source] crate::job::JobError),
    /// The compute thread panicked (a bug); the executor carries on.
    #[error("the compute thread panicked: {0}")]
    Panicked(String),
}

impl From<TrainError> for LoopError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Diverged { loss, step } => LoopError::Diverged { loss, step },
            TrainError::Model(m) => LoopError::Model(m),
            TrainError::Optim(o) => LoopError::Optim(o),
        }
    }
}

/// How an executor's cores turn a task's minibatches into gradients and
/// local steps: one minibatch split across the cores, or (`hogwild`) one
/// minibatch per core on a shared copy. Minibatches come in the task's
/// shuffled order; every loss is checked for divergence.
pub trait Compute {
    /// Minibatches of the task not yet used.
    fn remaining(&self) -> usize;

    /// Adds the gradient of the next minibatch's mean loss at `params` to
    /// the running sum.
    fn accumulate(&mut self, params: &[f32]) -> Result<Work, LoopError>;

    /// The sum since the last take; the next `accumulate` starts a new one.
    fn take(&mut self) -> &[f32];

    /// Up to `n` local steps on `params` with `steps`, each from the
    /// gradient of the next minibatch.
    fn local_steps(&mut self, params: &mut [f32], steps: &mut LocalSteps, n: usize) -> Result<Work, LoopError>;
}

/// What an executor loop can ask of the driver; the executor's connection
/// and parameter mailbox stand behind it.
pub trait Link {
    /// Sends an update computed from parameters of `base_version`, covering `work`.
    fn push(&mut self, base_version: u64, work: Work, values: &[f32]) -> Result<(), LoopError>;

    /// Asks for the parameters, to be answered once the server has reached
    /// `wait_for` (what that means is the mode's: a version, a clock; 0 is now).
    fn request(&mut self, wait_for: u64) -> Result<(), LoopError>;

    /// Asks for the parameters if they have moved on from version `have`,
    /// the one the loop holds; if they have not, the answer carries no
    /// values and [`Link::receive`] finds nothing new.
    fn request_newer(&mut self, have: u64) -> Result<(), LoopError> {
        let _ = have;
        self.request(0)
    }

    /// Whether a request is still unanswered.
    fn outstanding(&self) -> bool;

    /// The newest parameters received with version ≥ `min_version`, copied
    /// into `params`; with `wait`, blocks for an outstanding answer if none
    /// has arrived.
    fn receive(&mut self, params: &mut [f32], min_version: u64, wait: bool) -> Result<Option<Received>, LoopError>;

    /// Waits for the newest parameters with version ≥ `min_version`, as
    /// [`Link::receive`] does, for a loop that only reads them: they come
    /// back as received (`Some`) when they can be read in place (see
    /// [`Tensor::as_f32`]), and are copied into `params` otherwise
    /// ([`Received::copied`]).
    fn receive_to_read(
        &mut self,
        params: &mut [f32],
        min_version: u64,
    ) -> Result<Option<(Received, Option<Tensor>)>, LoopError> {
        Ok(self.receive(params, min_version, true)?.map(|r| (r, None)))
    }
}

/// Parameters a fetch brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Their version.
    pub version: u64,
    /// Whether they were copied into the caller's buffer. Not when the
    /// answer to [`Link::request_newer`] says the caller's copy already
    /// stands for `version` (nothing applied since, or only its own
    /// updates): then there is nothing to copy or rebase.
    pub copied: bool,
}

/// The executor's half of a mode: runs one task's minibatches. One value
/// serves every task of a stage, so state such as momentum, a local model or
/// a clock carries over from task to task.
pub trait ExecutorLoop: Send {
    /// Trains the task to its end; returns its work.
    fn run_task(&mut self, plan: &TaskPlan, compute: &mut dyn Compute, link: &mut dyn Link) -> Result<Work, LoopError>;
}

/// The rank (0-based, of `ranks`) that trains partition `partition` of
/// epoch `epoch` (1-based) when work is dealt ([`Mode::deals_work`]): the
/// stage's tasks in order, round-robin. A rank's tasks follow from its place
/// alone, not from which executor holds it or when it asks.
pub fn dealt_rank(epoch: u32, partition: u32, partitions: u32, ranks: u32) -> u32 {
    let item = u64::from(epoch.saturating_sub(1)) * u64::from(partitions) + u64::from(partition);
    (item % u64::from(ranks.max(1))) as u32
}

/// Upper bounds of the staleness histogram's buckets (one more holds
/// everything above), shared by the driver's log and the simulation.
pub const STALENESS_BOUNDS: [u64; 8] = [0, 1, 2, 4, 8, 16, 32, 64];

/// The bucket of [`STALENESS_BOUNDS`] (or the one above them) that holds
/// `staleness`.
pub fn staleness_bucket(staleness: u64) -> usize {
    STALENESS_BOUNDS
        .iter()
        .position(|&b| staleness <= b)
        .unwrap_or(STALENESS_BOUNDS.len())
}

/// An update as the server's half receives it.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The executor it came from.
    pub from: u64,
    /// The parameter version it was computed from.
    pub base_version: u64,
    /// Examples it covers.
    pub samples: u32,
    /// Its values (a gradient, summed step directions or a difference, by mode).
    pub values: &'a [f32],
}

/// Figures a server rule reports beside the model's own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuleStats {
    /// SSP: the largest clock spread seen when an executor was let go on.
    pub max_clock_spread: Option<u64>,
}

/// The server's half of a mode, run on the parameter server's thread.
pub trait ServerRule: Send {
    /// An update arrived: apply it to `model`, or hold it for its round.
    fn push(&mut self, model: &mut ServerModel, update: Update<'_>);

    /// Whether a fetch from `from` waiting for `wait_for` may be answered now.
    fn ready(&mut self, model: &ServerModel, _from: u64, wait_for: u64) -> bool {
        model.version() >= wait_for
    }

    /// The executors holding a task changed.
    fn members(&mut self, _model: &mut ServerModel, _members: &HashSet<u64>) {}

    /// What the rule measured.
    fn stats(&self) -> RuleStats {
        RuleStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_sgd_modes_share_the_minibatch_but_keep_their_rate_and_rounds() {
        let keys = ModeKeys {
            sync_every: Some(8),
            tau: Some(4),
            ..ModeKeys::default()
        };
        for mode in [Mode::Average, Mode::Easgd] {
            let two = mode.shape(&keys, 128, 2);
            let sixteen = mode.shape(&keys, 128, 16);
            assert_eq!(two.batch, 128, "{mode:?}: the job as given at the reference count");
            assert_eq!(sixteen.batch, 16, "{mode:?}: 2/16 of it with 16 executors");
            assert_eq!((sixteen.rate_scale, sixteen.push_every), (1.0, two.push_every));
        }
        assert_eq!(minibatch_share(&keys, 128, 1), (128, 1.0));
        assert_eq!(minibatch_share(&keys, 3, 1000).0, 1, "never below one example");
    }
}
