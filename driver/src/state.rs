//! The driver's shared state: executors, jobs and the running job, behind
//! one mutex that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use deepdist_core::data::Mnist;
use deepdist_core::job::{JobSpec, JobState};
use deepdist_wire::proto::{ExecutorInfo, JobInfo, JobSummary, StatusReport, TaskId, ToClient};
use tokio::sync::{Notify, broadcast};

use crate::DriverConfig;
use crate::checkpoint::JobCheckpoint;
use crate::journal::{Entry, Journal, JournalError, Replayed};
use crate::outbox::Outbox;
use crate::ps::ParamServer;
use crate::scheduler::Scheduler;

/// An event for clients watching a job.
#[derive(Debug, Clone)]
pub struct Event {
    /// The job it concerns.
    pub job: u64,
    /// What to forward.
    pub msg: ToClient,
}

/// A connected executor.
pub struct ExecutorEntry {
    pub name: String,
    pub cores: u32,
    /// Frames on their way to it.
    pub tx: Outbox,
    pub task: Option<TaskId>,
    /// When it last showed progress on its task (any message but a
    /// heartbeat), or was given it.
    pub last_heard: Instant,
    /// When anything last came from it, heartbeats included.
    pub last_message: Instant,
    /// Its fetches the server has not answered yet: while it waits on the
    /// driver, its task's lease does not run out.
    pub fetches_waiting: u32,
    pub tasks_done: u64,
    /// Where it connects from.
    pub host: String,
    /// Examples trained and seconds computing, over its finished tasks.
    pub samples: u64,
    pub compute_s: f64,
    /// Partition hashes it has been sent.
    pub cached: HashSet<u128>,
}

/// A submitted job.
pub struct JobRecord {
    pub id: u64,
    pub spec: JobSpec,
    pub state: JobState,
    /// The stage last evaluated.
    pub stage: String,
    pub epochs_done: u32,
    pub accuracy: Option<f64>,
    pub error: Option<String>,
    /// Why training looks divergent, if it does (see [`crate::divergence`]).
    pub warning: Option<String>,
    pub cancel_requested: bool,
    pub summary: Option<JobSummary>,
    /// The checkpoint to resume this job from (`driver --recover`).
    pub resume: Option<Box<JobCheckpoint>>,
    /// Where its outputs go, once it has started.
    pub output_dir: Option<PathBuf>,
    /// The running stage's network in one line (see [`crate::runner`]).
    pub model: Option<String>,
}

impl JobRecord {
    /// A job just queued.
    pub fn queued(id: u64, spec: JobSpec) -> Self {
        Self {
            id,
            spec,
            state: JobState::Queued,
            stage: String::new(),
            epochs_done: 0,
            accuracy: None,
            error: None,
            warning: None,
            cancel_requested: false,
            summary: None,
            resume: None,
            output_dir: None,
            model: None,
        }
    }
}

/// The job being trained right now.
pub struct RunState {
    pub job: u64,
    /// The running stage's name.
    pub stage: String,
    /// Its index among the job's stages.
    pub stage_index: u32,
    pub scheduler: Scheduler,
    /// Encoded `Partition` frames, by partition id.
    pub partition_frames: Arc<Vec<(u128, Bytes)>>,
    /// The encoded `Frozen` layers this stage's executors need, if any.
    pub frozen: Option<Bytes>,
    /// Executors that have been sent `frozen`.
    pub frozen_sent: HashSet<u64>,
    pub ps: ParamServer,
    pub epochs: HashMap<u32, crate::tally::EpochAccum>,
    /// The updates accepted per task attempt, so a repeated push is not
    /// applied twice and a finished task's count can be checked.
    pub pushes: HashMap<TaskId, PushLog>,
    /// Per open epoch, the first version after every update of its finished
    /// tasks, where a mode steps in rounds: the version its snapshot is
    /// taken at, so it is the same in every run.
    pub epoch_ends: HashMap<u32, u64>,
    /// Why the job cannot go on (training diverged, a task failed too
    /// often), once an executor's report showed it.
    pub fatal: Option<crate::error::JobError>,
}

/// The updates accepted from one task attempt.
#[derive(Debug, Default, Clone, Copy)]
pub struct PushLog {
    /// The highest sequence number accepted.
    pub last_seq: u64,
    /// How many were accepted.
    pub accepted: u64,
    /// The version the last accepted one was computed from.
    pub last_base: u64,
}

/// Everything behind the mutex.
#[derive(Default)]
pub struct State {
    pub executors: BTreeMap<u64, ExecutorEntry>,
    pub jobs: Vec<JobRecord>,
    pub run: Option<RunState>,
}

impl State {
    /// The job with this id.
    pub fn job_mut(&mut self, id: u64) -> Option<&mut JobRecord> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }
}

/// State shared by every task of the driver.
pub struct Shared {
    pub config: DriverConfig,
    /// Submits, cancels and ends, durable before they are acknowledged.
    journal: Option<Mutex<Journal>>,
    /// The next job id (never reused, across restarts with a journal).
    pub next_job: AtomicU64,
    state: Mutex<State>,
    /// Wakes the job runner: a task ended, an executor came or went, a job was queued or cancelled.
    pub wake: Notify,
    pub events: broadcast::Sender<Event>,
    pub next_executor: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub executors_lost: AtomicU64,
    /// Tasks taken back from executors that held them without progress.
    pub leases_expired: AtomicU64,
    /// Tasks given back by executors that were lost (or lost their lease).
    pub tasks_reassigned: AtomicU64,
    /// Updates received again (same task attempt, sequence already applied).
    pub duplicate_updates: AtomicU64,
    /// Updates for a task attempt the sender no longer holds (it was declared
    /// lost, or the task was reassigned or finished).
    pub late_updates: AtomicU64,
    /// Durations and traffic, for `/metrics`.
    pub timings: crate::timings::Timings,
    /// The staleness of every update, per executor.
    pub staleness: Arc<crate::staleness::StalenessLog>,
    /// Updates received from executors (see [`StatusReport::updates_received`]).
    pub updates_received: AtomicU64,
    /// Updates handed to a parameter server.
    pub updates_accepted: AtomicU64,
    /// Finished tasks whose reported update count differs from the accepted one.
    pub push_mismatches: AtomicU64,
    pub mnist: tokio::sync::OnceCell<Arc<Mnist>>,
    /// Set once [`crate::Driver::end_run`] has told executors the run is
    /// over; one that registers later is told at once.
    pub run_over: Mutex<Option<deepdist_core::job::JobState>>,
    /// Wakes whoever waits for executors to register or leave.
    pub executors_changed: Notify,
}

impl Shared {
    /// Fresh state for a driver with this configuration; with a job to
    /// resume, it is queued first and executor ids continue after the
    /// checkpoint's.
    pub fn new(
        config: DriverConfig,
        resume: Option<(JobSpec, Box<JobCheckpoint>)>,
        journal: Option<(Journal, Replayed)>,
    ) -> Self {
        let mut state = State::default();
        let mut next_executor = 1;
        let mut next_job = 1;
        if let Some((spec, checkpoint)) = resume {
            next_executor = checkpoint.next_executor;
            next_job = checkpoint.job + 1;
            let mut record = JobRecord::queued(checkpoint.job, spec);
            record.epochs_done = checkpoint.epochs_done;
            record.accuracy = checkpoint.evaluated.final_accuracy;
            record.resume = Some(checkpoint);
            state.jobs.push(record);
        }
        let journal = journal.map(|(journal, replayed)| {
            next_job = next_job.max(replayed.next_id);
            for p in replayed.pending {
                if state.jobs.iter().any(|j| j.id == p.id) {
                    continue;
                }
                match JobSpec::from_toml(&p.spec, "the journal") {
                    Ok(spec) => {
                        let mut record = JobRecord::queued(p.id, spec);
                        record.cancel_requested = p.cancelled;
                        state.jobs.push(record);
                    }
                    Err(e) => tracing::error!(id = p.id, error = %e, "a journalled job no longer parses: dropped"),
                }
            }
            if !state.jobs.is_empty() {
                tracing::info!(jobs = state.jobs.len(), "jobs from the journal queued again");
            }
            Mutex::new(journal)
        });
        Self {
            config,
            journal,
            next_job: AtomicU64::new(next_job),
            state: Mutex::new(state),
            wake: Notify::new(),
            events: broadcast::channel(1024).0,
            next_executor: AtomicU64::new(next_executor),
            rejected_connections: AtomicU64::new(0),
            executors_lost: AtomicU64::new(0),
            leases_expired: AtomicU64::new(0),
            tasks_reassigned: AtomicU64::new(0),
            duplicate_updates: AtomicU64::new(0),
            late_updates: AtomicU64::new(0),
            staleness: Default::default(),
            timings: Default::default(),
            updates_received: AtomicU64::new(0),
            updates_accepted: AtomicU64::new(0),
            push_mismatches: AtomicU64::new(0),
            mnist: tokio::sync::OnceCell::new(),
            run_over: Mutex::new(None),
            executors_changed: Notify::new(),
        }
    }

    /// Records `entry` in the journal, if there is one, before it is acknowledged.
    pub fn journal(&self, entry: &Entry) -> Result<(), JournalError> {
        match &self.journal {
            Some(journal) => journal.lock().unwrap_or_else(|p| p.into_inner()).append(entry),
            None => Ok(()),
        }
    }

    /// Locks the state. A panic while it was held leaves it usable: every
    /// update is a few field assignments, and serving on beats stopping.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells watchers of `job`.
    pub fn emit(&self, job: u64, msg: ToClient) {
        let _ = self.events.send(Event { job, msg });
    }

    /// Executors and jobs as clients see them.
    pub fn status(&self) -> StatusReport {
        use std::sync::atomic::Ordering::Relaxed;
        let state = self.lock();
        StatusReport {
            executors: state
                .executors
                .iter()
                .map(|(&id, e)| ExecutorInfo {
                    id,
                    name: e.name.clone(),
                    cores: e.cores,
                    task: e.task,
                    tasks_done: e.tasks_done,
                    host: e.host.clone(),
                    samples_per_s: if e.compute_s > 0.0 {
                        e.samples as f64 / e.compute_s
                    } else {
                        0.0
                    },
                    idle_ms: e.last_heard.elapsed().as_millis() as u64,
                    heartbeat_age_ms: e.last_message.elapsed().as_millis() as u64,
                    staleness: self.staleness.of(id).buckets.to_vec(),
                })
                .collect(),
            jobs: state
                .jobs
                .iter()
                .map(|j| JobInfo {
                    id: j.id,
                    name: j.spec.name.clone(),
                    state: j.state,
                    stage: j.stage.clone(),
                    epochs_done: j.epochs_done,
                    epochs: j.spec.train.epochs,
                    accuracy: j.accuracy,
                    error: j.error.clone(),
                    warning: j.warning.clone(),
                    model: j.model.clone(),
                })
                .collect(),
            rejected_connections: self.rejected_connections.load(Relaxed),
            executors_lost: self.executors_lost.load(Relaxed),
            leases_expired: self.leases_expired.load(Relaxed),
            tasks_reassigned: self.tasks_reassigned.load(Relaxed),
            duplicate_updates_discarded: self.duplicate_updates.load(Relaxed),
            late_updates_discarded: self.late_updates.load(Relaxed),
            updates_received: self.updates_received.load(Relaxed),
            updates_accepted: self.updates_accepted.load(Relaxed),
            task_push_mismatches: self.push_mismatches.load(Relaxed),
            server_shards: state.run.as_ref().map(|r| r.ps.shard_info()).unwrap_or_default(),
        }
    }

    /// The output directory for a job: `<runs>/<id>-<name>`, suffixed if it exists.
    pub fn output_dir(&self, id: u64, name: &str) -> PathBuf {
        let base = self.config.runs_dir.join(format!("{id}-{name}"));
        let mut dir = base.clone();
        let mut n = 1;
        while dir.exists() {
            dir = PathBuf::from(format!("{}.{n}", base.display()));
            n += 1;
        }
        dir
    }
}
