//! `deepdist bench dbn`: the distributed-DBN experiment (an MPI study of DBN
//! training on MNIST, 2 nodes × 8 tasks) as one command. A
//! DBN job runs in local mode for every combination of executors, cores per
//! executor and partitions; each run's time to > 90% and to ≥ 98% test
//! accuracy (from the job's start, pre-training included) goes into a
//! Markdown table, a CSV file and an SVG plot.

use std::path::Path;

use anyhow::Context;
use deepdist_core::job::JobSpec;
use deepdist_wire::client::Client;
use deepdist_wire::transport::Credentials;

use super::dbn_grid::{THRESHOLDS, announce, grid_spec, times_to};
use super::dbn_report::{GridRun, csv, markdown, parse_csv, percent, plot, seconds};
use super::job::{Target, bench_driver, machine_cores, run_job, write};
use crate::cli::{DbnBenchArgs, DriverAddr, SecretArg};
use crate::roles::client::{credentials, read_job};

/// The job the grid runs when given none: the DBN tuned for time to 90% and
/// 98%, the experiment's figures.
const DEFAULT_JOB: &str = include_str!("../../../jobs/mnist-dbn-fast.toml");

/// Runs the grid and writes its table and plot.
pub fn run(args: DbnBenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark figures need `cargo run --release -- bench dbn`");
    }
    let (text, origin) = match &args.job {
        Some(path) => (read_job(path)?.0, path.display().to_string()),
        None => (
            DEFAULT_JOB.to_string(),
            "jobs/mnist-dbn-fast.toml (built in)".to_string(),
        ),
    };
    let base = JobSpec::from_toml(&text, &origin)?;
    anyhow::ensure!(
        !args.executors.contains(&0) && !args.cores.contains(&0) && !args.partitions.contains(&0),
        "--executors, --cores and --partitions take positive numbers"
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    if let Some(path) = &args.from_csv {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let runs = parse_csv(&text).with_context(|| format!("{}", path.display()))?;
        return report(&runs, &args.out);
    }
    let runtime = crate::roles::runtime()?;
    if let Some(driver) = &args.driver {
        // A running cluster: its executors are what they are; vary partitions.
        let credentials = credentials(&DriverAddr {
            driver: driver.clone(),
            secret: SecretArg {
                secret_file: args.secret.secret_file.clone(),
            },
            tls_ca: args.tls_ca.clone(),
        })?;
        let (executors, cores) = runtime.block_on(cluster_shape(driver, &credentials))?;
        println!("cluster at {driver}: {executors} executors × {cores} cores");
        let combos: Vec<_> = partitions_for(&args, executors)
            .into_iter()
            .map(|p| (executors, cores, p))
            .collect();
        let runs = run_grid(&runtime, &base, &combos, &args, |_| {
            Target::Remote(driver, &credentials)
        })?;
        return report(&runs, &args.out);
    }
    let combos: Vec<(usize, usize, u32)> = args
        .executors
        .iter()
        .flat_map(|&e| args.cores.iter().map(move |&c| (e, c)))
        .filter(|&(e, c)| args.simulate || args.oversubscribe || e * c <= machine_cores())
        .flat_map(|(e, c)| partitions_for(&args, e).into_iter().map(move |p| (e, c, p)))
        .collect();
    if args.simulate {
        let runs = super::dbn_sim::run_grid(&base, &combos, &args)?;
        return report(&runs, &args.out);
    }
    anyhow::ensure!(
        !combos.is_empty(),
        "no executors × cores combination fits this machine's {} cores (pass --oversubscribe to run them anyway)",
        machine_cores()
    );
    let driver = bench_driver(&args.out, &args.data);
    let runs = run_grid(&runtime, &base, &combos, &args, |(executors, cores)| Target::Local {
        config: Box::new(driver.clone()),
        executors,
        cores,
    })?;
    report(&runs, &args.out)
}

/// The partition counts to run `executors` executors with.
fn partitions_for(args: &DbnBenchArgs, executors: usize) -> Vec<u32> {
    if args.one_partition_each {
        vec![executors as u32]
    } else {
        args.partitions.clone()
    }
}

/// Executors and cores per executor of a running cluster.
async fn cluster_shape(driver: &str, credentials: &Credentials) -> anyhow::Result<(usize, usize)> {
    let status = Client::connect(driver, credentials)
        .await
        .with_context(|| format!("cannot reach the driver at {driver}"))?
        .status()
        .await?;
    anyhow::ensure!(!status.executors.is_empty(), "the driver at {driver} has no executors");
    let cores = status.executors.iter().map(|e| e.cores as usize).max().unwrap_or(1);
    Ok((status.executors.len(), cores))
}

/// Runs every (executors, cores, partitions) combination, printing a line each.
fn run_grid<'a>(
    runtime: &tokio::runtime::Runtime,
    base: &JobSpec,
    combos: &[(usize, usize, u32)],
    args: &DbnBenchArgs,
    target: impl Fn((usize, usize)) -> Target<'a>,
) -> anyhow::Result<Vec<GridRun>> {
    let mut runs = Vec::new();
    for (i, &(executors, cores, partitions)) in combos.iter().enumerate() {
        let mut spec = grid_spec(base, partitions, THRESHOLDS[1], args.max_epochs);
        spec.name = format!("{}-e{executors}c{cores}p{partitions}", base.name);
        announce(
            i,
            combos.len(),
            &format!("{executors} executors × {cores} cores, {partitions} partitions"),
        )?;
        let mut run = runtime.block_on(run_one(target((executors, cores)), &spec))?;
        (run.executors, run.cores) = (executors, cores);
        println!(
            "> 90% at {}, ≥ 98% at {}, best {}",
            seconds(run.time_to[0]),
            seconds(run.time_to[1]),
            percent(run.best_accuracy)
        );
        runs.push(run);
    }
    Ok(runs)
}

/// Writes and prints the table, the CSV and the plot.
fn report(runs: &[GridRun], out: &Path) -> anyhow::Result<()> {
    let table = markdown(runs);
    let paths = [
        out.join("dbn-grid.md"),
        out.join("dbn-grid.csv"),
        out.join("dbn-grid.svg"),
    ];
    write(&paths[0], &table)?;
    write(&paths[1], &csv(runs))?;
    plot(runs, &paths[2])?;
    println!("\n{table}");
    for path in &paths {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs one job and takes its times from the epochs it reports.
async fn run_one(target: Target<'_>, spec: &JobSpec) -> anyhow::Result<GridRun> {
    let run = run_job(target, spec).await?;
    let epochs: Vec<(Option<f64>, f64)> = run.epochs.iter().map(|l| (l.test_accuracy, l.elapsed_s)).collect();
    let (time_to, best_accuracy) = times_to(&epochs, &THRESHOLDS);
    Ok(GridRun {
        executors: 0,
        cores: 0,
        partitions: spec.data.partitions,
        time_to: [time_to[0], time_to[1]],
        best_accuracy,
        elapsed_s: run.summary.elapsed_s,
    })
}
