//! `deepdist launch` under real cluster managers: every rank is the real
//! binary started by the real launcher, talking over real TCP.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{cannot_run, data_dir, slurm_is_up, small_job};

/// The stdout and stderr of a launcher's run that must have succeeded;
/// panics with both, and `what` failed, otherwise.
fn succeeded(what: &str, out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Runs `mpirun -np RANKS deepdist launch job.toml --port 0 --rendezvous
/// RENDEZVOUS` in `dir`; `None` (after `cannot_run`) without mpirun.
fn mpirun_launch(dir: &Path, ranks: usize, rendezvous: &Path) -> Option<Output> {
    if Command::new("mpirun").arg("--version").output().is_err() {
        cannot_run("mpirun launch", "mpirun is not installed (apt-get install openmpi-bin)");
        return None;
    }
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_deepdist"))
        .args([
            "launch",
            "job.toml",
            "--insecure-plaintext",
            "--port",
            "0",
            "--rendezvous",
        ])
        .arg(rendezvous)
        .current_dir(dir)
        .env("DEEPDIST_DATA", data_dir())
        .env("DEEPDIST_SECRET", support::CLUSTER_SECRET)
        .output()
        .unwrap();
    Some(out)
}

/// `mpirun -np 3 deepdist launch` with a rendezvous file: rank 0 drives,
/// ranks 1 and 2 find it through the file, the job completes, every rank
/// exits 0, and the file is gone afterwards.
#[test]
fn mpirun_ranks_run_a_job_through_a_rendezvous_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), small_job("launch-mpirun", "async", 3)).unwrap();
    let rendezvous = dir.path().join("driver.addr");
    let Some(out) = mpirun_launch(dir.path(), 3, &rendezvous) else {
        return;
    };
    let (stdout, _) = succeeded("mpirun", &out);
    assert!(stdout.contains("Open MPI rank 0 of 3: the driver"), "{stdout}");
    assert_eq!(
        stdout.matches("the run is over: its job is done").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("2 executors registered"), "{stdout}");
    assert!(stdout.contains("job 1 (launch-mpirun) done"), "{stdout}");
    assert!(!rendezvous.exists(), "the rendezvous file is removed at the end");
}

/// A job that fails ends every rank non-zero: a job no executor can train
/// (the data path does not exist) fails, and so does each rank.
#[test]
fn a_failed_job_fails_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let job = small_job("launch-fails", "async", 2).replace(
        "[data]\n",
        "[data]\nformat = \"csv\"\npath = \"/nonexistent/deepdist-data\"\n",
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let Some(out) = mpirun_launch(dir.path(), 2, &dir.path().join("driver.addr")) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the run is over: its job ended failed"),
        "{stdout}\n{stderr}"
    );
}

/// `srun -n 3 deepdist launch`: Slurm's task 0 drives, tasks 1 and 2 find it
/// on the step's first node, and srun's status (0 only if every task exits
/// 0) says the job is done.
#[test]
fn srun_tasks_run_a_job_from_slurms_node_list() {
    if !slurm_is_up("srun launch") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), small_job("launch-srun", "async", 3)).unwrap();
    let out = Command::new("srun")
        .args(["-n", "3", "--overcommit", "--kill-on-bad-exit=0"])
        .arg(env!("CARGO_BIN_EXE_deepdist"))
        .args([
            "launch",
            "job.toml",
            "--insecure-plaintext",
            "--port",
            "0",
            "--rendezvous",
            "driver.addr",
        ])
        .env("DEEPDIST_SECRET", support::CLUSTER_SECRET)
        .current_dir(dir.path())
        .env("DEEPDIST_DATA", data_dir())
        .output()
        .unwrap();
    let (stdout, _) = succeeded("srun", &out);
    assert!(stdout.contains("Slurm rank 0 of 3: the driver"), "{stdout}");
    assert_eq!(stdout.matches("Slurm rank").count(), 3, "{stdout}");
    assert_eq!(
        stdout.matches("the run is over: its job is done").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("job 1 (launch-srun) done"), "{stdout}");
}

/// The shipped batch script under `sbatch --wait`: the batch job's status is
/// the deepdist job's, and its output file tells the story.
#[test]
fn the_shipped_sbatch_script_runs_a_job() {
    if !slurm_is_up("sbatch launch") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), small_job("launch-sbatch", "async", 2)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/slurm/deepdist.sbatch");
    let out = Command::new("sbatch")
        .args(["--wait", "--overcommit", "--ntasks=3", "--output=batch.out"])
        .arg(&script)
        .args(["job.toml", "--port", "0", "--rendezvous", "driver.addr"])
        .current_dir(dir.path())
        .env("DEEPDIST", env!("CARGO_BIN_EXE_deepdist"))
        .env("DEEPDIST_DATA", data_dir())
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("batch.out")).unwrap_or_default();
    assert!(
        out.status.success(),
        "sbatch failed: {}\n{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("job 1 (launch-sbatch) done"), "{log}");
    assert_eq!(log.matches("the run is over: its job is done").count(), 2, "{log}");
}

/// `deepdist launch --hosts`: the driver in one network namespace, two
/// "hosts" in two others, each running the real sshd; the launch reaches
/// them with the real ssh client and its own config, passes on TLS and the
/// shared secret (on ssh's stdin), prefixes their output with the host,
/// and every executor exits when the job is done.
#[test]
fn ssh_hosts_in_their_own_namespaces_run_a_job() {
    let scenario = "ssh --hosts launch";
    let lab = match support::sandbox::NetLab::create(214, 2) {
        Ok(lab) => lab,
        Err(why) => return cannot_run(scenario, &why),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut daemons = Vec::new();
    for i in 1..=2 {
        match support::sandbox::Sshd::start(&lab.executor_ns(i), &lab.executor_ip(i), &format!("lab{i}"), dir.path()) {
            Ok(sshd) => daemons.push(sshd),
            Err(why) => return cannot_run(scenario, &why),
        }
    }
    std::fs::write(dir.path().join("job.toml"), small_job("launch-ssh", "async", 3)).unwrap();
    std::fs::write(dir.path().join("hosts.txt"), "# the lab\nlab1 slots=1\nlab2 slots=1\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a secret for the lab").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // One certificate for every address the executors and the launch dial.
    let names = vec![
        lab.driver_ip_from(1),
        lab.driver_ip_from(2),
        "127.0.0.1".into(),
        "localhost".into(),
    ];
    let signed = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.path().join("cert.pem"), signed.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), signed.key_pair.serialize_pem()).unwrap();
    let ssh_command = format!("ssh -F {}", dir.path().join("ssh_config").display());
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.driver_ns()])
        .arg(env!("CARGO_BIN_EXE_deepdist"))
        .args([
            "launch",
            "job.toml",
            "--hosts",
            "hosts.txt",
            "--port",
            "0",
            "--secret-file",
            "secret",
        ])
        .args(["--tls-cert", "cert.pem", "--tls-key", "key.pem", "--tls-ca", "cert.pem"])
        .args(["--ssh-command", &ssh_command])
        .current_dir(dir.path())
        .env("DEEPDIST_DATA", data_dir())
        .output()
        .unwrap();
    let (stdout, stderr) = succeeded("launch", &out);
    assert!(stdout.contains("2 executors over ssh"), "{stdout}");
    assert!(stdout.contains("job 1 (launch-ssh) done"), "{stdout}");
    // Told the run is over, executors close their TLS sessions cleanly.
    assert!(!stderr.contains("executor lost"), "{stderr}");
    for host in ["lab1", "lab2"] {
        assert!(
            stdout.contains(&format!("[{host}] executor exited")),
            "{host} did not exit by itself:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("[{host}]")) && l.contains("the run is over")),
            "{host}'s executor did not hear the run end:\n{stdout}\n{stderr}"
        );
    }
}
