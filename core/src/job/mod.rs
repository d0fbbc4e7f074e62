//! Job definitions: TOML files users submit, parsed strictly (unknown keys
//! refused) and validated with errors that name the key and what is allowed.

mod check;
pub mod kinds;
mod model_spec;
mod size;
mod stage;
mod train;
mod validate;

use serde::{Deserialize, Serialize};

pub use crate::data::spec::{DataFormat, DataSpec, LabelColumn, Scale};
pub use model_spec::{DEFAULT_KIND, ModelSpec};
pub use size::{ModelLimit, default_model_bytes};
pub use stage::Stage;
pub use train::{Mode, ModeKeys, TrainSpec};

use crate::model::{ModelError, SharedNetwork};
use crate::optim::OptimizerConfig;

/// What is wrong with a job definition.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    /// Not valid TOML for a job: syntax, an unknown key, a wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or other source) it came from.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key holds a value outside what is allowed.
    #[error("{origin}: `{key}` = {value}: {allowed}")]
    Invalid {
        /// The file it came from.
        origin: String,
        /// The key, e.g. `train.batch_size`.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

/// Where a job's state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the jobs before it.
    Queued,
    /// Training.
    Running,
    /// Finished its epochs (or reached its target).
    Done,
    /// Stopped by an error.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobState {
    /// True once the job can no longer change.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        };
        f.write_str(s)
    }
}

/// `[pretrain]`: the RBM stages of a DBN, with defaults from Hinton's
/// "A Practical Guide to Training Restricted Boltzmann Machines" (2010).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainSpec {
    /// Epochs per RBM (0 skips pre-training: the network starts at random).
    pub epochs: u32,
    /// Minibatch size (the guide: 10 to 100).
    pub batch_size: u32,
    /// Learning rate for weights and biases (the guide: 0.1 for binary units... scaled by batch mean).
    pub lr: f32,
    /// Momentum for the first `momentum_epochs` epochs (the guide: 0.5).
    pub momentum: f32,
    /// Momentum afterwards (the guide: 0.9).
    pub final_momentum: f32,
    /// Epochs at the initial momentum.
    pub momentum_epochs: u32,
    /// L2 weight decay (the guide: 0.0001 to 0.0002... 0.0002 here).
    pub weight_decay: f32,
    /// Contrastive-divergence steps.
    pub cd_k: u32,
    /// Feed each RBM sampled binary states of the layer below instead of
    /// its mean-field probabilities.
    pub sample_inputs: bool,
}

impl Default for PretrainSpec {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 100,
            lr: 0.1,
            momentum: 0.5,
            final_momentum: 0.9,
            momentum_epochs: 2,
            weight_decay: 0.0002,
            cd_k: 1,
            sample_inputs: false,
        }
    }
}

/// A whole job definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A name for status and the output directory (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// `[data]`.
    #[serde(default)]
    pub data: DataSpec,
    /// `[model]`.
    #[serde(default)]
    pub model: ModelSpec,
    /// `[train]`.
    #[serde(default)]
    pub train: TrainSpec,
    /// `[optimizer]`.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// `[pretrain]` (DBN only). (No `skip_serializing_if`: postcard, which
    /// carries job specs to executors, is not self-describing.)
    #[serde(default)]
    pub pretrain: Option<PretrainSpec>,
}

impl JobSpec {
    /// Parses and validates a job file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, JobError> {
        refuse_both_format_names(text, origin)?;
        let spec: JobSpec = toml::from_str(text).map_err(|e| JobError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// The definition as TOML (what is stored beside the model).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The job with `data.shape` set to `shape` (what the files hold) when
    /// neither the job nor its format says it (MNIST's is known), so a saved
    /// job reads back as it was submitted wherever it can.
    pub fn with_shape(&self, shape: Option<[usize; 3]>) -> JobSpec {
        let mut spec = self.clone();
        if spec.data.known_shape().is_none() {
            spec.data.shape = shape.map(|s| s.to_vec());
        }
        spec
    }

    /// The kind of model the job names, from this process's registry.
    pub fn kind(&self) -> Result<std::sync::Arc<dyn kinds::ModelKind>, ModelError> {
        kinds::kind(&self.model.kind).ok_or_else(|| {
            ModelError::BadSpec(format!(
                "model kind {:?} is not one this build knows ({})",
                self.model.kind,
                kinds::names().join(", ")
            ))
        })
    }

    /// The network stage `index` trains, for the data's `input_dim` features
    /// and `classes` classes.
    pub fn network(&self, index: usize, input_dim: usize, classes: usize) -> Result<SharedNetwork, ModelError> {
        self.kind()?.network(self, index, input_dim, classes)
    }

    /// The network of the last stage: the model the job saves.
    pub fn final_network(&self, input_dim: usize, classes: usize) -> Result<SharedNetwork, ModelError> {
        let last = self.stages().len().saturating_sub(1);
        self.network(last, input_dim, classes)
    }
}

/// `[data] dataset` is the older name of `format`: a job that gives both
/// would otherwise be told of a "duplicate field `format`" it never wrote.
fn refuse_both_format_names(text: &str, origin: &str) -> Result<(), JobError> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(()); // The parse proper reports the syntax error.
    };
    let data = table.get("data").and_then(toml::Value::as_table);
    match data.map(|d| (d.get("dataset"), d.get("format"))) {
        Some((Some(dataset), Some(_))) => Err(JobError::Invalid {
            origin: origin.to_string(),
            key: "data.dataset".into(),
            value: dataset.to_string(),
            allowed:
                "`dataset` is the older name of `format`, which this job also gives: keep `format` and remove `dataset`"
                    .into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "mnist-mlp"
[data]
partitions = 4
[model]
hidden = [32]
activation = "tanh"
[train]
mode = "sync"
epochs = 2
batch_size = 64
[optimizer]
kind = "sgd"
lr = 0.1
momentum = 0.9
"#;

    #[test]
    fn both_names_of_the_format_are_refused_by_name() {
        let text = "name = \"x\"\n[data]\ndataset = \"mnist\"\nformat = \"idx\"\npath = \"/d\"\n";
        let e = JobSpec::from_toml(text, "j.toml").unwrap_err().to_string();
        assert!(
            e.contains("`data.dataset`") && e.contains("older name of `format`"),
            "{e}"
        );
        assert!(!e.contains("duplicate"), "{e}");
        // Either name alone is a job.
        JobSpec::from_toml("name = \"x\"\n[data]\ndataset = \"mnist\"\n", "j.toml").unwrap();
        JobSpec::from_toml("name = \"x\"\n[data]\nformat = \"mnist\"\n", "j.toml").unwrap();
    }

    #[test]
    fn parses_a_good_job_and_round_trips() {
        let spec = JobSpec::from_toml(GOOD, "good.toml").unwrap();
        assert_eq!(spec.train.mode, Mode::Sync);
        let keys: kinds::DenseKeys = spec.model.keys("good.toml").unwrap();
        assert_eq!(keys.activation, Some(crate::model::Activation::Tanh));
        assert_eq!(spec.stages().len(), 1);
        assert_eq!(spec.stages()[0].name, "train");
        assert_eq!(spec.data.partitions, 4);
        assert_eq!(spec.train.n_push, None);
        assert_eq!(JobSpec::from_toml(&spec.to_toml(), "again").unwrap(), spec);
    }

    #[test]
    fn a_dbn_job_has_one_stage_per_rbm_then_finetuning() {
        let text =
            "name = \"d\"\n[model]\nkind = \"dbn\"\nhidden = [20, 10]\n[pretrain]\nepochs = 3\nmomentum_epochs = 1\n";
        let spec = JobSpec::from_toml(text, "d.toml").unwrap();
        let stages = spec.stages();
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["rbm1", "rbm2", "finetune"]);
        assert_eq!((stages[1].supervised, stages[1].input_layers), (false, 1));
        assert!(stages[2].supervised);
        let schedule = stages[0].optimizer.schedule();
        assert_eq!((schedule.momentum_at(1), schedule.momentum_at(2)), (0.5, 0.9));
        assert_eq!(
            spec.network(1, 784, 10).unwrap().input_dim(),
            20,
            "the second RBM sees the first's units"
        );
        assert_eq!(spec.final_network(784, 10).unwrap().layout().tensors().len(), 6);
        let no_pretraining = text.replace("epochs = 3", "epochs = 0");
        assert_eq!(JobSpec::from_toml(&no_pretraining, "d").unwrap().stages().len(), 1);
        let relu = text.replace("kind = \"dbn\"", "kind = \"dbn\"\nactivation = \"relu\"");
        let err = JobSpec::from_toml(&relu, "d").unwrap_err().to_string();
        assert!(
            err.contains("`model.activation` = relu: a DBN's units are sigmoid"),
            "{err}"
        );
        let mlp_pretrain = "name = \"m\"\n[pretrain]\nepochs = 1\n";
        assert!(
            JobSpec::from_toml(mlp_pretrain, "m")
                .unwrap_err()
                .to_string()
                .contains("`pretrain`")
        );
    }

    #[test]
    fn a_model_kind_this_build_does_not_know_is_refused_naming_the_known_ones() {
        let err = JobSpec::from_toml("name = \"x\"\n[model]\nkind = \"resnet\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`model.kind`") && err.contains("resnet"), "{err}");
        assert!(err.contains("mlp") && err.contains("dbn"), "{err}");
        let err = JobSpec::from_toml("name = \"x\"\n[model]\nhiden = [3]\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `hiden`") && err.contains("hidden"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = GOOD.replace("batch_size = 64", "batchsize = 64");
        let err = JobSpec::from_toml(&text, "job.toml").unwrap_err().to_string();
        assert!(err.contains("job.toml"), "{err}");
        assert!(err.contains("unknown field `batchsize`"), "{err}");
        assert!(err.contains("batch_size"), "lists the allowed keys: {err}");
        let text = GOOD.replace("[optimizer]", "[optimiser]");
        let err = JobSpec::from_toml(&text, "job.toml").unwrap_err().to_string();
        assert!(err.contains("optimiser"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_allowed_values() {
        let cases = [
            (
                "batch_size = 64",
                "batch_size = 0",
                "`train.batch_size` = 0: must be between 1 and 65536",
            ),
            (
                "mode = \"sync\"",
                "mode = \"hogwild\"",
                "unknown variant `hogwild`, expected one of `async`, `sync`, `ssp`, `average`, `easgd`",
            ),
            ("lr = 0.1", "lr = -0.1", "`optimizer.lr` = -0.1"),
            (
                "momentum = 0.9",
                "momentum = 1.5",
                "`optimizer.momentum` = 1.5: must be in [0, 1)",
            ),
            ("kind = \"sgd\"", "kind = \"adagrad\"", "`optimizer.momentum`"),
            ("partitions = 4", "partitions = 0", "`data.partitions` = 0"),
            ("hidden = [32]", "hidden = [32, 0]", "`model.hidden[1]` = 0"),
            ("name = \"mnist-mlp\"", "name = \"../etc\"", "`name`"),
            (
                "epochs = 2",
                "epochs = 2\nn_push = 4",
                "`train.n_push` = (set): does not apply to mode = \"sync\"",
            ),
            (
                "epochs = 2",
                "epochs = 2\npush_warmup = 100",
                "`train.push_warmup` = (set): does not apply to mode = \"sync\"",
            ),
            (
                "epochs = 2",
                "epochs = 2\nreference_executors = 0",
                "`train.reference_executors` = 0",
            ),
            (
                "partitions = 4",
                "partitions = 4\npath = \"/d\"",
                "`data.path` = \"/d\": MNIST is built in",
            ),
            (
                "partitions = 4",
                "partitions = 4\nformat = \"csv\"",
                "format = \"csv\" needs the path",
            ),
            (
                "partitions = 4",
                "partitions = 4\nformat = \"npy\"\npath = \"/d\"\nheader = true",
                "`data.header` = a value: only for format = \"csv\"",
            ),
            (
                "partitions = 4",
                "partitions = 4\nshared = true",
                "`data.shared` = true",
            ),
            (
                "partitions = 4",
                "partitions = 4\nformat = \"csv\"\npath = \"/d\"\nclasses = 300",
                "`data.classes` = 300: must be between 2 and 256",
            ),
            (
                "partitions = 4",
                "partitions = 4\nformat = \"tfrecord\"",
                "unknown variant `tfrecord`",
            ),
        ];
        for (from, to, want) in cases {
            let err = JobSpec::from_toml(&GOOD.replace(from, to), "j.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{to}: {err}");
        }
    }
}
