//! The simulator on a small learnable problem: it repeats bit for bit, it
//! trains, and its clock follows the cost model.

use std::sync::Arc;

use deepdist_core::data::Dataset;
use deepdist_core::data::partition::split;
use deepdist_core::job::JobSpec;
use ndarray::Array2;

use super::*;

/// Four classes, each a cluster of 16-dimensional points: a small MLP
/// learns it in an epoch or two.
fn clusters(n: usize, salt: usize) -> Dataset {
    let label = |i: usize| (i * 7 + salt) % 4;
    let noise = |i: usize, j: usize| (((i * 31 + j * 17 + salt * 13) % 97) as f32 / 97.0 - 0.5) * 0.8;
    let x = Array2::from_shape_fn(
        (n, 16),
        |(i, j)| if j % 4 == label(i) { 1.0 } else { 0.0 } + noise(i, j),
    );
    Dataset::new(x, (0..n).map(|i| label(i) as u8).collect(), 4).unwrap()
}

fn job(mode: &str, extra: &str) -> SimJob {
    let spec = JobSpec::from_toml(
        &format!(
            r#"name = "sim-{mode}"
[data]
partitions = 8
[model]
kind = "mlp"
hidden = [24]
[train]
mode = "{mode}"
epochs = 2
batch_size = 16
seed = 3
target_accuracy = 0.9
{extra}
[optimizer]
kind = "sgd"
lr = 0.1
momentum = 0.5
"#
        ),
        "test",
    )
    .unwrap();
    let train = clusters(2048, 0);
    let partitions = split(&train, 8, 3, true).unwrap();
    SimJob::new(spec, &train, partitions, Arc::new(clusters(512, 1))).unwrap()
}

fn config(executors: usize) -> SimConfig {
    SimConfig {
        executors,
        cores: 4,
        cost: CostModel {
            example_s: 1e-4,
            core_efficiency: 0.8,
            step_s_per_value: 1e-9,
            link: LinkModel::gbit(1.0),
        },
        eval_every: 0.5,
        stop_at_target: false,
        machine_threads: 2,
        machine: None,
        noise: false,
        server_shards: 1,
        shard_hosts: false,
    }
}

#[test]
fn a_run_repeats_bit_for_bit_in_every_mode() {
    for (mode, extra) in [
        ("async", "n_push = 2"),
        ("sync", ""),
        ("ssp", ""),
        ("average", ""),
        ("easgd", ""),
    ] {
        let job = job(mode, extra);
        let first = job.simulate(&config(4)).unwrap();
        let second = job.simulate(&config(4)).unwrap();
        assert_eq!(first, second, "{mode}");
        assert!(first.failed.is_none(), "{mode}: {:?}", first.failed);
        assert!(first.final_accuracy > 0.9, "{mode} trains: {}", first.final_accuracy);
        assert_eq!(
            first.examples,
            2 * 2048,
            "{mode}: every example of both epochs reached the server"
        );
        assert_eq!(first.points.len(), 4, "{mode}: an evaluation every half epoch");
    }
}

#[test]
fn the_noise_scale_is_measured_once_an_epoch() {
    let job = job("sync", "");
    let report = job
        .simulate(&SimConfig {
            noise: true,
            ..config(2)
        })
        .unwrap();
    let measured: Vec<f64> = report
        .points
        .iter()
        .filter_map(|p| p.noise.map(|n| n.b_noise))
        .collect();
    // At the first evaluation (half an epoch in), then as epochs 1 and 2 complete.
    assert_eq!(measured.len(), 3, "{:?}", report.points);
    assert!(measured.iter().all(|b| b.is_finite() && *b > 0.0), "{measured:?}");
    let pooled = report.pooled_noise(0.0).unwrap();
    let (low, high) = measured
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), b| (l.min(*b), h.max(*b)));
    assert!(pooled >= low && pooled <= high, "{pooled} outside {low}..{high}");
}

#[test]
fn the_clock_follows_the_cost_model() {
    let job = job("async", "");
    let one = job.simulate(&config(1)).unwrap();
    // One executor: its compute is the critical path, at least the examples' cost.
    let compute = config(1).cost.gradient_s(2 * 2048, 4);
    assert!(
        one.time_s >= compute && one.time_s < compute * 1.5,
        "{} vs {compute}",
        one.time_s
    );
    // It pushes and computes on while the server applies: at most one step behind.
    assert!(one.mean_staleness <= 1.0, "{}", one.mean_staleness);
    // Four executors on a fast link: the same examples in about a quarter of the time, now stale.
    let four = job.simulate(&config(4)).unwrap();
    assert!(four.time_s < one.time_s / 2.5, "{} vs {}", four.time_s, one.time_s);
    assert!(
        four.mean_staleness > one.mean_staleness + 1.0,
        "{}",
        four.mean_staleness
    );
    // The same cluster on a slow link waits for the driver's card.
    let mut slow = config(4);
    slow.cost.link = LinkModel::parse("10mbit").unwrap();
    let slow = job.simulate(&slow).unwrap();
    assert!(slow.time_s > four.time_s * 2.0, "{} vs {}", slow.time_s, four.time_s);
    assert!(slow.card_busy_s > slow.time_s * 0.5, "the card is the bottleneck");
}

#[test]
fn executors_sharing_one_machine_share_its_throughput() {
    let job = job("async", "n_push = 2");
    let on = |executors: usize, cores: Option<usize>| {
        job.simulate(&SimConfig {
            cores: 1,
            machine: cores.map(|cores| Machine {
                cores,
                copy_s_per_byte: 0.0,
            }),
            ..config(executors)
        })
        .unwrap()
        .samples_per_s()
    };
    let (two, eight) = (on(2, Some(2)), on(8, Some(2)));
    assert!(
        (eight / two - 1.0).abs() < 0.25,
        "8 executors on 2 cores train as fast as 2: {eight:.0} vs {two:.0} samples/s"
    );
    let cluster = on(8, None);
    assert!(
        cluster > 2.5 * eight,
        "8 machines of their own: {cluster:.0} vs {eight:.0}"
    );
}

#[test]
fn one_executor_is_not_sent_the_model_its_own_updates_made() {
    // Async with plain SGD: the server's step on a pushed window is the
    // executor's own local steps, so its fetches are answered in a few bytes.
    let job = job("async", "n_push = 2");
    let one = job.simulate(&config(1)).unwrap();
    let model_bytes = job.init.len() as u64 * 4;
    let fetches = 2 * 2048 / 16;
    assert!(
        one.bytes_out < model_bytes * fetches / 8,
        "{} bytes out for {fetches} fetches of a {model_bytes}-byte model",
        one.bytes_out
    );
    // Two executors break each other's runs: most fetches carry the model.
    let two = job.simulate(&config(2)).unwrap();
    assert!(two.bytes_out > model_bytes * fetches / 4, "{}", two.bytes_out);
}

#[test]
fn a_dbn_is_simulated_a_stage_at_a_time() {
    let spec = JobSpec::from_toml(
        r#"name = "sim-dbn"
[data]
partitions = 4
[model]
kind = "dbn"
hidden = [12, 8]
[pretrain]
epochs = 1
batch_size = 16
[train]
mode = "async"
epochs = 4
batch_size = 16
seed = 3
[optimizer]
kind = "sgd"
lr = 0.5
"#,
        "test",
    )
    .unwrap();
    let train = clusters(1024, 0);
    let partitions = split(&train, 4, 3, true).unwrap();
    let eval = Arc::new(clusters(256, 1));
    assert!(matches!(
        SimJob::new(spec.clone(), &train, partitions.clone(), eval.clone()),
        Err(SimError::Unsupported(_))
    ));
    let mut trained = Vec::new();
    let mut last = None;
    for index in 0..spec.stages().len() {
        let job = SimJob::stage(spec.clone(), index, &trained, &train, &partitions, &eval).unwrap();
        // The second RBM learns from the first's 12 hidden units.
        let dim = if index == 1 { 12 } else { 16 };
        assert_eq!(job.partitions[0].data.dim(), dim, "stage {index}");
        let report = job.simulate(&config(2)).unwrap();
        assert!(report.failed.is_none(), "stage {index}: {:?}", report.failed);
        trained.push(report.params.clone());
        last = Some(report);
    }
    let accuracy = last.unwrap().final_accuracy;
    assert!(accuracy > 0.9, "the fine-tuned stack: {accuracy}");
}

#[test]
fn server_shards_step_and_send_in_the_largest_shards_time() {
    // Sync steps once per round whatever the timing: the same updates,
    // each taking the largest shard's share of one thread's time.
    let job = job("sync", "");
    let busy = |shards: usize, shard_hosts: bool| {
        job.simulate(&SimConfig {
            server_shards: shards,
            shard_hosts,
            ..config(2)
        })
        .unwrap()
    };
    let (one, four, hosts) = (busy(1, false), busy(4, false), busy(4, true));
    assert_eq!(
        one.points.last().map(|p| p.accuracy),
        four.points.last().map(|p| p.accuracy)
    );
    let layout = job.network.layout();
    let largest = deepdist_core::shards::even(layout, 4)
        .iter()
        .map(|r| r.len())
        .max()
        .unwrap();
    let share = largest as f64 / layout.len() as f64;
    assert!(share < 0.3, "four shards of this model: {share}");
    let ratio = four.server_busy_s / one.server_busy_s;
    assert!((ratio - share).abs() < 1e-9, "{ratio} against {share}");
    // In the driver, the shards share its card; on hosts of their own, the
    // busiest card carries the largest shard's part of the same bytes.
    assert_eq!(four.card_busy_s, one.card_busy_s);
    assert_eq!((hosts.bytes_in, hosts.bytes_out), (one.bytes_in, one.bytes_out));
    let card = hosts.card_busy_s / one.card_busy_s;
    assert!((card - share).abs() < 0.01, "{card} against {share}");
}

#[test]
fn a_sixteen_bit_push_crosses_the_card_in_half_the_bytes() {
    // Sync pushes once per member per round whatever the values: the same
    // pushes, each half the size, and training that still learns.
    let none = job("sync", "").simulate(&config(2)).unwrap();
    let fp16 = job("sync", "compression = \"fp16\"").simulate(&config(2)).unwrap();
    let ratio = fp16.bytes_in as f64 / none.bytes_in as f64;
    // Above a half by the small messages each push and request also sends.
    assert!((0.5..0.55).contains(&ratio), "{ratio}");
    let last = |r: &crate::SimReport| r.points.last().map_or(0.0, |p| p.accuracy);
    assert!(
        (last(&fp16) - last(&none)).abs() < 0.02,
        "{} {}",
        last(&fp16),
        last(&none)
    );
}

#[test]
fn top_k_pushes_and_half_fetches_shrink_what_crosses_the_cards() {
    // Two epochs of top-k's warm-up send 25% then 6.25% of the values at
    // about five bytes each: a fifth of f32's bytes, plus small messages.
    let none = job("sync", "").simulate(&config(2)).unwrap();
    let topk = job("sync", "compression = \"topk\"\nfetch_compression = \"bf16\"")
        .simulate(&config(2))
        .unwrap();
    let pushed = topk.bytes_in as f64 / none.bytes_in as f64;
    assert!((0.18..0.3).contains(&pushed), "{pushed}");
    let fetched = topk.bytes_out as f64 / none.bytes_out as f64;
    assert!((0.5..0.55).contains(&fetched), "{fetched}");
    let last = |r: &crate::SimReport| r.points.last().map_or(0.0, |p| p.accuracy);
    assert!(last(&topk) > last(&none) - 0.05, "{} {}", last(&topk), last(&none));
}
