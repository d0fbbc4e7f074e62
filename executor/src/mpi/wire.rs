//! What the leader and its followers say to each other. Every exchange
//! starts with a [`Header`] from the leader to each follower; its payloads
//! follow as separate messages, in the order given here.

/// The group stops: the followers return and MPI is finalised.
pub const STOP: u64 = 0;
/// A new [`crate::group::Setup`], postcard-encoded, follows (`len` bytes).
pub const SETUP: u64 = 1;
/// A minibatch: the parameters (`len` values), the follower's rows of the
/// features (`rows × dim`), their labels (when `supervised`); every rank
/// then joins one sum-reduction of `len + 2` values to the leader (see
/// [`Contribution`]).
pub const GRADIENT: u64 = 2;

/// Values in a contribution after the gradient: the weighted loss, and a
/// failure flag (non-zero when a follower could not compute its part).
pub const TRAILER: usize = 2;

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
}

impl Header {
    /// The header as sent.
    pub fn encode(&self) -> [u64; 5] {
        [self.command, self.len, self.rows, self.dim, u64::from(self.supervised)]
    }

    /// The header as received.
    pub fn decode(raw: [u64; 5]) -> Self {
        Self {
            command: raw[0],
            len: raw[1],
            rows: raw[2],
            dim: raw[3],
            supervised: raw[4] != 0,
        }
    }
}

/// Fills `out` (`gradient.len() + TRAILER` values) with one rank's part of
/// the reduction: its gradient and loss weighted by its share of the rows.
pub fn contribution(out: &mut [f32], gradient: &[f32], loss: f32, weight: f32, failed: bool) {
    let len = gradient.len();
    out[..len].iter_mut().zip(gradient).for_each(|(o, g)| *o = g * weight);
    out[len] = loss * weight;
    out[len + 1] = f32::from(u8::from(failed));
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
        };
        assert_eq!(Header::decode(h.encode()), h);
        // Two ranks with 3 and 1 of 4 rows: the weighted sum is the mean over all 4.
        let (mut a, mut b) = (vec![0.0; 2 + TRAILER], vec![0.0; 2 + TRAILER]);
        contribution(&mut a, &[1.0, 2.0], 0.5, 0.75, false);
        contribution(&mut b, &[5.0, 6.0], 1.5, 0.25, false);
        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(sum, vec![2.0, 3.0, 0.75, 0.0]);
    }
}
