//! A simulated executor: a thread that runs the real mode loop over the
//! real split-minibatch compute, whose link hands every call to the
//! simulation and waits for its answer. Only one executor runs at a time,
//! and each call happens at that executor's virtual clock: the compute it
//! did since its last call, priced by the [`CostModel`], moves the clock on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};

use deepdist_core::compress::{Encoded, PushEncoder};
use deepdist_core::data::Partition;
use deepdist_core::job::{JobSpec, Stage};
use deepdist_core::mode::{Compute, ExecutorLoop, Link, LocalSteps, LoopError, Received, TaskPlan, Work};
use deepdist_core::model::{Engine, SharedNetwork};
use deepdist_core::train::{Minibatches, TaskSeeds};
use deepdist_executor::compute::SplitBatch;

use crate::cost::CostModel;

/// What an executor asks of the simulation.
#[derive(Debug)]
pub(crate) enum Call {
    /// The next task, after finishing the last one (if any) with this work.
    NextTask(Option<Work>),
    /// The task failed (training diverged, or a bug).
    Failed(String),
    /// An update for the server.
    Push {
        base_version: u64,
        epoch: u32,
        work: Work,
        /// The values as the server decodes them.
        values: Vec<f32>,
        /// Their size on the wire.
        bytes: usize,
    },
    /// A fetch.
    Request { wait_for: u64, newer_than: Option<u64> },
    /// What fetches have brought, waiting for one if `wait` and any of the
    /// `due` unanswered fetches could still bring it.
    Receive { min_version: u64, wait: bool, due: u64 },
}

/// A call and the compute seconds since the executor's last one.
#[derive(Debug)]
pub(crate) struct Message {
    pub call: Call,
    pub compute_s: f64,
}

/// Parameters a fetch brought: their version, and the values unless the
/// answer said the executor's copy already stands for them.
pub(crate) type Delivered = (u64, Option<Arc<Vec<f32>>>);

/// The simulation's answer to a call.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Carry on.
    Go,
    /// The next task, or none: the executor stops.
    Task(Option<Task>),
    /// Answers drained from the mailbox and the newest that qualifies.
    Params { answered: u64, newest: Option<Delivered> },
}

/// One task as the simulation hands it out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Task {
    pub plan: TaskPlan,
    pub partition: u32,
}

/// What every executor shares.
pub(crate) struct Setup {
    pub spec: JobSpec,
    pub stage: Stage,
    pub network: SharedNetwork,
    pub partitions: Arc<Vec<Partition>>,
    pub cost: CostModel,
    pub cores: usize,
    pub pool: Arc<rayon::ThreadPool>,
    /// Seconds a core spends copying a byte of a message (0 but on one machine).
    pub copy_s_per_byte: f64,
}

/// The executor thread's body: tasks until the simulation says stop.
pub(crate) fn run(setup: Arc<Setup>, tx: Sender<Message>, rx: Receiver<Answer>) {
    let spent = Arc::new(Spent::default());
    let mut link = SimLink {
        tx,
        rx,
        spent: spent.clone(),
        copy_s_per_byte: setup.copy_s_per_byte,
        encoder: PushEncoder::new(setup.spec.train.push_codec()),
        sent: 0,
        answered: 0,
        plan: None,
    };
    let (spec, stage) = (&setup.spec, &setup.stage);
    let len = setup.network.layout().len();
    let mode = spec.train.mode;
    let mut mode_loop: Box<dyn ExecutorLoop> = mode.executor_loop(&spec.train.mode_keys(), &stage.optimizer, len);
    let mut engine: Option<(usize, Box<dyn Engine>)> = None;
    let mut finished = None;
    while let Ok(Some(task)) = link.next_task(finished.take()) {
        let batch = task.plan.shape.batch;
        let seeds = TaskSeeds::new(spec.train.seed, task.plan.epoch, task.partition);
        let mut eng = match engine.take() {
            Some((b, e)) if b == batch => e,
            _ => setup.network.engine(batch, setup.cores, seeds.draws),
        };
        eng.reseed(seeds.draws);
        let Some(part) = setup.partitions.get(task.partition as usize) else {
            link.fail(format!("no partition {}", task.partition));
            return;
        };
        let batches = Minibatches::seeded(part.data.len(), batch, seeds.order);
        link.plan = Some(task.plan);
        let mut compute = Priced {
            inner: SplitBatch::new(eng.as_mut(), &part.data, batches),
            pool: &setup.pool,
            cost: setup.cost,
            cores: setup.cores,
            len,
            spent: spent.clone(),
        };
        let outcome = mode_loop.run_task(&task.plan, &mut compute, &mut link);
        drop(compute);
        engine = Some((batch, eng));
        match outcome {
            Ok(work) => finished = Some(work),
            Err(LoopError::Abandoned) => return,
            Err(e) => {
                link.fail(e.to_string());
                return;
            }
        }
    }
}

/// Virtual seconds of compute not yet charged to the executor's clock.
/// Atomic only because the compute runs on a pool thread; one thread
/// touches it at a time.
#[derive(Default)]
struct Spent(AtomicU64);

impl Spent {
    fn add(&self, s: f64) {
        let now = f64::from_bits(self.0.load(Ordering::Relaxed));
        self.0.store((now + s).to_bits(), Ordering::Relaxed);
    }

    fn take(&self) -> f64 {
        f64::from_bits(self.0.swap(0, Ordering::Relaxed))
    }
}

/// The real compute, its work priced in virtual seconds. It runs on the
/// machine's pool only while it computes: an executor waiting for the
/// simulation must not hold one of the pool's threads.
struct Priced<'a> {
    inner: SplitBatch<'a>,
    pool: &'a rayon::ThreadPool,
    cost: CostModel,
    cores: usize,
    len: usize,
    spent: Arc<Spent>,
}

impl Priced<'_> {
    fn charge(&self, work: Work, steps: bool) -> Work {
        let mut s = self.cost.gradient_s(work.samples as usize, self.cores);
        if steps {
            s += f64::from(work.batches) * self.cost.step_s(self.len);
        }
        self.spent.add(s);
        work
    }
}

impl Compute for Priced<'_> {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn accumulate(&mut self, params: &[f32]) -> Result<Work, LoopError> {
        let inner = &mut self.inner;
        let work = self.pool.install(|| inner.accumulate(params))?;
        Ok(self.charge(work, false))
    }

    fn take(&mut self) -> &[f32] {
        self.inner.take()
    }

    fn local_steps(&mut self, params: &mut [f32], steps: &mut LocalSteps, n: usize) -> Result<Work, LoopError> {
        let inner = &mut self.inner;
        let work = self.pool.install(|| inner.local_steps(params, steps, n))?;
        Ok(self.charge(work, true))
    }
}

/// The executor's connection to the simulated driver.
struct SimLink {
    tx: Sender<Message>,
    rx: Receiver<Answer>,
    spent: Arc<Spent>,
    copy_s_per_byte: f64,
    /// How pushes travel: the server gets the values as they arrive.
    encoder: PushEncoder,
    sent: u64,
    answered: u64,
    /// The running task's plan.
    plan: Option<TaskPlan>,
}

impl SimLink {
    fn call(&mut self, call: Call) -> Result<Answer, LoopError> {
        let compute_s = self.spent.take();
        self.tx
            .send(Message { call, compute_s })
            .map_err(|_| LoopError::Abandoned)?;
        self.rx.recv().map_err(|_| LoopError::Abandoned)
    }

    fn go(&mut self, call: Call) -> Result<(), LoopError> {
        match self.call(call)? {
            Answer::Go => Ok(()),
            other => Err(LoopError::Driver(format!("the simulation answered {other:?}"))),
        }
    }

    fn next_task(&mut self, finished: Option<Work>) -> Result<Option<Task>, LoopError> {
        match self.call(Call::NextTask(finished))? {
            Answer::Task(task) => Ok(task),
            other => Err(LoopError::Driver(format!("the simulation answered {other:?}"))),
        }
    }

    fn fail(&mut self, why: String) {
        let compute_s = self.spent.take();
        let _ = self.tx.send(Message {
            call: Call::Failed(why),
            compute_s,
        });
    }
}

impl Link for SimLink {
    fn push(&mut self, base_version: u64, work: Work, values: &[f32]) -> Result<(), LoopError> {
        let plan = self
            .plan
            .ok_or_else(|| LoopError::Driver("a push outside a task".into()))?;
        let compression = self.encoder.codec().compression;
        let (sent, bytes) = match self.encoder.encode(values, plan.epoch, plan.momentum, plan.peers) {
            Encoded::Plain(v) => (v.to_vec(), v.len() * 4),
            Encoded::Bytes(b) => {
                let mut sent = vec![0.0; values.len()];
                let decoded = compression.decode_into(&b, &mut sent);
                decoded.map_err(|e| LoopError::Link(Box::new(e)))?;
                (sent, b.len())
            }
        };
        self.spent.add(bytes as f64 * self.copy_s_per_byte);
        self.go(Call::Push {
            base_version,
            epoch: plan.epoch,
            work,
            values: sent,
            bytes,
        })
    }

    fn request(&mut self, wait_for: u64) -> Result<(), LoopError> {
        self.sent += 1;
        self.go(Call::Request {
            wait_for,
            newer_than: None,
        })
    }

    fn request_newer(&mut self, have: u64) -> Result<(), LoopError> {
        self.sent += 1;
        self.go(Call::Request {
            wait_for: 0,
            newer_than: Some(have),
        })
    }

    fn outstanding(&self) -> bool {
        self.answered < self.sent
    }

    fn receive(&mut self, params: &mut [f32], min_version: u64, wait: bool) -> Result<Option<Received>, LoopError> {
        let due = self.sent - self.answered;
        match self.call(Call::Receive { min_version, wait, due })? {
            Answer::Params { answered, newest } => {
                self.answered += answered;
                Ok(newest.map(|(version, values)| {
                    if let Some(values) = &values {
                        params.copy_from_slice(values);
                        self.spent.add(values.len() as f64 * 4.0 * self.copy_s_per_byte);
                    }
                    Received {
                        version,
                        copied: values.is_some(),
                    }
                }))
            }
            other => Err(LoopError::Driver(format!("the simulation answered {other:?}"))),
        }
    }
}
