//! Compressed pushes and fetches end to end (`train.compression`,
//! `train.fetch_compression`): a real driver and executors over TCP on
//! 127.0.0.1, real MNIST.

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
async fn compressed_pushes_train_as_well_as_full_ones() {
    let driver = TestDriver::start().await;
    let _executors = support::start_executors(&driver.addr(), 2);
    let mut client = driver.client().await;
    let mut accuracy = Vec::new();
    let mut pushed = Vec::new();
    for c in Compression::ALL {
        let id = client.submit(&job(c, 3), "compressed.toml").await.unwrap();
        let summary = support::watch(&mut client, id, |_| {}).await;
        assert_eq!(summary.state, JobState::Done, "{summary:?}");
        accuracy.push(summary.final_accuracy.unwrap());
        let lines = support::metrics(&summary.output_dir);
        let bytes = |key: &str| -> Vec<u64> { lines.iter().map(|l| l[key].as_u64().unwrap()).collect() };
        assert!(bytes("bytes_fetched").iter().all(|&b| b > 0), "{c:?}: {lines:?}");
        pushed.push(bytes("bytes_pushed"));
    }
    assert!(accuracy[0] > 0.85, "{accuracy:?}");
    for a in &accuracy[1..] {
        assert!((a - accuracy[0]).abs() < 0.02, "{accuracy:?}");
    }
    // Every run pushes as often: 16 bits halve the bytes, and top-k's third
    // epoch (1.6% of the values, about five bytes each) sends under 1/20.
    let total = |c: usize| pushed[c].iter().sum::<u64>();
    assert_eq!(total(1) * 2, total(0), "{pushed:?}");
    assert_eq!(total(2) * 2, total(0), "{pushed:?}");
    assert!(pushed[3][2] * 20 < pushed[0][2], "{pushed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_k_with_momentum_correction_and_half_precision_fetches_train_in_sync() {
    let driver = TestDriver::start().await;
    let _executors = support::start_executors(&driver.addr(), 2);
    let mut client = driver.client().await;
    let train = "mode = \"sync\"\nepochs = 3\ncompression = \"topk\"\nfetch_compression = \"fp16\"";
    let job = support::small_mlp_job("topk-sync", train, "momentum = 0.9");
    let id = client.submit(&job, "topk-sync.toml").await.unwrap();
    let summary = support::watch(&mut client, id, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    assert!(summary.final_accuracy.unwrap() > 0.85, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combinations_that_cannot_train_are_refused_at_submit_by_name() {
    let driver = TestDriver::start().await;
    let mut client = driver.client().await;
    for (train, kind, named) in [
        ("mode = \"average\"\ncompression = \"topk\"", "sgd", "average"),
        ("compression = \"topk\"", "dcasgd", "dcasgd"),
        ("fetch_compression = \"topk\"", "sgd", "fetched whole"),
        ("topk_fraction = 0.1", "sgd", "topk"),
    ] {
        let job = support::small_mlp_job("refused", train, "").replace("\"sgd\"", &format!("\"{kind}\""));
        let e = client.submit(&job, "refused.toml").await.unwrap_err().to_string();
        assert!(e.contains("train.") && e.contains(named), "{train}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_bit_pushes_and_fetches_carry_two_bytes_a_value() {
    let driver = TestDriver::start_with(deepdist_driver::DriverConfig {
        server_shards: 2,
        ..Default::default()
    })
    .await;
    let _executors = support::start_executors(&driver.addr(), 2);
    let mut client = driver.client().await;
    // Long enough to be watched running; cancelled once seen.
    let job = job(Compression::Fp16, 500).replace("[optimizer]", "fetch_compression = \"bf16\"\n[optimizer]");
    let id = client.submit(&job, "fp16.toml").await.unwrap();
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
        assert_eq!(
            shard.bytes_fetched % per_update,
            0,
            "fetched at two bytes a value: {shard:?}"
        );
        assert!(shard.bytes_fetched > 0, "{shard:?}");
    }
    client.cancel(id).await.unwrap();
}
