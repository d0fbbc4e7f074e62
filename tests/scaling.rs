//! The simulated cluster against the real one. A `sync` job on one executor
//! is deterministic in both (one member per round, tasks in order), so the
//! simulation, which runs the same loops, rule and optimizer, must end with
//! the real run's model bit for bit.

mod support;

use deepdist_core::checkpoint::load_model;
use deepdist_core::data::cut::cut;
use deepdist_core::job::JobSpec;
use deepdist_sim::{CostModel, LinkModel, SimConfig, SimJob};

#[test]
fn one_sync_executor_simulated_ends_with_the_real_runs_model() {
    let dir = tempfile::tempdir().unwrap();
    let text = support::small_job("sim-check", "sync", 2);
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, &text).unwrap();
    let runs = dir.path().join("runs");
    let data = support::data_dir();
    let out = support::deepdist(
        &[
            "local",
            job_file.to_str().unwrap(),
            "--executors",
            "1",
            "--cores-per-executor",
            "2",
            "--runs-dir",
            runs.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();

    let spec = JobSpec::from_toml(&text, "job.toml").unwrap();
    let mnist = support::mnist();
    let cut = cut(&spec.data, spec.train.seed, &mnist.train, &mnist.test).unwrap();
    let job = SimJob::new(spec, &cut.train.head(5000), cut.partitions, cut.eval).unwrap();
    let config = SimConfig {
        executors: 1,
        cores: 2,
        cost: CostModel {
            example_s: 1e-5,
            core_efficiency: 0.9,
            step_s_per_value: 1e-9,
            link: LinkModel::gbit(10.0),
        },
        eval_every: 1.0,
        stop_at_target: false,
        machine_threads: 2,
        noise: false,
    };
    let report = job.simulate(&config).unwrap();

    let (real, _) = load_model(&run_dir.join("model.safetensors"), job.network.layout()).unwrap();
    assert_eq!(real.len(), report.params.len());
    let differ = real
        .iter()
        .zip(&report.params)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} parameters differ", real.len());
    let metrics = support::metrics(run_dir.to_str().unwrap());
    let real_accuracy = metrics.last().unwrap()["test_accuracy"].as_f64().unwrap();
    assert!(
        (real_accuracy - report.final_accuracy).abs() < 1e-6,
        "{real_accuracy} vs {}",
        report.final_accuracy
    );
}
