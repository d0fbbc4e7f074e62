//! `deepdist executor --mpi` and `deepdist launch --mpi`: the ranks `mpirun`
//! starts on a node become one executor group (see `deepdist_executor::mpi`
//! and docs/mpi.md). Without the `mpi` feature both say how to get it.

use deepdist_executor::ExecutorConfig;

use crate::cli::LaunchArgs;
use crate::launch::placement::Placement;

/// What a build without the feature answers to `--mpi`.
#[cfg(not(feature = "mpi"))]
const NO_MPI: &str = "this build has no MPI support: rebuild with --features mpi \
                      (it needs the system's MPI: Debian's libopenmpi-dev and libclang-dev)";

/// `deepdist executor --mpi`: every rank joins its node's group; the
/// group's rank 0 serves the driver as `config`, with `cores` threads per rank.
#[cfg(feature = "mpi")]
pub fn executor(config: ExecutorConfig, cores: Option<usize>) -> anyhow::Result<()> {
    let (mpi, role) = imp::join(deepdist_executor::mpi::Members::AllRanks, cores)?;
    imp::play(&mpi, role, config, || Ok(()))
}

/// `deepdist executor --mpi` in a build without MPI.
#[cfg(not(feature = "mpi"))]
pub fn executor(_config: ExecutorConfig, _cores: Option<usize>) -> anyhow::Result<()> {
    anyhow::bail!(NO_MPI)
}

/// `deepdist launch --mpi`: world rank 0 is the driver and waits for one
/// executor per group; every other rank joins its node's group.
#[cfg(feature = "mpi")]
pub fn launch(mut args: LaunchArgs, p: Option<Placement>) -> anyhow::Result<()> {
    let Some(p) = p else {
        anyhow::bail!("launch --mpi: no MPI launcher in the environment: run it under mpirun or srun")
    };
    let (mpi, role) = imp::join(deepdist_executor::mpi::Members::AllButRankZero, args.cores.or(p.cores))?;
    args.executors = args.executors.or(Some(mpi.groups));
    let config = match role {
        deepdist_executor::mpi::Role::Leader(_) => crate::launch::executor_config(&args, &p)?,
        _ => ExecutorConfig::default(),
    };
    imp::play(&mpi, role, config, move || {
        super::runtime()?.block_on(crate::launch::drive(args, p))
    })
}

/// `deepdist launch --mpi` in a build without MPI.
#[cfg(not(feature = "mpi"))]
pub fn launch(_args: LaunchArgs, _p: Option<Placement>) -> anyhow::Result<()> {
    anyhow::bail!(NO_MPI)
}

#[cfg(feature = "mpi")]
mod imp {
    use anyhow::Context;
    use deepdist_executor::ExecutorConfig;
    use deepdist_executor::group::Group;
    use deepdist_executor::mpi::{self, Leader, Members, Mpi, Role};

    use crate::commands::service::{shown_driver, until_finished};

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
        crate::commands::runtime()?.block_on(async {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let running = tokio::spawn(deepdist_executor::run_group(config, Box::new(leader), stopped));
            until_finished(running, stop).await
        })
    }
}
