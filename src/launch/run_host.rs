//! The driver's side of a launched run: a driver for this one job, which it
//! submits (or resumes with `--recover`), follows to its end, then tells
//! every executor the run is over.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use deepdist_core::job::JobState;
use deepdist_driver::{Driver, checkpoint};
use deepdist_wire::client::Client;
use deepdist_wire::transport::Credentials;

use crate::cli::{DriverArgs, LaunchArgs};
use crate::roles::client::{credentials_from, read_job};
use crate::roles::driver::start_driver;
use crate::roles::progress::ProgressView;

/// How long the end of a run waits for executors to leave.
const GOODBYE: Duration = Duration::from_secs(15);

/// The driver of a launched run.
pub struct RunHost {
    driver: Driver,
    /// Where this process dials its own driver to submit and watch.
    client_addr: String,
    credentials: Credentials,
    rendezvous: Option<PathBuf>,
}

impl RunHost {
    /// Starts the driver on `--bind` and the run's port; writes
    /// `advertise:port` to the rendezvous file, if any.
    pub async fn start(args: &LaunchArgs, advertise: &str) -> anyhow::Result<Self> {
        let port = match &args.driver {
            Some(addr) => port_of(addr)?,
            None => args.port,
        };
        let checkpoints = args.run.runs_dir.join(checkpoint::DIR_NAME);
        let driver_args = DriverArgs {
            listen: join_host_port(&args.bind, port),
            secret: args.secret.clone(),
            tls: args.tls.clone(),
            plaintext: args.plaintext.clone(),
            run: args.run.clone(),
            recover: args.recover || (args.restartable && checkpoint::newest(&checkpoints).is_some()),
            checkpoint_interval_s: args.checkpoint_interval_s,
        };
        let driver = start_driver(driver_args).await?;
        let port = driver.addr().port();
        // TLS checks the driver's name, so dial it by the name executors use.
        let client_host = if args.tls_ca.is_some() {
            match &args.driver {
                Some(addr) => host_of(addr).to_string(),
                None => advertise.to_string(),
            }
        } else if driver.addr().ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            driver.addr().ip().to_string()
        };
        if let Some(path) = &args.rendezvous {
            let addr = join_host_port(advertise, port);
            deepdist_wire::rendezvous::write(path, &addr)
                .with_context(|| format!("cannot write the rendezvous file {}", path.display()))?;
            println!("rendezvous: {addr} written to {}", path.display());
        }
        Ok(Self {
            driver,
            client_addr: join_host_port(&client_host, port),
            credentials: credentials_from(args.secret.secret_file.as_deref(), args.tls_ca.as_deref())?,
            rendezvous: args.rendezvous.clone(),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.driver.addr().port()
    }

    /// Waits for `expected` executors (at most `wait`), submits the job (or,
    /// with `recover`, follows the resumed one) and shows its progress to
    /// the end; Ctrl-C or SIGTERM cancels it. Returns how it ended.
    pub async fn run_job(
        &self,
        args: &LaunchArgs,
        expected: Option<usize>,
        wait: Duration,
    ) -> anyhow::Result<JobState> {
        let (text, spec) = read_job(&args.job)?;
        let unfinished: Vec<_> = self
            .driver
            .status()
            .jobs
            .into_iter()
            .filter(|j| !j.state.is_final())
            .collect();
        let job = match (args.recover || args.restartable, unfinished.first()) {
            (true, Some(resumed)) => {
                println!(
                    "following job {} ({}), which an earlier run left unfinished",
                    resumed.id, resumed.name
                );
                resumed.id
            }
            (false, Some(earlier)) => anyhow::bail!(
                "{} holds job {} ({}) that an earlier run left unfinished: pass --recover to resume it, \
                 or give this run another --runs-dir",
                args.run.runs_dir.display(),
                earlier.id,
                earlier.name
            ),
            (_, None) => {
                if let Some(n) = expected {
                    self.await_executors(n, wait).await;
                }
                let mut client = self.client().await?;
                let job = client.submit(&text, &args.job.display().to_string()).await?;
                println!("job {job} ({}) submitted", spec.name);
                job
            }
        };
        let mut view = ProgressView::new(&spec);
        let mut client = self.client().await?;
        let summary = {
            let watch = client.watch(job, |p| view.update(p));
            tokio::pin!(watch);
            tokio::select! {
                s = &mut watch => s?,
                r = crate::roles::stop_signal() => {
                    r?;
                    eprintln!("\ncancelling job {job} (the model so far is saved)");
                    self.client().await?.cancel(job).await?;
                    watch.await?
                }
            }
        };
        view.finish(&summary);
        Ok(summary.state)
    }

    /// Tells the executors the run ended `state`, waits for them to leave,
    /// removes the rendezvous file and stops the driver.
    pub async fn finish(self, state: JobState) {
        let stayed = self.driver.end_run(state, GOODBYE).await;
        if stayed > 0 {
            tracing::warn!(stayed, "executors still connected at the end of the run");
        }
        if let Some(path) = &self.rendezvous {
            let _ = std::fs::remove_file(path);
        }
        self.driver.shutdown().await;
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.client_addr, &self.credentials)
            .await
            .with_context(|| format!("cannot reach this run's driver at {}", self.client_addr))
    }

    /// Returns once `n` executors are registered or `wait` has passed.
    async fn await_executors(&self, n: usize, wait: Duration) {
        let here = self.driver.status().executors.len();
        if here < n {
            println!(
                "waiting for {n} executors ({here} so far, at most {} s)",
                wait.as_secs()
            );
        }
        let here = self.driver.await_executors(n, wait).await;
        if here >= n {
            println!("{here} executors registered");
        } else {
            println!(
                "{here} of {n} executors registered after {} s: starting with them",
                wait.as_secs()
            );
        }
    }
}

/// `host` and `port` as one address (IPv6 literals in brackets).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

fn port_of(addr: &str) -> anyhow::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("--driver {addr:?} is not host:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_joined_and_split() {
        assert_eq!(join_host_port("node01", 7077), "node01:7077");
        assert_eq!(join_host_port("::1", 7), "[::1]:7");
        assert_eq!(join_host_port("[::1]", 7), "[::1]:7");
        assert_eq!(host_of("deepdist-0.deepdist:7077"), "deepdist-0.deepdist");
        assert_eq!(port_of("deepdist-0.deepdist:7077").unwrap(), 7077);
        assert!(port_of("node01").is_err());
    }
}
