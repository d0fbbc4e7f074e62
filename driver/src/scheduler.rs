//! Which partition each executor trains next.
//!
//! Executors *pull* work: when one is idle it gets the next partition of the
//! oldest open epoch, preferring one it already has cached. Faster executors
//! (more cores) therefore take proportionally more partitions, a slow or
//! overloaded one never holds back an epoch, and after the first epoch
//! partitions stay where their bytes already are. The next epoch opens as
//! soon as the current one has nothing left to hand out, so no executor
//! idles while the last partitions of an epoch finish. An executor's lost
//! tasks go back to the front of their epoch's queue with a new attempt
//! number; an epoch completes only when every partition has been trained in
//! it by a task that reported done.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use deepdist_wire::proto::TaskId;
use serde::{Deserialize, Serialize};

/// How far an open epoch got, for a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// The epoch.
    pub epoch: u32,
    /// Partitions trained in it by tasks that reported done.
    pub done: Vec<u32>,
    /// Tasks of it reassigned so far.
    pub reassigned: u32,
}

/// One epoch's bookkeeping.
#[derive(Debug, Default)]
struct EpochState {
    pending: VecDeque<u32>,
    running: HashMap<u32, (u64, u32)>,
    done: HashSet<u32>,
}

/// Task assignment for one stage of a job.
#[derive(Debug)]
pub struct Scheduler {
    job: u64,
    stage: u32,
    partitions: u32,
    last_epoch: u32,
    open: BTreeMap<u32, EpochState>,
    next_epoch: u32,
    attempts: HashMap<(u32, u32), u32>,
    /// Reported failures per (epoch, partition); lost executors do not count.
    failures: HashMap<(u32, u32), u32>,
    reassigned: HashMap<u32, u32>,
    stopping: bool,
}

/// Failures of one task after which its job fails: a failure that follows a
/// task from executor to executor is in the task, not the executors (as
/// Spark's `spark.task.maxFailures`, whose default this is).
pub const MAX_TASK_FAILURES: u32 = 4;

/// What a reported failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not a live assignment of that executor: nothing changed.
    Stale,
    /// Put back for another executor.
    Requeued,
    /// Failed [`MAX_TASK_FAILURES`] times: the job cannot finish.
    GaveUp,
}

impl Scheduler {
    /// A scheduler for `partitions` partitions over epochs `1..=epochs`.
    pub fn new(job: u64, stage: u32, partitions: u32, epochs: u32) -> Self {
        Self::resume(job, stage, partitions, epochs, 0, &[])
    }

    /// A scheduler that continues from a checkpoint: epochs up to
    /// `completed` are done and `open` ones have their done partitions.
    pub fn resume(job: u64, stage: u32, partitions: u32, epochs: u32, completed: u32, open: &[EpochProgress]) -> Self {
        let mut s = Self {
            job,
            stage,
            partitions,
            last_epoch: epochs,
            open: BTreeMap::new(),
            next_epoch: completed + 1,
            attempts: HashMap::new(),
            failures: HashMap::new(),
            reassigned: HashMap::new(),
            stopping: false,
        };
        for p in open.iter().filter(|p| p.epoch > completed && p.epoch <= epochs) {
            let done: HashSet<u32> = p.done.iter().copied().filter(|&d| d < partitions).collect();
            let state = EpochState {
                pending: (0..partitions).filter(|d| !done.contains(d)).collect(),
                running: HashMap::new(),
                done,
            };
            s.open.insert(p.epoch, state);
            s.reassigned.insert(p.epoch, p.reassigned);
            s.next_epoch = s.next_epoch.max(p.epoch + 1);
        }
        if s.open.is_empty() {
            s.open_next();
        }
        s
    }

    /// The last epoch completed and how far the open ones got.
    pub fn progress(&self) -> (u32, Vec<EpochProgress>) {
        let completed = self.open.keys().next().map_or(self.next_epoch - 1, |&e| e - 1);
        let open = self
            .open
            .iter()
            .map(|(&epoch, e)| {
                let mut done: Vec<u32> = e.done.iter().copied().collect();
                done.sort_unstable();
                EpochProgress {
                    epoch,
                    done,
                    reassigned: self.reassigned.get(&epoch).copied().unwrap_or(0),
                }
            })
            .collect();
        (completed, open)
    }

    fn open_next(&mut self) {
        if self.stopping || self.next_epoch > self.last_epoch {
            return;
        }
        let state = EpochState {
            pending: (0..self.partitions).collect(),
            ..EpochState::default()
        };
        self.open.insert(self.next_epoch, state);
        self.next_epoch += 1;
    }

    /// The next task of the executor of rank `rank` among `ranks` when work
    /// is dealt ([`deepdist_core::mode::dealt_rank`]): the first pending one
    /// dealt to that rank, opening epochs as far as it needs — a rank never
    /// idles while its tasks are in an epoch not yet open, since an idle
    /// executor would leave its rounds and change what they sum.
    pub fn next_dealt(&mut self, executor: u64, rank: u32, ranks: u32) -> Option<TaskId> {
        let partitions = self.partitions;
        let mine = |epoch: u32, p: u32| deepdist_core::mode::dealt_rank(epoch, p, partitions, ranks) == rank;
        loop {
            let found = self.open.iter().find_map(|(&epoch, state)| {
                let pos = state.pending.iter().position(|&p| mine(epoch, p))?;
                Some((epoch, pos))
            });
            if let Some((epoch, pos)) = found {
                return self.start(epoch, pos, executor);
            }
            let before = self.next_epoch;
            self.open_next();
            if self.next_epoch == before {
                return None;
            }
        }
    }

    /// Starts the pending task at `pos` of `epoch` on `executor`.
    fn start(&mut self, epoch: u32, pos: usize, executor: u64) -> Option<TaskId> {
        let state = self.open.get_mut(&epoch)?;
        let partition = state.pending.remove(pos)?;
        let attempt = self.attempts.entry((epoch, partition)).or_insert(0);
        *attempt += 1;
        state.running.insert(partition, (executor, *attempt));
        Some(TaskId {
            job: self.job,
            stage: self.stage,
            epoch,
            partition,
            attempt: *attempt,
        })
    }

    /// The next task for an idle executor, preferring partitions in `cached`.
    pub fn next_for(&mut self, executor: u64, cached: impl Fn(u32) -> bool) -> Option<TaskId> {
        // Open the next epoch once every open one has nothing left to hand out.
        if self.open.values().all(|e| e.pending.is_empty()) && self.open.len() < 2 {
            self.open_next();
        }
        let (&epoch, state) = self.open.iter().find(|(_, e)| !e.pending.is_empty())?;
        let pos = state.pending.iter().position(|&p| cached(p)).unwrap_or(0);
        self.start(epoch, pos, executor)
    }

    /// True if `task` is the live assignment of `executor`.
    pub fn is_current(&self, task: &TaskId, executor: u64) -> bool {
        task.job == self.job
            && task.stage == self.stage
            && self.open.get(&task.epoch).and_then(|e| e.running.get(&task.partition))
                == Some(&(executor, task.attempt))
    }

    /// Records a completed task; false (and nothing changes) if it is not a
    /// live assignment of this executor.
    pub fn complete(&mut self, task: &TaskId, executor: u64) -> bool {
        if !self.is_current(task, executor) {
            return false;
        }
        if let Some(e) = self.open.get_mut(&task.epoch) {
            e.running.remove(&task.partition);
            e.done.insert(task.partition);
        }
        true
    }

    /// Puts back a task that failed on its executor, unless it has failed
    /// too often.
    pub fn fail(&mut self, task: &TaskId, executor: u64) -> Failure {
        if !self.is_current(task, executor) {
            return Failure::Stale;
        }
        self.requeue(task.epoch, task.partition);
        let failures = self.failures.entry((task.epoch, task.partition)).or_insert(0);
        *failures += 1;
        if *failures >= MAX_TASK_FAILURES {
            Failure::GaveUp
        } else {
            Failure::Requeued
        }
    }

    fn requeue(&mut self, epoch: u32, partition: u32) {
        if let Some(e) = self.open.get_mut(&epoch) {
            e.running.remove(&partition);
            e.pending.push_front(partition);
            *self.reassigned.entry(epoch).or_default() += 1;
        }
    }

    /// Puts back every task of a lost executor; returns how many.
    pub fn lose(&mut self, executor: u64) -> usize {
        let lost: Vec<(u32, u32)> = self
            .open
            .iter()
            .flat_map(|(&epoch, e)| {
                e.running
                    .iter()
                    .filter(|(_, (ex, _))| *ex == executor)
                    .map(move |(&p, _)| (epoch, p))
            })
            .collect();
        for &(epoch, partition) in &lost {
            self.requeue(epoch, partition);
        }
        lost.len()
    }

    /// The oldest epoch, if every partition of it is done: it is closed and
    /// returned with its count of reassigned tasks.
    pub fn pop_completed(&mut self) -> Option<(u32, u32)> {
        let (&epoch, state) = self.open.iter().next()?;
        if state.done.len() as u32 != self.partitions {
            return None;
        }
        self.open.remove(&epoch);
        if self.open.is_empty() {
            self.open_next();
        }
        Some((epoch, self.reassigned.remove(&epoch).unwrap_or(0)))
    }

    /// Hands out no new epochs; open ones still complete.
    pub fn stop_after_open_epochs(&mut self) {
        self.stopping = true;
    }

    /// True when every epoch is done (or stopping and the open ones are).
    pub fn finished(&self) -> bool {
        self.open.is_empty()
    }

    /// Executors holding a task right now.
    pub fn busy_executors(&self) -> HashSet<u64> {
        self.open
            .values()
            .flat_map(|e| e.running.values().map(|(ex, _)| *ex))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_epoch(s: &mut Scheduler, executor: u64) -> Vec<TaskId> {
        let mut tasks = Vec::new();
        while let Some(t) = s.next_for(executor, |_| false) {
            if t.epoch != tasks.first().map_or(t.epoch, |f: &TaskId| f.epoch) {
                // Lookahead into the next epoch: give it back for this test.
                s.fail(&t, executor);
                break;
            }
            tasks.push(t);
        }
        tasks
    }

    #[test]
    fn a_task_that_keeps_failing_gives_up_but_lost_executors_do_not_count() {
        let mut s = Scheduler::new(1, 0, 1, 1);
        for round in 1..=MAX_TASK_FAILURES {
            // A lost executor first: reassigned, not a failure of the task.
            let t = s.next_for(7, |_| false).unwrap();
            assert_eq!(s.lose(7), 1);
            let t2 = s.next_for(8, |_| false).unwrap();
            assert_eq!((t.partition, t2.partition), (0, 0));
            assert_eq!(s.fail(&t, 7), Failure::Stale, "an old assignment");
            let expected = if round < MAX_TASK_FAILURES {
                Failure::Requeued
            } else {
                Failure::GaveUp
            };
            assert_eq!(s.fail(&t2, 8), expected, "failure {round}");
        }
    }

    #[test]
    fn every_partition_once_per_epoch_then_done() {
        let mut s = Scheduler::new(1, 0, 3, 2);
        for epoch in 1..=2 {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let t = s.next_for(7, |_| false).unwrap();
                assert_eq!(t.epoch, epoch);
                seen.push(t.partition);
                assert!(s.complete(&t, 7));
            }
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2]);
            assert_eq!(s.pop_completed(), Some((epoch, 0)));
        }
        assert!(s.next_for(7, |_| false).is_none());
        assert!(s.finished());
    }

    #[test]
    fn lookahead_opens_the_next_epoch_when_nothing_is_left() {
        let mut s = Scheduler::new(1, 0, 2, 3);
        let a = s.next_for(1, |_| false).unwrap();
        let b = s.next_for(2, |_| false).unwrap();
        // Epoch 1 has nothing pending; a third executor starts epoch 2.
        let c = s.next_for(3, |_| false).unwrap();
        assert_eq!((a.epoch, b.epoch, c.epoch), (1, 1, 2));
        assert!(s.complete(&a, 1) && s.complete(&b, 2));
        assert_eq!(s.pop_completed(), Some((1, 0)));
        assert_eq!(s.pop_completed(), None);
    }

    #[test]
    fn lost_tasks_are_reassigned_with_a_new_attempt() {
        let mut s = Scheduler::new(1, 0, 2, 1);
        let a = s.next_for(1, |_| false).unwrap();
        let b = s.next_for(2, |_| false).unwrap();
        assert_eq!(s.lose(1), 1);
        // The lost executor's report no longer counts.
        assert!(!s.complete(&a, 1));
        let again = s.next_for(2, |_| false).unwrap();
        assert_eq!((again.partition, again.attempt), (a.partition, 2));
        assert!(s.complete(&b, 2) && s.complete(&again, 2));
        assert_eq!(s.pop_completed(), Some((1, 1)));
    }

    #[test]
    fn prefers_cached_partitions() {
        let mut s = Scheduler::new(1, 0, 4, 1);
        let t = s.next_for(1, |p| p == 2).unwrap();
        assert_eq!(t.partition, 2);
        let tasks = drain_epoch(&mut s, 1);
        assert_eq!(tasks.len(), 3);
    }

    #[test]
    fn stale_or_foreign_reports_are_ignored() {
        let mut s = Scheduler::new(1, 0, 1, 1);
        let t = s.next_for(1, |_| false).unwrap();
        assert!(!s.complete(&t, 2));
        let mut other_job = t;
        other_job.job = 9;
        assert!(!s.complete(&other_job, 1));
        assert!(s.complete(&t, 1));
        assert!(!s.complete(&t, 1), "a duplicate report is not counted twice");
    }

    #[test]
    fn resumes_where_the_progress_left_off() {
        let mut s = Scheduler::new(1, 0, 3, 3);
        let tasks: Vec<TaskId> = (0..3).map(|_| s.next_for(1, |_| false).unwrap()).collect();
        for t in &tasks {
            assert!(s.complete(t, 1));
        }
        assert_eq!(s.pop_completed(), Some((1, 0)));
        let a = s.next_for(1, |_| false).unwrap();
        let b = s.next_for(2, |_| false).unwrap();
        assert!(s.complete(&a, 1));
        let (completed, open) = s.progress();
        assert_eq!(completed, 1);
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].epoch, open[0].done.clone()), (2, vec![a.partition]));

        // b was running: after a resume it is handed out again, a is not.
        let mut r = Scheduler::resume(1, 0, 3, 3, completed, &open);
        let mut again = Vec::new();
        while let Some(t) = r.next_for(5, |_| false) {
            if t.epoch != 2 {
                break;
            }
            again.push(t.partition);
            assert!(r.complete(&t, 5));
        }
        again.sort_unstable();
        let mut expected: Vec<u32> = (0..3).filter(|&p| p != a.partition).collect();
        expected.sort_unstable();
        assert_eq!(again, expected);
        assert!(again.contains(&b.partition));
        assert_eq!(r.pop_completed(), Some((2, 0)));
        // A checkpoint at the end of the stage resumes as finished.
        let done = Scheduler::resume(1, 0, 3, 3, 3, &[]);
        assert!(done.finished());
    }

    #[test]
    fn stopping_finishes_open_epochs_only() {
        let mut s = Scheduler::new(1, 0, 1, 5);
        let t = s.next_for(1, |_| false).unwrap();
        s.stop_after_open_epochs();
        assert!(s.next_for(1, |_| false).is_none());
        assert!(s.complete(&t, 1));
        assert_eq!(s.pop_completed(), Some((1, 0)));
        assert!(s.finished());
    }
}
