//! Saving models: safetensors files whose tensors follow the model's layout
//! and whose metadata carries the job definition, written atomically; and
//! [`sealed`] files for the driver's own checkpoints.

pub mod sealed;

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::atomic::write_atomically;
use crate::model::Layout;

/// What can go wrong saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Parameters and layout disagree.
    #[error("{actual} parameters for a layout of {expected}")]
    Length {
        /// Values the layout has.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// The file is not what a checkpoint of this kind holds.
    #[error("safetensors: {0}")]
    Format(String),
    /// The safetensors encoding or decoding failed.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// Not a file of this kind (wrong magic number).
    #[error("{path} is not a deepdist checkpoint")]
    Foreign {
        /// The file.
        path: String,
    },
    /// Written by another format version.
    #[error("{path} is checkpoint format {found}; this deepdist reads format {expected}")]
    Version {
        /// The file.
        path: String,
        /// Its format version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// Shorter than its header says: a torn or cut-off write.
    #[error("{path} is truncated")]
    Truncated {
        /// The file.
        path: String,
    },
    /// Complete but its checksum does not match: the file is corrupt.
    #[error("{path} is corrupt (checksum mismatch)")]
    Checksum {
        /// The file.
        path: String,
    },
    /// The file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Metadata keys of a saved model.
pub const JOB_KEY: &str = "deepdist.job";
/// The standardization statistics (JSON), when the job standardized its features.
pub const STANDARDIZER_KEY: &str = "deepdist.standardize";
/// Metadata key of a saved model's input width (features per example).
pub const INPUT_KEY: &str = "deepdist.input_dim";
/// Metadata key of a saved model's number of classes (supervised models).
pub const CLASSES_KEY: &str = "deepdist.classes";
/// Metadata key of a saved model's layers, one per line with the shape each
/// puts out (networks that describe them).
pub const LAYERS_KEY: &str = "deepdist.layers";

/// Writes `params` as a safetensors file with one tensor per layout entry.
pub fn save_model(
    path: &Path,
    layout: &Layout,
    params: &[f32],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    if params.len() != layout.len() {
        return Err(CheckpointError::Length {
            expected: layout.len(),
            actual: params.len(),
        });
    }
    let bytes: Vec<Vec<u8>> = layout
        .tensors()
        .iter()
        .map(|t| params[t.range()].iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = layout
        .tensors()
        .iter()
        .zip(&bytes)
        .map(|(t, b)| TensorView::new(Dtype::F32, t.shape.clone(), b).map(|v| (t.name.clone(), v)))
        .collect::<Result<Vec<_>, _>>()?;
    let encoded = sorted_header(safetensors::serialize(views, Some(metadata))?)?;
    write_atomically(path, &encoded).map_err(|source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A saved model's metadata, and the shape of each of its tensors by name.
pub type ModelInfo = (HashMap<String, String>, HashMap<String, Vec<usize>>);

/// A saved model's [`ModelInfo`], read before knowing its layout.
pub fn model_info(path: &Path) -> Result<ModelInfo, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| CheckpointError::Format(format!("{}: not a safetensors model: {e}", path.display())))?;
    let shapes = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.shape.clone()))
        .collect();
    Ok((meta.metadata().clone().unwrap_or_default(), shapes))
}

/// The file with its header's keys in sorted order: safetensors writes the
/// metadata map in hash order, and the same model must be the same bytes.
fn sorted_header(encoded: Vec<u8>) -> Result<Vec<u8>, CheckpointError> {
    let bad = |e: String| CheckpointError::Format(format!("safetensors wrote a header it cannot read back: {e}"));
    let len = encoded
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("no length".into()))? as usize;
    let header = encoded.get(8..8 + len).ok_or_else(|| bad("short".into()))?;
    let mut entries: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(e.to_string()))?;
    if let Some(meta) = entries.get_mut("__metadata__") {
        let sorted: std::collections::BTreeMap<String, String> =
            serde_json::from_value(meta.take()).map_err(|e| bad(e.to_string()))?;
        *meta = serde_json::to_value(sorted).map_err(|e| bad(e.to_string()))?;
    }
    let mut sorted = serde_json::to_vec(&entries).map_err(|e| bad(e.to_string()))?;
    // The tensors start 8-aligned, as safetensors pads them (with spaces).
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + sorted.len() + encoded.len() - 8 - len);
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&encoded[8 + len..]);
    Ok(out)
}

/// Reads a model saved by [`save_model`] back into a flat vector in layout
/// order, with its metadata.
pub fn load_model(path: &Path, layout: &Layout) -> Result<(Vec<f32>, HashMap<String, String>), CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let file = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut params = Vec::with_capacity(layout.len());
    for t in layout.tensors() {
        let view = file.tensor(&t.name)?;
        if view.dtype() != Dtype::F32 || view.shape() != t.shape.as_slice() {
            return Err(CheckpointError::Format(format!(
                "tensor {} has the wrong type or shape",
                t.name
            )));
        }
        params.extend(
            view.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok((params, meta.metadata().clone().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Mlp, Model};

    #[test]
    fn the_same_model_is_the_same_bytes() {
        let mlp = Mlp::new(&[4, 3, 2], Activation::Relu).unwrap();
        let params = mlp.init(1);
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let path = dir.path().join(format!("{i}.safetensors"));
                // A fresh map each time: its hash order differs.
                let meta: HashMap<String, String> = (0..16).map(|k| (format!("key{k}"), k.to_string())).collect();
                save_model(&path, mlp.layout(), &params, meta.clone()).unwrap();
                assert_eq!(load_model(&path, mlp.layout()).unwrap(), (params.clone(), meta));
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]));
    }

    #[test]
    fn saves_and_loads_with_metadata() {
        let mlp = Mlp::new(&[4, 3, 2], Activation::Relu).unwrap();
        let params = mlp.init(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let meta = HashMap::from([("job".to_string(), "name = \"x\"".to_string())]);
        save_model(&path, mlp.layout(), &params, meta.clone()).unwrap();
        let (back, back_meta) = load_model(&path, mlp.layout()).unwrap();
        assert_eq!(back, params);
        assert_eq!(back_meta, meta);
        assert!(save_model(&path, mlp.layout(), &params[1..], meta).is_err());
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(load_model(&path, mlp.layout()).is_err());
    }
}
