//! `deepdist driver` and `deepdist executor`: long-running services.

use std::time::Duration;

use anyhow::Context;
use deepdist_core::job::JobState;
use deepdist_driver::checkpoint::{self, JobCheckpoint};
use deepdist_driver::{Driver, DriverConfig};
use deepdist_executor::{ExecutorConfig, Finish, Patience};
use deepdist_wire::fetch::resolve_data_dir;
use deepdist_wire::proto::auth::SECRET_ENV;
use deepdist_wire::transport::TlsServer;

use crate::cli::{DriverArgs, DriverSettings, ExecutorArgs, RunMembership};

/// The driver configuration the flags describe.
pub fn driver_config(args: &DriverSettings) -> DriverConfig {
    let mut config = DriverConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(10)),
        heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout_s.max(1)),
        task_lease: Duration::from_secs(args.task_lease_s.max(1)),
        runs_dir: args.runs_dir.clone(),
        data_dir: resolve_data_dir(args.data.data_dir.clone()),
        ..DriverConfig::default()
    };
    if let Some(mib) = args.max_model_mb {
        config.max_model_bytes = mib << 20;
    }
    config
}

/// Runs a driver until Ctrl-C.
pub fn driver(args: DriverArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let driver = start_driver(args).await?;
        tokio::signal::ctrl_c().await?;
        println!("stopping");
        driver.shutdown().await;
        Ok(())
    })
}

/// Starts a driver as the flags say: listening, secret and TLS checked,
/// recovering a checkpoint with `--recover`, HTTP with `--http`.
pub async fn start_driver(args: DriverArgs) -> anyhow::Result<Driver> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let secret = super::client::load_secret(args.secret.secret_file.as_deref())?;
    let local_only = listener.local_addr()?.ip().is_loopback();
    if secret.is_none() && !local_only {
        tracing::warn!(
            listen = %args.listen,
            "listening beyond this machine without a shared secret: anyone who can reach the port can \
             submit jobs and join as an executor (use --secret-file or {SECRET_ENV})"
        );
    }
    let tls = match (&args.tls.tls_cert, &args.tls.tls_key) {
        (Some(cert), Some(key)) => Some(TlsServer::from_pem_files(cert, key)?),
        _ => None,
    };
    anyhow::ensure!(
        secret.is_none() || tls.is_some() || local_only || args.plaintext.insecure_plaintext,
        "a shared secret without TLS on {}: the secret authenticates only the start of each connection, \
         and anyone on the network path could then read, inject or change frames; give the driver \
         --tls-cert and --tls-key, or pass --insecure-plaintext to accept that",
        args.listen
    );
    let checkpoint_dir = args.run.runs_dir.join(checkpoint::DIR_NAME);
    let newest = checkpoint::newest(&checkpoint_dir);
    let resume = if args.recover {
        let Some(checkpoint_path) = newest else {
            anyhow::bail!(
                "no checkpoint in {}: nothing to recover (is --runs-dir the one the crashed driver used?)",
                checkpoint_dir.display()
            );
        };
        let c = JobCheckpoint::load(&checkpoint_path).context("cannot recover")?;
        println!(
            "recovering job {} from {}: stage {}, {} epochs done",
            c.job,
            checkpoint_path.display(),
            c.stage + 1,
            c.epochs_done
        );
        Some(c)
    } else {
        if let Some(path) = newest {
            tracing::warn!(
                path = %path.display(),
                "a checkpoint of an unfinished job is here: start with --recover to resume it \
                 (it is kept; the job itself is queued again from the journal)"
            );
        }
        None
    };
    let config = DriverConfig {
        secret,
        tls,
        checkpoint_dir: Some(checkpoint_dir),
        journal: Some(args.run.runs_dir.join(deepdist_driver::journal::FILE_NAME)),
        checkpoint_interval: Duration::from_secs(args.checkpoint_interval_s.max(1)),
        ..driver_config(&args.run)
    };
    let mut driver = Driver::start_resuming(listener, config, resume)?;
    println!("deepdist driver listening on {} (Ctrl-C to stop)", driver.addr());
    if let Some(http) = &args.run.http {
        let addr = super::local::serve_http(&mut driver, http).await?;
        println!("status and metrics on http://{addr}/api/status and http://{addr}/metrics");
    }
    Ok(driver)
}

/// Runs an executor until Ctrl-C or, with `--exit-with-run`, until the run
/// is over; fails if the run's job did not end `done`.
pub fn executor(args: ExecutorArgs) -> anyhow::Result<()> {
    let mut config = ExecutorConfig {
        credentials: super::client::credentials(&args.driver)?,
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
        return super::mpi_group::executor(config, args.cores);
    }
    if let Some(cores) = args.cores {
        config.cores = cores;
    }
    super::runtime()?.block_on(serve_executor(config))
}

/// The patience `--exit-with-run` asks for.
pub fn patience(run: &RunMembership) -> Option<Patience> {
    run.exit_with_run.then(|| Patience {
        join: Duration::from_secs(run.join_timeout_s),
        rejoin: Duration::from_secs(run.rejoin_timeout_s),
    })
}

/// Serves as an executor until Ctrl-C or the end of its run.
pub async fn serve_executor(config: ExecutorConfig) -> anyhow::Result<()> {
    println!(
        "deepdist executor {} with {} cores, driver {}",
        config.name,
        config.cores,
        shown_driver(&config)
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    until_finished(tokio::spawn(deepdist_executor::run(config, stopped)), stop).await
}

/// Where an executor looks for its driver, for people.
pub fn shown_driver(config: &ExecutorConfig) -> String {
    match &config.rendezvous {
        Some(path) => format!("from {}", path.display()),
        None => config.driver.clone(),
    }
}

/// Waits for a running executor to finish, or stops it on Ctrl-C or
/// SIGTERM; says how its run ended.
pub async fn until_finished(
    executor: tokio::task::JoinHandle<Result<Finish, deepdist_executor::ExecutorError>>,
    stop: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let finish = tokio::select! {
        r = executor => r??,
        r = super::stop_signal() => { r?; let _ = stop.send(true); Finish::Stopped }
    };
    match finish {
        Finish::Stopped => Ok(()),
        Finish::RunOver(JobState::Done) => {
            println!("the run is over: its job is done");
            Ok(())
        }
        Finish::RunOver(state) => anyhow::bail!("the run is over: its job ended {state}"),
    }
}
