//! How a job's data is cut, the same on the driver and, for a shared
//! filesystem, on every executor: the first `train_examples` and
//! `test_examples`, `validation` examples held out by the seed, the rest
//! partitioned.

use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::Dataset;
use super::load::DataError;
use super::partition::{Partition, PartitionError, split};
use super::spec::DataSpec;

/// What a job trains and is evaluated on.
#[derive(Debug)]
pub struct Cut {
    /// The training set (what remains after `validation`).
    pub train: Arc<Dataset>,
    /// Its partitions.
    pub partitions: Vec<Partition>,
    /// Evaluated after every epoch: the validation examples when the job
    /// holds some out, else the test set.
    pub eval: Arc<Dataset>,
    /// The test set, when it is scored once at the end instead.
    pub held_test: Option<Arc<Dataset>>,
}

/// What can go wrong cutting a dataset.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    /// The settings do not fit the data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The partitions cannot be made.
    #[error(transparent)]
    Partition(#[from] PartitionError),
}

/// Cuts `train` and `test` as `data` says, shuffling by `seed`.
/// The sets are shared, not copied, where the settings keep them whole.
pub fn cut(data: &DataSpec, seed: u64, train: &Arc<Dataset>, test: &Arc<Dataset>) -> Result<Cut, CutError> {
    let first = |set: &Arc<Dataset>, n: Option<u32>| match n {
        Some(n) if (n as usize) < set.len() => Arc::new(set.head(n as usize)),
        _ => set.clone(),
    };
    let (train, test) = (first(train, data.train_examples), first(test, data.test_examples));
    let (train, eval, held_test) = match data.validation {
        None => (train, test, None),
        Some(n) => {
            let (train, validation) = hold_out(&train, n as usize, data.partitions as usize, seed)?;
            (Arc::new(train), Arc::new(validation), Some(test))
        }
    };
    let partitions = split(&train, data.partitions as usize, seed, data.shuffle)?;
    Ok(Cut {
        train,
        partitions,
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

    /// `n` examples of two distinct features each, in three classes.
    fn rows(n: usize) -> Arc<Dataset> {
        let x = Array2::from_shape_fn((n, 2), |(i, j)| (i * 2 + j) as f32);
        Arc::new(Dataset::new(x, (0..n).map(|i| (i % 3) as u8).collect(), 3).unwrap())
    }

    #[test]
    fn the_same_settings_cut_the_same_partitions() {
        let data = rows(40);
        let spec = DataSpec {
            partitions: 4,
            validation: Some(5),
            ..DataSpec::default()
        };
        let (a, b) = (
            cut(&spec, 9, &data, &data).unwrap(),
            cut(&spec, 9, &data, &data).unwrap(),
        );
        let hashes = |c: &Cut| c.partitions.iter().map(Partition::content_hash).collect::<Vec<_>>();
        assert_eq!(hashes(&a), hashes(&b));
        assert_eq!(
            (a.train.len(), a.eval.len(), a.held_test.map(|t| t.len())),
            (35, 5, Some(40))
        );
    }

    #[test]
    fn whole_sets_are_shared_and_only_cut_ones_copied() {
        let data = rows(12);
        let whole = DataSpec {
            partitions: 3,
            ..DataSpec::default()
        };
        let c = cut(&whole, 1, &data, &data).unwrap();
        assert!(Arc::ptr_eq(&c.train, &data) && Arc::ptr_eq(&c.eval, &data));
        let fewer = DataSpec {
            partitions: 3,
            train_examples: Some(6),
            test_examples: Some(100),
            ..DataSpec::default()
        };
        let c = cut(&fewer, 1, &data, &data).unwrap();
        assert_eq!(c.train.len(), 6);
        assert_eq!(*c.train, data.head(6));
        assert!(
            Arc::ptr_eq(&c.eval, &data),
            "more test examples than there are: all, shared"
        );
    }
}
