//! The deepdist driver: one TCP port for executors and clients; an executor
//! registry with heartbeats; a job queue whose jobs run one after another;
//! for the running job, partitions pulled by executors, a parameter server,
//! per-epoch evaluation off the hot path, and outputs in `runs/<job>/`.
//!
//! [`Driver::start`] takes a bound listener, so tests and local mode run it on
//! `127.0.0.1:0` exactly as production does.

mod admission;
pub mod checkpoint;
mod client_conn;
mod dispatch;
mod divergence;
pub mod error;
mod evaluator;
mod executor_conn;
mod executor_messages;
mod http;
pub use http::HttpError;
pub mod fault;
mod job_data;
pub mod journal;
mod outbox;
mod output;
pub mod ps;
mod runner;
pub mod scheduler;
mod server;
mod stage_run;
mod stage_start;
mod staleness;
mod state;
mod tally;
mod timings;

use deepdist_wire::proto::auth::Secret;
use deepdist_wire::transport::{InProcess, TlsServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deepdist_core::job::{JobSpec, JobState};
use deepdist_wire::proto::{DEFAULT_MAX_FRAME, StatusReport};

use checkpoint::JobCheckpoint;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use admission::{MAX_HANDSHAKES, MAX_HANDSHAKES_PER_ADDRESS};
use state::Shared;

/// Copies of a model's parameters the driver may hold at once: the server's
/// parameters and optimizer state, recent versions kept for delay
/// compensation, encoded versions on their way to executors, the evaluator's
/// and the checkpoint's. The default model budget fits that many in a
/// quarter of the machine's memory.
pub const DRIVER_COPIES: u64 = 8;

/// Driver settings; every field has a default.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// How often heartbeats are exchanged with executors.
    pub heartbeat: Duration,
    /// An executor silent this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// An executor holding a task this long without progress (heartbeats
    /// alone do not count) loses it and is disconnected.
    pub task_lease: Duration,
    /// Largest frame accepted or sent, in bytes.
    pub max_frame: usize,
    /// Largest copy of a model's parameters a job may ask for, in bytes
    /// (`--max-model-mb`); see [`DRIVER_COPIES`].
    pub max_model_bytes: u64,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Where job outputs go (`<runs_dir>/<id>-<name>/`).
    pub runs_dir: PathBuf,
    /// The data directory (MNIST in its `mnist/`).
    pub data_dir: PathBuf,
    /// When set, every peer must prove it holds this secret in the handshake.
    pub secret: Option<Secret>,
    /// When set, every connection is TLS with this identity.
    pub tls: Option<TlsServer>,
    /// Where running jobs are checkpointed, one file per job
    /// ([`checkpoint::file_for`]; `None`: never).
    pub checkpoint_dir: Option<PathBuf>,
    /// The job journal (`None`: jobs live in memory only).
    pub journal: Option<PathBuf>,
    /// Longest time between checkpoints within an epoch; every completed
    /// epoch is checkpointed as well.
    pub checkpoint_interval: Duration,
    /// Threads the parameter server's values are cut between
    /// (`--server-shards`; each stage uses at most as many as its tensors
    /// allow, see [`deepdist_core::shards::cut`]).
    pub server_shards: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(10),
            task_lease: Duration::from_secs(60),
            max_frame: DEFAULT_MAX_FRAME,
            max_model_bytes: deepdist_core::job::default_model_bytes(DRIVER_COPIES),
            max_connections: 1024,
            runs_dir: PathBuf::from("runs"),
            data_dir: deepdist_wire::fetch::resolve_data_dir(None),
            secret: None,
            tls: None,
            checkpoint_dir: None,
            journal: None,
            checkpoint_interval: Duration::from_secs(60),
            server_shards: 1,
        }
    }
}

/// A running driver.
pub struct Driver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Driver {
    /// Starts serving on `listener` and running submitted jobs.
    pub fn start(listener: TcpListener, config: DriverConfig) -> std::io::Result<Self> {
        Self::start_resuming(listener, config, None)
    }

    /// Starts like [`Driver::start`], first resuming the job of `checkpoint`
    /// (`deepdist driver --recover`); executors that reconnect carry it on.
    pub fn start_resuming(
        listener: TcpListener,
        config: DriverConfig,
        checkpoint: Option<JobCheckpoint>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let resume = match checkpoint {
            Some(c) => {
                let spec = JobSpec::from_toml(&c.spec, "the checkpoint's job")
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
                tracing::info!(
                    job = c.job,
                    stage = c.stage,
                    epochs_done = c.epochs_done,
                    "resuming from a checkpoint"
                );
                Some((spec, Box::new(c)))
            }
            None => None,
        };
        // Temporary files of writes a killed driver never finished.
        let resumed_dir = resume.as_ref().map(|(_, c)| c.output_dir.clone());
        let journal_dir = config
            .journal
            .as_ref()
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf));
        let dirs = config
            .checkpoint_dir
            .clone()
            .into_iter()
            .chain(journal_dir)
            .chain(resumed_dir);
        for dir in dirs {
            let removed = deepdist_core::atomic::remove_leftovers(&dir);
            if removed > 0 {
                tracing::info!(dir = %dir.display(), removed, "removed what interrupted writes left");
            }
        }
        let journal = match &config.journal {
            Some(path) => Some(journal::Journal::open(path).map_err(std::io::Error::other)?),
            None => None,
        };
        let shared = Arc::new(Shared::new(config, resume, journal));
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(server::accept_loop(listener, shared.clone(), stopped.clone())),
            tokio::spawn(runner::run_jobs(shared.clone(), stopped)),
        ];
        tracing::info!(%addr, "driver listening");
        Ok(Self {
            shared,
            addr,
            stop,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How executors in this process reach this driver without a socket
    /// (local mode): every connection opened through it is served like one
    /// accepted on the listener, handshake and secret included.
    pub fn in_process(&self) -> InProcess {
        let shared = self.shared.clone();
        let stop = self.stop.subscribe();
        InProcess::new(move |max_frame| {
            let (near, far) = deepdist_wire::proto::pipe((max_frame, shared.config.max_frame));
            tokio::spawn(server::serve_in_process(shared.clone(), far, stop.clone()));
            near
        })
    }

    /// Serves the status, each job's metrics and Prometheus's `/metrics`
    /// over HTTP on `listener` (see the `http` module for who may read and
    /// cancel); returns the address.
    pub fn serve_http(&mut self, listener: TcpListener) -> Result<SocketAddr, HttpError> {
        let (addr, task) = http::start(listener, self.shared.clone(), self.stop.subscribe())?;
        self.tasks.push(task);
        Ok(addr)
    }

    /// Executors and jobs right now.
    pub fn status(&self) -> StatusReport {
        self.shared.status()
    }

    /// Tells every executor, and any that registers from now on, that the
    /// run is over and its job ended `state` (they exit instead of
    /// reconnecting), then waits up to `within` for them to leave. Returns
    /// how many were still connected at the deadline.
    pub async fn end_run(&self, state: JobState, within: Duration) -> usize {
        *self
            .shared
            .run_over
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
        if let Ok(frame) = deepdist_wire::proto::encode(&deepdist_wire::proto::ToExecutor::RunOver { state }) {
            for executor in self.shared.lock().executors.values() {
                executor.tx.offer(frame.clone());
            }
        }
        self.executors_until(|n| n == 0, within).await
    }

    /// Waits up to `within` for `n` executors to register (a mode that
    /// deals work repeats its results only if all of them are there from the
    /// start); returns how many there are.
    pub async fn await_executors(&self, n: usize, within: Duration) -> usize {
        self.executors_until(|here| here >= n, within).await
    }

    /// Waits up to `within` until the number of registered executors
    /// satisfies `enough`; returns it.
    async fn executors_until(&self, enough: impl Fn(usize) -> bool, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.shared.executors_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let here = self.shared.lock().executors.len();
            if enough(here) || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return here;
            }
        }
    }

    /// Stops accepting, stops the job runner and waits for both.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.shared.wake.notify_waiters();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
