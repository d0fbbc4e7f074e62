//! Running one job for a benchmark: on a fresh local cluster or a running
//! driver, following it to its end and keeping every evaluated epoch.

use std::path::Path;

use anyhow::Context;
use deepdist_core::job::{JobSpec, JobState};
use deepdist_driver::DriverConfig;
use deepdist_wire::client::Client;
use deepdist_wire::proto::{EpochMetrics, JobSummary, Progress};
use deepdist_wire::transport::Credentials;

use crate::cli::{DataDirArg, DriverSettings};
use crate::roles::driver::driver_config;
use crate::roles::local::LocalCluster;

/// Where a benchmark's job trains.
pub enum Target<'a> {
    /// A fresh driver and executors in this process.
    Local {
        /// The driver's settings (boxed: they dwarf the other variant).
        config: Box<DriverConfig>,
        /// Executors to start.
        executors: usize,
        /// Compute threads of each.
        cores: usize,
    },
    /// A running driver and its executors.
    Remote(&'a str, &'a Credentials),
}

/// A finished job and its evaluated epochs, in order.
pub struct JobRun {
    /// How it ended (always done: anything else is an error).
    pub summary: JobSummary,
    /// One line per evaluated epoch, as metrics.jsonl has them.
    pub epochs: Vec<EpochMetrics>,
    /// The updates by staleness at the parameter server, over every
    /// executor (buckets of [`deepdist_core::mode::STALENESS_BOUNDS`]).
    pub staleness: Vec<u64>,
}

/// Runs `spec` on `target` to its end; fails unless it ends done.
pub async fn run_job(target: Target<'_>, spec: &JobSpec) -> anyhow::Result<JobRun> {
    let local = Credentials::default();
    let (cluster, addr, credentials) = match target {
        Target::Local {
            config,
            executors,
            cores,
        } => {
            let cluster = LocalCluster::start(*config, executors, cores, false).await?;
            let addr = cluster.addr.clone();
            (Some(cluster), addr, &local)
        }
        Target::Remote(addr, credentials) => (None, addr.to_string(), credentials),
    };
    let mut client = Client::connect(&addr, credentials).await?;
    // A running driver's counts include its earlier jobs': this run's are the difference.
    let before = staleness(&mut client).await?;
    let job = client.submit(&spec.to_toml(), &spec.name).await?;
    let mut epochs = Vec::new();
    let summary = client
        .watch(job, |p| {
            if let Progress::Epoch(line) = p {
                epochs.push(line);
            }
        })
        .await?;
    let mut staleness = staleness(&mut client).await?;
    staleness
        .iter_mut()
        .zip(&before)
        .for_each(|(t, b)| *t = t.saturating_sub(*b));
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    anyhow::ensure!(
        summary.state == JobState::Done,
        "job {} ended {}: {}",
        spec.name,
        summary.state,
        summary.error.clone().unwrap_or_default()
    );
    Ok(JobRun {
        summary,
        epochs,
        staleness,
    })
}

/// The updates the driver's executors have pushed, by staleness, summed.
async fn staleness(client: &mut Client) -> anyhow::Result<Vec<u64>> {
    let mut total = Vec::new();
    for executor in client.status().await?.executors {
        total.resize(total.len().max(executor.staleness.len()), 0);
        total.iter_mut().zip(&executor.staleness).for_each(|(t, n)| *t += n);
    }
    Ok(total)
}

/// The job at `path`, or the built-in MLP job; and where it came from.
pub fn read_spec(path: Option<&Path>) -> anyhow::Result<(JobSpec, String)> {
    let (text, origin) = match path {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            crate::roles::local::DEFAULT_JOB.to_string(),
            "jobs/mnist-mlp.toml (built in)".to_string(),
        ),
    };
    let spec = JobSpec::from_toml(&text, &origin)?;
    Ok((spec, origin))
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// This machine's cores.
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The driver of a benchmark's in-process runs: the default heartbeat and
/// lease, runs kept under `out/runs`, data from the flags' directory.
pub fn bench_driver(out: &Path, data: &DataDirArg) -> DriverConfig {
    driver_config(&DriverSettings {
        runs_dir: out.join("runs"),
        heartbeat_ms: 1000,
        heartbeat_timeout_s: 10,
        max_model_mb: None,
        task_lease_s: 60,
        server_shards: 1,
        http: None,
        data: data.clone(),
    })
}
