//! What a running job has counted so far: each epoch's training statistics
//! and what its evaluations found. Checkpoints carry both, so they sit here,
//! below the modules that fill them and the one that saves them.

/// Training statistics gathered for one epoch from task reports.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct EpochAccum {
    /// Tasks (partitions) done.
    pub tasks: u32,
    /// Examples trained on.
    pub samples: u64,
    /// Minibatches.
    pub batches: u64,
    /// Sum of the minibatches' mean losses.
    pub loss_sum: f64,
}

/// What the evaluator learned over a job.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Evaluated {
    /// Epochs of the supervised stage evaluated.
    pub epochs: u32,
    /// Test accuracy after the last of them.
    pub final_accuracy: Option<f64>,
    /// Training seconds to the first epoch at the job's target.
    pub time_to_target: Option<f64>,
}
