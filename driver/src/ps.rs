//! The parameter server: owns the master model and runs the job's mode's
//! server rule ([`ServerRule`]) on every update, on threads of its own so
//! the network tasks never wait on arithmetic.
//!
//! The parameters are cut into shards ([`deepdist_core::shards::even`]), one
//! thread each ([`shard`]) with its own optimizer state and its own copy of
//! the rule. This handle slices each push between the shards, gathers a
//! fetch's answer from all of them, and joins their snapshots. It knows no
//! mode itself: the shards decode updates, move the optimizer's schedule to
//! each update's epoch, delay updates for experiments
//! (`train.inject_delay`), answer fetches once the rule says they are ready,
//! and take snapshots. Encoded `Params` frames are cached per version, so
//! executors fetching the same version share one encoding.

mod shard;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Instant;

use bytes::Bytes;
use deepdist_core::compress::{Compression, Sparse};
use deepdist_core::mode::{RuleStats, ServerModel, ServerRule};
use deepdist_core::optim::OptimizerState;
use deepdist_wire::proto::{self, ShardInfo, Tensor, ToExecutor};
use tokio::sync::{Semaphore, oneshot};

use shard::{Command, Counters, Incoming, Piece, Shard, ShardSnapshot, Waiting};

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
    /// Bytes received and sent by every shard so far.
    pub traffic: Traffic,
}

/// Bytes of updates received and of parameters sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Update bytes received.
    pub pushed: u64,
    /// Parameter bytes sent.
    pub fetched: u64,
}

impl Traffic {
    /// What moved since `earlier`.
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            pushed: self.pushed.saturating_sub(earlier.pushed),
            fetched: self.fetched.saturating_sub(earlier.fetched),
        }
    }
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
    /// How parameters travel to executors (`train.fetch_compression`).
    pub fetch: Compression,
}

/// One shard to start: its range of the parameters, the model holding
/// those values (with an optimizer built for them) and its copy of the rule.
pub struct ShardPart {
    /// The shard's values within the whole parameter vector.
    pub range: Range<usize>,
    /// The master values of that range and their optimizer.
    pub model: ServerModel,
    /// The mode's server rule, one instance per shard.
    pub rule: Box<dyn ServerRule>,
}

/// A handle to a running parameter server; dropping every handle stops it.
#[derive(Clone)]
pub struct ParamServer {
    inner: Arc<Inner>,
}

struct Inner {
    job: u64,
    stage_index: u32,
    /// How parameters travel to executors.
    fetch: Compression,
    /// The shards' ranges, in order, covering the parameters.
    ranges: Vec<Range<usize>>,
    /// Every shard's commands. Sent under this lock, so every shard sees
    /// every push, fetch and membership change in the same order and their
    /// rules move in step.
    txs: Mutex<Vec<mpsc::Sender<Command>>>,
    /// Room in each shard's push queue, in KiB.
    rooms: Vec<Arc<Semaphore>>,
    /// The last `Params` frame assembled, by its shards' versions.
    frame: Mutex<Option<(Vec<u64>, Bytes)>>,
    /// What each shard has done.
    counters: Vec<Arc<Counters>>,
    /// The shards' update counts when the status was last read, and the
    /// rates then measured.
    rates: Mutex<(Instant, Vec<u64>, Vec<f64>)>,
}

/// Bytes of updates that may wait for the server threads at once. A push
/// beyond it waits, and with it the reading of its executor's connection:
/// executors that push faster than the server applies are slowed down
/// instead of growing the driver's memory.
pub const PUSH_QUEUE_BYTES: usize = 256 << 20;

/// Each shard's part of a pushed update encoded as `compression` says;
/// `None` when the update does not cover the parameters.
fn slices(ranges: &[Range<usize>], compression: Compression, values: Tensor) -> Option<Vec<Tensor>> {
    let len = ranges.last().map_or(0, |r| r.end);
    match compression.bytes_per_value() {
        Some(width) => (values.0.len() == len * width).then(|| {
            ranges
                .iter()
                .map(|r| Tensor(values.0.slice(r.start * width..r.end * width)))
                .collect()
        }),
        // One shard checks the indices as it decodes; several need them
        // read here to cut the vector at the shards' boundaries.
        None if ranges.len() == 1 => Some(vec![values]),
        None => {
            let sparse = Sparse::decode(&values.0).ok().filter(|s| s.len == len)?;
            Some(sparse.split(ranges).iter().map(|p| Tensor(p.encode())).collect())
        }
    }
}

/// KiB of push queue room an update of `bytes` takes in a queue of
/// `capacity` KiB (never more than all of it).
fn room_for(bytes: usize, capacity: usize) -> u32 {
    bytes.div_ceil(1024).clamp(1, capacity.max(1)) as u32
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ParamServer {
    /// Starts a server for a stage with one thread per shard, applying
    /// updates by each shard's rule.
    pub fn start(plan: ServerPlan, shards: Vec<ShardPart>) -> Self {
        let count = shards.len();
        let room = PUSH_QUEUE_BYTES / 1024 / count.max(1);
        let (mut txs, mut rooms, mut ranges, mut counters) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, part) in shards.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let name = format!("deepdist-ps-{}-{i}", plan.job);
            let counted = Arc::new(Counters::default());
            counters.push(counted.clone());
            let shard = Shard::new(plan.clone(), part.model, part.rule, (i, count), counted);
            let spawned = std::thread::Builder::new().name(name).spawn(move || shard.run(rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a parameter server thread");
            }
            txs.push(tx);
            rooms.push(Arc::new(Semaphore::new(room)));
            ranges.push(part.range);
        }
        Self {
            inner: Arc::new(Inner {
                job: plan.job,
                stage_index: plan.stage_index,
                fetch: plan.fetch,
                ranges,
                txs: Mutex::new(txs),
                rooms,
                frame: Mutex::new(None),
                rates: Mutex::new((Instant::now(), vec![0; counters.len()], vec![0.0; counters.len()])),
                counters,
            }),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.ranges.len()
    }

    /// What each shard has done, with its update rate since the last call
    /// (a call within half a second of the last repeats its rates).
    pub fn shard_info(&self) -> Vec<ShardInfo> {
        let inner = &self.inner;
        let updates: Vec<u64> = inner.counters.iter().map(|c| c.updates.load(Relaxed)).collect();
        let rates = {
            let mut last = lock(&inner.rates);
            let elapsed = last.0.elapsed().as_secs_f64();
            if elapsed >= 0.5 {
                let measured = updates
                    .iter()
                    .zip(&last.1)
                    .map(|(u, b)| (u - b) as f64 / elapsed)
                    .collect();
                *last = (Instant::now(), updates.clone(), measured);
            }
            last.2.clone()
        };
        let capacity = PUSH_QUEUE_BYTES / 1024 / self.shards().max(1);
        (0..self.shards())
            .map(|i| ShardInfo {
                values: inner.ranges[i].len() as u64,
                updates: updates[i],
                updates_per_s: rates[i],
                queued_bytes: (capacity.saturating_sub(inner.rooms[i].available_permits()) as u64) << 10,
                bytes_pushed: inner.counters[i].bytes_pushed.load(Relaxed),
                bytes_fetched: inner.counters[i].bytes_fetched.load(Relaxed),
            })
            .collect()
    }

    /// Sends shard `i` the `i`-th command, in one order for all shards.
    fn send_each(&self, commands: impl IntoIterator<Item = Command>) {
        let txs = lock(&self.inner.txs);
        for (tx, command) in txs.iter().zip(commands) {
            let _ = tx.send(command);
        }
    }

    /// Sends every shard the command `make` builds.
    fn send_all(&self, make: impl FnMut(usize) -> Command) {
        self.send_each((0..self.shards()).map(make));
    }

    /// Queues an update from `executor` computed from `base_version` in
    /// `epoch`, covering `samples` examples, its values encoded as the
    /// compression says; waits while a queue is full.
    pub async fn push(
        &self,
        executor: u64,
        base_version: u64,
        epoch: u32,
        samples: u32,
        (compression, values): (Compression, Tensor),
    ) {
        let inner = &self.inner;
        let slices = slices(&inner.ranges, compression, values);
        if slices.is_none() {
            tracing::warn!(executor, "update that does not cover the parameters discarded");
        }
        let capacity = PUSH_QUEUE_BYTES / 1024 / self.shards().max(1);
        let mut commands = Vec::with_capacity(self.shards());
        for (i, room) in inner.rooms.iter().enumerate() {
            // A wrong length reaches every shard as an empty slice, which
            // each refuses and counts.
            let values = slices.as_ref().and_then(|s| s.get(i)).cloned().unwrap_or_default();
            let need = room_for(values.0.len(), capacity);
            let Ok(permit) = room.clone().acquire_many_owned(need).await else {
                return;
            };
            let incoming = Incoming {
                executor,
                base_version,
                epoch,
                samples,
                compression,
                values,
            };
            commands.push(Command::Push(incoming, permit));
        }
        self.send_each(commands);
    }

    /// The encoded `Params` frame (or `Unchanged`, if the parameters are
    /// still at version `newer_than`), once the mode's rule lets
    /// `executor`'s fetch waiting for `wait_for` be answered.
    pub async fn fetch(&self, executor: u64, wait_for: u64, newer_than: Option<u64>) -> Option<Bytes> {
        let mut answers = Vec::with_capacity(self.shards());
        self.send_all(|_| {
            let (reply, rx) = oneshot::channel();
            answers.push(rx);
            Command::Fetch(Waiting {
                executor,
                wait_for,
                newer_than,
                reply,
            })
        });
        let mut pieces = Vec::with_capacity(answers.len());
        for rx in answers {
            pieces.push(rx.await.ok()?);
        }
        if pieces.iter().all(|p| p.values.is_none()) {
            let version = pieces.iter().map(|p| p.version).min()?;
            return self.unchanged_frame(version);
        }
        // Some shards found the fetcher holding their values, others not:
        // the frame needs every shard's, whatever version each is at now.
        for (i, piece) in pieces.iter_mut().enumerate() {
            if piece.values.is_none() {
                *piece = self.current(i).await?;
            }
        }
        match &pieces[..] {
            [only] => only.values.clone().filter(|f| !f.is_empty()),
            _ => self.params_frame(&pieces),
        }
    }

    /// Shard `i`'s values now.
    async fn current(&self, i: usize) -> Option<Piece> {
        let (reply, rx) = oneshot::channel();
        let sent = lock(&self.inner.txs).get(i).map(|tx| tx.send(Command::Current(reply)));
        sent?.ok()?;
        rx.await.ok()
    }

    /// The `Params` frame of the shards' pieces, at the oldest of their
    /// versions; assembled once per set of versions.
    fn params_frame(&self, pieces: &[Piece]) -> Option<Bytes> {
        let versions: Vec<u64> = pieces.iter().map(|p| p.version).collect();
        if let Some((v, f)) = &*lock(&self.inner.frame)
            && *v == versions
        {
            return Some(f.clone());
        }
        let msg = ToExecutor::Params {
            job: self.inner.job,
            stage: self.inner.stage_index,
            version: versions.iter().copied().min()?,
            compression: self.inner.fetch,
            values: Tensor::default(),
        };
        let parts: Vec<&[u8]> = pieces.iter().map(|p| p.values.as_deref().unwrap_or_default()).collect();
        match proto::encode_with_bulk_parts(&msg, &parts) {
            Ok(f) => {
                *lock(&self.inner.frame) = Some((versions, f.clone()));
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
            job: self.inner.job,
            stage: self.inner.stage_index,
            version,
        };
        proto::encode(&msg)
            .inspect_err(|e| tracing::error!(error = %e, "cannot encode an unchanged answer"))
            .ok()
    }

    /// The current parameters (their moving average, if kept).
    pub async fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot_when(false, 0).await.ok()
    }

    /// Applies every delayed update, then takes a snapshot: the stage's end.
    pub async fn finish(&self) -> Option<Snapshot> {
        self.send_all(|_| Command::Flush);
        self.snapshot().await
    }

    /// A snapshot (with the optimizer's state, for a checkpoint) taken as
    /// soon as the version reaches `at` — or when the stage ends, if it never
    /// does. The answer comes through the receiver, so the caller need not
    /// wait for it.
    pub fn snapshot_when(&self, with_optimizer: bool, at: u64) -> oneshot::Receiver<Snapshot> {
        let (reply, rx) = oneshot::channel();
        let gather = Arc::new(Gather {
            parts: Mutex::new((0..self.shards()).map(|_| None).collect()),
            reply: Mutex::new(Some(reply)),
        });
        self.send_all(|index| Command::Snapshot {
            with_optimizer,
            at,
            reply: PartReply {
                gather: gather.clone(),
                index,
            },
        });
        rx
    }

    /// The executors holding a task of the stage.
    pub fn set_members(&self, members: HashSet<u64>) {
        self.send_all(|_| Command::Members(members.clone()));
    }
}

/// The shards' parts of one snapshot, joined and sent once the last arrives.
struct Gather {
    parts: Mutex<Vec<Option<ShardSnapshot>>>,
    reply: Mutex<Option<oneshot::Sender<Snapshot>>>,
}

/// Where one shard sends its part of a snapshot.
struct PartReply {
    gather: Arc<Gather>,
    index: usize,
}

impl PartReply {
    /// Hands over the shard's part; the last part sends the whole snapshot.
    fn send(self, part: ShardSnapshot) {
        let parts = {
            let mut parts = lock(&self.gather.parts);
            if let Some(slot) = parts.get_mut(self.index) {
                *slot = Some(part);
            }
            if parts.iter().any(Option::is_none) {
                return;
            }
            std::mem::take(&mut *parts)
        };
        let Some(reply) = lock(&self.gather.reply).take() else {
            return;
        };
        match join(parts.into_iter().flatten().collect()) {
            Ok(snapshot) => {
                let _ = reply.send(snapshot);
            }
            Err(e) => tracing::error!(error = %e, "cannot join the shards' optimizer states"),
        }
    }
}

/// One snapshot of the shards' parts, in order: the parameters end to end,
/// the oldest version, the first shard's counts (every shard counts every
/// update) but the most refusals.
fn join(parts: Vec<ShardSnapshot>) -> Result<Snapshot, deepdist_core::optim::OptimError> {
    let rejected = parts.iter().map(|p| p.rejected).max().unwrap_or(0);
    let version = parts.iter().map(|p| p.version).min().unwrap_or(0);
    let mut params = Vec::with_capacity(parts.iter().map(|p| p.params.len()).sum());
    let mut optimizers = Vec::new();
    let mut first = None;
    let mut traffic = Traffic::default();
    for part in parts {
        traffic.pushed += part.traffic.pushed;
        traffic.fetched += part.traffic.fetched;
        params.extend_from_slice(&part.params);
        optimizers.extend(part.optimizer);
        first.get_or_insert((part.staleness_sum, part.rule));
    }
    let (staleness_sum, rule) = first.unwrap_or_default();
    let optimizer = match optimizers.is_empty() {
        true => None,
        false => Some(OptimizerState::join(optimizers)?),
    };
    Ok(Snapshot {
        version,
        params: Arc::new(params),
        staleness_sum,
        rejected,
        optimizer,
        rule,
        traffic,
    })
}

#[cfg(test)]
mod tests;
