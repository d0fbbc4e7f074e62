//! MPI executor groups: the ranks `mpirun` starts on a node become one
//! executor (see `deepdist_executor::mpi` and docs/mpi.md), for
//! `deepdist executor --mpi` and `deepdist launch --mpi`. Without the `mpi`
//! feature both say how to get it.

use deepdist_executor::ExecutorConfig;

/// What a build without the feature answers to `--mpi`.
#[cfg(not(feature = "mpi"))]
pub const NO_MPI: &str = "this build has no MPI support: rebuild with --features mpi \
                      (it needs the system's MPI: Debian's libopenmpi-dev and libclang-dev)";

/// `deepdist executor --mpi`: every rank joins its node's group; the
/// group's rank 0 serves the driver as `config`, with `cores` threads per rank.
#[cfg(feature = "mpi")]
pub fn executor(config: ExecutorConfig, cores: Option<usize>) -> anyhow::Result<()> {
    let (mpi, role) = join(deepdist_executor::mpi::Members::AllRanks, cores)?;
    play(&mpi, role, config, || Ok(()))
}

/// `deepdist executor --mpi` in a build without MPI.
#[cfg(not(feature = "mpi"))]
pub fn executor(_config: ExecutorConfig, _cores: Option<usize>) -> anyhow::Result<()> {
    anyhow::bail!(NO_MPI)
}

#[cfg(feature = "mpi")]
pub use imp::{join, play};

#[cfg(feature = "mpi")]
mod imp {
    use anyhow::Context;
    use deepdist_executor::ExecutorConfig;
    use deepdist_executor::group::Group;
    use deepdist_executor::mpi::{self, Leader, Members, Mpi, Role};

    use crate::roles::executor::{shown_driver, until_finished};

    /// Initialises MPI and joins this node's group.
    pub fn join(members: Members, cores: Option<usize>) -> anyhow::Result<(Mpi, Role)> {
        anyhow::ensure!(cores != Some(0), "--cores must be at least 1");
        mpi::join(members, cores).context("cannot form the MPI executor group")
    }

    /// Plays this rank's role: the leader serves the driver as `config`, a
    /// follower computes for its leader, a rank outside any group runs
    /// `outside`. A follower that cannot go on aborts the whole run, MPI's
    /// rule, so that `mpirun` exits with an error instead of hanging.
    pub fn play(
        mpi: &Mpi,
        role: Role,
        config: ExecutorConfig,
        outside: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match role {
            Role::Leader(leader) => serve_group(config, leader),
            Role::Follower(follower) => {
                let rank = follower.rank();
                if let Err(e) = follower.serve() {
                    tracing::error!(rank, error = %e, "this rank of the executor group stops; so does the run");
                    eprintln!("deepdist executor: MPI rank {rank} of the group: {e}");
                    mpi.abort(1);
                }
                Ok(())
            }
            Role::Outside => outside(),
        }
    }

    /// The group's rank 0: one executor with the group's cores.
    fn serve_group(mut config: ExecutorConfig, leader: Leader) -> anyhow::Result<()> {
        // Dropped last, however this ends: the followers wait for it.
        let _stop = leader.stopper();
        let (ranks, total) = (leader.ranks(), leader.cores());
        config.cores = leader.own_cores();
        println!(
            "deepdist executor {}: MPI group of {ranks} ranks with {total} cores, driver {}",
            config.name,
            shown_driver(&config)
        );
        crate::roles::runtime()?.block_on(async {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let running = tokio::spawn(deepdist_executor::run_group(config, Box::new(leader), stopped));
            until_finished(running, stop).await
        })
    }
}
