//! Partitions received from the driver, by content hash. They outlive a
//! connection, so an executor that reconnects does not download them again,
//! and they are kept within a memory budget: past it, the least recently
//! used go first (the driver sends a partition again when asked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why a task's partition cannot be had on this executor.
#[derive(Debug, thiserror::Error)]
pub enum PartitionUnavailable {
    /// The bytes sent do not hash to the partition's content hash.
    #[error("partition bytes hash to {actual:032x}, expected {expected:032x}")]
    Hash {
        /// The hash of the bytes received.
        actual: u128,
        /// The partition's content hash.
        expected: u128,
    },
    /// The bytes do not decode as a partition.
    #[error("cannot decode the partition: {0}")]
    Decode(#[from] deepdist_core::data::PartitionError),
    /// The job's files could not be read from the shared filesystem.
    #[error("cannot read the shared data: {0}")]
    Load(#[from] deepdist_core::data::DataError),
    /// The shared data could not be cut as the job says.
    #[error("cannot cut the shared data: {0}")]
    Cut(#[from] deepdist_core::data::cut::CutError),
    /// The shared data has fewer partitions than the driver's.
    #[error("the shared data has {have} partitions, not {want}")]
    Missing {
        /// Partitions cut here.
        have: usize,
        /// Partitions the task needs.
        want: u32,
    },
    /// What this host read is not what the driver cut.
    #[error(
        "partition {partition} as read here hashes to {here:032x}, the driver's to {driver:032x}: \
         the shared data differs between this host and the driver's"
    )]
    SharedDiffers {
        /// The partition.
        partition: u32,
        /// Its hash as read here.
        here: u128,
        /// The driver's.
        driver: u128,
    },
}

use deepdist_core::data::{Dataset, Partition};
use xxhash_rust::xxh3::xxh3_128;

/// A thread-safe map from content hash to decoded partition data.
#[derive(Clone)]
pub struct PartitionCache {
    inner: Arc<Mutex<Entries>>,
}

struct Entries {
    budget: usize,
    bytes: usize,
    clock: u64,
    by_hash: HashMap<u128, (Arc<Dataset>, u64)>,
}

/// Bytes a partition takes in memory.
fn size(data: &Dataset) -> usize {
    data.len() * (data.dim() * 4 + 1)
}

impl Default for PartitionCache {
    /// A cache of at most a quarter of this machine's memory.
    fn default() -> Self {
        Self::with_budget(deepdist_core::job::default_model_bytes(1) as usize)
    }
}

impl PartitionCache {
    /// A cache holding at most `budget` bytes of partitions (and always the
    /// latest one, however large).
    pub fn with_budget(budget: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Entries {
                budget,
                bytes: 0,
                clock: 0,
                by_hash: HashMap::new(),
            })),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition with this hash, if cached.
    pub fn get(&self, hash: u128) -> Option<Arc<Dataset>> {
        let mut entries = self.entries();
        entries.clock += 1;
        let now = entries.clock;
        entries.by_hash.get_mut(&hash).map(|(data, used)| {
            *used = now;
            data.clone()
        })
    }

    /// Decodes partition bytes, checks they hash to `hash`, and caches them.
    pub fn insert_encoded(&self, hash: u128, bytes: &[u8]) -> Result<Arc<Dataset>, PartitionUnavailable> {
        let actual = xxh3_128(bytes);
        if actual != hash {
            return Err(PartitionUnavailable::Hash { actual, expected: hash });
        }
        let partition = Partition::decode(bytes)?;
        Ok(self.insert(hash, partition.data))
    }

    /// Caches a partition read here (from a shared filesystem), if it is
    /// the one the driver cut: its content hash must be `hash`.
    pub fn insert_read(&self, hash: u128, partition: Partition) -> Result<Arc<Dataset>, PartitionUnavailable> {
        if partition.content_hash() != hash {
            return Err(PartitionUnavailable::SharedDiffers {
                partition: partition.id,
                here: partition.content_hash(),
                driver: hash,
            });
        }
        Ok(self.insert(hash, partition.data))
    }

    fn insert(&self, hash: u128, data: Dataset) -> Arc<Dataset> {
        let data = Arc::new(data);
        let mut entries = self.entries();
        entries.clock += 1;
        let now = entries.clock;
        if let Some((old, _)) = entries.by_hash.insert(hash, (data.clone(), now)) {
            entries.bytes -= size(&old);
        }
        entries.bytes += size(&data);
        while entries.bytes > entries.budget {
            let oldest = entries
                .by_hash
                .iter()
                .filter(|(h, _)| **h != hash)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(h, _)| *h);
            let Some(oldest) = oldest else { break };
            if let Some((gone, _)) = entries.by_hash.remove(&oldest) {
                entries.bytes -= size(&gone);
                tracing::debug!(hash = format!("{oldest:032x}"), "partition dropped from the cache");
            }
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn partition(id: u32, rows: usize) -> Partition {
        let labels = (0..rows).map(|i| (i % 2) as u8).collect();
        let features = Array2::from_elem((rows, 3), id as f32);
        Partition::new(id, Dataset::new(features, labels, 2).unwrap())
    }

    #[test]
    fn caches_verified_partitions_only() {
        let p = partition(0, 2);
        let bytes = p.encode();
        let cache = PartitionCache::default();
        assert!(cache.insert_encoded(p.content_hash() ^ 1, &bytes).is_err());
        assert!(cache.get(p.content_hash()).is_none());
        cache.insert_encoded(p.content_hash(), &bytes).unwrap();
        assert_eq!(cache.get(p.content_hash()).unwrap().len(), 2);
    }

    #[test]
    fn past_its_budget_the_least_recently_used_partition_goes() {
        // Each partition: 10 rows of 3 features, 130 bytes; room for two.
        let cache = PartitionCache::with_budget(300);
        let [a, b, c] = [partition(1, 10), partition(2, 10), partition(3, 10)];
        for p in [&a, &b] {
            cache.insert_encoded(p.content_hash(), &p.encode()).unwrap();
        }
        assert!(cache.get(a.content_hash()).is_some(), "a used last");
        cache.insert_encoded(c.content_hash(), &c.encode()).unwrap();
        assert!(cache.get(b.content_hash()).is_none(), "b was the least recently used");
        assert!(cache.get(a.content_hash()).is_some());
        assert!(cache.get(c.content_hash()).is_some());
    }
}
