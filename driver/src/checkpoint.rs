//! The driver's checkpoint of its running job: everything needed to carry
//! on after the driver process dies — the job, the trained layers of
//! finished stages, the current stage's parameters, optimizer state and
//! progress (epochs completed, partitions done in open epochs) — in one
//! sealed file (magic, format version, SHA-256) replaced atomically.
//!
//! Updates of tasks that were running when the checkpoint was taken are in
//! its parameters, and those tasks are trained again after a resume: a
//! resume may repeat part of an epoch's work, never skip any.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deepdist_core::checkpoint::CheckpointError;
use deepdist_core::checkpoint::sealed::{read_sealed, seal};
use deepdist_core::optim::OptimizerState;
use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::scheduler::EpochProgress;
use crate::tally::{EpochAccum, Evaluated};

/// The checkpoint file format; bumped whenever [`JobCheckpoint`] changes.
pub const FORMAT: u32 = 2;

/// The directory of checkpoints in the runs directory.
pub const DIR_NAME: &str = "checkpoints";

/// Job `job`'s checkpoint file in `dir`: one file per job, so that no job's
/// checkpoint replaces another's.
pub fn file_for(dir: &Path, job: u64) -> PathBuf {
    dir.join(format!("job-{job}.checkpoint"))
}

/// The checkpoint of the newest job in `dir`, if there is one.
pub fn newest(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let job: u64 = name
                .to_str()?
                .strip_prefix("job-")?
                .strip_suffix(".checkpoint")?
                .parse()
                .ok()?;
            Some((job, e.path()))
        })
        .max_by_key(|(job, _)| *job)
        .map(|(_, path)| path)
}

/// A running job as of one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCheckpoint {
    /// The job's id.
    pub job: u64,
    /// Its definition, as TOML.
    pub spec: String,
    /// Where its outputs go.
    pub output_dir: PathBuf,
    /// Content hashes of its partitions: a resume must cut the same data.
    pub partitions: Vec<u128>,
    /// Executor ids from here on are new, so no report of a task from before
    /// the checkpoint can pass for one after it.
    pub next_executor: u64,
    /// Seconds since the job started.
    pub elapsed_s: f64,
    /// Seconds of training.
    pub train_s: f64,
    /// Parameters of the stages already finished (the trained RBMs).
    pub layers: Vec<Vec<f32>>,
    /// The stage in progress.
    pub stage: u32,
    /// Its epochs completed.
    pub epochs_done: u32,
    /// Its open epochs: partitions done and their training statistics.
    pub open: Vec<(EpochProgress, EpochAccum)>,
    /// Updates applied in this stage.
    pub version: u64,
    /// Summed staleness of those updates.
    pub staleness_sum: u64,
    /// The stage's parameters.
    pub params: Vec<f32>,
    /// The parameter server's optimizer.
    pub optimizer: OptimizerState,
    /// What evaluation has found so far.
    pub evaluated: Evaluated,
}

impl JobCheckpoint {
    /// When the job started, as far as the clock can tell: `elapsed_s` ago.
    pub fn started(&self) -> Instant {
        seconds_ago(self.elapsed_s)
    }

    /// When the job's training started: `train_s` ago.
    pub fn training_started(&self) -> Instant {
        seconds_ago(self.train_s)
    }

    /// Writes the checkpoint to `path` atomically, stalling before the
    /// rename if `stall` is set (fault injection).
    pub fn save(&self, path: &Path, stall: Option<Duration>) -> Result<(), CheckpointError> {
        let payload = postcard::to_allocvec(self).map_err(|e| CheckpointError::Format(e.to_string()))?;
        let bytes = seal(FORMAT, &payload);
        deepdist_core::atomic::write_atomically_with(path, &bytes, || {
            if let Some(stall) = stall {
                std::thread::sleep(stall);
            }
        })
        .map_err(|source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a checkpoint, refusing a foreign, truncated, corrupt or
    /// other-version file.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let payload = read_sealed(path, FORMAT)?;
        postcard::from_bytes(&payload)
            .map_err(|e| CheckpointError::Format(format!("{}: cannot decode the checkpoint: {e}", path.display())))
    }
}

impl JobCheckpoint {
    /// Whether this checkpoint can resume a job whose partitions have
    /// `hashes` and which has `stages` stages; says why not.
    pub fn fits(&self, hashes: &[u128], stages: usize) -> Result<(), JobError> {
        if self.partitions != hashes {
            let differ = self.partitions.iter().zip(hashes).filter(|(a, b)| a != b).count()
                + self.partitions.len().abs_diff(hashes.len());
            return Err(JobError::CheckpointMismatch(format!(
                "the checkpoint was made from other data ({} partitions, {differ} differ from this driver's): \
                 refusing to resume it",
                self.partitions.len(),
            )));
        }
        // Stage s trains on the s layers trained before it: no more, no fewer.
        if self.stage as usize >= stages || self.layers.len() != self.stage as usize {
            return Err(JobError::CheckpointMismatch(format!(
                "the checkpoint's stage {} does not fit the job",
                self.stage
            )));
        }
        Ok(())
    }
}

/// The instant `seconds` ago (now, if `seconds` is not a valid duration or
/// the clock cannot go back that far: it comes from a checkpoint file).
fn seconds_ago(seconds: f64) -> Instant {
    let now = Instant::now();
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_fits_only_the_data_and_stages_it_was_made_from() {
        let c = sample();
        assert!(c.fits(&[1, 2], 2).is_ok());
        let err = c.fits(&[1, 3, 4], 2).unwrap_err();
        assert!(matches!(err, JobError::CheckpointMismatch(_)), "{err:?}");
        assert!(err.to_string().contains("2 differ"), "{err}");
        let err = c.fits(&[1, 2], 1).unwrap_err();
        assert!(err.to_string().contains("stage 1"), "{err}");
        let missing_a_layer = JobCheckpoint {
            layers: vec![],
            ..sample()
        };
        assert!(
            missing_a_layer.fits(&[1, 2], 2).is_err(),
            "stage 1 needs the layer of stage 0"
        );
    }

    fn sample() -> JobCheckpoint {
        JobCheckpoint {
            job: 3,
            spec: "name = \"x\"".into(),
            output_dir: "runs/3-x".into(),
            partitions: vec![1, 2],
            next_executor: 9,
            elapsed_s: 1.5,
            train_s: 1.0,
            layers: vec![vec![0.5; 4]],
            stage: 1,
            epochs_done: 2,
            open: vec![(
                EpochProgress {
                    epoch: 3,
                    done: vec![1],
                    reassigned: 0,
                },
                EpochAccum::default(),
            )],
            version: 40,
            staleness_sum: 7,
            params: vec![1.0, -2.0],
            optimizer: OptimizerState {
                steps: 40,
                minibatches: 160.0,
                buffers: vec![vec![0.1, 0.2]],
            },
            evaluated: Evaluated::default(),
        }
    }

    #[test]
    fn each_job_has_its_own_file_and_the_newest_job_is_found() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest(dir.path()), None);
        for job in [2, 10, 9] {
            std::fs::write(file_for(dir.path(), job), b"x").unwrap();
        }
        std::fs::write(dir.path().join("job-x.checkpoint"), b"x").unwrap();
        assert_eq!(newest(dir.path()), Some(file_for(dir.path(), 10)));
        assert_ne!(file_for(dir.path(), 1), file_for(dir.path(), 2));
    }

    #[test]
    fn saves_loads_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_for(dir.path(), 3);
        sample().save(&path, None).unwrap();
        assert_eq!(newest(dir.path()), Some(path.clone()));
        let back = JobCheckpoint::load(&path).unwrap();
        assert_eq!(
            (back.job, back.params, back.open[0].0.done.clone()),
            (3, vec![1.0, -2.0], vec![1])
        );

        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = JobCheckpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");

        std::fs::write(&path, b"safetensors or anything else").unwrap();
        let err = JobCheckpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a deepdist checkpoint"), "{err}");
        assert!(JobCheckpoint::load(&dir.path().join("missing")).is_err());
    }
}
