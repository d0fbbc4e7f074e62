//! The group's rank 0: the executor the driver sees. Its compute thread
//! hands each minibatch to the followers, computes its own rows while they
//! receive theirs, and sums their gradients where they left them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use deepdist_core::mode::LoopError;
use mpi::request::WaitGuard;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use ndarray::ArrayView2;

use super::Comm;
use super::shm::Blocks;
use super::wire::{self, Header};
use crate::group::{Group, OwnPart, Setup, rows_of};

/// What the compute thread and the stopping thread share.
type Shared = Arc<Mutex<State>>;

/// The group's MPI state, until the group is stopped.
#[derive(Default)]
struct State {
    comm: Option<Comm>,
    /// The followers' gradient blocks, once a minibatch has needed them.
    blocks: Option<Blocks>,
    /// A minibatch was handed out and its trailers not yet received (its
    /// own part failed): the followers must be heard before anything else.
    pending: bool,
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
    /// The fraction of each minibatch the leader computes itself; see
    /// [`next_lead`].
    lead: f64,
    combined: Vec<f32>,
}

/// Stops the group when dropped, from whichever thread drops it: the
/// compute thread's later requests then fail as abandoned.
pub struct LeaderStop(Shared);

impl Drop for LeaderStop {
    /// Hears out a minibatch the followers are in, tells every follower to
    /// return, frees the shared blocks and the communicator.
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        let Some(comm) = state.comm.take() else { return };
        settle(&comm.0, &mut state.pending);
        to_followers(&comm.0, Header::bare(wire::STOP, 0));
        if let Some(blocks) = state.blocks.take() {
            blocks.free();
        }
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
                ..State::default()
            })),
            ranks,
            own_cores,
            cores,
            setup: None,
            lead: 1.0 / ranks.max(1) as f64,
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

/// Runs `f` on the group's state; abandoned once the group is stopped.
fn with_comm<T>(shared: &Shared, f: impl FnOnce(&SimpleCommunicator, &mut State) -> T) -> Result<T, LoopError> {
    let mut guard = lock(shared);
    let state = &mut *guard;
    let comm = state.comm.take().ok_or(LoopError::Abandoned)?;
    let out = f(&comm.0, state);
    state.comm = Some(comm);
    Ok(out)
}

/// Receives every follower's trailer of the minibatch handed out; their sum.
fn trailers(comm: &SimpleCommunicator) -> [f32; wire::TRAILER] {
    let mut sum = [0.0; wire::TRAILER];
    for rank in 1..comm.size() {
        let mut trailer = [0.0f32; wire::TRAILER];
        comm.process_at_rank(rank).receive_into(&mut trailer[..]);
        sum.iter_mut().zip(trailer).for_each(|(s, t)| *s += t);
    }
    sum
}

/// Hears out a minibatch whose own part failed, so that the followers are
/// ready for the next command.
fn settle(comm: &SimpleCommunicator, pending: &mut bool) {
    if std::mem::take(pending) {
        trailers(comm);
    }
}

/// Sends `header` to every follower.
fn to_followers(comm: &SimpleCommunicator, header: Header) {
    let raw = header.encode();
    for rank in 1..comm.size() {
        comm.process_at_rank(rank).send(&raw[..]);
    }
}

/// Makes the followers' blocks hold `len` values (collective with them).
fn ensure_blocks(comm: &SimpleCommunicator, blocks: &mut Option<Blocks>, len: usize) {
    if blocks.as_ref().is_some_and(|b| b.len() == len) {
        return;
    }
    to_followers(comm, Header::bare(wire::BLOCKS, len as u64));
    if let Some(old) = blocks.take() {
        old.free();
    }
    *blocks = Some(Blocks::allocate(comm, len));
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
        if self.setup.is_some() {
            tracing::info!(
                leader_share = format!("{:.1}%", 100.0 * self.lead),
                "MPI group: the leader's share of each minibatch so far; a new stage starts"
            );
        }
        with_comm(&self.comm, |comm, state| {
            settle(comm, &mut state.pending);
            to_followers(comm, Header::bare(wire::SETUP, bytes.len() as u64));
            for rank in 1..comm.size() {
                comm.process_at_rank(rank).send(&bytes[..]);
            }
        })?;
        self.setup = Some(bytes);
        Ok(())
    }

    fn gradient(
        &mut self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        labels: &[u8],
        own: &mut OwnPart<'_>,
    ) -> Result<(f32, &[f32]), LoopError> {
        let (rows, dim) = x.dim();
        let features = x
            .as_slice()
            .ok_or_else(|| LoopError::Driver("the minibatch is not contiguous".into()))?;
        let (ranks, len) = (self.ranks, params.len());
        let lead = self.lead_rows(rows);
        let part = |rank: usize| rows_of(rows, ranks, lead, rank);
        let headers: Vec<[u64; wire::HEADER]> = (0..ranks)
            .map(|rank| {
                let mine = part(rank);
                Header {
                    command: wire::GRADIENT,
                    len: len as u64,
                    rows: rows as u64,
                    dim: dim as u64,
                    supervised: !labels.is_empty(),
                    start: mine.start as u64,
                    end: mine.end as u64,
                }
                .encode()
            })
            .collect();
        self.combined.resize(len, 0.0);
        let weight = lead as f32 / rows.max(1) as f32;
        let combined = &mut self.combined;
        let (own_loss, own_s, [loss, failed, busy]) = with_comm(&self.comm, |comm, state| {
            settle(comm, &mut state.pending);
            ensure_blocks(comm, &mut state.blocks, len);
            // From here until their trailers arrive, the followers are in this minibatch.
            state.pending = true;
            let (own_loss, own_s) = mpi::request::scope(|scope| {
                // The followers pull their parts while this rank computes its own.
                let (mut small, mut floats, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
                for (rank, header) in headers.iter().enumerate().skip(1) {
                    let (to, mine) = (comm.process_at_rank(rank as i32), part(rank));
                    small.push(WaitGuard::from(to.immediate_send(scope, &header[..])));
                    floats.push(WaitGuard::from(to.immediate_send(scope, params)));
                    floats.push(WaitGuard::from(
                        to.immediate_send(scope, &features[mine.start * dim..mine.end * dim]),
                    ));
                    if !labels.is_empty() {
                        bytes.push(WaitGuard::from(to.immediate_send(scope, &labels[mine])));
                    }
                }
                let started = Instant::now();
                let loss = own(lead, weight, &mut combined[..])?;
                Ok::<_, LoopError>((loss, started.elapsed().as_secs_f32()))
            })?;
            let sum = trailers(comm);
            state.pending = false;
            if let Some(blocks) = &state.blocks {
                blocks.sync();
                blocks.add_into(combined);
            }
            Ok::<_, LoopError>((own_loss, own_s, sum))
        })??;
        if failed != 0.0 {
            return Err(LoopError::Driver(format!(
                "{failed} rank(s) of this executor's MPI group could not compute their part of the gradient \
                 (their log says why)"
            )));
        }
        let busy_s = busy / (ranks - 1).max(1) as f32;
        self.lead = next_lead(self.lead, ranks, rows, lead, own_s, busy_s);
        Ok((own_loss * weight + loss, &self.combined))
    }
}

impl Leader {
    /// The leader's rows of a minibatch of `rows`: its share, at least one
    /// row, and at least one row left for each follower when there are enough.
    fn lead_rows(&self, rows: usize) -> usize {
        if self.ranks <= 1 {
            return rows;
        }
        let most = rows.saturating_sub(self.ranks - 1).max(1);
        ((self.lead * rows as f64).round() as usize).clamp(1, most)
    }
}

/// The leader's next share of a minibatch of `rows`, from its current
/// `share`: it computed `lead` rows in `own_s` seconds while a follower was
/// busy `busy_s` on average (receiving, then computing). Moving k rows to
/// the leader lengthens its part by k rows and shortens each follower's by
/// k / (ranks − 1); half of the step that would close the gap is taken, to
/// ride out noise.
fn next_lead(share: f64, ranks: usize, rows: usize, lead: usize, own_s: f32, busy_s: f32) -> f64 {
    if ranks <= 1 || lead == 0 || rows == 0 || own_s <= 0.0 {
        return share;
    }
    let per_row = f64::from(own_s) / lead as f64;
    let others = (ranks - 1) as f64;
    let gap_rows = f64::from(busy_s - own_s) / (per_row * (1.0 + 1.0 / others));
    (share + 0.5 * gap_rows / rows as f64).clamp(0.5 / ranks as f64, 1.0)
}

#[cfg(test)]
mod tests {
    use super::next_lead;

    /// Followers that first spend `receive` seconds on the parameters,
    /// every rank `per_row` seconds a row: the share settles where both
    /// finish together.
    #[test]
    fn the_leaders_share_settles_where_every_rank_finishes_together() {
        let (rows, per_row, receive) = (128usize, 0.05e-3f32, 1.0e-3f32);
        for ranks in [2usize, 3, 4] {
            let mut share = 1.0 / ranks as f64;
            for _ in 0..30 {
                let lead = (share * rows as f64).round() as usize;
                let each = (rows - lead) as f32 / (ranks - 1) as f32;
                share = next_lead(
                    share,
                    ranks,
                    rows,
                    lead,
                    lead as f32 * per_row,
                    receive + each * per_row,
                );
            }
            let lead = (share * rows as f64).round() as usize;
            let each = (rows - lead) as f32 / (ranks - 1) as f32;
            let (own, theirs) = (lead as f32 * per_row, receive + each * per_row);
            assert!(
                (own - theirs).abs() < 2.0 * per_row,
                "{ranks} ranks: {own} against {theirs}"
            );
            assert!(lead > rows / ranks, "the leader, which waits for nothing, takes more");
        }
        // A slower leader gives rows away, down to a floor.
        assert!(next_lead(0.5, 2, 128, 64, 2e-3, 1e-3) < 0.5);
        assert_eq!(next_lead(0.3, 2, 128, 38, 1.0, 0.0), 0.25);
    }
}
