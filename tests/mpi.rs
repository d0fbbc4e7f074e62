//! Executor groups over MPI: real `mpirun` ranks of the real binary, a real
//! driver on 127.0.0.1:0, real MNIST. Run with `--features mpi` (CI does);
//! the default build checks that `--mpi` says how to get it.

mod support;

/// A build without the feature refuses `--mpi` with the way to get it.
#[cfg(not(feature = "mpi"))]
#[test]
fn without_the_feature_mpi_is_a_clear_error() {
    for args in [
        &["executor", "--mpi", "--driver", "127.0.0.1:1"][..],
        &["launch", "job.toml", "--mpi"][..],
    ] {
        let out = support::deepdist(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains("this build has no MPI support: rebuild with --features mpi"),
            "{args:?}: {stderr}"
        );
    }
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use deepdist_core::job::JobState;
    use deepdist_wire::proto::StatusReport;
    use tokio::process::Child;

    use super::support::{
        self, TestDriver, cannot_run, slurm_is_up, small_cnn_job, small_dbn_job, small_job, spawn_executor_process,
    };

    /// `mpirun` as the tests run it: as root, more ranks than cores.
    fn mpirun(ranks: usize) -> Option<tokio::process::Command> {
        if Command::new("mpirun").arg("--version").output().is_err() {
            cannot_run(
                "MPI executor group",
                "mpirun is not installed (apt-get install openmpi-bin)",
            );
            return None;
        }
        let mut cmd = tokio::process::Command::new("mpirun");
        cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
            .arg(env!("CARGO_BIN_EXE_deepdist"))
            .env("DEEPDIST_DATA", support::data_dir())
            .kill_on_drop(true);
        Some(cmd)
    }

    /// `mpirun -np 2 deepdist executor --mpi`: one group named `name`.
    fn start_group(addr: &str, name: &str) -> Option<Child> {
        let mut cmd = mpirun(2)?;
        cmd.args([
            "executor",
            "--mpi",
            "--cores",
            "1",
            "--exit-with-run",
            "--driver",
            addr,
            "--name",
            name,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        Some(cmd.spawn().unwrap())
    }

    /// Waits for `child` to exit (it must within the tests' patience).
    async fn exit_of(child: Child) -> std::process::Output {
        match tokio::time::timeout(support::PATIENCE, child.wait_with_output()).await {
            Ok(out) => out.unwrap(),
            Err(_) => panic!("mpirun did not exit within {:?}", support::PATIENCE),
        }
    }

    /// The group named `name` and the plain executors are connected; the
    /// group counts both its ranks' cores.
    async fn await_executors(driver: &TestDriver, name: &str, plain: usize) -> StatusReport {
        driver
            .await_status("the group and the plain executors to register", |s| {
                s.executors.len() == plain + 1 && s.executors.iter().any(|e| e.name == name && e.cores == 2)
            })
            .await
    }

    /// A driver with a group named `name` and a plain executor `plain`, both registered.
    async fn group_and_plain(name: &str) -> Option<(TestDriver, Child, Child)> {
        let driver = TestDriver::start().await;
        let group = start_group(&driver.addr(), name)?;
        let plain = spawn_executor_process(&driver.addr(), "plain");
        await_executors(&driver, name, 1).await;
        Some((driver, group, plain))
    }

    fn tasks_done(status: &StatusReport, name: &str) -> u64 {
        status
            .executors
            .iter()
            .find(|e| e.name == name)
            .map_or(0, |e| e.tasks_done)
    }

    /// The pid of the process `mpirun` started as world rank `rank`.
    fn rank_pid(mpirun: u32, rank: u32) -> Option<u32> {
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The parent pid is the second field after the parenthesised name.
            let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let ours = ppid == mpirun && environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes());
            ours.then_some(pid)
        })
    }

    /// A group of two ranks and a plain executor train an asynchronous job
    /// together; the group leaves with the run and `mpirun` exits 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_and_a_plain_executor_complete_a_job() {
        let Some((driver, group, _plain)) = group_and_plain("group").await else {
            return;
        };
        let mut client = driver.client().await;
        let job = client
            .submit(&small_job("mpi-async", "async", 4), "mpi.toml")
            .await
            .unwrap();
        let summary = support::watch(&mut client, job, |_| {}).await;
        assert_eq!(summary.state, JobState::Done, "{summary:?}");
        assert!(summary.final_accuracy.unwrap() > 0.8, "{summary:?}");
        let status = driver.status();
        assert!(tasks_done(&status, "group") >= 1, "the group did no task: {status:?}");
        assert_eq!(status.executors_lost, 0, "{status:?}");
        support::assert_every_partition_every_epoch(&support::metrics(&summary.output_dir), 4);
        driver.driver.end_run(JobState::Done, Duration::from_secs(30)).await;
        let out = exit_of(group).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mpirun: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("MPI group of 2 ranks with 2 cores"), "{stdout}");
    }

    /// Trains `spec` on a fresh driver with the executor `start` returns;
    /// the per-epoch training losses.
    async fn losses_with(spec: &str, start: impl FnOnce(&str) -> Option<Child>) -> Option<Vec<f64>> {
        let driver = TestDriver::start().await;
        let executor = start(&driver.addr())?;
        driver
            .await_status("the executor to register", |s| s.executors.len() == 1)
            .await;
        let mut client = driver.client().await;
        let job = client.submit(spec, "same.toml").await.unwrap();
        let summary = support::watch(&mut client, job, |_| {}).await;
        assert_eq!(summary.state, JobState::Done, "{summary:?}");
        driver.driver.end_run(JobState::Done, Duration::from_secs(30)).await;
        drop(executor);
        let lines = support::metrics(&summary.output_dir);
        Some(lines.iter().map(|l| l["train_loss"].as_f64().unwrap()).collect())
    }

    /// In sync mode a group of two ranks computes each step's gradient from
    /// the same minibatches as one process: the training losses agree epoch
    /// by epoch, within 2% (the order of float sums differs; leaving the
    /// followers out of the sum is off by more than 15%).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_trains_as_one_process_does() {
        let spec = small_job("same", "sync", 3);
        let Some(group) = losses_with(&spec, |addr| start_group(addr, "group")).await else {
            return;
        };
        let alone = losses_with(&spec, |addr| Some(spawn_executor_process(addr, "alone")))
            .await
            .unwrap();
        assert_eq!(group.len(), 3);
        for (g, a) in group.iter().zip(&alone) {
            assert!(
                (g - a).abs() <= 0.02 * a,
                "group {group:?} against one process {alone:?}"
            );
        }
    }

    /// The same for a convolutional network: the followers compute their
    /// shards of each minibatch through the same layers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_trains_a_cnn_as_one_process_does() {
        let spec = small_cnn_job("same-cnn", "sync", 2);
        let Some(group) = losses_with(&spec, |addr| start_group(addr, "cnn-group")).await else {
            return;
        };
        let alone = losses_with(&spec, |addr| Some(spawn_executor_process(addr, "cnn-alone")))
            .await
            .unwrap();
        assert_eq!(group.len(), 2);
        for (g, a) in group.iter().zip(&alone) {
            assert!(
                (g - a).abs() <= 0.02 * a,
                "group {group:?} against one process {alone:?}"
            );
        }
    }

    /// A group alone pre-trains two RBMs and fine-tunes a DBN in sync mode:
    /// every stage's setup reaches the other rank (its input is the frozen
    /// layers' output), and the followers' RBM gradients are combined too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_alone_trains_a_dbn() {
        let driver = TestDriver::start().await;
        let Some(group) = start_group(&driver.addr(), "dbn-group") else {
            return;
        };
        await_executors(&driver, "dbn-group", 0).await;
        let mut client = driver.client().await;
        let spec = small_dbn_job("mpi-dbn", 1).replace("[train]\n", "[train]\nmode = \"sync\"\n");
        let job = client.submit(&spec, "dbn.toml").await.unwrap();
        let summary = support::watch(&mut client, job, |_| {}).await;
        assert_eq!(summary.state, JobState::Done, "{summary:?}");
        assert!(summary.final_accuracy.unwrap() > 0.85, "{summary:?}");
        support::assert_stages_complete(
            &support::metrics(&summary.output_dir),
            &[("rbm1", 1), ("rbm2", 1), ("finetune", 3)],
        );
        driver.driver.end_run(JobState::Done, Duration::from_secs(30)).await;
        assert!(exit_of(group).await.status.success());
    }

    /// A rank of the group killed mid-job takes the group down: the driver
    /// counts one executor lost and gives its task to the plain executor,
    /// the job completes with every partition trained, and `mpirun` exits
    /// with an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_rank_is_one_executor_lost_and_the_job_completes() {
        let Some((driver, group, _plain)) = group_and_plain("doomed").await else {
            return;
        };
        let mut client = driver.client().await;
        let epochs = 12;
        let job = client
            .submit(&small_job("mpi-kill", "async", epochs), "kill.toml")
            .await
            .unwrap();
        driver
            .await_status("the group to finish a task and hold another", |s| {
                tasks_done(s, "doomed") >= 1 && s.executors.iter().any(|e| e.name == "doomed" && e.task.is_some())
            })
            .await;
        let follower = rank_pid(group.id().unwrap(), 1).expect("mpirun's rank 1");
        support::signal(follower, "KILL");
        driver
            .await_status("the group to be declared lost", |s| s.executors_lost >= 1)
            .await;
        let out = exit_of(group).await;
        assert!(!out.status.success(), "mpirun exited 0 after a rank was killed");
        let summary = support::watch(&mut client, job, |_| {}).await;
        assert_eq!(summary.state, JobState::Done, "{summary:?}");
        let status = driver.status();
        assert_eq!(status.executors_lost, 1, "{status:?}");
        assert!(status.executors.iter().all(|e| e.name == "plain"), "{status:?}");
        support::assert_every_partition_every_epoch(&support::metrics(&summary.output_dir), epochs as usize);
    }

    /// `mpirun -np 3 deepdist launch --mpi`: rank 0 drives, ranks 1 and 2
    /// form one group (the one executor the driver waits for), and every
    /// rank exits 0 with the job done.
    #[test]
    fn launch_makes_one_group_per_node() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.toml"), small_job("launch-mpi", "async", 3)).unwrap();
        let Some(cmd) = mpirun(3) else { return };
        let mut cmd = cmd.into_std();
        let rendezvous = dir.path().join("driver.addr");
        let out = cmd
            .args([
                "launch",
                "job.toml",
                "--mpi",
                "--insecure-plaintext",
                "--port",
                "0",
                "--rendezvous",
            ])
            .env("DEEPDIST_SECRET", support::CLUSTER_SECRET)
            .arg(&rendezvous)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "mpirun: {}\n{stdout}\n{stderr}", out.status);
        assert!(stdout.contains("MPI group of 2 ranks"), "{stdout}");
        assert!(stdout.contains("job 1 (launch-mpi) done"), "{stdout}");
        assert!(!Path::new(&rendezvous).exists());
    }

    /// `srun --mpi=pmix -n 3 deepdist launch --mpi`: Slurm's task 0 drives,
    /// tasks 1 and 2 find each other through Slurm's PMIx and form one group.
    #[test]
    fn srun_with_pmix_makes_one_group_per_node() {
        if !slurm_is_up("srun launch --mpi") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.toml"), small_job("srun-mpi", "async", 3)).unwrap();
        let out = Command::new("srun")
            .args(["--mpi=pmix", "-n", "3", "--overcommit", "--kill-on-bad-exit=0"])
            .arg(env!("CARGO_BIN_EXE_deepdist"))
            .args([
                "launch",
                "job.toml",
                "--mpi",
                "--insecure-plaintext",
                "--port",
                "0",
                "--rendezvous",
                "driver.addr",
            ])
            .env("DEEPDIST_SECRET", support::CLUSTER_SECRET)
            .current_dir(dir.path())
            .env("DEEPDIST_DATA", support::data_dir())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "srun: {}\n{stdout}\n{stderr}", out.status);
        assert!(stdout.contains("Slurm rank 0 of 3: the driver"), "{stdout}");
        assert!(stdout.contains("MPI group of 2 ranks"), "{stdout}");
        assert!(stdout.contains("job 1 (srun-mpi) done"), "{stdout}");
    }
}
