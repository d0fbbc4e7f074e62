//! The group's rank 0: the executor the driver sees. Its compute thread
//! hands each minibatch to the followers and reduces their gradients.

use std::sync::{Arc, Mutex, MutexGuard};

use deepdist_common::mode::LoopError;
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use ndarray::ArrayView2;

use super::Comm;
use super::wire::{self, Header};
use crate::group::{Group, Setup, rows_of};

/// The communicator, until the group is stopped, and the length of the
/// gradient of a minibatch shared but not yet combined: the followers are
/// then in the reduction, which a stop must finish first.
type Shared = Arc<Mutex<State>>;

#[derive(Default)]
struct State {
    comm: Option<Comm>,
    pending: Option<usize>,
}

/// The leader's side of the group, for the compute thread.
pub struct Leader {
    comm: Shared,
    ranks: usize,
    /// This rank's compute threads, and the whole group's.
    own_cores: usize,
    cores: usize,
    /// The encoded setup the followers hold.
    setup: Option<Vec<u8>>,
    /// The current minibatch's rows, and the leader's own share of them.
    rows: usize,
    own: usize,
    contribution: Vec<f32>,
    combined: Vec<f32>,
}

/// Stops the group when dropped, from whichever thread drops it: the
/// compute thread's later requests then fail as abandoned.
pub struct LeaderStop(Shared);

impl Drop for LeaderStop {
    /// Finishes a reduction the followers are in, tells every follower to
    /// return and frees the communicator.
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        let Some(comm) = state.comm.take() else { return };
        settle(&comm.0, &mut state.pending);
        to_followers(
            &comm.0,
            Header {
                command: wire::STOP,
                len: 0,
                rows: 0,
                dim: 0,
                supervised: false,
            },
        );
    }
}

fn lock(comm: &Shared) -> MutexGuard<'_, State> {
    comm.lock().unwrap_or_else(|p| p.into_inner())
}

impl Leader {
    pub(super) fn new(comm: Comm, own_cores: usize, cores: usize) -> Self {
        let ranks = comm.0.size() as usize;
        Self {
            comm: Arc::new(Mutex::new(State {
                comm: Some(comm),
                pending: None,
            })),
            ranks,
            own_cores,
            cores,
            setup: None,
            rows: 0,
            own: 0,
            contribution: Vec::new(),
            combined: Vec::new(),
        }
    }

    /// This rank's own compute threads.
    pub fn own_cores(&self) -> usize {
        self.own_cores
    }

    /// What stops the group when dropped, once the executor is done
    /// (whether it ended well or not: the followers wait until then).
    pub fn stopper(&self) -> LeaderStop {
        LeaderStop(self.comm.clone())
    }
}

/// Runs `f` on the communicator and the pending reduction's length;
/// abandoned once the group is stopped.
fn with_comm<T>(shared: &Shared, f: impl FnOnce(&SimpleCommunicator, &mut Option<usize>) -> T) -> Result<T, LoopError> {
    let mut guard = lock(shared);
    let State { comm, pending } = &mut *guard;
    let comm = comm.as_ref().ok_or(LoopError::Abandoned)?;
    Ok(f(&comm.0, pending))
}

/// Finishes the reduction of a minibatch whose combination never came (the
/// leader's own part failed, or the group stops), so that the followers
/// are ready for the next command.
fn settle(comm: &SimpleCommunicator, pending: &mut Option<usize>) {
    if let Some(len) = pending.take() {
        let zeros = vec![0.0f32; len + wire::TRAILER];
        let mut sum = zeros.clone();
        comm.process_at_rank(0)
            .reduce_into_root(&zeros[..], &mut sum[..], SystemOperation::sum());
    }
}

/// Sends `header` to every follower.
fn to_followers(comm: &SimpleCommunicator, header: Header) {
    let raw = header.encode();
    for rank in 1..comm.size() {
        comm.process_at_rank(rank).send(&raw[..]);
    }
}

impl Group for Leader {
    fn ranks(&self) -> usize {
        self.ranks
    }

    fn cores(&self) -> usize {
        self.cores
    }

    fn setup(&mut self, setup: &Setup) -> Result<(), LoopError> {
        let bytes =
            postcard::to_stdvec(setup).map_err(|e| LoopError::Driver(format!("cannot encode the setup: {e}")))?;
        if self.setup.as_ref() == Some(&bytes) {
            return Ok(());
        }
        with_comm(&self.comm, |comm, pending| {
            settle(comm, pending);
            to_followers(
                comm,
                Header {
                    command: wire::SETUP,
                    len: bytes.len() as u64,
                    rows: 0,
                    dim: 0,
                    supervised: false,
                },
            );
            for rank in 1..comm.size() {
                comm.process_at_rank(rank).send(&bytes[..]);
            }
        })?;
        self.setup = Some(bytes);
        Ok(())
    }

    fn share(&mut self, params: &[f32], x: ArrayView2<'_, f32>, labels: &[u8]) -> Result<usize, LoopError> {
        let (rows, dim) = x.dim();
        let features = x
            .as_slice()
            .ok_or_else(|| LoopError::Driver("the minibatch is not contiguous".into()))?;
        let ranks = self.ranks;
        with_comm(&self.comm, |comm, pending| {
            settle(comm, pending);
            *pending = Some(params.len());
            to_followers(
                comm,
                Header {
                    command: wire::GRADIENT,
                    len: params.len() as u64,
                    rows: rows as u64,
                    dim: dim as u64,
                    supervised: !labels.is_empty(),
                },
            );
            for rank in 1..ranks {
                let mine = rows_of(rows, ranks, rank);
                let to = comm.process_at_rank(rank as i32);
                to.send(params);
                to.send(&features[mine.start * dim..mine.end * dim]);
                if !labels.is_empty() {
                    to.send(&labels[mine]);
                }
            }
        })?;
        self.rows = rows;
        self.own = rows_of(rows, ranks, 0).len();
        Ok(self.own)
    }

    fn combine(&mut self, loss: f32, gradient: &[f32]) -> Result<(f32, &[f32]), LoopError> {
        let len = gradient.len();
        self.contribution.resize(len + wire::TRAILER, 0.0);
        self.combined.resize(len + wire::TRAILER, 0.0);
        let weight = self.own as f32 / self.rows.max(1) as f32;
        wire::contribution(&mut self.contribution, gradient, loss, weight, false);
        let (contribution, combined) = (&self.contribution, &mut self.combined);
        with_comm(&self.comm, |comm, pending| {
            *pending = None;
            comm.process_at_rank(0)
                .reduce_into_root(&contribution[..], &mut combined[..], SystemOperation::sum());
        })?;
        if self.combined[len + 1] != 0.0 {
            return Err(LoopError::Driver(format!(
                "{} rank(s) of this executor's MPI group could not compute their part of the gradient \
                 (their log says why)",
                self.combined[len + 1]
            )));
        }
        Ok((self.combined[len], &self.combined[..len]))
    }
}
