//! Parameter fetches in flight, counted per connection.

/// Fetches sent and answered on one connection. A fetch in flight when its
/// connection dies is never answered, so the count starts again with every
/// connection; otherwise the worker would wait forever for that answer and
/// never ask again.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Fetches {
    connection: u64,
    sent: u64,
    answered: u64,
}

impl Fetches {
    /// A fetch was sent on `connection`.
    pub fn sent_on(&mut self, connection: u64) {
        if connection != self.connection {
            *self = Self {
                connection,
                ..Self::default()
            };
        }
        self.sent += 1;
    }

    /// Parameters arrived on `connection`; false if that connection is no
    /// longer the one fetches are counted on.
    pub fn answered_on(&mut self, connection: u64) -> bool {
        let current = connection == self.connection;
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
        fetches.sent_on(1);
        assert!(fetches.outstanding());
        // The connection dies before the answer; the next one starts afresh.
        fetches.sent_on(2);
        assert!(
            !fetches.answered_on(1),
            "an answer from the old connection is not counted"
        );
        assert!(fetches.answered_on(2));
        assert!(!fetches.outstanding());
    }
}
