//! The simulation's loop: executors and the parameter server in virtual
//! time. The next thing to happen is always the earliest: an event arriving
//! (an update or fetch at the server, parameters at an executor) or the
//! call of the executor with the lowest clock. Every executor's clock is at
//! least that call's time, so nothing they do later can reach the server
//! before it: the order is the cluster's, not this machine's scheduler's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use deepdist_core::mode::{ServerModel, Shape, TaskPlan, Update, dealt_rank};

use crate::cost::{Cores, Nic};
use crate::events::{Event, Queue};
use crate::executor::{self, Answer, Call, Delivered, Message, Setup, Task};
use crate::measure::{Measurements, evaluate};
use crate::server::{SMALL, Server, Waiting};
use crate::{SimConfig, SimError, SimJob, SimReport};

struct Exec {
    clock: f64,
    /// The call it waits on an answer to.
    pending: Option<Call>,
    /// Waiting in a receive for parameters still in flight.
    blocked: bool,
    /// Its task's report is on its way to the driver; the next task comes
    /// back once it arrives.
    reporting: bool,
    /// Parameters arrived or on their way: (arrival, version, values).
    mailbox: Vec<(f64, Delivered)>,
    /// Answers taken from the mailbox by a receive still waiting.
    drained: u64,
    tx: Sender<Answer>,
    rx: Receiver<Message>,
    stopped: bool,
}

struct Run<'a> {
    job: &'a SimJob,
    config: &'a SimConfig,
    execs: Vec<Exec>,
    server: Server,
    queue: Queue,
    /// The one machine everything runs on, when simulating this one.
    machine: Option<Cores>,
    /// The tasks left, (epoch, partition) in order: one queue for all, or
    /// one per executor where the mode deals work by rank.
    tasks: Vec<VecDeque<(u32, u32)>>,
    shape: Shape,
    measured: Measurements,
    stop: bool,
    /// The machine's threads, for the noise measurement.
    setup_pool: Arc<rayon::ThreadPool>,
    failed: Option<String>,
    last_time: f64,
    /// The largest server shard's share of the parameters: the shards step
    /// in parallel, each on its own core, so an update takes as long as
    /// the largest one's slice.
    shard_share: f64,
}

/// The largest of `shards` server shards' share of `job`'s parameters (cut
/// as the driver cuts them).
fn largest_shard_share(job: &SimJob, shards: usize) -> f64 {
    let layout = job.network.layout();
    if layout.len() != job.init.len() || layout.is_empty() {
        return 1.0;
    }
    let largest = deepdist_core::shards::even(layout, shards)
        .iter()
        .map(|r| r.len())
        .max()
        .unwrap_or(layout.len());
    largest as f64 / layout.len() as f64
}

/// Runs `job` on the simulated cluster `config` describes.
pub(crate) fn simulate(job: &SimJob, config: &SimConfig) -> Result<SimReport, SimError> {
    let (spec, stage) = (&job.spec, &job.stage);
    let mode = spec.train.mode;
    let keys = spec.train.mode_keys();
    let optimizer = mode
        .server_optimizer(&stage.optimizer, spec.train.compression)
        .build(job.init.len())?;
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
        copy_s_per_byte: config.machine.map_or(0.0, |m| m.copy_s_per_byte),
    });
    let parts = job.partitions.len() as u32;
    let ranks = config.executors as u32;
    let queues = if mode.deals_work() { ranks as usize } else { 1 };
    let mut tasks = vec![VecDeque::new(); queues];
    for (e, p) in (1..=stage.epochs).flat_map(|e| (0..parts).map(move |p| (e, p))) {
        let queue = if queues > 1 {
            dealt_rank(e, p, parts, ranks) as usize
        } else {
            0
        };
        tasks[queue].push_back((e, p));
    }
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
            reporting: false,
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
        server: Server::new(
            model,
            mode.server_rule(&keys),
            mode.server_mirrors_local(&stage.optimizer, spec.train.exact_transfer()),
            spec.train.fetch_compression,
        ),
        queue: Queue::default(),
        machine: config.machine.map(|m| Cores::new(m.cores)),
        tasks,
        shape: mode.shape(&keys, stage.batch_size, config.executors as u32),
        measured: Measurements::new(job, config),
        stop: false,
        setup_pool: setup.pool.clone(),
        failed: None,
        last_time: 0.0,
        shard_share: largest_shard_share(job, config.server_shards),
    };
    if config.shard_hosts {
        run.server.card_in = Nic::carrying(run.shard_share);
        run.server.card_out = Nic::carrying(run.shard_share);
    }
    let outcome = run.main_loop();
    // Dropping the answer channels ends every executor still waiting.
    let Run {
        execs,
        server,
        measured,
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
    let target_at = measured.target_at;
    Ok(SimReport {
        points: measured.points,
        final_accuracy: final_eval.0,
        final_loss: final_eval.1,
        time_s: last_time,
        time_to_target_s: target_at.map(|t| t.0),
        epochs_to_target: target_at.map(|t| t.1),
        examples: server.examples,
        updates,
        mean_staleness: server.model.staleness_sum() as f64 / updates.max(1) as f64,
        staleness: server.staleness.to_vec(),
        bytes_in: server.card_in.bytes,
        bytes_out: server.card_out.bytes,
        server_busy_s: server.busy_s,
        card_busy_s: server.card_in.busy_s.max(server.card_out.busy_s),
        failed,
        params: server.model.params().to_vec(),
    })
}

impl Run<'_> {
    fn main_loop(&mut self) -> Result<(), SimError> {
        for i in 0..self.execs.len() {
            self.wait_for_call(i)?;
        }
        loop {
            let exec = (0..self.execs.len())
                .filter(|&i| {
                    let e = &self.execs[i];
                    e.pending.is_some() && !e.blocked && !e.reporting && !e.stopped
                })
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
        exec.clock = match &mut self.machine {
            Some(machine) if compute_s > 0.0 => machine.run(exec.clock, compute_s, self.config.cores),
            _ => exec.clock + compute_s,
        };
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
            Call::NextTask(Some(finished)) => {
                // The report follows the task's pushes down the link and
                // into the server's queue, as on one real connection.
                let at = self.server.card_in.send(now + link.latency_s, SMALL, &link);
                self.queue.at(at, Event::TaskDone { from: i });
                self.execs[i].pending = Some(Call::NextTask(Some(finished)));
                self.execs[i].reporting = true;
            }
            Call::NextTask(None) => {
                // Registering: the executor's first task.
                let at = now + link.latency_s;
                self.next_task(i, at)?;
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
                bytes,
            } => {
                let bytes = bytes as u64 + SMALL;
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

    /// The driver, at `at`, gives executor `i` its next task (it arrives one
    /// latency later) or tells it there is none. An executor going from one
    /// task to the next stays a member throughout, as in the driver, where
    /// the report and the next assignment happen in one pass.
    fn next_task(&mut self, i: usize, at: f64) -> Result<(), SimError> {
        let queue = i.min(self.tasks.len() - 1);
        let next = if self.stop { None } else { self.tasks[queue].pop_front() };
        let exec = &mut self.execs[i];
        exec.reporting = false;
        match next {
            None => {
                exec.pending = None;
                exec.stopped = true;
                let _ = exec.tx.send(Answer::Task(None));
                self.set_member(i, false, at);
                Ok(())
            }
            Some((epoch, partition)) => {
                exec.clock = exec.clock.max(at + self.config.cost.link.latency_s);
                self.set_member(i, true, at);
                let task = Task {
                    plan: self.plan(epoch),
                    partition,
                };
                self.answer(i, Answer::Task(Some(task)))
            }
        }
    }

    fn set_member(&mut self, i: usize, member: bool, now: f64) {
        if self.server.set_member(i as u64, member) {
            self.serve_waiting(now.max(self.server.free_at));
        }
    }

    fn on_event(&mut self, at: f64, event: Event) -> Result<(), SimError> {
        // The server applies one update at a time: one that arrives while
        // it is busy waits in line.
        if matches!(event, Event::Push { .. } | Event::TaskDone { .. }) && at < self.server.free_at {
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
                let step_s = self.config.cost.step_s(values.len()) * self.shard_share;
                let update = Update {
                    from: from as u64,
                    base_version,
                    samples,
                    values: &values,
                };
                let copy_s = self.copy_s(values.len());
                if let Some(machine) = &mut self.machine {
                    machine.preempt(at, step_s + copy_s);
                }
                self.server.apply(at, epoch, update, step_s);
                let done = self.server.free_at;
                let reached = self.measured.maybe_evaluate(
                    (self.job, self.config),
                    &self.setup_pool,
                    &self.server.model,
                    self.server.examples,
                    done,
                )?;
                self.stop |= reached && self.config.stop_at_target;
                self.serve_waiting(done);
            }
            Event::Request {
                from,
                wait_for,
                newer_than,
            } => {
                self.server.hold(Waiting {
                    from,
                    wait_for,
                    newer_than,
                });
                self.serve_waiting(at.max(self.server.free_at));
            }
            Event::TaskDone { from } => self.next_task(from, at)?,
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
        for (at, delivery) in self.server.answer_ready(now, &self.config.cost.link) {
            if let Event::Delivery { values: Some(v), .. } = &delivery {
                let copy_s = self.copy_s(v.len());
                if let Some(machine) = &mut self.machine {
                    machine.preempt(now, copy_s);
                }
            }
            self.queue.at(at, delivery);
        }
    }

    /// What copying `values` parameters costs a core of the simulated
    /// machine (nothing on a cluster: there the cost is the link's).
    fn copy_s(&self, values: usize) -> f64 {
        self.config
            .machine
            .map_or(0.0, |m| values as f64 * 4.0 * m.copy_s_per_byte)
    }
}
