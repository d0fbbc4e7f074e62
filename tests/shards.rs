//! A parameter server cut into shards, end to end: a real driver with
//! `server_shards` threads and executors over TCP on 127.0.0.1, real MNIST.
//! (A checkpoint taken with some shards and resumed with others is in
//! `recovery.rs`.)

mod support;

use deepdist_core::job::JobState;
use deepdist_core::mode::Mode;
use deepdist_driver::DriverConfig;
use deepdist_wire::proto::JobSummary;
use support::{TestDriver, assert_every_partition_every_epoch, metrics};

/// The small MLP job in `mode`, with momentum.
fn job(mode: &str) -> String {
    support::small_mlp_job(
        &format!("shards-{mode}"),
        &format!("mode = \"{mode}\"\nepochs = 2"),
        "momentum = 0.9",
    )
}

/// Runs `job` on a driver with `shards` server threads and two executors;
/// its summary and `metrics.jsonl` (read before the driver's directory goes).
async fn run(job: &str, shards: usize) -> (JobSummary, Vec<serde_json::Value>) {
    let driver = TestDriver::start_with(DriverConfig {
        server_shards: shards,
        ..DriverConfig::default()
    })
    .await;
    let _executors = support::start_executors(&driver.addr(), 2);
    driver
        .await_status("the executors to register", |s| s.executors.len() == 2)
        .await;
    let mut client = driver.client().await;
    let id = client.submit(job, "shards.toml").await.unwrap();
    let summary = support::watch(&mut client, id, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    let lines = metrics(&summary.output_dir);
    assert_every_partition_every_epoch(&lines, 2);
    (summary, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_trains_on_three_server_shards() {
    for mode in Mode::ALL {
        let (summary, _) = run(&job(mode.name()), 3).await;
        let accuracy = summary.final_accuracy.unwrap();
        assert!(accuracy > 0.85, "{mode}: {accuracy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_on_three_shards_repeats_one_shard_bit_for_bit() {
    // Sync deals the same examples into the same rounds in every run, and
    // every optimizer works value by value: cutting the server changes
    // where the arithmetic runs, not what it computes.
    let (_, one) = run(&job("sync"), 1).await;
    let (_, three) = run(&job("sync"), 3).await;
    let figures = |lines: &[serde_json::Value]| -> Vec<(String, String)> {
        lines
            .iter()
            .map(|l| (l["test_accuracy"].to_string(), l["test_loss"].to_string()))
            .collect()
    };
    assert_eq!(figures(&one), figures(&three));
    assert!(figures(&one).iter().all(|(a, _)| a != "null"), "{one:?}");
}
