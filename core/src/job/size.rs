//! How large a job's model is before anything is allocated, and the limit a
//! process accepts: a model that cannot travel in one frame, or whose copies
//! would not fit the process's share of memory, is refused at submit with the
//! key to change, instead of taking the process down later.

use super::{JobError, JobSpec, ModelKind};
use crate::data::mnist;

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

/// Parameters of a layer stack `sizes[0] → … → sizes[n]`, weights and biases.
fn stack_params(sizes: &[u64]) -> u64 {
    sizes
        .windows(2)
        .map(|w| w[0].saturating_mul(w[1]).saturating_add(w[1]))
        .fold(0, u64::saturating_add)
}

impl JobSpec {
    /// The input width and classes of the job's dataset, as far as they are
    /// known before its files are read: MNIST's exactly; for a user's files,
    /// the least they can be (one feature, two classes), so that the hidden
    /// layers alone are checked at submit and the rest once the data is read.
    pub fn data_shape(&self) -> (usize, usize) {
        match self.data.format {
            super::DataFormat::Mnist => (mnist::IMAGE_DIM, mnist::CLASSES),
            _ => (1, 2),
        }
    }

    /// Parameters of the largest model any stage trains, for inputs of
    /// `input_dim` and `classes` outputs, computed without building it.
    pub fn largest_model(&self, input_dim: usize, classes: usize) -> u64 {
        let mut sizes = vec![input_dim as u64];
        sizes.extend(self.model.hidden.iter().map(|&h| h as u64));
        sizes.push(classes as u64);
        let supervised = stack_params(&sizes);
        let pretrains = self.model.kind == ModelKind::Dbn && self.pretrain.as_ref().is_none_or(|p| p.epochs > 0);
        let largest_rbm = if pretrains {
            // Visible biases beside the hidden ones.
            sizes[..sizes.len() - 1]
                .windows(2)
                .map(|w| stack_params(w).saturating_add(w[0]))
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        supervised.max(largest_rbm)
    }

    /// Refuses a job whose model is above `limit`, naming the key to change.
    pub fn check_size(
        &self,
        origin: &str,
        input_dim: usize,
        classes: usize,
        limit: &ModelLimit,
    ) -> Result<(), JobError> {
        let params = self.largest_model(input_dim, classes);
        if params <= limit.max_params {
            return Ok(());
        }
        Err(JobError::Invalid {
            origin: origin.into(),
            key: "model.hidden".into(),
            value: format!("{:?}", self.model.hidden),
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
    use crate::model::Model;

    fn job(text: &str) -> JobSpec {
        JobSpec::from_toml(text, "t").unwrap()
    }

    #[test]
    fn the_count_matches_the_built_models() {
        let mlp = job("name = \"m\"\n[model]\nhidden = [32, 16]\n");
        assert_eq!(
            mlp.largest_model(784, 10),
            mlp.build_mlp(784, 10).unwrap().layout().len() as u64
        );
        let dbn = job("name = \"d\"\n[model]\nkind = \"dbn\"\nhidden = [60, 5]\n[pretrain]\nepochs = 1\n");
        let built = dbn.build_dbn(784, 10).unwrap();
        let rbm = built.rbm(0).unwrap().layout().len() as u64;
        let net = dbn.build_mlp(784, 10).unwrap().layout().len() as u64;
        assert!(rbm > net, "the first RBM is the larger here");
        assert_eq!(dbn.largest_model(784, 10), rbm);
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
