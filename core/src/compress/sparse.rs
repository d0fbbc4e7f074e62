//! A sparse vector on the wire: the values at a few indices of a longer
//! vector, every other value zero. Top-k pushes travel this way.
//!
//! Layout, little-endian: the vector's length (`u32`), the number of
//! values `k` (`u32`), the `k` values (`f32`), then the `k` indices in
//! increasing order as LEB128 gaps (the first index itself, then each
//! index minus the one before it). At 1% density most gaps fit one byte,
//! so a value costs about five bytes instead of eight for a plain index.

use bytes::{BufMut, Bytes, BytesMut};

/// A defect in sparse bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparseError {
    /// The bytes end before the layout says they do.
    #[error("sparse vector truncated: {0}")]
    Truncated(&'static str),
    /// The vector is not as long as the receiver's.
    #[error("sparse vector of length {got} where {expected} values were expected")]
    Length {
        /// The length the bytes give.
        got: usize,
        /// The length expected.
        expected: usize,
    },
    /// An index past the end or not above the one before.
    #[error("sparse index {index} out of order or past the length {len}")]
    Index {
        /// The offending index.
        index: u64,
        /// The vector's length.
        len: usize,
    },
    /// Bytes left over after the last index.
    #[error("{0} bytes after the sparse vector's last index")]
    Trailing(usize),
}

/// A sparse vector: `values[j]` sits at `indices[j]`; indices increase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sparse {
    /// The dense vector's length.
    pub len: usize,
    /// Where the values sit, increasing.
    pub indices: Vec<u32>,
    /// The values.
    pub values: Vec<f32>,
}

impl Sparse {
    /// The wire bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + self.values.len() * 6);
        out.put_u32_le(self.len as u32);
        out.put_u32_le(self.values.len() as u32);
        for v in &self.values {
            out.put_f32_le(*v);
        }
        let mut previous = 0u32;
        for (j, &i) in self.indices.iter().enumerate() {
            let gap = if j == 0 { i } else { i - previous };
            put_varint(&mut out, gap);
            previous = i;
        }
        out.freeze()
    }

    /// Reads wire bytes, checking every index against the length.
    pub fn decode(bytes: &[u8]) -> Result<Self, SparseError> {
        let Header {
            len,
            k,
            values,
            indices,
        } = Header::read(bytes)?;
        let mut rest = indices;
        let mut sparse = Sparse {
            len,
            indices: Vec::with_capacity(k),
            values: values
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        let mut previous: Option<u64> = None;
        for _ in 0..k {
            let (gap, used) = read_varint(rest)?;
            rest = &rest[used..];
            let index = match previous {
                None => u64::from(gap),
                Some(p) if gap > 0 => p + u64::from(gap),
                Some(p) => return Err(SparseError::Index { index: p, len }),
            };
            if index >= len as u64 {
                return Err(SparseError::Index { index, len });
            }
            sparse.indices.push(index as u32);
            previous = Some(index);
        }
        if !rest.is_empty() {
            return Err(SparseError::Trailing(rest.len()));
        }
        Ok(sparse)
    }

    /// Writes the dense vector into `out`, which must be as long.
    pub fn scatter_into(&self, out: &mut [f32]) -> Result<(), SparseError> {
        if out.len() != self.len {
            return Err(SparseError::Length {
                got: self.len,
                expected: out.len(),
            });
        }
        out.fill(0.0);
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            out[i as usize] = v;
        }
        Ok(())
    }

    /// The parts of the vector within each of `ranges` (contiguous,
    /// increasing), indices counted from each range's start.
    pub fn split(&self, ranges: &[std::ops::Range<usize>]) -> Vec<Sparse> {
        let mut parts = Vec::with_capacity(ranges.len());
        let mut j = 0;
        for range in ranges {
            let mut part = Sparse {
                len: range.len(),
                ..Sparse::default()
            };
            while j < self.indices.len() && (self.indices[j] as usize) < range.end {
                if (self.indices[j] as usize) >= range.start {
                    part.indices.push(self.indices[j] - range.start as u32);
                    part.values.push(self.values[j]);
                }
                j += 1;
            }
            parts.push(part);
        }
        parts
    }
}

/// The fixed part of the layout, and the bytes of the values and indices.
struct Header<'a> {
    len: usize,
    k: usize,
    values: &'a [u8],
    indices: &'a [u8],
}

impl<'a> Header<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, SparseError> {
        let word = |at: usize| -> Result<usize, SparseError> {
            let b = bytes.get(at..at + 4).ok_or(SparseError::Truncated("header"))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (len, k) = (word(0)?, word(4)?);
        if k > len {
            return Err(SparseError::Index { index: k as u64, len });
        }
        let values_end = 8 + k * 4;
        let values = bytes.get(8..values_end).ok_or(SparseError::Truncated("values"))?;
        Ok(Header {
            len,
            k,
            values,
            indices: &bytes[values_end..],
        })
    }
}

fn put_varint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A LEB128 `u32` and the bytes it took.
fn read_varint(bytes: &[u8]) -> Result<(u32, usize), SparseError> {
    let mut v = 0u64;
    for (n, &b) in bytes.iter().enumerate().take(5) {
        v |= u64::from(b & 0x7f) << (7 * n);
        if b & 0x80 == 0 {
            return u32::try_from(v)
                .map(|v| (v, n + 1))
                .map_err(|_| SparseError::Index { index: v, len: 0 });
        }
    }
    Err(SparseError::Truncated("indices"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Sparse {
        Sparse {
            len: 100_000,
            indices: vec![0, 5, 127, 128, 300, 70_000, 99_999],
            values: vec![1.0, -2.5, 3.0, 0.25, -0.125, 7.0, f32::MIN_POSITIVE],
        }
    }

    #[test]
    fn round_trips_and_scatters() {
        let s = example();
        let bytes = s.encode();
        assert_eq!(Sparse::decode(&bytes).unwrap(), s);
        let mut dense = vec![9.0; s.len];
        s.scatter_into(&mut dense).unwrap();
        assert_eq!(dense.iter().filter(|v| **v != 0.0).count(), 7);
        assert_eq!((dense[127], dense[70_000], dense[1]), (3.0, 7.0, 0.0));
        assert!(s.scatter_into(&mut [0.0; 3]).is_err());
    }

    #[test]
    fn small_gaps_take_one_byte() {
        let s = Sparse {
            len: 10_000,
            indices: (0..100).map(|i| i * 100).collect(),
            values: vec![1.0; 100],
        };
        assert_eq!(s.encode().len(), 8 + 100 * 4 + 100);
    }

    #[test]
    fn defects_are_refused_by_name() {
        let bytes = example().encode();
        for cut in [3, 8, 20, bytes.len() - 1] {
            assert!(
                matches!(Sparse::decode(&bytes[..cut]), Err(SparseError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(Sparse::decode(&longer), Err(SparseError::Trailing(1)));
        let past = Sparse {
            len: 10,
            indices: vec![10],
            values: vec![1.0],
        };
        assert!(matches!(
            Sparse::decode(&past.encode()),
            Err(SparseError::Index { index: 10, .. })
        ));
        let mut repeated = example().encode().to_vec();
        let at = 8 + 7 * 4 + 1; // the second gap (5) becomes 0: index 0 twice
        repeated[at] = 0;
        assert!(matches!(Sparse::decode(&repeated), Err(SparseError::Index { .. })));
    }

    #[test]
    fn splits_by_ranges_with_local_indices() {
        let parts = example().split(&[0..128, 128..70_000, 70_000..100_000]);
        assert_eq!(parts[0].indices, [0, 5, 127]);
        assert_eq!(parts[1].indices, [0, 172]);
        assert_eq!(parts[1].values, [0.25, -0.125]);
        assert_eq!(parts[2].indices, [0, 29_999]);
        assert_eq!(parts.iter().map(|p| p.len).sum::<usize>(), 100_000);
    }
}
