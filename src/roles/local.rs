//! `deepdist local`, and the in-process cluster the benches run: a driver and N executors in this process. They speak
//! the same protocol as across machines, handshake included, over
//! in-process pipes (frames handed over as shared bytes, so parameters and
//! updates are never copied through a socket), or with `--loopback-tcp`
//! over loopback TCP exactly as across machines.

use deepdist_core::job::{JobSpec, JobState};
use deepdist_driver::{Driver, DriverConfig};
use deepdist_executor::ExecutorConfig;
use deepdist_wire::client::Client;
use deepdist_wire::transport::Credentials;

use super::client::read_job;
use super::driver::{driver_config, serve_http};
use super::progress::ProgressView;
use crate::cli::LocalArgs;

/// The job `deepdist local` runs when given none.
pub const DEFAULT_JOB: &str = include_str!("../../jobs/mnist-mlp.toml");

/// Runs the job to its end; fails if the job does not finish `done`.
pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.executors > 0, "--executors must be at least 1");
    let (text, origin, spec) = match &args.job {
        Some(path) => {
            let (text, spec) = read_job(path)?;
            (text, path.display().to_string(), spec)
        }
        None => {
            let spec = JobSpec::from_toml(DEFAULT_JOB, "jobs/mnist-mlp.toml (built in)")?;
            (DEFAULT_JOB.to_string(), "jobs/mnist-mlp.toml".to_string(), spec)
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_executor = args.cores_per_executor.unwrap_or((cores / args.executors).max(1));
    let config = driver_config(&args.run);
    super::runtime()?.block_on(async move {
        let mut cluster = LocalCluster::start(config, args.executors, per_executor, args.loopback_tcp).await?;
        if let Some(http) = &args.run.http {
            let addr = serve_http(&mut cluster.driver, http).await?;
            println!("status and metrics on http://{addr}/api/status and http://{addr}/metrics");
        }
        let addr = cluster.addr.clone();
        println!(
            "local mode: driver on {addr}, {} executors × {per_executor} cores ({}), job {}",
            args.executors,
            if args.loopback_tcp {
                "loopback TCP"
            } else {
                "in-process"
            },
            spec.name
        );
        let mut client = Client::connect(&addr, &Credentials::default()).await?;
        let job = client.submit(&text, &origin).await?;
        let mut view = ProgressView::new(&spec);
        let summary = {
            let watch = client.watch(job, |p| view.update(p));
            tokio::pin!(watch);
            tokio::select! {
                s = &mut watch => s?,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("\ncancelling job {job} (the model so far is saved)");
                    Client::connect(&addr, &Credentials::default()).await?.cancel(job).await?;
                    watch.await?
                }
            }
        };
        view.finish(&summary);
        cluster.shutdown().await;
        anyhow::ensure!(summary.state == JobState::Done, "job {job} ended {}", summary.state);
        Ok(())
    })
}

/// How long the executors of a local cluster may take to connect.
const EXECUTORS_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// A driver and executors in this process.
pub struct LocalCluster {
    driver: Driver,
    stop: tokio::sync::watch::Sender<bool>,
    /// The driver's address.
    pub addr: String,
}

impl LocalCluster {
    /// Starts a driver on `127.0.0.1:0` (for clients and the status page)
    /// and `executors` executors of `cores` threads each, connected to it
    /// in-process or, with `loopback_tcp`, through its listener.
    pub async fn start(
        config: DriverConfig,
        executors: usize,
        cores: usize,
        loopback_tcp: bool,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let driver = Driver::start(listener, config)?;
        let addr = driver.addr().to_string();
        let in_process = (!loopback_tcp).then(|| driver.in_process());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for i in 0..executors {
            let config = ExecutorConfig {
                driver: addr.clone(),
                cores,
                name: format!("local-{i}"),
                in_process: in_process.clone(),
                ..ExecutorConfig::default()
            };
            tokio::spawn(deepdist_executor::run(config, stopped.clone()));
        }
        // Every executor is there before a job starts: a mode that deals
        // work by rank then repeats its results run after run.
        let here = driver.await_executors(executors, EXECUTORS_WITHIN).await;
        anyhow::ensure!(
            here >= executors,
            "only {here} of {executors} executors reached the driver within {} s",
            EXECUTORS_WITHIN.as_secs()
        );
        Ok(Self { driver, stop, addr })
    }

    /// Stops the executors and the driver.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.driver.shutdown().await;
    }
}
