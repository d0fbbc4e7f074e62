//! What the fault scenarios (`tests/faults.rs`, `tests/recovery.rs`) check
//! after each fault: the job completed, within [`TOLERANCE`] of the same job
//! without the fault, every partition trained, nothing lost or applied twice;
//! and the `FAULT |` row each prints for docs/faults.md.

use std::time::Duration;

use deepdist_core::job::JobState;
use deepdist_wire::proto::{JobSummary, StatusReport};

use super::{TestDriver, assert_stages_complete, metrics, start_executor};

/// How far below the same job without a fault a scenario's accuracy may end.
/// Two points, not one: these 6,000-example asynchronous jobs vary by about a
/// point from run to run with no fault at all (the netns job's no-fault runs
/// ended between 88.9% and 90.4% here, the OOM job's between 92.4% and
/// 94.4%), and a one-point bar failed on that noise about one suite in five.
pub const TOLERANCE: f64 = 0.02;

/// Final accuracy of `job` with no fault: a fresh driver and two executors.
pub async fn no_fault_accuracy(job: &str) -> f64 {
    let driver = TestDriver::start().await;
    let _a = start_executor(&driver.addr(), "a");
    let _b = start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    let id = client.submit(job, "no-fault.toml").await.unwrap();
    let summary = super::watch(&mut client, id, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "the no-fault run: {summary:?}");
    summary.final_accuracy.unwrap_or(0.0)
}

/// Checks the outcome against the same job (and seed) run without the
/// fault, and prints the scenario's table row.
pub async fn check_and_report(
    scenario: &str,
    job: &str,
    summary: &JobSummary,
    status: &StatusReport,
    stages: &[(&str, u64)],
    recovery: Option<Duration>,
) {
    assert_eq!(summary.state, JobState::Done, "{scenario}: {summary:?}");
    let accuracy = summary.final_accuracy.unwrap_or(0.0);
    let baseline = no_fault_accuracy(job).await;
    assert!(
        accuracy >= baseline - TOLERANCE,
        "{scenario}: accuracy {accuracy} against {baseline} without the fault"
    );
    let lines = metrics(&summary.output_dir);
    assert_stages_complete(&lines, stages);
    // Each stage has its own parameter server; within one, versions never
    // fall (two epochs can end on one snapshot when the older waited for a
    // reassigned task).
    for pair in lines.windows(2).filter(|w| w[0]["stage"] == w[1]["stage"]) {
        assert!(
            pair[0]["version"].as_u64() <= pair[1]["version"].as_u64(),
            "{scenario}: versions never fall: {pair:?}"
        );
    }
    // Nothing lost, nothing applied twice: every update the driver received
    // was accepted or discarded (repeated, late) once, and every finished
    // task's executor sent exactly the updates accepted for it.
    assert!(status.updates_accepted > 0, "{scenario}: {status:?}");
    assert_eq!(
        status.updates_received,
        status.updates_accepted + status.duplicate_updates_discarded + status.late_updates_discarded,
        "{scenario}: {status:?}"
    );
    assert_eq!(status.task_push_mismatches, 0, "{scenario}: {status:?}");
    let lost: u64 = lines.iter().map(|l| l["reassigned"].as_u64().unwrap()).sum();
    println!(
        "FAULT | {scenario} | yes | {:.2}% ({:.2}% without) | {lost} | {} / {} | {} | {} | {} |",
        accuracy * 100.0,
        baseline * 100.0,
        status.updates_accepted,
        status.updates_received,
        status.duplicate_updates_discarded,
        status.late_updates_discarded,
        recovery.map_or("—".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
}

/// Epochs `job` has completed, as `status` reports them.
pub fn epochs_done(status: &StatusReport, job: u64) -> u32 {
    status.jobs.iter().find(|j| j.id == job).map_or(0, |j| j.epochs_done)
}
