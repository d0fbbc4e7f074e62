//! The job runner: takes queued jobs one at a time and drives each through
//! its epochs: partitions out to executors, epochs evaluated as they
//! complete (on a blocking thread, while training goes on), outputs written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deepdist_common::data::fetch::FetchOptions;
use deepdist_common::data::partition::split;
use deepdist_common::data::{Dataset, Mnist};
use deepdist_common::job::{JobSpec, JobState, Mode};
use deepdist_common::model::{Mlp, Model};
use deepdist_common::proto::{self, EpochMetrics, JobSummary, Message, Progress, TaskSpec};
use tokio::sync::{mpsc, watch};

use crate::output::{MetricsWriter, save_final_model};
use crate::ps::{ParamServer, Snapshot};
use crate::scheduler::Scheduler;
use crate::state::{EpochAccum, RunState, Shared};

/// The runner re-checks its job this often even without a wake-up.
const TICK: Duration = Duration::from_millis(500);

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
                shared.emit(s.job, Message::JobEnded(s));
            }
            state.jobs.iter_mut().find(|j| j.state == JobState::Queued).map(|j| {
                j.state = JobState::Running;
                (j.id, j.spec.clone())
            })
        };
        let Some((id, spec)) = next else {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = stop.changed() => return,
            }
            continue;
        };
        let started = Instant::now();
        let dir = shared.output_dir(id, &spec.name);
        tracing::info!(id, name = %spec.name, dir = %dir.display(), "job started");
        let result = run_job(&shared, id, &spec, &dir, started, &mut stop).await;
        shared.lock().run = None;
        let mut summary = summary(id, &spec.name, JobState::Done, Some(&dir));
        summary.elapsed_s = started.elapsed().as_secs_f64();
        match result {
            Ok(outcome) => {
                summary.state = outcome.state;
                summary.epochs = outcome.epochs;
                summary.final_accuracy = outcome.final_accuracy;
                summary.time_to_target = outcome.time_to_target;
            }
            Err(e) => {
                tracing::error!(id, error = %e, "job failed");
                summary.state = JobState::Failed;
                summary.error = Some(e);
            }
        }
        if let Some(job) = shared.lock().job_mut(id) {
            job.state = summary.state;
            job.error = summary.error.clone();
            job.summary = Some(summary.clone());
        }
        tracing::info!(id, state = %summary.state, accuracy = ?summary.final_accuracy, "job ended");
        shared.emit(id, Message::JobEnded(summary));
    }
}

fn summary(job: u64, name: &str, state: JobState, dir: Option<&std::path::Path>) -> JobSummary {
    JobSummary {
        job,
        name: name.to_string(),
        state,
        epochs: 0,
        final_accuracy: None,
        elapsed_s: 0.0,
        time_to_target: None,
        output_dir: dir.map(|d| d.display().to_string()).unwrap_or_default(),
        error: None,
    }
}

/// How a job that did not fail ended.
struct Outcome {
    state: JobState,
    epochs: u32,
    final_accuracy: Option<f64>,
    time_to_target: Option<f64>,
}

/// One completed epoch waiting to be evaluated.
struct EvalItem {
    epoch: u32,
    mean_staleness: f64,
    snapshot: Snapshot,
    elapsed_s: f64,
    train_s: f64,
    epoch_s: f64,
    stats: EpochAccum,
    reassigned: u32,
    executors: u32,
}

async fn load_mnist(shared: &Shared) -> Result<Arc<Mnist>, String> {
    let dir = shared.config.data_dir.clone();
    shared
        .mnist
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || Mnist::load(&FetchOptions::new(dir)))
                .await
                .map_err(|e| e.to_string())?
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .await
        .cloned()
}

async fn run_job(
    shared: &Arc<Shared>,
    id: u64,
    spec: &JobSpec,
    dir: &std::path::Path,
    started: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome, String> {
    let mnist = load_mnist(shared).await?;
    let (train, test) = {
        let spec = spec.clone();
        let mnist = mnist.clone();
        tokio::task::spawn_blocking(move || {
            let train = spec.data.train_examples.map(|n| mnist.train.head(n as usize));
            let test = spec.data.test_examples.map(|n| mnist.test.head(n as usize));
            let parts = split(
                train.as_ref().unwrap_or(&mnist.train),
                spec.data.partitions as usize,
                spec.train.seed,
                spec.data.shuffle,
            );
            (parts, Arc::new(test.unwrap_or_else(|| mnist.test.clone())))
        })
        .await
        .map_err(|e| e.to_string())?
    };
    let parts = train.map_err(|e| e.to_string())?;
    let mut frames = Vec::with_capacity(parts.len());
    for p in &parts {
        let frame = proto::encode(&Message::Partition {
            hash: p.content_hash(),
            bytes: p.encode(),
        })
        .map_err(|e| e.to_string())?;
        if frame.len() > shared.config.max_frame {
            return Err(format!(
                "partition {} is {} MiB, above the maximum frame of {} MiB: use more partitions",
                p.id,
                frame.len() >> 20,
                shared.config.max_frame >> 20
            ));
        }
        frames.push((p.content_hash(), frame));
    }
    let (dim, classes) = (mnist.train.dim(), mnist.train.classes());
    drop(parts);
    let model = spec.build_mlp(dim, classes).map_err(|e| e.to_string())?;
    let params = model.init(spec.train.seed);
    // In async mode executors apply SGD's momentum to their own steps and
    // push step directions; momentum again at the server would apply it twice.
    let server_optimizer = match spec.train.mode {
        Mode::Async => spec.optimizer.without_momentum(),
        Mode::Sync => spec.optimizer,
    };
    let optimizer = server_optimizer.build(params.len()).map_err(|e| e.to_string())?;
    let ps = ParamServer::start(id, params, optimizer, spec.train.mode, spec.optimizer);
    let partitions = frames.len() as u32;
    shared.lock().run = Some(RunState {
        job: id,
        scheduler: Scheduler::new(id, 0, partitions, spec.train.epochs),
        partition_frames: frames,
        ps: ps.clone(),
        epochs: Default::default(),
        last_seq: Default::default(),
        duplicates_discarded: 0,
    });

    let metrics = MetricsWriter::create(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target_hit = Arc::new(AtomicBool::new(false));
    let (eval_tx, eval_rx) = mpsc::unbounded_channel();
    let evaluator = tokio::spawn(evaluate_epochs(
        shared.clone(),
        id,
        spec.clone(),
        model.clone(),
        test,
        partitions,
        metrics,
        eval_rx,
        target_hit.clone(),
    ));

    let training_started = Instant::now();
    let mut last_epoch_end = training_started;
    let mut last_staleness = (0u64, 0u64);
    let mut state_at_end = JobState::Done;
    loop {
        if *stop.borrow() {
            return Err("the driver is shutting down".into());
        }
        let (sends, completed, finished, cancelled) = {
            let mut state = shared.lock();
            let cancelled = state.jobs.iter().any(|j| j.id == id && j.cancel_requested);
            let executors = state.executors.len() as u32;
            let crate::state::State {
                executors: execs, run, ..
            } = &mut *state;
            let Some(run) = run.as_mut() else {
                return Err("run state vanished".into());
            };
            if target_hit.load(Ordering::Relaxed) && spec.train.stop_at_target {
                run.scheduler.stop_after_open_epochs();
            }
            let mut sends: Vec<(tokio::sync::mpsc::Sender<Bytes>, Message)> = Vec::new();
            if cancelled {
                for e in execs.values_mut() {
                    e.task = None;
                    sends.push((e.tx.clone(), Message::CancelTasks { job: id }));
                }
            } else {
                for (&eid, e) in execs.iter_mut().filter(|(_, e)| e.task.is_none()) {
                    let frames = &run.partition_frames;
                    let cached = |p: u32| frames.get(p as usize).is_some_and(|(h, _)| e.cached.contains(h));
                    if let Some(task) = run.scheduler.next_for(eid, cached) {
                        e.task = Some(task);
                        let hash = run.partition_frames[task.partition as usize].0;
                        sends.push((
                            e.tx.clone(),
                            Message::Assign(TaskSpec {
                                id: task,
                                partition_hash: hash,
                                spec: spec.clone(),
                            }),
                        ));
                    }
                }
            }
            if spec.train.mode == Mode::Sync {
                run.ps.set_members(run.scheduler.busy_executors());
            }
            let mut completed = Vec::new();
            while let Some((epoch, reassigned)) = run.scheduler.pop_completed() {
                let stats = run.epochs.remove(&epoch).unwrap_or_default();
                completed.push((epoch, reassigned, stats, executors));
            }
            (sends, completed, run.scheduler.finished(), cancelled)
        };
        for (tx, msg) in sends {
            if let Ok(frame) = proto::encode(&msg) {
                let _ = tx.send(frame).await;
            }
        }
        for (epoch, reassigned, stats, executors) in completed {
            let Some(snapshot) = ps.snapshot().await else {
                return Err("the parameter server stopped".into());
            };
            let now = Instant::now();
            let (updates, staleness) = (
                snapshot.version - last_staleness.0,
                snapshot.staleness_sum - last_staleness.1,
            );
            last_staleness = (snapshot.version, snapshot.staleness_sum);
            let _ = eval_tx.send(EvalItem {
                mean_staleness: staleness as f64 / updates.max(1) as f64,
                epoch,
                snapshot,
                elapsed_s: started.elapsed().as_secs_f64(),
                train_s: training_started.elapsed().as_secs_f64(),
                epoch_s: now.duration_since(last_epoch_end).as_secs_f64(),
                stats,
                reassigned,
                executors,
            });
            last_epoch_end = now;
        }
        if cancelled {
            state_at_end = JobState::Cancelled;
            break;
        }
        if finished {
            break;
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }
    drop(eval_tx);
    let evaluated = evaluator.await.map_err(|e| e.to_string())??;
    let final_snapshot = ps.snapshot().await.ok_or("the parameter server stopped")?;
    let model_path = save_final_model(
        dir,
        model.layout(),
        &final_snapshot.params,
        spec,
        id,
        final_snapshot.version,
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(id, path = %model_path.display(), "model saved");
    Ok(Outcome {
        state: state_at_end,
        epochs: evaluated.epochs,
        final_accuracy: evaluated.final_accuracy,
        time_to_target: evaluated.time_to_target,
    })
}

/// What the evaluator learned over a job.
struct Evaluated {
    epochs: u32,
    final_accuracy: Option<f64>,
    time_to_target: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
async fn evaluate_epochs(
    shared: Arc<Shared>,
    job: u64,
    spec: JobSpec,
    model: Mlp,
    test: Arc<Dataset>,
    partitions: u32,
    mut metrics: MetricsWriter,
    mut rx: mpsc::UnboundedReceiver<EvalItem>,
    target_hit: Arc<AtomicBool>,
) -> Result<Evaluated, String> {
    let mut out = Evaluated {
        epochs: 0,
        final_accuracy: None,
        time_to_target: None,
    };
    while let Some(item) = rx.recv().await {
        let (model2, test2, params) = (model.clone(), test.clone(), item.snapshot.params.clone());
        let eval = tokio::task::spawn_blocking(move || model2.evaluate(&params, &test2))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let line = EpochMetrics {
            job,
            stage: "train".into(),
            epoch: item.epoch,
            elapsed_s: item.elapsed_s,
            train_s: item.train_s,
            train_loss: item.stats.loss_sum / item.stats.batches.max(1) as f64,
            test_accuracy: f64::from(eval.accuracy),
            test_loss: f64::from(eval.loss),
            samples_per_s: item.stats.samples as f64 / item.epoch_s.max(1e-9),
            partitions_trained: item.stats.tasks,
            partitions,
            reassigned: item.reassigned,
            version: item.snapshot.version,
            mean_staleness: item.mean_staleness,
            executors: item.executors,
        };
        metrics
            .append(&line)
            .map_err(|e| format!("{}: {e}", metrics.path().display()))?;
        out.epochs = item.epoch;
        out.final_accuracy = Some(line.test_accuracy);
        if let Some(target) = spec.train.target_accuracy {
            if out.time_to_target.is_none() && line.test_accuracy >= target {
                out.time_to_target = Some(line.train_s);
                target_hit.store(true, Ordering::Relaxed);
            }
        }
        if let Some(record) = shared.lock().job_mut(job) {
            record.epochs_done = item.epoch;
            record.accuracy = Some(line.test_accuracy);
        }
        shared.emit(job, Message::Progress(Progress::Epoch(line)));
    }
    Ok(out)
}
