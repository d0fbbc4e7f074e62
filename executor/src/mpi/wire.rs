//! What the leader and its followers say to each other. Every exchange
//! starts with a [`Header`] from the leader to each follower; its payloads
//! follow as separate messages, in the order given here.

/// The group stops: the followers return and MPI is finalised.
pub const STOP: u64 = 0;
/// A new [`crate::group::Setup`], postcard-encoded, follows (`len` bytes).
pub const SETUP: u64 = 1;
/// A minibatch: the parameters (`len` values), the follower's rows
/// `start..end` of the features (`dim` values each), their labels (when
/// `supervised`). The follower writes its weighted gradient into its
/// shared block (`super::shm`) and answers with a [`trailer`].
pub const GRADIENT: u64 = 2;
/// The shared blocks are freed and allocated again for `len` values
/// (collective: every rank takes part).
pub const BLOCKS: u64 = 3;

/// Values in a follower's answer to a minibatch; see [`trailer`].
pub const TRAILER: usize = 3;

/// The first message of every exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`STOP`], [`SETUP`] or [`GRADIENT`].
    pub command: u64,
    /// Payload length: bytes of a setup, parameters of a minibatch.
    pub len: u64,
    /// The whole minibatch's rows.
    pub rows: u64,
    /// Features per row.
    pub dim: u64,
    /// Whether labels follow.
    pub supervised: bool,
    /// The follower's rows of the minibatch: `start..end`.
    pub start: u64,
    /// See `start`.
    pub end: u64,
}

/// Values in an encoded [`Header`].
pub const HEADER: usize = 7;

impl Header {
    /// The header as sent.
    pub fn encode(&self) -> [u64; HEADER] {
        [
            self.command,
            self.len,
            self.rows,
            self.dim,
            u64::from(self.supervised),
            self.start,
            self.end,
        ]
    }

    /// A header without a payload.
    pub fn bare(command: u64, len: u64) -> Self {
        Self {
            command,
            len,
            rows: 0,
            dim: 0,
            supervised: false,
            start: 0,
            end: 0,
        }
    }

    /// The header as received.
    pub fn decode(raw: [u64; HEADER]) -> Self {
        Self {
            command: raw[0],
            len: raw[1],
            rows: raw[2],
            dim: raw[3],
            supervised: raw[4] != 0,
            start: raw[5],
            end: raw[6],
        }
    }
}

/// A follower's answer to a minibatch, once its block holds its weighted
/// gradient: its loss weighted by its share of the rows, a failure flag
/// (non-zero when it could not compute its part), and the seconds it was
/// busy from the header to its part (which the leader balances its own
/// share of the rows against). The leader sums the answers.
pub fn trailer(weighted_loss: f32, failed: bool, busy_s: f32) -> [f32; TRAILER] {
    [weighted_loss, f32::from(u8::from(failed)), busy_s]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_trailers_say_what_happened() {
        let h = Header {
            command: GRADIENT,
            len: 7,
            rows: 128,
            dim: 784,
            supervised: true,
            start: 72,
            end: 128,
        };
        assert_eq!(Header::decode(h.encode()), h);
        assert_eq!(trailer(0.25, true, 0.5), [0.25, 1.0, 0.5]);
    }
}
