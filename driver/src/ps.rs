//! The parameter server: owns the master parameters and the optimizer, and
//! applies `descent()` to every update, on a thread of its own so the network
//! tasks never wait on arithmetic.
//!
//! In `async` mode each push is one descent step, with its staleness (current
//! version − the version the executor computed from). In `sync` mode the
//! pushes of every busy executor for the current version are averaged and
//! applied as one step; fetches asking for the next version wait for it.
//! Encoded `Params` frames are cached per version, so executors fetching the
//! same version share one encoding.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use deepdist_common::job::{Mode, Stage};
use deepdist_common::optim::{Optimizer, OptimizerState};
use deepdist_common::proto::{self, Message, Tensor};
use tokio::sync::oneshot;

/// Requests to the parameter server.
enum Command {
    Push {
        executor: u64,
        base_version: u64,
        epoch: u32,
        grad: Tensor,
    },
    Fetch {
        min_version: u64,
        reply: oneshot::Sender<Bytes>,
    },
    Snapshot {
        with_optimizer: bool,
        reply: oneshot::Sender<Snapshot>,
    },
    Members(HashSet<u64>),
}

/// Parameters at one version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Updates applied so far.
    pub version: u64,
    /// The values: the stage's moving average when its optimizer keeps one
    /// (what is evaluated and saved), but the training parameters in a
    /// checkpoint.
    pub params: Arc<Vec<f32>>,
    /// Sum of the staleness of every update applied so far.
    pub staleness_sum: u64,
    /// Updates refused: wrong length, or in sync mode computed for another step.
    pub rejected: u64,
    /// The optimizer's state, when asked for (checkpoints).
    pub optimizer: Option<OptimizerState>,
}

/// Where a resumed server starts counting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resumed {
    /// Updates applied before the checkpoint.
    pub version: u64,
    /// Their summed staleness.
    pub staleness_sum: u64,
}

/// A handle to a running parameter server; dropping every handle stops it.
#[derive(Clone)]
pub struct ParamServer {
    tx: mpsc::Sender<Command>,
}

impl ParamServer {
    /// Starts a server for `job` with these initial parameters; `schedule`
    /// gives the learning rate of each epoch; `resumed` continues a
    /// checkpoint's version count.
    pub fn start(
        job: u64,
        stage: u32,
        params: Vec<f32>,
        optimizer: Box<dyn Optimizer>,
        mode: Mode,
        schedule: Stage,
        resumed: Resumed,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let state = State {
            job,
            grad: vec![0.0; params.len()],
            round: vec![0.0; params.len()],
            params,
            optimizer,
            mode,
            version: resumed.version,
            waiting: Vec::new(),
            frame: None,
            members: HashSet::new(),
            pushed: HashSet::new(),
            staleness_sum: resumed.staleness_sum,
            rejected: 0,
            schedule,
            stage,
            epoch: 0,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("deepdist-ps-{job}"))
            .spawn(move || state.run(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the parameter server thread");
        }
        Self { tx }
    }

    /// Queues an update computed in `epoch`.
    pub fn push(&self, executor: u64, base_version: u64, epoch: u32, grad: Tensor) {
        let _ = self.tx.send(Command::Push {
            executor,
            base_version,
            epoch,
            grad,
        });
    }

    /// The encoded `Params` frame of the first version ≥ `min_version`.
    pub async fn fetch(&self, min_version: u64) -> Option<Bytes> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Fetch { min_version, reply }).ok()?;
        rx.await.ok()
    }

    /// The current parameters (their moving average, if kept).
    pub async fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot_with(false).await
    }

    /// The current parameters and optimizer state, for a checkpoint.
    pub async fn checkpoint(&self) -> Option<Snapshot> {
        self.snapshot_with(true).await
    }

    async fn snapshot_with(&self, with_optimizer: bool) -> Option<Snapshot> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Snapshot { with_optimizer, reply }).ok()?;
        rx.await.ok()
    }

    /// Sync mode: the executors whose gradients make up a step.
    pub fn set_members(&self, members: HashSet<u64>) {
        let _ = self.tx.send(Command::Members(members));
    }
}

struct State {
    job: u64,
    params: Vec<f32>,
    grad: Vec<f32>,
    round: Vec<f32>,
    optimizer: Box<dyn Optimizer>,
    mode: Mode,
    version: u64,
    waiting: Vec<(u64, oneshot::Sender<Bytes>)>,
    frame: Option<(u64, Bytes)>,
    members: HashSet<u64>,
    pushed: HashSet<u64>,
    staleness_sum: u64,
    rejected: u64,
    schedule: Stage,
    stage: u32,
    epoch: u32,
}

impl State {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        deepdist_common::cpu::flush_denormals();
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Push {
                    executor,
                    base_version,
                    epoch,
                    grad,
                } => {
                    if epoch != self.epoch {
                        self.epoch = epoch;
                        self.optimizer.set_lr(self.schedule.optimizer.lr_at(epoch));
                        // In async mode momentum lives on the executors.
                        if self.mode == Mode::Sync {
                            self.optimizer.set_momentum(self.schedule.momentum_at(epoch));
                        }
                    }
                    self.push(executor, base_version, &grad)
                }
                Command::Fetch { min_version, reply } => {
                    self.waiting.push((min_version, reply));
                }
                Command::Snapshot { with_optimizer, reply } => {
                    // A checkpoint resumes training, so it takes the parameters
                    // themselves (their average is in the optimizer's state);
                    // everything else sees what the job produces: the average.
                    let params = match self.optimizer.average() {
                        Some(avg) if !with_optimizer => avg,
                        _ => &self.params,
                    };
                    let _ = reply.send(Snapshot {
                        version: self.version,
                        params: Arc::new(params.to_vec()),
                        staleness_sum: self.staleness_sum,
                        rejected: self.rejected,
                        optimizer: with_optimizer.then(|| self.optimizer.state()),
                    });
                }
                Command::Members(members) => {
                    self.members = members;
                    self.maybe_finish_round();
                }
            }
            self.serve_waiting();
        }
    }

    fn push(&mut self, executor: u64, base_version: u64, grad: &Tensor) {
        if grad.len() != self.params.len() || grad.0.len() % 4 != 0 {
            self.rejected += 1;
            tracing::warn!(executor, len = grad.len(), "update of the wrong length discarded");
            return;
        }
        // Read the gradient in place when the bytes allow it; copy otherwise.
        let aligned = grad.as_f32();
        if aligned.is_none() && grad.read_into(&mut self.grad).is_err() {
            self.rejected += 1;
            return;
        }
        let g: &[f32] = aligned.unwrap_or(&self.grad);
        match self.mode {
            Mode::Async => {
                let staleness = self.version.saturating_sub(base_version);
                match self.optimizer.step(&mut self.params, g, staleness) {
                    Ok(()) => {
                        self.version += 1;
                        self.staleness_sum += staleness;
                    }
                    Err(e) => {
                        self.rejected += 1;
                        tracing::warn!(error = %e, "descent step refused");
                    }
                }
            }
            Mode::Sync => {
                // A gradient for another step (a late joiner's, or a repeat)
                // would corrupt this step's average; the executor refetches.
                if base_version != self.version || self.pushed.contains(&executor) {
                    self.rejected += 1;
                    return;
                }
                if self.pushed.is_empty() {
                    self.round.copy_from_slice(g);
                } else {
                    self.round.iter_mut().zip(g).for_each(|(r, g)| *r += g);
                }
                self.pushed.insert(executor);
                self.maybe_finish_round();
            }
        }
    }

    fn maybe_finish_round(&mut self) {
        if self.mode != Mode::Sync || self.pushed.is_empty() || !self.members.is_subset(&self.pushed) {
            return;
        }
        let scale = 1.0 / self.pushed.len() as f32;
        self.round.iter_mut().for_each(|r| *r *= scale);
        self.pushed.clear();
        match self.optimizer.step(&mut self.params, &self.round, 0) {
            Ok(()) => self.version += 1,
            Err(e) => {
                self.rejected += 1;
                tracing::warn!(error = %e, "descent step refused");
            }
        }
    }

    fn serve_waiting(&mut self) {
        if self.waiting.iter().all(|(min, _)| *min > self.version) {
            return;
        }
        let frame = match &self.frame {
            Some((v, f)) if *v == self.version => f.clone(),
            _ => {
                let msg = Message::Params {
                    job: self.job,
                    stage: self.stage,
                    version: self.version,
                    values: Tensor::default(),
                };
                match proto::encode_with_tensor(&msg, &self.params) {
                    Ok(f) => {
                        self.frame = Some((self.version, f.clone()));
                        f
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode parameters");
                        return;
                    }
                }
            }
        };
        let version = self.version;
        let ready: Vec<_> = std::mem::take(&mut self.waiting);
        let (ready, still): (Vec<_>, Vec<_>) = ready.into_iter().partition(|(min, _)| *min <= version);
        self.waiting = still;
        for (_, reply) in ready {
            let _ = reply.send(frame.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepdist_common::optim::OptimizerConfig;
    fn config(lr: f32) -> OptimizerConfig {
        OptimizerConfig {
            lr,
            ..OptimizerConfig::default()
        }
    }

    fn start(params: Vec<f32>, lr: f32, mode: Mode) -> ParamServer {
        start_with(params, config(lr), mode)
    }

    fn start_with(params: Vec<f32>, optimizer: OptimizerConfig, mode: Mode) -> ParamServer {
        let stage = Stage {
            name: "train".into(),
            kind: deepdist_common::job::StageKind::Supervised,
            epochs: 1,
            batch_size: 1,
            optimizer,
            final_momentum: None,
        };
        let built = optimizer.build(params.len()).unwrap();
        ParamServer::start(1, 0, params, built, mode, stage, Resumed::default())
    }

    fn params_of(frame: Bytes) -> (u64, Vec<f32>) {
        match proto::decode(&frame).unwrap() {
            Message::Params { version, values, .. } => (version, values.to_vec().unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn async_pushes_are_single_steps_with_staleness() {
        let ps = start(vec![1.0, 1.0], 0.5, Mode::Async);
        ps.push(1, 0, 1, Tensor::from_f32(&[1.0, 0.0]));
        ps.push(2, 0, 1, Tensor::from_f32(&[0.0, 2.0]));
        let (version, values) = params_of(ps.fetch(2).await.unwrap());
        assert_eq!(version, 2);
        assert_eq!(values, vec![0.5, 0.0]);
        let snap = ps.snapshot().await.unwrap();
        // The second push was computed from version 0 when 1 was current.
        assert_eq!((snap.version, snap.staleness_sum), (2, 1));
        ps.push(1, 0, 1, Tensor::from_f32(&[1.0]));
        assert_eq!(ps.snapshot().await.unwrap().rejected, 1);
    }

    #[tokio::test]
    async fn sync_averages_all_members_then_steps_once() {
        let ps = start(vec![0.0, 0.0], 1.0, Mode::Sync);
        ps.set_members([1, 2].into());
        let waiter = {
            let ps = ps.clone();
            tokio::spawn(async move { ps.fetch(1).await })
        };
        ps.push(1, 0, 1, Tensor::from_f32(&[2.0, 0.0]));
        assert_eq!(ps.snapshot().await.unwrap().version, 0, "waits for member 2");
        ps.push(2, 0, 1, Tensor::from_f32(&[0.0, 4.0]));
        let (version, values) = params_of(waiter.await.unwrap().unwrap());
        assert_eq!((version, values), (1, vec![-1.0, -2.0]));
        // A member leaving completes a round it was holding up.
        ps.push(1, 1, 1, Tensor::from_f32(&[2.0, 2.0]));
        ps.set_members([1].into());
        let (version, values) = params_of(ps.fetch(2).await.unwrap());
        assert_eq!((version, values), (2, vec![-3.0, -4.0]));
    }

    #[tokio::test]
    async fn an_averaging_stage_shows_its_average_but_checkpoints_its_parameters() {
        let averaged = OptimizerConfig {
            average: Some(0.5),
            ..config(1.0)
        };
        let ps = start_with(vec![0.0], averaged, Mode::Async);
        // Steps to −1 (the average copies it), then to −3 (average: decay 1/11).
        ps.push(1, 0, 1, Tensor::from_f32(&[1.0]));
        ps.push(1, 1, 1, Tensor::from_f32(&[2.0]));
        let (_, fetched) = params_of(ps.fetch(2).await.unwrap());
        assert_eq!(fetched, vec![-3.0], "executors train the parameters themselves");
        let checkpoint = ps.checkpoint().await.unwrap();
        assert_eq!(*checkpoint.params, vec![-3.0]);
        let average = ps.snapshot().await.unwrap().params[0];
        let expected = (-1.0 - 3.0 * 10.0) / 11.0;
        assert!(
            (average - expected).abs() < 1e-6,
            "evaluated: the average {average}, not −3"
        );
        let state = checkpoint.optimizer.unwrap();
        assert_eq!(
            state.buffers.last().unwrap(),
            &vec![average],
            "the checkpoint keeps the average"
        );
    }
}
