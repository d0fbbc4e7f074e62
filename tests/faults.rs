//! The fault-injection suite: real processes, real TCP, real faults. Each
//! scenario runs a job on real MNIST through a fault and asserts that it
//! completes within a point of the same job run without the fault, with
//! every partition trained in every epoch, and prints a `FAULT |` row (completed, accuracy, partitions lost,
//! updates discarded, recovery time) for the README's table:
//! `cargo test --release --test faults -- --nocapture --test-threads 1 | grep 'FAULT |'`.
//! A killed driver and its recovery are in `tests/recovery.rs`; bad input on
//! the wire in `tests/protocol.rs` and `tests/security.rs`.

mod support;

use std::time::{Duration, Instant};

use support::faults::{check_and_report, epochs_done};
use support::proxy::FaultProxy;
use support::{DriverProcess, TestDriver, small_job, start_executor};

/// A job on a driver with an in-process executor and an executor process,
/// the process mid-task: ready for a signal.
struct ProcessScenario {
    driver: TestDriver,
    _stays: support::TestExecutor,
    process: tokio::process::Child,
    pid: u32,
    client: deepdist_wire::client::Client,
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
    // Inside namespaces this test made: plaintext without a secret, accepted by name.
    let mut driver =
        DriverProcess::start_in(&in_driver_ns, runs.path(), "0.0.0.0:0", &["--insecure-plaintext"], &[]).await;
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
