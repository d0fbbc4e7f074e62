//! Accepting connections, the handshake, and one task per connection.
//!
//! A bad frame (too large, truncated, undecodable, or of a kind the role
//! may not send) closes that connection with a logged reason; the driver
//! keeps serving everyone else.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use deepdist_common::job::{JobSpec, ModelLimit};
use deepdist_common::proto::{self, Message, MessageReader, MessageWriter, ProtoError, Role};
use deepdist_common::transport::{self, BoxRead, BoxWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::admission::{Admission, HandshakeSlot};
use crate::error::JobError;
use crate::journal::{Entry, JournalError};
use crate::outbox::Outbox;
use crate::scheduler::{Failure, MAX_TASK_FAILURES};
use crate::state::{ExecutorEntry, JobRecord, Shared};

/// Frames queued per connection before senders wait.
const OUTBOX: usize = 64;
/// Fetches one executor may have waiting on the server at once.
const MAX_FETCHES_WAITING: u32 = 16;

/// Largest frame a client may send: job files and requests are small.
const CLIENT_MAX_FRAME: usize = 1 << 20;

/// How long the accept loop pauses after an accept error (out of file
/// descriptors, say) before trying again, instead of spinning.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Longest a client connection may sit between requests.
const CLIENT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let admission = Admission::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: too many connections");
            continue;
        };
        let Some(slot) = admission.admit(peer.ip()) else {
            shared.rejected_connections.fetch_add(1, Relaxed);
            tracing::warn!(%peer, "connection refused: too many handshakes in progress");
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (read, write) = match transport::accept(stream, shared.config.tls.as_ref()).await {
                Ok(halves) => halves,
                Err(e) => {
                    shared.rejected_connections.fetch_add(1, Relaxed);
                    tracing::warn!(%peer, reason = %e, "peer refused");
                    return;
                }
            };
            let max = shared.config.max_frame;
            let mut reader = MessageReader::new(read, max);
            let mut writer = MessageWriter::new(write, max);
            match serve(&shared, &mut reader, &mut writer, slot, stop).await {
                Err(e @ ProtoError::Rejected(_)) => tracing::warn!(%peer, reason = %e, "peer refused"),
                Err(e) => tracing::info!(%peer, reason = %e, "connection closed"),
                Ok(()) => {}
            }
            drop(permit);
        });
    }
}

async fn serve(
    shared: &Arc<Shared>,
    reader: &mut MessageReader<BoxRead>,
    writer: &mut MessageWriter<BoxWrite>,
    slot: HandshakeSlot,
    stop: watch::Receiver<bool>,
) -> Result<(), ProtoError> {
    let (role, name, cores) = match proto::accept_handshake(reader, writer, shared.config.secret.as_ref()).await {
        Ok(hello) => hello,
        Err(e) => {
            shared.rejected_connections.fetch_add(1, Relaxed);
            return Err(e);
        }
    };
    drop(slot);
    match role {
        Role::Client => {
            reader.set_max_frame(CLIENT_MAX_FRAME.min(shared.config.max_frame));
            writer.send(&Message::Welcome { id: 0, heartbeat_ms: 0 }).await?;
            serve_client(shared, reader, writer).await
        }
        Role::Executor => {
            reader.set_max_frame(shared.config.max_frame);
            serve_executor(shared, reader, writer, name, cores.max(1), stop).await
        }
    }
}

async fn serve_executor(
    shared: &Arc<Shared>,
    reader: &mut MessageReader<BoxRead>,
    writer: &mut MessageWriter<BoxWrite>,
    name: String,
    cores: u32,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProtoError> {
    let id = shared.next_executor.fetch_add(1, Relaxed);
    let heartbeat = shared.config.heartbeat;
    writer
        .send(&Message::Welcome {
            id,
            heartbeat_ms: heartbeat.as_millis() as u64,
        })
        .await?;
    let (tx, mut rx) = Outbox::new(OUTBOX);
    shared.lock().executors.insert(
        id,
        ExecutorEntry {
            name: name.clone(),
            cores,
            tx: tx.clone(),
            task: None,
            last_heard: Instant::now(),
            fetches_waiting: 0,
            tasks_done: 0,
            cached: Default::default(),
        },
    );
    tracing::info!(id, %name, cores, "executor registered");
    shared.wake.notify_one();

    let outgoing = proto::pump(writer, &mut rx, heartbeat);
    let incoming = async {
        loop {
            let msg = reader
                .recv_within(shared.config.heartbeat_timeout, "a message or heartbeat")
                .await?;
            handle_executor_message(shared, id, &tx, msg).await?;
        }
    };
    let (result, driver_stopping) = tokio::select! {
        r = outgoing => (r, false),
        r = incoming => (r, false),
        _ = tx.stuck() => (Err(ProtoError::Stuck), false),
        _ = stop.changed() => (Ok(()), true),
    };
    let lost = remove_executor(shared, id);
    if driver_stopping {
        tracing::debug!(id, "executor connection closed: the driver is stopping");
        return result;
    }
    shared.executors_lost.fetch_add(1, Relaxed);
    // A connection closed cleanly with nothing in hand is an executor shutting
    // down (as `deepdist local` does at the end); anything else costs work or
    // signals a fault, and is what operators need to see.
    match &result {
        Err(ProtoError::Closed) if lost == 0 => tracing::info!(id, "executor disconnected"),
        Err(e) => tracing::warn!(id, tasks_reassigned = lost, error = %e, "executor lost"),
        Ok(()) => tracing::warn!(id, tasks_reassigned = lost, "executor lost"),
    }
    result
}

/// Removes an executor and gives its tasks back to the scheduler; returns
/// how many went back.
fn remove_executor(shared: &Shared, id: u64) -> usize {
    let mut state = shared.lock();
    state.executors.remove(&id);
    let lost = state.run.as_mut().map_or(0, |run| run.scheduler.lose(id));
    drop(state);
    shared.wake.notify_one();
    lost
}

async fn handle_executor_message(shared: &Arc<Shared>, id: u64, tx: &Outbox, msg: Message) -> Result<(), ProtoError> {
    if !matches!(msg, Message::Heartbeat) {
        if let Some(entry) = shared.lock().executors.get_mut(&id) {
            entry.last_heard = Instant::now();
        }
    }
    match msg {
        Message::Heartbeat => {}
        Message::NeedPartition { hash } => {
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
        Message::Fetch { job, stage, wait_for } => {
            let mut state = shared.lock();
            let run = state.run.as_ref().filter(|r| r.job == job && r.stage_index == stage);
            let ps = run.map(|r| r.ps.clone());
            if let (Some(ps), Some(entry)) = (ps, state.executors.get_mut(&id)) {
                // An executor waits on one fetch, two across a stage boundary:
                // more is a broken or hostile peer growing the waiting list.
                if entry.fetches_waiting >= MAX_FETCHES_WAITING {
                    return Err(ProtoError::Overrun {
                        what: "parameter fetches",
                        limit: MAX_FETCHES_WAITING,
                    });
                }
                entry.fetches_waiting += 1;
                drop(state);
                let (tx, shared) = (tx.clone(), shared.clone());
                tokio::spawn(async move {
                    let frame = ps.fetch(id, wait_for).await;
                    if let Some(entry) = shared.lock().executors.get_mut(&id) {
                        entry.fetches_waiting = entry.fetches_waiting.saturating_sub(1);
                        entry.last_heard = Instant::now();
                    }
                    if let Some(frame) = frame {
                        tx.offer(frame);
                    }
                });
            }
        }
        Message::Push(push) => {
            let ps = {
                let mut state = shared.lock();
                let Some(run) = state.run.as_mut() else { return Ok(()) };
                if !run.scheduler.is_current(&push.task, id) {
                    shared.late_updates.fetch_add(1, Relaxed);
                    tracing::debug!(id, task = ?push.task, seq = push.seq, "late update discarded");
                    None
                } else if run.last_seq.get(&push.task).is_some_and(|&last| push.seq <= last) {
                    shared.duplicate_updates.fetch_add(1, Relaxed);
                    tracing::debug!(id, task = ?push.task, seq = push.seq, "repeated update discarded");
                    None
                } else {
                    run.last_seq.insert(push.task, push.seq);
                    Some(run.ps.clone())
                }
            };
            if let Some(ps) = ps {
                // Waits (and stops reading this executor) while the queue is full.
                ps.push(id, push.base_version, push.task.epoch, push.samples, push.values)
                    .await;
            }
        }
        Message::TaskDone(report) => {
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
                        Message::Progress(deepdist_common::proto::Progress::Task {
                            stage,
                            epoch: report.task.epoch,
                            done: acc.tasks,
                            total,
                        }),
                    );
                    acc.samples += report.samples;
                    acc.batches += report.batches;
                    acc.loss_sum += report.loss_sum;
                    run.last_seq.remove(&report.task);
                    true
                }
                _ => false,
            };
            if let Some(entry) = state.executors.get_mut(&id) {
                if entry.task == Some(report.task) {
                    entry.task = None;
                    entry.tasks_done += u64::from(done);
                }
            }
            drop(state);
            shared.wake.notify_one();
        }
        Message::TaskFailed { task, reason, diverged } => {
            tracing::warn!(id, ?task, %reason, diverged, "task failed on executor");
            let mut state = shared.lock();
            if let Some(run) = state.run.as_mut() {
                // Divergence would follow the task to any executor: the job fails.
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
            if let Some(entry) = state.executors.get_mut(&id) {
                if entry.task == Some(task) {
                    entry.task = None;
                }
            }
            drop(state);
            shared.wake.notify_one();
        }
        other => {
            return Err(ProtoError::Unexpected {
                expected: "an executor message",
                got: other.kind(),
            });
        }
    }
    Ok(())
}

async fn serve_client(
    shared: &Arc<Shared>,
    reader: &mut MessageReader<BoxRead>,
    writer: &mut MessageWriter<BoxWrite>,
) -> Result<(), ProtoError> {
    loop {
        // A client that goes quiet (or trickles a frame) is dropped; the CLI
        // sends its requests at once.
        let msg = match reader.recv_within(CLIENT_IDLE_TIMEOUT, "a client request").await {
            Ok(msg) => msg,
            Err(ProtoError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        match msg {
            Message::Submit { spec, origin } => {
                let reply = match admit(shared, &spec, &origin) {
                    Ok(spec) => match submit(shared, spec) {
                        Ok(job) => Message::Submitted { job },
                        Err(e) => Message::Reject {
                            reason: format!("the job could not be recorded: {e}"),
                        },
                    },
                    Err(e) => Message::Reject { reason: e.to_string() },
                };
                writer.send(&reply).await?;
            }
            Message::Status => writer.send(&Message::StatusReport(shared.status())).await?,
            Message::Cancel { job } => writer.send(&cancel(shared, job)).await?,
            Message::Watch { job } => watch_job(shared, job, writer).await?,
            Message::Heartbeat => {}
            other => {
                return Err(ProtoError::Unexpected {
                    expected: "a client request",
                    got: other.kind(),
                });
            }
        }
    }
}

/// Parses a submitted job and refuses one whose model this driver could not
/// hold or send, before anything is allocated for it.
fn admit(shared: &Shared, text: &str, origin: &str) -> Result<JobSpec, deepdist_common::job::JobError> {
    let spec = JobSpec::from_toml(text, origin)?;
    let (dim, classes) = spec.data_shape();
    let limit = ModelLimit::new(shared.config.max_frame, shared.config.max_model_bytes);
    spec.check_size(origin, dim, classes, &limit)?;
    Ok(spec)
}

/// Queues a job, durably when the driver keeps a journal, and returns its id.
fn submit(shared: &Shared, spec: JobSpec) -> Result<u64, JournalError> {
    let id = shared.next_job.fetch_add(1, Relaxed);
    shared.journal(&Entry::Submit {
        id,
        spec: spec.to_toml(),
    })?;
    tracing::info!(id, name = %spec.name, "job queued");
    let mut state = shared.lock();
    state.jobs.push(JobRecord::queued(id, spec));
    forget_old_jobs(&mut state.jobs, KEEP_FINISHED_JOBS);
    drop(state);
    shared.wake.notify_one();
    Ok(id)
}

/// Finished jobs the driver remembers for `status` and `watch`; older ones
/// are forgotten (their outputs stay in the runs directory), so that the
/// status report stays small however long the driver runs.
const KEEP_FINISHED_JOBS: usize = 1000;

/// Drops the oldest finished jobs beyond `keep`.
fn forget_old_jobs(jobs: &mut Vec<JobRecord>, keep: usize) {
    let finished = jobs.iter().filter(|j| j.state.is_final()).count();
    let mut excess = finished.saturating_sub(keep);
    jobs.retain(|j| {
        let drop = excess > 0 && j.state.is_final();
        excess -= usize::from(drop);
        !drop
    });
}

fn cancel(shared: &Shared, job: u64) -> Message {
    let mut state = shared.lock();
    let Some(record) = state.job_mut(job) else {
        return Message::Reject {
            reason: format!("no job {job}"),
        };
    };
    if record.state.is_final() {
        return Message::Reject {
            reason: format!("job {job} is already {}", record.state),
        };
    }
    drop(state);
    if let Err(e) = shared.journal(&Entry::Cancel(job)) {
        return Message::Reject {
            reason: format!("the cancel could not be recorded: {e}"),
        };
    }
    if let Some(record) = shared.lock().job_mut(job) {
        record.cancel_requested = true;
    }
    shared.wake.notify_one();
    Message::Cancelled { job }
}

/// Streams a job's progress until it ends.
async fn watch_job(shared: &Arc<Shared>, job: u64, writer: &mut MessageWriter<BoxWrite>) -> Result<(), ProtoError> {
    // Subscribe before looking, so the end cannot slip between the two.
    let mut events = shared.events.subscribe();
    let found = shared
        .lock()
        .jobs
        .iter()
        .find(|j| j.id == job)
        .map(|r| r.summary.clone());
    let ended = match found {
        None => {
            return writer
                .send(&Message::Reject {
                    reason: format!("no job {job}"),
                })
                .await;
        }
        Some(summary) => summary,
    };
    if let Some(summary) = ended {
        return writer.send(&Message::JobEnded(summary)).await;
    }
    loop {
        match events.recv().await {
            Ok(event) if event.job == job => {
                let end = matches!(event.msg, Message::JobEnded(_));
                writer.send(&event.msg).await?;
                if end {
                    return Ok(());
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepdist_common::job::JobState;

    fn record(id: u64, state: JobState) -> JobRecord {
        let spec = JobSpec::from_toml("name = \"j\"", "t").unwrap();
        JobRecord {
            state,
            ..JobRecord::queued(id, spec)
        }
    }

    #[test]
    fn only_the_oldest_finished_jobs_are_forgotten() {
        let mut jobs = vec![
            record(1, JobState::Done),
            record(2, JobState::Running),
            record(3, JobState::Failed),
            record(4, JobState::Cancelled),
            record(5, JobState::Queued),
        ];
        forget_old_jobs(&mut jobs, 1);
        let left: Vec<u64> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(left, [2, 4, 5]);
    }
}
