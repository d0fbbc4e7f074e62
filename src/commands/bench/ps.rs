//! `deepdist bench ps`: where one parameter server stops scaling. A real
//! `deepdist driver` process runs an asynchronous job of the MLP 784-500-500-10;
//! N simulated executors (tokio tasks in this process speaking the real
//! protocol over loopback TCP) each take a task and then, as fast as they
//! can, push an update of the model's full size and fetch the parameters,
//! without computing anything. Per N and per shard count S (`--shards`):
//! updates applied per second, the same per second of CPU the server's
//! threads used (the server's own efficiency, whatever else shares the
//! cores), the latency from a push to the parameters that include it, the
//! driver's peak memory, and the accounting (every push applied or counted
//! as discarded).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use deepdist_core::bench::median;
use deepdist_core::job::JobSpec;
use deepdist_wire::client::Client;
use deepdist_wire::proto::{self, FromExecutor, Handshake, Push, TaskId, Tensor, ToExecutor};
use deepdist_wire::transport::{self, BoxRead, BoxWrite, Credentials};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Barrier;

use super::job::write;
use deepdist_core::gemm::gemm_peak;

use crate::cli::PsBenchArgs;

/// The job the driver runs: the default MLP, one partition per executor,
/// more epochs than any load lasts.
fn load_job(executors: usize) -> String {
    format!(
        "name = \"ps-load\"\n[data]\npartitions = {executors}\n[model]\nhidden = [500, 500]\n\
         [train]\nmode = \"async\"\nepochs = 1000\nn_push = 1\nn_fetch = 1\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n"
    )
}

/// One executor count's figures.
struct Row {
    shards: usize,
    executors: usize,
    /// CPU seconds the server's shard threads used in the window.
    server_cpu_s: f64,
    pushes: u64,
    applied: u64,
    discarded: u64,
    updates_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mb: f64,
}

/// Runs the load for every executor count and writes `ps.md` and `ps.csv`.
pub fn run(args: PsBenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; load figures need `cargo run --release -- bench ps`");
    }
    anyhow::ensure!(
        !args.executors.is_empty() && !args.executors.contains(&0) && args.seconds > 0.0,
        "--executors and --seconds take positive numbers"
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let peak = gemm_peak(super::job::machine_cores());
    let runtime = crate::roles::runtime()?;
    anyhow::ensure!(
        !args.shards.is_empty() && !args.shards.contains(&0),
        "--shards takes positive numbers"
    );
    let mut rows = Vec::new();
    println!("{HEADER}");
    for &shards in &args.shards {
        for &n in &args.executors {
            let row = runtime.block_on(one_load(n, shards, &args))?;
            println!("{}", table_row(&row));
            rows.push(row);
        }
    }
    let pinned = args
        .driver_cpus
        .as_ref()
        .map_or(String::new(), |c| format!(", the driver pinned to CPUs {c}"));
    let mut md = format!(
        "The parameter server under load: simulated executors push updates of the MLP 784-500-500-10 \
         ({} MB each) and fetch the parameters, {} s per row, release build, loopback TCP{pinned}; this \
         machine's f32 GEMM peak {peak:.0} GFLOP/s. \"per server-CPU s\": updates applied per second of CPU \
         the shards' threads used.\n\n",
        mlp_len() * 4 / 1_000_000,
        args.seconds
    );
    md.push_str(HEADER);
    md.push('\n');
    let mut csv = String::from(
        "shards,executors,updates_per_s,server_cpu_s,updates_per_server_cpu_s,p50_ms,p99_ms,peak_rss_mb,pushes,applied,discarded\n",
    );
    for r in &rows {
        md.push_str(&table_row(r));
        md.push('\n');
        csv.push_str(&format!(
            "{},{},{:.1},{:.2},{:.1},{:.2},{:.2},{:.0},{},{},{}\n",
            r.shards,
            r.executors,
            r.updates_per_s,
            r.server_cpu_s,
            r.per_server_cpu_s(),
            r.p50_ms,
            r.p99_ms,
            r.peak_rss_mb,
            r.pushes,
            r.applied,
            r.discarded
        ));
    }
    write(&args.out.join("ps.md"), &md)?;
    write(&args.out.join("ps.csv"), &csv)?;
    Ok(())
}

const HEADER: &str = "| shards | executors | updates/s | per server-CPU s | push → params p50 | p99 | driver peak RSS | pushes | applied | discarded |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

impl Row {
    /// Updates applied per second of CPU the shards' threads used.
    fn per_server_cpu_s(&self) -> f64 {
        match self.server_cpu_s > 0.0 {
            true => self.applied as f64 / self.server_cpu_s,
            false => 0.0,
        }
    }
}

fn table_row(r: &Row) -> String {
    format!(
        "| {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.0} MB | {} | {} | {} |",
        r.shards,
        r.executors,
        r.updates_per_s,
        r.per_server_cpu_s(),
        r.p50_ms,
        r.p99_ms,
        r.peak_rss_mb,
        r.pushes,
        r.applied,
        r.discarded
    )
}

/// CPU seconds used so far by the parameter server's threads of process
/// `pid` (named `deepdist-ps-…`), from /proc (Linux; clock ticks are 1/100 s
/// there whatever the kernel's own rate).
fn server_cpu_s(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let is_server = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.starts_with("deepdist-ps-"));
        let Some(stat) = is_server
            .then(|| std::fs::read_to_string(path.join("stat")).ok())
            .flatten()
        else {
            continue;
        };
        // After the parenthesised name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        ticks += [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    ticks as f64 / 100.0
}

fn mlp_len() -> usize {
    JobSpec::from_toml(&load_job(1), "load")
        .ok()
        .and_then(|s| s.final_network(784, 10).ok())
        .map_or(0, |m| m.layout().len())
}

/// A `deepdist driver` child process and its address.
struct DriverChild {
    child: tokio::process::Child,
    addr: String,
}

async fn start_driver(runs: &Path, shards: usize, args: &PsBenchArgs) -> anyhow::Result<DriverChild> {
    let exe = std::env::current_exe()?;
    let mut cmd = match &args.driver_cpus {
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus]).arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    cmd.args([
        "driver",
        "--server-shards",
        &shards.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--task-lease-s",
        "3600",
        "--runs-dir",
    ])
    .arg(runs)
    .stdout(std::process::Stdio::piped())
    // Its operator log (the simulated executors leaving, say) is kept
    // beside its runs rather than mixed into the table.
    .stderr(std::fs::File::create(runs.join("driver.log"))?)
    .kill_on_drop(true);
    if let Some(dir) = &args.data.data_dir {
        cmd.arg("--data-dir").arg(dir);
    }
    let mut child = cmd.spawn().context("cannot start the driver")?;
    let stdout = child.stdout.take().context("the driver's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.strip_prefix("deepdist driver listening on ") {
            let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(DriverChild { child, addr });
        }
    }
    anyhow::bail!("the driver exited before listening")
}

/// The driver's peak resident memory so far, from /proc (Linux).
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn one_load(n: usize, shards: usize, args: &PsBenchArgs) -> anyhow::Result<Row> {
    let runs = args.out.join("runs").join(format!("ps-{shards}x{n}"));
    std::fs::create_dir_all(&runs)?;
    let mut driver = start_driver(&runs, shards, args).await?;
    let pid = driver.child.id().unwrap_or(0);
    let mut client = Client::connect(&driver.addr, &Credentials::default()).await?;
    let job = client.submit(&load_job(n), "ps-load").await?;
    let len = mlp_len();
    let stop = Arc::new(AtomicBool::new(false));
    // Everyone has a task before the clock starts.
    let ready = Arc::new(Barrier::new(n + 1));
    let mut sims = Vec::new();
    for i in 0..n {
        let hello = Handshake::hello(proto::Role::Executor, format!("sim-{i}"), 1);
        let dialed = transport::dial(&driver.addr, &Credentials::default(), hello, proto::DEFAULT_MAX_FRAME).await?;
        let (ready, stop) = (ready.clone(), stop.clone());
        sims.push(tokio::spawn(simulate(dialed.reader, dialed.writer, len, ready, stop)));
    }
    ready.wait().await;
    let (started, cpu_before) = (Instant::now(), server_cpu_s(pid));
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let server_cpu = server_cpu_s(pid) - cpu_before;
    let mut pushes = 0;
    let mut applied = 0;
    let mut latencies = Vec::new();
    for sim in sims {
        let (sent, version, mut lat) = sim.await??;
        pushes += sent;
        applied = applied.max(version);
        latencies.append(&mut lat);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let status = client.status().await?;
    let _ = client.cancel(job).await;
    let peak_rss_mb = driver.child.id().map_or(0.0, peak_rss_mb);
    let _ = driver.child.kill().await;
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    Ok(Row {
        shards,
        executors: n,
        server_cpu_s: server_cpu,
        pushes,
        applied,
        discarded: status.duplicate_updates_discarded + status.late_updates_discarded,
        updates_per_s: applied as f64 / elapsed,
        p50_ms: median(&mut latencies.clone()),
        p99_ms: p99,
        peak_rss_mb,
    })
}

/// Frames from the driver until `Params` (answering other traffic on the way).
async fn next_params(reader: &mut proto::MessageReader<BoxRead>) -> anyhow::Result<u64> {
    loop {
        match reader.recv().await?.context("the driver closed the connection")? {
            ToExecutor::Params { version, .. } => return Ok(version),
            ToExecutor::Heartbeat | ToExecutor::Partition { .. } | ToExecutor::Frozen { .. } => {}
            other => anyhow::bail!("unexpected {} from the driver", proto::Wire::kind(&other)),
        }
    }
}

/// One simulated executor: waits for its task, then pushes zeros of the
/// model's size and fetches, until told to stop. Returns the pushes sent,
/// the last version seen and each push's latency (ms).
async fn simulate(
    mut reader: proto::MessageReader<BoxRead>,
    mut writer: proto::MessageWriter<BoxWrite>,
    len: usize,
    ready: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, u64, Vec<f64>)> {
    let task: TaskId = loop {
        match reader.recv().await?.context("the driver closed the connection")? {
            ToExecutor::Assign(spec) => break spec.id,
            _ => continue,
        }
    };
    ready.wait().await;
    let values = Tensor::from_f32(&vec![0.0; len]);
    let (mut seq, mut version, mut latencies) = (0u64, 0u64, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let push = FromExecutor::Push(Push {
            task,
            seq,
            base_version: version,
            batches: 1,
            samples: 128,
            loss_sum: 0.5,
            compression: deepdist_core::compress::Compression::None,
            values: values.clone(),
        });
        writer.send(&push).await?;
        writer
            .send(&FromExecutor::Fetch {
                job: task.job,
                stage: task.stage,
                wait_for: 0,
                newer_than: None,
            })
            .await?;
        version = next_params(&mut reader).await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        seq += 1;
    }
    Ok((seq, version, latencies))
}
