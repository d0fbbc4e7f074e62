//! What the driver does with each message an executor sends: one function
//! per message, each taking the lock only for its own bookkeeping.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use deepdist_wire::proto::{FromExecutor, ProtoError, Push, TaskId, TaskReport};

use crate::error::JobError;
use crate::outbox::Outbox;
use crate::scheduler::{Failure, MAX_TASK_FAILURES};
use crate::state::Shared;

/// Fetches one executor may have waiting on the server at once.
const MAX_FETCHES_WAITING: u32 = 16;

/// Handles one message from executor `id`, whose outbox is `tx`.
pub async fn handle(shared: &Arc<Shared>, id: u64, tx: &Outbox, msg: FromExecutor) -> Result<(), ProtoError> {
    if let Some(entry) = shared.lock().executors.get_mut(&id) {
        let now = Instant::now();
        entry.last_message = now;
        if !matches!(msg, FromExecutor::Heartbeat) {
            entry.last_heard = now;
        }
    }
    match msg {
        FromExecutor::Heartbeat => {}
        FromExecutor::NeedPartition { hash } => need_partition(shared, id, tx, hash),
        FromExecutor::Fetch {
            job,
            stage,
            wait_for,
            newer_than,
        } => fetch(shared, id, tx, (job, stage), wait_for, newer_than)?,
        FromExecutor::Push(p) => push(shared, id, p).await,
        FromExecutor::TaskDone(report) => task_done(shared, id, report),
        FromExecutor::TaskFailed { task, reason, diverged } => task_failed(shared, id, task, reason, diverged),
    }
    Ok(())
}

/// Sends the partition with content `hash`, and remembers the executor has it.
fn need_partition(shared: &Shared, id: u64, tx: &Outbox, hash: u128) {
    let mut state = shared.lock();
    let frame = state
        .run
        .as_ref()
        .and_then(|run| run.partition_frames.iter().find(|(h, _)| *h == hash))
        .map(|(_, f)| f.clone());
    if let (Some(frame), Some(entry)) = (frame, state.executors.get_mut(&id)) {
        entry.cached.insert(hash);
        tx.offer(frame);
    }
}

/// Answers with the parameters once the mode's rule lets the fetch through.
fn fetch(
    shared: &Arc<Shared>,
    id: u64,
    tx: &Outbox,
    (job, stage): (u64, u32),
    wait_for: u64,
    newer_than: Option<u64>,
) -> Result<(), ProtoError> {
    let mut state = shared.lock();
    let run = state.run.as_ref().filter(|r| r.job == job && r.stage_index == stage);
    let ps = run.map(|r| r.ps.clone());
    let (Some(ps), Some(entry)) = (ps, state.executors.get_mut(&id)) else {
        return Ok(());
    };
    // An executor waits on one fetch, two across a stage boundary: more is a
    // broken or hostile peer growing the waiting list.
    if entry.fetches_waiting >= MAX_FETCHES_WAITING {
        return Err(ProtoError::Overrun {
            what: "parameter fetches",
            limit: MAX_FETCHES_WAITING,
        });
    }
    entry.fetches_waiting += 1;
    drop(state);
    let (tx, shared) = (tx.clone(), shared.clone());
    let asked = Instant::now();
    tokio::spawn(async move {
        let frame = ps.fetch(id, wait_for, newer_than).await;
        shared.timings.fetch.observe(asked.elapsed().as_secs_f64());
        if let Some(entry) = shared.lock().executors.get_mut(&id) {
            entry.fetches_waiting = entry.fetches_waiting.saturating_sub(1);
            entry.last_heard = Instant::now();
        }
        if let Some(frame) = frame {
            tx.offer(frame);
        }
    });
    Ok(())
}

/// Hands an update to the parameter server, unless its sender no longer
/// holds the task (late) or it was applied already (repeated).
async fn push(shared: &Shared, id: u64, push: Push) {
    let ps = {
        // Counted under the lock, as status reads the counters under it:
        // received is always accepted + repeated + late.
        let mut state = shared.lock();
        shared.updates_received.fetch_add(1, Relaxed);
        let Some(run) = state.run.as_mut() else {
            // No job to apply it to: it is late.
            shared.late_updates.fetch_add(1, Relaxed);
            return;
        };
        if !run.scheduler.is_current(&push.task, id) {
            shared.late_updates.fetch_add(1, Relaxed);
            tracing::debug!(id, task = ?push.task, seq = push.seq, "late update discarded");
            return;
        }
        let log = run.pushes.entry(push.task).or_default();
        if log.accepted > 0 && push.seq <= log.last_seq {
            shared.duplicate_updates.fetch_add(1, Relaxed);
            tracing::debug!(id, task = ?push.task, seq = push.seq, "repeated update discarded");
            return;
        }
        log.last_seq = push.seq;
        log.last_base = push.base_version;
        log.accepted += 1;
        shared.updates_accepted.fetch_add(1, Relaxed);
        run.ps.clone()
    };
    // Waits (and stops reading this executor) while the server's queue is full.
    let arrived = Instant::now();
    ps.push(
        id,
        push.base_version,
        push.task.epoch,
        push.samples,
        (push.compression, push.values),
    )
    .await;
    shared.timings.push.observe(arrived.elapsed().as_secs_f64());
}

/// Records a finished task: its epoch's tally, progress for watchers, and
/// the executor free for the next.
fn task_done(shared: &Shared, id: u64, report: TaskReport) {
    let mut state = shared.lock();
    let done = match state.run.as_mut() {
        Some(run) if run.scheduler.is_current(&report.task, id) => {
            run.scheduler.complete(&report.task, id);
            let total = run.partition_frames.len() as u32;
            let stage = run.stage.clone();
            let acc = run.epochs.entry(report.task.epoch).or_default();
            acc.tasks += 1;
            shared.emit(
                report.task.job,
                deepdist_wire::proto::ToClient::Progress(deepdist_wire::proto::Progress::Task {
                    stage,
                    epoch: report.task.epoch,
                    done: acc.tasks,
                    total,
                }),
            );
            acc.samples += report.samples;
            acc.batches += report.batches;
            acc.loss_sum += report.loss_sum;
            let log = run.pushes.remove(&report.task).unwrap_or_default();
            if log.accepted > 0 {
                let end = run.epoch_ends.entry(report.task.epoch).or_default();
                *end = (*end).max(log.last_base + 1);
            }
            if log.accepted != report.pushes {
                shared.push_mismatches.fetch_add(1, Relaxed);
                tracing::warn!(id, task = ?report.task, sent = report.pushes, accepted = log.accepted, "a task's updates do not add up");
            }
            true
        }
        _ => false,
    };
    if let Some(entry) = state.executors.get_mut(&id)
        && entry.task == Some(report.task)
    {
        entry.task = None;
        entry.tasks_done += u64::from(done);
        entry.samples += report.samples;
        entry.compute_s += report.compute_s;
    }
    drop(state);
    shared.wake.notify_one();
}

/// Puts a failed task back, or fails the job when the failure would follow
/// the task anywhere (divergence) or it has failed too often.
fn task_failed(shared: &Shared, id: u64, task: TaskId, reason: String, diverged: bool) {
    tracing::warn!(id, ?task, %reason, diverged, "task failed on executor");
    let mut state = shared.lock();
    if let Some(run) = state.run.as_mut() {
        if diverged && run.scheduler.is_current(&task, id) {
            run.fatal.get_or_insert(JobError::Diverged(reason.clone()));
        }
        if run.scheduler.fail(&task, id) == Failure::GaveUp {
            run.fatal.get_or_insert(JobError::TaskFailed {
                partition: task.partition,
                epoch: task.epoch,
                failures: MAX_TASK_FAILURES,
                reason,
            });
        }
    }
    if let Some(entry) = state.executors.get_mut(&id)
        && entry.task == Some(task)
    {
        entry.task = None;
    }
    drop(state);
    shared.wake.notify_one();
}
