//! The simulation's loop: executors and the parameter server in virtual
//! time. The next thing to happen is always the earliest: an event arriving
//! (an update or fetch at the server, parameters at an executor) or the
//! call of the executor with the lowest clock. Every executor's clock is at
//! least that call's time, so nothing they do later can reach the server
//! before it: the order is the cluster's, not this machine's scheduler's.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use deepdist_core::mode::{ServerModel, ServerRule, Shape, TaskPlan, Update};
use deepdist_core::model::StageEval;
use deepdist_core::noise::NoiseScale;

use crate::cost::Nic;
use crate::events::{Event, Queue};
use crate::executor::{self, Answer, Call, Delivered, Message, Setup, Task};
use crate::{EvalPoint, SimConfig, SimError, SimJob, SimReport};

/// Bytes of a message without parameters (a fetch, an unchanged answer).
const SMALL: u64 = 64;

/// Minibatches of each size a noise-scale measurement averages: late in
/// training the two norms differ by little, and with 8 the estimate of
/// `|G|²` came out negative in a third of the MLP job's epochs.
const NOISE_ROUNDS: usize = 32;

struct Exec {
    clock: f64,
    /// The call it waits on an answer to.
    pending: Option<Call>,
    /// Waiting in a receive for parameters still in flight.
    blocked: bool,
    /// Parameters arrived or on their way: (arrival, version, values).
    mailbox: Vec<(f64, Delivered)>,
    /// Answers taken from the mailbox by a receive still waiting.
    drained: u64,
    tx: Sender<Answer>,
    rx: Receiver<Message>,
    stopped: bool,
}

/// A fetch the server holds until its rule lets it be answered.
struct Waiting {
    from: usize,
    wait_for: u64,
    newer_than: Option<u64>,
}

struct Server {
    model: ServerModel,
    rule: Box<dyn ServerRule>,
    free_at: f64,
    busy_s: f64,
    waiting: Vec<Waiting>,
    card_in: Nic,
    card_out: Nic,
    frame: Option<(u64, Arc<Vec<f32>>)>,
    members: HashSet<u64>,
    examples: u64,
}

struct Run<'a> {
    job: &'a SimJob,
    config: &'a SimConfig,
    execs: Vec<Exec>,
    server: Server,
    queue: Queue,
    tasks: std::vec::IntoIter<(u32, u32)>,
    shape: Shape,
    points: Vec<EvalPoint>,
    next_eval: u64,
    target_at: Option<(f64, f64)>,
    stop: bool,
    /// The machine's threads, for the noise measurement.
    setup_pool: Arc<rayon::ThreadPool>,
    failed: Option<String>,
    last_time: f64,
}

/// Runs `job` on the simulated cluster `config` describes.
pub(crate) fn simulate(job: &SimJob, config: &SimConfig) -> Result<SimReport, SimError> {
    let (spec, stage) = (&job.spec, &job.stage);
    let mode = spec.train.mode;
    let keys = spec.train.mode_keys();
    let optimizer = mode.server_optimizer(&stage.optimizer).build(job.init.len())?;
    let mut model = ServerModel::new(job.init.clone(), optimizer, 0, 0).with_batch(stage.batch_size);
    model.keep_versions(256);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.machine_threads.max(1))
        .build()
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let setup = Arc::new(Setup {
        spec: spec.clone(),
        stage: stage.clone(),
        network: job.network.clone(),
        partitions: job.partitions.clone(),
        cost: config.cost,
        cores: config.cores,
        pool: Arc::new(pool),
    });
    let parts = job.partitions.len() as u32;
    let tasks: Vec<(u32, u32)> = (1..=stage.epochs)
        .flat_map(|e| (0..parts).map(move |p| (e, p)))
        .collect();
    let mut threads = Vec::new();
    let mut execs = Vec::new();
    for i in 0..config.executors {
        let (call_tx, call_rx) = mpsc::channel();
        let (answer_tx, answer_rx) = mpsc::channel();
        let setup = setup.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sim-executor-{i}"))
            .spawn(move || executor::run(setup, call_tx, answer_rx))
            .map_err(|e| SimError::Setup(e.to_string()))?;
        threads.push(thread);
        execs.push(Exec {
            clock: 0.0,
            pending: None,
            blocked: false,
            mailbox: Vec::new(),
            drained: 0,
            tx: answer_tx,
            rx: call_rx,
            stopped: false,
        });
    }
    let mut run = Run {
        job,
        config,
        execs,
        server: Server {
            model,
            rule: mode.server_rule(&keys),
            free_at: 0.0,
            busy_s: 0.0,
            waiting: Vec::new(),
            card_in: Nic::default(),
            card_out: Nic::default(),
            frame: None,
            members: HashSet::new(),
            examples: 0,
        },
        queue: Queue::default(),
        tasks: tasks.into_iter(),
        shape: mode.shape(&keys, stage.batch_size, config.executors as u32),
        points: Vec::new(),
        next_eval: job.eval_every_examples(config.eval_every),
        target_at: None,
        stop: false,
        setup_pool: setup.pool.clone(),
        failed: None,
        last_time: 0.0,
    };
    let outcome = run.main_loop();
    // Dropping the answer channels ends every executor still waiting.
    let Run {
        execs,
        server,
        points,
        target_at,
        failed,
        last_time,
        ..
    } = run;
    drop(execs);
    for t in threads {
        let _ = t.join();
    }
    outcome?;
    let final_eval = evaluate(job, &server.model)?;
    let updates = server.model.version();
    Ok(SimReport {
        points,
        final_accuracy: final_eval.0,
        final_loss: final_eval.1,
        time_s: last_time,
        time_to_target_s: target_at.map(|t| t.0),
        epochs_to_target: target_at.map(|t| t.1),
        examples: server.examples,
        updates,
        mean_staleness: server.model.staleness_sum() as f64 / updates.max(1) as f64,
        bytes_in: server.card_in.bytes,
        bytes_out: server.card_out.bytes,
        server_busy_s: server.busy_s,
        card_busy_s: server.card_in.busy_s.max(server.card_out.busy_s),
        failed,
        params: server.model.params().to_vec(),
    })
}

/// The accuracy and loss of the server's parameters (their average, if the
/// optimizer keeps one) on the job's evaluation set.
fn evaluate(job: &SimJob, model: &ServerModel) -> Result<(f64, f64), SimError> {
    let params = model.optimizer().average().unwrap_or(model.params());
    match job.network.evaluate(params, &job.eval)? {
        StageEval::Supervised(e) => Ok((f64::from(e.accuracy), f64::from(e.loss))),
        StageEval::Reconstruction(r) => Ok((f64::NAN, f64::from(r))),
    }
}

impl Run<'_> {
    fn main_loop(&mut self) -> Result<(), SimError> {
        for i in 0..self.execs.len() {
            self.wait_for_call(i)?;
        }
        loop {
            let exec = (0..self.execs.len())
                .filter(|&i| self.execs[i].pending.is_some() && !self.execs[i].blocked && !self.execs[i].stopped)
                .min_by(|&a, &b| self.execs[a].clock.total_cmp(&self.execs[b].clock));
            let event_at = self.queue.next_at();
            let event_first = event_at.is_some_and(|at| exec.is_none_or(|i| at <= self.execs[i].clock));
            if event_first {
                if let Some((at, event)) = self.queue.pop() {
                    self.last_time = self.last_time.max(at);
                    self.on_event(at, event)?;
                }
            } else if let Some(i) = exec {
                self.on_call(i)?;
            } else {
                break;
            }
            if self.failed.is_some() {
                return Ok(());
            }
        }
        if self.execs.iter().any(|e| !e.stopped) {
            return Err(SimError::Stuck(
                "executors wait for answers that will never come (a server rule that never lets them on)".into(),
            ));
        }
        Ok(())
    }

    /// Resumes executor `i` (its answer sent) until its next call.
    fn wait_for_call(&mut self, i: usize) -> Result<(), SimError> {
        let exec = &mut self.execs[i];
        let Message { call, compute_s } = exec
            .rx
            .recv()
            .map_err(|_| SimError::Setup(format!("simulated executor {i} ended without a word")))?;
        exec.clock += compute_s;
        self.last_time = self.last_time.max(exec.clock);
        exec.pending = Some(call);
        Ok(())
    }

    fn answer(&mut self, i: usize, answer: Answer) -> Result<(), SimError> {
        let exec = &mut self.execs[i];
        exec.pending = None;
        if exec.tx.send(answer).is_err() {
            exec.stopped = true;
            return Ok(());
        }
        self.wait_for_call(i)
    }

    fn on_call(&mut self, i: usize) -> Result<(), SimError> {
        let now = self.execs[i].clock;
        let link = self.config.cost.link;
        let Some(call) = self.execs[i].pending.take() else {
            return Ok(());
        };
        match call {
            Call::NextTask(finished) => {
                if finished.is_some() {
                    self.set_member(i, false, now);
                }
                let next = if self.stop { None } else { self.tasks.next() };
                match next {
                    None => {
                        self.execs[i].stopped = true;
                        let _ = self.execs[i].tx.send(Answer::Task(None));
                    }
                    Some((epoch, partition)) => {
                        self.set_member(i, true, now);
                        // The report goes to the driver and the task comes back.
                        self.execs[i].clock += 2.0 * link.latency_s;
                        let task = Task {
                            plan: self.plan(epoch),
                            partition,
                        };
                        self.answer(i, Answer::Task(Some(task)))?;
                    }
                }
            }
            Call::Failed(why) => {
                self.execs[i].stopped = true;
                self.failed = Some(why);
            }
            Call::Push {
                base_version,
                epoch,
                work,
                values,
            } => {
                let bytes = values.len() as u64 * 4 + SMALL;
                let at = self.server.card_in.send(now + link.latency_s, bytes, &link);
                self.queue.at(
                    at,
                    Event::Push {
                        from: i,
                        base_version,
                        epoch,
                        samples: work.samples,
                        values,
                    },
                );
                self.answer(i, Answer::Go)?;
            }
            Call::Request { wait_for, newer_than } => {
                let at = self.server.card_in.send(now + link.latency_s, SMALL, &link);
                self.queue.at(
                    at,
                    Event::Request {
                        from: i,
                        wait_for,
                        newer_than,
                    },
                );
                self.answer(i, Answer::Go)?;
            }
            Call::Receive { min_version, wait, due } => {
                let exec = &mut self.execs[i];
                let (arrived, later): (Vec<_>, Vec<_>) = exec.mailbox.drain(..).partition(|(at, _)| *at <= now);
                exec.mailbox = later;
                exec.drained += arrived.len() as u64;
                let newest = arrived
                    .into_iter()
                    .map(|(_, d)| d)
                    .filter(|(v, _)| *v >= min_version)
                    .max_by_key(|(v, _)| *v);
                if newest.is_none() && wait && due > exec.drained {
                    exec.blocked = true;
                    exec.pending = Some(Call::Receive { min_version, wait, due });
                } else {
                    let answered = std::mem::take(&mut exec.drained);
                    self.answer(i, Answer::Params { answered, newest })?;
                }
            }
        }
        Ok(())
    }

    fn plan(&self, epoch: u32) -> TaskPlan {
        let schedule = self.job.stage.optimizer.schedule();
        TaskPlan {
            epoch,
            lr: schedule.lr_at(epoch),
            momentum: schedule.momentum_at(epoch),
            peers: self.config.executors as u32,
            shape: self.shape,
        }
    }

    fn set_member(&mut self, i: usize, member: bool, now: f64) {
        let changed = if member {
            self.server.members.insert(i as u64)
        } else {
            self.server.members.remove(&(i as u64))
        };
        if changed {
            let server = &mut self.server;
            server.rule.members(&mut server.model, &server.members);
            self.serve_waiting(now.max(self.server.free_at));
        }
    }

    fn on_event(&mut self, at: f64, event: Event) -> Result<(), SimError> {
        // The server applies one update at a time: one that arrives while
        // it is busy waits in line.
        if matches!(event, Event::Push { .. }) && at < self.server.free_at {
            self.queue.at(self.server.free_at, event);
            return Ok(());
        }
        match event {
            Event::Push {
                from,
                base_version,
                epoch,
                samples,
                values,
            } => {
                let server = &mut self.server;
                server.model.optimizer_mut().begin_epoch(epoch);
                server.rule.push(
                    &mut server.model,
                    Update {
                        from: from as u64,
                        base_version,
                        samples,
                        values: &values,
                    },
                );
                let step = self.config.cost.step_s(values.len());
                server.free_at = at + step;
                server.busy_s += step;
                server.examples += u64::from(samples);
                let done = server.free_at;
                self.maybe_evaluate(done)?;
                self.serve_waiting(done);
            }
            Event::Request {
                from,
                wait_for,
                newer_than,
            } => {
                self.server.waiting.push(Waiting {
                    from,
                    wait_for,
                    newer_than,
                });
                self.serve_waiting(at.max(self.server.free_at));
            }
            Event::Delivery { to, version, values } => {
                let exec = &mut self.execs[to];
                exec.mailbox.push((at, (version, values)));
                if exec.blocked {
                    exec.blocked = false;
                    exec.clock = exec.clock.max(at);
                }
            }
        }
        Ok(())
    }

    /// Answers every held fetch the rule now allows, at time `now`.
    fn serve_waiting(&mut self, now: f64) {
        let link = self.config.cost.link;
        let server = &mut self.server;
        let (rule, model) = (&mut server.rule, &server.model);
        let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut server.waiting)
            .into_iter()
            .partition(|w| rule.ready(model, w.from as u64, w.wait_for));
        server.waiting = still;
        let version = server.model.version();
        for w in ready {
            let (values, bytes) = if w.newer_than == Some(version) {
                (None, SMALL)
            } else {
                let frame = match &server.frame {
                    Some((v, f)) if *v == version => f.clone(),
                    _ => {
                        let f = Arc::new(server.model.params().to_vec());
                        server.frame = Some((version, f.clone()));
                        f
                    }
                };
                let bytes = frame.len() as u64 * 4 + SMALL;
                (Some(frame), bytes)
            };
            let left = server.card_out.send(now, bytes, &link);
            self.queue.at(
                left + link.latency_s,
                Event::Delivery {
                    to: w.from,
                    version,
                    values,
                },
            );
        }
    }

    /// The gradient noise scale at the server's parameters, on a partition
    /// that changes with the epoch: minibatches of the job's size against
    /// eight times as many examples (`None` when the estimate is unresolved).
    fn noise_scale(&self, epoch: usize) -> Result<Option<NoiseScale>, SimError> {
        let parts = &self.job.partitions;
        let Some(part) = parts.get(epoch % parts.len().max(1)) else {
            return Ok(None);
        };
        let batch = self.job.stage.batch_size as usize;
        let seed = self.job.spec.train.seed ^ epoch as u64;
        let params = self.server.model.params();
        let measured = self.setup_pool.install(|| {
            deepdist_core::noise::measure(
                self.job.network.as_ref(),
                params,
                &part.data,
                (batch, 8 * batch),
                NOISE_ROUNDS,
                seed,
            )
        })?;
        Ok(measured)
    }

    /// Evaluates at every `eval_every` epochs' worth of examples the server
    /// has applied, at virtual time `now`.
    fn maybe_evaluate(&mut self, now: f64) -> Result<(), SimError> {
        if self.server.examples < self.next_eval {
            return Ok(());
        }
        let step = self.job.eval_every_examples(self.config.eval_every);
        while self.next_eval <= self.server.examples {
            self.next_eval += step;
        }
        let (accuracy, loss) = evaluate(self.job, &self.server.model)?;
        let epochs = self.server.examples as f64 / self.job.train_examples() as f64;
        let whole = epochs.floor();
        let first_of_epoch = self.points.last().is_none_or(|p| p.epochs.floor() < whole);
        let noise = if self.config.noise && first_of_epoch {
            self.noise_scale(whole as usize)?
        } else {
            None
        };
        self.points.push(EvalPoint {
            time_s: now,
            epochs,
            accuracy,
            loss,
            noise,
        });
        if let Some(target) = self.job.spec.train.target_accuracy
            && self.target_at.is_none()
            && accuracy >= target
        {
            self.target_at = Some((now, epochs));
            self.stop = self.config.stop_at_target;
        }
        Ok(())
    }
}
