//! A job's data: MNIST from the driver's cache or the user's files, cut to
//! `train_examples`/`test_examples`, with `validation` examples held out,
//! and partitioned.

use std::sync::Arc;

use deepdist_common::data::fetch::FetchOptions;
use deepdist_common::data::load::{self, Standardizer};
use deepdist_common::data::partition::split;
use deepdist_common::data::{DataError, Dataset, Mnist, Partition};
use deepdist_common::job::{DataFormat, JobSpec};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

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
}

/// Loads and cuts the data of `spec`.
pub async fn load_for(shared: &Shared, spec: &JobSpec) -> Result<JobData, JobError> {
    let mut standardizer = None;
    let (train, test) = match spec.data.format {
        DataFormat::Mnist => {
            let mnist = load_mnist(shared).await?;
            (Arc::new(mnist.train.clone()), Arc::new(mnist.test.clone()))
        }
        _ => {
            let data = spec.data.clone();
            let loaded = tokio::task::spawn_blocking(move || load::load(&data, None)).await??;
            standardizer = loaded.standardizer;
            (Arc::new(loaded.train), Arc::new(loaded.test))
        }
    };
    let spec = spec.clone();
    let mut data = tokio::task::spawn_blocking(move || cut(&spec, &train, &test)).await??;
    data.standardizer = standardizer;
    Ok(data)
}

fn cut(spec: &JobSpec, train: &Dataset, test: &Dataset) -> Result<JobData, JobError> {
    let d = &spec.data;
    let train = d
        .train_examples
        .map_or_else(|| train.clone(), |n| train.head(n as usize));
    let test = d.test_examples.map_or_else(|| test.clone(), |n| test.head(n as usize));
    let (train, eval, held_test) = match d.validation {
        None => (train, Arc::new(test), None),
        Some(n) => {
            let (train, validation) = hold_out(&train, n as usize, d.partitions as usize, spec.train.seed)?;
            (train, Arc::new(validation), Some(Arc::new(test)))
        }
    };
    let partitions = split(&train, d.partitions as usize, spec.train.seed, d.shuffle)?;
    Ok(JobData {
        partitions,
        dim: train.dim(),
        classes: train.classes(),
        train: Arc::new(train),
        standardizer: None,
        eval,
        held_test,
    })
}

/// Splits `n` examples, chosen by `seed`, off `train`; at least `partitions`
/// must remain.
fn hold_out(train: &Dataset, n: usize, partitions: usize, seed: u64) -> Result<(Dataset, Dataset), DataError> {
    if n + partitions > train.len() {
        return Err(DataError::Setting(format!(
            "data.validation = {n} leaves {} of {} training examples for {partitions} partitions",
            train.len().saturating_sub(n),
            train.len()
        )));
    }
    let mut rows: Vec<usize> = (0..train.len()).collect();
    // A stream of its own, so the held-out examples do not depend on how
    // the partitions are shuffled.
    rows.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7661_6c69_6461_7465));
    let (held, kept) = rows.split_at(n);
    let mut kept = kept.to_vec();
    kept.sort_unstable();
    Ok((train.select(&kept), train.select(held)))
}

async fn load_mnist(shared: &Shared) -> Result<Arc<Mnist>, JobError> {
    let dir = shared.config.data_dir.clone();
    shared
        .mnist
        .get_or_try_init(|| async move {
            Ok::<_, JobError>(Arc::new(
                tokio::task::spawn_blocking(move || Mnist::load(&FetchOptions::new(dir))).await??,
            ))
        })
        .await
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn validation_is_held_out_by_seed() {
        let x = Array2::from_shape_fn((10, 1), |(i, _)| i as f32);
        let data = Dataset::new(x, (0..10).map(|i| (i % 2) as u8).collect(), 2).unwrap();
        let (train, held) = hold_out(&data, 3, 2, 7).unwrap();
        assert_eq!((train.len(), held.len()), (7, 3));
        let mut all: Vec<f32> = train.features().iter().chain(held.features().iter()).copied().collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(hold_out(&data, 3, 2, 7).unwrap().1, held);
        let err = hold_out(&data, 9, 2, 7).unwrap_err().to_string();
        assert!(err.contains("data.validation = 9 leaves 1 of 10"), "{err}");
    }
}
