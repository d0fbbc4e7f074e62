//! The evaluator: each completed epoch's parameters are evaluated on the test
//! set on a blocking thread while training goes on; the result becomes a
//! metrics line, the job record's progress and a progress event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deepdist_core::data::Dataset;
use deepdist_core::job::JobSpec;
use deepdist_core::model::{SharedNetwork, StageEval};
use deepdist_wire::proto::{EpochMetrics, Progress, ToClient};
use tokio::sync::mpsc;

use crate::checkpoint::JobCheckpoint;
use crate::divergence::LossWatch;
use crate::error::JobError;
use crate::output::MetricsWriter;
use crate::ps::{Snapshot, Traffic};
use crate::state::Shared;
use crate::tally::{EpochAccum, Evaluated};

/// What the evaluator is given, in the order things happened: a checkpoint
/// queued after an epoch is written after that epoch's metrics line, so the
/// metrics never lag a checkpoint.
pub enum Work {
    /// Evaluate a completed epoch.
    Epoch(Box<EvalItem>),
    /// Write a checkpoint, with the evaluation results so far.
    Checkpoint(Box<JobCheckpoint>),
}

/// One completed epoch waiting to be evaluated.
pub struct EvalItem {
    pub stage: String,
    pub supervised: bool,
    pub model: SharedNetwork,
    pub test: Arc<Dataset>,
    pub epoch: u32,
    pub mean_staleness: f64,
    pub snapshot: Snapshot,
    pub elapsed_s: f64,
    pub train_s: f64,
    pub epoch_s: f64,
    pub stats: EpochAccum,
    pub reassigned: u32,
    pub executors: u32,
    /// Partitions of the job, all of which an epoch trains.
    pub partitions: u32,
    /// Bytes pushed and fetched during the epoch.
    pub traffic: Traffic,
}

/// Evaluates each completed epoch off the training path, writes its metrics
/// line, updates the job record and tells watchers.
pub async fn evaluate_epochs(
    shared: Arc<Shared>,
    job: u64,
    spec: JobSpec,
    mut metrics: MetricsWriter,
    mut rx: mpsc::Receiver<Work>,
    target_hit: Arc<AtomicBool>,
    mut out: Evaluated,
) -> Result<Evaluated, JobError> {
    let stall = crate::fault::checkpoint_stall();
    let mut losses = LossWatch::default();
    while let Some(work) = rx.recv().await {
        let item = match work {
            Work::Epoch(item) => item,
            Work::Checkpoint(mut checkpoint) => {
                if let Some(dir) = &shared.config.checkpoint_dir {
                    let path = crate::checkpoint::file_for(dir, job);
                    // The metrics the checkpoint covers reach the disk before it does.
                    metrics.sync().map_err(|source| JobError::Output {
                        path: metrics.path().to_path_buf(),
                        source,
                    })?;
                    checkpoint.evaluated = out.clone();
                    // A checkpoint that cannot be written stops the job: going on
                    // would promise a recovery that is not there.
                    let started = std::time::Instant::now();
                    tokio::task::spawn_blocking(move || checkpoint.save(&path, stall))
                        .await?
                        .map_err(JobError::CheckpointWrite)?;
                    shared.timings.checkpoint.observe(started.elapsed().as_secs_f64());
                    tracing::debug!(job, "checkpoint written");
                }
                continue;
            }
        };
        let (model, test, params) = (item.model.clone(), item.test.clone(), item.snapshot.params.clone());
        let started = std::time::Instant::now();
        let eval = tokio::task::spawn_blocking(move || model.evaluate(&params, &test)).await??;
        shared.timings.evaluation.observe(started.elapsed().as_secs_f64());
        let (accuracy, loss, reconstruction) = match eval {
            StageEval::Supervised(e) => (Some(f64::from(e.accuracy)), Some(f64::from(e.loss)), None),
            StageEval::Reconstruction(r) => (None, None, Some(f64::from(r))),
        };
        let train_loss = item.stats.loss_sum / item.stats.batches.max(1) as f64;
        let classes = item.supervised.then(|| item.test.classes());
        let diverging = losses.record(&item.stage, train_loss, classes);
        if let Some(why) = &diverging {
            tracing::warn!(job, stage = %item.stage, epoch = item.epoch, %why, "training is diverging");
        }
        let line = EpochMetrics {
            job,
            stage: item.stage.clone(),
            epoch: item.epoch,
            elapsed_s: item.elapsed_s,
            train_s: item.train_s,
            train_loss,
            test_accuracy: accuracy,
            validation: spec.data.validation.is_some(),
            test_loss: loss,
            reconstruction_error: reconstruction,
            samples_per_s: item.stats.samples as f64 / item.epoch_s.max(1e-9),
            partitions_trained: item.stats.tasks,
            partitions: item.partitions,
            reassigned: item.reassigned,
            version: item.snapshot.version,
            mean_staleness: item.mean_staleness,
            executors: item.executors,
            max_clock_spread: item.snapshot.rule.max_clock_spread,
            bytes_pushed: item.traffic.pushed,
            bytes_fetched: item.traffic.fetched,
            diverging: diverging.clone(),
        };
        metrics.append(&line).map_err(|source| JobError::Output {
            path: metrics.path().to_path_buf(),
            source,
        })?;
        if item.supervised {
            out.epochs = item.epoch;
            out.final_accuracy = accuracy;
            if let (Some(target), Some(acc)) = (spec.train.target_accuracy, accuracy)
                && out.time_to_target.is_none()
                && acc >= target
            {
                out.time_to_target = Some(line.train_s);
                target_hit.store(true, Ordering::Relaxed);
            }
        }
        if let Some(record) = shared.lock().job_mut(job) {
            record.epochs_done = item.epoch;
            record.stage = item.stage.clone();
            record.warning = diverging;
            if accuracy.is_some() {
                record.accuracy = accuracy;
            }
        }
        shared.emit(job, ToClient::Progress(Progress::Epoch(line)));
    }
    Ok(out)
}
