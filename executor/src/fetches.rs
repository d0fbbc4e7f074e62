//! Parameter fetches in flight, counted per connection and stage.

/// Where fetches are counted: a connection, and the (job, stage) asked for.
pub type FetchKey = (u64, u64, u32);

/// Fetches sent and answered for one connection and stage. A fetch in
/// flight when its connection dies, or when its job ends, is never
/// answered, so the count starts again with every connection and stage;
/// otherwise the worker would wait for that answer (until its timeout)
/// instead of asking again.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Fetches {
    key: FetchKey,
    sent: u64,
    answered: u64,
}

impl Fetches {
    /// A fetch was sent for `key`.
    pub fn sent_on(&mut self, key: FetchKey) {
        if key != self.key {
            *self = Self { key, ..Self::default() };
        }
        self.sent += 1;
    }

    /// Parameters for `key` arrived; false if fetches are no longer counted
    /// for it.
    pub fn answered_on(&mut self, key: FetchKey) -> bool {
        let current = key == self.key;
        if current {
            self.answered += 1;
        }
        current
    }

    /// Whether an answer is still due.
    pub fn outstanding(&self) -> bool {
        self.answered < self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::Fetches;

    #[test]
    fn a_fetch_lost_with_its_connection_is_not_awaited_on_the_next() {
        let mut fetches = Fetches::default();
        fetches.sent_on((1, 7, 0));
        assert!(fetches.outstanding());
        // The connection dies before the answer; the next one starts afresh.
        fetches.sent_on((2, 7, 0));
        assert!(
            !fetches.answered_on((1, 7, 0)),
            "an answer from the old connection is not counted"
        );
        assert!(fetches.answered_on((2, 7, 0)));
        assert!(!fetches.outstanding());
    }

    #[test]
    fn a_fetch_of_an_ended_job_is_not_awaited_by_the_next() {
        let mut fetches = Fetches::default();
        fetches.sent_on((1, 7, 0));
        // Job 7 ends before the driver answers; job 8 asks on the same connection.
        fetches.sent_on((1, 8, 0));
        assert!(fetches.answered_on((1, 8, 0)));
        assert!(!fetches.outstanding(), "nothing is owed for job 7");
    }
}
