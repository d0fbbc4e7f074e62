//! One client's connection: submit (checked and journalled before it is
//! acknowledged), status, cancel, and watching a job to its end.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use deepdist_core::job::{JobSpec, ModelLimit};
use deepdist_wire::proto::{FromClient, MessageReader, MessageWriter, ProtoError, ToClient};
use deepdist_wire::transport::{BoxRead, BoxWrite};

use crate::journal::{Entry, JournalError};
use crate::state::{JobRecord, Shared};

/// Longest a client connection may sit between requests.
const CLIENT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves one client's requests until it leaves or goes quiet.
pub async fn serve(
    shared: &Arc<Shared>,
    reader: &mut MessageReader<BoxRead>,
    writer: &mut MessageWriter<BoxWrite>,
) -> Result<(), ProtoError> {
    loop {
        // A client that goes quiet (or trickles a frame) is dropped; the CLI
        // sends its requests at once.
        let msg: FromClient = match reader.recv_within(CLIENT_IDLE_TIMEOUT, "a client request").await {
            Ok(msg) => msg,
            Err(ProtoError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        match msg {
            FromClient::Submit { spec, origin } => {
                let reply = match admit(shared, &spec, &origin) {
                    Ok(spec) => match submit(shared, spec) {
                        Ok(job) => ToClient::Submitted { job },
                        Err(e) => ToClient::Reject {
                            reason: format!("the job could not be recorded: {e}"),
                        },
                    },
                    Err(e) => ToClient::Reject { reason: e.to_string() },
                };
                writer.send(&reply).await?;
            }
            FromClient::Status => writer.send(&ToClient::StatusReport(shared.status())).await?,
            FromClient::Cancel { job } => writer.send(&cancel(shared, job)).await?,
            FromClient::Watch { job } => watch_job(shared, job, writer).await?,
            FromClient::Heartbeat => {}
        }
    }
}

/// Parses a submitted job and refuses one whose model this driver could not
/// hold or send, before anything is allocated for it.
fn admit(shared: &Shared, text: &str, origin: &str) -> Result<JobSpec, deepdist_core::job::JobError> {
    let spec = JobSpec::from_toml(text, origin)?;
    let limit = ModelLimit::new(shared.config.max_frame, shared.config.max_model_bytes);
    spec.check_size_at_submit(origin, &limit)?;
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

pub(crate) fn cancel(shared: &Shared, job: u64) -> ToClient {
    let mut state = shared.lock();
    let Some(record) = state.job_mut(job) else {
        return ToClient::Reject {
            reason: format!("no job {job}"),
        };
    };
    if record.state.is_final() {
        return ToClient::Reject {
            reason: format!("job {job} is already {}", record.state),
        };
    }
    drop(state);
    if let Err(e) = shared.journal(&Entry::Cancel(job)) {
        return ToClient::Reject {
            reason: format!("the cancel could not be recorded: {e}"),
        };
    }
    if let Some(record) = shared.lock().job_mut(job) {
        record.cancel_requested = true;
    }
    shared.wake.notify_one();
    ToClient::Cancelled { job }
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
                .send(&ToClient::Reject {
                    reason: format!("no job {job}"),
                })
                .await;
        }
        Some(summary) => summary,
    };
    if let Some(summary) = ended {
        return writer.send(&ToClient::JobEnded(summary)).await;
    }
    let mut idle = tokio::time::interval(WATCH_HEARTBEAT);
    idle.reset();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            // A quiet job still shows the watcher is alive, and a watcher
            // that left is found out on the write.
            _ = idle.tick() => {
                writer.send(&ToClient::Heartbeat).await?;
                continue;
            }
        };
        idle.reset();
        match event {
            Ok(event) if event.job == job => {
                let end = matches!(event.msg, ToClient::JobEnded(_));
                writer.send(&event.msg).await?;
                if end {
                    return Ok(());
                }
            }
            Ok(_) => {}
            // Events were missed, the end perhaps among them: look it up.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let ended = shared.lock().job_mut(job).and_then(|r| r.summary.clone());
                if let Some(summary) = ended {
                    return writer.send(&ToClient::JobEnded(summary)).await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// How often a watched job that says nothing gets a heartbeat to its watcher.
pub const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use deepdist_core::job::JobState;

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
