//! `deepdist submit`, `status` and `cancel`.

use anyhow::Context;
use deepdist_core::job::{JobSpec, JobState};
use deepdist_wire::client::Client;
use deepdist_wire::proto::auth::Secret;
use deepdist_wire::transport::{Credentials, TlsClient};

use super::progress::ProgressView;
use crate::cli::{CancelArgs, DriverAddr, SubmitArgs};

/// What this process presents to the driver, from the flags.
pub fn credentials(driver: &DriverAddr) -> anyhow::Result<Credentials> {
    credentials_from(driver.secret.secret_file.as_deref(), driver.tls_ca.as_deref())
}

/// What to present to a driver: this secret and trust in this CA (TLS).
pub fn credentials_from(
    secret_file: Option<&std::path::Path>,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<Credentials> {
    Ok(Credentials {
        secret: load_secret(secret_file)?,
        tls: tls_ca.map(TlsClient::from_pem_file).transpose()?,
    })
}

/// The shared secret from `--secret-file` (`-`: standard input, as
/// `deepdist launch --hosts` hands it to executors over ssh), else
/// `$DEEPDIST_SECRET`, else none.
pub fn load_secret(file: Option<&std::path::Path>) -> anyhow::Result<Option<Secret>> {
    if file == Some(std::path::Path::new("-")) {
        // Standard input can be read once; the driver's rank needs it twice.
        static STDIN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let bytes = match STDIN.get() {
            Some(bytes) => bytes,
            None => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                    .context("cannot read the secret from standard input")?;
                STDIN.get_or_init(|| bytes)
            }
        };
        return Ok(Some(Secret::new(bytes, "standard input")?));
    }
    Ok(Secret::load(file)?)
}

async fn connect(driver: &DriverAddr) -> anyhow::Result<Client> {
    let addr = &driver.driver;
    Client::connect(addr, &credentials(driver)?)
        .await
        .with_context(|| format!("cannot reach the driver at {addr}"))
}

/// Reads and checks a job file locally, so mistakes show before any network.
pub fn read_job(path: &std::path::Path) -> anyhow::Result<(String, JobSpec)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec = JobSpec::from_toml(&text, &path.display().to_string())?;
    Ok((text, spec))
}

/// Submits a job and, with `--wait`, follows it to the end.
pub fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let (text, spec) = read_job(&args.job)?;
    super::runtime()?.block_on(async {
        let mut client = connect(&args.driver).await?;
        let job = client.submit(&text, &args.job.display().to_string()).await?;
        println!("{job}");
        if args.wait {
            let mut view = ProgressView::new(&spec);
            let summary = client.watch(job, |p| view.update(p)).await?;
            view.finish(&summary);
            anyhow::ensure!(summary.state == JobState::Done, "job {job} ended {}", summary.state);
        }
        Ok(())
    })
}

/// Prints executors and jobs as tables.
pub fn status(args: DriverAddr) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let report = connect(&args).await?.status().await?;
        println!("executors ({}):", report.executors.len());
        println!(
            "  {:>4}  {:<24} {:>5}  {:>10}  task",
            "id", "name", "cores", "tasks done"
        );
        for e in &report.executors {
            let task = e.task.map_or("idle".to_string(), |t| {
                format!("job {} epoch {} partition {}", t.job, t.epoch, t.partition)
            });
            println!(
                "  {:>4}  {:<24} {:>5}  {:>10}  {task}",
                e.id, e.name, e.cores, e.tasks_done
            );
        }
        println!("\njobs ({}):", report.jobs.len());
        println!(
            "  {:>4}  {:<24} {:<10} {:>9}  accuracy",
            "id", "name", "state", "epochs"
        );
        for j in &report.jobs {
            let acc = j.accuracy.map_or("—".to_string(), |a| format!("{:.2}%", 100.0 * a));
            let err = j.error.as_deref().map_or(String::new(), |e| format!("  ({e})"));
            let err = match &j.warning {
                Some(w) => format!("{err}  DIVERGING: {w}"),
                None => err,
            };
            println!(
                "  {:>4}  {:<24} {:<10} {:<9} {:>4}/{:<4}  {acc}{err}",
                j.id, j.name, j.state, j.stage, j.epochs_done, j.epochs
            );
        }
        println!(
            "\nexecutors lost: {}   task leases expired: {}   connections rejected: {}\n\
             updates received: {}   accepted: {}   discarded: {} repeated, {} late   tasks whose updates do not add up: {}",
            report.executors_lost,
            report.leases_expired,
            report.rejected_connections,
            report.updates_received,
            report.updates_accepted,
            report.duplicate_updates_discarded,
            report.late_updates_discarded,
            report.task_push_mismatches
        );
        Ok(())
    })
}

/// Cancels a job.
pub fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        connect(&args.driver).await?.cancel(args.job).await?;
        println!("job {} cancelled", args.job);
        Ok(())
    })
}
