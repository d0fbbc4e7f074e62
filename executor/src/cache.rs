//! Partitions received from the driver, by content hash. They outlive a
//! connection, so an executor that reconnects does not download them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deepdist_common::data::{Dataset, Partition};
use xxhash_rust::xxh3::xxh3_128;

/// A thread-safe map from content hash to decoded partition data.
#[derive(Clone, Default)]
pub struct PartitionCache {
    inner: Arc<Mutex<HashMap<u128, Arc<Dataset>>>>,
}

impl PartitionCache {
    /// The partition with this hash, if cached.
    pub fn get(&self, hash: u128) -> Option<Arc<Dataset>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned()
    }

    /// Decodes partition bytes, checks they hash to `hash`, and caches them.
    pub fn insert_encoded(&self, hash: u128, bytes: &[u8]) -> Result<Arc<Dataset>, String> {
        let actual = xxh3_128(bytes);
        if actual != hash {
            return Err(format!("partition bytes hash to {actual:032x}, expected {hash:032x}"));
        }
        let partition = Partition::decode(bytes).map_err(|e| e.to_string())?;
        let data = Arc::new(partition.data);
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, data.clone());
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn caches_verified_partitions_only() {
        let data = Dataset::new(Array2::zeros((2, 3)), vec![0, 1], 2).unwrap();
        let p = Partition::new(0, data);
        let bytes = p.encode();
        let cache = PartitionCache::default();
        assert!(cache.insert_encoded(p.content_hash() ^ 1, &bytes).is_err());
        assert!(cache.get(p.content_hash()).is_none());
        cache.insert_encoded(p.content_hash(), &bytes).unwrap();
        assert_eq!(cache.get(p.content_hash()).unwrap().len(), 2);
    }
}
