//! Rounds that repeat, and the simulated cluster against the real one.
//! `sync` and `average` deal work by rank and sum each round in rank order,
//! so a run repeats bit for bit, and the simulation, which runs the same
//! loops, rule, optimizer and dealing, must end with the real run's model.

mod support;

use std::path::{Path, PathBuf};

use deepdist_core::checkpoint::load_model;
use deepdist_core::data::cut::cut;
use deepdist_core::job::JobSpec;
use deepdist_sim::{CostModel, LinkModel, SimConfig, SimJob, SimReport};

/// Runs `text` with `deepdist local`; returns the run's directory.
fn real_run(dir: &Path, text: &str, executors: usize, cores: usize) -> PathBuf {
    let job_file = dir.join("job.toml");
    std::fs::write(&job_file, text).unwrap();
    let runs = dir.join("runs");
    let data = support::data_dir();
    let out = support::deepdist(
        &[
            "local",
            job_file.to_str().unwrap(),
            "--executors",
            &executors.to_string(),
            "--cores-per-executor",
            &cores.to_string(),
            "--runs-dir",
            runs.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path()
}

/// Simulates `text` on `executors` × `cores`.
fn simulate(text: &str, executors: usize, cores: usize) -> (SimJob, SimReport) {
    let spec = JobSpec::from_toml(text, "job.toml").unwrap();
    let mnist = support::mnist();
    let cut = cut(&spec.data, spec.train.seed, &mnist.train, &mnist.test).unwrap();
    let job = SimJob::new(spec, &cut.train.head(5000), cut.partitions, cut.eval).unwrap();
    let config = SimConfig {
        executors,
        cores,
        cost: CostModel {
            example_s: 1e-5,
            core_efficiency: 0.9,
            step_s_per_value: 1e-9,
            link: LinkModel::gbit(10.0),
        },
        eval_every: 1.0,
        stop_at_target: false,
        machine_threads: 2,
        machine: None,
        noise: false,
        server_shards: 1,
        shard_hosts: false,
    };
    let report = job.simulate(&config).unwrap();
    (job, report)
}

/// The figures of a metrics line that must repeat (not its clock times).
fn repeatable(line: &serde_json::Value) -> String {
    [
        "epoch",
        "train_loss",
        "test_accuracy",
        "test_loss",
        "version",
        "mean_staleness",
    ]
    .iter()
    .map(|k| format!("{k}={}", line[k]))
    .collect::<Vec<_>>()
    .join(" ")
}

fn simulated_as_real(mode: &str, executors: usize, cores: usize) {
    let dir = tempfile::tempdir().unwrap();
    let text =
        support::small_job(&format!("sim-{mode}"), "sync", 2).replace("mode = \"sync\"", &format!("mode = \"{mode}\""));
    let run_dir = real_run(dir.path(), &text, executors, cores);
    let (job, report) = simulate(&text, executors, cores);
    let (real, _) = load_model(&run_dir.join("model.safetensors"), job.network.layout()).unwrap();
    assert_eq!(real.len(), report.params.len());
    let differ = real
        .iter()
        .zip(&report.params)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{mode}: {differ} of {} parameters differ", real.len());
    let metrics = support::metrics(run_dir.to_str().unwrap());
    let real_accuracy = metrics.last().unwrap()["test_accuracy"].as_f64().unwrap();
    assert!(
        (real_accuracy - report.final_accuracy).abs() < 1e-6,
        "{real_accuracy} vs {}",
        report.final_accuracy
    );
}

#[test]
fn one_sync_executor_simulated_ends_with_the_real_runs_model() {
    simulated_as_real("sync", 1, 2);
}

#[test]
fn three_sync_executors_simulated_end_with_the_real_runs_model() {
    simulated_as_real("sync", 3, 1);
}

#[test]
fn three_averaging_executors_simulated_end_with_the_real_runs_model() {
    simulated_as_real("average", 3, 1);
}

/// Two runs of the same `sync` job on three executors: the same metrics at
/// every epoch and the same model file, byte for byte.
#[test]
fn a_sync_job_repeats_bit_for_bit() {
    let runs: Vec<(Vec<String>, Vec<u8>)> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let run_dir = real_run(dir.path(), &support::small_job("repeat", "sync", 3), 3, 1);
            let metrics = support::metrics(run_dir.to_str().unwrap());
            let lines = metrics.iter().map(repeatable).collect();
            (lines, std::fs::read(run_dir.join("model.safetensors")).unwrap())
        })
        .collect();
    assert_eq!(runs[0].0.len(), 3, "{:?}", runs[0].0);
    assert_eq!(runs[0].0, runs[1].0);
    assert!(runs[0].1 == runs[1].1, "the model files differ");
}
