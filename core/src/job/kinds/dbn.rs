//! `kind = "dbn"`: a deep belief network. One stage per RBM (`rbm1`,
//! `rbm2`, …), each trained by contrastive divergence on the features the
//! RBMs below give, then `finetune`: the stack unrolled into a sigmoid MLP
//! with a softmax layer, trained with labels.

use std::sync::Arc;

use super::super::check::Check;
use super::super::{JobError, JobSpec, Stage};
use super::ModelKind;
use super::dense::DenseKeys;
use crate::data::Dataset;
use crate::model::{Activation, ModelError, Network, SharedNetwork};
use crate::optim::OptimizerConfig;

/// The DBN kind.
pub(super) struct Dbn;

impl Dbn {
    /// The stack for `input_dim` features.
    fn build(job: &JobSpec, input_dim: usize, classes: usize) -> Result<crate::model::Dbn, ModelError> {
        let mut sizes = vec![input_dim];
        sizes.extend(&DenseKeys::of(job)?.hidden);
        let cd_k = job.pretrain.clone().unwrap_or_default().cd_k as usize;
        crate::model::Dbn::new(&sizes, classes, cd_k)
    }

    /// RBM stages before fine-tuning: one per hidden layer, or none when
    /// `[pretrain] epochs = 0`.
    fn rbms(job: &JobSpec) -> usize {
        let pretrains = job.pretrain.clone().unwrap_or_default().epochs > 0;
        match DenseKeys::of(job) {
            Ok(keys) if pretrains => keys.hidden.len(),
            _ => 0,
        }
    }
}

impl ModelKind for Dbn {
    fn name(&self) -> &'static str {
        "dbn"
    }

    fn check(&self, job: &JobSpec, origin: &str) -> Result<(), JobError> {
        let c = Check::new(origin);
        let keys = job.model.keys::<DenseKeys>(origin)?;
        keys.check(&c)?;
        if keys.hidden.is_empty() {
            return Err(c.invalid("model.hidden", "[]".into(), "a DBN needs at least one hidden layer"));
        }
        if let Some(a) = keys.activation.filter(|a| *a != Activation::Sigmoid) {
            return Err(c.invalid(
                "model.activation",
                format!("{a:?}").to_lowercase(),
                "a DBN's units are sigmoid",
            ));
        }
        let p = job.pretrain.clone().unwrap_or_default();
        c.in_range("pretrain.epochs", p.epochs.into(), 0, 10_000)?;
        c.in_range("pretrain.batch_size", p.batch_size.into(), 1, 65_536)?;
        c.in_range("pretrain.cd_k", p.cd_k.into(), 1, 100)?;
        for (key, v, zero_ok) in [
            ("pretrain.lr", p.lr, false),
            ("pretrain.weight_decay", p.weight_decay, true),
        ] {
            if !(v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0))) {
                return Err(c.invalid(key, v.to_string(), "must be a finite number > 0 (≥ 0 for weight_decay)"));
            }
        }
        for (key, m) in [
            ("pretrain.momentum", p.momentum),
            ("pretrain.final_momentum", p.final_momentum),
        ] {
            if !(0.0..1.0).contains(&m) {
                return Err(c.invalid(key, m.to_string(), "must be in [0, 1)"));
            }
        }
        Ok(())
    }

    fn stages(&self, job: &JobSpec) -> Vec<Stage> {
        let p = job.pretrain.clone().unwrap_or_default();
        let mut stages: Vec<Stage> = (0..Self::rbms(job) as u32)
            .map(|layer| Stage {
                name: format!("rbm{}", layer + 1),
                supervised: false,
                input_layers: layer,
                epochs: p.epochs,
                batch_size: p.batch_size,
                optimizer: OptimizerConfig {
                    lr: p.lr,
                    weight_decay: p.weight_decay,
                    momentum: Some(p.momentum),
                    final_momentum: Some((p.momentum_epochs, p.final_momentum)),
                    ..OptimizerConfig::default()
                },
            })
            .collect();
        stages.push(Stage::supervised("finetune", job));
        stages
    }

    fn network(
        &self,
        job: &JobSpec,
        index: usize,
        input_dim: usize,
        classes: usize,
    ) -> Result<SharedNetwork, ModelError> {
        if index < Self::rbms(job) {
            return Ok(Arc::new(Self::build(job, input_dim, classes)?.rbm(index)?));
        }
        Ok(Arc::new(DenseKeys::of(job)?.network(
            input_dim,
            classes,
            Activation::Sigmoid,
        )?))
    }

    /// An RBM's input: the data through the trained RBMs below, as
    /// mean-field probabilities or, when trained on with
    /// `[pretrain] sample_inputs`, as binary states drawn from them.
    fn input(
        &self,
        job: &JobSpec,
        index: usize,
        trained: &[Vec<f32>],
        data: &Dataset,
        training: bool,
        seed: u64,
    ) -> Result<Dataset, ModelError> {
        let sample = training && job.pretrain.as_ref().is_some_and(|p| p.sample_inputs);
        let below = trained.get(..index).ok_or_else(|| {
            ModelError::BadSpec(format!(
                "stage {index} needs {index} trained RBMs, {} given",
                trained.len()
            ))
        })?;
        Self::build(job, data.dim(), data.classes())?.features(below, data, sample, seed)
    }

    /// Fine-tuning starts from the trained RBMs unrolled (with a fresh
    /// softmax layer on top); an RBM from the data's mean activations.
    fn start(
        &self,
        job: &JobSpec,
        index: usize,
        trained: &[Vec<f32>],
        network: &dyn Network,
        sample: &Dataset,
        seed: u64,
    ) -> Result<Vec<f32>, ModelError> {
        if index < Self::rbms(job) || trained.is_empty() {
            return Ok(network.init_for(seed, sample));
        }
        let (_, params) = Self::build(job, sample.dim(), sample.classes())?.unroll(trained, seed)?;
        Ok(params)
    }

    fn size_key(&self, job: &JobSpec) -> (String, String) {
        DenseKeys::size_key(job)
    }
}
