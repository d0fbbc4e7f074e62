//! Every training mode end to end: a real driver and executors over TCP on
//! 127.0.0.1, real MNIST.

mod support;

use deepdist_core::job::JobState;
use deepdist_core::mode::Mode;
use deepdist_executor::ExecutorConfig;
use deepdist_wire::proto::{JobSummary, Progress};
use support::{TestDriver, TestExecutor, assert_every_partition_every_epoch, metrics, start_executor_with};

/// A small MLP job on a slice of real MNIST in `mode`, with `extra` lines
/// for its `[train]` table.
fn mode_job(name: &str, mode: &str, epochs: u32, extra: &str) -> String {
    format!(
        r#"name = "{name}"
[data]
partitions = 6
train_examples = 12000
test_examples = 2000
[model]
hidden = [128]
[train]
mode = "{mode}"
epochs = {epochs}
batch_size = 128
{extra}
[optimizer]
kind = "sgd"
lr = 0.02
momentum = 0.9
nesterov = true
"#
    )
}

fn executors(driver: &TestDriver, n: usize, cores: usize) -> Vec<TestExecutor> {
    (0..n)
        .map(|i| {
            start_executor_with(ExecutorConfig {
                driver: driver.addr(),
                cores,
                name: format!("e{i}"),
                ..ExecutorConfig::default()
            })
            .0
        })
        .collect()
}

/// Runs `job` on a fresh driver with `n` executors of `cores` cores; the
/// driver is returned too, since its runs directory holds the outputs.
async fn run(job: &str, n: usize, cores: usize) -> (TestDriver, JobSummary) {
    let driver = TestDriver::start().await;
    let _executors = executors(&driver, n, cores);
    driver
        .await_status("the executors to register", |s| s.executors.len() == n)
        .await;
    let mut client = driver.client().await;
    let id = client.submit(job, "modes.toml").await.unwrap();
    let summary = support::watch(&mut client, id, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    (driver, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_asynchronous_executors_train_as_well_as_one() {
    // With every executor keeping the job's minibatch and windows, six
    // executors' stale updates diverged (66% against 90% for one).
    let job = mode_job("six", "async", 3, "n_push = 4\nn_fetch = 4");
    let (_d1, one) = run(&job, 1, 1).await;
    let (_d6, six) = run(&job, 6, 1).await;
    let (a1, a6) = (one.final_accuracy.unwrap(), six.final_accuracy.unwrap());
    assert!(a6 >= a1 - 0.015, "six executors {a6}, one {a1}");
    assert!(six.warning.is_none(), "{:?}", six.warning);
    let lines = metrics(&six.output_dir);
    assert_every_partition_every_epoch(&lines, 3);
    assert!(lines.iter().all(|l| l["executors"] == 6), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_trains_a_small_mlp() {
    for mode in Mode::ALL {
        let (_driver, summary) = run(&mode_job(mode.name(), mode.name(), 3, ""), 2, 1).await;
        let accuracy = summary.final_accuracy.unwrap();
        assert!(accuracy > 0.85, "{mode}: {accuracy}");
        assert_every_partition_every_epoch(&metrics(&summary.output_dir), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hogwild_executors_train_on_two_cores() {
    let job = mode_job("hogwild", "async", 3, "n_push = 4\nn_fetch = 4\nhogwild = true");
    let (_driver, summary) = run(&job, 1, 2).await;
    let accuracy = summary.final_accuracy.unwrap();
    assert!(accuracy > 0.85, "{accuracy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssp_holds_a_fast_executor_within_the_bound_of_a_slow_one() {
    let driver = TestDriver::start().await;
    let _fast = executors(&driver, 1, 1);
    let slow = support::spawn_executor_process(&driver.addr(), "slow");
    let pid = slow.id().unwrap();
    driver.await_status("both executors", |s| s.executors.len() == 2).await;
    let mut client = driver.client().await;
    let job = mode_job("ssp", "ssp", 4, "n_push = 1\nstaleness_bound = 2");
    let id = client.submit(&job, "ssp.toml").await.unwrap();
    // Slow one executor down: frozen for 150 ms out of every 250 ms, well
    // inside the heartbeat timeout, until the job ends.
    let slowing = tokio::spawn(async move {
        loop {
            support::signal(pid, "STOP");
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            support::signal(pid, "CONT");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let summary = support::watch(&mut client, id, |_| {}).await;
    slowing.abort();
    support::signal(pid, "CONT");
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    assert_eq!(driver.status().executors_lost, 0, "the slowed executor was never lost");
    let lines = metrics(&summary.output_dir);
    assert_every_partition_every_epoch(&lines, 4);
    let spread = lines.last().unwrap()["max_clock_spread"].as_u64().unwrap();
    assert_eq!(spread, 2, "the fast executor reached the bound and never passed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_blows_up_is_reported_as_diverging() {
    let job = mode_job("blow-up", "async", 3, "").replace("lr = 0.02", "lr = 1e6");
    let driver = TestDriver::start().await;
    let _executors = executors(&driver, 2, 1);
    let mut client = driver.client().await;
    let id = client.submit(&job, "blow-up.toml").await.unwrap();
    let mut flagged = 0;
    let summary = support::watch(&mut client, id, |p| {
        if let Progress::Epoch(m) = p {
            flagged += usize::from(m.diverging.is_some());
        }
    })
    .await;
    assert!(flagged > 0, "the progress stream says so");
    let warning = summary.warning.unwrap_or_default();
    assert!(warning.contains("training loss"), "{warning}");
    let status = driver.status();
    assert!(status.jobs[0].warning.is_some(), "status says so: {status:?}");
    assert!(metrics(&summary.output_dir).iter().any(|l| l["diverging"].is_string()));
}
