//! How large a job's model is before anything is allocated, and the limit a
//! process accepts: a model that cannot travel in one frame, or whose copies
//! would not fit the process's share of memory, is refused at submit with the
//! key to change, instead of taking the process down later.

use super::{JobError, JobSpec};
use crate::data::mnist;
use crate::model::ModelError;

/// Bytes a frame needs beyond the parameters it carries (message header,
/// job spec, varints): generous, so a model at the limit still travels.
const FRAME_SLACK: usize = 1 << 20;

/// Largest model, in parameters, a process accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimit {
    /// Parameters allowed.
    pub max_params: u64,
    /// What sets it, for the error message.
    pub binding: String,
}

impl ModelLimit {
    /// The limit for frames of `max_frame` bytes and `max_model_bytes` per
    /// copy of the parameters: whichever is smaller.
    pub fn new(max_frame: usize, max_model_bytes: u64) -> Self {
        let by_frame = (max_frame.saturating_sub(FRAME_SLACK) / 4) as u64;
        let by_memory = max_model_bytes / 4;
        if by_frame <= by_memory {
            Self {
                max_params: by_frame,
                binding: format!("the parameters must fit one {} MiB frame", max_frame >> 20),
            }
        } else {
            Self {
                max_params: by_memory,
                binding: format!(
                    "{} MiB per copy of the parameters (--max-model-mb)",
                    max_model_bytes >> 20
                ),
            }
        }
    }
}

/// A default per-copy budget: the `copies` of the parameters a process keeps
/// in a quarter of this machine's memory (4 GiB of memory assumed if unknown).
pub fn default_model_bytes(copies: u64) -> u64 {
    let total = total_memory().unwrap_or(1 << 32);
    total / 4 / copies.max(1)
}

/// This machine's memory in bytes, from `/proc/meminfo` (Linux).
fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl JobSpec {
    /// The input width and classes of the job's dataset, as far as they are
    /// known before its files are read: MNIST's exactly; for a user's files,
    /// the least they can be (one feature, two classes), so that the hidden
    /// layers alone are checked at submit and the rest once the data is read.
    pub fn data_shape(&self) -> (usize, usize) {
        let classes = self.data.classes.map_or(2, |c| c as usize);
        match (self.data.format, self.data.known_shape()) {
            (super::DataFormat::Mnist, _) => (mnist::IMAGE_DIM, mnist::CLASSES),
            (_, Some(shape)) => (shape.iter().product(), classes),
            (_, None) => (1, 2),
        }
    }

    /// [`JobSpec::check_size`] before the files are read, on
    /// [`JobSpec::data_shape`]. A network that cannot be built without its
    /// input's shape (convolutions on files that carry it) is checked once
    /// the driver has read them.
    pub fn check_size_at_submit(&self, origin: &str, limit: &ModelLimit) -> Result<(), JobError> {
        let (dim, classes) = self.data_shape();
        if self.data.known_shape().is_none() && self.largest_model(dim, classes).is_err() {
            return Ok(());
        }
        self.check_size(origin, dim, classes, limit)
    }

    /// Parameters of the largest network any stage trains, for inputs of
    /// `input_dim` and `classes` outputs (building a network lays out its
    /// parameters without allocating them).
    pub fn largest_model(&self, input_dim: usize, classes: usize) -> Result<u64, ModelError> {
        let mut largest = 0;
        for index in 0..self.stages().len() {
            largest = largest.max(self.network(index, input_dim, classes)?.layout().len() as u64);
        }
        Ok(largest)
    }

    /// Refuses a job whose model is above `limit`, naming the key to change.
    pub fn check_size(
        &self,
        origin: &str,
        input_dim: usize,
        classes: usize,
        limit: &ModelLimit,
    ) -> Result<(), JobError> {
        let params = self.largest_model(input_dim, classes).map_err(|e| JobError::Invalid {
            origin: origin.into(),
            key: "model".into(),
            value: self.model.kind.clone(),
            allowed: e.to_string(),
        })?;
        if params <= limit.max_params {
            return Ok(());
        }
        let (key, value) = self
            .kind()
            .map_or_else(|_| ("model".into(), String::new()), |k| k.size_key(self));
        Err(JobError::Invalid {
            origin: origin.into(),
            key,
            value,
            allowed: format!(
                "the model has {params} parameters ({:.1} GB per copy); at most {} are accepted here: {}",
                params as f64 * 4e-9,
                limit.max_params,
                limit.binding
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> JobSpec {
        JobSpec::from_toml(text, "t").unwrap()
    }

    #[test]
    fn the_count_matches_the_built_models() {
        let mlp = job("name = \"m\"\n[model]\nhidden = [32, 16]\n");
        assert_eq!(
            mlp.largest_model(784, 10).unwrap(),
            (784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10) as u64
        );
        let dbn = job("name = \"d\"\n[model]\nkind = \"dbn\"\nhidden = [60, 5]\n[pretrain]\nepochs = 1\n");
        let rbm = dbn.network(0, 784, 10).unwrap().layout().len() as u64;
        let net = dbn.final_network(784, 10).unwrap().layout().len() as u64;
        assert_eq!(rbm, (784 * 60 + 784 + 60) as u64, "weights and both biases");
        assert!(rbm > net, "the first RBM is the larger here");
        assert_eq!(dbn.largest_model(784, 10).unwrap(), rbm);
    }

    #[test]
    fn a_model_above_the_limit_is_refused_naming_the_key_and_the_limit() {
        let huge = job("name = \"h\"\n[model]\nhidden = [65536, 65536]\n");
        let limit = ModelLimit::new(256 << 20, 1 << 40);
        let err = huge.check_size("h.toml", 784, 10, &limit).unwrap_err().to_string();
        assert!(err.contains("model.hidden"), "{err}");
        assert!(err.contains(&limit.max_params.to_string()), "{err}");
        assert!(err.contains("frame"), "{err}");
        let by_memory = ModelLimit::new(256 << 20, 1 << 20);
        let err = job("name = \"m\"\n[model]\nhidden = [500]\n")
            .check_size("m.toml", 784, 10, &by_memory)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-model-mb"), "{err}");
        assert!(job("name = \"m\"\n").check_size("m", 784, 10, &limit).is_ok());
    }

    #[test]
    fn the_default_budget_is_a_share_of_real_memory() {
        let one = default_model_bytes(1);
        assert!(one >= 1 << 28, "a quarter of this machine's memory: {one}");
        assert_eq!(default_model_bytes(8), one / 8);
    }
}
