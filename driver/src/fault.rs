//! Fault injection for the fault suite (`tests/faults.rs`), read only in
//! builds with the `fault-injection` feature: `cargo test` turns it on
//! through the root package's dev-dependencies, release builds do not have it.

use std::time::Duration;

/// Milliseconds to stall each checkpoint write between its complete
/// temporary file and the rename, so a test can kill the driver mid-write.
#[cfg(feature = "fault-injection")]
pub const CHECKPOINT_STALL_ENV: &str = "DEEPDIST_FAULT_CHECKPOINT_STALL_MS";

/// The checkpoint stall asked for, if fault injection is built in.
pub fn checkpoint_stall() -> Option<Duration> {
    #[cfg(feature = "fault-injection")]
    {
        std::env::var(CHECKPOINT_STALL_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    }
    #[cfg(not(feature = "fault-injection"))]
    None
}
