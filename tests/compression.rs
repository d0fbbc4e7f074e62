//! Compressed pushes end to end (`train.compression`): a real driver and
//! executors over TCP on 127.0.0.1, real MNIST.

mod support;

use deepdist_core::compress::Compression;
use deepdist_core::job::JobState;
use support::TestDriver;

/// A small asynchronous MLP job pushing values as `compression` says.
fn job(compression: Compression, epochs: u32) -> String {
    let c = compression.name();
    support::small_mlp_job(
        &format!("compressed-{c}"),
        &format!("mode = \"async\"\nepochs = {epochs}\nn_push = 2\ncompression = \"{c}\""),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_bit_pushes_train_as_well_as_full_ones() {
    let driver = TestDriver::start().await;
    let _executors = support::start_executors(&driver.addr(), 2);
    let mut client = driver.client().await;
    let mut accuracy = Vec::new();
    for c in Compression::ALL {
        let id = client.submit(&job(c, 3), "compressed.toml").await.unwrap();
        let summary = support::watch(&mut client, id, |_| {}).await;
        assert_eq!(summary.state, JobState::Done, "{summary:?}");
        accuracy.push(summary.final_accuracy.unwrap());
    }
    assert!(accuracy[0] > 0.85, "{accuracy:?}");
    for a in &accuracy[1..] {
        assert!((a - accuracy[0]).abs() < 0.02, "{accuracy:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixteen_bit_push_carries_two_bytes_a_value() {
    let driver = TestDriver::start_with(deepdist_driver::DriverConfig {
        server_shards: 2,
        ..Default::default()
    })
    .await;
    let _executors = support::start_executors(&driver.addr(), 2);
    let mut client = driver.client().await;
    // Long enough to be watched running; cancelled once seen.
    let id = client.submit(&job(Compression::Fp16, 500), "fp16.toml").await.unwrap();
    let status = driver
        .await_status("both shards applying updates", |s| {
            s.server_shards.len() == 2 && s.server_shards.iter().all(|h| h.updates >= 200)
        })
        .await;
    for shard in &status.server_shards {
        // Read while the shard runs: its byte count may include a few
        // updates more than its update count (at four bytes a value it
        // would be twice as many).
        let per_update = shard.values * 2;
        assert_eq!(shard.bytes_pushed % per_update, 0, "{shard:?}");
        let pushed = shard.bytes_pushed / per_update;
        assert!((shard.updates..shard.updates + 50).contains(&pushed), "{shard:?}");
    }
    client.cancel(id).await.unwrap();
}
