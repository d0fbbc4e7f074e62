//! The parameter server: owns the master model and runs the job's mode's
//! server rule ([`ServerRule`]) on every update, on a thread of its own so
//! the network tasks never wait on arithmetic.
//!
//! It knows no mode itself: it decodes updates, moves the optimizer's
//! schedule to each update's epoch,
//! delays updates for experiments (`train.inject_delay`), answers fetches
//! once the rule says they are ready, and takes snapshots. Encoded `Params`
//! frames are cached per version, so executors fetching the same version
//! share one encoding.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use deepdist_core::mode::{Authors, RuleStats, ServerModel, ServerRule, Update};
use deepdist_core::optim::OptimizerState;
use deepdist_wire::proto::{self, Tensor, ToExecutor};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Requests to the parameter server.
enum Command {
    Push(Incoming, OwnedSemaphorePermit),
    Fetch(Waiting),
    /// A snapshot once the version is at least `at`.
    Snapshot {
        with_optimizer: bool,
        at: u64,
        reply: oneshot::Sender<Snapshot>,
    },
    Members(HashSet<u64>),
    /// Apply every delayed update now (the stage is over).
    Flush,
}

/// An update as it came off the wire.
struct Incoming {
    executor: u64,
    base_version: u64,
    epoch: u32,
    samples: u32,
    values: Tensor,
}

/// Parameters at one version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Updates applied so far.
    pub version: u64,
    /// The values: the stage's moving average when its optimizer keeps one
    /// (what is evaluated and saved), but the training parameters in a
    /// checkpoint.
    pub params: Arc<Vec<f32>>,
    /// Sum of the staleness of every update applied so far.
    pub staleness_sum: u64,
    /// Updates refused: wrong length, out of their round, or refused by the optimizer.
    pub rejected: u64,
    /// The optimizer's state, when asked for (checkpoints).
    pub optimizer: Option<OptimizerState>,
    /// What the mode's rule measured.
    pub rule: RuleStats,
}

/// Where a resumed server starts counting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resumed {
    /// Updates applied before the checkpoint.
    pub version: u64,
    /// Their summed staleness.
    pub staleness_sum: u64,
}

/// How the server runs a stage, besides its model and rule.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// The job.
    pub job: u64,
    /// The stage's index.
    pub stage_index: u32,
    /// Updates are applied this many updates late (0: at once).
    pub delay: u32,
    /// Where each update's staleness is recorded, per executor.
    pub staleness: Arc<crate::staleness::StalenessLog>,
    /// The server's step on a pushed window moves the model as the
    /// executor's local steps did ([`deepdist_core::mode::Mode::server_mirrors_local`]):
    /// a fetch after only the fetcher's own updates is answered `Unchanged`.
    pub mirrors_local: bool,
}

/// Bytes of updates that may wait for the server thread at once. A push
/// beyond it waits, and with it the reading of its executor's connection:
/// executors that push faster than the server applies are slowed down
/// instead of growing the driver's memory.
pub const PUSH_QUEUE_BYTES: usize = 256 << 20;

/// A handle to a running parameter server; dropping every handle stops it.
#[derive(Clone)]
pub struct ParamServer {
    tx: mpsc::Sender<Command>,
    /// Room in the push queue, in KiB.
    room: Arc<Semaphore>,
}

/// KiB of push queue room an update of `bytes` takes (never more than all).
fn room_for(bytes: usize) -> u32 {
    bytes.div_ceil(1024).clamp(1, PUSH_QUEUE_BYTES / 1024) as u32
}

impl ParamServer {
    /// Starts a server for a stage on `model`, applying updates by `rule`.
    pub fn start(plan: ServerPlan, model: ServerModel, rule: Box<dyn ServerRule>) -> Self {
        let (tx, rx) = mpsc::channel();
        let name = format!("deepdist-ps-{}", plan.job);
        let state = ServerThread {
            scratch: vec![0.0; model.len()],
            plan,
            model,
            rule,
            waiting: Vec::new(),
            deferred: Vec::new(),
            frame: None,
            delayed: VecDeque::new(),
            authors: Authors::default(),
        };
        let spawned = std::thread::Builder::new().name(name).spawn(move || state.run(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the parameter server thread");
        }
        Self {
            tx,
            room: Arc::new(Semaphore::new(PUSH_QUEUE_BYTES / 1024)),
        }
    }

    /// Queues an update from `executor` computed from `base_version` in
    /// `epoch`, covering `samples` examples; waits while the queue is full.
    pub async fn push(&self, executor: u64, base_version: u64, epoch: u32, samples: u32, values: Tensor) {
        let Ok(room) = self.room.clone().acquire_many_owned(room_for(values.0.len())).await else {
            return;
        };
        let incoming = Incoming {
            executor,
            base_version,
            epoch,
            samples,
            values,
        };
        let _ = self.tx.send(Command::Push(incoming, room));
    }

    /// The encoded `Params` frame (or `Unchanged`, if the parameters are
    /// still at version `newer_than`), once the mode's rule lets
    /// `executor`'s fetch waiting for `wait_for` be answered.
    pub async fn fetch(&self, executor: u64, wait_for: u64, newer_than: Option<u64>) -> Option<Bytes> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Fetch(Waiting {
                executor,
                wait_for,
                newer_than,
                reply,
            }))
            .ok()?;
        rx.await.ok()
    }

    /// The current parameters (their moving average, if kept).
    pub async fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot_when(false, 0).await.ok()
    }

    /// Applies every delayed update, then takes a snapshot: the stage's end.
    pub async fn finish(&self) -> Option<Snapshot> {
        self.tx.send(Command::Flush).ok()?;
        self.snapshot().await
    }

    /// A snapshot (with the optimizer's state, for a checkpoint) taken as
    /// soon as the version reaches `at` — or when the stage ends, if it never
    /// does. The answer comes through the receiver, so the caller need not
    /// wait for it.
    pub fn snapshot_when(&self, with_optimizer: bool, at: u64) -> oneshot::Receiver<Snapshot> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Snapshot {
            with_optimizer,
            at,
            reply,
        });
        rx
    }

    /// The executors holding a task of the stage.
    pub fn set_members(&self, members: HashSet<u64>) {
        let _ = self.tx.send(Command::Members(members));
    }
}

struct Waiting {
    executor: u64,
    wait_for: u64,
    newer_than: Option<u64>,
    reply: oneshot::Sender<Bytes>,
}

struct ServerThread {
    plan: ServerPlan,
    model: ServerModel,
    rule: Box<dyn ServerRule>,
    /// Where unaligned update bytes are decoded.
    scratch: Vec<f32>,
    waiting: Vec<Waiting>,
    /// Snapshots asked for at a version not yet reached.
    deferred: Vec<(u64, bool, oneshot::Sender<Snapshot>)>,
    frame: Option<(u64, Bytes)>,
    delayed: VecDeque<Incoming>,
    authors: Authors,
}

impl ServerThread {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        deepdist_core::cpu::flush_denormals();
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Push(incoming, room) => {
                    // Off the queue: its room is free (the delay queue is
                    // bounded by the job's `inject_delay`).
                    drop(room);
                    self.delayed.push_back(incoming);
                    while self.delayed.len() > self.plan.delay as usize {
                        if let Some(next) = self.delayed.pop_front() {
                            self.apply(next);
                        }
                    }
                }
                Command::Flush => {
                    while let Some(next) = self.delayed.pop_front() {
                        self.apply(next);
                    }
                    // The stage is over: a version not reached now never will be.
                    for (_, with_optimizer, reply) in std::mem::take(&mut self.deferred) {
                        let _ = reply.send(self.snapshot(with_optimizer));
                    }
                }
                Command::Fetch(waiting) => self.waiting.push(waiting),
                Command::Snapshot {
                    with_optimizer,
                    at,
                    reply,
                } => self.deferred.push((at, with_optimizer, reply)),
                Command::Members(members) => {
                    let before = self.model.version();
                    self.rule.members(&mut self.model, &members);
                    self.authors.record(before, self.model.version(), None);
                }
            }
            self.serve_deferred();
            self.serve_waiting();
        }
    }

    /// Answers the snapshots whose version has come, in the order asked.
    /// Checked after every command, and a command takes at most one step,
    /// so each is taken at exactly the version it waits for.
    fn serve_deferred(&mut self) {
        let version = self.model.version();
        if self.deferred.iter().all(|(at, ..)| *at > version) {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(at, ..)| *at <= version);
        self.deferred = later;
        for (_, with_optimizer, reply) in due {
            let _ = reply.send(self.snapshot(with_optimizer));
        }
    }

    fn snapshot(&self, with_optimizer: bool) -> Snapshot {
        // A checkpoint resumes training, so it takes the parameters
        // themselves (their average is in the optimizer's state); everything
        // else sees what the job produces: the average.
        let optimizer = self.model.optimizer();
        let params = match optimizer.average() {
            Some(avg) if !with_optimizer => avg,
            _ => self.model.params(),
        };
        Snapshot {
            version: self.model.version(),
            params: Arc::new(params.to_vec()),
            staleness_sum: self.model.staleness_sum(),
            rejected: self.model.refused(),
            optimizer: with_optimizer.then(|| optimizer.state()),
            rule: self.rule.stats(),
        }
    }

    fn apply(&mut self, incoming: Incoming) {
        self.model.optimizer_mut().begin_epoch(incoming.epoch);
        let values = &incoming.values;
        if values.len() != self.model.len() || !values.0.len().is_multiple_of(4) {
            self.model.refuse();
            tracing::warn!(
                executor = incoming.executor,
                len = values.len(),
                "update of the wrong length discarded"
            );
            return;
        }
        // Read the values in place when the bytes allow it; copy otherwise.
        let aligned = values.as_f32();
        if aligned.is_none() && values.read_into(&mut self.scratch).is_err() {
            self.model.refuse();
            return;
        }
        let staleness = self.model.version().saturating_sub(incoming.base_version);
        self.plan.staleness.record(incoming.executor, staleness);
        let update = Update {
            from: incoming.executor,
            base_version: incoming.base_version,
            samples: incoming.samples,
            values: aligned.unwrap_or(&self.scratch),
        };
        let before = self.model.version();
        self.rule.push(&mut self.model, update);
        self.authors
            .record(before, self.model.version(), Some(incoming.executor));
    }

    fn serve_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let (rule, model) = (&mut self.rule, &self.model);
        let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| rule.ready(model, w.executor, w.wait_for));
        self.waiting = still;
        if ready.is_empty() {
            return;
        }
        let version = self.model.version();
        for w in ready {
            let held = w.newer_than.is_some_and(|have| {
                have == version || (self.plan.mirrors_local && self.authors.holds(w.executor, have, version))
            });
            let frame = if held {
                self.unchanged_frame(version)
            } else {
                self.params_frame(version)
            };
            if let Some(frame) = frame {
                let _ = w.reply.send(frame);
            }
        }
    }

    /// The current parameters' frame, encoded once per version.
    fn params_frame(&mut self, version: u64) -> Option<Bytes> {
        if let Some((v, f)) = &self.frame
            && *v == version
        {
            return Some(f.clone());
        }
        let msg = ToExecutor::Params {
            job: self.plan.job,
            stage: self.plan.stage_index,
            version,
            values: Tensor::default(),
        };
        match proto::encode_with_tensor(&msg, self.model.params()) {
            Ok(f) => {
                self.frame = Some((version, f.clone()));
                Some(f)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode parameters");
                None
            }
        }
    }

    fn unchanged_frame(&self, version: u64) -> Option<Bytes> {
        let msg = ToExecutor::Unchanged {
            job: self.plan.job,
            stage: self.plan.stage_index,
            version,
        };
        proto::encode(&msg)
            .inspect_err(|e| tracing::error!(error = %e, "cannot encode an unchanged answer"))
            .ok()
    }
}

#[cfg(test)]
mod tests;
