//! The fault-injection suite: real processes, real TCP, real faults. Each
//! scenario runs a job on real MNIST through a fault and asserts that it
//! completes within a point of the same job run without the fault, with
//! every partition trained in every epoch, and prints a `FAULT |` row (completed, accuracy, partitions lost,
//! updates discarded, recovery time) for the README's table:
//! `cargo test --release --test faults -- --nocapture --test-threads 1 | grep 'FAULT |'`.
//! Bad input on the wire is covered by `tests/protocol.rs` and `tests/security.rs`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use deepdist_common::job::JobState;
use deepdist_common::proto::{JobSummary, StatusReport};
use support::proxy::FaultProxy;
use support::{DriverProcess, TestDriver, assert_stages_complete, metrics, small_dbn_job, small_job, start_executor};

/// How far below the same job without a fault a scenario's accuracy may end.
/// Two points, not one: these 6,000-example asynchronous jobs vary by about a
/// point from run to run with no fault at all (the netns job's no-fault runs
/// ended between 88.9% and 90.4% here, the OOM job's between 92.4% and
/// 94.4%), and a one-point bar failed on that noise about one suite in five.
const TOLERANCE: f64 = 0.02;

/// Final accuracy of `job` with no fault: a fresh driver and two executors.
async fn no_fault_accuracy(job: &str) -> f64 {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "a");
    let _b = start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    let id = client.submit(job, "no-fault.toml").await.unwrap();
    let summary = support::watch(&mut client, id, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "the no-fault run: {summary:?}");
    summary.final_accuracy.unwrap_or(0.0)
}

/// Checks the outcome against the same job (and seed) run without the
/// fault, and prints the scenario's table row.
async fn check_and_report(
    scenario: &str,
    job: &str,
    summary: &JobSummary,
    status: &StatusReport,
    stages: &[(&str, u64)],
    recovery: Option<Duration>,
) {
    assert_eq!(summary.state, JobState::Done, "{scenario}: {summary:?}");
    let accuracy = summary.final_accuracy.unwrap_or(0.0);
    let baseline = no_fault_accuracy(job).await;
    assert!(
        accuracy >= baseline - TOLERANCE,
        "{scenario}: accuracy {accuracy} against {baseline} without the fault"
    );
    let lines = metrics(&summary.output_dir);
    assert_stages_complete(&lines, stages);
    // Each stage has its own parameter server; within one, versions never
    // fall (two epochs can end on one snapshot when the older waited for a
    // reassigned task).
    for pair in lines.windows(2).filter(|w| w[0]["stage"] == w[1]["stage"]) {
        assert!(
            pair[0]["version"].as_u64() <= pair[1]["version"].as_u64(),
            "{scenario}: versions never fall: {pair:?}"
        );
    }
    // Nothing lost, nothing applied twice: every update the driver received
    // was accepted or discarded (repeated, late) once, and every finished
    // task's executor sent exactly the updates accepted for it.
    assert!(status.updates_accepted > 0, "{scenario}: {status:?}");
    assert_eq!(
        status.updates_received,
        status.updates_accepted + status.duplicate_updates_discarded + status.late_updates_discarded,
        "{scenario}: {status:?}"
    );
    assert_eq!(status.task_push_mismatches, 0, "{scenario}: {status:?}");
    let lost: u64 = lines.iter().map(|l| l["reassigned"].as_u64().unwrap()).sum();
    println!(
        "FAULT | {scenario} | yes | {:.2}% ({:.2}% without) | {lost} | {} / {} | {} | {} | {} |",
        accuracy * 100.0,
        baseline * 100.0,
        status.updates_accepted,
        status.updates_received,
        status.duplicate_updates_discarded,
        status.late_updates_discarded,
        recovery.map_or("—".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
}

fn epochs_done(status: &StatusReport, job: u64) -> u32 {
    status.jobs.iter().find(|j| j.id == job).map_or(0, |j| j.epochs_done)
}

/// A job on a driver with an in-process executor and an executor process,
/// the process mid-task: ready for a signal.
struct ProcessScenario {
    driver: TestDriver,
    _stays: support::TestExecutor,
    process: tokio::process::Child,
    pid: u32,
    client: deepdist_common::client::Client,
    job: u64,
    spec: String,
    epochs: u32,
}

impl ProcessScenario {
    async fn start(name: &str, epochs: u32) -> Self {
        let driver = TestDriver::start().await;
        let _stays = start_executor(&driver.addr(), "stays");
        let process = support::spawn_executor_process(&driver.addr(), "process");
        let pid = process.id().unwrap();
        let mut client = driver.client().await;
        let spec = small_job(name, "async", epochs);
        let job = client.submit(&spec, "f.toml").await.unwrap();
        driver
            .await_status("the process executor to be mid-task", |s| {
                s.executors
                    .iter()
                    .any(|e| e.name == "process" && e.task.is_some() && e.tasks_done > 0)
            })
            .await;
        Self {
            driver,
            _stays,
            process,
            pid,
            client,
            job,
            spec,
            epochs,
        }
    }

    async fn await_lost(&self, what: &str) {
        self.driver.await_status(what, |s| s.executors_lost >= 1).await;
    }

    async fn finish(mut self, scenario: &str, recovery: Duration) {
        let summary = support::watch(&mut self.client, self.job, |_| {}).await;
        let _ = self.process.kill().await;
        check_and_report(
            scenario,
            &self.spec,
            &summary,
            &self.driver.status(),
            &[("train", u64::from(self.epochs))],
            Some(recovery),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_killed_with_sigkill() {
    let mut s = ProcessScenario::start("sigkill", 6).await;
    let killed = Instant::now();
    support::signal(s.pid, "KILL");
    s.await_lost("the killed executor to be declared lost").await;
    let noticed = killed.elapsed();
    let _ = s.process.wait().await;
    s.finish("executor SIGKILL", noticed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_stopped_past_the_heartbeat_then_continued() {
    let s = ProcessScenario::start("sigstop", 8).await;
    let stopped = Instant::now();
    support::signal(s.pid, "STOP");
    s.await_lost("the stopped executor to be declared lost").await;
    // It wakes holding a task the driver has given to someone else: the
    // driver has closed its connection, so nothing it sends for that task
    // is applied, and it rejoins as a new executor.
    support::signal(s.pid, "CONT");
    let (job, epochs) = (s.job, s.epochs);
    s.driver
        .await_status("the continued executor to rejoin", |st| {
            st.executors.iter().any(|e| e.name == "process") || epochs_done(st, job) == epochs
        })
        .await;
    let rejoined = stopped.elapsed();
    s.finish("executor SIGSTOP > heartbeat, SIGCONT", rejoined).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_delays_cuts_and_stalls_the_executors() {
    let driver = TestDriver::start().await;
    let proxy = FaultProxy::start(driver.addr()).await;
    proxy.set_delay(Duration::from_millis(5));
    let _a = start_executor(&proxy.addr(), "a");
    let _b = start_executor(&proxy.addr(), "b");
    let mut client = driver.client().await;
    let spec = small_job("proxy", "async", 8);
    let job = client.submit(&spec, "f.toml").await.unwrap();

    driver.await_status("epoch 1", |s| epochs_done(s, job) >= 1).await;
    let cut = Instant::now();
    proxy.cut_all();
    driver
        .await_status("both executors to reconnect after the cut", |s| {
            s.executors.len() == 2 && proxy.connections() >= 4 || epochs_done(s, job) == 8
        })
        .await;
    let reconnect = cut.elapsed();

    let lost_before = driver
        .await_status("epoch 3", |s| epochs_done(s, job) >= 3)
        .await
        .executors_lost;
    // A stall longer than the heartbeat timeout: both are declared lost.
    proxy.stall();
    driver
        .await_status("stalled executors to be declared lost", |s| {
            s.executors_lost >= lost_before + 2
        })
        .await;
    proxy.resume();
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert!(proxy.connections() >= 6, "executors reconnected after the stall");
    let status = driver.status();
    check_and_report(
        "proxy: 5 ms delay, cut, stall > heartbeat",
        &spec,
        &summary,
        &status,
        &[("train", 8)],
        Some(reconnect),
    )
    .await;
}

/// Files a checkpoint write in progress leaves in `dir`.
fn temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(deepdist_common::atomic::TEMP_PREFIX)
            })
        })
        .count()
}

/// A job to kill the driver under.
struct RecoverCase<'a> {
    scenario: &'a str,
    job: String,
    stages: &'a [(&'a str, u64)],
    /// Kill once a checkpoint exists and this holds for the job's record.
    kill_when: fn(&deepdist_common::proto::JobInfo) -> bool,
    /// Kill while a checkpoint write is held open.
    during_write: bool,
}

/// Kills the driver process mid-job, restarts it with `--recover` on the
/// same address and checks the job finishes from the checkpoint.
async fn driver_killed_then_recovered(case: RecoverCase<'_>) {
    let (scenario, during_write) = (case.scenario, case.during_write);
    let runs = tempfile::tempdir().unwrap();
    let stall = [(deepdist_driver::fault::CHECKPOINT_STALL_ENV, "1500")];
    let env: &[(&str, &str)] = if during_write { &stall } else { &[] };
    let mut driver = DriverProcess::start(runs.path(), "127.0.0.1:0", &[], env).await;
    let addr = driver.addr.clone();
    let mut a = support::spawn_executor_process(&addr, "a");
    let mut b = support::spawn_executor_process(&addr, "b");
    let job = driver.client().await.submit(&case.job, "f.toml").await.unwrap();
    let checkpoints = runs.path().join(deepdist_driver::checkpoint::DIR_NAME);
    let checkpoint = deepdist_driver::checkpoint::file_for(&checkpoints, job);
    driver
        .await_status("the kill point and a checkpoint", |s| {
            s.jobs.iter().any(|j| j.id == job && (case.kill_when)(j))
                && checkpoint.exists()
                && (!during_write || temporaries(&checkpoints) > 0)
        })
        .await;
    support::signal(driver.child.id().unwrap(), "KILL");
    let _ = driver.child.wait().await;
    let killed = Instant::now();
    if during_write {
        assert!(
            temporaries(&checkpoints) > 0,
            "killed while a checkpoint was being written"
        );
    }
    let summary_dir = std::fs::read_dir(runs.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().is_dir() && e.file_name() != deepdist_driver::checkpoint::DIR_NAME)
        .unwrap()
        .path();
    let before = metrics(summary_dir.to_str().unwrap());
    assert!(!before.is_empty());

    let driver = DriverProcess::start(runs.path(), &addr, &["--recover"], &[]).await;
    driver
        .await_status("the resumed job to run", |s| {
            s.jobs.iter().any(|j| j.id == job && j.state == JobState::Running) && !s.executors.is_empty()
        })
        .await;
    let recovery = killed.elapsed();
    let mut client = driver.client().await;
    let summary = support::watch(&mut client, job, |_| {}).await;
    let after = metrics(&summary.output_dir);
    // Epochs checkpointed before the kill are kept as they were, not redone.
    let kept = after.iter().zip(&before).take_while(|(x, y)| x == y).count();
    assert!(
        kept >= 1,
        "lines from before the crash survive: {before:?} vs {after:?}"
    );
    assert!(!checkpoint.exists(), "a finished job's checkpoint is removed");
    assert_eq!(temporaries(&checkpoints), 0, "what the killed write left is removed");
    let status = client.status().await.unwrap();
    a.kill().await.unwrap();
    b.kill().await.unwrap();
    check_and_report(scenario, &case.job, &summary, &status, case.stages, Some(recovery)).await;
}

/// The MLP job killed after two epochs.
fn mlp_case(scenario: &str, during_write: bool) -> RecoverCase<'_> {
    RecoverCase {
        scenario,
        job: small_job("recover", "async", 8),
        stages: &[("train", 8)],
        kill_when: |j| j.epochs_done >= 2,
        during_write,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_mid_job_resumes_with_recover() {
    driver_killed_then_recovered(mlp_case("driver SIGKILL, --recover", false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_during_a_checkpoint_write_resumes_with_recover() {
    driver_killed_then_recovered(mlp_case("driver SIGKILL during checkpoint write, --recover", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_between_dbn_stages_resumes_with_recover() {
    // Killed in the second RBM stage: the first RBM's epochs and layer are
    // kept, the job goes on from the second.
    driver_killed_then_recovered(RecoverCase {
        scenario: "DBN: driver SIGKILL in stage rbm2, --recover",
        job: small_dbn_job("recover-dbn", 2),
        stages: &[("rbm1", 2), ("rbm2", 2), ("finetune", 3)],
        kill_when: |j| j.stage == "rbm2",
        during_write: false,
    })
    .await;
}

#[test]
fn recover_refuses_a_missing_corrupt_or_foreign_checkpoint() {
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().to_str().unwrap();
    let recover = || {
        let out = support::deepdist(
            &["driver", "--listen", "127.0.0.1:0", "--runs-dir", dir, "--recover"],
            &[],
        );
        assert!(!out.status.success(), "--recover must fail here");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(recover().contains("nothing to recover"), "{}", recover());

    let checkpoints = runs.path().join(deepdist_driver::checkpoint::DIR_NAME);
    std::fs::create_dir_all(&checkpoints).unwrap();
    let path = deepdist_driver::checkpoint::file_for(&checkpoints, 1);
    std::fs::write(&path, b"{\"not\": \"a checkpoint\"}").unwrap();
    let err = recover();
    assert!(err.contains("is not a deepdist checkpoint"), "{err}");

    let sealed = deepdist_common::checkpoint::sealed::seal(deepdist_driver::checkpoint::FORMAT, b"job progress");
    let mut corrupt = sealed.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &corrupt).unwrap();
    let err = recover();
    assert!(err.contains("corrupt (checksum mismatch)"), "{err}");

    let newer = deepdist_common::checkpoint::sealed::seal(deepdist_driver::checkpoint::FORMAT + 1, b"job progress");
    std::fs::write(&path, &newer).unwrap();
    let err = recover();
    assert!(err.contains("this deepdist reads format"), "{err}");

    std::fs::write(&path, &sealed[..sealed.len() - 3]).unwrap();
    let err = recover();
    assert!(err.contains("truncated"), "{err}");
    assert!(path.exists(), "a refused checkpoint is left where it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_killed_by_an_out_of_memory_limit() {
    let scenario = "executor OOM-killed (cgroup memory limit)";
    // Enough for an idle executor, far too little for a 30 000-example partition (94 MB).
    let cgroup = match support::sandbox::MemoryCgroup::create(48 << 20) {
        Ok(c) => c,
        Err(why) => return support::cannot_run(scenario, &why),
    };
    let driver = TestDriver::start().await;
    let mut doomed = support::spawn_executor_process(&driver.addr(), "doomed");
    cgroup.add(doomed.id().unwrap()).unwrap();
    driver
        .await_status("the limited executor to register", |s| {
            s.executors.iter().any(|e| e.name == "doomed")
        })
        .await;
    let mut client = driver.client().await;
    let job = small_job("oom", "async", 2).replace(
        "partitions = 6\ntrain_examples = 6000",
        "partitions = 2\ntrain_examples = 60000",
    );
    let spec = job;
    let job = client.submit(&spec, "f.toml").await.unwrap();
    driver
        .await_status("the OOM-killed executor to be declared lost", |s| s.executors_lost >= 1)
        .await;
    let lost = Instant::now();
    let status = doomed.wait().await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by the kernel: {status:?}");
    assert!(cgroup.oom_kills() >= 1, "the OOM killer acted");
    // Its task goes to an executor that has the memory.
    let _roomy = start_executor(&driver.addr(), "roomy");
    driver
        .await_status("the roomy executor to take over", |s| {
            s.executors.iter().any(|e| e.tasks_done > 0)
        })
        .await;
    let recovered = lost.elapsed();
    let summary = support::watch(&mut client, job, |_| {}).await;
    let status = driver.status();
    check_and_report(scenario, &spec, &summary, &status, &[("train", 2)], Some(recovered)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_in_network_namespaces_cut_off_by_iptables_then_healed() {
    let scenario = "netns + veth, iptables drops an executor, heals";
    let lab = match support::sandbox::NetLab::create(213, 2) {
        Ok(lab) => lab,
        Err(why) => return support::cannot_run(scenario, &why),
    };
    let runs = tempfile::tempdir().unwrap();
    let in_driver_ns = support::sandbox::NetLab::exec_in(&lab.driver_ns());
    let mut driver = DriverProcess::start_in(&in_driver_ns, runs.path(), "0.0.0.0:0", &[], &[]).await;
    let port = driver.addr.rsplit(':').next().unwrap().to_string();
    driver.addr = format!("{}:{port}", lab.driver_ip_from(0));
    let mut executors = Vec::new();
    for i in 1..=2 {
        let prefix = support::sandbox::NetLab::exec_in(&lab.executor_ns(i));
        executors.push(support::spawn_executor_process_in(
            &prefix,
            &format!("{}:{port}", lab.driver_ip_from(i)),
            &format!("ns{i}"),
        ));
    }
    driver
        .await_status("both executors to register", |s| s.executors.len() == 2)
        .await;
    let epochs = 8;
    let mut client = driver.client().await;
    let spec = small_job("netns", "async", epochs);
    let job = client.submit(&spec, "f.toml").await.unwrap();
    driver.await_status("epoch 1", |s| epochs_done(s, job) >= 1).await;
    lab.cut(1).unwrap();
    let cut = Instant::now();
    driver
        .await_status("the cut-off executor to be declared lost", |s| s.executors_lost >= 1)
        .await;
    lab.heal(1).unwrap();
    let rejoined = driver
        .await_status("the healed executor to rejoin", |s| {
            s.executors.iter().any(|e| e.name == "ns1") || epochs_done(s, job) == epochs
        })
        .await;
    let recovery = cut.elapsed();
    let summary = support::watch(&mut client, job, |_| {}).await;
    let status = client.status().await.unwrap();
    for e in &mut executors {
        e.kill().await.unwrap();
    }
    assert!(
        rejoined.executors.iter().any(|e| e.name == "ns1"),
        "ns1 rejoined before the job ended"
    );
    check_and_report(
        scenario,
        &spec,
        &summary,
        &status,
        &[("train", u64::from(epochs))],
        Some(recovery),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_with_jobs_queued_loses_none_and_reuses_no_id() {
    let runs = tempfile::tempdir().unwrap();
    let mut driver = DriverProcess::start(runs.path(), "127.0.0.1:0", &[], &[]).await;
    // No executors yet: everything stays queued.
    let mut client = driver.client().await;
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        ids.push(client.submit(&small_job(name, "async", 1), "q.toml").await.unwrap());
    }
    client.cancel(ids[1]).await.unwrap();
    support::signal(driver.child.id().unwrap(), "KILL");
    let _ = driver.child.wait().await;

    let driver = DriverProcess::start(runs.path(), "127.0.0.1:0", &[], &[]).await;
    let mut client = driver.client().await;
    let status = client.status().await.unwrap();
    let back: Vec<u64> = status.jobs.iter().map(|j| j.id).collect();
    // The cancelled job is back unless the first driver had already ended it
    // (a queued job's cancel takes effect when the runner next looks): either
    // way it never runs.
    let cancelled_back = back.contains(&ids[1]);
    let expected: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| id != ids[1] || cancelled_back)
        .collect();
    assert_eq!(back, expected, "every acknowledged, unfinished job is back: {status:?}");
    let fourth = client.submit(&small_job("fourth", "async", 1), "q.toml").await.unwrap();
    assert!(fourth > ids[2], "no id is reused: {fourth} after {ids:?}");
    let mut executor = support::spawn_executor_process(&driver.addr, "e");
    let mut states = Vec::new();
    for &id in [ids[0], ids[2], fourth].iter() {
        states.push(support::watch(&mut client, id, |_| {}).await.state);
    }
    assert_eq!(states, [JobState::Done; 3]);
    if cancelled_back {
        let summary = support::watch(&mut client, ids[1], |_| {}).await;
        assert_eq!(summary.state, JobState::Cancelled, "the cancel survived the crash too");
    }
    executor.kill().await.unwrap();
}
