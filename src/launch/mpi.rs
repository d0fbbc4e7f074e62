//! `deepdist launch --mpi`: world rank 0 is the driver and every other rank
//! joins its node's executor group (the groups themselves are
//! `crate::roles::mpi`).

#[cfg(feature = "mpi")]
use deepdist_executor::ExecutorConfig;

use super::placement::Placement;
use crate::cli::LaunchArgs;
use crate::roles::mpi;
#[cfg(feature = "mpi")]
use crate::roles::runtime;

/// `deepdist launch --mpi`: world rank 0 is the driver and waits for one
/// executor per group; every other rank joins its node's group.
#[cfg(feature = "mpi")]
pub fn launch(mut args: LaunchArgs, p: Option<Placement>) -> anyhow::Result<()> {
    let Some(p) = p else {
        anyhow::bail!("launch --mpi: no MPI launcher in the environment: run it under mpirun or srun")
    };
    let (world, role) = mpi::join(deepdist_executor::mpi::Members::AllButRankZero, args.cores.or(p.cores))?;
    args.executors = args.executors.or(Some(world.groups));
    let config = match role {
        deepdist_executor::mpi::Role::Leader(_) => super::executor_config(&args, &p)?,
        _ => ExecutorConfig::default(),
    };
    mpi::play(&world, role, config, move || runtime()?.block_on(super::drive(args, p)))
}

/// `deepdist launch --mpi` in a build without MPI.
#[cfg(not(feature = "mpi"))]
pub fn launch(_args: LaunchArgs, _p: Option<Placement>) -> anyhow::Result<()> {
    anyhow::bail!(mpi::NO_MPI)
}
