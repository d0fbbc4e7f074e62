//! Parameters and updates as raw little-endian `f32` bytes: the form in which
//! they are stored in frames and checkpoints, kept apart from the wire so
//! that training code can read a received tensor without knowing the network.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A tensor whose bytes do not hold the values expected.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The byte length is not four bytes per expected value.
    #[error("tensor of {bytes} bytes where {expected} values were expected")]
    Length {
        /// Bytes held.
        bytes: usize,
        /// Values expected.
        expected: usize,
    },
}

/// Raw little-endian `f32` values. Shared bytes, so that a tensor decoded
/// from a frame is a view of the frame rather than a copy of megabytes.
#[derive(Clone, PartialEq, Default)]
pub struct Tensor(pub Bytes);

impl Serialize for Tensor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Bytes::from(serde_bytes::ByteBuf::deserialize(d)?.into_vec())))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} values)", self.0.len() / 4)
    }
}

impl Tensor {
    /// Encodes values.
    pub fn from_f32(values: &[f32]) -> Self {
        if cfg!(target_endian = "little") {
            // The in-memory bytes already are the wire format: one memcpy.
            return Self(Bytes::copy_from_slice(bytemuck::cast_slice(values)));
        }
        Self(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into())
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes into `out`, which must have exactly [`Tensor::len`] values.
    pub fn read_into(&self, out: &mut [f32]) -> Result<(), TensorError> {
        if self.0.len() != out.len() * 4 {
            return Err(TensorError::Length {
                bytes: self.0.len(),
                expected: out.len(),
            });
        }
        if cfg!(target_endian = "little") {
            bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(&self.0);
            return Ok(());
        }
        for (o, c) in out.iter_mut().zip(self.0.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    /// The values without copying, when the bytes happen to be aligned for
    /// `f32` on a little-endian machine (the usual case for decoded frames).
    pub fn as_f32(&self) -> Option<&[f32]> {
        if cfg!(target_endian = "little") {
            bytemuck::try_cast_slice(&self.0).ok()
        } else {
            None
        }
    }

    /// Decodes into a new vector.
    pub fn to_vec(&self) -> Result<Vec<f32>, TensorError> {
        let mut out = vec![0.0; self.len()];
        self.read_into(&mut out)?;
        Ok(out)
    }
}
