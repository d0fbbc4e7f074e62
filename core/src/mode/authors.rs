//! Who produced the latest parameter versions. An executor stepping locally
//! already holds the result of its own updates, so when every update applied
//! since the version its fetch names was its own, it is answered
//! `Unchanged` at the current version instead of being sent megabytes it
//! has. With two asynchronous executors this spares about half the
//! parameter transfers (and the copy and rebase each costs the executor).
//!
//! Only valid where the server's step on a pushed window moves the model
//! exactly as the executor's local steps did
//! ([`crate::mode::Mode::server_mirrors_local`]): otherwise the copies would
//! drift apart. The driver's parameter server and the simulated one both
//! keep it.

/// The run of consecutive versions produced by one executor's updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    executor: u64,
    first: u64,
    last: u64,
}

/// The authors of the latest versions, as far as they matter to a fetch.
#[derive(Debug, Default)]
pub struct Authors {
    run: Option<Run>,
}

impl Authors {
    /// Records that the version went from `before` to `after` while
    /// applying an update of `executor` (`None`: not one executor's update).
    pub fn record(&mut self, before: u64, after: u64, executor: Option<u64>) {
        if after == before {
            return;
        }
        self.run = match (executor, self.run) {
            (Some(e), Some(run)) if after == before + 1 && run.executor == e && run.last == before => {
                Some(Run { last: after, ..run })
            }
            (Some(e), _) if after == before + 1 => Some(Run {
                executor: e,
                first: after,
                last: after,
            }),
            _ => None,
        };
    }

    /// Whether a fetch by `executor` naming version `newer_than` may be
    /// answered `Unchanged` at `current`: it holds that version already, or
    /// (where the server's step `mirrors_local`) only its own updates came since.
    pub fn unchanged_for(&self, mirrors_local: bool, executor: u64, newer_than: Option<u64>, current: u64) -> bool {
        newer_than.is_some_and(|have| have == current || (mirrors_local && self.holds(executor, have, current)))
    }

    /// Whether `executor`, holding version `have`, holds the parameters of
    /// `current`: nothing was applied since, or only its own updates.
    pub fn holds(&self, executor: u64, have: u64, current: u64) -> bool {
        have == current
            || self
                .run
                .is_some_and(|r| r.executor == executor && r.last == current && r.first <= have + 1 && have < current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unbroken_run_of_ones_own_updates_is_held() {
        let mut a = Authors::default();
        assert!(a.holds(1, 5, 5), "nothing changed");
        assert!(!a.holds(1, 4, 5), "unknown authors");
        a.record(5, 6, Some(1));
        a.record(6, 7, Some(1));
        assert!(a.holds(1, 5, 7) && a.holds(1, 6, 7));
        assert!(!a.holds(2, 5, 7), "not executor 2's updates");
        assert!(!a.holds(1, 4, 7), "version 5 is not known to be its own");
        a.record(7, 8, Some(2));
        assert!(!a.holds(1, 6, 8), "executor 2 pushed in between");
        assert!(a.holds(2, 7, 8));
        a.record(8, 9, None);
        assert!(!a.holds(2, 7, 9), "a change that was no one update");
        a.record(9, 9, Some(2));
        assert!(a.holds(2, 9, 9));
    }
}
