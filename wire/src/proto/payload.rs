//! What messages carry: tensors, tasks, updates, reports, metrics, status.

use serde::{Deserialize, Serialize};

use deepdist_core::compress::Compression;
use deepdist_core::job::{JobSpec, JobState};
pub use deepdist_core::tensor::{Tensor, TensorError};

/// Identifies one attempt at training one partition in one epoch of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The job.
    pub job: u64,
    /// The stage within the job (0 for single-stage jobs).
    pub stage: u32,
    /// The epoch within the stage, from 1.
    pub epoch: u32,
    /// The partition.
    pub partition: u32,
    /// Which attempt at this (stage, epoch, partition); a reassigned task gets a new one.
    pub attempt: u32,
}

/// Work for an executor: train on one partition for one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Which task.
    pub id: TaskId,
    /// Content hash of the partition to train on.
    pub partition_hash: u128,
    /// The job, for its model and training settings.
    pub spec: JobSpec,
    /// Executors taking part when the task was assigned: modes adapt
    /// minibatches and windows to it.
    pub peers: u32,
}

/// An update from an executor; what its values mean is the job's mode's (a
/// gradient, summed local step directions, an elastic difference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// The task it belongs to.
    pub task: TaskId,
    /// Position of this push within the task, from 0.
    pub seq: u64,
    /// Parameter version the gradients were computed from.
    pub base_version: u64,
    /// Minibatches summed.
    pub batches: u32,
    /// Examples covered.
    pub samples: u32,
    /// Sum of the minibatches' mean losses.
    pub loss_sum: f32,
    /// How `values` encodes the update (the job's `train.compression`).
    pub compression: Compression,
    /// The update's values (the frame's bulk payload).
    #[serde(skip)]
    pub values: Tensor,
}

/// What an executor reports when a task completes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task.
    pub task: TaskId,
    /// Examples trained on.
    pub samples: u64,
    /// Minibatches.
    pub batches: u64,
    /// Sum of the minibatches' mean losses.
    pub loss_sum: f64,
    /// Seconds spent computing gradients.
    pub compute_s: f64,
    /// Updates sent for this task attempt, all of them before this report
    /// on the same connection: the driver checks it accepted as many.
    pub pushes: u64,
}

/// One evaluation of a job: a line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The job.
    pub job: u64,
    /// Stage name, e.g. `train`.
    pub stage: String,
    /// Epoch within the stage, from 1.
    pub epoch: u32,
    /// Seconds since the job started running (dataset loading included).
    pub elapsed_s: f64,
    /// Seconds since training started (the first partitions were handed out).
    pub train_s: f64,
    /// Mean training loss over the epoch's minibatches.
    pub train_loss: f64,
    /// Accuracy after the epoch (supervised stages), on the test set or,
    /// with `validation`, on the held-out validation examples.
    pub test_accuracy: Option<f64>,
    /// The accuracy and loss are the validation examples' (`data.validation`).
    #[serde(default)]
    pub validation: bool,
    /// Test-set loss after the epoch (supervised stages).
    pub test_loss: Option<f64>,
    /// Mean squared reconstruction error on the test set (RBM stages).
    pub reconstruction_error: Option<f64>,
    /// Training examples per second over the epoch, across executors.
    pub samples_per_s: f64,
    /// Partitions trained to completion in the epoch.
    pub partitions_trained: u32,
    /// Partitions of the dataset.
    pub partitions: u32,
    /// Tasks reassigned after an executor was lost.
    pub reassigned: u32,
    /// Parameter-server version (updates applied) at the end of the epoch.
    pub version: u64,
    /// Mean staleness of the updates applied during the epoch.
    pub mean_staleness: f64,
    /// Executors that took part.
    pub executors: u32,
    /// `ssp`: the largest clock spread seen so far when an executor was let go on.
    pub max_clock_spread: Option<u64>,
    /// Bytes of updates the parameter server received during the epoch.
    #[serde(default)]
    pub bytes_pushed: u64,
    /// Bytes of parameters it sent during the epoch.
    #[serde(default)]
    pub bytes_fetched: u64,
    /// Why the stage looks divergent after this epoch, if it does.
    pub diverging: Option<String>,
}

/// Progress streamed to a watching client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Progress {
    /// A partition finished training.
    Task {
        /// The stage's name.
        stage: String,
        /// The epoch.
        epoch: u32,
        /// Partitions done in this epoch.
        done: u32,
        /// Partitions in all.
        total: u32,
    },
    /// An epoch was evaluated.
    Epoch(EpochMetrics),
}

/// The end of a job, as told to a watching client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub job: u64,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub state: JobState,
    /// Epochs evaluated.
    pub epochs: u32,
    /// Accuracy after the last epoch, on the evaluation set (the test set,
    /// or the validation examples when the job holds some out).
    pub final_accuracy: Option<f64>,
    /// With `data.validation`: the final model's accuracy on the test set,
    /// scored once at the end.
    pub test_accuracy: Option<f64>,
    /// Seconds the job ran.
    pub elapsed_s: f64,
    /// Training seconds to the first epoch evaluated at or above the job's
    /// target accuracy, if it has one and reached it.
    pub time_to_target: Option<f64>,
    /// Where its metrics and model were written.
    pub output_dir: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Why training looked divergent at its last epoch, if it did.
    pub warning: Option<String>,
}

/// An executor as the driver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    /// Driver-assigned id.
    pub id: u64,
    /// Its name (host and process).
    pub name: String,
    /// Cores it computes with.
    pub cores: u32,
    /// The task it is running, if any.
    pub task: Option<TaskId>,
    /// Tasks completed.
    pub tasks_done: u64,
    /// The address it connects from.
    pub host: String,
    /// Examples per second of computing, over its finished tasks.
    pub samples_per_s: f64,
    /// Milliseconds since its last message other than a heartbeat (a
    /// push, a fetch, a report): how long it has shown no progress.
    pub idle_ms: u64,
    /// Milliseconds since anything came from it, heartbeats included.
    pub heartbeat_age_ms: u64,
    /// Its updates by staleness at the parameter server: how many had
    /// 0, 1, 2, ≤4, ≤8, ≤16, ≤32, ≤64 and more.
    pub staleness: Vec<u64>,
}

/// A job as the driver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Driver-assigned id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// The stage last evaluated (`train`, `rbm1`, …, `finetune`).
    pub stage: String,
    /// Epochs of that stage evaluated so far.
    pub epochs_done: u32,
    /// Epochs planned.
    pub epochs: u32,
    /// Latest test accuracy.
    pub accuracy: Option<f64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Why training looks divergent, if it does.
    pub warning: Option<String>,
    /// The running (or last) stage's network in one line, once it is built.
    pub model: Option<String>,
}

/// The driver's answer to [`super::FromClient::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Connected executors.
    pub executors: Vec<ExecutorInfo>,
    /// Every job since the driver started, oldest first.
    pub jobs: Vec<JobInfo>,
    /// Connections closed because of a bad frame or handshake.
    pub rejected_connections: u64,
    /// Executors lost (disconnected or silent past the heartbeat timeout).
    pub executors_lost: u64,
    /// Tasks taken back from executors that held them past the task lease
    /// without progress (those executors are disconnected).
    pub leases_expired: u64,
    /// Tasks given back to the scheduler by executors that were lost.
    pub tasks_reassigned: u64,
    /// Updates discarded because the same (task attempt, sequence) was
    /// already applied: each update is applied at most once.
    pub duplicate_updates_discarded: u64,
    /// Updates discarded because their sender no longer held the task
    /// attempt (declared lost, or the task was reassigned or done).
    pub late_updates_discarded: u64,
    /// Updates received; each is accepted (handed to the parameter server)
    /// or discarded as repeated or late, so this is always their sum.
    pub updates_received: u64,
    /// Updates handed to the parameter server.
    pub updates_accepted: u64,
    /// Tasks whose executor reported a number of updates sent other than
    /// the number accepted for them (0 unless an update was lost or doubled).
    pub task_push_mismatches: u64,
    /// The running stage's parameter-server shards (none between stages).
    pub server_shards: Vec<ShardInfo>,
}

/// One parameter-server shard of the running stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Parameters it holds.
    pub values: u64,
    /// Updates it has applied in the stage.
    pub updates: u64,
    /// Updates it applied per second since the status was last read.
    pub updates_per_s: f64,
    /// Bytes of updates waiting for it.
    pub queued_bytes: u64,
    /// Bytes of updates it has received.
    pub bytes_pushed: u64,
    /// Bytes of parameters it has sent in answers to fetches.
    pub bytes_fetched: u64,
}
