//! RDD-like partitions: a dataset cut into `P` balanced shards, each with an
//! id and a content hash, encodable to bytes for shipping to executors.
//!
//! Wire layout (little-endian): magic `DDPT`, format version `u8`, id `u32`,
//! rows `u32`, cols `u32`, classes `u16`, feature encoding `u8`, then the
//! `rows × cols` features, then `rows` label bytes. Tensors travel as raw
//! bytes, never as serde sequences.
//!
//! Features are `f32`, or one byte each when every value is exactly a byte
//! divided by 255 (MNIST and any byte data scaled to `unit`): a quarter of
//! the bytes to ship, which shortened the first epoch of the default job,
//! when executors receive their partitions. The choice is checked value by
//! value on encoding, so decoding gives back the same bits either way.

use bytes::Bytes;
use ndarray::Array2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use super::dataset::{Dataset, DatasetError};

const MAGIC: &[u8; 4] = b"DDPT";
const FORMAT_VERSION: u8 = 2;
const HEADER_LEN: usize = 4 + 1 + 4 + 4 + 4 + 2 + 1;
/// Features as little-endian `f32`.
const FEATURES_F32: u8 = 0;
/// Features as bytes `k`, each standing for `k / 255`.
const FEATURES_UNIT_BYTES: u8 = 1;

/// What can be wrong with partitioning or with partition bytes.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Zero partitions, or more partitions than examples.
    #[error("cannot cut {examples} examples into {partitions} partitions (need 1 ≤ partitions ≤ examples)")]
    BadCount {
        /// Partitions asked for.
        partitions: usize,
        /// Examples available.
        examples: usize,
    },
    /// The bytes are not a partition of a format this build reads.
    #[error("not a partition: {0}")]
    BadHeader(String),
    /// The byte length disagrees with the header.
    #[error("partition {id}: {actual} bytes, header implies {expected}")]
    BadLength {
        /// Partition id from the header.
        id: u32,
        /// Bytes the header implies.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Labels and features disagree.
    #[error("partition {id}: {source}")]
    Dataset {
        /// Partition id.
        id: u32,
        /// What is wrong.
        source: DatasetError,
    },
}

/// One shard of a dataset.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Position of this partition among its siblings.
    pub id: u32,
    /// Its examples.
    pub data: Dataset,
    hash: u128,
    /// The encoding the hash was taken of, kept by the driver's partitions
    /// so that shipping them does not encode them again.
    encoded: Option<Bytes>,
}

/// Partitions are equal when their contents are, whether or not one keeps
/// its encoding.
impl PartialEq for Partition {
    fn eq(&self, other: &Self) -> bool {
        (self.id, self.hash) == (other.id, other.hash) && self.data == other.data
    }
}

impl Partition {
    /// Wraps a dataset as partition `id`, computing its content hash.
    pub fn new(id: u32, data: Dataset) -> Self {
        let encoded = Bytes::from(encode_parts(id, &data));
        let hash = xxh3_128(&encoded);
        Self {
            id,
            data,
            hash,
            encoded: Some(encoded),
        }
    }

    /// The partition without the encoding it keeps for shipping (an
    /// executor that cut it itself never ships it).
    pub fn without_encoding(self) -> Self {
        Self { encoded: None, ..self }
    }

    /// A 128-bit hash of the encoded partition; executors cache by it.
    pub fn content_hash(&self) -> u128 {
        self.hash
    }

    /// The bytes that travel to executors.
    pub fn encode(&self) -> Bytes {
        self.encoded
            .clone()
            .unwrap_or_else(|| Bytes::from(encode_parts(self.id, &self.data)))
    }

    /// Decodes bytes made by [`Partition::encode`], checking every length.
    pub fn decode(bytes: &[u8]) -> Result<Self, PartitionError> {
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(PartitionError::BadHeader("missing DDPT magic".into()));
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(PartitionError::BadHeader(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                bytes[4]
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let id = u32_at(5);
        let rows = u32_at(9) as usize;
        let cols = u32_at(13) as usize;
        let classes = usize::from(u16::from_le_bytes([bytes[17], bytes[18]]));
        let width = match bytes[19] {
            FEATURES_F32 => 4,
            FEATURES_UNIT_BYTES => 1,
            other => return Err(PartitionError::BadHeader(format!("unknown feature encoding {other}"))),
        };
        let expected = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(width))
            .and_then(|n| n.checked_add(HEADER_LEN + rows))
            .ok_or_else(|| PartitionError::BadHeader(format!("{rows}×{cols} overflows")))?;
        if bytes.len() != expected {
            return Err(PartitionError::BadLength {
                id,
                expected,
                actual: bytes.len(),
            });
        }
        let feature_end = HEADER_LEN + rows * cols * width;
        let raw = &bytes[HEADER_LEN..feature_end];
        let features: Vec<f32> = if width == 1 {
            raw.iter().map(|&k| unit(k)).collect()
        } else {
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let features =
            Array2::from_shape_vec((rows, cols), features).map_err(|e| PartitionError::BadHeader(e.to_string()))?;
        let labels = bytes[feature_end..].to_vec();
        let data = Dataset::new(features, labels, classes).map_err(|source| PartitionError::Dataset { id, source })?;
        Ok(Self {
            id,
            data,
            hash: xxh3_128(bytes),
            encoded: None,
        })
    }
}

/// The value a unit byte stands for, computed as the loaders scale bytes.
fn unit(k: u8) -> f32 {
    f32::from(k) / 255.0
}

/// Every feature as its unit byte, if every one has one. Two passes that
/// vectorise (convert, then compare all) instead of one that stops early.
fn unit_bytes(features: ndarray::ArrayView2<'_, f32>) -> Option<Vec<u8>> {
    // `as u8` saturates (NaN gives 0), and the comparison rejects whatever
    // did not convert exactly.
    let bytes: Vec<u8> = features.iter().map(|&v| (v * 255.0 + 0.5) as u8).collect();
    let exact = bytes
        .iter()
        .zip(features.iter())
        .fold(true, |all, (&k, &v)| all & (unit(k).to_bits() == v.to_bits()));
    exact.then_some(bytes)
}

fn encode_parts(id: u32, data: &Dataset) -> Vec<u8> {
    let features = data.features();
    let unit_bytes = unit_bytes(features);
    let width = if unit_bytes.is_some() { 1 } else { 4 };
    let mut out = Vec::with_capacity(HEADER_LEN + features.len() * width + data.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.dim() as u32).to_le_bytes());
    out.extend_from_slice(&(data.classes() as u16).to_le_bytes());
    match unit_bytes {
        Some(bytes) => {
            out.push(FEATURES_UNIT_BYTES);
            out.extend_from_slice(&bytes);
        }
        None => {
            out.push(FEATURES_F32);
            for v in features.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(data.labels());
    out
}

/// Cuts `data` into `count` partitions whose sizes differ by at most one.
/// With `shuffle`, rows are permuted first by a generator seeded with `seed`,
/// so the same seed always gives the same partitions.
pub fn split(data: &Dataset, count: usize, seed: u64, shuffle: bool) -> Result<Vec<Partition>, PartitionError> {
    if count == 0 || count > data.len() {
        return Err(PartitionError::BadCount {
            partitions: count,
            examples: data.len(),
        });
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    if shuffle {
        order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    }
    let (base, extra) = (data.len() / count, data.len() % count);
    // Partition i starts after i base-sized ones and the extra rows of those before it.
    let start = |i: usize| i * base + i.min(extra);
    // Copying, encoding and hashing each partition is independent work: on every core.
    Ok((0..count)
        .into_par_iter()
        .map(|i| Partition::new(i as u32, data.select(&order[start(i)..start(i + 1)])))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        let x = Array2::from_shape_fn((n, 3), |(i, j)| (i * 3 + j) as f32 * 0.5);
        Dataset::new(x, (0..n).map(|i| (i % 4) as u8).collect(), 4).unwrap()
    }

    #[test]
    fn splits_balanced_and_complete() {
        let d = toy(10);
        let parts = split(&d, 3, 7, true).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.data.len()).collect();
        assert_eq!(sizes, vec![4, 3, 3]);
        // Every row appears exactly once across partitions.
        let mut firsts: Vec<u32> = parts
            .iter()
            .flat_map(|p| p.data.features().column(0).to_vec())
            .map(|v| (v * 2.0) as u32 / 3)
            .collect();
        firsts.sort();
        assert_eq!(firsts, (0..10).collect::<Vec<_>>());
        assert!(split(&d, 0, 0, false).is_err());
        assert!(split(&d, 11, 0, false).is_err());
    }

    #[test]
    fn deterministic_for_a_seed_and_unshuffled_keeps_order() {
        let d = toy(50);
        assert_eq!(split(&d, 4, 1, true).unwrap(), split(&d, 4, 1, true).unwrap());
        assert_ne!(split(&d, 4, 1, true).unwrap(), split(&d, 4, 2, true).unwrap());
        let plain = split(&d, 5, 1, false).unwrap();
        assert_eq!(plain[1].data.labels()[0], d.labels()[10]);
    }

    #[test]
    fn only_exact_unit_bytes_travel_as_bytes() {
        let one = |v: f32| unit_bytes(Array2::from_elem((1, 1), v).view());
        for k in [0u8, 1, 3, 128, 254, 255] {
            assert_eq!(one(unit(k)), Some(vec![k]));
        }
        for v in [-0.0, f32::NAN, 1.5, -1.0 / 255.0, 0.5, 1e-9, f32::INFINITY] {
            assert_eq!(one(v), None, "{v} is no byte ÷ 255");
        }
    }

    #[test]
    fn encodes_and_decodes_with_the_same_hash() {
        let parts = split(&toy(9), 2, 3, true).unwrap();
        for p in &parts {
            let back = Partition::decode(&p.encode()).unwrap();
            assert_eq!(&back, p);
            assert_eq!(back.content_hash(), p.content_hash());
        }
        assert_ne!(parts[0].content_hash(), parts[1].content_hash());
    }

    #[test]
    fn byte_data_travels_as_bytes_and_comes_back_bit_for_bit() {
        let pixels: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        let x = Array2::from_shape_fn((32, 16), |(i, j)| unit(pixels[i * 16 + j]));
        let d = Dataset::new(x, (0..32).map(|i| (i % 3) as u8).collect(), 3).unwrap();
        let p = Partition::new(0, d.clone());
        let bytes = p.encode().to_vec();
        assert_eq!(bytes.len(), HEADER_LEN + 32 * 16 + 32, "one byte per feature");
        let back = Partition::decode(&bytes).unwrap();
        let same_bits = back
            .data
            .features()
            .iter()
            .zip(d.features())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits && back.content_hash() == p.content_hash());
        // One value that is no byte ÷ 255 keeps the whole partition in f32.
        let mut x = d.features().to_owned();
        x[[3, 3]] = 0.5;
        let mixed = Partition::new(1, Dataset::new(x, d.labels().to_vec(), 3).unwrap());
        assert_eq!(mixed.encode().len(), HEADER_LEN + 32 * 16 * 4 + 32);
        assert_eq!(Partition::decode(&mixed.encode()).unwrap(), mixed);
        let mut unknown = bytes.clone();
        unknown[19] = 7;
        assert!(
            Partition::decode(&unknown)
                .unwrap_err()
                .to_string()
                .contains("encoding 7")
        );
    }

    #[test]
    fn rejects_corrupt_bytes() {
        let bytes = split(&toy(4), 1, 0, false).unwrap()[0].encode().to_vec();
        assert!(matches!(
            Partition::decode(&bytes[..10]),
            Err(PartitionError::BadHeader(_))
        ));
        assert!(matches!(
            Partition::decode(&bytes[..bytes.len() - 1]),
            Err(PartitionError::BadLength { .. })
        ));
        let mut wrong_version = bytes.clone();
        wrong_version[4] = 9;
        assert!(
            Partition::decode(&wrong_version)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        let mut bad_label = bytes.clone();
        *bad_label.last_mut().unwrap() = 200;
        assert!(matches!(
            Partition::decode(&bad_label),
            Err(PartitionError::Dataset { .. })
        ));
        let mut huge = bytes.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Partition::decode(&huge).is_err());
    }
}
