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

use deepdist_core::job::JobSpec;
use deepdist_core::mode::LoopError;
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

/// The leader's part of a minibatch's gradient: given its rows (the
/// minibatch's first `rows`) and their weight, it writes `weight ×` their
/// mean gradient into `out` and returns their mean loss.
pub type OwnPart<'a> = dyn FnMut(usize, f32, &mut [f32]) -> Result<f32, LoopError> + 'a;

/// The leader's view of its group: the other ranks, as one gradient.
pub trait Group: Send {
    /// Processes in the group, the leader included.
    fn ranks(&self) -> usize;

    /// Cores of the whole group (what the driver is told).
    fn cores(&self) -> usize;

    /// Makes the other ranks compute for `setup` from now on.
    fn setup(&mut self, setup: &Setup) -> Result<(), LoopError>;

    /// A minibatch's mean loss and gradient at `params` over the group:
    /// hands the other ranks their rows of `x` (and `labels`, unless
    /// unsupervised) with the parameters, has `own` compute the leader's
    /// rows meanwhile, and sums the parts weighted by rows.
    fn gradient(
        &mut self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        labels: &[u8],
        own: &mut OwnPart<'_>,
    ) -> Result<(f32, &[f32]), LoopError>;
}

/// Writes `weight × gradient` into `out`: one rank's part of the sum.
pub fn weighted_into(out: &mut [f32], gradient: &[f32], weight: f32) {
    out.iter_mut().zip(gradient).for_each(|(o, g)| *o = g * weight);
}

/// The rows `rank` of `ranks` computes of a minibatch of `rows` when the
/// leader (rank 0) takes the first `lead`: the others share the rest
/// evenly, in order. The leader's share can differ from the others'
/// because its part starts at once, while theirs waits for the parameters.
pub fn rows_of(rows: usize, ranks: usize, lead: usize, rank: usize) -> std::ops::Range<usize> {
    let lead = lead.min(rows);
    if rank == 0 {
        return 0..lead;
    }
    let (others, rest) = (ranks.saturating_sub(1).max(1), rows - lead);
    let (each, extra) = (rest / others, rest % others);
    let i = rank - 1;
    let start = lead + i * each + i.min(extra);
    start..(start + each + usize::from(i < extra)).min(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_goes_to_exactly_one_rank_in_order() {
        for rows in [1, 2, 3, 7, 64, 128, 129] {
            for ranks in 1..6 {
                for lead in [0, 1, rows / ranks, rows / 2, rows] {
                    if ranks == 1 && lead != rows {
                        continue; // alone, the leader computes every row
                    }
                    let parts: Vec<_> = (0..ranks).map(|r| rows_of(rows, ranks, lead, r)).collect();
                    assert_eq!(parts[0], 0..lead);
                    assert_eq!(parts[ranks - 1].end, rows, "{rows} rows, {ranks} ranks, lead {lead}");
                    for pair in parts.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start);
                    }
                    // The followers' shares differ by at most one row.
                    let sizes: Vec<_> = parts[1..].iter().map(|p| p.len()).collect();
                    if let (Some(max), Some(min)) = (sizes.iter().max(), sizes.iter().min()) {
                        assert!(max - min <= 1);
                    }
                }
            }
        }
        assert_eq!(rows_of(128, 2, 72, 1), 72..128);
        assert_eq!(rows_of(10, 3, 4, 2), 7..10);
    }
}
