//! One shard of the parameter server: a thread owning one contiguous range
//! of the master parameters with its own optimizer state and its own
//! instance of the mode's rule. Every shard is sent every push (its slice),
//! fetch, membership change and snapshot in the same order
//! ([`super::ParamServer`] keeps that order), so the rules' rounds, clocks
//! and versions move in step on every shard without talking to each other.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};

use bytes::Bytes;
use deepdist_core::compress::Compression;
use deepdist_core::mode::{Authors, RuleStats, ServerModel, ServerRule, Update};
use deepdist_core::optim::OptimizerState;
use deepdist_wire::proto::{self, Tensor, ToExecutor};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::{PartReply, ServerPlan};

/// Requests to a shard.
pub(super) enum Command {
    Push(Incoming, OwnedSemaphorePermit),
    Fetch(Waiting),
    /// The shard's values now, whatever the rule says (the rest of an
    /// answer other shards could not give `Unchanged`).
    Current(oneshot::Sender<Piece>),
    /// A snapshot once the version is at least `at`.
    Snapshot {
        with_optimizer: bool,
        at: u64,
        reply: PartReply,
    },
    Members(HashSet<u64>),
    /// Apply every delayed update now (the stage is over).
    Flush,
}

/// An update's slice for this shard, as it came off the wire.
pub(super) struct Incoming {
    pub executor: u64,
    pub base_version: u64,
    pub epoch: u32,
    pub samples: u32,
    pub compression: Compression,
    pub values: Tensor,
}

/// A fetch the shard answers once its rule allows.
pub(super) struct Waiting {
    pub executor: u64,
    pub wait_for: u64,
    pub newer_than: Option<u64>,
    pub reply: oneshot::Sender<Piece>,
}

/// A shard's answer to a fetch.
pub(super) struct Piece {
    /// The shard's version.
    pub version: u64,
    /// The shard's values as little-endian bytes — or, from the only shard,
    /// the whole `Params` frame holding them; `None` when the fetcher holds
    /// them already.
    pub values: Option<Bytes>,
}

/// One shard's part of a snapshot.
pub(super) struct ShardSnapshot {
    pub version: u64,
    pub params: Vec<f32>,
    pub staleness_sum: u64,
    pub rejected: u64,
    pub optimizer: Option<OptimizerState>,
    pub rule: RuleStats,
    pub traffic: super::Traffic,
}

/// What a shard has done, read by the status without stopping it.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Updates applied in the stage.
    pub updates: AtomicU64,
    /// Bytes of update slices received.
    pub bytes_pushed: AtomicU64,
    /// Bytes of values sent in answers to fetches.
    pub bytes_fetched: AtomicU64,
}

/// The thread's state.
pub(super) struct Shard {
    counters: Arc<Counters>,
    plan: ServerPlan,
    /// Whether this shard records each update's staleness (one shard does:
    /// every shard sees every update).
    records_staleness: bool,
    /// Whether this is the server's only shard, whose pieces are whole frames.
    only: bool,
    model: ServerModel,
    rule: Box<dyn ServerRule>,
    /// Where unaligned update bytes are decoded.
    scratch: Vec<f32>,
    waiting: Vec<Waiting>,
    /// Snapshots asked for at a version not yet reached.
    deferred: Vec<(u64, bool, PartReply)>,
    /// The values' bytes at one version, shared by every fetch of it.
    bytes: Option<(u64, Bytes)>,
    delayed: VecDeque<Incoming>,
    authors: Authors,
}

impl Shard {
    /// Shard `index` of `count` on `model` under `rule`.
    pub fn new(
        plan: ServerPlan,
        model: ServerModel,
        rule: Box<dyn ServerRule>,
        (index, count): (usize, usize),
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            counters,
            only: count == 1,
            scratch: vec![0.0; model.len()],
            plan,
            records_staleness: index == 0,
            model,
            rule,
            waiting: Vec::new(),
            deferred: Vec::new(),
            bytes: None,
            delayed: VecDeque::new(),
            authors: Authors::default(),
        }
    }

    /// Serves commands until every sender is gone.
    pub fn run(mut self, rx: mpsc::Receiver<Command>) {
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
                        reply.send(self.snapshot(with_optimizer));
                    }
                }
                Command::Fetch(waiting) => self.waiting.push(waiting),
                Command::Current(reply) => {
                    let version = self.model.version();
                    let values = Some(self.sent(version));
                    let _ = reply.send(Piece { version, values });
                }
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
            reply.send(self.snapshot(with_optimizer));
        }
    }

    fn snapshot(&self, with_optimizer: bool) -> ShardSnapshot {
        // A checkpoint resumes training, so it takes the parameters
        // themselves (their average is in the optimizer's state); everything
        // else sees what the job produces: the average.
        let optimizer = self.model.optimizer();
        let params = match optimizer.average() {
            Some(avg) if !with_optimizer => avg,
            _ => self.model.params(),
        };
        ShardSnapshot {
            version: self.model.version(),
            params: params.to_vec(),
            staleness_sum: self.model.staleness_sum(),
            rejected: self.model.refused(),
            optimizer: with_optimizer.then(|| optimizer.state()),
            rule: self.rule.stats(),
            traffic: super::Traffic {
                pushed: self.counters.bytes_pushed.load(Relaxed),
                fetched: self.counters.bytes_fetched.load(Relaxed),
            },
        }
    }

    fn apply(&mut self, incoming: Incoming) {
        self.model.optimizer_mut().begin_epoch(incoming.epoch);
        let values = &incoming.values;
        self.counters.bytes_pushed.fetch_add(values.0.len() as u64, Relaxed);
        // Read `f32` values in place when the bytes allow it; decode or
        // copy them otherwise (a wrong length is refused and counted here,
        // and logged as the whole update is cut).
        let aligned = match incoming.compression {
            Compression::None => values.as_f32().filter(|v| v.len() == self.model.len()),
            _ => None,
        };
        if aligned.is_none() && incoming.compression.decode_into(&values.0, &mut self.scratch).is_err() {
            self.model.refuse();
            return;
        }
        if self.records_staleness {
            let staleness = self.model.version().saturating_sub(incoming.base_version);
            self.plan.staleness.record(incoming.executor, staleness);
        }
        let update = Update {
            from: incoming.executor,
            base_version: incoming.base_version,
            samples: incoming.samples,
            values: aligned.unwrap_or(&self.scratch),
        };
        let before = self.model.version();
        self.rule.push(&mut self.model, update);
        let after = self.model.version();
        self.authors.record(before, after, Some(incoming.executor));
        self.counters.updates.fetch_add(after - before, Relaxed);
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
        let version = self.model.version();
        for w in ready {
            let held = self
                .authors
                .unchanged_for(self.plan.mirrors_local, w.executor, w.newer_than, version);
            let values = (!held).then(|| self.sent(version));
            let _ = w.reply.send(Piece { version, values });
        }
    }

    /// [`Shard::values`], counted as sent.
    fn sent(&mut self, version: u64) -> Bytes {
        let values = self.values(version);
        self.counters.bytes_fetched.fetch_add(values.len() as u64, Relaxed);
        values
    }

    /// The shard's values at `version` (the current one) as bytes, copied
    /// once per version.
    fn values(&mut self, version: u64) -> Bytes {
        if let Some((v, b)) = &self.bytes
            && *v == version
        {
            return b.clone();
        }
        let b = match self.only {
            // Encoded straight into the frame: no second copy to assemble one.
            true => {
                let msg = ToExecutor::Params {
                    job: self.plan.job,
                    stage: self.plan.stage_index,
                    version,
                    compression: self.plan.fetch,
                    values: Tensor::default(),
                };
                let params = self.model.params();
                let frame = match self.plan.fetch {
                    Compression::None => proto::encode_with_tensor(&msg, params),
                    c => proto::encode_with_bulk(&msg, &c.encode(params)),
                };
                match frame {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode parameters");
                        Bytes::new()
                    }
                }
            }
            false => self.plan.fetch.encode(self.model.params()),
        };
        self.bytes = Some((version, b.clone()));
        b
    }
}
