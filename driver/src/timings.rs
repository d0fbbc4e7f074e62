//! How long the driver's work takes and how many bytes move, for
//! `/metrics`: histograms and counters updated where the work happens.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// The driver's timings (seconds) and traffic (bytes).
#[derive(Debug)]
pub struct Timings {
    /// From a push's arrival to its place in the parameter server's queue
    /// (backpressure shows here).
    pub push: Histogram,
    /// From a fetch's arrival to its answer (waiting in `sync`/`ssp` included).
    pub fetch: Histogram,
    /// Evaluating one epoch.
    pub evaluation: Histogram,
    /// Writing one job checkpoint.
    pub checkpoint: Histogram,
    /// Bytes read from executors' connections.
    pub bytes_in: Arc<AtomicU64>,
    /// Bytes written to executors' connections.
    pub bytes_out: Arc<AtomicU64>,
}

impl Default for Timings {
    fn default() -> Self {
        // 0.1 ms to about 100 s.
        let buckets = || Histogram::new(exponential_buckets(1e-4, 4.0, 11));
        Self {
            push: buckets(),
            fetch: buckets(),
            evaluation: buckets(),
            checkpoint: buckets(),
            bytes_in: Default::default(),
            bytes_out: Default::default(),
        }
    }
}
