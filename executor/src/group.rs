//! Executor groups: several processes on one node that are one executor to
//! the driver. The process holding the connection (the leader) shares every
//! minibatch with the group's other processes; each computes the gradient of
//! its rows, and the leader combines them into the minibatch's gradient.
//! Everything above the gradient — the mode's loop, local steps, pushes and
//! fetches — runs in the leader alone, so to the driver and to the modes a
//! group is an executor with more cores.
//!
//! The transport is behind [`Group`]; the one implementation is MPI's
//! (`crate::mpi`, feature `mpi`).

use deepdist_common::job::JobSpec;
use deepdist_common::mode::LoopError;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

/// What the other ranks need to compute a stage's gradients: the leader
/// sends it when a task's model or minibatch differs from the last one's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// The job (its model and stages).
    pub spec: JobSpec,
    /// The stage's index in `spec.stages()`.
    pub stage: u32,
    /// Features per example of the stage's input.
    pub dim: usize,
    /// Classes of the dataset.
    pub classes: usize,
    /// The largest minibatch.
    pub batch: usize,
    /// Seeds dropout and sampling; each rank draws its own stream from it.
    pub seed: u64,
}

/// The leader's view of its group: the other ranks, as one gradient.
pub trait Group: Send {
    /// Processes in the group, the leader included.
    fn ranks(&self) -> usize;

    /// Cores of the whole group (what the driver is told).
    fn cores(&self) -> usize;

    /// Makes the other ranks compute for `setup` from now on.
    fn setup(&mut self, setup: &Setup) -> Result<(), LoopError>;

    /// Hands a minibatch (`x`, and `labels` unless unsupervised) and the
    /// parameters to the other ranks; returns how many of its first rows
    /// the leader computes itself.
    fn share(&mut self, params: &[f32], x: ArrayView2<'_, f32>, labels: &[u8]) -> Result<usize, LoopError>;

    /// Combines the leader's mean loss and gradient over its rows with the
    /// other ranks', weighted by rows: the whole minibatch's (loss, gradient).
    fn combine(&mut self, loss: f32, gradient: &[f32]) -> Result<(f32, &[f32]), LoopError>;
}

/// The rows `rank` of `ranks` computes of a minibatch of `rows`: contiguous
/// and as even as can be, the leader (rank 0) first.
pub fn rows_of(rows: usize, ranks: usize, rank: usize) -> std::ops::Range<usize> {
    let ranks = ranks.max(1);
    let (each, extra) = (rows / ranks, rows % ranks);
    let start = rank * each + rank.min(extra);
    start..(start + each + usize::from(rank < extra)).min(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_goes_to_exactly_one_rank_and_the_leader_never_has_fewer() {
        for rows in [1, 2, 3, 7, 64, 128, 129] {
            for ranks in 1..6 {
                let parts: Vec<_> = (0..ranks).map(|r| rows_of(rows, ranks, r)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[ranks - 1].end, rows, "{rows} rows, {ranks} ranks");
                for pair in parts.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                    assert!(pair[0].len() >= pair[1].len());
                }
            }
        }
        assert_eq!(rows_of(128, 2, 1), 64..128);
    }
}
