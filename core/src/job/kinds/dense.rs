//! `kind = "mlp"`: a multi-layer perceptron, `hidden` widths between the
//! data's features and its classes; and the keys it shares with a DBN's
//! fine-tuning network.

use serde::{Deserialize, Serialize};

use super::super::check::Check;
use super::super::{JobError, JobSpec, Stage};
use super::ModelKind;
use crate::model::{Activation, Dropout, ModelError, SharedNetwork};

/// The `[model]` keys of a dense network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseKeys {
    /// Hidden layer sizes; input and output sizes come from the dataset.
    pub hidden: Vec<usize>,
    /// Hidden nonlinearity (`relu`, `tanh`, `sigmoid`); the kind chooses the default.
    pub activation: Option<Activation>,
    /// Dropout probability of each hidden unit while training; 0 turns it off.
    pub dropout: f32,
    /// Dropout probability of each input while training.
    pub input_dropout: f32,
}

impl Default for DenseKeys {
    fn default() -> Self {
        Self {
            hidden: vec![500, 500],
            activation: None,
            dropout: 0.0,
            input_dropout: 0.0,
        }
    }
}

impl DenseKeys {
    /// Range checks: layer count and widths, dropout probabilities.
    pub(in crate::job) fn check(&self, c: &Check) -> Result<(), JobError> {
        c.in_range("model.hidden (number of layers)", self.hidden.len() as u64, 0, 16)?;
        for (i, &h) in self.hidden.iter().enumerate() {
            c.in_range(&format!("model.hidden[{i}]"), h as u64, 1, 65_536)?;
        }
        for (key, p) in [
            ("model.dropout", self.dropout),
            ("model.input_dropout", self.input_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(c.invalid(key, p.to_string(), "must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// The network `input_dim → hidden… → classes`, with `default` units
    /// unless the job names its activation.
    pub fn network(
        &self,
        input_dim: usize,
        classes: usize,
        default: Activation,
    ) -> Result<crate::model::Mlp, ModelError> {
        let mut sizes = vec![input_dim];
        sizes.extend(&self.hidden);
        sizes.push(classes);
        crate::model::Mlp::new(&sizes, self.activation.unwrap_or(default))?.with_dropout(Dropout {
            input: self.input_dropout,
            hidden: self.dropout,
        })
    }

    /// The keys of a job already validated (an unreadable table is then a
    /// mismatch between builds, reported as a bad model).
    pub(super) fn of(job: &JobSpec) -> Result<Self, ModelError> {
        job.model
            .keys::<DenseKeys>("the job")
            .map_err(|e| ModelError::BadSpec(e.to_string()))
    }

    /// What a refusal for size names: the hidden layers.
    pub(super) fn size_key(job: &JobSpec) -> (String, String) {
        Self::of(job).map_or_else(
            |_| ("model".into(), "(unreadable)".into()),
            |k| ("model.hidden".into(), format!("{:?}", k.hidden)),
        )
    }
}

/// The MLP kind.
pub(super) struct Mlp;

impl ModelKind for Mlp {
    fn name(&self) -> &'static str {
        "mlp"
    }

    fn check(&self, job: &JobSpec, origin: &str) -> Result<(), JobError> {
        let c = Check::new(origin);
        job.model.keys::<DenseKeys>(origin)?.check(&c)?;
        if job.pretrain.is_some() {
            return Err(c.invalid(
                "pretrain",
                "(set)".into(),
                "only a model.kind = \"dbn\" job is pre-trained",
            ));
        }
        Ok(())
    }

    fn stages(&self, job: &JobSpec) -> Vec<Stage> {
        vec![Stage::supervised("train", job)]
    }

    fn network(
        &self,
        job: &JobSpec,
        _index: usize,
        input_dim: usize,
        classes: usize,
    ) -> Result<SharedNetwork, ModelError> {
        Ok(std::sync::Arc::new(DenseKeys::of(job)?.network(
            input_dim,
            classes,
            Activation::Relu,
        )?))
    }

    fn size_key(&self, job: &JobSpec) -> (String, String) {
        DenseKeys::size_key(job)
    }
}
