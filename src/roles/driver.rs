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
        server_shards: usize::from(args.server_shards),
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
    let tls = match (&args.tls.tls_cert, &args.tls.tls_key) {
        (Some(cert), Some(key)) => Some(TlsServer::from_pem_files(cert, key)?),
        _ => None,
    };
    let plaintext = args.plaintext.insecure_plaintext;
    if !local_only {
        check_exposure(&args.listen, secret.is_some(), tls.is_some(), plaintext)?;
    }
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
    let (secret_given, driver_tls) = (secret.is_some(), tls.is_some());
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
        let listener = bind_http(http).await?;
        if !listener.local_addr()?.ip().is_loopback() {
            check_exposure(&format!("--http {http}"), secret_given, driver_tls, plaintext)?;
        }
        let addr = driver.serve_http(listener)?;
        println!("status and metrics on http://{addr}/api/status and http://{addr}/metrics");
    }
    Ok(driver)
}

/// Refuses to listen beyond this machine in the less safe settings unless
/// `--insecure-plaintext` accepts them: with no shared secret, anyone who
/// reaches the port could submit jobs (which read files on this host as
/// data), join as an executor and receive the data, or read the page; with
/// a secret but no TLS, anyone on the path could read and change frames.
fn check_exposure(what: &str, secret: bool, tls: bool, plaintext: bool) -> anyhow::Result<()> {
    if plaintext {
        return Ok(());
    }
    anyhow::ensure!(
        secret,
        "{what} is beyond this machine, but the driver has no shared secret: anyone who can reach it \
         could submit jobs (which read files on this host), join as an executor and receive the data; \
         give every process the same secret (--secret-file, or {SECRET_ENV}; e.g. `openssl rand -hex 32`) \
         and TLS (--tls-cert, --tls-key), listen on 127.0.0.1, or pass --insecure-plaintext to accept that"
    );
    anyhow::ensure!(
        tls,
        "a shared secret without TLS on {what}: the secret authenticates only the start of each connection, \
         and anyone on the network path could then read, inject or change frames; give the driver \
         --tls-cert and --tls-key, or pass --insecure-plaintext to accept that"
    );
    Ok(())
}

/// Binds the listener of the driver's HTTP side.
async fn bind_http(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for HTTP"))
}

/// Starts `driver`'s HTTP side on `addr`.
pub async fn serve_http(driver: &mut Driver, addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    Ok(driver.serve_http(bind_http(addr).await?)?)
}
