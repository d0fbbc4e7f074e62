//! The deepdist executor: connects to the driver (reconnecting with backoff
//! when it goes away), caches partitions by content hash, and runs the
//! training loop of each task it is given on all its cores.

mod cache;
pub mod compute;
mod fetches;
mod link;
mod session;
mod shared_data;
mod worker;

use deepdist_common::transport::Credentials;
use std::time::Duration;

use deepdist_common::job::ModelLimit;
use deepdist_common::proto::{DEFAULT_MAX_FRAME, ProtoError};
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
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            driver: "127.0.0.1:7077".into(),
            cores,
            name: format!("executor-{}", std::process::id()),
            max_frame: DEFAULT_MAX_FRAME,
            max_model_bytes: deepdist_common::job::default_model_bytes(EXECUTOR_COPIES),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            credentials: Credentials::default(),
        }
    }
}

/// Why an executor stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The driver refused this executor (e.g. another protocol version);
    /// retrying cannot help.
    #[error("the driver refused this executor: {0}")]
    Refused(String),
}

/// Runs an executor until `shutdown` turns true, reconnecting whenever the
/// connection is lost.
pub async fn run(config: ExecutorConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), ExecutorError> {
    let worker = worker::spawn(
        config.cores,
        config.request_timeout,
        ModelLimit::new(config.max_frame, config.max_model_bytes),
    );
    let cache = cache::PartitionCache::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let outcome = tokio::select! {
            r = session::connect_and_serve(&config, &worker, &cache) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        worker.abandon_tasks();
        // A driver stopping together with this executor (local mode, the end of
        // a launch) closes the connection first: that is not worth a warning.
        if *shutdown.borrow() {
            return Ok(());
        }
        match outcome {
            Ok(session::Ended::Served) => {
                tracing::warn!(driver = %config.driver, "connection to the driver ended; reconnecting");
                backoff = Duration::from_millis(100);
            }
            Err(ProtoError::Rejected(reason)) => return Err(ExecutorError::Refused(reason)),
            Err(e) => {
                tracing::warn!(driver = %config.driver, error = %e, retry_in = ?backoff, "cannot reach the driver")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}
