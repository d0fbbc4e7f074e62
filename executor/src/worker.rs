//! The compute worker: a thread with its own rayon pool that runs one task at
//! a time.
//!
//! `async` (Downpour): every minibatch takes a local step (see
//! [`crate::local`]); the step directions of `n_push` minibatches are pushed
//! as one update with the version they started from; right after a push the
//! next parameters are requested, so they arrive while the following
//! minibatches compute and are adopted (and rebased) at the next fetch point,
//! every `n_fetch` minibatches, normally without waiting.
//! `sync`: every minibatch's gradient is pushed and the worker waits for the
//! version that averages it with the other executors'.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::collections::HashMap;

use deepdist_common::cpu::compute_pool;
use deepdist_common::data::Dataset;
use deepdist_common::job::{Mode, Stage, StageKind};
use deepdist_common::model::{GradientEngine, Mlp, Model, Rbm, StageModel};
use deepdist_common::proto::{self, Message, Push, TaskReport, TaskSpec, Tensor};

use crate::fetches::Fetches;
use crate::local::LocalSteps;
use ndarray::{Array2, s};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::sync::mpsc as tmpsc;

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

struct ParamsMsg {
    /// The connection they came on (see [`Fetches`]).
    connection: u64,
    job: u64,
    stage: u32,
    version: u64,
    values: Tensor,
}

/// The session's side of the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    work: mpsc::Sender<Queued>,
    params: mpsc::Sender<ParamsMsg>,
    generation: Arc<AtomicU64>,
    connection: Arc<AtomicU64>,
    out: Arc<Mutex<Option<tmpsc::Sender<Bytes>>>>,
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

    /// Delivers parameters from the driver.
    pub fn params(&self, job: u64, stage: u32, version: u64, values: Tensor) {
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

/// Starts the worker thread with `cores` compute threads.
pub fn spawn(cores: usize, request_timeout: Duration) -> WorkerHandle {
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
        request_timeout,
        work: work_rx,
        params: params_rx,
        generation: handle.generation.clone(),
        connection: handle.connection.clone(),
        out: handle.out.clone(),
        frozen: handle.frozen.clone(),
        mlp_engine: None,
        rbm_engine: None,
        local: None,
        inputs: HashMap::new(),
        fetches: Fetches::default(),
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

/// The cached engine if it was built for this key and model, else a new one.
fn reuse<M: Model + PartialEq + Clone>(
    cached: Option<(EngineKey, GradientEngine<M>)>,
    key: EngineKey,
    model: &M,
    seed: u64,
) -> GradientEngine<M> {
    match cached {
        Some((k, engine)) if k == key && engine.model() == model => engine,
        _ => GradientEngine::new(model.clone(), key.2, seed),
    }
}

/// Why a task stopped early.
enum Stop {
    /// Abandoned: connection lost or job cancelled. Nothing to report.
    Abandoned,
    /// Failed: reported to the driver, which reassigns it.
    Failed(String),
}

struct Worker {
    cores: usize,
    request_timeout: Duration,
    work: mpsc::Receiver<Queued>,
    params: mpsc::Receiver<ParamsMsg>,
    generation: Arc<AtomicU64>,
    connection: Arc<AtomicU64>,
    out: Arc<Mutex<Option<tmpsc::Sender<Bytes>>>>,
    frozen: Arc<Mutex<Frozen>>,
    /// Engines of the last stage, reused while its tasks keep coming.
    mlp_engine: Option<(EngineKey, GradientEngine<Mlp>)>,
    rbm_engine: Option<(EngineKey, GradientEngine<Rbm>)>,
    /// Async local steps (with their momentum) of the last stage.
    local: Option<((u64, u32), LocalSteps)>,
    /// Pre-training inputs: partitions passed through the frozen layers, by
    /// (partition hash, stage), for the current job.
    inputs: HashMap<(u128, u32), Arc<Dataset>>,
    fetches: Fetches,
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
            if generation != self.generation.load(Ordering::SeqCst) {
                continue;
            }
            let task = item.task.id;
            let result = pool.install(|| self.run_task(&item, generation));
            match result {
                Ok(report) => {
                    self.send(Message::TaskDone(report));
                }
                Err(Stop::Abandoned) => tracing::debug!(?task, "task abandoned"),
                Err(Stop::Failed(reason)) => {
                    tracing::warn!(?task, %reason, "task failed");
                    self.send(Message::TaskFailed { task, reason });
                }
            }
        }
    }

    fn send(&self, msg: Message) -> bool {
        proto::encode(&msg).is_ok_and(|frame| self.send_frame(frame))
    }

    fn send_frame(&self, frame: Bytes) -> bool {
        let out = self.out.lock().unwrap_or_else(|p| p.into_inner()).clone();
        out.is_some_and(|tx| tx.blocking_send(frame).is_ok())
    }

    fn request(&mut self, (job, stage): (u64, u32), min_version: u64) -> Result<(), Stop> {
        let connection = self.connection.load(Ordering::SeqCst);
        if !self.send(Message::Fetch {
            job,
            stage,
            min_version,
        }) {
            return Err(Stop::Abandoned);
        }
        self.fetches.sent_on(connection);
        Ok(())
    }

    /// The newest parameters already received for `job` with version ≥
    /// `min_version`; with `wait`, blocks until every outstanding fetch is
    /// answered if none has arrived.
    fn receive(
        &mut self,
        (job, stage): (u64, u32),
        min_version: u64,
        wait: bool,
        generation: u64,
    ) -> Result<Option<ParamsMsg>, Stop> {
        let mut newest: Option<ParamsMsg> = None;
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let next = match self.params.try_recv() {
                Ok(p) => Some(p),
                Err(_) if !wait || newest.is_some() || !self.fetches.outstanding() => None,
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.params.recv_timeout(left.min(Duration::from_millis(200))) {
                        Ok(p) => Some(p),
                        Err(RecvTimeoutError::Timeout) => {
                            if generation != self.generation.load(Ordering::SeqCst) {
                                return Err(Stop::Abandoned);
                            }
                            if Instant::now() >= deadline {
                                return Err(Stop::Failed(format!(
                                    "no parameters from the driver within {:?}",
                                    self.request_timeout
                                )));
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return Err(Stop::Abandoned),
                    }
                }
            };
            let Some(p) = next else { return Ok(newest) };
            if !self.fetches.answered_on(p.connection) {
                continue;
            }
            let current = p.job == job && p.stage == stage && p.version >= min_version;
            if current && newest.as_ref().is_none_or(|n| p.version >= n.version) {
                newest = Some(p);
            }
        }
    }

    fn run_task(&mut self, item: &WorkItem, generation: u64) -> Result<TaskReport, Stop> {
        let (task, spec) = (item.task.id, &item.task.spec);
        let stages = spec.stages();
        let stage = stages
            .get(task.stage as usize)
            .ok_or_else(|| Stop::Failed(format!("the job has no stage {}", task.stage)))?;
        let data = self.stage_input(item, stage)?;
        let (dim, classes) = (item.data.dim(), item.data.classes());
        let model = StageModel::for_stage(spec, stage.kind, dim, classes).map_err(|e| Stop::Failed(e.to_string()))?;
        let key = (task.job, task.stage, stage.batch_size as usize);
        let seed = spec.train.seed ^ u64::from(task.partition);
        match model {
            StageModel::Mlp(m) => {
                let mut engine = reuse(self.mlp_engine.take(), key, &m, seed);
                let report = self.train(&mut engine, item, stage, &data, generation);
                self.mlp_engine = Some((key, engine));
                report
            }
            StageModel::Rbm(r) => {
                let mut engine = reuse(self.rbm_engine.take(), key, &r, seed);
                let report = self.train(&mut engine, item, stage, &data, generation);
                self.rbm_engine = Some((key, engine));
                report
            }
        }
    }

    /// The data a stage trains on: the partition itself, or for RBM `l > 0`
    /// the partition passed through the frozen RBMs below (computed once per
    /// partition and stage).
    fn stage_input(&mut self, item: &WorkItem, stage: &Stage) -> Result<Arc<Dataset>, Stop> {
        let task = item.task.id;
        let layer = match stage.kind {
            StageKind::Rbm { layer } if layer > 0 => layer,
            _ => return Ok(item.data.clone()),
        };
        if self.inputs.keys().any(|&(_, s)| s != task.stage) {
            self.inputs.clear();
        }
        if let Some(data) = self.inputs.get(&(item.task.partition_hash, task.stage)) {
            return Ok(data.clone());
        }
        let frozen = self.frozen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let layers = match frozen {
            Some((job, s, layers)) if job == task.job && s == task.stage && layers.len() == layer as usize => layers,
            _ => {
                return Err(Stop::Failed(format!(
                    "no trained layers for stage {} of job {}",
                    task.stage, task.job
                )));
            }
        };
        let spec = &item.task.spec;
        let dbn = spec
            .build_dbn(item.data.dim(), item.data.classes())
            .map_err(|e| Stop::Failed(e.to_string()))?;
        let sample = spec.pretrain.as_ref().is_some_and(|p| p.sample_inputs);
        let data = dbn
            .features(&layers, &item.data, sample, spec.train.seed ^ u64::from(task.partition))
            .map_err(|e| Stop::Failed(e.to_string()))?;
        let data = Arc::new(data);
        self.inputs.insert((item.task.partition_hash, task.stage), data.clone());
        Ok(data)
    }

    fn train<M: Model>(
        &mut self,
        engine: &mut GradientEngine<M>,
        item: &WorkItem,
        stage: &Stage,
        data: &Dataset,
        generation: u64,
    ) -> Result<TaskReport, Stop> {
        let started = Instant::now();
        let (task, spec) = (item.task.id, &item.task.spec);
        let train = &spec.train;
        let batch = stage.batch_size as usize;
        let mut params = vec![0.0f32; engine.model().layout().len()];
        let run = (task.job, task.stage);
        let mut x = Array2::zeros((batch, data.dim()));
        let mut y = Vec::with_capacity(batch);
        let mut order: Vec<usize> = (0..data.len()).collect();
        let seed = train.seed ^ (u64::from(task.epoch) << 32) ^ u64::from(task.partition);
        order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));

        self.request(run, 0)?;
        let mut version = self.adopt(run, 0, true, generation, &mut params)?.unwrap_or(0);
        let (mut seq, mut window, mut window_samples, mut window_loss) = (0u64, 0u32, 0u32, 0.0f32);
        let (mut samples, mut batches, mut loss_sum) = (0u64, 0u64, 0.0f64);
        let abandoned = |s: &Self| generation != s.generation.load(Ordering::SeqCst);
        let chunks: Vec<&[usize]> = order.chunks(batch).collect();
        let mut local = match self.local.take() {
            Some((key, local)) if key == (task.job, task.stage) => local,
            _ => LocalSteps::new(&stage.optimizer, params.len()),
        };
        local.start_task(stage.optimizer.lr_at(task.epoch), stage.momentum_at(task.epoch));
        let push_every = if train.mode == Mode::Sync {
            1
        } else {
            train.n_push.max(1)
        };
        for (i, rows) in chunks.iter().enumerate() {
            if abandoned(self) {
                return Err(Stop::Abandoned);
            }
            data.gather(rows, &mut x, &mut y);
            let batch_x = x.slice(s![..rows.len(), ..]);
            let labels: &[u8] = if engine.model().classes().is_some() { &y } else { &[] };
            let loss = match train.mode {
                Mode::Sync => engine.accumulate(&params, batch_x, labels),
                Mode::Async => engine.gradient(&params, batch_x, labels).map(|(loss, g)| {
                    local.step(&mut params, g);
                    loss
                }),
            }
            .map_err(|e| Stop::Failed(e.to_string()))?;
            window += 1;
            window_samples += rows.len() as u32;
            window_loss += loss;
            samples += rows.len() as u64;
            batches += 1;
            loss_sum += f64::from(loss);
            let last = i + 1 == chunks.len();
            if window == push_every || last {
                let push = Message::Push(Push {
                    task,
                    seq,
                    base_version: version,
                    batches: window,
                    samples: window_samples,
                    loss_sum: window_loss,
                    grad: Tensor::default(),
                });
                let values = match train.mode {
                    Mode::Sync => engine.take(),
                    Mode::Async => local.take_window(),
                };
                let frame = proto::encode_with_tensor(&push, values).map_err(|e| Stop::Failed(e.to_string()))?;
                if !self.send_frame(frame) {
                    return Err(Stop::Abandoned);
                }
                seq += 1;
                (window, window_samples, window_loss) = (0, 0, 0.0);
                if last {
                    break;
                }
                match train.mode {
                    Mode::Sync => {
                        self.request(run, version + 1)?;
                        version = self
                            .adopt(run, version + 1, true, generation, &mut params)?
                            .unwrap_or(version);
                    }
                    Mode::Async => {
                        // Ask now, so the answer includes this push and
                        // arrives while the next minibatches compute.
                        if !self.fetches.outstanding() {
                            self.request(run, 0)?;
                            local.requested();
                        }
                    }
                }
            }
            if train.mode == Mode::Async && (i + 1) % train.n_fetch.max(1) as usize == 0 {
                // The parameters asked for at the last push have usually
                // arrived by now. If not, the parameter server is behind:
                // waiting for them is the backpressure that keeps staleness
                // bounded instead of letting updates pile up at the server.
                if let Some(v) = self.adopt(run, 0, true, generation, &mut params)? {
                    version = v;
                    local.rebase(&mut params);
                }
                if !self.fetches.outstanding() {
                    self.request(run, 0)?;
                    local.requested();
                }
            }
        }
        self.local = Some(((task.job, task.stage), local));
        Ok(TaskReport {
            task,
            samples,
            batches,
            loss_sum,
            compute_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Receives parameters (see [`Worker::receive`]) into `params`; returns
    /// their version if any arrived.
    fn adopt(
        &mut self,
        job: (u64, u32),
        min_version: u64,
        wait: bool,
        generation: u64,
        params: &mut [f32],
    ) -> Result<Option<u64>, Stop> {
        match self.receive(job, min_version, wait, generation)? {
            Some(p) => {
                p.values.read_into(params).map_err(|e| Stop::Failed(e.to_string()))?;
                Ok(Some(p.version))
            }
            None if wait && self.fetches.outstanding() => {
                Err(Stop::Failed("the driver sent no parameters for this job".into()))
            }
            None => Ok(None),
        }
    }
}
