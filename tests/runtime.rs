//! The distributed runtime end to end: a real driver and real executors over
//! TCP on 127.0.0.1, real MNIST.

mod support;

use deepdist_core::checkpoint::load_model;
use deepdist_core::job::{JobSpec, JobState};
use deepdist_wire::client::ClientError;
use deepdist_wire::proto::Progress;
use support::{TestDriver, assert_every_partition_every_epoch, metrics, small_job, start_executor};

async fn run_to_end(driver: &TestDriver, job_text: &str) -> deepdist_wire::proto::JobSummary {
    let mut client = driver.client().await;
    let job = client.submit(job_text, "test.toml").await.unwrap();
    let mut events = 0;
    let summary = support::watch(&mut client, job, |_| events += 1).await;
    assert!(events > 0, "progress was streamed");
    summary
}

async fn completes_in_mode(mode: &str) {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "a");
    let _b = start_executor(&driver.addr(), "b");
    let text = small_job(&format!("e2e-{mode}"), mode, 3);
    let summary = run_to_end(&driver, &text).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    let accuracy = summary.final_accuracy.unwrap();
    assert!(accuracy > 0.8, "{mode}: accuracy {accuracy}");
    assert!(summary.time_to_target.is_some());
    let lines = metrics(&summary.output_dir);
    assert_every_partition_every_epoch(&lines, 3);
    for key in ["epoch", "elapsed_s", "train_loss", "test_accuracy", "samples_per_s"] {
        assert!(lines[0].get(key).is_some(), "metrics has {key}");
    }
    // Both executors took part.
    let status = driver.status();
    assert_eq!(status.executors.len(), 2);
    assert!(status.executors.iter().all(|e| e.tasks_done > 0), "{status:?}");
    // The model is saved with the job in its metadata, and evaluates as reported.
    let spec = JobSpec::from_toml(&text, "t").unwrap();
    let network = spec.final_network(784, 10).unwrap();
    let path = std::path::Path::new(&summary.output_dir).join("model.safetensors");
    let (params, meta) = load_model(&path, network.layout()).unwrap();
    assert_eq!(JobSpec::from_toml(&meta["deepdist.job"], "meta").unwrap(), spec);
    let test = support::mnist().test.head(2000);
    let Ok(deepdist_core::model::StageEval::Supervised(eval)) = network.evaluate(&params, &test) else {
        panic!("a supervised model evaluates as one")
    };
    assert!((f64::from(eval.accuracy) - accuracy).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_in_async_mode() {
    completes_in_mode("async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_in_sync_mode() {
    completes_in_mode("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_submitted_back_to_back_both_run() {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "a");
    let mut client = driver.client().await;
    let first = client.submit(&small_job("first", "async", 1), "1.toml").await.unwrap();
    let second = client.submit(&small_job("second", "sync", 1), "2.toml").await.unwrap();
    assert_eq!(second, first + 1);
    let states: Vec<JobState> = driver.status().jobs.iter().map(|j| j.state).collect();
    assert!(states[1] == JobState::Queued, "the second job waits: {states:?}");
    let s1 = support::watch(&mut client, first, |_| {}).await;
    let s2 = support::watch(&mut driver.client().await, second, |_| {}).await;
    assert_eq!((s1.state, s2.state), (JobState::Done, JobState::Done));
    assert_ne!(s1.output_dir, s2.output_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_joining_mid_job_gets_partitions() {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "early");
    let mut client = driver.client().await;
    let job = client.submit(&small_job("join", "async", 6), "j.toml").await.unwrap();
    driver
        .await_status("the first epoch", |s| s.jobs[0].epochs_done >= 1)
        .await;
    let _b = start_executor(&driver.addr(), "late");
    driver
        .await_status("the late executor to finish a task", |s| {
            s.executors.iter().any(|e| e.name == "late" && e.tasks_done > 0) || s.jobs[0].state.is_final()
        })
        .await;
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done);
    let late = driver.executor("late");
    assert!(late.tasks_done > 0, "the executor that joined got partitions");
    assert_every_partition_every_epoch(&metrics(&summary.output_dir), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_disappears_has_its_partitions_reassigned() {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "stays");
    let mut doomed = support::spawn_executor_process(&driver.addr(), "doomed");
    let pid = doomed.id().unwrap();
    let mut client = driver.client().await;
    let job = client.submit(&small_job("lose", "async", 6), "l.toml").await.unwrap();
    // Freeze the process while the driver says it holds a task: it can
    // neither finish it nor answer heartbeats, so the driver must declare it
    // lost and hand the task to the other executor.
    driver
        .await_status("the process executor to hold a task", |s| {
            s.executors
                .iter()
                .any(|e| e.name == "doomed" && e.task.is_some() && e.tasks_done > 0)
        })
        .await;
    support::signal(pid, "STOP");
    driver
        .await_status("the frozen executor to be declared lost", |s| s.executors_lost >= 1)
        .await;
    doomed.kill().await.unwrap();
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    assert!(summary.final_accuracy.unwrap() > 0.8);
    let lines = metrics(&summary.output_dir);
    assert_every_partition_every_epoch(&lines, 6);
    let reassigned: u64 = lines.iter().map(|l| l["reassigned"].as_u64().unwrap()).sum();
    assert!(reassigned >= 1, "the lost executor's task was reassigned: {lines:?}");
}

/// An idle executor that shuts down (as every executor does when told the
/// run is over) left; it was not lost: the count stays for faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_executor_that_shuts_down_is_not_counted_lost() {
    let driver = TestDriver::start().await;
    let (leaving, handle) = support::start_executor_with(deepdist_executor::ExecutorConfig {
        driver: driver.addr(),
        cores: 1,
        name: "leaving".into(),
        ..deepdist_executor::ExecutorConfig::default()
    });
    driver
        .await_status("the executor to register", |s| s.executors.len() == 1)
        .await;
    drop(leaving);
    handle.await.unwrap().unwrap();
    let status = driver
        .await_status("the executor to be gone", |s| s.executors.is_empty())
        .await;
    assert_eq!(status.executors_lost, 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_job_is_refused_naming_the_key() {
    let driver = TestDriver::start().await;
    let mut client = driver.client().await;
    let bad = small_job("bad", "async", 1).replace("batch_size = 32", "batch_size = 0");
    match client.submit(&bad, "bad.toml").await {
        Err(ClientError::Refused(msg)) => {
            assert!(msg.contains("bad.toml"), "{msg}");
            assert!(msg.contains("`train.batch_size` = 0"), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let unknown = small_job("bad", "async", 1).replace("epochs =", "epoch =");
    match client.submit(&unknown, "typo.toml").await {
        Err(ClientError::Refused(msg)) => assert!(msg.contains("unknown field `epoch`"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(driver.status().jobs.is_empty(), "nothing was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_and_keeps_its_model() {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "a");
    let mut client = driver.client().await;
    let job = client
        .submit(&small_job("cancel-me", "async", 1000), "c.toml")
        .await
        .unwrap();
    let mut watcher = driver.client().await;
    let watch = tokio::spawn(async move {
        let mut epochs = 0;
        let summary = support::watch(&mut watcher, job, |p| {
            if matches!(p, Progress::Epoch(_)) {
                epochs += 1
            }
        })
        .await;
        (summary, epochs)
    });
    driver.await_status("an epoch", |s| s.jobs[0].epochs_done >= 1).await;
    client.cancel(job).await.unwrap();
    let (summary, epochs) = watch.await.unwrap();
    assert_eq!(summary.state, JobState::Cancelled);
    assert!((1..1000).contains(&epochs));
    assert!(
        std::path::Path::new(&summary.output_dir)
            .join("model.safetensors")
            .exists()
    );
    assert!(
        client.cancel(job).await.is_err(),
        "a finished job cannot be cancelled again"
    );
}
