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
//! A step may be scaled (`scale`, from the mode's [`super::Shape`]): it moves
//! the local copy by `scale·lr·d` and counts `scale·d` in the window, so the
//! server, applying the window at its rate `lr`, moves the model exactly as
//! far as the executor did.
//!
//! Measured on MNIST with 2 executors and `n_push = n_fetch = 4`: without the
//! rebase, momentum SGD oscillated below 66% accuracy; with server-side
//! momentum on summed gradients it diverged; with local steps and the rebase
//! it tracks the single-process curve epoch for epoch (98.1% after 6 epochs).

use crate::optim::sgd::direction;
use crate::optim::{OptimizerConfig, OptimizerKind};

/// The arithmetic of one local step, shared by every thread that steps (a
/// Hogwild! executor's cores each keep their own velocity with it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRule {
    /// The server's rate: a direction `d` moves a parameter by `lr·d`.
    pub lr: f32,
    /// Local steps are this multiple of the server's rate.
    pub scale: f32,
    /// Momentum (0: none, and no velocity is touched).
    pub momentum: f32,
    /// Nesterov's form of momentum.
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f32,
}

impl StepRule {
    /// One coordinate's step direction, in the window's units, from its
    /// gradient `g` at parameter value `w`; advances its velocity `v`.
    #[inline]
    pub fn direction(&self, g: f32, w: f32, v: &mut f32) -> f32 {
        let g = g + self.weight_decay * w;
        if self.momentum == 0.0 {
            self.scale * g
        } else {
            self.scale * direction(g, v, self.momentum, self.nesterov)
        }
    }
}

/// Local momentum steps and the bookkeeping for pushes and rebases.
pub struct LocalSteps {
    sgd: bool,
    rule: StepRule,
    velocity: Vec<f32>,
    /// Step directions since the last push.
    window: Vec<f32>,
    /// `window` was pushed; the next step starts a new sum.
    window_pushed: bool,
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
            window: vec![0.0; len],
            window_pushed: true,
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
        let (rule, fresh) = (self.rule, self.window_pushed);
        self.window_pushed = false;
        if rule.momentum == 0.0 {
            // No velocity to keep (adaptive optimizers, plain SGD): one
            // stream fewer to read and write.
            let mut unused = 0.0;
            for ((w, &g), acc) in params.iter_mut().zip(g).zip(&mut self.window) {
                let d = rule.direction(g, *w, &mut unused);
                *w -= rule.lr * d;
                *acc = if fresh { d } else { *acc + d };
            }
            return;
        }
        let parts = params.iter_mut().zip(g).zip(&mut self.velocity).zip(&mut self.window);
        for (((w, &g), v), acc) in parts {
            let d = rule.direction(g, *w, v);
            *w -= rule.lr * d;
            *acc = if fresh { d } else { *acc + d };
        }
    }

    /// Counts directions taken elsewhere (by a Hogwild! executor's threads,
    /// on a shared copy) in the window, as if stepped here.
    pub fn add_to_window(&mut self, directions: &[f32]) {
        let fresh = self.window_pushed;
        for (acc, &d) in self.window.iter_mut().zip(directions) {
            *acc = if fresh { d } else { *acc + d };
        }
        self.window_pushed = false;
    }

    /// The directions to push; they count as pending until parameters
    /// requested after this push arrive.
    pub fn take_window(&mut self) -> &[f32] {
        if self.window_pushed {
            self.window.fill(0.0);
            return &self.window;
        }
        self.window_pushed = true;
        if self.pending_empty {
            // The window becomes what is pending, without a pass over it:
            // the next step starts a fresh window over the old buffer.
            std::mem::swap(&mut self.pending, &mut self.window);
            self.pending_empty = false;
            return &self.pending;
        }
        self.pending.iter_mut().zip(&self.window).for_each(|(p, w)| *p += w);
        &self.window
    }

    /// A parameter request was just sent: everything pushed so far will be in its answer.
    pub fn requested(&mut self) {
        self.pending_empty = true;
    }

    /// Adopts `fresh` parameters as [`LocalSteps::rebase`] after a copy
    /// would, in one pass: the copy and the re-applied steps together read
    /// the fresh values once and write the local copy once.
    pub fn adopt(&self, params: &mut [f32], fresh: &[f32]) {
        let lr = self.rule.lr;
        let out = params.iter_mut().zip(fresh);
        match (self.pending_empty, self.window_pushed) {
            (true, true) => params.copy_from_slice(fresh),
            (true, false) => out.zip(&self.window).for_each(|((w, f), d)| *w = f - lr * d),
            (false, true) => out.zip(&self.pending).for_each(|((w, f), p)| *w = f - lr * p),
            (false, false) => {
                let parts = out.zip(&self.pending).zip(&self.window);
                parts.for_each(|(((w, f), p), d)| *w = f - lr * (p + d));
            }
        }
    }

    /// Re-applies, on freshly adopted parameters, the pushes they cannot
    /// contain yet and the steps not pushed yet.
    pub fn rebase(&self, params: &mut [f32]) {
        let lr = self.rule.lr;
        match (self.pending_empty, self.window_pushed) {
            (true, true) => {}
            (true, false) => params.iter_mut().zip(&self.window).for_each(|(w, d)| *w -= lr * d),
            (false, true) => params.iter_mut().zip(&self.pending).for_each(|(w, p)| *w -= lr * p),
            (false, false) => {
                let parts = params.iter_mut().zip(&self.pending).zip(&self.window);
                parts.for_each(|((w, p), d)| *w -= lr * (p + d));
            }
        }
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

    #[test]
    fn steps_like_momentum_sgd_and_sums_directions() {
        let mut local = LocalSteps::new(&sgd(0.5), 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[1.0]); // v = 1, w = -0.5
        local.step(&mut w, &[1.0]); // v = 1.5, w = -1.25
        assert_eq!(w, vec![-1.25]);
        assert_eq!(local.take_window(), &[2.5]);
        // Nothing stepped since: an empty push.
        assert_eq!(local.take_window(), &[0.0]);
    }

    #[test]
    fn rebase_reapplies_what_the_server_cannot_have_yet() {
        let mut local = LocalSteps::new(&sgd(0.0), 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[1.0]);
        local.take_window(); // pushed before the request: the server has it
        local.requested();
        local.step(&mut w, &[2.0]);
        local.take_window(); // pushed after the request: pending
        local.step(&mut w, &[4.0]); // not pushed yet
        assert_eq!(w, vec![-3.5]);
        // The server applied only the first push: w = -0.5.
        let mut adopted = vec![-0.5];
        local.rebase(&mut adopted);
        assert_eq!(adopted, w, "the rebased copy equals the local one");
    }

    #[test]
    fn adopting_equals_copying_then_rebasing() {
        let fresh = [0.25, -1.0];
        let mut local = LocalSteps::new(&sgd(0.5), 2);
        let mut w = vec![0.0, 0.0];
        // Every state: nothing, a window, something pending, both.
        for stage in 0..4 {
            match stage {
                1 => local.step(&mut w, &[1.0, 2.0]),
                2 => {
                    local.take_window();
                }
                3 => local.step(&mut w, &[-3.0, 0.5]),
                _ => {}
            }
            let mut copied = fresh.to_vec();
            local.rebase(&mut copied);
            let mut adopted = w.clone();
            local.adopt(&mut adopted, &fresh);
            assert_eq!(adopted, copied, "stage {stage}");
        }
    }

    #[test]
    fn a_request_clears_what_is_pending_but_not_the_window() {
        let mut local = LocalSteps::new(&sgd(0.0), 1);
        let mut w = vec![0.0];
        local.step(&mut w, &[1.0]);
        local.take_window();
        local.requested(); // the answer will hold the push
        local.step(&mut w, &[2.0]); // not pushed yet
        let mut adopted = vec![-0.5];
        local.rebase(&mut adopted);
        assert_eq!(adopted, w, "only the unpushed step is re-applied");
        // Pushed now and pending, nothing stepped since.
        local.take_window();
        let mut adopted = vec![-0.5];
        local.rebase(&mut adopted);
        assert_eq!(adopted, w, "the pending push is re-applied");
        local.requested();
        let mut adopted = vec![-1.5];
        local.rebase(&mut adopted);
        assert_eq!(adopted, vec![-1.5], "nothing to re-apply");
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
        assert_eq!(local.take_window(), &[0.5]);
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
