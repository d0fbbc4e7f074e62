//! `ssp`: stale synchronous parallel (Ho et al., "More Effective
//! Distributed ML via a Stale Synchronous Parallel Parameter Server", 2013).
//!
//! Every executor has a clock: the pushes it made in the stage. Executors
//! run freely, but after each push an executor waits until it is no more
//! than `staleness_bound` clocks ahead of the slowest executor holding a
//! task. A bound of 0 is bulk-synchronous; a large one is asynchronous.
//!
//! Executor: Downpour's local steps (momentum, the same minibatch and push
//! window as `async` for the cluster's size); after each push it asks for
//! the parameters and waits for the answer, which the server holds back
//! while the executor is too far ahead.
//!
//! Server: each push is one descent step, as in `async`; it counts clocks
//! and answers a fetch once the bound allows. An executor that starts
//! holding a task (a newcomer, or one back from idling) starts at the
//! slowest member's clock, so it is not waited for to replay the past.

use std::collections::{HashMap, HashSet};

use super::{
    Compute, ExecutorLoop, KeyError, Link, LocalSteps, LoopError, ModeKeys, RuleStats, ServerModel, ServerRule,
    TaskPlan, Update, Work,
};
use crate::optim::OptimizerConfig;

/// The keys `ssp` reads beyond the common ones.
pub const KEYS: &[&str] = &["n_push", "staleness_bound"];

/// The bound when the job gives none.
pub const DEFAULT_BOUND: u32 = 3;

/// Checks `staleness_bound`.
pub fn check(keys: &ModeKeys) -> Result<(), KeyError> {
    match keys.staleness_bound {
        Some(b) if b > 1_000_000 => Err(KeyError {
            key: "staleness_bound",
            value: b.to_string(),
            allowed: "must be between 0 and 1000000".into(),
        }),
        _ => Ok(()),
    }
}

/// The executor's half: push, then wait for leave to go on.
pub struct Worker {
    local: LocalSteps,
    params: Vec<f32>,
    clock: u64,
}

impl Worker {
    /// The loop for a stage of `len` parameters.
    pub fn new(optimizer: &OptimizerConfig, len: usize) -> Self {
        Self {
            local: LocalSteps::new(optimizer, len),
            params: vec![0.0; len],
            clock: 0,
        }
    }
}

impl ExecutorLoop for Worker {
    fn run_task(&mut self, plan: &TaskPlan, compute: &mut dyn Compute, link: &mut dyn Link) -> Result<Work, LoopError> {
        let (local, params) = (&mut self.local, &mut self.params[..]);
        let mut version = super::downpour::fetch_now(link, params)?;
        local.start_task(plan.lr, plan.momentum, plan.shape.rate_scale);
        let mut total = Work::default();
        while compute.remaining() > 0 {
            let work = compute.local_steps(params, local, plan.shape.push_every as usize)?;
            total.add(work);
            link.push(version, work, local.take_window(params))?;
            self.clock += 1;
            if compute.remaining() == 0 {
                break;
            }
            // The answer includes this push, so there is nothing to rebase.
            link.request(self.clock)?;
            local.requested();
            version = link
                .receive(params, 0, true)?
                .map(|r| r.version)
                .ok_or_else(|| LoopError::Driver("the driver sent no parameters".into()))?;
        }
        Ok(total)
    }
}

/// The server's half: descent per push, clocks, and the bound.
pub struct Server {
    bound: u64,
    clocks: HashMap<u64, u64>,
    members: HashSet<u64>,
    max_spread: u64,
}

impl Server {
    /// The rule for a job's `staleness_bound`.
    pub fn new(keys: &ModeKeys) -> Self {
        Self {
            bound: u64::from(keys.staleness_bound.unwrap_or(DEFAULT_BOUND)),
            clocks: HashMap::new(),
            members: HashSet::new(),
            max_spread: 0,
        }
    }

    fn clock(&self, executor: u64) -> u64 {
        self.clocks.get(&executor).copied().unwrap_or(0)
    }

    /// The slowest member's clock.
    fn slowest(&self) -> Option<u64> {
        self.members.iter().map(|&m| self.clock(m)).min()
    }
}

impl ServerRule for Server {
    fn push(&mut self, model: &mut ServerModel, update: Update<'_>) {
        *self.clocks.entry(update.from).or_default() += 1;
        if let Err(e) = model.descend(update.values, update.base_version, update.samples.into()) {
            tracing::warn!(executor = update.from, error = %e, "descent step refused");
        }
    }

    fn ready(&mut self, _model: &ServerModel, from: u64, _wait_for: u64) -> bool {
        let clock = self.clock(from);
        let Some(slowest) = self.slowest().filter(|_| self.members.contains(&from)) else {
            // Not holding a task (it is between tasks): nothing to wait for.
            return true;
        };
        let spread = clock.saturating_sub(slowest);
        if spread > self.bound {
            return false;
        }
        self.max_spread = self.max_spread.max(spread);
        true
    }

    fn members(&mut self, _model: &mut ServerModel, members: &HashSet<u64>) {
        let staying = self.members.intersection(members).map(|&m| self.clock(m)).min();
        let joining: Vec<u64> = members.difference(&self.members).copied().collect();
        self.members.clone_from(members);
        for m in joining {
            let clock = self.clocks.entry(m).or_default();
            *clock = (*clock).max(staying.unwrap_or(0));
        }
    }

    fn stats(&self) -> RuleStats {
        RuleStats {
            max_clock_spread: Some(self.max_spread),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerConfig;

    fn server(bound: u32) -> (Server, ServerModel) {
        let keys = ModeKeys {
            staleness_bound: Some(bound),
            ..ModeKeys::default()
        };
        let optimizer = OptimizerConfig::default().build(1).unwrap();
        (Server::new(&keys), ServerModel::new(vec![0.0], optimizer, 0, 0))
    }

    fn push(s: &mut Server, m: &mut ServerModel, from: u64) {
        let update = Update {
            from,
            base_version: m.version(),
            samples: 1,
            values: &[0.1],
        };
        s.push(m, update);
    }

    #[test]
    fn no_executor_goes_on_more_than_the_bound_ahead() {
        let (mut s, mut m) = server(2);
        s.members(&mut m, &[1, 2].into());
        for _ in 0..2 {
            push(&mut s, &mut m, 1);
            assert!(s.ready(&m, 1, 0));
        }
        push(&mut s, &mut m, 1);
        assert!(!s.ready(&m, 1, 0), "three ahead of a bound of two: held");
        push(&mut s, &mut m, 2);
        assert!(s.ready(&m, 1, 0), "the slowest moved on");
        assert_eq!(s.stats().max_clock_spread, Some(2));
    }

    #[test]
    fn a_bound_of_zero_is_bulk_synchronous_and_newcomers_start_at_the_slowest() {
        let (mut s, mut m) = server(0);
        s.members(&mut m, &[1, 2].into());
        push(&mut s, &mut m, 1);
        assert!(!s.ready(&m, 1, 0));
        push(&mut s, &mut m, 2);
        assert!(s.ready(&m, 1, 0) && s.ready(&m, 2, 0));
        // Executor 3 joins late: it is not waited for to replay clock 1.
        s.members(&mut m, &[1, 2, 3].into());
        push(&mut s, &mut m, 3);
        assert!(!s.ready(&m, 3, 0), "now ahead of 1 and 2");
        // A member that leaves holds nobody back.
        s.members(&mut m, &[3].into());
        assert!(s.ready(&m, 3, 0));
    }
}
