//! Starting a driver as its flags say: the configuration, the listener, the
//! secret and TLS checked, a checkpoint recovered, the HTTP side served.

use std::time::Duration;

use anyhow::Context;
use deepdist_driver::checkpoint::{self, JobCheckpoint};
use deepdist_driver::{Driver, DriverConfig};
use deepdist_wire::fetch::resolve_data_dir;
use deepdist_wire::proto::auth::SECRET_ENV;
use deepdist_wire::transport::TlsServer;

use crate::cli::{DriverArgs, DriverSettings};

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
        let addr = serve_http(&mut driver, http).await?;
        println!("status and metrics on http://{addr}/api/status and http://{addr}/metrics");
    }
    Ok(driver)
}

/// Starts `driver`'s HTTP side on `addr`.
pub async fn serve_http(driver: &mut Driver, addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for HTTP"))?;
    Ok(driver.serve_http(listener)?)
}
