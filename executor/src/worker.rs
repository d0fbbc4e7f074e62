//! The compute worker: a thread with its own rayon pool that runs one task at
//! a time. For each task it finds the stage's data and model, builds the
//! [`Compute`] the job asks for (split batches or Hogwild!) and runs the
//! job's mode's [`ExecutorLoop`] over it (see `deepdist_core::mode`),
//! talking to the driver through a [`crate::link::TaskLink`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deepdist_core::compress::PushEncoder;
use deepdist_core::cpu::compute_pool;
use deepdist_core::data::Dataset;
use deepdist_core::job::{ModelLimit, Stage};
use deepdist_core::mode::{Compute, ExecutorLoop, LoopError, TaskPlan};
use deepdist_core::model::{Engine, Network, same_network};
use deepdist_core::train::{Minibatches, TaskSeeds};
use deepdist_wire::proto::{FromExecutor, TaskReport, TaskSpec, Tensor};
use tokio::sync::mpsc as tmpsc;

use crate::compute::{Hogwild, SplitBatch};
use crate::fetches::Fetches;
use crate::group::{Group, Setup};
use crate::link::{DriverLink, Outbox, ParamsMsg};

/// A task with its partition's data.
pub struct WorkItem {
    /// What to do.
    pub task: TaskSpec,
    /// The partition.
    pub data: Arc<Dataset>,
}

struct Queued {
    item: WorkItem,
    generation: u64,
}

/// The session's side of the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    work: mpsc::Sender<Queued>,
    params: mpsc::Sender<ParamsMsg>,
    generation: Arc<AtomicU64>,
    connection: Arc<AtomicU64>,
    out: Outbox,
    frozen: Arc<Mutex<Frozen>>,
}

/// The trained layers below the current pre-training stage: (job, stage, layers).
type Frozen = Option<(u64, u32, Arc<Vec<Vec<f32>>>)>;

impl WorkerHandle {
    /// Stores the trained layers that feed `stage` of `job`.
    pub fn frozen(&self, job: u64, stage: u32, layers: Vec<Vec<f32>>) {
        *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) = Some((job, stage, Arc::new(layers)));
    }

    /// Queues a task.
    pub fn submit(&self, item: WorkItem) {
        let generation = self.generation.load(Ordering::SeqCst);
        let _ = self.work.send(Queued { item, generation });
    }

    /// Delivers parameters from the driver (`None`: still at `version`, which the fetch held).
    pub fn params(&self, job: u64, stage: u32, version: u64, values: Option<Tensor>) {
        let _ = self.params.send(ParamsMsg {
            connection: self.connection.load(Ordering::SeqCst),
            job,
            stage,
            version,
            values,
        });
    }

    /// Drops the running task and everything queued (connection lost, or
    /// the driver cancelled the job).
    pub fn abandon_tasks(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Routes the worker's messages to this connection.
    pub fn connect(&self, tx: tmpsc::Sender<Bytes>) {
        self.connection.fetch_add(1, Ordering::SeqCst);
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// The connection is gone.
    pub fn disconnect(&self) {
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.abandon_tasks();
    }
}

/// Starts the worker thread with `cores` compute threads, sharing every
/// minibatch with `group` if it leads one.
pub fn spawn(
    cores: usize,
    request_timeout: Duration,
    limit: ModelLimit,
    group: Option<Box<dyn Group>>,
) -> WorkerHandle {
    let (work_tx, work_rx) = mpsc::channel();
    let (params_tx, params_rx) = mpsc::channel();
    let handle = WorkerHandle {
        work: work_tx,
        params: params_tx,
        generation: Arc::new(AtomicU64::new(0)),
        connection: Arc::new(AtomicU64::new(0)),
        out: Arc::new(Mutex::new(None)),
        frozen: Arc::new(Mutex::new(None)),
    };
    let worker = Worker {
        cores,
        limit,
        work: work_rx,
        link: DriverLink {
            params: params_rx,
            out: handle.out.clone(),
            generation: handle.generation.clone(),
            connection: handle.connection.clone(),
            request_timeout,
            fetches: Fetches::default(),
        },
        frozen: handle.frozen.clone(),
        engine: None,
        mode_loop: None,
        encoder: None,
        inputs: HashMap::new(),
        group,
    };
    let spawned = std::thread::Builder::new()
        .name("deepdist-worker".into())
        .spawn(move || worker.run());
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the worker thread");
    }
    handle
}

/// What identifies a reusable engine: job, stage, batch size.
type EngineKey = (u64, u32, usize);

/// The cached engine if it was built for this key and model, else a new
/// one with a shard per thread of the current pool.
fn reuse(
    cached: Option<(EngineKey, Box<dyn Engine>)>,
    key: EngineKey,
    model: &dyn Network,
    seed: u64,
) -> Box<dyn Engine> {
    match cached {
        Some((k, engine)) if k == key && same_network(engine.network(), model) => engine,
        _ => model.engine(key.2, rayon::current_num_threads(), seed),
    }
}

/// Runs `task`, turning a panic in it into a failed task: a bug must not
/// leave the executor heartbeating while it holds the task for ever.
fn caught<T>(task: impl FnOnce() -> Result<T, LoopError>) -> Result<T, LoopError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(LoopError::Panicked(message))
    })
}

/// A failed task's message for the driver.
fn failure(task: deepdist_wire::proto::TaskId, e: &LoopError) -> FromExecutor {
    FromExecutor::TaskFailed {
        task,
        reason: e.to_string(),
        diverged: matches!(e, LoopError::Diverged { .. }),
    }
}

struct Worker {
    cores: usize,
    /// The largest model this executor takes on.
    limit: ModelLimit,
    work: mpsc::Receiver<Queued>,
    link: DriverLink,
    frozen: Arc<Mutex<Frozen>>,
    /// The engine of the last stage, reused while its tasks keep coming.
    engine: Option<(EngineKey, Box<dyn Engine>)>,
    /// The mode's loop for the last (job, stage): its state (momentum, a
    /// local model, a clock) carries over from task to task.
    mode_loop: Option<((u64, u32), Box<dyn ExecutorLoop>)>,
    /// The push encoder of the last (job, stage): top-k's residual carries
    /// over from task to task.
    encoder: Option<((u64, u32), PushEncoder)>,
    /// Pre-training inputs: partitions passed through the frozen layers, by
    /// (partition hash, stage), for the current job.
    inputs: HashMap<(u128, u32), Arc<Dataset>>,
    /// The other ranks of this executor's group, if it leads one.
    group: Option<Box<dyn Group>>,
}

impl Worker {
    fn run(mut self) {
        let pool = match compute_pool(Some(self.cores)) {
            Ok(pool) => pool,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the compute pool");
                return;
            }
        };
        while let Ok(Queued { item, generation }) = self.work.recv() {
            if generation != self.link.generation.load(Ordering::SeqCst) {
                continue;
            }
            let task = item.task.id;
            let outcome = caught(|| pool.install(|| self.run_task(&item, generation)));
            if matches!(outcome, Err(LoopError::Panicked(_))) {
                // Whatever the task left half-updated is not reused.
                self.forget_cached();
            }
            match outcome {
                Ok(report) => {
                    self.link.send(&FromExecutor::TaskDone(report));
                }
                Err(LoopError::Abandoned) => tracing::debug!(?task, "task abandoned"),
                Err(e) => {
                    tracing::warn!(?task, error = %e, "task failed");
                    self.link.send(&failure(task, &e));
                }
            }
        }
    }

    fn forget_cached(&mut self) {
        self.engine = None;
        self.mode_loop = None;
        self.encoder = None;
        self.inputs.clear();
    }

    fn run_task(&mut self, item: &WorkItem, generation: u64) -> Result<TaskReport, LoopError> {
        let started = Instant::now();
        let (task, spec) = (item.task.id, &item.task.spec);
        let stages = spec.stages();
        let stage = stages
            .get(task.stage as usize)
            .ok_or_else(|| LoopError::Driver(format!("the job has no stage {}", task.stage)))?;
        let data = self.stage_input(item, stage)?;
        let (dim, classes) = (item.data.dim(), item.data.classes());
        spec.check_size("the task's job", dim, classes, &self.limit)
            .map_err(LoopError::Refused)?;
        let model = spec.network(task.stage as usize, dim, classes)?;
        let mode = spec.train.mode;
        let keys = spec.train.mode_keys();
        let shape = mode.shape(&keys, stage.batch_size, item.task.peers);
        let plan = TaskPlan {
            epoch: task.epoch,
            lr: stage.optimizer.schedule().lr_at(task.epoch),
            momentum: stage.optimizer.schedule().momentum_at(task.epoch),
            peers: item.task.peers,
            shape,
        };
        let run = (task.job, task.stage);
        let len = model.layout().len();
        let mut mode_loop = match self.mode_loop.take() {
            Some((key, l)) if key == run => l,
            _ => mode.executor_loop(&keys, &stage.optimizer, len),
        };
        let key = (task.job, task.stage, shape.batch);
        let seeds = TaskSeeds::new(spec.train.seed, task.epoch, task.partition);
        let batches = Minibatches::seeded(data.len(), shape.batch, seeds.order);
        let mut hogwild = spec.train.hogwild;
        if let Some(group) = &mut self.group {
            group.setup(&Setup {
                spec: spec.clone(),
                stage: task.stage,
                dim,
                classes,
                batch: shape.batch,
                seed: spec.train.seed,
            })?;
            if hogwild {
                tracing::warn!("an executor group splits each minibatch across its ranks: train.hogwild is ignored");
                hogwild = false;
            }
        }
        let mut encoder = match self.encoder.take() {
            Some((key, e)) if key == run => e,
            _ => PushEncoder::new(spec.train.push_codec()),
        };
        let mut link = self.link.for_task(task, generation, &plan, &mut encoder);
        let choice = (hogwild, self.group.as_deref_mut());
        let mut engine = reuse(self.engine.take(), key, model.as_ref(), seeds.draws);
        engine.reseed(seeds.draws);
        let work = train(engine.as_mut(), &data, batches, choice, seeds.draws, |c| {
            mode_loop.run_task(&plan, c, &mut link)
        });
        let pushes = link.pushes();
        self.engine = Some((key, engine));
        // Kept even when the task failed: what top-k held back is still owed.
        self.encoder = Some((run, encoder));
        let work = work?;
        self.mode_loop = Some((run, mode_loop));
        Ok(TaskReport {
            task,
            samples: u64::from(work.samples),
            batches: u64::from(work.batches),
            loss_sum: f64::from(work.loss_sum),
            compute_s: started.elapsed().as_secs_f64(),
            pushes,
        })
    }

    /// The data a stage trains on: the partition itself, or for a stage
    /// whose input passes through earlier stages (a DBN's RBM `l > 0`) the
    /// partition passed through their trained layers, which the driver sent
    /// (computed once per partition and stage).
    fn stage_input(&mut self, item: &WorkItem, stage: &Stage) -> Result<Arc<Dataset>, LoopError> {
        let task = item.task.id;
        let layers = stage.input_layers as usize;
        if layers == 0 {
            return Ok(item.data.clone());
        }
        if self.inputs.keys().any(|&(_, s)| s != task.stage) {
            self.inputs.clear();
        }
        if let Some(data) = self.inputs.get(&(item.task.partition_hash, task.stage)) {
            return Ok(data.clone());
        }
        let frozen = self.frozen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let trained = match frozen {
            Some((job, s, trained)) if job == task.job && s == task.stage && trained.len() == layers => trained,
            _ => {
                return Err(LoopError::Driver(format!(
                    "no trained layers for stage {} of job {}",
                    task.stage, task.job
                )));
            }
        };
        let spec = &item.task.spec;
        let seed = spec.train.seed ^ u64::from(task.partition);
        let data = spec
            .kind()?
            .input(spec, task.stage as usize, &trained, &item.data, true, seed)?;
        let data = Arc::new(data);
        self.inputs.insert((item.task.partition_hash, task.stage), data.clone());
        Ok(data)
    }
}

/// How a task computes: Hogwild! or not, and the group that shares its
/// minibatches, if any.
type ComputeChoice<'g> = (bool, Option<&'g mut (dyn Group + 'static)>);

/// Runs `body` on the compute the job asks for.
fn train<T>(
    engine: &mut dyn Engine,
    data: &Dataset,
    batches: Minibatches,
    choice: ComputeChoice<'_>,
    seed: u64,
    body: impl FnOnce(&mut dyn Compute) -> T,
) -> T {
    match choice {
        (_, Some(group)) => body(&mut SplitBatch::grouped(engine, data, batches, group)),
        (true, None) => body(&mut Hogwild::new(engine, data, batches, seed, false)),
        (false, None) => body(&mut SplitBatch::new(engine, data, batches)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_task_fails_and_the_pool_goes_on() {
        let pool = compute_pool(Some(2)).unwrap();
        let outcome: Result<(), LoopError> = caught(|| {
            pool.install(|| {
                let (a, b) = rayon::join(|| 1, || -> i32 { panic!("index out of range in layer 2") });
                assert_eq!(a, b);
                Ok(())
            })
        });
        match outcome {
            Err(LoopError::Panicked(m)) => assert!(m.contains("layer 2"), "{m}"),
            other => panic!("expected a panic report, got {other:?}"),
        }
        let task = deepdist_wire::proto::TaskId {
            job: 1,
            stage: 0,
            epoch: 1,
            partition: 0,
            attempt: 1,
        };
        let failure = failure(task, &LoopError::Panicked("x".into()));
        assert!(matches!(failure, FromExecutor::TaskFailed { diverged: false, .. }));
        assert_eq!(pool.install(|| rayon::join(|| 2, || 3)), (2, 3));
    }
}
