//! Deep belief networks over the distributed runtime: greedy RBM
//! pre-training stages, then fine-tuning, on real MNIST.

mod support;

use deepdist_core::job::JobState;
use support::{TestDriver, assert_stages_complete, metrics, small_dbn_job, start_executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dbn_is_pretrained_then_finetuned_well_above_chance() {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "a");
    let _b = start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    let job = client.submit(&small_dbn_job("dbn", 2), "dbn.toml").await.unwrap();
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    let accuracy = summary.final_accuracy.unwrap();
    assert!(accuracy > 0.8, "chance is 0.1; got {accuracy}");

    let lines = metrics(&summary.output_dir);
    assert_stages_complete(&lines, &[("rbm1", 2), ("rbm2", 2), ("finetune", 3)]);
    for rbm in ["rbm1", "rbm2"] {
        let errors: Vec<f64> = lines
            .iter()
            .filter(|l| l["stage"] == rbm)
            .map(|l| l["reconstruction_error"].as_f64().unwrap())
            .collect();
        assert!(errors[1] < errors[0], "{rbm} reconstruction error falls: {errors:?}");
        assert!(
            lines
                .iter()
                .filter(|l| l["stage"] == rbm)
                .all(|l| l["test_accuracy"].is_null())
        );
    }
    let dir = std::path::Path::new(&summary.output_dir);
    for file in ["rbm1.safetensors", "rbm2.safetensors", "model.safetensors"] {
        assert!(dir.join(file).exists(), "{file} saved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_transitions_survive_an_executor_joining_between_stages() {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "early");
    let mut client = driver.client().await;
    let job = client.submit(&small_dbn_job("join", 3), "join.toml").await.unwrap();
    driver
        .await_status("the second RBM stage", |s| {
            s.jobs[0].stage == "rbm1" && s.jobs[0].epochs_done == 3
        })
        .await;
    let _b = start_executor(&driver.addr(), "late");
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    assert!(summary.final_accuracy.unwrap() > 0.8);
    let late = driver.executor("late");
    assert!(late.tasks_done > 0, "the executor that joined trained in later stages");
    assert_stages_complete(
        &metrics(&summary.output_dir),
        &[("rbm1", 3), ("rbm2", 3), ("finetune", 3)],
    );
}

#[test]
fn bench_dbn_runs_the_grid_and_writes_table_csv_and_plot() {
    let out = tempfile::tempdir().unwrap();
    let job = out.path().join("small-dbn.toml");
    std::fs::write(&job, small_dbn_job("grid", 1)).unwrap();
    let run = support::deepdist(
        &[
            "bench",
            "dbn",
            job.to_str().unwrap(),
            "--executors",
            "1,2",
            "--cores",
            "1",
            "--partitions",
            "2,4",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let csv = std::fs::read_to_string(out.path().join("dbn-grid.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let configs: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[0], r[1], r[2])).collect();
    assert_eq!(
        configs,
        [("1", "1", "2"), ("1", "1", "4"), ("2", "1", "2"), ("2", "1", "4")]
    );
    for row in &rows {
        let best: f64 = row[5].parse().unwrap();
        assert!(best > 0.8, "well above chance: {row:?}");
        let elapsed: f64 = row[6].parse().unwrap();
        // A time is left empty only when the threshold was never reached.
        for (cell, threshold) in [(row[3], 0.90), (row[4], 0.98)] {
            match cell.parse::<f64>() {
                Ok(t) => assert!(t > 0.0 && t <= elapsed && best >= threshold, "{row:?}"),
                Err(_) => assert!(cell.is_empty() && best <= threshold, "{row:?}"),
            }
        }
    }
    let table = std::fs::read_to_string(out.path().join("dbn-grid.md")).unwrap();
    assert_eq!(table.lines().count(), 2 + rows.len(), "{table}");
    let svg = std::fs::read_to_string(out.path().join("dbn-grid.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("1 × 1 (executors × cores)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_dbn_runs_on_a_running_cluster() {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "a");
    let _b = start_executor(&driver.addr(), "b");
    driver.await_status("both executors", |s| s.executors.len() == 2).await;
    let out = tempfile::tempdir().unwrap();
    let job = out.path().join("small-dbn.toml");
    std::fs::write(&job, small_dbn_job("remote-grid", 1)).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_deepdist"))
        .args([
            "bench",
            "dbn",
            job.to_str().unwrap(),
            "--driver",
            &driver.addr(),
            "--partitions",
            "2,4",
            "--out",
        ])
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("2 executors × 1 cores"), "{stdout}");
    let csv = std::fs::read_to_string(out.path().join("dbn-grid.csv")).unwrap();
    let partitions: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(2).unwrap()).collect();
    assert_eq!(partitions, ["2", "4"]);
    assert_eq!(driver.status().jobs.len(), 2, "both runs went to this driver");
}
