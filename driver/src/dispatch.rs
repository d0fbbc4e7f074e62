//! What the runner sends executors on each pass: the next task for every idle
//! executor (with the frozen layers and partition it needs first), or, for a
//! cancelled job, the order to drop everything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deepdist_core::job::JobSpec;
use deepdist_wire::proto::{self, TaskSpec, ToExecutor};

use crate::outbox::Outbox;
use crate::state::{ExecutorEntry, RunState};

/// A frame and the executor queue it goes to.
pub type Outgoing = (Outbox, Bytes);

/// Tells every executor to drop job `job`'s tasks, and forgets them.
pub fn cancel_all(executors: &mut BTreeMap<u64, ExecutorEntry>, job: u64) -> Vec<Outgoing> {
    let mut sends = Vec::new();
    for e in executors.values_mut() {
        e.task = None;
        if let Ok(frame) = proto::encode(&ToExecutor::CancelTasks { job }) {
            sends.push((e.tx.clone(), frame));
        }
    }
    sends
}

/// Takes their tasks back from executors that held them past `lease` with
/// no progress and no fetch waiting on the driver, and disconnects them: a
/// wedged executor that still heartbeats must not hold an epoch back.
/// Returns how many.
pub fn expire_leases(executors: &mut BTreeMap<u64, ExecutorEntry>, run: &mut RunState, lease: Duration) -> u64 {
    let mut expired = 0;
    for (&eid, e) in executors.iter_mut() {
        let Some(task) = e.task else { continue };
        if e.fetches_waiting > 0 || e.last_heard.elapsed() < lease {
            continue;
        }
        tracing::warn!(
            executor = eid,
            name = %e.name,
            ?task,
            lease_s = lease.as_secs_f64(),
            "no progress on its task within the lease: task reassigned, executor disconnected"
        );
        run.scheduler.lose(eid);
        e.task = None;
        e.tx.evict();
        expired += 1;
    }
    expired
}

/// Gives each idle executor its next task — preferring partitions it holds,
/// or, where the mode deals work, the next one dealt to its rank (its place
/// among the executors by id); an executor new to the stage first gets the
/// trained layers it needs.
pub fn assign_idle(executors: &mut BTreeMap<u64, ExecutorEntry>, run: &mut RunState, spec: &JobSpec) -> Vec<Outgoing> {
    let mut sends = Vec::new();
    let peers = executors.len() as u32;
    let dealt = spec.train.mode.deals_work();
    for (rank, (&eid, e)) in executors.iter_mut().enumerate() {
        if e.task.is_some() {
            continue;
        }
        let frames = &run.partition_frames;
        let cached = |p: u32| frames.get(p as usize).is_some_and(|(h, _)| e.cached.contains(h));
        let next = if dealt {
            run.scheduler.next_dealt(eid, rank as u32, peers)
        } else {
            run.scheduler.next_for(eid, cached)
        };
        let Some(task) = next else {
            continue;
        };
        e.task = Some(task);
        e.last_heard = Instant::now();
        if let Some(frozen) = &run.frozen
            && run.frozen_sent.insert(eid)
        {
            sends.push((e.tx.clone(), frozen.clone()));
        }
        let hash = run.partition_frames[task.partition as usize].0;
        let assign = ToExecutor::Assign(Box::new(TaskSpec {
            id: task,
            partition_hash: hash,
            spec: spec.clone(),
            peers,
        }));
        if let Ok(frame) = proto::encode(&assign) {
            sends.push((e.tx.clone(), frame));
        }
    }
    sends
}
