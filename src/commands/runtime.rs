//! `deepdist driver` and `deepdist executor`: long-running services.

use std::time::Duration;

use anyhow::Context;
use deepdist_common::data::fetch::resolve_data_dir;
use deepdist_driver::{Driver, DriverConfig};
use deepdist_executor::ExecutorConfig;

use crate::cli::{DriverArgs, ExecutorArgs, RunDirArgs};

/// The driver configuration the flags describe.
pub fn driver_config(args: &RunDirArgs) -> DriverConfig {
    DriverConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(10)),
        heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout_s.max(1)),
        runs_dir: args.runs_dir.clone(),
        data_dir: resolve_data_dir(args.data.data_dir.clone()),
        ..DriverConfig::default()
    }
}

/// Runs a driver until Ctrl-C.
pub fn driver(args: DriverArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let driver = Driver::start(listener, driver_config(&args.run))?;
        println!("deepdist driver listening on {} (Ctrl-C to stop)", driver.addr());
        tokio::signal::ctrl_c().await?;
        println!("stopping");
        driver.shutdown().await;
        Ok(())
    })
}

/// Runs an executor until Ctrl-C.
pub fn executor(args: ExecutorArgs) -> anyhow::Result<()> {
    let mut config = ExecutorConfig {
        driver: args.driver.driver,
        ..ExecutorConfig::default()
    };
    if let Some(cores) = args.cores {
        anyhow::ensure!(cores > 0, "--cores must be at least 1");
        config.cores = cores;
    }
    if let Some(name) = args.name {
        config.name = name;
    }
    super::runtime()?.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        println!(
            "deepdist executor {} with {} cores, driver {}",
            config.name, config.cores, config.driver
        );
        let executor = tokio::spawn(deepdist_executor::run(config, stopped));
        tokio::select! {
            r = executor => r??,
            _ = tokio::signal::ctrl_c() => { let _ = stop.send(true); }
        }
        Ok(())
    })
}
