//! A model saved by a job, opened for use: its job (from the metadata), its
//! network rebuilt through the job's model kind to the saved shapes, its
//! parameters and scaling.

use std::path::Path;

use anyhow::Context;
use deepdist_core::checkpoint::{CLASSES_KEY, INPUT_KEY, JOB_KEY, ModelInfo, STANDARDIZER_KEY, load_model, model_info};
use deepdist_core::data::load::Standardizer;
use deepdist_core::job::JobSpec;
use deepdist_core::model::SharedNetwork;

/// A saved supervised model.
pub struct SavedModel {
    /// The job that trained it.
    pub spec: JobSpec,
    /// Its network.
    pub network: SharedNetwork,
    /// Its parameters.
    pub params: Vec<f32>,
    /// How its features were standardized, if they were.
    pub standardizer: Option<Standardizer>,
}

impl SavedModel {
    /// Opens `path` (a `model.safetensors` of a job).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let info = model_info(path)?;
        let job = info
            .0
            .get(JOB_KEY)
            .with_context(|| format!("{}: no job in the metadata: not a model deepdist saved", path.display()))?;
        let spec = JobSpec::from_toml(job, &format!("{} (its job)", path.display()))?;
        let (input_dim, classes) = shape(path, &info)?;
        let network = spec
            .final_network(input_dim, classes)
            .with_context(|| format!("{}: cannot rebuild its network", path.display()))?;
        anyhow::ensure!(
            network.classes().is_some(),
            "{}: not a supervised model (an RBM?)",
            path.display()
        );
        let (params, _) = load_model(path, network.layout()).with_context(|| format!("{}", path.display()))?;
        let standardizer = info
            .0
            .get(STANDARDIZER_KEY)
            .map(|json| serde_json::from_str(json))
            .transpose()
            .with_context(|| format!("{}: unreadable {STANDARDIZER_KEY}", path.display()))?;
        Ok(Self {
            spec,
            network,
            params,
            standardizer,
        })
    }

    /// Features per example.
    pub fn input_dim(&self) -> usize {
        self.network.input_dim()
    }

    /// Classes.
    pub fn classes(&self) -> usize {
        self.network.classes().unwrap_or(0)
    }
}

/// The input width and classes the model was trained for: from its
/// metadata, or for models saved before it recorded them, from the first and
/// last weight of a dense network.
fn shape(path: &Path, (metadata, shapes): &ModelInfo) -> anyhow::Result<(usize, usize)> {
    let number = |key: &str| metadata.get(key).and_then(|v| v.parse::<usize>().ok());
    if let (Some(input), Some(classes)) = (number(INPUT_KEY), number(CLASSES_KEY)) {
        return Ok((input, classes));
    }
    let weights = (0..).map_while(|l| shapes.get(&format!("layer{l}.weight")));
    let dims: Vec<&Vec<usize>> = weights.collect();
    match (dims.first(), dims.last()) {
        (Some(first), Some(last)) if first.len() == 2 && last.len() == 2 => Ok((first[0], last[1])),
        _ => anyhow::bail!(
            "{}: neither {INPUT_KEY} and {CLASSES_KEY} in its metadata nor dense layer0.weight…: \
             not a supervised model this build can read",
            path.display()
        ),
    }
}
