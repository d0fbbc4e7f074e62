//! MPI executor groups (feature `mpi`): the ranks `mpirun` starts on one
//! node become one [`crate::group::Group`]. Rank 0 of each node's group (the
//! leader) is the executor the driver sees; the others ([`Follower`]s) wait
//! for minibatches from it and send back their gradients.
//!
//! Ranks on the same node are found with `MPI_Comm_split_type(SHARED)`, so
//! `mpirun` across several nodes makes one group per node, each with its own
//! connection to the driver (intra-node MPI, inter-node TCP). MPI's own rule
//! on failure holds: a rank that dies takes the whole `mpirun` down, and the
//! driver sees its groups' executors lost.

mod follower;
mod leader;
mod shm;
mod wire;

use mpi::Threading;
use mpi::environment::Universe;
use mpi::topology::{Color, Communicator, SimpleCommunicator};
use mpi::traits::*;

pub use follower::Follower;
pub use leader::{Leader, LeaderStop};

/// Why this process could not join an executor group.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// MPI was already initialised in this process.
    #[error("MPI is already initialised in this process")]
    AlreadyInitialized,
    /// The MPI library cannot be called from the compute thread.
    #[error(
        "this MPI library gives threading level {0:?}; an executor group needs at least Serialized \
         (its compute thread calls MPI)"
    )]
    Threading(Threading),
}

/// Which of `mpirun`'s ranks form groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// Every rank (`deepdist executor --mpi`).
    AllRanks,
    /// Every rank but world rank 0, which runs the driver (`deepdist launch --mpi`).
    AllButRankZero,
}

/// This process's part in its node's group.
pub enum Role {
    /// It holds the group's connection to the driver.
    Leader(Leader),
    /// It computes the gradients of its share of the leader's minibatches.
    Follower(Follower),
    /// It belongs to no group (the driver's rank under `launch --mpi`).
    Outside,
}

/// MPI, initialised; finalised when dropped, after every group has stopped.
pub struct Mpi {
    _universe: Universe,
    /// This process's rank in `MPI_COMM_WORLD`.
    pub world_rank: i32,
    /// Ranks in `MPI_COMM_WORLD`.
    pub world_size: i32,
    /// Executor groups formed across the world (one per node with members).
    pub groups: usize,
}

impl Mpi {
    /// Ends every rank of the run at once, with `code` as `mpirun`'s exit
    /// status: how a rank that cannot go on takes its group down.
    pub fn abort(&self, code: i32) -> ! {
        self._universe.world().abort(code)
    }
}

/// A communicator that may be handed to the compute thread.
struct Comm(SimpleCommunicator);

// SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED (checked in `join`),
// so any thread may call it as long as calls never overlap; a `Comm` is
// only ever used by one thread at a time (behind the leader's mutex, or
// owned by the follower's loop).
unsafe impl Send for Comm {}

/// Initialises MPI and forms this node's group among `members`. `cores`
/// is this rank's compute threads; by default the node's cores shared
/// evenly among the run's ranks on it.
pub fn join(members: Members, cores: Option<usize>) -> Result<(Mpi, Role), MpiError> {
    let (universe, provided) =
        mpi::initialize_with_threading(Threading::Serialized).ok_or(MpiError::AlreadyInitialized)?;
    if provided < Threading::Serialized {
        return Err(MpiError::Threading(provided));
    }
    let world = universe.world();
    let (world_rank, world_size) = (world.rank(), world.size());
    let node = world.split_shared(world_rank);
    // Every rank of a node agrees on a colour: the world rank of the node's first.
    let mut node_id = world_rank;
    node.process_at_rank(0).broadcast_into(&mut node_id);
    let here = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = cores.unwrap_or((here / node.size().max(1) as usize).max(1));
    let outside = members == Members::AllButRankZero && world_rank == 0;
    let color = if outside {
        Color::undefined()
    } else {
        Color::with_value(node_id)
    };
    let group = world.split_by_color_with_key(color, world_rank);
    let leads = u64::from(group.as_ref().is_some_and(|g| g.rank() == 0));
    let mut groups = 0u64;
    world.all_reduce_into(&leads, &mut groups, mpi::collective::SystemOperation::sum());
    let mpi = Mpi {
        _universe: universe,
        world_rank,
        world_size,
        groups: groups as usize,
    };
    let Some(group) = group else {
        return Ok((mpi, Role::Outside));
    };
    let mut total = 0u64;
    group.all_reduce_into(&(cores as u64), &mut total, mpi::collective::SystemOperation::sum());
    let role = if group.rank() == 0 {
        Role::Leader(Leader::new(Comm(group), cores, total as usize))
    } else {
        Role::Follower(Follower::new(Comm(group), cores))
    };
    Ok((mpi, role))
}
