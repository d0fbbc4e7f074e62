//! Why a job failed, as the driver reports it: one variant per cause, with
//! its source kept.

use std::path::PathBuf;

use deepdist_core::checkpoint::CheckpointError;
use deepdist_core::data::{DataError, PartitionError};
use deepdist_core::model::ModelError;
use deepdist_core::optim::OptimError;
use deepdist_wire::proto::ProtoError;

/// What stopped a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// MNIST could not be loaded.
    #[error("cannot load the dataset: {0}")]
    Data(#[from] deepdist_wire::fetch::LoadError),
    /// The job's own dataset could not be loaded, or does not fit its settings.
    #[error("cannot load the dataset: {0}")]
    Files(#[from] DataError),
    /// The data could not be cut as the job says.
    #[error("cannot cut the dataset: {0}")]
    Cut(#[from] deepdist_core::data::cut::CutError),
    /// The model does not fit the limits once the data's shape is known.
    #[error(transparent)]
    Job(#[from] deepdist_core::job::JobError),
    /// The dataset could not be cut into the job's partitions.
    #[error("cannot partition the dataset: {0}")]
    Partition(#[from] PartitionError),
    /// A partition does not fit in one frame.
    #[error("partition {partition} is {mib} MiB, above the maximum frame of {max_mib} MiB: use more partitions")]
    PartitionTooLarge {
        /// The partition.
        partition: u32,
        /// Its encoded size.
        mib: usize,
        /// The frame limit.
        max_mib: usize,
    },
    /// The job's model could not be built or used.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The optimizer could not be built or resumed.
    #[error("optimizer: {0}")]
    Optimizer(#[from] OptimError),
    /// A message could not be encoded.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// Metrics could not be written.
    #[error("{}: {source}", path.display())]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A model file could not be saved.
    #[error("cannot save the model: {0}")]
    Save(#[from] CheckpointError),
    /// The driver's checkpoint could not be written.
    #[error("cannot write the driver's checkpoint: {0}")]
    CheckpointWrite(CheckpointError),
    /// The checkpoint to resume from does not fit the job.
    #[error("{0}")]
    CheckpointMismatch(String),
    /// An executor reported a non-finite loss.
    #[error("{0}")]
    Diverged(String),
    /// One task failed on executor after executor.
    #[error("partition {partition} of epoch {epoch} failed {failures} times; the last executor said: {reason}")]
    TaskFailed {
        /// The partition.
        partition: u32,
        /// Its epoch.
        epoch: u32,
        /// How often.
        failures: u32,
        /// The last executor's reason.
        reason: String,
    },
    /// The driver stopped while the job ran.
    #[error("the driver is shutting down")]
    ShuttingDown,
    /// The parameter server's thread is gone.
    #[error("the parameter server stopped")]
    ServerStopped,
    /// A background task (evaluation, loading) panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
