//! The kinds of model a job can name (`[model] kind = "..."`), and the
//! registry they are found in. A kind turns a job into its stages and each
//! stage into a network ([`crate::model::Network`]); the rest of deepdist —
//! validation, the driver, the executors, MPI followers, saved models — asks
//! the registry and never matches on a kind. The built-in kinds are
//! registered the way a user's is: [`register`].

mod dbn;
mod dense;
mod layers;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use super::{JobError, JobSpec, Stage};
use crate::data::Dataset;
use crate::model::{ModelError, Network, SharedNetwork};

pub use dense::DenseKeys;
pub use layers::LayersKeys;

/// A kind of model: how a job naming it is checked, cut into stages, and
/// how each stage's network is built and started.
pub trait ModelKind: Send + Sync {
    /// The name jobs give in `[model] kind`.
    fn name(&self) -> &'static str;

    /// Checks the job's `[model]` keys and whatever else of the job this kind
    /// reads; errors name the key and what is allowed.
    fn check(&self, job: &JobSpec, origin: &str) -> Result<(), JobError>;

    /// The job's stages, in order; the last one trains the model saved at
    /// the end, each earlier one's parameters are kept for those after it.
    fn stages(&self, job: &JobSpec) -> Vec<Stage>;

    /// The network stage `index` trains, for rows of `input_dim` features
    /// (the data's, before any earlier stage) and `classes` classes.
    fn network(
        &self,
        job: &JobSpec,
        index: usize,
        input_dim: usize,
        classes: usize,
    ) -> Result<SharedNetwork, ModelError>;

    /// The input of stage `index` from `data`, for a stage whose
    /// [`Stage::input_layers`] is above zero: `data` passed through the
    /// trained parameters of the stages before (`trained`). `training` says
    /// whether the result is trained on (executors) or scored (the driver).
    fn input(
        &self,
        job: &JobSpec,
        index: usize,
        trained: &[Vec<f32>],
        data: &Dataset,
        training: bool,
        seed: u64,
    ) -> Result<Dataset, ModelError> {
        let _ = (job, trained, data, training, seed);
        Err(ModelError::BadSpec(format!(
            "model kind {} has no input transform for stage {index}",
            self.name()
        )))
    }

    /// The parameters stage `index` starts from, given the stages before
    /// (`trained`) and `sample`, an early part of its input; fresh by
    /// default ([`Network::init_for`]).
    fn start(
        &self,
        job: &JobSpec,
        index: usize,
        trained: &[Vec<f32>],
        network: &dyn Network,
        sample: &Dataset,
        seed: u64,
    ) -> Result<Vec<f32>, ModelError> {
        let _ = (job, index, trained);
        Ok(network.init_for(seed, sample))
    }

    /// The key and value a refusal for size names (the layers that make the
    /// model large).
    fn size_key(&self, job: &JobSpec) -> (String, String);
}

/// Model kinds by name.
#[derive(Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn ModelKind>>,
}

impl Registry {
    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ModelKind>> {
        self.kinds.get(name).cloned()
    }

    /// The names known, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

/// A kind registered twice under one name.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("a model kind named {0:?} is registered already")]
pub struct AlreadyRegistered(pub String);

fn global() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = Registry::default();
        for kind in builtin() {
            registry.kinds.insert(kind.name(), kind);
        }
        RwLock::new(registry)
    })
}

/// The built-in kinds: registered like any other, first.
fn builtin() -> [Arc<dyn ModelKind>; 3] {
    [Arc::new(dense::Mlp), Arc::new(dbn::Dbn), Arc::new(layers::Layers)]
}

/// Adds a kind, so that jobs may name it; a process registers its kinds
/// before it reads any job.
pub fn register(kind: Arc<dyn ModelKind>) -> Result<(), AlreadyRegistered> {
    let mut registry = global().write().unwrap_or_else(|p| p.into_inner());
    let name = kind.name();
    if registry.kinds.contains_key(name) {
        return Err(AlreadyRegistered(name.into()));
    }
    registry.kinds.insert(name, kind);
    Ok(())
}

/// The kind named `name`, if this process knows it.
pub fn kind(name: &str) -> Option<Arc<dyn ModelKind>> {
    global().read().unwrap_or_else(|p| p.into_inner()).get(name)
}

/// The names of every kind this process knows.
pub fn names() -> Vec<&'static str> {
    global().read().unwrap_or_else(|p| p.into_inner()).names()
}
