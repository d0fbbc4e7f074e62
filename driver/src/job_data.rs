//! A job's data: MNIST from the driver's cache or the user's files, cut
//! ([`deepdist_core::data::cut`]) into partitions and evaluation sets.

use std::sync::Arc;

use deepdist_core::data::cut::cut;
use deepdist_core::data::load::{self, Standardizer};
use deepdist_core::data::{Dataset, Mnist, Partition};
use deepdist_core::job::{DataFormat, JobSpec};
use deepdist_wire::fetch::FetchOptions;

use crate::error::JobError;
use crate::state::Shared;

/// What a job trains and is evaluated on.
pub struct JobData {
    /// The training set (what remains after `validation`).
    pub train: Arc<Dataset>,
    /// Its partitions.
    pub partitions: Vec<Partition>,
    /// Evaluated after every epoch (and against `target_accuracy`): the
    /// validation examples when the job holds some out, else the test set.
    pub eval: Arc<Dataset>,
    /// The test set, when it is scored once at the end instead.
    pub held_test: Option<Arc<Dataset>>,
    /// Features per example.
    pub dim: usize,
    /// Classes.
    pub classes: usize,
    /// How the features were standardized, if they were: saved with the model.
    pub standardizer: Option<Standardizer>,
    /// One example's `[channels, height, width]`, when the job or the files say.
    pub shape: Option<[usize; 3]>,
}

/// Loads and cuts the data of `spec`.
pub async fn load_for(shared: &Shared, spec: &JobSpec) -> Result<JobData, JobError> {
    let mut standardizer = None;
    let mut shape = spec.data.known_shape();
    let (train, test) = match spec.data.format {
        DataFormat::Mnist => {
            let mnist = load_mnist(shared).await?;
            (mnist.train.clone(), mnist.test.clone())
        }
        _ => {
            let data = spec.data.clone();
            let loaded = tokio::task::spawn_blocking(move || load::load(&data, None)).await??;
            standardizer = loaded.standardizer;
            shape = loaded.shape;
            (Arc::new(loaded.train), Arc::new(loaded.test))
        }
    };
    let spec = spec.clone();
    let cut = tokio::task::spawn_blocking(move || cut(&spec.data, spec.train.seed, &train, &test)).await??;
    Ok(JobData {
        dim: cut.train.dim(),
        classes: cut.train.classes(),
        train: cut.train,
        partitions: cut.partitions,
        eval: cut.eval,
        held_test: cut.held_test,
        standardizer,
        shape,
    })
}

async fn load_mnist(shared: &Shared) -> Result<Arc<Mnist>, JobError> {
    let dir = shared.config.data_dir.clone();
    shared
        .mnist
        .get_or_try_init(|| async move {
            Ok::<_, JobError>(Arc::new(
                tokio::task::spawn_blocking(move || deepdist_wire::fetch::load_mnist(&FetchOptions::new(dir)))
                    .await??,
            ))
        })
        .await
        .cloned()
}
