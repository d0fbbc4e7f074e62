//! The job runner: takes queued jobs one at a time and drives each through
//! its epochs: partitions out to executors, epochs evaluated as they
//! complete (on a blocking thread, while training goes on), outputs written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use deepdist_core::data::Dataset;
use deepdist_core::job::{JobSpec, JobState, ModelLimit};
use deepdist_core::model::{Network, SharedNetwork, StageEval};
use deepdist_wire::proto::{self, JobSummary, ToClient, ToExecutor};
use tokio::sync::{mpsc, watch};

use crate::checkpoint::JobCheckpoint;
use crate::dispatch;
use crate::error::JobError;
use crate::evaluator::evaluate_epochs;
use crate::output::{MetricsWriter, Provenance, save_final_model};
use crate::stage_run::{StageRun, run_stage};
use crate::stage_start::prepare_stage;
use crate::state::Shared;
use crate::tally::Evaluated;

/// Epochs and checkpoints that may wait for the evaluator.
const EVAL_QUEUE: usize = 4;

pub async fn run_jobs(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let next = {
            let mut state = shared.lock();
            let mut cancelled = Vec::new();
            for job in state.jobs.iter_mut() {
                if job.state == JobState::Queued && job.cancel_requested {
                    job.state = JobState::Cancelled;
                    let summary = summary(job.id, &job.spec.name, JobState::Cancelled, None);
                    job.summary = Some(summary.clone());
                    cancelled.push(summary);
                }
            }
            for s in cancelled {
                record_end(&shared, s.job, s.state);
                shared.emit(s.job, ToClient::JobEnded(s));
            }
            state.jobs.iter_mut().find(|j| j.state == JobState::Queued).map(|j| {
                j.state = JobState::Running;
                (j.id, j.spec.clone(), j.resume.take())
            })
        };
        let Some((id, spec, resume)) = next else {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = stop.changed() => return,
            }
            continue;
        };
        // A resumed job keeps counting its time from where the checkpoint was.
        let started = resume.as_ref().map_or_else(Instant::now, |c| c.started());
        let dir = match &resume {
            Some(c) => c.output_dir.clone(),
            None => shared.output_dir(id, &spec.name),
        };
        tracing::info!(id, name = %spec.name, dir = %dir.display(), resumed = resume.is_some(), "job started");
        if let Some(job) = shared.lock().job_mut(id) {
            job.output_dir = Some(dir.clone());
        }
        let result = run_job(&shared, id, &spec, &dir, started, resume, &mut stop).await;
        // However it ended, no executor keeps a task of it: each is told to
        // drop what it holds and is free for the next job.
        let sends = {
            let mut state = shared.lock();
            state.run = None;
            dispatch::cancel_all(&mut state.executors, id)
        };
        for (outbox, frame) in sends {
            outbox.offer(frame);
        }
        let mut summary = summary(id, &spec.name, JobState::Done, Some(&dir));
        summary.elapsed_s = started.elapsed().as_secs_f64();
        match result {
            Ok(outcome) => {
                // The job is over: nothing is left to resume.
                if let Some(dir) = &shared.config.checkpoint_dir {
                    let path = crate::checkpoint::file_for(dir, id);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove the checkpoint"),
                    }
                }
                summary.state = outcome.state;
                summary.epochs = outcome.epochs;
                summary.final_accuracy = outcome.final_accuracy;
                summary.test_accuracy = outcome.test_accuracy;
                summary.time_to_target = outcome.time_to_target;
            }
            Err(e) => {
                tracing::error!(id, error = %e, "job failed");
                summary.state = JobState::Failed;
                summary.error = Some(e.to_string());
            }
        }
        if let Some(job) = shared.lock().job_mut(id) {
            summary.warning = job.warning.clone();
            job.state = summary.state;
            job.error = summary.error.clone();
            job.summary = Some(summary.clone());
        }
        tracing::info!(id, state = %summary.state, accuracy = ?summary.final_accuracy, "job ended");
        record_end(&shared, id, summary.state);
        shared.emit(id, ToClient::JobEnded(summary));
    }
}

/// Journals a job's end. The end is already decided and its outputs
/// written: failing to journal it only means a restarted driver runs the
/// job again, so it is logged, not fatal.
fn record_end(shared: &Shared, id: u64, state: JobState) {
    if let Err(e) = shared.journal(&crate::journal::Entry::End { id, state }) {
        tracing::error!(id, error = %e, "cannot journal the job's end: a restarted driver would run it again");
    }
}

fn summary(job: u64, name: &str, state: JobState, dir: Option<&std::path::Path>) -> JobSummary {
    JobSummary {
        job,
        name: name.to_string(),
        state,
        epochs: 0,
        final_accuracy: None,
        test_accuracy: None,
        elapsed_s: 0.0,
        time_to_target: None,
        output_dir: dir.map(|d| d.display().to_string()).unwrap_or_default(),
        error: None,
        warning: None,
    }
}

/// How a job that did not fail ended.
struct Outcome {
    state: JobState,
    epochs: u32,
    final_accuracy: Option<f64>,
    test_accuracy: Option<f64>,
    time_to_target: Option<f64>,
}

async fn run_job(
    shared: &Arc<Shared>,
    id: u64,
    spec: &JobSpec,
    dir: &std::path::Path,
    started: Instant,
    resume: Option<Box<JobCheckpoint>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome, JobError> {
    let data = crate::job_data::load_for(shared, spec).await?;
    // From here on the job says the shape its files have, so executors,
    // checkpoints and saved models build the same network.
    let spec = &spec.with_shape(data.shape);
    let (dim, classes) = (data.dim, data.classes);
    // The model's size was checked at submit against the least the data can
    // be; now its shape is known.
    let limit = ModelLimit::new(shared.config.max_frame, shared.config.max_model_bytes);
    spec.check_size("the job", dim, classes, &limit)?;
    let (train, parts, test, held_test) = (data.train, data.partitions, data.eval, data.held_test);
    let standardizer = data.standardizer;
    // What every saved model of the job records of where it came from.
    let provenance = |state: String| Provenance {
        spec,
        job: id,
        state,
        standardizer: standardizer.as_ref(),
    };
    let frames = partition_frames(shared, spec, &parts)?;
    drop(parts);
    let frames = Arc::new(frames);
    let hashes: Vec<u128> = frames.iter().map(|(h, _)| *h).collect();
    let stages = spec.stages();
    if let Some(c) = &resume {
        c.fits(&hashes, stages.len())?;
    }

    let metrics = match &resume {
        None => MetricsWriter::create(dir),
        Some(c) => MetricsWriter::reopen(dir, |m| {
            let stage = stages.iter().position(|s| s.name == m.stage).unwrap_or(usize::MAX) as u32;
            (stage, m.epoch) <= (c.stage, c.epochs_done)
        }),
    }
    .map_err(|source| JobError::Output {
        path: dir.to_path_buf(),
        source,
    })?;
    let target_hit = Arc::new(AtomicBool::new(false));
    // Bounded: each item holds a copy of the parameters; when evaluation
    // falls behind, training waits for it rather than piling copies up.
    let (eval_tx, eval_rx) = mpsc::channel(EVAL_QUEUE);
    let evaluator = tokio::spawn(evaluate_epochs(
        shared.clone(),
        id,
        spec.clone(),
        metrics,
        eval_rx,
        target_hit.clone(),
        resume.as_ref().map(|c| c.evaluated.clone()).unwrap_or_default(),
    ));

    let training_started = resume.as_ref().map_or_else(Instant::now, |c| c.training_started());
    if resume.as_ref().is_some_and(|c| c.evaluated.time_to_target.is_some()) {
        target_hit.store(true, Ordering::Relaxed);
    }
    let first_stage = resume.as_ref().map_or(0, |c| c.stage as usize);
    // The parameters of every finished stage before the last, which later
    // stages start from or see their input through (a DBN's RBMs).
    let mut trained: Vec<Vec<f32>> = resume.as_ref().map(|c| c.layers.clone()).unwrap_or_default();
    let mut resume = resume;
    let mut state_at_end = JobState::Done;
    let mut final_model = None;
    for (index, stage) in stages.iter().enumerate().skip(first_stage) {
        let model = spec.network(index, dim, classes)?;
        if let Some(job) = shared.lock().job_mut(id) {
            job.model = Some(one_line(spec, &*model));
        }
        let (params, stage_test, frozen) =
            prepare_stage(spec, stage, &model, &trained, &train, &test, id, index).await?;
        let ctx = StageRun {
            id,
            index: index as u32,
            stage,
            spec,
            model: &model,
            test: stage_test,
            frozen,
            frames: frames.clone(),
            dir,
            layers: &trained,
            started,
            training_started,
            target_hit: &target_hit,
            eval_tx: &eval_tx,
        };
        let (state, params) = run_stage(shared, ctx, params, resume.take(), stop).await?;
        let last = index + 1 == stages.len();
        if !last {
            // An earlier stage's model is saved beside the job's (`rbm1.safetensors`).
            let path = dir.join(format!("{}.safetensors", stage.name));
            save_final_model(dir, &path, model.as_ref(), &params, &provenance(state.to_string()))?;
        }
        let finished_stage = state == JobState::Done;
        match last {
            true => final_model = Some((model, params)),
            false if finished_stage => trained.push(params),
            false => {}
        }
        if !finished_stage {
            state_at_end = state;
            break;
        }
    }
    drop(eval_tx);
    // The model is saved even when the evaluator failed (a full disk, an
    // evaluation error): the training it holds is not thrown away, and its
    // metadata says how the job ended.
    let evaluated = evaluator.await?;
    let test_accuracy = match final_model {
        Some(model) => {
            let state = end_state_text(shared, id, &evaluated, state_at_end);
            let held_test = held_test.filter(|_| state_at_end == JobState::Done);
            save_and_score(id, dir, model, state, held_test, &provenance).await?
        }
        None => None,
    };
    let evaluated = evaluated?;
    Ok(Outcome {
        state: state_at_end,
        epochs: evaluated.epochs,
        final_accuracy: evaluated.final_accuracy,
        test_accuracy,
        time_to_target: evaluated.time_to_target,
    })
}

/// Each partition's frame to executors: its bytes, or where a shared
/// filesystem holds it. A partition too large for one frame fails the job.
fn partition_frames(
    shared: &Shared,
    spec: &JobSpec,
    parts: &[deepdist_core::data::Partition],
) -> Result<Vec<(u128, bytes::Bytes)>, JobError> {
    let mut frames = Vec::with_capacity(parts.len());
    for p in parts {
        // On a shared filesystem executors read their partitions themselves.
        let frame = if spec.data.shared {
            proto::encode(&ToExecutor::PartitionAt {
                hash: p.content_hash(),
                partition: p.id,
            })?
        } else {
            proto::encode(&ToExecutor::Partition {
                hash: p.content_hash(),
                bytes: p.encode(),
            })?
        };
        if frame.len() > shared.config.max_frame {
            return Err(JobError::PartitionTooLarge {
                partition: p.id,
                mib: frame.len() >> 20,
                max_mib: shared.config.max_frame >> 20,
            });
        }
        frames.push((p.content_hash(), frame));
    }
    Ok(frames)
}

/// How a job's saved model says it ended: its state, or how its evaluator
/// failed after which epoch.
fn end_state_text(shared: &Shared, id: u64, evaluated: &Result<Evaluated, JobError>, state: JobState) -> String {
    match evaluated {
        Ok(_) => state.to_string(),
        Err(e) => {
            let epochs = shared.lock().job_mut(id).map_or(0, |r| r.epochs_done);
            format!("failed after epoch {epochs}: {e}")
        }
    }
}

/// Saves the trained model — even when the evaluator failed (a full disk,
/// an evaluation error): the training it holds is not thrown away, and its
/// metadata says how the job ended — then scores the held-out test set
/// once, if given.
async fn save_and_score<'p>(
    id: u64,
    dir: &std::path::Path,
    (model, params): (SharedNetwork, Vec<f32>),
    state: String,
    held_test: Option<Arc<Dataset>>,
    provenance: &impl Fn(String) -> Provenance<'p>,
) -> Result<Option<f64>, JobError> {
    let path = dir.join("model.safetensors");
    save_final_model(dir, &path, model.as_ref(), &params, &provenance(state.clone()))?;
    tracing::info!(id, path = %path.display(), %state, "model saved");
    let Some(test) = held_test else {
        return Ok(None);
    };
    let eval = tokio::task::spawn_blocking(move || model.evaluate(&params, &test)).await??;
    match eval {
        StageEval::Supervised(e) => {
            tracing::info!(id, accuracy = e.accuracy, "test set scored once, at the end");
            Ok(Some(f64::from(e.accuracy)))
        }
        _ => Ok(None),
    }
}

/// A network for the status page: its layers when it lists them, else its
/// kind and input, then its size.
fn one_line(spec: &JobSpec, network: &dyn Network) -> String {
    let params = network.layout().len();
    match network.describe() {
        Some(layers) => format!(
            "{} — {params} parameters",
            layers.lines().collect::<Vec<_>>().join(" · ")
        ),
        None => format!(
            "{}, input {} — {params} parameters",
            spec.kind().map_or("model", |k| k.name()),
            network.input_dim()
        ),
    }
}
