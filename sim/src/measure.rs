//! What the simulation measures off its clock: accuracy at every
//! `eval_every` epochs' worth of examples, the time the target is reached,
//! and the gradient noise scale once an epoch.

use deepdist_core::mode::ServerModel;
use deepdist_core::model::StageEval;
use deepdist_core::noise::NoiseScale;

use crate::{EvalPoint, SimConfig, SimError, SimJob};

/// Minibatches of each size a noise-scale measurement averages: late in
/// training the two norms differ by little, and with 8 the estimate of
/// `|G|²` came out negative in a third of the MLP job's epochs.
const NOISE_ROUNDS: usize = 32;

/// The evaluations so far and when the next is due.
pub(crate) struct Measurements {
    pub points: Vec<EvalPoint>,
    next_eval: u64,
    /// When the target was first reached: (virtual seconds, epochs).
    pub target_at: Option<(f64, f64)>,
}

impl Measurements {
    pub fn new(job: &SimJob, config: &SimConfig) -> Self {
        Self {
            points: Vec::new(),
            next_eval: job.eval_every_examples(config.eval_every),
            target_at: None,
        }
    }

    /// Evaluates `model` if the `examples` it has applied make an
    /// evaluation due, at virtual time `now`; true the first time the job's
    /// target is reached.
    pub fn maybe_evaluate(
        &mut self,
        (job, config): (&SimJob, &SimConfig),
        pool: &rayon::ThreadPool,
        model: &ServerModel,
        examples: u64,
        now: f64,
    ) -> Result<bool, SimError> {
        if examples < self.next_eval {
            return Ok(false);
        }
        let step = job.eval_every_examples(config.eval_every);
        while self.next_eval <= examples {
            self.next_eval += step;
        }
        let (accuracy, loss) = evaluate(job, model)?;
        let epochs = examples as f64 / job.train_examples() as f64;
        let whole = epochs.floor();
        let first_of_epoch = self.points.last().is_none_or(|p| p.epochs.floor() < whole);
        let noise = if config.noise && first_of_epoch {
            {
                let params = model.params();
                pool.install(|| noise_scale(job, params, whole as usize))?
            }
        } else {
            None
        };
        self.points.push(EvalPoint {
            time_s: now,
            epochs,
            accuracy,
            loss,
            noise,
        });
        let reached = job.spec.train.target_accuracy.is_some_and(|t| accuracy >= t);
        if reached && self.target_at.is_none() {
            self.target_at = Some((now, epochs));
            return Ok(true);
        }
        Ok(false)
    }
}

/// The accuracy and loss of the server's parameters (their average, if the
/// optimizer keeps one) on the job's evaluation set.
pub(crate) fn evaluate(job: &SimJob, model: &ServerModel) -> Result<(f64, f64), SimError> {
    let params = model.optimizer().average().unwrap_or(model.params());
    match job.network.evaluate(params, &job.eval)? {
        StageEval::Supervised(e) => Ok((f64::from(e.accuracy), f64::from(e.loss))),
        StageEval::Reconstruction(r) => Ok((f64::NAN, f64::from(r))),
    }
}

/// The gradient noise scale at the server's parameters, on a partition
/// that changes with the epoch: minibatches of the job's size against
/// eight times as many examples (`None` when the estimate is unresolved).
fn noise_scale(job: &SimJob, params: &[f32], epoch: usize) -> Result<Option<NoiseScale>, SimError> {
    let parts = &job.partitions;
    let Some(part) = parts.get(epoch % parts.len().max(1)) else {
        return Ok(None);
    };
    let batch = job.stage.batch_size as usize;
    let seed = job.spec.train.seed ^ epoch as u64;
    Ok(deepdist_core::noise::measure(
        job.network.as_ref(),
        params,
        &part.data,
        (batch, 8 * batch),
        NOISE_ROUNDS,
        seed,
    )?)
}
