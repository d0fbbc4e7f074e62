//! Partitions read from a filesystem every host mounts (`data.shared`): the
//! executor loads the job's files and cuts them exactly as the driver did
//! (same settings, same seed), and hands on the partition asked for; the
//! cache then checks it against the driver's content hash.

use std::sync::Arc;

use deepdist_core::data::Partition;
use deepdist_core::data::cut::cut;
use deepdist_core::data::load;
use deepdist_core::job::JobSpec;

use crate::cache::PartitionUnavailable;

/// The partitions of the last job read, so that each of its partitions
/// does not load the files again.
#[derive(Default)]
pub struct SharedCuts {
    last: Option<(u64, Arc<Vec<Partition>>)>,
}

impl SharedCuts {
    /// Partition `index` of job `job` (defined by `spec`), read from its shared path.
    pub fn partition(&mut self, job: u64, spec: &JobSpec, index: u32) -> Result<Partition, PartitionUnavailable> {
        let parts = match &self.last {
            Some((j, parts)) if *j == job => parts.clone(),
            _ => {
                let path = spec.data.path.as_deref().unwrap_or_default();
                tracing::info!(job, path, "reading the job's data from the shared filesystem");
                let loaded = load::load(&spec.data, None)?;
                let (train, test) = (Arc::new(loaded.train), Arc::new(loaded.test));
                let cut = cut(&spec.data, spec.train.seed, &train, &test)?;
                let parts: Arc<Vec<Partition>> =
                    Arc::new(cut.partitions.into_iter().map(Partition::without_encoding).collect());
                self.last = Some((job, parts.clone()));
                parts
            }
        };
        parts.get(index as usize).cloned().ok_or(PartitionUnavailable::Missing {
            have: parts.len(),
            want: index + 1,
        })
    }
}
