//! The driver's faults, with real processes over real TCP: a driver killed
//! mid-job, during a checkpoint write, between DBN stages or with jobs
//! queued, then restarted (`--recover`), and checkpoints it must refuse.
//! Each job scenario is checked as the executor faults in `tests/faults.rs`
//! are (`support::faults`) and prints its `FAULT |` row:
//! `cargo test --release --test recovery -- --nocapture --test-threads 1 | grep 'FAULT |'`.

mod support;

use std::path::Path;
use std::time::Instant;

use deepdist_core::job::JobState;
use support::faults::check_and_report;
use support::{DriverProcess, metrics, small_cnn_job, small_dbn_job, small_job};

/// Files a checkpoint write in progress leaves in `dir`.
fn temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(deepdist_core::atomic::TEMP_PREFIX)
            })
        })
        .count()
}

/// A job to kill the driver under.
struct RecoverCase<'a> {
    scenario: &'a str,
    job: String,
    stages: &'a [(&'a str, u64)],
    /// Kill once a checkpoint exists and this holds for the job's record.
    kill_when: fn(&deepdist_wire::proto::JobInfo) -> bool,
    /// Kill while a checkpoint write is held open.
    during_write: bool,
    /// Flags of the killed driver and of the recovering one (besides `--recover`).
    flags: [&'a [&'a str]; 2],
}

/// Kills the driver process mid-job, restarts it with `--recover` on the
/// same address and checks the job finishes from the checkpoint.
async fn driver_killed_then_recovered(case: RecoverCase<'_>) {
    let (scenario, during_write) = (case.scenario, case.during_write);
    let runs = tempfile::tempdir().unwrap();
    let stall = [(deepdist_driver::fault::CHECKPOINT_STALL_ENV, "1500")];
    let env: &[(&str, &str)] = if during_write { &stall } else { &[] };
    let mut driver = DriverProcess::start(runs.path(), "127.0.0.1:0", case.flags[0], env).await;
    let addr = driver.addr.clone();
    let mut a = support::spawn_executor_process(&addr, "a");
    let mut b = support::spawn_executor_process(&addr, "b");
    let job = driver.client().await.submit(&case.job, "f.toml").await.unwrap();
    let checkpoints = runs.path().join(deepdist_driver::checkpoint::DIR_NAME);
    let checkpoint = deepdist_driver::checkpoint::file_for(&checkpoints, job);
    driver
        .await_status("the kill point and a checkpoint", |s| {
            s.jobs.iter().any(|j| j.id == job && (case.kill_when)(j))
                && checkpoint.exists()
                && (!during_write || temporaries(&checkpoints) > 0)
        })
        .await;
    support::signal(driver.child.id().unwrap(), "KILL");
    let _ = driver.child.wait().await;
    let killed = Instant::now();
    if during_write {
        assert!(
            temporaries(&checkpoints) > 0,
            "killed while a checkpoint was being written"
        );
    }
    let summary_dir = std::fs::read_dir(runs.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().is_dir() && e.file_name() != deepdist_driver::checkpoint::DIR_NAME)
        .unwrap()
        .path();
    let before = metrics(summary_dir.to_str().unwrap());
    assert!(!before.is_empty());

    let recover: Vec<&str> = ["--recover"].iter().chain(case.flags[1]).copied().collect();
    let driver = DriverProcess::start(runs.path(), &addr, &recover, &[]).await;
    driver
        .await_status("the resumed job to run", |s| {
            s.jobs.iter().any(|j| j.id == job && j.state == JobState::Running) && !s.executors.is_empty()
        })
        .await;
    let recovery = killed.elapsed();
    let mut client = driver.client().await;
    let summary = support::watch(&mut client, job, |_| {}).await;
    let after = metrics(&summary.output_dir);
    // Epochs checkpointed before the kill are kept as they were, not redone.
    let kept = after.iter().zip(&before).take_while(|(x, y)| x == y).count();
    assert!(
        kept >= 1,
        "lines from before the crash survive: {before:?} vs {after:?}"
    );
    assert!(!checkpoint.exists(), "a finished job's checkpoint is removed");
    assert_eq!(temporaries(&checkpoints), 0, "what the killed write left is removed");
    let status = client.status().await.unwrap();
    a.kill().await.unwrap();
    b.kill().await.unwrap();
    check_and_report(scenario, &case.job, &summary, &status, case.stages, Some(recovery)).await;
}

/// The MLP job killed after two epochs.
fn mlp_case(scenario: &str, during_write: bool) -> RecoverCase<'_> {
    RecoverCase {
        scenario,
        job: small_job("recover", "async", 8),
        stages: &[("train", 8)],
        kill_when: |j| j.epochs_done >= 2,
        during_write,
        flags: [&[], &[]],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_mid_job_resumes_with_recover() {
    driver_killed_then_recovered(mlp_case("driver SIGKILL, --recover", false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_server_killed_resumes_with_other_shards() {
    // The checkpoint holds one parameter vector and one optimizer state
    // (AdaRevision's, with its history), whatever the shards were.
    driver_killed_then_recovered(RecoverCase {
        flags: [&["--server-shards", "3"], &["--server-shards", "1"]],
        ..mlp_case("driver with 3 server shards SIGKILL, --recover with 1", false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_during_a_checkpoint_write_resumes_with_recover() {
    driver_killed_then_recovered(mlp_case("driver SIGKILL during checkpoint write, --recover", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_between_dbn_stages_resumes_with_recover() {
    // Killed in the second RBM stage: the first RBM's epochs and layer are
    // kept, the job goes on from the second.
    driver_killed_then_recovered(RecoverCase {
        scenario: "DBN: driver SIGKILL in stage rbm2, --recover",
        job: small_dbn_job("recover-dbn", 2),
        stages: &[("rbm1", 2), ("rbm2", 2), ("finetune", 3)],
        kill_when: |j| j.stage == "rbm2",
        during_write: false,
        flags: [&["--server-shards", "3"], &["--server-shards", "2"]],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_mid_cnn_job_resumes_with_recover() {
    // A layered network's checkpoint holds its kernels and the moving
    // average like any other: the job goes on from its last epoch.
    driver_killed_then_recovered(RecoverCase {
        scenario: "CNN: driver SIGKILL, --recover",
        job: small_cnn_job("recover-cnn", "async", 10),
        stages: &[("train", 10)],
        kill_when: |j| j.epochs_done >= 2,
        during_write: false,
        flags: [&[], &["--server-shards", "4"]],
    })
    .await;
}

#[test]
fn recover_refuses_a_missing_corrupt_or_foreign_checkpoint() {
    let runs = tempfile::tempdir().unwrap();
    let dir = runs.path().to_str().unwrap();
    let recover = || {
        let out = support::deepdist(
            &["driver", "--listen", "127.0.0.1:0", "--runs-dir", dir, "--recover"],
            &[],
        );
        assert!(!out.status.success(), "--recover must fail here");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(recover().contains("nothing to recover"), "{}", recover());

    let checkpoints = runs.path().join(deepdist_driver::checkpoint::DIR_NAME);
    std::fs::create_dir_all(&checkpoints).unwrap();
    let path = deepdist_driver::checkpoint::file_for(&checkpoints, 1);
    std::fs::write(&path, b"{\"not\": \"a checkpoint\"}").unwrap();
    let err = recover();
    assert!(err.contains("is not a deepdist checkpoint"), "{err}");

    let sealed = deepdist_core::checkpoint::sealed::seal(deepdist_driver::checkpoint::FORMAT, b"job progress");
    let mut corrupt = sealed.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &corrupt).unwrap();
    let err = recover();
    assert!(err.contains("corrupt (checksum mismatch)"), "{err}");

    let newer = deepdist_core::checkpoint::sealed::seal(deepdist_driver::checkpoint::FORMAT + 1, b"job progress");
    std::fs::write(&path, &newer).unwrap();
    let err = recover();
    assert!(err.contains("this deepdist reads format"), "{err}");

    std::fs::write(&path, &sealed[..sealed.len() - 3]).unwrap();
    let err = recover();
    assert!(err.contains("truncated"), "{err}");
    assert!(path.exists(), "a refused checkpoint is left where it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_killed_with_jobs_queued_loses_none_and_reuses_no_id() {
    let runs = tempfile::tempdir().unwrap();
    let mut driver = DriverProcess::start(runs.path(), "127.0.0.1:0", &[], &[]).await;
    // No executors yet: everything stays queued.
    let mut client = driver.client().await;
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        ids.push(client.submit(&small_job(name, "async", 1), "q.toml").await.unwrap());
    }
    client.cancel(ids[1]).await.unwrap();
    support::signal(driver.child.id().unwrap(), "KILL");
    let _ = driver.child.wait().await;

    let driver = DriverProcess::start(runs.path(), "127.0.0.1:0", &[], &[]).await;
    let mut client = driver.client().await;
    let status = client.status().await.unwrap();
    let back: Vec<u64> = status.jobs.iter().map(|j| j.id).collect();
    // The cancelled job is back unless the first driver had already ended it
    // (a queued job's cancel takes effect when the runner next looks): either
    // way it never runs.
    let cancelled_back = back.contains(&ids[1]);
    let expected: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| id != ids[1] || cancelled_back)
        .collect();
    assert_eq!(back, expected, "every acknowledged, unfinished job is back: {status:?}");
    let fourth = client.submit(&small_job("fourth", "async", 1), "q.toml").await.unwrap();
    assert!(fourth > ids[2], "no id is reused: {fourth} after {ids:?}");
    let mut executor = support::spawn_executor_process(&driver.addr, "e");
    let mut states = Vec::new();
    for &id in [ids[0], ids[2], fourth].iter() {
        states.push(support::watch(&mut client, id, |_| {}).await.state);
    }
    assert_eq!(states, [JobState::Done; 3]);
    if cancelled_back {
        let summary = support::watch(&mut client, ids[1], |_| {}).await;
        assert_eq!(summary.state, JobState::Cancelled, "the cancel survived the crash too");
    }
    executor.kill().await.unwrap();
}
