//! Where staleness comes from: the distribution of the staleness of each
//! executor's updates (versions applied between the parameters an update
//! was computed from and its arrival at the parameter server), and of all.

use std::collections::HashMap;
use std::sync::Mutex;

pub use deepdist_core::mode::STALENESS_BOUNDS as BOUNDS;

/// A staleness distribution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Updates per bucket ([`BOUNDS`], then the rest).
    pub buckets: [u64; BOUNDS.len() + 1],
    /// Their summed staleness.
    pub sum: u64,
    /// How many.
    pub count: u64,
}

impl Counts {
    fn record(&mut self, staleness: u64) {
        self.buckets[deepdist_core::mode::staleness_bucket(staleness)] += 1;
        self.sum += staleness;
        self.count += 1;
    }
}

/// Staleness per executor and in all, since the driver started.
#[derive(Debug, Default)]
pub struct StalenessLog {
    inner: Mutex<(HashMap<u64, Counts>, Counts)>,
}

impl StalenessLog {
    /// Records an update of `executor` with this staleness.
    pub fn record(&self, executor: u64, staleness: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0.entry(executor).or_default().record(staleness);
        inner.1.record(staleness);
    }

    /// One executor's distribution.
    pub fn of(&self, executor: u64) -> Counts {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0.get(&executor).cloned().unwrap_or_default()
    }

    /// Every update's.
    pub fn total(&self) -> Counts {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    /// Forgets an executor that is gone (its updates stay in the total).
    pub fn forget(&self, executor: u64) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.remove(&executor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_fall_into_their_buckets() {
        let log = StalenessLog::default();
        for (executor, s) in [(1, 0), (1, 3), (2, 3), (2, 500)] {
            log.record(executor, s);
        }
        let one = log.of(1);
        assert_eq!((one.buckets[0], one.buckets[3], one.count, one.sum), (1, 1, 2, 3));
        assert_eq!(log.of(2).buckets[BOUNDS.len()], 1);
        let total = log.total();
        assert_eq!((total.count, total.sum), (4, 506));
        log.forget(1);
        assert_eq!((log.of(1).count, log.total().count), (0, 4));
    }
}
