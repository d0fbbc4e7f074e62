//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

pub mod faults;
mod jobs;
pub mod proxy;
pub mod sandbox;

pub use jobs::*;

/// A scenario that cannot set itself up here (no root, no `ip`, ...): under
/// `CI=true` the test fails, since CI installs and allows everything the
/// suite needs; elsewhere it says why and the caller returns.
pub fn cannot_run(scenario: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{scenario}: cannot set up here ({why}), and CI=true: a scenario that cannot run fails");
    }
    eprintln!("SKIPPED {scenario}: {why}");
    println!("FAULT | {scenario} | skipped: {why} | | | | |");
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use deepdist_core::data::Mnist;
use deepdist_wire::fetch::{FetchOptions, resolve_data_dir};

/// Real MNIST, loaded once per test binary from `$DEEPDIST_DATA` (CI points
/// it at `../shared/data`) or the cache directory, fetched if missing.
pub fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(
        || match deepdist_wire::fetch::load_mnist(&FetchOptions::new(data_dir())) {
            Ok(m) => m,
            Err(e) => panic!("real MNIST is needed for this test: {e}"),
        },
    )
}

/// The data directory the tests use.
pub fn data_dir() -> PathBuf {
    resolve_data_dir(None)
}

/// Runs the `deepdist` binary with these arguments and environment.
pub fn deepdist(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deepdist"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run deepdist: {e}"),
    }
}

/// `deepdist predict MODEL --input INPUT --out OUT`, which must succeed:
/// the CSV it wrote.
pub fn predict(model: &Path, input: &Path, out: &Path) -> String {
    let run = deepdist(
        &[
            "predict",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    std::fs::read_to_string(out).unwrap()
}

use std::time::{Duration, Instant};

use deepdist_driver::{Driver, DriverConfig};
use deepdist_executor::ExecutorConfig;
use deepdist_wire::client::Client;
use deepdist_wire::proto::StatusReport;
use deepdist_wire::transport::Credentials;
use tokio::sync::watch;

/// The shared secret the launch tests give every rank (through
/// `DEEPDIST_SECRET`, which mpirun and srun pass to their tasks).
pub const CLUSTER_SECRET: &str = "6c61756e636820746573747320736861726520746869732073656372657421";

/// Longest any end-to-end test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A driver on 127.0.0.1:0 writing into its own temporary runs directory,
/// with fast heartbeats so lost executors are noticed within a second.
pub struct TestDriver {
    pub driver: Driver,
    pub runs: tempfile::TempDir,
}

impl TestDriver {
    pub async fn start() -> Self {
        Self::start_with(DriverConfig::default()).await
    }

    /// A test driver with these settings (heartbeats, directories and the
    /// listening address are the test's own).
    pub async fn start_with(base: DriverConfig) -> Self {
        let runs = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = DriverConfig {
            heartbeat: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(1),
            runs_dir: runs.path().to_path_buf(),
            data_dir: data_dir(),
            ..base
        };
        let driver = Driver::start(listener, config).unwrap();
        Self { driver, runs }
    }

    pub fn addr(&self) -> String {
        self.driver.addr().to_string()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr(), &Credentials::default()).await.unwrap()
    }

    pub fn status(&self) -> StatusReport {
        self.driver.status()
    }

    /// The connected executor with this name; fails the test if there is none.
    pub fn executor(&self, name: &str) -> deepdist_wire::proto::ExecutorInfo {
        match self.status().executors.into_iter().find(|e| e.name == name) {
            Some(e) => e,
            None => panic!("no executor named {name} is connected"),
        }
    }

    /// Waits until `cond` holds for the driver's status and returns that
    /// status, or fails the test.
    pub async fn await_status(&self, what: &str, cond: impl Fn(&StatusReport) -> bool) -> StatusReport {
        let start = Instant::now();
        loop {
            let status = self.status();
            if cond(&status) {
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Follows a job to its end; fails the test after [`PATIENCE`].
pub async fn watch(
    client: &mut Client,
    job: u64,
    on_progress: impl FnMut(deepdist_wire::proto::Progress),
) -> deepdist_wire::proto::JobSummary {
    match tokio::time::timeout(PATIENCE, client.watch(job, on_progress)).await {
        Ok(summary) => summary.unwrap(),
        Err(_) => panic!("job {job} did not end within {PATIENCE:?}"),
    }
}

/// Polls `cond` every 20 ms until it holds; fails after [`PATIENCE`].
pub async fn await_condition(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An executor running in this process, stopped when the handle drops.
pub struct TestExecutor {
    stop: watch::Sender<bool>,
}

impl Drop for TestExecutor {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn start_executor(addr: &str, name: &str) -> TestExecutor {
    start_executor_with(ExecutorConfig {
        driver: addr.to_string(),
        cores: 1,
        name: name.to_string(),
        ..ExecutorConfig::default()
    })
    .0
}

/// `n` one-core in-process executors named `e0`, `e1`, …
pub fn start_executors(addr: &str, n: usize) -> Vec<TestExecutor> {
    (0..n).map(|i| start_executor(addr, &format!("e{i}"))).collect()
}

/// An in-process executor with these settings; the join handle yields how
/// it ended (an executor refused by the driver ends with an error).
pub fn start_executor_with(
    config: ExecutorConfig,
) -> (
    TestExecutor,
    tokio::task::JoinHandle<Result<deepdist_executor::Finish, deepdist_executor::ExecutorError>>,
) {
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(deepdist_executor::run(config, stopped));
    (TestExecutor { stop }, handle)
}

/// An executor as a separate `deepdist executor` process (killed on drop).
pub fn spawn_executor_process(addr: &str, name: &str) -> tokio::process::Child {
    spawn_executor_process_in(&[], addr, name)
}

/// Like [`spawn_executor_process`], run through `prefix` (e.g. `ip netns exec ns`).
pub fn spawn_executor_process_in(prefix: &[String], addr: &str, name: &str) -> tokio::process::Child {
    wrapped_command(prefix)
        .args(["executor", "--driver", addr, "--cores", "1", "--name", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends a signal (`STOP`, `CONT`, `KILL`) to a process.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The deepdist binary as a command, run through `prefix` if not empty.
fn wrapped_command(prefix: &[String]) -> tokio::process::Command {
    match prefix.split_first() {
        None => tokio::process::Command::new(env!("CARGO_BIN_EXE_deepdist")),
        Some((program, args)) => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args).arg(env!("CARGO_BIN_EXE_deepdist"));
            cmd
        }
    }
}

/// A `deepdist driver` process, killed on drop.
pub struct DriverProcess {
    pub child: tokio::process::Child,
    pub addr: String,
}

impl DriverProcess {
    /// Starts `deepdist driver` listening on `listen`, writing into `runs`
    /// (its log goes to `runs/driver-<n>.log`), with fast heartbeats and
    /// one-second checkpoints; returns once it listens.
    pub async fn start(runs: &std::path::Path, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(&[], runs, listen, extra, env).await
    }

    /// Like [`DriverProcess::start`], run through `prefix` (e.g. `ip netns exec ns`).
    pub async fn start_in(
        prefix: &[String],
        runs: &std::path::Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        use tokio::io::AsyncBufReadExt;
        let n = std::fs::read_dir(runs).map_or(0, |d| d.count());
        let log = std::fs::File::create(runs.join(format!("driver-{n}.log"))).unwrap();
        let mut cmd = wrapped_command(prefix);
        cmd.args(["driver", "--listen", listen, "--runs-dir"])
            .arg(runs)
            .args([
                "--heartbeat-ms",
                "100",
                "--heartbeat-timeout-s",
                "1",
                "--checkpoint-interval-s",
                "1",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("deepdist driver listening on ") {
                    return rest.split_whitespace().next().unwrap().to_string();
                }
            }
            panic!("the driver exited before listening");
        })
        .await
        .expect("the driver did not start listening");
        // Keep reading so the driver never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr }
    }

    /// A client of this driver.
    pub async fn client(&self) -> Client {
        Client::connect(&self.addr, &Credentials::default()).await.unwrap()
    }

    /// Polls the driver's status until `cond` holds; fails after [`PATIENCE`].
    pub async fn await_status(&self, what: &str, cond: impl Fn(&StatusReport) -> bool) -> StatusReport {
        let mut client = self.client().await;
        let start = Instant::now();
        loop {
            let status = client.status().await.unwrap();
            if cond(&status) {
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether the one-node Slurm cluster `.ci/slurm-up` starts answers with a
/// usable node; says why not through `cannot_run`.
pub fn slurm_is_up(scenario: &str) -> bool {
    let up = std::process::Command::new("sinfo")
        .args(["-h", "-N", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|state| ["idle", "mixed", "allocated"].contains(&state.trim_end_matches('*')))
        });
    if !up {
        cannot_run(
            scenario,
            "no Slurm node is up (apt-get install slurm-wlm munge, then run .ci/slurm-up as root)",
        );
    }
    up
}

/// Writes the columnar dataset `layout` into `dir` with pyarrow
/// (`tests/support/columnar.py`), through `$DEEPDIST_PYTHON` (the
/// virtualenv `.ci/run` makes) or else `python3`. False, after
/// [`cannot_run`], when no Python here has pyarrow.
pub fn write_columnar(scenario: &str, layout: &str, dir: &Path) -> bool {
    let python = std::env::var("DEEPDIST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pyarrow = Command::new(&python)
        .args(["-c", "import pyarrow, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pyarrow {
        cannot_run(
            scenario,
            &format!("{python} has no pyarrow and numpy (set DEEPDIST_PYTHON to a Python that has them)"),
        );
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/columnar.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(layout)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "columnar.py {layout}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
