//! The worker's side of the connection: frames out to the driver and
//! parameters in, seen by a mode's loop as a [`Link`] for one task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deepdist_core::compress::{Encoded, PushEncoder};
use deepdist_core::mode::{Link, LoopError, Received, TaskPlan, Work};
use deepdist_wire::proto::{self, FromExecutor, Push, TaskId, Tensor};
use tokio::sync::mpsc as tmpsc;

use crate::fetches::Fetches;

/// Parameters from the driver, as the session hands them over.
pub struct ParamsMsg {
    /// The connection they came on (see [`Fetches`]).
    pub connection: u64,
    /// The job.
    pub job: u64,
    /// The stage.
    pub stage: u32,
    /// Their version.
    pub version: u64,
    /// The values; none when they are unchanged from the version the
    /// fetch said it held.
    pub values: Option<Tensor>,
}

/// The current connection's outbox, replaced on every reconnection.
pub type Outbox = Arc<Mutex<Option<tmpsc::Sender<Bytes>>>>;

/// The worker's channels to and from the driver.
pub struct DriverLink {
    /// Parameters as they arrive.
    pub params: mpsc::Receiver<ParamsMsg>,
    /// Where frames for the driver go.
    pub out: Outbox,
    /// Bumped when tasks are abandoned (connection lost, job cancelled).
    pub generation: Arc<AtomicU64>,
    /// Bumped on every new connection.
    pub connection: Arc<AtomicU64>,
    /// Longest wait for parameters.
    pub request_timeout: Duration,
    /// Fetches in flight on the current connection.
    pub fetches: Fetches,
}

impl DriverLink {
    /// Sends a message; false if there is no connection to send it on.
    pub fn send(&self, msg: &FromExecutor) -> bool {
        proto::encode(msg).is_ok_and(|frame| self.send_frame(frame))
    }

    fn send_frame(&self, frame: Bytes) -> bool {
        let out = self.out.lock().unwrap_or_else(|p| p.into_inner()).clone();
        out.is_some_and(|tx| tx.blocking_send(frame).is_ok())
    }

    /// The link for one task, begun in `generation` and run as `plan`
    /// says, pushing values through `encoder`.
    pub fn for_task<'a>(
        &'a mut self,
        task: TaskId,
        generation: u64,
        plan: &TaskPlan,
        encoder: &'a mut PushEncoder,
    ) -> TaskLink<'a> {
        TaskLink {
            link: self,
            task,
            generation,
            seq: 0,
            plan: *plan,
            encoder,
        }
    }
}

/// One task's [`Link`]: pushes numbered in order, parameters of its stage.
pub struct TaskLink<'a> {
    link: &'a mut DriverLink,
    task: TaskId,
    generation: u64,
    seq: u64,
    plan: TaskPlan,
    encoder: &'a mut PushEncoder,
}

impl TaskLink<'_> {
    /// Updates pushed so far.
    pub fn pushes(&self) -> u64 {
        self.seq
    }

    fn abandoned(&self) -> bool {
        self.generation != self.link.generation.load(Ordering::SeqCst)
    }

    fn fetch(&mut self, wait_for: u64, newer_than: Option<u64>) -> Result<(), LoopError> {
        let connection = self.link.connection.load(Ordering::SeqCst);
        let fetch = FromExecutor::Fetch {
            job: self.task.job,
            stage: self.task.stage,
            wait_for,
            newer_than,
        };
        if !self.link.send(&fetch) {
            return Err(LoopError::Abandoned);
        }
        self.link.fetches.sent_on((connection, self.task.job, self.task.stage));
        Ok(())
    }

    /// The newest parameters message for this task's stage with version ≥
    /// `min_version`; with `wait`, blocks for an outstanding answer.
    fn newest(&mut self, min_version: u64, wait: bool) -> Result<Option<ParamsMsg>, LoopError> {
        let (job, stage) = (self.task.job, self.task.stage);
        let mut newest: Option<ParamsMsg> = None;
        let deadline = Instant::now() + self.link.request_timeout;
        loop {
            let link = &mut *self.link;
            let next = match link.params.try_recv() {
                Ok(p) => Some(p),
                Err(_) if !wait || newest.is_some() || !link.fetches.outstanding() => None,
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match link.params.recv_timeout(left.min(Duration::from_millis(200))) {
                        Ok(p) => Some(p),
                        Err(RecvTimeoutError::Timeout) => {
                            if self.generation != link.generation.load(Ordering::SeqCst) {
                                return Err(LoopError::Abandoned);
                            }
                            if Instant::now() >= deadline {
                                return Err(LoopError::Driver(format!(
                                    "no parameters from the driver within {:?}",
                                    link.request_timeout
                                )));
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return Err(LoopError::Abandoned),
                    }
                }
            };
            let Some(p) = next else { break };
            if !link.fetches.answered_on((p.connection, p.job, p.stage)) {
                continue;
            }
            // An unchanged answer says the local copy stands for its version.
            let current = p.job == job && p.stage == stage && p.version >= min_version;
            if current && newest.as_ref().is_none_or(|n| p.version >= n.version) {
                newest = Some(p);
            }
        }
        match newest {
            None if wait && self.link.fetches.outstanding() => {
                Err(LoopError::Driver("the driver sent no parameters for this job".into()))
            }
            newest => Ok(newest),
        }
    }
}

impl Link for TaskLink<'_> {
    fn push(&mut self, base_version: u64, work: Work, values: &[f32]) -> Result<(), LoopError> {
        if self.abandoned() {
            return Err(LoopError::Abandoned);
        }
        let push = FromExecutor::Push(Push {
            task: self.task,
            seq: self.seq,
            base_version,
            batches: work.batches,
            samples: work.samples,
            loss_sum: work.loss_sum,
            compression: self.encoder.codec().compression,
            values: Tensor::default(),
        });
        let p = &self.plan;
        let frame = match self.encoder.encode(values, p.epoch, p.momentum, p.peers) {
            Encoded::Plain(values) => proto::encode_with_tensor(&push, values),
            Encoded::Bytes(bytes) => proto::encode_with_bulk(&push, &bytes),
        }
        .map_err(|e| LoopError::Link(Box::new(e)))?;
        if !self.link.send_frame(frame) {
            return Err(LoopError::Abandoned);
        }
        self.seq += 1;
        Ok(())
    }

    fn request(&mut self, wait_for: u64) -> Result<(), LoopError> {
        self.fetch(wait_for, None)
    }

    fn request_newer(&mut self, have: u64) -> Result<(), LoopError> {
        self.fetch(0, Some(have))
    }

    fn outstanding(&self) -> bool {
        self.link.fetches.outstanding()
    }

    fn receive(&mut self, params: &mut [f32], min_version: u64, wait: bool) -> Result<Option<Received>, LoopError> {
        let Some(ParamsMsg { values, version, .. }) = self.newest(min_version, wait)? else {
            return Ok(None);
        };
        if let Some(values) = &values {
            copy_into(values, params)?;
        }
        let copied = values.is_some();
        Ok(Some(Received { version, copied }))
    }

    fn receive_to_read(
        &mut self,
        params: &mut [f32],
        min_version: u64,
    ) -> Result<Option<(Received, Option<Tensor>)>, LoopError> {
        let Some(ParamsMsg { values, version, .. }) = self.newest(min_version, true)? else {
            return Ok(None);
        };
        let readable = |v: &Tensor| v.as_f32().is_some_and(|f| f.len() == params.len());
        match values {
            Some(values) if readable(&values) => Ok(Some((Received { version, copied: false }, Some(values)))),
            Some(values) => {
                copy_into(&values, params)?;
                Ok(Some((Received { version, copied: true }, None)))
            }
            None => Ok(Some((Received { version, copied: false }, None))),
        }
    }
}

/// Copies `values` into `params`.
fn copy_into(values: &Tensor, params: &mut [f32]) -> Result<(), LoopError> {
    Ok(values.read_into(params)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: TaskId = TaskId {
        job: 3,
        stage: 0,
        epoch: 1,
        partition: 0,
        attempt: 1,
    };

    /// A link on connection 0, its parameter mailbox and its outbox.
    fn link() -> (DriverLink, mpsc::Sender<ParamsMsg>, tmpsc::Receiver<Bytes>) {
        let (params_tx, params) = mpsc::channel();
        let (out_tx, out_rx) = tmpsc::channel(8);
        let link = DriverLink {
            params,
            out: Arc::new(Mutex::new(Some(out_tx))),
            generation: Arc::default(),
            connection: Arc::default(),
            request_timeout: Duration::from_secs(5),
            fetches: Fetches::default(),
        };
        (link, params_tx, out_rx)
    }

    fn params(version: u64, values: Tensor) -> ParamsMsg {
        ParamsMsg {
            connection: 0,
            job: TASK.job,
            stage: TASK.stage,
            version,
            values: Some(values),
        }
    }

    #[test]
    fn aligned_parameters_are_read_in_place_and_others_copied() {
        let (mut driver, tx, _out) = link();
        let plan = TaskPlan {
            epoch: 1,
            lr: 0.1,
            momentum: 0.0,
            peers: 1,
            shape: deepdist_core::mode::Shape {
                batch: 1,
                rate_scale: 1.0,
                push_every: 1,
                fetch_every: 1,
            },
        };
        let mut encoder = PushEncoder::default();
        let mut task = driver.for_task(TASK, 0, &plan, &mut encoder);
        let mut local = vec![0.0f32; 3];
        let values = [1.0f32, 2.0, 3.0];

        task.request(2).unwrap();
        let aligned = Tensor::from_f32(&values);
        assert!(aligned.as_f32().is_some());
        tx.send(params(2, aligned)).unwrap();
        let (got, received) = task.receive_to_read(&mut local, 2).unwrap().unwrap();
        assert_eq!((got.version, got.copied), (2, false));
        assert_eq!(
            received.and_then(|t| t.as_f32().map(<[f32]>::to_vec)),
            Some(values.to_vec())
        );
        assert_eq!(local, [0.0; 3], "nothing was copied");

        // The same values one byte into a buffer cannot be read as `f32`s.
        task.request(3).unwrap();
        let mut bytes = vec![0u8];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let unaligned = Tensor(Bytes::from(bytes).slice(1..));
        assert!(unaligned.as_f32().is_none());
        tx.send(params(3, unaligned)).unwrap();
        let (got, received) = task.receive_to_read(&mut local, 3).unwrap().unwrap();
        assert_eq!((got.version, got.copied, received.is_none()), (3, true, true));
        assert_eq!(local, values);
    }
}
