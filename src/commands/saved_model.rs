//! A model saved by a job, opened for use: its job (from the metadata), its
//! network rebuilt to the saved shapes, its parameters and scaling.

use std::path::Path;

use anyhow::Context;
use deepdist_core::checkpoint::{JOB_KEY, STANDARDIZER_KEY, load_model, model_info};
use deepdist_core::data::load::Standardizer;
use deepdist_core::job::JobSpec;
use deepdist_core::model::{Mlp, Model};

/// A saved supervised model.
pub struct SavedModel {
    /// The job that trained it.
    pub spec: JobSpec,
    /// Its network.
    pub mlp: Mlp,
    /// Its parameters.
    pub params: Vec<f32>,
    /// How its features were standardized, if they were.
    pub standardizer: Option<Standardizer>,
}

impl SavedModel {
    /// Opens `path` (a `model.safetensors` of a job).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let (metadata, shapes) = model_info(path)?;
        let job = metadata
            .get(JOB_KEY)
            .with_context(|| format!("{}: no job in the metadata: not a model deepdist saved", path.display()))?;
        let spec = JobSpec::from_toml(job, &format!("{} (its job)", path.display()))?;
        let layers = spec.model.hidden.len() + 1;
        let shape = |name: String| {
            shapes.get(&name).filter(|s| s.len() == 2).cloned().with_context(|| {
                format!(
                    "{}: no 2-D tensor {name}: not a supervised model (an RBM?)",
                    path.display()
                )
            })
        };
        let (first, last) = (
            shape("layer0.weight".into())?,
            shape(format!("layer{}.weight", layers - 1))?,
        );
        let mlp = spec.build_mlp(first[0], last[1])?;
        let (params, _) = load_model(path, mlp.layout()).with_context(|| format!("{}", path.display()))?;
        let standardizer = metadata
            .get(STANDARDIZER_KEY)
            .map(|json| serde_json::from_str(json))
            .transpose()
            .with_context(|| format!("{}: unreadable {STANDARDIZER_KEY}", path.display()))?;
        Ok(Self {
            spec,
            mlp,
            params,
            standardizer,
        })
    }

    /// Features per example.
    pub fn input_dim(&self) -> usize {
        self.mlp.sizes()[0]
    }

    /// Classes.
    pub fn classes(&self) -> usize {
        self.mlp.sizes()[self.mlp.sizes().len() - 1]
    }
}
