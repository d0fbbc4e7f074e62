//! MNIST: the four standard IDX files, verified by MD5, as two [`Dataset`]s
//! with pixels scaled to `[0, 1]`.

use std::path::Path;
use std::sync::Arc;

use ndarray::Array2;

use super::dataset::{Dataset, DatasetError};
use super::idx::{self, IdxError};
pub use super::mnist_files::{FILES, MnistFile};

/// Digits 0..9.
pub const CLASSES: usize = 10;

/// Pixels of one image, 28 × 28.
pub const IMAGE_DIM: usize = 28 * 28;

/// What can go wrong loading MNIST.
#[derive(Debug, thiserror::Error)]
pub enum MnistError {
    /// A verified file did not parse (cannot happen for the published files).
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// Images and labels disagree.
    #[error("{file}: {source}")]
    Dataset {
        /// The label file.
        file: &'static str,
        /// What disagrees.
        source: DatasetError,
    },
}

/// The MNIST training and test sets.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// 60,000 training examples.
    pub train: Arc<Dataset>,
    /// 10,000 test examples.
    pub test: Arc<Dataset>,
}

impl Mnist {
    /// Builds MNIST from the verified, uncompressed bytes of its four files in
    /// the order of [`FILES`]; finding or downloading them is the caller's
    /// (the wire crate's `fetch`), so that this crate needs no network.
    pub fn from_files(raw: &[Vec<u8>; 4]) -> Result<Self, MnistError> {
        let train = to_dataset(&raw[0], &raw[1], FILES[0], FILES[1])?;
        let test = to_dataset(&raw[2], &raw[3], FILES[2], FILES[3])?;
        Ok(Self {
            train: Arc::new(train),
            test: Arc::new(test),
        })
    }
}

/// Turns verified image and label bytes into a dataset.
pub fn to_dataset(
    images: &[u8],
    labels: &[u8],
    image_file: MnistFile,
    label_file: MnistFile,
) -> Result<Dataset, MnistError> {
    let images = idx::parse_idx(images, Path::new(image_file.name))?;
    let labels = idx::parse_idx(labels, Path::new(label_file.name))?;
    images_to_dataset(images, labels, image_file.name, label_file.name)
}

/// Checks shapes (`n × rows × cols` images, `n` labels) and scales pixels.
pub fn images_to_dataset(
    images: idx::IdxArray,
    labels: idx::IdxArray,
    image_name: &str,
    label_name: &'static str,
) -> Result<Dataset, MnistError> {
    if images.dims.len() != 3 {
        return Err(IdxError::BadDims {
            path: image_name.into(),
            dims: images.dims,
            why: "images need 3 dimensions (count, rows, cols)".into(),
        }
        .into());
    }
    if labels.dims.len() != 1 {
        return Err(IdxError::BadDims {
            path: label_name.into(),
            dims: labels.dims,
            why: "labels need 1 dimension (count)".into(),
        }
        .into());
    }
    let (n, dim) = (images.dims[0], images.dims[1] * images.dims[2]);
    let pixels: Vec<f32> = images.data.iter().map(|&p| f32::from(p) / 255.0).collect();
    let features = Array2::from_shape_vec((n, dim), pixels).map_err(|e| IdxError::BadDims {
        path: image_name.into(),
        dims: vec![n, dim],
        why: e.to_string(),
    })?;
    Dataset::new(features, labels.data, CLASSES).map_err(|source| MnistError::Dataset {
        file: label_name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::encode_idx;

    #[test]
    fn builds_a_dataset_and_rejects_disagreements() {
        let imgs = encode_idx(&[2, 2, 2], &[0, 255, 0, 255, 255, 0, 255, 0]);
        let labs = encode_idx(&[2], &[3, 7]);
        let d = to_dataset(&imgs, &labs, FILES[2], FILES[3]).unwrap();
        assert_eq!((d.len(), d.dim()), (2, 4));
        assert_eq!(d.features()[[0, 1]], 1.0);

        let three = encode_idx(&[3], &[3, 7, 1]);
        let err = to_dataset(&imgs, &three, FILES[2], FILES[3]).unwrap_err();
        assert!(err.to_string().contains("2 feature rows but 3 labels"), "{err}");
        assert!(err.to_string().contains("t10k-labels"), "{err}");

        let bad = encode_idx(&[2], &[3, 12]);
        let err = to_dataset(&imgs, &bad, FILES[2], FILES[3]).unwrap_err();
        assert!(err.to_string().contains("label 12 at row 1"), "{err}");

        let flat = encode_idx(&[8], &[0; 8]);
        assert!(to_dataset(&flat, &labs, FILES[2], FILES[3]).is_err());
    }
}
