use super::*;
use deepdist_core::compress::Compression;
use deepdist_core::mode::{Mode, ModeKeys};
use deepdist_core::optim::OptimizerConfig;
use std::ops::Range;

fn config(lr: f32) -> OptimizerConfig {
    OptimizerConfig {
        lr,
        ..OptimizerConfig::default()
    }
}

fn start(params: Vec<f32>, lr: f32, mode: Mode) -> ParamServer {
    start_with(params, config(lr), mode, 0)
}

fn start_with(params: Vec<f32>, optimizer: OptimizerConfig, mode: Mode, delay: u32) -> ParamServer {
    let len = params.len();
    start_sharded(params, optimizer, mode, delay, &whole(len))
}

/// Values pushed as they are.
fn f32s(values: &[f32]) -> (Compression, Tensor) {
    (Compression::None, Tensor::from_f32(values))
}

/// One shard's range over `len` values.
fn whole(len: usize) -> Vec<Range<usize>> {
    std::iter::once(0..len).collect()
}

/// A server whose shards hold `ranges` of `params`.
fn start_sharded(
    params: Vec<f32>,
    optimizer: OptimizerConfig,
    mode: Mode,
    delay: u32,
    ranges: &[Range<usize>],
) -> ParamServer {
    start_fetching(params, optimizer, mode, delay, ranges, Compression::None)
}

/// [`start_sharded`], sending parameters encoded as `fetch` says.
fn start_fetching(
    params: Vec<f32>,
    optimizer: OptimizerConfig,
    mode: Mode,
    delay: u32,
    ranges: &[Range<usize>],
    fetch: Compression,
) -> ParamServer {
    let plan = ServerPlan {
        job: 1,
        stage_index: 0,
        delay,
        staleness: Default::default(),
        mirrors_local: mode.server_mirrors_local(&optimizer, fetch == Compression::None),
        fetch,
    };
    let parts = ranges
        .iter()
        .map(|range| {
            let built = mode
                .server_optimizer(&optimizer, Compression::None)
                .build(range.len())
                .unwrap();
            ShardPart {
                range: range.clone(),
                model: ServerModel::new(params[range.clone()].to_vec(), built, 0, 0),
                rule: mode.server_rule(&ModeKeys::default()),
            }
        })
        .collect();
    ParamServer::start(plan, parts)
}

fn params_of(frame: Bytes) -> (u64, Vec<f32>) {
    match proto::decode(frame).unwrap() {
        ToExecutor::Params {
            version,
            values,
            compression,
            ..
        } => (version, compression.widen(values.0).unwrap().to_vec().unwrap()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sparse_pushes_reach_every_shard_at_its_own_indices() {
    let sparse = deepdist_core::compress::Sparse {
        len: 10,
        indices: vec![1, 4, 8, 9],
        values: vec![1.0, 2.0, 3.0, 4.0],
    };
    let topk = (Compression::Topk, Tensor(sparse.encode()));
    let mut seen = Vec::new();
    for ranges in [whole(10), vec![0..3, 3..8, 8..10]] {
        let ps = start_sharded(vec![0.0; 10], config(1.0), Mode::Async, 0, &ranges);
        ps.push(1, 0, 1, 1, topk.clone()).await;
        let short = deepdist_core::compress::Sparse {
            len: 9,
            ..sparse.clone()
        };
        ps.push(1, 1, 1, 1, (Compression::Topk, Tensor(short.encode()))).await;
        let snap = ps.snapshot().await.unwrap();
        assert_eq!(snap.rejected, 1, "{ranges:?}: a vector of another length is refused");
        seen.push(snap.params);
    }
    assert_eq!(*seen[0], [0.0, -1.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, -3.0, -4.0]);
    assert_eq!(seen[0], seen[1]);
}

#[tokio::test]
async fn fetches_travel_encoded_as_the_plan_says() {
    let exact = [1.0f32 / 3.0, 1000.1, -2.0];
    for ranges in [whole(3), vec![0..1, 1..3]] {
        let ps = start_fetching(exact.to_vec(), config(1.0), Mode::Async, 0, &ranges, Compression::Fp16);
        let frame = ps.fetch(1, 0, None).await.unwrap();
        assert!(frame.len() < 3 * 4 + 24, "{} bytes", frame.len());
        let (_, got) = params_of(frame);
        assert_eq!(got, [0.33325195, 1000.0, -2.0], "{ranges:?}");
        assert_eq!(*ps.snapshot().await.unwrap().params, exact, "the server keeps f32");
    }
}

#[tokio::test]
async fn async_pushes_are_single_steps_with_staleness() {
    let ps = start(vec![1.0, 1.0], 0.5, Mode::Async);
    ps.push(1, 0, 1, 1, f32s(&[1.0, 0.0])).await;
    ps.push(2, 0, 1, 1, f32s(&[0.0, 2.0])).await;
    let (version, values) = params_of(ps.fetch(1, 2, None).await.unwrap());
    assert_eq!(version, 2);
    assert_eq!(values, vec![0.5, 0.0]);
    let snap = ps.snapshot().await.unwrap();
    // The second push was computed from version 0 when 1 was current.
    assert_eq!((snap.version, snap.staleness_sum), (2, 1));
    ps.push(1, 0, 1, 1, f32s(&[1.0])).await;
    assert_eq!(ps.snapshot().await.unwrap().rejected, 1);
}

#[tokio::test]
async fn a_fetch_from_the_current_version_is_answered_unchanged() {
    let ps = start(vec![1.0], 0.5, Mode::Async);
    ps.push(1, 0, 1, 1, f32s(&[1.0])).await;
    let unchanged = proto::decode(ps.fetch(1, 0, Some(1)).await.unwrap()).unwrap();
    assert!(
        matches!(unchanged, ToExecutor::Unchanged { version: 1, .. }),
        "{unchanged:?}"
    );
    // Executor 1 holding version 0 already has its own update: unchanged, at 1.
    let own = proto::decode(ps.fetch(1, 0, Some(0)).await.unwrap()).unwrap();
    assert!(matches!(own, ToExecutor::Unchanged { version: 1, .. }), "{own:?}");
    // Anyone else, or a fetch naming no version, gets the values.
    assert_eq!(params_of(ps.fetch(2, 0, Some(0)).await.unwrap()), (1, vec![0.5]));
    assert_eq!(params_of(ps.fetch(1, 0, None).await.unwrap()), (1, vec![0.5]));
    ps.push(2, 1, 1, 1, f32s(&[1.0])).await;
    assert_eq!(params_of(ps.fetch(1, 0, Some(1)).await.unwrap()), (2, vec![0.0]));
}

#[tokio::test]
async fn own_updates_are_sent_back_when_the_server_steps_differently() {
    // AdaGrad at the server: its step is not the executor's local one.
    let adagrad = OptimizerConfig {
        kind: deepdist_core::optim::OptimizerKind::Adagrad,
        lr: 0.5,
        ..OptimizerConfig::default()
    };
    let ps = start_with(vec![1.0], adagrad, Mode::Async, 0);
    ps.push(1, 0, 1, 1, f32s(&[1.0])).await;
    let (version, _) = params_of(ps.fetch(1, 0, Some(0)).await.unwrap());
    assert_eq!(version, 1);
}

#[tokio::test]
async fn sync_averages_all_members_then_steps_once() {
    let ps = start(vec![0.0, 0.0], 1.0, Mode::Sync);
    ps.set_members([1, 2].into());
    let waiter = {
        let ps = ps.clone();
        tokio::spawn(async move { ps.fetch(1, 1, None).await })
    };
    ps.push(1, 0, 1, 1, f32s(&[2.0, 0.0])).await;
    assert_eq!(ps.snapshot().await.unwrap().version, 0, "waits for member 2");
    ps.push(2, 0, 1, 1, f32s(&[0.0, 4.0])).await;
    let (version, values) = params_of(waiter.await.unwrap().unwrap());
    assert_eq!((version, values), (1, vec![-1.0, -2.0]));
    // A member leaving completes a round it was holding up.
    ps.push(1, 1, 1, 1, f32s(&[2.0, 2.0])).await;
    ps.set_members([1].into());
    let (version, values) = params_of(ps.fetch(1, 2, None).await.unwrap());
    assert_eq!((version, values), (2, vec![-3.0, -4.0]));
}

#[tokio::test]
async fn a_snapshot_waits_for_its_version_or_the_stages_end() {
    let ps = start(vec![0.0], 1.0, Mode::Sync);
    ps.set_members([1, 2].into());
    let at_one = ps.snapshot_when(false, 1);
    let never = ps.snapshot_when(false, 5);
    ps.push(1, 0, 1, 1, f32s(&[2.0])).await;
    ps.push(2, 0, 1, 1, f32s(&[4.0])).await;
    // Taken at the step that reached version 1, before the next round's.
    ps.push(1, 1, 1, 1, f32s(&[8.0])).await;
    ps.push(2, 1, 1, 1, f32s(&[8.0])).await;
    let snap = at_one.await.unwrap();
    assert_eq!((snap.version, snap.params[0]), (1, -3.0));
    let end = ps.finish().await.unwrap();
    assert_eq!(end.version, 2);
    assert_eq!(never.await.unwrap().version, 2, "answered when the stage ends");
}

#[tokio::test]
async fn delayed_updates_are_applied_late_and_flushed_at_the_end() {
    let ps = start_with(vec![0.0], config(1.0), Mode::Async, 2);
    for _ in 0..3 {
        ps.push(1, 0, 1, 1, f32s(&[1.0])).await;
    }
    let snap = ps.snapshot().await.unwrap();
    assert_eq!((snap.version, snap.params[0]), (1, -1.0), "two updates still wait");
    let end = ps.finish().await.unwrap();
    assert_eq!((end.version, end.params[0]), (3, -3.0));
    // Each was computed from version 0: staleness 0, 1, 2.
    assert_eq!(end.staleness_sum, 3);
}

#[tokio::test]
async fn an_averaging_stage_shows_its_average_but_checkpoints_its_parameters() {
    let averaged = OptimizerConfig {
        average: Some(0.5),
        ..config(1.0)
    };
    let ps = start_with(vec![0.0], averaged, Mode::Async, 0);
    // Steps to −1 (the average copies it), then to −3 (average: decay 1/11).
    ps.push(1, 0, 1, 1, f32s(&[1.0])).await;
    ps.push(1, 1, 1, 1, f32s(&[2.0])).await;
    let (_, fetched) = params_of(ps.fetch(1, 2, None).await.unwrap());
    assert_eq!(fetched, vec![-3.0], "executors train the parameters themselves");
    let checkpoint = ps.snapshot_when(true, 0).await.unwrap();
    assert_eq!(*checkpoint.params, vec![-3.0]);
    let average = ps.snapshot().await.unwrap().params[0];
    let expected = (-1.0 - 3.0 * 10.0) / 11.0;
    assert!(
        (average - expected).abs() < 1e-6,
        "evaluated: the average {average}, not −3"
    );
    let state = checkpoint.optimizer.unwrap();
    assert_eq!(
        state.buffers.last().unwrap(),
        &vec![average],
        "the checkpoint keeps the average"
    );
}

/// The frames and snapshots a fixed run of pushes and fetches by two
/// executors produces on a server cut into `ranges`.
async fn scripted(mode: Mode, optimizer: OptimizerConfig, ranges: &[Range<usize>]) -> (Vec<Bytes>, Snapshot) {
    let params: Vec<f32> = (0..6).map(|i| i as f32 * 0.25).collect();
    let ps = start_sharded(params, optimizer, mode, 0, ranges);
    ps.set_members([1, 2].into());
    let mut frames = Vec::new();
    for step in 0..4u64 {
        let fetches: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|e| {
                let ps = ps.clone();
                tokio::spawn(async move { ps.fetch(e, step, Some(step.saturating_sub(1))).await })
            })
            .collect();
        for e in [1u64, 2] {
            let g: Vec<f32> = (0..6).map(|i| (i as f32 - 2.5) * (e + step) as f32 * 0.1).collect();
            ps.push(e, step, 1, 8, f32s(&g)).await;
        }
        for f in fetches {
            frames.push(f.await.unwrap().unwrap());
        }
    }
    let checkpoint = ps.snapshot_when(true, 0).await.unwrap();
    ps.finish().await.unwrap();
    (frames, checkpoint)
}

#[tokio::test]
async fn a_sharded_server_answers_as_one_server_in_every_mode() {
    let momentum = OptimizerConfig {
        momentum: Some(0.9),
        average: Some(0.5),
        ..config(0.5)
    };
    for mode in [Mode::Async, Mode::Sync, Mode::Ssp, Mode::Average, Mode::Easgd] {
        for optimizer in [config(0.5), momentum] {
            let (one, one_snap) = scripted(mode, optimizer, &whole(6)).await;
            let (three, three_snap) = scripted(mode, optimizer, &[0..2, 2..3, 3..6]).await;
            assert_eq!(one, three, "{mode:?} {optimizer:?}");
            assert_eq!(one_snap.params, three_snap.params);
            assert_eq!(one_snap.optimizer, three_snap.optimizer);
            assert_eq!(
                (one_snap.version, one_snap.staleness_sum, one_snap.rule),
                (three_snap.version, three_snap.staleness_sum, three_snap.rule)
            );
        }
    }
}

#[tokio::test]
async fn a_sharded_server_refuses_a_wrong_length_once() {
    let ps = start_sharded(vec![0.0; 4], config(1.0), Mode::Async, 0, &[0..1, 1..4]);
    ps.push(1, 0, 1, 1, f32s(&[1.0; 3])).await;
    ps.push(1, 0, 1, 1, f32s(&[1.0; 4])).await;
    let snap = ps.snapshot().await.unwrap();
    assert_eq!((snap.version, snap.rejected), (1, 1));
    assert_eq!(*snap.params, vec![-1.0; 4]);
}

#[tokio::test]
async fn each_shard_counts_its_updates_and_bytes() {
    let ps = start_sharded(vec![0.0; 4], config(1.0), Mode::Async, 0, &[0..1, 1..4]);
    ps.push(1, 0, 1, 1, f32s(&[1.0; 4])).await;
    ps.push(2, 0, 1, 1, f32s(&[1.0; 4])).await;
    // One answer with values, one `Unchanged`.
    params_of(ps.fetch(1, 2, None).await.unwrap());
    let unchanged = proto::decode(ps.fetch(1, 2, Some(2)).await.unwrap()).unwrap();
    assert!(matches!(unchanged, ToExecutor::Unchanged { version: 2, .. }));
    let info = ps.shard_info();
    let figures: Vec<_> = info
        .iter()
        .map(|s| (s.values, s.updates, s.bytes_pushed, s.bytes_fetched, s.queued_bytes))
        .collect();
    assert_eq!(figures, vec![(1, 2, 8, 4, 0), (3, 2, 24, 12, 0)]);
}

#[tokio::test]
async fn sixteen_bit_pushes_are_widened_and_cut_by_their_own_width() {
    for compression in [Compression::Fp16, Compression::Bf16] {
        let ps = start_sharded(vec![0.0; 4], config(1.0), Mode::Async, 0, &[0..1, 1..4]);
        let values = [0.5, -1.0, 2.0, 0.25];
        ps.push(1, 0, 1, 1, (compression, Tensor(compression.encode(&values))))
            .await;
        // Four bytes a value is the wrong length for a 16-bit push.
        ps.push(1, 0, 1, 1, (compression, Tensor::from_f32(&values))).await;
        let snap = ps.snapshot().await.unwrap();
        assert_eq!((snap.version, snap.rejected), (1, 1), "{compression:?}");
        assert_eq!(*snap.params, vec![-0.5, 1.0, -2.0, -0.25], "exact in 16 bits");
        let pushed: Vec<u64> = ps.shard_info().iter().map(|s| s.bytes_pushed).collect();
        assert_eq!(pushed, vec![2, 6], "two bytes a value, and the refused push's none");
    }
}
