//! The executor's end of compressed pushes: one encoder per stage, holding
//! what top-k has not sent yet, shared by the real executor and the
//! simulated one so both send the same bytes.

use bytes::Bytes;

use super::Compression;
use super::topk::{TopK, TopKStep, warmup_density};

/// How a stage's pushes are encoded: the job's `[train]` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushCodec {
    /// The encoding.
    pub compression: Compression,
    /// `topk`: the fraction of values sent once warmed up.
    pub topk_fraction: f64,
    /// `topk`: the norm an update is clipped to (for one executor).
    pub clip_norm: Option<f32>,
    /// `topk`: the executor keeps the momentum the server would otherwise
    /// apply (DGC's momentum correction; the server then steps without).
    pub momentum_correction: bool,
}

impl Default for PushCodec {
    fn default() -> Self {
        Self {
            compression: Compression::None,
            topk_fraction: 0.01,
            clip_norm: None,
            momentum_correction: false,
        }
    }
}

/// A push's values as they go out.
#[derive(Debug)]
pub enum Encoded<'a> {
    /// `f32` values as they are (no copy).
    Plain(&'a [f32]),
    /// Encoded bytes.
    Bytes(Bytes),
}

impl Encoded<'_> {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        match self {
            Encoded::Plain(v) => v.len() * 4,
            Encoded::Bytes(b) => b.len(),
        }
    }

    /// True when nothing is sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes one stage's pushes from one executor.
#[derive(Debug, Default)]
pub struct PushEncoder {
    codec: PushCodec,
    topk: TopK,
}

impl PushEncoder {
    /// An encoder with nothing held back yet.
    pub fn new(codec: PushCodec) -> Self {
        Self {
            codec,
            topk: TopK::default(),
        }
    }

    /// Its settings.
    pub fn codec(&self) -> PushCodec {
        self.codec
    }

    /// Encodes `values`, pushed in `epoch` (from 1) at `momentum` by one of
    /// `peers` executors.
    pub fn encode<'a>(&mut self, values: &'a [f32], epoch: u32, momentum: f32, peers: u32) -> Encoded<'a> {
        let c = self.codec;
        match c.compression {
            Compression::None => Encoded::Plain(values),
            Compression::Topk => {
                let step = TopKStep {
                    density: warmup_density(c.topk_fraction, epoch),
                    clip_norm: c.clip_norm.map(|n| n / (peers.max(1) as f32).sqrt()),
                    momentum: (c.momentum_correction && momentum > 0.0).then_some(momentum),
                };
                Encoded::Bytes(self.topk.push(values, step).encode())
            }
            dense => Encoded::Bytes(dense.encode(values)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_pushes_count_their_indices_and_warm_up() {
        let codec = PushCodec {
            compression: Compression::Topk,
            ..PushCodec::default()
        };
        let mut e = PushEncoder::new(codec);
        let values: Vec<f32> = (0..100_000).map(|i| (i as f32 * 0.01).sin()).collect();
        let first = e.encode(&values, 1, 0.9, 4).len();
        let steady = e.encode(&values, 8, 0.9, 4).len();
        assert!(first > 20 * steady, "epoch 1 sends 25%: {first} against {steady}");
        // 1% of the values: 1,000 values of four bytes and their gaps.
        assert!((5_000..=6_100).contains(&steady), "{steady} bytes");
        assert!(values.len() * 4 / steady >= 65, "at least 65× fewer bytes");
        assert!(matches!(
            PushEncoder::new(PushCodec::default()).encode(&values, 1, 0.0, 1),
            Encoded::Plain(_)
        ));
    }
}
