//! Steps on an executor's own copy of the parameters, for the modes whose
//! executors step locally (`async`, `ssp`, `average`, `easgd`).
//!
//! Every minibatch moves the local copy at once, with the job's momentum, so
//! an executor learns from each minibatch as a single process would. What it
//! pushes is the sum of its step directions since the last push; the server
//! applies that sum with the job's rate. When fresh parameters arrive they
//! cannot yet contain the pushes sent after they were requested, nor the
//! steps not yet pushed: those are re-applied on top (a *rebase*), so an
//! executor never rewinds its own progress.
//!
//! The window is not summed step by step: the local copy as it stood when
//! the window opened (its *anchor*) is kept, and the window is the distance
//! walked from there, `(anchor − w) / lr`, formed once per push. A step
//! then streams five arrays (gradient, parameters and velocity in;
//! parameters and velocity out) instead of seven (the window in and out
//! besides); steps are bound by memory, so that is their cost. The window is the distance the copy really moved:
//! Hogwild!'s threads, which step one shared copy, push what survived their
//! races.
//!
//! A step may be scaled (`scale`, from the mode's [`super::Shape`]): it moves
//! the local copy by `scale·lr·d` and counts `scale·d` in the window, so the
//! server, applying the window at its rate `lr`, moves the model exactly as
//! far as the executor did.
//!
//! Without the rebase, or with the momentum on the server instead, momentum
//! SGD over pushed windows does not track a single process
//! (docs/modes.md, *Local steps and the rebase*).

pub use crate::optim::sgd::StepRule;
use rayon::prelude::*;

use crate::optim::{OptimizerConfig, OptimizerKind};

/// Local momentum steps and the bookkeeping for pushes and rebases.
pub struct LocalSteps {
    sgd: bool,
    rule: StepRule,
    velocity: Vec<f32>,
    /// The local copy when the window opened: the window is `(anchor − w) / lr`.
    anchor: Vec<f32>,
    /// The window was pushed (it is empty; `anchor` is stale): the next step
    /// opens a new one.
    window_pushed: bool,
    /// Where a push's directions are formed.
    window: Vec<f32>,
    /// Directions pushed since the outstanding parameter request was sent.
    pending: Vec<f32>,
    /// `pending` holds nothing (its values are stale): clearing is a flag,
    /// not a pass over every parameter at each request.
    pending_empty: bool,
}

impl LocalSteps {
    /// Local steps for `len` parameters under the job's optimizer settings:
    /// SGD's momentum is applied here; adaptive rates stay at the server.
    pub fn new(cfg: &OptimizerConfig, len: usize) -> Self {
        let sgd = cfg.kind == OptimizerKind::Sgd;
        // Adaptive optimizers keep their rule at the server and step plainly here.
        Self {
            sgd,
            rule: StepRule {
                lr: cfg.lr,
                scale: 1.0,
                momentum: if sgd { cfg.momentum.unwrap_or(0.0) } else { 0.0 },
                nesterov: sgd && cfg.nesterov.unwrap_or(false),
                weight_decay: cfg.weight_decay,
            },
            velocity: vec![0.0; len],
            anchor: vec![0.0; len],
            window_pushed: true,
            window: vec![0.0; len],
            pending: vec![0.0; len],
            pending_empty: true,
        }
    }

    /// Starts a new task with fresh parameters at the server's rate of its
    /// epoch, local steps `scale` times that: nothing is pending, but the
    /// momentum carries over from the job's previous tasks.
    pub fn start_task(&mut self, lr: f32, momentum: f32, scale: f32) {
        self.rule.lr = lr;
        self.rule.scale = scale;
        if self.sgd {
            if self.rule.momentum == 0.0 && momentum != 0.0 {
                // Steps without momentum keep no velocity; start it afresh.
                self.velocity.fill(0.0);
            }
            self.rule.momentum = momentum;
        }
        self.window_pushed = true;
        self.pending_empty = true;
    }

    /// The arithmetic of a step, for threads that step on their own.
    pub fn rule(&self) -> StepRule {
        self.rule
    }

    /// One minibatch's step on `params` from its gradient `g`.
    pub fn step(&mut self, params: &mut [f32], g: &[f32]) {
        let rule = self.rule;
        let opens = std::mem::take(&mut self.window_pushed);
        let c = chunk_len(params.len());
        let chunks = params.par_chunks_mut(c).zip(g.par_chunks(c));
        let chunks = chunks
            .zip(self.velocity.par_chunks_mut(c))
            .zip(self.anchor.par_chunks_mut(c));
        chunks.for_each(|(((w, g), v), a)| step_chunk(rule, opens, w, g, v, a));
    }

    /// Opens the window at `params` unless it is open: for steps taken
    /// elsewhere (by a Hogwild! executor's threads, on a shared copy that
    /// starts from `params` and is read back into it), so that the window
    /// holds them as if stepped here.
    pub fn open(&mut self, params: &[f32]) {
        if std::mem::take(&mut self.window_pushed) {
            self.anchor.copy_from_slice(params);
        }
    }

    /// The directions to push, walked from the window's anchor to `params`;
    /// they count as pending until parameters requested after this push
    /// arrive.
    pub fn take_window(&mut self, params: &[f32]) -> &[f32] {
        if std::mem::replace(&mut self.window_pushed, true) {
            self.window.fill(0.0);
            return &self.window;
        }
        // A rate of zero moved nothing: the window is empty.
        let per_lr = if self.rule.lr == 0.0 { 0.0 } else { 1.0 / self.rule.lr };
        let c = chunk_len(params.len());
        let walked = self
            .window
            .par_chunks_mut(c)
            .zip(self.anchor.par_chunks(c))
            .zip(params.par_chunks(c));
        if self.pending_empty {
            walked.for_each(|((d, a), w)| d.iter_mut().zip(a).zip(w).for_each(|((d, a), w)| *d = (a - w) * per_lr));
            // The window becomes what is pending, without a pass over it.
            std::mem::swap(&mut self.pending, &mut self.window);
            self.pending_empty = false;
            return &self.pending;
        }
        // Added to what is pending in the same pass.
        let walked = walked.zip(self.pending.par_chunks_mut(c));
        walked.for_each(|(((d, a), w), p)| {
            let parts = d.iter_mut().zip(a).zip(w).zip(p);
            parts.for_each(|(((d, a), w), p)| {
                *d = (a - w) * per_lr;
                *p += *d;
            });
        });
        &self.window
    }

    /// A parameter request was just sent: everything pushed so far will be in its answer.
    pub fn requested(&mut self) {
        self.pending_empty = true;
    }

    /// Adopts `fresh` parameters: the local copy becomes them with the
    /// pushes they cannot contain yet and the steps not pushed yet
    /// re-applied on top (a *rebase*), in one pass over `fresh`, the local
    /// copy and the anchor; the open window keeps its directions.
    pub fn adopt(&mut self, params: &mut [f32], fresh: &[f32]) {
        let lr = self.rule.lr;
        let c = chunk_len(params.len());
        let out = params.par_chunks_mut(c).zip(fresh.par_chunks(c));
        match (self.pending_empty, self.window_pushed) {
            (true, true) => out.for_each(|(w, f)| w.copy_from_slice(f)),
            (false, true) => out.zip(self.pending.par_chunks(c)).for_each(|((w, f), p)| {
                w.iter_mut().zip(f).zip(p).for_each(|((w, f), p)| *w = f - lr * p);
            }),
            (true, false) => out.zip(self.anchor.par_chunks_mut(c)).for_each(|((w, f), a)| {
                w.iter_mut().zip(f).zip(a).for_each(|((w, &f), a)| {
                    *w = f - (*a - *w);
                    *a = f;
                });
            }),
            (false, false) => {
                let parts = out.zip(self.pending.par_chunks(c)).zip(self.anchor.par_chunks_mut(c));
                parts.for_each(|(((w, f), p), a)| {
                    w.iter_mut().zip(f).zip(p).zip(a).for_each(|(((w, &f), p), a)| {
                        let base = f - lr * p;
                        *w = base - (*a - *w);
                        *a = base;
                    });
                });
            }
        }
    }
}

/// Values per chunk of a pass over the parameters: one chunk per thread of
/// the current pool, so that an executor with several cores steps, forms
/// its pushes and adopts parameters with all of them (one core stepping
/// alone left the others idle for a tenth of every minibatch), while on one
/// core a pass stays a single loop. A multiple of 64 values keeps chunk
/// boundaries on cache lines.
fn chunk_len(len: usize) -> usize {
    len.div_ceil(rayon::current_num_threads().max(1))
        .next_multiple_of(64)
        .max(64)
}

/// One chunk of a local step: parameters `params`, gradient `g`, velocity
/// and anchor; the anchor is written only when the step `opens` a window,
/// the velocity only with momentum.
fn step_chunk(rule: StepRule, opens: bool, params: &mut [f32], g: &[f32], velocity: &mut [f32], anchor: &mut [f32]) {
    if rule.momentum == 0.0 {
        // No velocity to keep (adaptive optimizers, plain SGD): one
        // stream fewer to read and write.
        let mut unused = 0.0;
        let parts = params.iter_mut().zip(g);
        if opens {
            parts.zip(anchor).for_each(|((w, &g), a)| {
                *a = *w;
                *w -= rule.lr * rule.direction(g, *w, &mut unused);
            });
        } else {
            parts.for_each(|(w, &g)| *w -= rule.lr * rule.direction(g, *w, &mut unused));
        }
        return;
    }
    let parts = params.iter_mut().zip(g).zip(velocity);
    if opens {
        parts.zip(anchor).for_each(|(((w, &g), v), a)| {
            *a = *w;
            *w -= rule.lr * rule.direction(g, *w, v);
        });
    } else {
        parts.for_each(|((w, &g), v)| *w -= rule.lr * rule.direction(g, *w, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sgd(momentum: f32) -> OptimizerConfig {
        OptimizerConfig {
            lr: 0.5,
            momentum: Some(momentum),
            ..OptimizerConfig::default()
        }
    }

    /// What `local` makes of the local copy `w` when `fresh` arrives.
    fn adopted(local: &mut LocalSteps, w: &[f32], fresh: &[f32]) -> Vec<f32> {
        let mut copy = w.to_vec();
        local.adopt(&mut copy, fresh);
        copy
    }

    #[test]
    fn steps_like_momentum_sgd_and_sums_directions() {
        let mut local = LocalSteps::new(&sgd(0.5), 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[1.0]); // v = 1, w = -0.5
        local.step(&mut w, &[1.0]); // v = 1.5, w = -1.25
        assert_eq!(w, vec![-1.25]);
        assert_eq!(local.take_window(&w), &[2.5]);
        // Nothing stepped since: an empty push.
        assert_eq!(local.take_window(&w), &[0.0]);
    }

    #[test]
    fn adopting_reapplies_what_the_server_cannot_have_yet() {
        let mut local = LocalSteps::new(&sgd(0.0), 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[1.0]);
        local.take_window(&w); // pushed before the request: the server has it
        local.requested();
        local.step(&mut w, &[2.0]);
        local.take_window(&w); // pushed after the request: pending
        local.step(&mut w, &[4.0]); // not pushed yet
        assert_eq!(w, vec![-3.5]);
        // The server applied only the first push: w = -0.5.
        assert_eq!(
            adopted(&mut local, &w, &[-0.5]),
            w,
            "the rebased copy equals the local one"
        );
    }

    #[test]
    fn an_open_window_keeps_its_directions_across_an_adoption() {
        let mut local = LocalSteps::new(&sgd(0.0), 2);
        let mut w = vec![0.0, 0.0];
        local.step(&mut w, &[1.0, -2.0]);
        local.take_window(&w); // pending
        local.step(&mut w, &[0.5, 4.0]); // the open window: 0.5, 4
        // The server's answer moved the model elsewhere (another executor's push).
        let mut w = adopted(&mut local, &w, &[2.0, 2.0]);
        assert_eq!(w, vec![2.0 - 0.5 * (1.0 + 0.5), 2.0 - 0.5 * (-2.0 + 4.0)]);
        local.step(&mut w, &[1.0, 1.0]);
        assert_eq!(local.take_window(&w), &[1.5, 5.0], "both steps since the push");
    }

    #[test]
    fn a_request_clears_what_is_pending_but_not_the_window() {
        let mut local = LocalSteps::new(&sgd(0.0), 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[1.0]);
        local.take_window(&w);
        local.requested(); // the answer will hold the push
        local.step(&mut w, &[2.0]); // not pushed yet
        assert_eq!(
            adopted(&mut local, &w, &[-0.5]),
            w,
            "only the unpushed step is re-applied"
        );
        // Pushed now and pending, nothing stepped since.
        local.take_window(&w);
        assert_eq!(adopted(&mut local, &w, &[-0.5]), w, "the pending push is re-applied");
        local.requested();
        assert_eq!(adopted(&mut local, &w, &[-1.5]), vec![-1.5], "nothing to re-apply");
    }

    #[test]
    fn steps_taken_elsewhere_count_from_where_the_window_opened() {
        let mut local = LocalSteps::new(&sgd(0.0), 1);
        let mut w = vec![1.0];
        local.open(&w);
        w[0] -= 0.5 * 3.0; // a Hogwild! thread's step of direction 3 on the shared copy
        local.open(&w); // already open: no effect
        assert_eq!(local.take_window(&w), &[3.0]);
    }

    #[test]
    fn adaptive_optimizers_step_without_momentum_locally() {
        let cfg = OptimizerConfig {
            kind: OptimizerKind::Adagrad,
            lr: 0.1,
            ..OptimizerConfig::default()
        };
        let mut local = LocalSteps::new(&cfg, 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[1.0]);
        local.step(&mut w, &[1.0]);
        assert!((w[0] + 0.2).abs() < 1e-7);
    }

    #[test]
    fn scaled_steps_move_the_local_copy_as_far_as_the_server_will() {
        let mut local = LocalSteps::new(&sgd(0.0), 1);
        local.start_task(0.5, 0.0, 0.25);
        let mut w = vec![0.0];
        local.step(&mut w, &[2.0]); // w −= 0.5 · 0.25 · 2
        assert_eq!(w, vec![-0.25]);
        // The server applies the window at its rate 0.5: the same −0.25.
        assert_eq!(local.take_window(&w), &[0.5]);
    }

    #[test]
    fn every_core_count_steps_pushes_and_adopts_alike() {
        // Long enough for several chunks, not a multiple of their length.
        let len = 1000;
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut local = LocalSteps::new(&sgd(0.9), len);
                let mut w: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.1).collect();
                let grad = |k: usize| (0..len).map(|i| ((i * 3 + k) % 11) as f32 - 5.0).collect::<Vec<f32>>();
                let mut pushed = Vec::new();
                for k in 0..6 {
                    local.step(&mut w, &grad(k));
                    if k % 2 == 1 {
                        pushed.push(local.take_window(&w).to_vec());
                        if k == 3 {
                            local.requested();
                        }
                    }
                    // Fresh parameters with the window open and pushed, with
                    // and without pushes pending: every case of a rebase.
                    let fresh: Vec<f32> = w.iter().map(|v| v * 0.5).collect();
                    local.adopt(&mut w, &fresh);
                }
                (w, pushed)
            })
        };
        let one = run(1);
        assert!(one.1.iter().all(|p| p.iter().any(|v| *v != 0.0)));
        assert_eq!(run(3), one);
    }

    #[test]
    fn momentum_switched_on_later_starts_from_rest() {
        let mut local = LocalSteps::new(&sgd(0.0), 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[4.0]); // w = -2
        local.start_task(0.5, 0.5, 1.0);
        local.step(&mut w, &[1.0]); // v = 1 (not 0.5·4 + 1), w = -2.5
        assert_eq!(w, vec![-2.5]);
    }
}
