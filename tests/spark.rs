//! deepdist on Spark (`python/deepdist_spark`): a real multi-process Spark
//! cluster on this machine (`local-cluster[2,1,1024]`, pyspark and Java 17
//! from the virtualenv and Debian packages `.ci/run` installs) runs the
//! scenarios of `tests/support/spark_run.py` in one session.

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn spark_trains_on_mnist_it_wrote_survives_a_killed_task_and_reports_a_failed_job() {
    let scenario = "Spark: the distributor's barrier stage";
    let python = std::env::var("DEEPDIST_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pythonpath = root.join("python");
    let ready = Command::new(&python)
        .args(["-c", "import pyspark, pyarrow, numpy, deepdist_spark"])
        .env("PYTHONPATH", &pythonpath)
        .output()
        .is_ok_and(|o| o.status.success());
    let java = Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready || !java {
        let why = format!("needs Java 17 (openjdk-17-jre-headless) and {python} with pyspark, pyarrow and numpy");
        return support::cannot_run(scenario, &why);
    }
    support::mnist(); // fetched if missing
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(root.join("tests/support/spark_run.py"))
        .arg(env!("CARGO_BIN_EXE_deepdist"))
        .arg(support::data_dir())
        .arg(work.path())
        .env("PYTHONPATH", &pythonpath)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        panic!("spark_run.py gave no result ({}):\n{stdout}\n{stderr}", out.status);
    };
    let result: serde_json::Value = serde_json::from_str(line).unwrap();
    let accuracy = |name: &str| result[name]["accuracy"].as_f64().unwrap_or(0.0);

    // MNIST written to Parquet by Spark, trained through the barrier stage.
    assert!(accuracy("mnist") >= 0.975, "{result}");
    assert_eq!(result["mnist"]["model"], true, "{result}");
    // Both executors' lines streamed back to run()'s log, each with its prefix.
    assert_eq!(result["mnist"]["executors_heard"], 2, "{result}");
    // An executor SIGKILLed after the first epoch: its task went to the
    // other, Spark retried the stage, and the job finished.
    assert!(result["killed"]["killed"].is_u64(), "no executor was killed: {result}");
    assert!(result["killed"]["reassigned"].as_u64().unwrap_or(0) >= 1, "{result}");
    // It stops at its 97.5% target; the epoch under way then may end a little below.
    assert!(accuracy("killed") >= 0.97, "{result}");
    // A job that fails makes run() raise with the job's own message.
    let raised = result["failing"]["raised"].as_str().unwrap_or_default();
    assert!(raised.contains("cannot load the dataset"), "{result}");
}
