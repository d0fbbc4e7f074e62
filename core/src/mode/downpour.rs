//! `async`: Downpour SGD (Dean et al. 2012), as DeepDist ran it.
//!
//! Executor: every minibatch takes a local step (with the job's momentum,
//! see [`LocalSteps`]); the steps of `n_push` minibatches are pushed as one
//! update with the version they started from; right after a push the next
//! parameters are requested, so they arrive while the following minibatches
//! compute and are adopted (and rebased) at the next fetch point, every
//! `n_fetch` minibatches, normally without waiting.
//!
//! Server: each push is one `descent()` step, with its staleness.
//!
//! **More executors.** Every executor's update meets the work the others
//! pushed since it read its parameters, so staleness grows with the cluster,
//! and what it costs is the work each executor has in flight. The job's
//! minibatch and windows are those of [`crate::job::TrainSpec::reference_executors`]
//! executors (default 2); with N more, each executor's minibatch shrinks by
//! `share = reference / N` (its step with it, so the step per example stays
//! the job's) and its push and fetch windows by `share²`, down to one
//! minibatch. docs/modes.md has the measurements behind this and what else
//! was tried.
//!
//! **Push warm-up** (`push_warmup = W`). Staleness costs most at the start,
//! while the model moves fastest: each executor's push window grows from
//! one minibatch to `n_push` over its first `W` minibatches of the stage,
//! as post-local SGD (Lin et al. 2020) starts with frequent averaging
//! (measured in docs/modes.md, *Push warm-up*).

use super::{
    Compute, ExecutorLoop, Link, LocalSteps, LoopError, ModeKeys, ServerModel, ServerRule, Shape, TaskPlan, Update,
    Work,
};
use crate::optim::OptimizerConfig;

/// The keys `async` reads beyond the common ones.
pub const KEYS: &[&str] = &["n_push", "n_fetch", "push_warmup", "inject_delay"];

/// The minibatch, rate and windows of an executor when `peers` take part.
pub fn shape(keys: &ModeKeys, batch: u32, peers: u32) -> Shape {
    let given = batch.max(1) as usize;
    let (batch, share) = super::minibatch_share(keys, given as u32, peers);
    let window = |n: Option<u32>| ((f64::from(n.unwrap_or(1)) * share * share).floor() as u32).max(1);
    Shape {
        batch,
        rate_scale: batch as f32 / given as f32,
        push_every: window(keys.n_push),
        fetch_every: window(keys.n_fetch),
    }
}

/// The push window after `steps` of an executor's minibatches: grows
/// linearly from 1 to `full` over the first `warmup`.
pub fn push_window(full: usize, steps: u64, warmup: u64) -> usize {
    if steps >= warmup || full <= 1 {
        return full.max(1);
    }
    1 + ((full - 1) as u64 * steps / warmup) as usize
}

/// The executor's half: local steps, pushes and prefetched parameters.
pub struct Worker {
    local: LocalSteps,
    params: Vec<f32>,
    /// Where parameters that cannot be read in place are received.
    fresh: Vec<f32>,
    /// Minibatches over which the push window grows to its full size.
    warmup: u64,
    /// Minibatches this executor has stepped in the stage so far.
    steps: u64,
}

impl Worker {
    /// The loop for a stage of `len` parameters.
    pub fn new(keys: &ModeKeys, optimizer: &OptimizerConfig, len: usize) -> Self {
        Self {
            local: LocalSteps::new(optimizer, len),
            params: vec![0.0; len],
            fresh: vec![0.0; len],
            warmup: u64::from(keys.push_warmup.unwrap_or(0)),
            steps: 0,
        }
    }
}

impl ExecutorLoop for Worker {
    fn run_task(&mut self, plan: &TaskPlan, compute: &mut dyn Compute, link: &mut dyn Link) -> Result<Work, LoopError> {
        let (local, params, fresh) = (&mut self.local, &mut self.params[..], &mut self.fresh[..]);
        let mut version = fetch_now(link, params)?;
        local.start_task(plan.lr, plan.momentum, plan.shape.rate_scale);
        let fetch_every = plan.shape.fetch_every as usize;
        let (mut total, mut window) = (Work::default(), Work::default());
        // Minibatches since the last push and since the last fetch.
        let (mut unpushed, mut unfetched) = (0usize, 0usize);
        while compute.remaining() > 0 {
            let push_every = push_window(plan.shape.push_every as usize, self.steps, self.warmup);
            let n = push_every.saturating_sub(unpushed).min(fetch_every - unfetched).max(1);
            let work = compute.local_steps(params, local, n)?;
            let stepped = work.batches as usize;
            (unpushed, unfetched) = (unpushed + stepped, unfetched + stepped);
            self.steps += u64::from(work.batches);
            window.add(work);
            total.add(work);
            let last = compute.remaining() == 0;
            if unpushed >= push_every || last {
                link.push(version, window, local.take_window(params))?;
                (window, unpushed) = (Work::default(), 0);
                if last {
                    break;
                }
                // Ask now, so the answer includes this push and arrives
                // while the next minibatches compute.
                request_unless_outstanding(link, local, version)?;
            }
            if unfetched >= fetch_every {
                unfetched = 0;
                // The parameters asked for at the last push have usually
                // arrived by now. If not, the parameter server is behind:
                // waiting for them is the backpressure that keeps staleness
                // bounded instead of letting updates pile up at the server.
                if let Some((received, values)) = link.receive_to_read(fresh, 0)? {
                    version = received.version;
                    match values.as_ref().and_then(|v| v.as_f32()) {
                        Some(values) => local.adopt(params, values),
                        None if received.copied => local.adopt(params, fresh),
                        None => {}
                    }
                }
                request_unless_outstanding(link, local, version)?;
            }
        }
        Ok(total)
    }
}

/// Requests the current parameters and waits for them: how a task starts.
pub(crate) fn fetch_now(link: &mut dyn Link, params: &mut [f32]) -> Result<u64, LoopError> {
    link.request(0)?;
    link.receive(params, 0, true)?
        .map(|r| r.version)
        .ok_or_else(|| LoopError::Driver("the driver sent no parameters for this task".into()))
}

/// Asks for parameters newer than `have` unless a request is in flight:
/// when no one has pushed since `have`, the answer is a few bytes, not the
/// model, and the local copy stays as it is.
fn request_unless_outstanding(link: &mut dyn Link, local: &mut LocalSteps, have: u64) -> Result<(), LoopError> {
    if !link.outstanding() {
        link.request_newer(have)?;
        local.requested();
    }
    Ok(())
}

/// The server's half: every push is one descent step.
pub struct Server;

impl ServerRule for Server {
    fn push(&mut self, model: &mut ServerModel, update: Update<'_>) {
        if let Err(e) = model.descend(update.values, update.base_version, update.samples.into()) {
            tracing::warn!(executor = update.from, error = %e, "descent step refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_window_grows_to_its_full_size_over_the_warmup() {
        let windows: Vec<usize> = [0, 49, 50, 100, 150, 199, 200, 10_000]
            .iter()
            .map(|&s| push_window(4, s, 200))
            .collect();
        assert_eq!(windows, [1, 1, 1, 2, 3, 3, 4, 4]);
        assert_eq!(push_window(4, 0, 0), 4, "no warm-up: the full window at once");
        assert_eq!(push_window(1, 0, 200), 1);
        assert_eq!(push_window(0, 5, 0), 1, "never a window of nothing");
    }

    #[test]
    fn the_reference_cluster_runs_the_job_as_given_and_larger_ones_shrink() {
        let keys = ModeKeys {
            n_push: Some(4),
            n_fetch: Some(4),
            ..ModeKeys::default()
        };
        let at = |n| shape(&keys, 128, n);
        for n in [1, 2] {
            assert_eq!(
                at(n),
                Shape {
                    batch: 128,
                    rate_scale: 1.0,
                    push_every: 4,
                    fetch_every: 4
                }
            );
        }
        let four = at(4);
        assert_eq!((four.batch, four.push_every, four.fetch_every), (64, 1, 1));
        assert_eq!(four.rate_scale, 0.5);
        assert_eq!((at(16).batch, at(16).push_every), (16, 1));
        assert_eq!(at(1000).batch, 1, "never below one example");
    }
}
