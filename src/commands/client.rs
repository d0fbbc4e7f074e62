//! `deepdist submit`, `status` and `cancel`.

use anyhow::Context;
use deepdist_core::job::JobState;
use deepdist_wire::client::{CONNECT_PATIENCE, Client};

use crate::cli::{CancelArgs, DriverAddr, SubmitArgs};
use crate::roles::client::{credentials, read_job};
use crate::roles::progress::ProgressView;

async fn connect(driver: &DriverAddr) -> anyhow::Result<Client> {
    let addr = &driver.driver;
    Client::connect_patiently(addr, &credentials(driver)?, CONNECT_PATIENCE)
        .await
        .with_context(|| format!("cannot reach the driver at {addr}"))
}

/// Submits a job and, with `--wait`, follows it to the end.
pub fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let (text, spec) = read_job(&args.job)?;
    crate::roles::runtime()?.block_on(async {
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
    crate::roles::runtime()?.block_on(async {
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
        if !report.server_shards.is_empty() {
            println!("
parameter-server shards ({}):", report.server_shards.len());
            println!(
                "  {:>5}  {:>10}  {:>9}  {:>10}  {:>10}  {:>12}  {:>12}",
                "shard", "values", "updates", "updates/s", "queued MB", "pushed MB", "fetched MB"
            );
            let mb = |b: u64| b as f64 / 1e6;
            for (i, shard) in report.server_shards.iter().enumerate() {
                println!(
                    "  {i:>5}  {:>10}  {:>9}  {:>10.1}  {:>10.1}  {:>12.1}  {:>12.1}",
                    shard.values,
                    shard.updates,
                    shard.updates_per_s,
                    mb(shard.queued_bytes),
                    mb(shard.bytes_pushed),
                    mb(shard.bytes_fetched)
                );
            }
        }
        Ok(())
    })
}

/// Cancels a job.
pub fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    crate::roles::runtime()?.block_on(async {
        connect(&args.driver).await?.cancel(args.job).await?;
        println!("job {} cancelled", args.job);
        Ok(())
    })
}
