//! What the leader and its followers say to each other. Every exchange
//! starts with a [`Header`] from the leader to each follower; its payloads
//! follow as separate messages, in the order given here.

/// The group stops: the followers return and MPI is finalised.
pub const STOP: u64 = 0;
/// A new [`crate::group::Setup`], postcard-encoded, follows (`len` bytes).
pub const SETUP: u64 = 1;
/// A minibatch: the parameters (`len` values), the follower's rows
/// `start..end` of the features (`dim` values each), their labels (when
/// `supervised`); every rank then joins one sum-reduction of
/// `len + TRAILER` values to the leader (see [`contribution`]).
pub const GRADIENT: u64 = 2;

/// Values in a contribution after the gradient: the weighted loss, a
/// failure flag (non-zero when a follower could not compute its part), and
/// the seconds the follower was busy from the header to its part (which
/// the leader balances its own share of the rows against).
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

/// Fills `out` (`gradient.len() + TRAILER` values) with a follower's part
/// of the reduction: its gradient and loss weighted by its share of the
/// rows, and the seconds it was `busy`.
pub fn contribution(out: &mut [f32], gradient: &[f32], loss: f32, weight: f32, busy: f32) {
    let len = gradient.len();
    crate::group::weighted_into(&mut out[..len], gradient, weight);
    trailer(out, len, loss * weight, false, busy);
}

/// Fills the values after the gradient's `len`.
pub fn trailer(out: &mut [f32], len: usize, weighted_loss: f32, failed: bool, busy: f32) {
    out[len] = weighted_loss;
    out[len + 1] = f32::from(u8::from(failed));
    out[len + 2] = busy;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_contributions_sum_to_the_minibatch_mean() {
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
        // Two ranks with 3 and 1 of 4 rows: the weighted sum is the mean over all 4.
        let (mut a, mut b) = (vec![0.0; 2 + TRAILER], vec![0.0; 2 + TRAILER]);
        contribution(&mut a, &[1.0, 2.0], 0.5, 0.75, 0.0);
        contribution(&mut b, &[5.0, 6.0], 1.5, 0.25, 0.5);
        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(sum, vec![2.0, 3.0, 0.75, 0.0, 0.5]);
    }
}
