//! A simulated deepdist cluster: N executors of C cores and a parameter
//! server in virtual time, running the real code. Each executor is a thread
//! running its mode's real [`ExecutorLoop`](deepdist_core::mode::ExecutorLoop)
//! over the real split-minibatch compute; the server is the real
//! [`ServerModel`](deepdist_core::mode::ServerModel) with the mode's real
//! [`ServerRule`](deepdist_core::mode::ServerRule) and optimizer. Only time
//! is modelled ([`cost`]): a minibatch costs its examples on C cores, a step
//! its parameters, a message its bytes over a link whose cards queue their
//! senders. The arithmetic is real, so staleness and accuracy are the
//! simulated cluster's, and one executor runs at a time in a fixed order,
//! so a run repeats bit for bit.
//!
//! docs/scaling.md explains the model and how it was checked.

mod cluster;
pub mod cost;
mod events;
mod executor;
mod measure;
mod server;

use std::sync::Arc;

use deepdist_core::data::{Dataset, Partition};
use deepdist_core::job::{JobSpec, Stage};
use deepdist_core::model::{ModelError, SharedNetwork};
use deepdist_core::noise::NoiseScale;
use deepdist_core::optim::OptimError;

pub use cost::{CostModel, LinkModel};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The job cannot be simulated as asked (say, several stages at once).
    #[error("cannot simulate this job: {0}")]
    Unsupported(String),
    /// The model refused the job or its data.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The optimizer refused its settings.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// Threads could not be started or ended unexpectedly.
    #[error("the simulation could not run: {0}")]
    Setup(String),
    /// Executors wait for what no one will send.
    #[error("the simulation is stuck: {0}")]
    Stuck(String),
}

/// A job's stage, its data and its model, ready to simulate.
pub struct SimJob {
    /// The job.
    pub spec: JobSpec,
    /// The stage simulated.
    pub stage: Stage,
    /// Its network.
    pub network: SharedNetwork,
    /// The parameters it starts from.
    pub init: Vec<f32>,
    /// The training partitions.
    pub partitions: Arc<Vec<Partition>>,
    /// What accuracy is measured on.
    pub eval: Arc<Dataset>,
}

impl SimJob {
    /// The job `spec` on `partitions`, evaluated on `eval`, starting from
    /// the parameters the driver would draw from `sample` (the first 5,000
    /// training examples). A job of several stages (a DBN) is simulated a
    /// stage at a time with [`SimJob::stage`].
    pub fn new(
        spec: JobSpec,
        sample: &Dataset,
        partitions: Vec<Partition>,
        eval: Arc<Dataset>,
    ) -> Result<Self, SimError> {
        let stages = spec.stages().len();
        if stages != 1 {
            return Err(SimError::Unsupported(format!(
                "the job has {stages} stages: simulate them one at a time (SimJob::stage)"
            )));
        }
        Self::stage(spec, 0, &[], sample, &partitions, &eval)
    }

    /// Stage `index` of `spec`, after the stages before it trained the
    /// parameters `trained` (a DBN's RBMs, in order). Where the stage's
    /// input passes through those stages, the partitions are passed as each
    /// executor passes its own (seeded by the partition), and the
    /// evaluation set and `sample` as the driver passes them.
    pub fn stage(
        spec: JobSpec,
        index: usize,
        trained: &[Vec<f32>],
        sample: &Dataset,
        partitions: &[Partition],
        eval: &Arc<Dataset>,
    ) -> Result<Self, SimError> {
        let stage = spec
            .stages()
            .get(index)
            .cloned()
            .ok_or_else(|| SimError::Unsupported(format!("the job has no stage {index}")))?;
        let first = partitions
            .first()
            .ok_or_else(|| SimError::Unsupported("the job has no partitions".into()))?;
        // The network is built for the data's own shape, as the driver builds it.
        let (dim, classes) = (first.data.dim(), first.data.classes());
        let network = spec.network(index, dim, classes)?;
        let kind = spec.kind()?;
        let seed = spec.train.seed.wrapping_add(index as u64);
        let (partitions, eval, sample) = if stage.input_layers == 0 {
            (partitions.to_vec(), eval.clone(), sample.clone())
        } else {
            let input =
                |data: &Dataset, training: bool, seed: u64| kind.input(&spec, index, trained, data, training, seed);
            let parts = partitions
                .iter()
                .map(|p| {
                    Ok(Partition::new(
                        p.id,
                        input(&p.data, true, spec.train.seed ^ u64::from(p.id))?,
                    ))
                })
                .collect::<Result<Vec<_>, ModelError>>()?;
            (parts, Arc::new(input(eval, false, seed)?), input(sample, false, seed)?)
        };
        let init = kind.start(&spec, index, trained, network.as_ref(), &sample, seed)?;
        Ok(Self {
            spec,
            stage,
            network,
            init,
            partitions: Arc::new(partitions),
            eval,
        })
    }

    /// The minibatch each of `executors` executors computes, as the job's
    /// mode shapes it for that many.
    pub fn executor_batch(&self, executors: usize) -> usize {
        let keys = self.spec.train.mode_keys();
        self.spec
            .train
            .mode
            .shape(&keys, self.stage.batch_size, executors as u32)
            .batch
    }

    /// Training examples in one epoch.
    pub fn train_examples(&self) -> usize {
        self.partitions.iter().map(|p| p.data.len()).sum()
    }

    fn eval_every_examples(&self, epochs: f64) -> u64 {
        ((self.train_examples() as f64 * epochs).round() as u64).max(1)
    }

    /// Runs the job on the simulated cluster `config`.
    pub fn simulate(&self, config: &SimConfig) -> Result<SimReport, SimError> {
        cluster::simulate(self, config)
    }
}

/// One machine that a simulation puts every executor and the server on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    /// Its cores.
    pub cores: usize,
    /// Seconds a core takes to copy one byte: messages between processes on
    /// one machine are copies, and they cost its cores, not a network.
    pub copy_s_per_byte: f64,
}

/// The simulated cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Executors.
    pub executors: usize,
    /// Cores of each.
    pub cores: usize,
    /// What compute and messages cost.
    pub cost: CostModel,
    /// Evaluate after every this many epochs' worth of examples applied at
    /// the server.
    pub eval_every: f64,
    /// Stop handing out tasks once the job's target accuracy is reached.
    pub stop_at_target: bool,
    /// Threads of this machine that compute the real arithmetic (they do
    /// not change the result, only how long the simulation takes).
    pub machine_threads: usize,
    /// Simulate one machine that every executor and the server share (this
    /// machine, to compare with `deepdist local`), rather than a cluster of
    /// executors with cores of their own.
    pub machine: Option<Machine>,
    /// Measure the gradient noise scale at the first evaluation and at the
    /// first after every epoch's worth of examples (off the virtual clock,
    /// like evaluation).
    pub noise: bool,
    /// Parameter-server shards in the driver, each stepping its slice of
    /// every update on a core of its own (1: one server thread).
    pub server_shards: usize,
    /// Each shard on a host of its own, with its own network card: a
    /// message's parts cross the shards' cards at once, so the card holding
    /// the largest shard bounds it. Otherwise every shard sits behind the
    /// driver's one card.
    pub shard_hosts: bool,
}

/// One evaluation of the server's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalPoint {
    /// Virtual seconds since the start.
    pub time_s: f64,
    /// Epochs' worth of examples applied at the server.
    pub epochs: f64,
    /// Accuracy on the evaluation set.
    pub accuracy: f64,
    /// Mean loss on it.
    pub loss: f64,
    /// The gradient noise scale there, when measured and resolved.
    pub noise: Option<NoiseScale>,
}

/// What a simulated run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// Every evaluation, in order.
    pub points: Vec<EvalPoint>,
    /// Accuracy at the end.
    pub final_accuracy: f64,
    /// Loss at the end.
    pub final_loss: f64,
    /// Virtual seconds to the end.
    pub time_s: f64,
    /// Virtual seconds to the first evaluation at the job's target accuracy.
    pub time_to_target_s: Option<f64>,
    /// Epochs' worth of examples by then.
    pub epochs_to_target: Option<f64>,
    /// Examples the server applied.
    pub examples: u64,
    /// Updates (versions) the server applied.
    pub updates: u64,
    /// Mean staleness of those updates.
    pub mean_staleness: f64,
    /// Those updates by staleness ([`deepdist_core::mode::STALENESS_BOUNDS`],
    /// then the rest).
    pub staleness: Vec<u64>,
    /// Bytes into the driver's network card.
    pub bytes_in: u64,
    /// Bytes out of it.
    pub bytes_out: u64,
    /// Virtual seconds the server spent applying updates.
    pub server_busy_s: f64,
    /// Virtual seconds the busier direction of the driver's card was sending.
    pub card_busy_s: f64,
    /// Why training stopped early, if it did (divergence).
    pub failed: Option<String>,
    /// The server's parameters at the end.
    pub params: Vec<f32>,
}

impl SimReport {
    /// The noise scale pooled over the measurements from `from_epochs` on:
    /// the ratio of the mean `tr(Σ)` to the mean `|G|²`, steadier than any
    /// one measurement (each ratio of two noisy estimates is noisier still).
    pub fn pooled_noise(&self, from_epochs: f64) -> Option<f64> {
        let measured: Vec<NoiseScale> = self
            .points
            .iter()
            .filter(|p| p.epochs >= from_epochs)
            .filter_map(|p| p.noise)
            .collect();
        let (trace, g2) = measured.iter().fold((0.0, 0.0), |(t, g), n| (t + n.trace, g + n.g2));
        (!measured.is_empty() && g2 > 0.0).then(|| trace / g2)
    }

    /// Examples per virtual second.
    pub fn samples_per_s(&self) -> f64 {
        self.examples as f64 / self.time_s.max(1e-12)
    }
}

#[cfg(test)]
mod tests;
