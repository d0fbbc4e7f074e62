//! The deepdist executor: connects to the driver (reconnecting with backoff
//! when it goes away), caches partitions by content hash, and runs the
//! training loop of each task it is given on all its cores.

mod cache;
pub mod compute;
mod fetches;
pub mod group;
mod link;
#[cfg(feature = "mpi")]
pub mod mpi;
mod session;
mod shared_data;
mod worker;

use deepdist_wire::transport::{Credentials, InProcess};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use deepdist_core::job::{JobState, ModelLimit};
use deepdist_wire::proto::{DEFAULT_MAX_FRAME, ProtoError};
use tokio::sync::watch;

pub use worker::WorkerHandle;

/// Copies of a model's parameters an executor holds at once: the fetched
/// parameters, the gradient, the momentum and the update window, their
/// encoded forms. The default budget fits that many in a quarter of memory.
pub const EXECUTOR_COPIES: u64 = 6;

/// Executor settings; every field has a default.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The driver's address, `host:port`.
    pub driver: String,
    /// A rendezvous file holding the driver's address, read again before
    /// every connection attempt (so a file left by an earlier run is soon
    /// replaced); overrides `driver`.
    pub rendezvous: Option<PathBuf>,
    /// Exit when the run is over instead of serving the driver for ever
    /// (`deepdist launch`, `executor --exit-with-run`).
    pub patience: Option<Patience>,
    /// Threads that compute gradients.
    pub cores: usize,
    /// A name for the driver's status and logs.
    pub name: String,
    /// Largest frame accepted or sent, in bytes.
    pub max_frame: usize,
    /// Largest copy of a model's parameters this executor takes on, in
    /// bytes (`--max-model-mb`); see [`EXECUTOR_COPIES`].
    pub max_model_bytes: u64,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Longest wait for parameters from the driver before a task is given up.
    pub request_timeout: Duration,
    /// What to present to the driver: TLS trust and the shared secret.
    pub credentials: Credentials,
    /// A driver in this same process, reached without a socket (local
    /// mode); overrides `driver` and `rendezvous`.
    pub in_process: Option<InProcess>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            driver: "127.0.0.1:7077".into(),
            rendezvous: None,
            patience: None,
            cores,
            name: format!("executor-{}", std::process::id()),
            max_frame: DEFAULT_MAX_FRAME,
            max_model_bytes: deepdist_core::job::default_model_bytes(EXECUTOR_COPIES),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            credentials: Credentials::default(),
            in_process: None,
        }
    }
}

/// How long an executor that belongs to one run waits for its driver
/// before it gives up and exits with an error.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// From the start until the first connection (ranks start in any order).
    pub join: Duration,
    /// From a lost connection until the next one: past it, the driver is
    /// taken for dead and the run for over.
    pub rejoin: Duration,
}

/// How an executor's run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It was asked to stop.
    Stopped,
    /// The driver said the run is over; its job ended in this state.
    RunOver(JobState),
}

/// Why an executor stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The driver refused this executor (e.g. another protocol version);
    /// retrying cannot help.
    #[error("the driver refused this executor: {0}")]
    Refused(String),
    /// With [`Patience`]: the driver could not be reached in time.
    #[error("no driver at {driver} for {waited_s} s ({last}): giving up")]
    DriverGone {
        /// Where it was looked for.
        driver: String,
        /// Seconds waited.
        waited_s: u64,
        /// The last attempt's error.
        last: String,
    },
}

/// Runs an executor until `shutdown` turns true or, with
/// [`ExecutorConfig::patience`], until the driver ends the run; reconnects
/// whenever the connection is lost.
pub async fn run(config: ExecutorConfig, shutdown: watch::Receiver<bool>) -> Result<Finish, ExecutorError> {
    let worker = worker::spawn(
        config.cores,
        config.request_timeout,
        ModelLimit::new(config.max_frame, config.max_model_bytes),
        None,
    );
    serve(config, worker, shutdown).await
}

/// [`run`] as the leader of an executor `group`: `config.cores` are this
/// process's own; the driver is told the group's.
pub async fn run_group(
    mut config: ExecutorConfig,
    group: Box<dyn group::Group>,
    shutdown: watch::Receiver<bool>,
) -> Result<Finish, ExecutorError> {
    let total = group.cores();
    let worker = worker::spawn(
        config.cores,
        config.request_timeout,
        ModelLimit::new(config.max_frame, config.max_model_bytes),
        Some(group),
    );
    config.cores = total;
    serve(config, worker, shutdown).await
}

/// Serves the driver with `worker` until shutdown or the end of the run.
async fn serve(
    config: ExecutorConfig,
    worker: WorkerHandle,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Finish, ExecutorError> {
    let cache = cache::PartitionCache::default();
    let mut backoff = Duration::from_millis(100);
    // Since when the driver has been out of reach, and how long that may last.
    let mut unreachable = (Instant::now(), config.patience.map(|p| p.join));
    loop {
        if *shutdown.borrow() {
            return Ok(Finish::Stopped);
        }
        let (driver, outcome) = match driver_address(&config) {
            Ok(driver) => {
                let mut registered = false;
                let outcome = tokio::select! {
                    r = session::connect_and_serve(&config, &driver, &worker, &cache, &mut registered) => r,
                    _ = shutdown.changed() => return Ok(Finish::Stopped),
                };
                if registered {
                    unreachable = (Instant::now(), config.patience.map(|p| p.rejoin));
                }
                (driver, outcome)
            }
            Err(e) => (
                config.driver.clone(),
                Err(ProtoError::Io(std::io::Error::other(e.to_string()))),
            ),
        };
        worker.abandon_tasks();
        // A driver stopping together with this executor (local mode, the end of
        // a launch) closes the connection first: that is not worth a warning.
        if *shutdown.borrow() {
            return Ok(Finish::Stopped);
        }
        let error = match outcome {
            Ok(session::Ended::RunOver(state)) => {
                tracing::info!(%driver, %state, "the driver ended the run");
                return Ok(Finish::RunOver(state));
            }
            Ok(session::Ended::Served) => {
                tracing::warn!(%driver, "connection to the driver ended; reconnecting");
                backoff = Duration::from_millis(100);
                "the connection ended".to_string()
            }
            Err(ProtoError::Rejected(reason)) => return Err(ExecutorError::Refused(reason)),
            Err(e) => {
                tracing::warn!(%driver, error = %e, retry_in = ?backoff, "cannot reach the driver");
                e.to_string()
            }
        };
        if let (since, Some(limit)) = unreachable
            && since.elapsed() >= limit
        {
            return Err(ExecutorError::DriverGone {
                driver,
                waited_s: since.elapsed().as_secs(),
                last: error,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(Finish::Stopped),
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// Where to dial now: the rendezvous file's address, else the configured
/// one; a driver in this process is named as such.
fn driver_address(config: &ExecutorConfig) -> Result<String, deepdist_wire::rendezvous::RendezvousError> {
    match &config.rendezvous {
        _ if config.in_process.is_some() => Ok("the driver in this process".into()),
        Some(path) => deepdist_wire::rendezvous::read(path),
        None => Ok(config.driver.clone()),
    }
}
