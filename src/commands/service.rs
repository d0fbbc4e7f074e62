//! `deepdist driver` and `deepdist executor`: long-running services.

use deepdist_executor::ExecutorConfig;

use crate::cli::{DriverArgs, ExecutorArgs};
use crate::roles::driver::start_driver;
use crate::roles::executor::{patience, serve_executor};
use crate::roles::{client, mpi, runtime};

/// Runs a driver until Ctrl-C.
pub fn driver(args: DriverArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let driver = start_driver(args).await?;
        tokio::signal::ctrl_c().await?;
        println!("stopping");
        driver.shutdown().await;
        Ok(())
    })
}

/// Runs an executor until Ctrl-C or, with `--exit-with-run`, until the run
/// is over; fails if the run's job did not end `done`.
pub fn executor(args: ExecutorArgs) -> anyhow::Result<()> {
    let mut config = ExecutorConfig {
        credentials: client::credentials(&args.driver)?,
        driver: args.driver.driver,
        rendezvous: args.rendezvous,
        patience: patience(&args.run),
        ..ExecutorConfig::default()
    };
    if args.cores == Some(0) {
        anyhow::bail!("--cores must be at least 1");
    }
    if let Some(name) = args.name {
        config.name = name;
    }
    if let Some(mib) = args.max_model_mb {
        config.max_model_bytes = mib << 20;
    }
    if args.mpi {
        return mpi::executor(config, args.cores);
    }
    if let Some(cores) = args.cores {
        config.cores = cores;
    }
    runtime()?.block_on(serve_executor(config))
}
