//! `deepdist launch JOB.toml`: one command for every rank of a run. The
//! cluster manager that started this process (see [`placement`]) gives its
//! rank: 0 runs the driver and the job ([`run_host`]), the others run
//! executors that exit with the job's status. With `--hosts`, this process
//! is the driver and starts one executor per host over ssh ([`ssh`]);
//! outside any manager it is `deepdist local`.

mod hostlist;
mod mpi;
pub mod placement;
mod run_host;
mod ssh;

use std::time::Duration;

use anyhow::Context;
use deepdist_executor::ExecutorConfig;

use crate::cli::{LaunchArgs, LocalArgs};
use crate::roles::client::credentials_from;
use crate::roles::executor::{patience, serve_executor};
use crate::roles::{local, runtime};
use placement::Placement;
use run_host::{RunHost, join_host_port};

/// Runs this process's part of the run; fails unless the job ends `done`.
pub fn run(args: LaunchArgs) -> anyhow::Result<()> {
    if args.hosts.is_some() {
        return runtime()?.block_on(ssh::run(args));
    }
    let env = |name: &str| std::env::var(name).ok();
    let placement = placement::detect(&env)?;
    if args.mpi {
        return mpi::launch(args, placement);
    }
    match placement {
        None => {
            println!("deepdist launch: no cluster manager in the environment: running locally");
            local::run(LocalArgs {
                job: Some(args.job),
                executors: args.executors.unwrap_or(2),
                cores_per_executor: args.cores,
                loopback_tcp: false,
                run: args.run,
            })
        }
        Some(p) if p.rank == 0 => runtime()?.block_on(drive(args, p)),
        Some(p) => {
            let config = executor_config(&args, &p)?;
            runtime()?.block_on(serve_executor(config))
        }
    }
}

/// Rank 0: the driver, the job, the end of the run.
pub async fn drive(args: LaunchArgs, p: Placement) -> anyhow::Result<()> {
    let size = p.size.map_or("?".to_string(), |n| n.to_string());
    println!("deepdist launch: {} rank 0 of {size}: the driver", p.manager);
    let advertise = match (&args.advertise, &p.driver_host) {
        (Some(host), _) => host.clone(),
        (None, Some(host)) => host.clone(),
        (None, None) => this_host(),
    };
    let host = RunHost::start(&args, &advertise).await?;
    let expected = args.executors.or(p.size.map(|n| n.saturating_sub(1)));
    let outcome = host
        .run_job(&args, expected, Duration::from_secs(args.wait_executors_s))
        .await;
    host.finish(*outcome.as_ref().unwrap_or(&deepdist_core::job::JobState::Failed))
        .await;
    let state = outcome?;
    anyhow::ensure!(state == deepdist_core::job::JobState::Done, "the job ended {state}");
    Ok(())
}

/// Any other rank: the executor of this run it runs.
pub fn executor_config(args: &LaunchArgs, p: &Placement) -> anyhow::Result<ExecutorConfig> {
    let (driver, rendezvous) = match (&args.rendezvous, &args.driver, &p.driver_host) {
        (Some(path), _, _) => (format!("the address in {}", path.display()), Some(path.clone())),
        (None, Some(addr), _) => (addr.clone(), None),
        (None, None, Some(host)) => (join_host_port(host, args.port), None),
        (None, None, None) => anyhow::bail!(
            "{} says this is rank {}, but not where rank 0 (the driver) runs: pass --driver HOST:PORT, \
             or --rendezvous PATH on a filesystem every rank sees",
            p.manager,
            p.rank
        ),
    };
    let cores = match args.cores.or(p.cores) {
        Some(0) => anyhow::bail!("--cores must be at least 1"),
        Some(n) => n,
        None => {
            let here = std::thread::available_parallelism().map_or(1, |n| n.get());
            (here / p.tasks_here.unwrap_or(1).max(1)).max(1)
        }
    };
    println!("deepdist launch: {} rank {}: an executor", p.manager, p.rank);
    Ok(ExecutorConfig {
        driver,
        rendezvous,
        cores,
        name: format!("{}-rank{}", this_host(), p.rank),
        credentials: credentials_from(args.secret.secret_file.as_deref(), args.tls_ca.as_deref())
            .context("cannot load the executor's credentials")?,
        patience: patience(&args.membership.membership()),
        ..ExecutorConfig::default()
    })
}

/// This machine's host name (what Slurm's node list and a pod's DNS use).
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
