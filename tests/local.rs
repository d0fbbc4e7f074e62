//! `deepdist local` as a user runs it: the binary, a job file, real MNIST.
//! Its executors reach the driver through in-process pipes by default and
//! over loopback TCP with `--loopback-tcp`; either way every partition of
//! every epoch is trained and the model learns.

mod support;

fn runs_a_job(extra: &[&str], transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, support::small_job("local-mode", "sync", 2)).unwrap();
    let runs = dir.path().join("runs");
    let data = support::data_dir();
    let mut args = vec![
        "local",
        job.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = support::deepdist(&args, &[("RUST_LOG", "warn")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("({transport})")), "{stdout}");
    let run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    let lines = support::metrics(run.to_str().unwrap());
    support::assert_every_partition_every_epoch(&lines, 2);
    let accuracy = lines[1]["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "{transport}: accuracy {accuracy}");
}

#[test]
fn local_mode_trains_with_in_process_executors() {
    support::mnist();
    runs_a_job(&[], "in-process");
}

#[test]
fn local_mode_trains_over_loopback_tcp() {
    support::mnist();
    runs_a_job(&["--loopback-tcp"], "loopback TCP");
}
