//! How values travel between executors and the parameter server
//! (`train.compression` for pushes, `train.fetch_compression` for
//! parameters): as they are (`f32`), rounded to 16 bits — IEEE half
//! precision (`fp16`: 11 significant bits, values up to 65,504) or bfloat16
//! (`bf16`: 8 significant bits, the range of `f32`) — or, for pushes only,
//! as their largest values (`topk`, [`topk`], encoded as a [`Sparse`]
//! vector). The receiver widens them back to `f32`, so the server's
//! parameters and optimizer state stay `f32`.

mod push;
pub mod sparse;
pub mod topk;

pub use push::{Encoded, PushCodec, PushEncoder};
pub use sparse::{Sparse, SparseError};

use bytes::Bytes;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::tensor::{Tensor, TensorError};

/// Encoded values that do not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Dense values of the wrong length.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A sparse vector that does not read.
    #[error(transparent)]
    Sparse(#[from] SparseError),
}

/// The encoding of pushed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Little-endian `f32`, four bytes a value.
    #[default]
    None,
    /// IEEE 754 half precision, two bytes a value.
    Fp16,
    /// bfloat16 (the top half of an `f32`), two bytes a value.
    Bf16,
    /// The largest values of the update and the rest kept for later
    /// (pushes only): about five bytes a value sent.
    Topk,
}

impl Compression {
    /// Every encoding, for listings and tests.
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Fp16,
        Compression::Bf16,
        Compression::Topk,
    ];

    /// Its name in job files.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Fp16 => "fp16",
            Compression::Bf16 => "bf16",
            Compression::Topk => "topk",
        }
    }

    /// Bytes each value takes, for the encodings that send every value.
    pub fn bytes_per_value(self) -> Option<usize> {
        match self {
            Compression::None => Some(4),
            Compression::Fp16 | Compression::Bf16 => Some(2),
            Compression::Topk => None,
        }
    }

    /// `values` encoded, little-endian. `topk` without an executor's
    /// residual has nothing to hold back: every non-zero value is sent.
    pub fn encode(self, values: &[f32]) -> Bytes {
        match self {
            Compression::None => Tensor::from_f32(values).0,
            Compression::Fp16 => {
                let mut half = vec![f16::ZERO; values.len()];
                half.convert_from_f32_slice(values);
                Bytes::from(half.iter().flat_map(|h| h.to_le_bytes()).collect::<Vec<u8>>())
            }
            Compression::Bf16 => {
                let mut half = vec![bf16::ZERO; values.len()];
                half.convert_from_f32_slice(values);
                Bytes::from(half.iter().flat_map(|h| h.to_le_bytes()).collect::<Vec<u8>>())
            }
            Compression::Topk => {
                let len = values.len();
                let (indices, values) = values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(i, v)| (i as u32, *v))
                    .unzip();
                Sparse { len, indices, values }.encode()
            }
        }
    }

    /// `bytes` widened to `f32` values, however many they hold (a view of
    /// them when they are `f32` already).
    pub fn widen(self, bytes: Bytes) -> Result<Tensor, DecodeError> {
        let len = match self.bytes_per_value() {
            Some(4) => return Ok(Tensor(bytes)),
            Some(width) if bytes.len().is_multiple_of(width) => bytes.len() / width,
            Some(_) => {
                return Err(TensorError::Length {
                    bytes: bytes.len(),
                    expected: bytes.len() / 2,
                }
                .into());
            }
            None => Sparse::decode(&bytes)?.len,
        };
        let mut out = vec![0.0; len];
        self.decode_into(&bytes, &mut out)?;
        Ok(Tensor::from_f32(&out))
    }

    /// Decodes `bytes` into `out`, which must hold exactly their values.
    pub fn decode_into(self, bytes: &[u8], out: &mut [f32]) -> Result<(), DecodeError> {
        let Some(width) = self.bytes_per_value() else {
            return Ok(Sparse::decode(bytes)?.scatter_into(out)?);
        };
        if bytes.len() != out.len() * width {
            return Err(TensorError::Length {
                bytes: bytes.len(),
                expected: out.len(),
            }
            .into());
        }
        let pairs = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        match self {
            Compression::None => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Compression::Fp16 => {
                let half: Vec<f16> = pairs.map(f16::from_bits).collect();
                half.convert_to_f32_slice(out);
            }
            Compression::Bf16 => {
                let half: Vec<bf16> = pairs.map(bf16::from_bits).collect();
                half.convert_to_f32_slice(out);
            }
            Compression::Topk => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_encodings_halve_the_bytes_and_round_within_their_precision() {
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.37).sin() * 0.01 * (1 + i % 7) as f32)
            .collect();
        for (c, relative) in [
            (Compression::None, 0.0),
            (Compression::Fp16, 1.0 / 2048.0),
            (Compression::Bf16, 1.0 / 256.0),
        ] {
            let bytes = c.encode(&values);
            assert_eq!(Some(bytes.len()), c.bytes_per_value().map(|w| values.len() * w));
            let mut back = vec![0.0; values.len()];
            c.decode_into(&bytes, &mut back).unwrap();
            for (v, b) in values.iter().zip(&back) {
                // fp16 leaves its normal range below 6e-5: there the error is absolute.
                let bound = (v.abs() * relative).max(if c == Compression::Fp16 { 6e-8 } else { 0.0 });
                assert!((v - b).abs() <= bound, "{}: {v} became {b}", c.name());
            }
        }
        let mut short = vec![0.0; 3];
        assert!(Compression::Fp16.decode_into(&[0; 4], &mut short).is_err());
    }

    #[test]
    fn widening_gives_f32_tensors() {
        let values = [0.5f32, -1.0, 2.0];
        for c in Compression::ALL {
            assert_eq!(c.widen(c.encode(&values)).unwrap().to_vec().unwrap(), values);
        }
        assert!(Compression::Fp16.widen(Bytes::from_static(&[0; 3])).is_err());
    }

    #[test]
    fn topk_without_a_residual_sends_every_non_zero_value() {
        let values = [0.0, 1.5, 0.0, -2.0];
        let bytes = Compression::Topk.encode(&values);
        let mut back = [9.0; 4];
        Compression::Topk.decode_into(&bytes, &mut back).unwrap();
        assert_eq!(back, values);
        assert!(Compression::Topk.decode_into(&bytes, &mut [0.0; 3]).is_err());
    }

    #[test]
    fn names_are_those_of_job_files() {
        for c in Compression::ALL {
            let parsed: Compression = serde_json::from_str(&format!("\"{}\"", c.name())).unwrap();
            assert_eq!(parsed, c);
        }
    }
}
