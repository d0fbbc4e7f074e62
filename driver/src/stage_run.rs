//! One stage's training: its parameter server, and the loop that hands
//! partitions to executors, sends each completed epoch to the evaluator and
//! queues checkpoints, until the stage's epochs are done or the job is
//! cancelled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deepdist_core::data::Dataset;
use deepdist_core::job::{JobSpec, JobState, Stage};
use deepdist_core::mode::ServerModel;
use deepdist_core::model::SharedNetwork;
use deepdist_core::shards;
use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::JobCheckpoint;
use crate::dispatch;
use crate::error::JobError;
use crate::evaluator::{EvalItem, Work};
use crate::ps::{ParamServer, Resumed, ServerPlan, ShardPart, Snapshot, Traffic};
use crate::scheduler::Scheduler;
use crate::state::{RunState, Shared};

/// The loop re-checks its stage this often even without a wake-up.
const TICK: Duration = Duration::from_millis(500);

/// Everything a stage needs from its job.
pub struct StageRun<'a> {
    /// The job.
    pub id: u64,
    /// The stage's index in the job.
    pub index: u32,
    /// The stage.
    pub stage: &'a Stage,
    /// The job's definition.
    pub spec: &'a JobSpec,
    /// The model the stage trains.
    pub model: &'a SharedNetwork,
    /// What each epoch is scored on.
    pub test: Arc<Dataset>,
    /// The encoded trained layers below the stage, if any.
    pub frozen: Option<Bytes>,
    /// The partitions' encoded frames, by content hash.
    pub frames: Arc<Vec<(u128, Bytes)>>,
    /// The job's output directory.
    pub dir: &'a std::path::Path,
    /// The trained layers of the stages before.
    pub layers: &'a [Vec<f32>],
    /// When the job started.
    pub started: Instant,
    /// When its training started (after data loading).
    pub training_started: Instant,
    /// Set by the evaluator once the target accuracy is reached.
    pub target_hit: &'a AtomicBool,
    /// Where completed epochs and checkpoints go.
    pub eval_tx: &'a mpsc::Sender<Work>,
}

/// Trains one stage to its end (or a cancel), from `resume` if given;
/// returns how it ended and its parameters.
pub async fn run_stage(
    shared: &Arc<Shared>,
    ctx: StageRun<'_>,
    params: Vec<f32>,
    resume: Option<Box<JobCheckpoint>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(JobState, Vec<f32>), JobError> {
    let (ps, resumed) = start_server(shared, &ctx, params, resume)?;
    tracing::info!(id = ctx.id, stage = %ctx.stage.name, epochs = ctx.stage.epochs, "stage started");
    let mut marks = Marks {
        epoch_end: Instant::now(),
        staleness: (resumed.version, resumed.staleness_sum),
        traffic: Traffic::default(),
        checkpoint: Instant::now(),
    };
    // Snapshots are asked for in the pass that completes an epoch but may
    // come later (a mode that deals work takes an epoch's at the version
    // after its last update): the loop goes on handing out tasks meanwhile.
    let mut queued: VecDeque<Queued> = VecDeque::new();
    let end_state = loop {
        if *stop.borrow() {
            return Err(JobError::ShuttingDown);
        }
        let pass = pass(shared, &ctx, &marks)?;
        // Asked for before the new tasks go out, so none of their updates
        // can be in an epoch's snapshot.
        for epoch in pass.completed {
            let answer = ps.snapshot_when(false, epoch.at);
            queued.push_back(Queued::new(Asked::Epoch(epoch), answer));
        }
        for (outbox, frame) in pass.sends {
            outbox.offer(frame);
        }
        if let Some(progress) = pass.progress {
            queued.push_back(Queued::new(Asked::Checkpoint(progress), ps.snapshot_when(true, 0)));
            marks.checkpoint = Instant::now();
        }
        forward_answered(shared, &ctx, &mut queued, &mut marks).await?;
        if pass.cancelled {
            break JobState::Cancelled;
        }
        // The evaluator stopped on an error: no more metrics or checkpoints
        // would be written, so training ends here and the error is reported.
        if ctx.eval_tx.is_closed() {
            break JobState::Failed;
        }
        if pass.finished {
            break JobState::Done;
        }
        let answered = async {
            match queued.front_mut() {
                Some(q) => (&mut q.answer).await.ok(),
                None => std::future::pending().await,
            }
        };
        let arrived = tokio::select! {
            _ = shared.wake.notified() => None,
            _ = tokio::time::sleep(TICK) => None,
            _ = stop.changed() => None,
            snapshot = answered => Some(snapshot.ok_or(JobError::ServerStopped)?),
        };
        if let (Some(snapshot), Some(front)) = (arrived, queued.front_mut()) {
            front.arrived = Some(snapshot);
        }
    };
    // The stage's end answers every snapshot still waiting.
    let snapshot = ps.finish().await.ok_or(JobError::ServerStopped)?;
    for q in queued {
        let snapshot = match q.arrived {
            Some(snapshot) => snapshot,
            None => q.answer.await.map_err(|_| JobError::ServerStopped)?,
        };
        forward(shared, &ctx, q.what, snapshot, &mut marks).await;
    }
    Ok((
        end_state,
        Arc::try_unwrap(snapshot.params).unwrap_or_else(|p| (*p).clone()),
    ))
}

/// Sends the evaluator what the parameter server has answered, in order,
/// stopping at the first still waiting.
async fn forward_answered(
    shared: &Arc<Shared>,
    ctx: &StageRun<'_>,
    queued: &mut VecDeque<Queued>,
    marks: &mut Marks,
) -> Result<(), JobError> {
    while let Some(front) = queued.front_mut() {
        let snapshot = match front.arrived.take().map(Ok).unwrap_or_else(|| front.answer.try_recv()) {
            Ok(snapshot) => snapshot,
            Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
            Err(oneshot::error::TryRecvError::Closed) => return Err(JobError::ServerStopped),
        };
        if let Some(q) = queued.pop_front() {
            forward(shared, ctx, q.what, snapshot, marks).await;
        }
    }
    Ok(())
}

/// Sends the evaluator an epoch or a checkpoint with its snapshot.
async fn forward(shared: &Arc<Shared>, ctx: &StageRun<'_>, what: Asked, snapshot: Snapshot, marks: &mut Marks) {
    match what {
        Asked::Epoch(epoch) => send_epoch(ctx, snapshot, epoch, marks).await,
        Asked::Checkpoint(progress) => queue_checkpoint(shared, ctx, snapshot, progress).await,
    }
}

/// When the loop last closed an epoch and a checkpoint, and the server's
/// staleness count then.
struct Marks {
    epoch_end: Instant,
    staleness: (u64, u64),
    traffic: Traffic,
    checkpoint: Instant,
}

/// An epoch all of whose partitions are done.
struct Completed {
    epoch: u32,
    /// Its tasks reassigned.
    reassigned: u32,
    /// Its training figures.
    stats: crate::tally::EpochAccum,
    /// Executors at its end.
    executors: u32,
    /// The version its snapshot waits for (0: now).
    at: u64,
}

/// A checkpoint's progress: epochs done, and the open epochs' partitions
/// with what they have accumulated.
type Progress = (u32, Vec<(crate::scheduler::EpochProgress, crate::tally::EpochAccum)>);

/// What goes to the evaluator once the parameter server answers, in the
/// order it was asked for.
struct Queued {
    what: Asked,
    answer: oneshot::Receiver<Snapshot>,
    /// The answer, once the loop has waited for it.
    arrived: Option<Snapshot>,
}

/// What a snapshot was asked for.
enum Asked {
    Epoch(Completed),
    Checkpoint(Progress),
}

impl Queued {
    fn new(what: Asked, answer: oneshot::Receiver<Snapshot>) -> Self {
        Self {
            what,
            answer,
            arrived: None,
        }
    }
}

/// What one pass over the stage's state decided, to act on unlocked.
struct Pass {
    sends: Vec<(crate::outbox::Outbox, Bytes)>,
    completed: Vec<Completed>,
    finished: bool,
    cancelled: bool,
    progress: Option<Progress>,
}

/// Starts the stage's parameter server, from the checkpoint if resuming,
/// and makes the stage the driver's current run.
fn start_server(
    shared: &Arc<Shared>,
    ctx: &StageRun<'_>,
    params: Vec<f32>,
    resume: Option<Box<JobCheckpoint>>,
) -> Result<(ParamServer, Resumed), JobError> {
    let (id, spec, stage) = (ctx.id, ctx.spec, ctx.stage);
    let mode = spec.train.mode;
    let partitions = ctx.frames.len() as u32;
    let (params, optimizer, scheduler, resumed, accums) = match resume.map(|c| *c) {
        Some(c) => {
            if c.params.len() != params.len() {
                return Err(JobError::CheckpointMismatch(format!(
                    "the checkpoint holds {} parameters for a stage of {}",
                    c.params.len(),
                    params.len()
                )));
            }
            let (progress, accums): (Vec<_>, Vec<_>) = c.open.into_iter().unzip();
            let scheduler = Scheduler::resume(id, ctx.index, partitions, stage.epochs, c.epochs_done, &progress);
            let accums = progress.iter().map(|p| p.epoch).zip(accums).collect();
            let resumed = Resumed {
                version: c.version,
                staleness_sum: c.staleness_sum,
            };
            (c.params, Some(c.optimizer), scheduler, resumed, accums)
        }
        None => (
            params,
            None,
            Scheduler::new(id, ctx.index, partitions, stage.epochs),
            Resumed::default(),
            Default::default(),
        ),
    };
    let plan = ServerPlan {
        job: id,
        stage_index: ctx.index,
        delay: spec.train.inject_delay.unwrap_or(0),
        staleness: shared.staleness.clone(),
        mirrors_local: mode.server_mirrors_local(&stage.optimizer, spec.train.exact_transfer()),
        fetch: spec.train.fetch_compression,
    };
    let layout = ctx.model.layout();
    let ranges = match layout.len() == params.len() {
        true => shards::even(layout, shared.config.server_shards),
        false => std::iter::once(0..params.len()).collect(),
    };
    let states = match optimizer {
        Some(state) => state.split(&ranges)?.into_iter().map(Some).collect(),
        None => vec![None; ranges.len()],
    };
    let mut parts = Vec::with_capacity(ranges.len());
    for (range, state) in ranges.into_iter().zip(states) {
        let mut optimizer = mode
            .server_optimizer(&stage.optimizer, spec.train.compression)
            .build(range.len())?;
        if let Some(state) = state {
            optimizer.restore(state)?;
        }
        let values = params[range.clone()].to_vec();
        let mut model =
            ServerModel::new(values, optimizer, resumed.version, resumed.staleness_sum).with_batch(stage.batch_size);
        // Versions a delayed update may have been computed at: the injected
        // delay plus the natural staleness of a large cluster.
        model.keep_versions(plan.delay as usize + 256);
        let rule = mode.server_rule(&spec.train.mode_keys());
        parts.push(ShardPart { range, model, rule });
    }
    let ps = ParamServer::start(plan, parts);
    shared.lock().run = Some(RunState {
        job: id,
        stage: stage.name.clone(),
        stage_index: ctx.index,
        scheduler,
        partition_frames: ctx.frames.clone(),
        frozen: ctx.frozen.clone(),
        frozen_sent: Default::default(),
        ps: ps.clone(),
        epochs: accums,
        pushes: Default::default(),
        epoch_ends: Default::default(),
        fatal: None,
    });
    Ok((ps, resumed))
}

/// One pass under the lock: leases expired, idle executors given tasks (or
/// every task cancelled), completed epochs collected, and the progress a
/// checkpoint would save when one is due.
fn pass(shared: &Arc<Shared>, ctx: &StageRun<'_>, marks: &Marks) -> Result<Pass, JobError> {
    let id = ctx.id;
    let mut state = shared.lock();
    let cancelled = state.jobs.iter().any(|j| j.id == id && j.cancel_requested);
    let executors = state.executors.len() as u32;
    let crate::state::State {
        executors: execs, run, ..
    } = &mut *state;
    let Some(run) = run.as_mut() else {
        return Err(JobError::ServerStopped);
    };
    if let Some(error) = run.fatal.take() {
        let sends = dispatch::cancel_all(execs, id);
        drop(state);
        for (outbox, frame) in sends {
            outbox.offer(frame);
        }
        return Err(error);
    }
    let supervised = ctx.stage.supervised;
    if supervised && ctx.target_hit.load(Ordering::Relaxed) && ctx.spec.train.stop_at_target {
        run.scheduler.stop_after_open_epochs();
    }
    let expired = dispatch::expire_leases(execs, run, shared.config.task_lease);
    shared.leases_expired.fetch_add(expired, Ordering::Relaxed);
    let sends = if cancelled {
        dispatch::cancel_all(execs, id)
    } else {
        dispatch::assign_idle(execs, run, ctx.spec)
    };
    run.ps.set_members(run.scheduler.busy_executors());
    let mut completed = Vec::new();
    while let Some((epoch, reassigned)) = run.scheduler.pop_completed() {
        let end = run.epoch_ends.remove(&epoch).unwrap_or(0);
        completed.push(Completed {
            epoch,
            reassigned,
            stats: run.epochs.remove(&epoch).unwrap_or_default(),
            executors,
            at: if ctx.spec.train.mode.deals_work() { end } else { 0 },
        });
    }
    // Progress is read before the parameters are, so every partition
    // it counts as done has its updates in them.
    let checkpoint_due = shared.config.checkpoint_dir.is_some()
        && !cancelled
        && (!completed.is_empty() || marks.checkpoint.elapsed() >= shared.config.checkpoint_interval);
    let progress = checkpoint_due.then(|| {
        let (done, open) = run.scheduler.progress();
        let open: Vec<_> = open
            .into_iter()
            .map(|p| {
                let accum = run.epochs.get(&p.epoch).copied().unwrap_or_default();
                (p, accum)
            })
            .collect();
        (done, open)
    });
    Ok(Pass {
        sends,
        completed,
        finished: run.scheduler.finished(),
        cancelled,
        progress,
    })
}

/// Sends a completed epoch, with its snapshot of the parameters, to the evaluator.
async fn send_epoch(ctx: &StageRun<'_>, snapshot: Snapshot, epoch: Completed, marks: &mut Marks) {
    let Completed {
        epoch,
        reassigned,
        stats,
        executors,
        ..
    } = epoch;
    let now = Instant::now();
    let (updates, staleness) = (
        snapshot.version - marks.staleness.0,
        snapshot.staleness_sum - marks.staleness.1,
    );
    marks.staleness = (snapshot.version, snapshot.staleness_sum);
    let traffic = snapshot.traffic.since(marks.traffic);
    marks.traffic = snapshot.traffic;
    let _ = ctx
        .eval_tx
        .send(Work::Epoch(Box::new(EvalItem {
            stage: ctx.stage.name.clone(),
            supervised: ctx.stage.supervised,
            model: ctx.model.clone(),
            test: ctx.test.clone(),
            epoch,
            mean_staleness: staleness as f64 / updates.max(1) as f64,
            snapshot,
            elapsed_s: ctx.started.elapsed().as_secs_f64(),
            train_s: ctx.training_started.elapsed().as_secs_f64(),
            epoch_s: now.duration_since(marks.epoch_end).as_secs_f64(),
            stats,
            reassigned,
            executors,
            partitions: ctx.frames.len() as u32,
            traffic,
        })))
        .await;
    marks.epoch_end = now;
}

/// Queues a checkpoint of the job at `progress` for the evaluator to write.
async fn queue_checkpoint(shared: &Arc<Shared>, ctx: &StageRun<'_>, snapshot: Snapshot, (epochs_done, open): Progress) {
    let checkpoint = JobCheckpoint {
        job: ctx.id,
        spec: ctx.spec.to_toml(),
        output_dir: ctx.dir.to_path_buf(),
        partitions: ctx.frames.iter().map(|(h, _)| *h).collect(),
        next_executor: shared.next_executor.load(Ordering::Relaxed),
        elapsed_s: ctx.started.elapsed().as_secs_f64(),
        train_s: ctx.training_started.elapsed().as_secs_f64(),
        layers: ctx.layers.to_vec(),
        stage: ctx.index,
        epochs_done,
        open,
        version: snapshot.version,
        staleness_sum: snapshot.staleness_sum,
        params: Arc::try_unwrap(snapshot.params).unwrap_or_else(|p| (*p).clone()),
        optimizer: snapshot.optimizer.unwrap_or_default(),
        evaluated: Default::default(),
    };
    let _ = ctx.eval_tx.send(Work::Checkpoint(Box::new(checkpoint))).await;
}
