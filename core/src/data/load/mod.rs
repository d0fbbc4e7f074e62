//! A user's own dataset from files: each format reads its files into two
//! [`Table`]s (train, test); what every format needs afterwards — widths
//! that agree, finite features, labels in range, scaling — is checked and
//! done here once. Nothing is half-loaded: a defect anywhere fails the load
//! with an error naming the file and where.
//!
//! A new format is a module with a [`Format`] and one line in [`format`].

mod arrow_table;
mod columnar_files;
mod csv_files;
mod idx_dir;
mod npy_files;
mod scale;

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::dataset::Dataset;
use super::idx::IdxError;
use crate::data::spec::{DataFormat, DataSpec, ImageLayout, Scale};

pub use scale::Standardizer;

/// Most classes a dataset may have: labels are stored as bytes.
pub const MAX_CLASSES: usize = 256;

/// What can be wrong with a user's dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An IDX file is malformed.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// A defect at a place in a file: a ragged or non-numeric row, a bad
    /// label, a wrong shape or type.
    #[error("{path}: {at}{why}")]
    Defect {
        /// The file.
        path: PathBuf,
        /// Where in it (`line 12: `, `row 3, feature 7: `), or empty.
        at: String,
        /// What is wrong.
        why: String,
    },
    /// A reader of the file's format failed (a CSV, NumPy or shape error),
    /// with its error kept.
    #[error("{path}: {at}{source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Where in it (`line 12: `), or empty.
        at: String,
        /// What the reader said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Train and test disagree.
    #[error("{train} has {train_width} features per example but {test} has {test_width}")]
    Widths {
        /// The training features' file.
        train: PathBuf,
        /// Its width.
        train_width: usize,
        /// The test features' file.
        test: PathBuf,
        /// Its width.
        test_width: usize,
    },
    /// A setting that does not fit the data.
    #[error("{0}")]
    Setting(String),
}

impl DataError {
    /// A reader's error `source` at `at` in `path`.
    pub fn read(path: &Path, at: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let at = at.into();
        DataError::Read {
            path: path.to_path_buf(),
            at: if at.is_empty() { at } else { format!("{at}: ") },
            source: Box::new(source),
        }
    }

    /// A defect at `at` in `path`.
    pub fn defect(path: &Path, at: impl Into<String>, why: impl Into<String>) -> Self {
        let at = at.into();
        DataError::Defect {
            path: path.to_path_buf(),
            at: if at.is_empty() { at } else { format!("{at}: ") },
            why: why.into(),
        }
    }
}

/// Features and labels as a format read them, before checks and scaling.
#[derive(Debug, Clone)]
pub struct Table {
    /// One row per example.
    pub features: Array2<f32>,
    /// One label per example, as read (checked later).
    pub labels: Vec<i64>,
    /// The features were stored as bytes (0–255): they scale to `[0, 1]` by default.
    pub bytes: bool,
    /// The dimensions of one example as the file stores them (`[28, 28]`
    /// for MNIST's images); empty when the file knows only rows of values.
    pub dims: Vec<usize>,
    /// Where the features came from, for errors.
    pub features_file: PathBuf,
    /// Where the labels came from.
    pub labels_file: PathBuf,
}

/// Reads one format's files.
pub trait Format {
    /// Reads the training and test tables from `path`.
    fn read(&self, spec: &DataSpec, path: &Path) -> Result<(Table, Table), DataError>;
}

/// The reader of a file format; `None` for MNIST, which is built in.
pub fn format(f: DataFormat) -> Option<&'static dyn Format> {
    match f {
        DataFormat::Mnist => None,
        DataFormat::Idx => Some(&idx_dir::IdxDir),
        DataFormat::Csv => Some(&csv_files::CsvFiles),
        DataFormat::Npy => Some(&npy_files::NpyFiles),
        DataFormat::Parquet => Some(&columnar_files::ParquetFiles),
        DataFormat::Arrow => Some(&columnar_files::ArrowFiles),
    }
}

/// A user's dataset, checked and scaled.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The training set.
    pub train: Dataset,
    /// The test set.
    pub test: Dataset,
    /// The statistics the features were standardized with (`scale = "standardize"`).
    pub standardizer: Option<Standardizer>,
    /// One example's `[channels, height, width]`: the job's, or what the
    /// files store; `None` for rows of values.
    pub shape: Option<[usize; 3]>,
}

/// Reads the user's files of `spec`; `standardizer`, when given (a saved
/// model's), scales the features instead of statistics of this training set.
pub fn load(spec: &DataSpec, standardizer: Option<Standardizer>) -> Result<Loaded, DataError> {
    let (Some(reader), Some(path)) = (format(spec.format), spec.path.as_deref()) else {
        return Err(DataError::Setting(format!(
            "format = \"{}\" is not read from files of a path",
            spec.format.name()
        )));
    };
    let (train, test) = reader.read(spec, Path::new(path))?;
    finish(spec, train, test, standardizer)
}

/// The checks and scaling every format shares.
fn finish(spec: &DataSpec, train: Table, test: Table, fitted: Option<Standardizer>) -> Result<Loaded, DataError> {
    for t in [&train, &test] {
        check_table(t)?;
    }
    if train.features.ncols() != test.features.ncols() {
        return Err(DataError::Widths {
            train: train.features_file.clone(),
            train_width: train.features.ncols(),
            test: test.features_file.clone(),
            test_width: test.features.ncols(),
        });
    }
    let classes = classes(spec, &train, &test)?;
    let shape = example_shape(spec, &train)?;
    let scale = spec
        .scale
        .unwrap_or(if train.bytes { Scale::Unit } else { Scale::None });
    let (mut train_x, mut test_x) = (train.features, test.features);
    let mut standardizer = None;
    match scale {
        Scale::Unit => {
            train_x /= 255.0;
            test_x /= 255.0;
        }
        Scale::Standardize => {
            let s = fitted.unwrap_or_else(|| Standardizer::fit(&train_x));
            if s.width() != train_x.ncols() {
                return Err(DataError::Setting(format!(
                    "the model was trained on {} features, the data has {}",
                    s.width(),
                    train_x.ncols()
                )));
            }
            s.apply(&mut train_x);
            s.apply(&mut test_x);
            standardizer = Some(s);
        }
        Scale::None => {}
    }
    let build = |x, labels: Vec<i64>, file: &Path| {
        // Labels were checked to lie in 0..classes ≤ 256.
        let labels = labels.into_iter().map(|l| l as u8).collect();
        Dataset::new(x, labels, classes).map_err(|e| DataError::read(file, "", e))
    };
    Ok(Loaded {
        train: build(train_x, train.labels, &train.labels_file)?,
        test: build(test_x, test.labels, &test.labels_file)?,
        standardizer,
        shape,
    })
}

/// One example's `[channels, height, width]`: the job's `shape`, which must
/// hold as many values as an example has; else the stored dimensions of an
/// image (`[h, w]`, or three read in the job's `layout`).
fn example_shape(spec: &DataSpec, train: &Table) -> Result<Option<[usize; 3]>, DataError> {
    let width = train.features.ncols();
    if let Some(given) = &spec.shape {
        let shape: [usize; 3] = given
            .as_slice()
            .try_into()
            .map_err(|_| DataError::Setting(format!("data.shape = {given:?}: give [channels, height, width]")))?;
        if shape.iter().product::<usize>() != width {
            return Err(DataError::Setting(format!(
                "data.shape = {given:?} holds {} values, but {}'s examples have {width} features",
                shape.iter().product::<usize>(),
                train.features_file.display()
            )));
        }
        return Ok(Some(shape));
    }
    Ok(match (train.dims.as_slice(), spec.layout) {
        (&[h, w], _) => Some([1, h, w]),
        (&[c, h, w], ImageLayout::Chw) | (&[h, w, c], ImageLayout::Hwc) => Some([c, h, w]),
        _ => None,
    })
}

/// Counts agree, there is data, every feature is finite, labels are not negative.
fn check_table(t: &Table) -> Result<(), DataError> {
    if t.features.nrows() != t.labels.len() {
        let why = format!(
            "{} examples, but {} has {} labels",
            t.features.nrows(),
            t.labels_file.display(),
            t.labels.len()
        );
        return Err(DataError::defect(&t.features_file, "", why));
    }
    if t.labels.is_empty() {
        return Err(DataError::defect(&t.features_file, "", "no examples"));
    }
    if t.features.ncols() == 0 {
        return Err(DataError::defect(&t.features_file, "", "no features"));
    }
    if let Some(((row, col), v)) = t.features.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(DataError::defect(
            &t.features_file,
            format!("example {row}, feature {col}"),
            format!("{v} is not a finite number"),
        ));
    }
    if let Some((row, l)) = t.labels.iter().enumerate().find(|(_, l)| **l < 0) {
        return Err(DataError::defect(
            &t.labels_file,
            format!("example {row}"),
            format!("negative label {l}"),
        ));
    }
    Ok(())
}

/// The class count: the job's, or the largest label seen + 1; every label below it.
fn classes(spec: &DataSpec, train: &Table, test: &Table) -> Result<usize, DataError> {
    let largest = train.labels.iter().chain(&test.labels).copied().max().unwrap_or(0);
    let classes = match spec.classes {
        Some(c) => c as usize,
        None => usize::try_from(largest).unwrap_or(usize::MAX).saturating_add(1).max(2),
    };
    if classes > MAX_CLASSES {
        return Err(DataError::Setting(format!(
            "labels go up to {largest}: at most {MAX_CLASSES} classes are supported"
        )));
    }
    for t in [train, test] {
        if let Some((row, l)) = t.labels.iter().enumerate().find(|(_, l)| **l >= classes as i64) {
            return Err(DataError::defect(
                &t.labels_file,
                format!("example {row}"),
                format!(
                    "label {l} is out of range (data.classes = {classes}: labels 0 to {})",
                    classes - 1
                ),
            ));
        }
    }
    Ok(classes)
}

/// Examples to predict, from a `.csv` (features only), a `.npy` or an IDX
/// images file, scaled as `spec` (a saved model's job) scaled its training
/// data, with the model's `standardizer` where it standardized.
pub fn read_inputs(
    path: &Path,
    spec: &DataSpec,
    standardizer: Option<&Standardizer>,
) -> Result<Array2<f32>, DataError> {
    let name = path.to_string_lossy();
    let (mut x, bytes) = if name.ends_with(".csv") {
        (csv_files::read_features(path)?, false)
    } else if name.ends_with(".npy") {
        npy_files::read_features(path)?
    } else {
        let images = super::idx::read_idx(path)?;
        let n = images.dims.first().copied().unwrap_or(0);
        let width = images.dims.iter().skip(1).product();
        let x = Array2::from_shape_vec((n, width), images.data.iter().map(|&p| f32::from(p)).collect())
            .map_err(|e| DataError::read(path, "", e))?;
        (x, true)
    };
    if let Some(((row, col), v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(DataError::defect(
            path,
            format!("example {row}, feature {col}"),
            format!("{v} is not a finite number"),
        ));
    }
    let byte_scaled = spec.format == DataFormat::Mnist || bytes;
    match spec
        .scale
        .unwrap_or(if byte_scaled { Scale::Unit } else { Scale::None })
    {
        Scale::Unit => x /= 255.0,
        Scale::Standardize => {
            let s = standardizer.ok_or_else(|| {
                DataError::Setting("the model standardized its features but keeps no statistics to scale these".into())
            })?;
            if s.width() != x.ncols() {
                return Err(DataError::Setting(format!(
                    "{}: {} features per example, the model was trained on {}",
                    path.display(),
                    x.ncols(),
                    s.width()
                )));
            }
            s.apply(&mut x);
        }
        Scale::None => {}
    }
    Ok(x)
}

/// Reads a whole file, naming it if that fails.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(features: Vec<f32>, width: usize, labels: Vec<i64>) -> Table {
        let rows = features.len() / width;
        Table {
            features: Array2::from_shape_vec((rows, width), features).unwrap(),
            labels,
            bytes: false,
            dims: Vec::new(),
            features_file: "x.npy".into(),
            labels_file: "y.npy".into(),
        }
    }

    #[test]
    fn classes_come_from_the_labels_or_the_job() {
        let spec = DataSpec::default();
        let l = finish(
            &spec,
            table(vec![0.0; 4], 2, vec![0, 2]),
            table(vec![1.0; 2], 2, vec![1]),
            None,
        )
        .unwrap();
        assert_eq!((l.train.classes(), l.test.len()), (3, 1));
        let five = DataSpec {
            classes: Some(5),
            ..DataSpec::default()
        };
        let l = finish(
            &five,
            table(vec![0.0; 2], 2, vec![0]),
            table(vec![0.0; 2], 2, vec![4]),
            None,
        )
        .unwrap();
        assert_eq!(l.train.classes(), 5);
        let two = DataSpec {
            classes: Some(2),
            ..DataSpec::default()
        };
        let err = finish(
            &two,
            table(vec![0.0; 2], 2, vec![0]),
            table(vec![0.0; 2], 2, vec![4]),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("label 4 is out of range"), "{err}");
    }

    #[test]
    fn defects_are_named() {
        let spec = DataSpec::default();
        let ok = || table(vec![0.0; 2], 2, vec![0]);
        let cases = [
            (
                table(vec![0.0, f32::NAN], 2, vec![0]),
                "example 0, feature 1: NaN is not a finite number",
            ),
            (table(vec![0.0; 2], 2, vec![-1]), "negative label -1"),
            (table(vec![0.0; 4], 2, vec![0]), "2 examples, but y.npy has 1 labels"),
            (
                table(vec![0.0; 3], 3, vec![0]),
                "has 3 features per example but x.npy has 2",
            ),
            (table(vec![0.0; 2], 2, vec![300]), "at most 256 classes"),
        ];
        for (bad, want) in cases {
            let err = finish(&spec, bad, ok(), None).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn byte_features_scale_to_unit_by_default() {
        let mut bytes = table(vec![0.0, 255.0], 2, vec![0]);
        bytes.bytes = true;
        let l = finish(&DataSpec::default(), bytes.clone(), bytes, None).unwrap();
        assert_eq!(l.train.features()[[0, 1]], 1.0);
        let standardize = DataSpec {
            scale: Some(Scale::Standardize),
            ..DataSpec::default()
        };
        let x = table(vec![1.0, 10.0, 3.0, 10.0], 2, vec![0, 1]);
        let l = finish(&standardize, x.clone(), x.clone(), None).unwrap();
        assert_eq!(l.train.features().column(0).to_vec(), vec![-1.0, 1.0]);
        assert_eq!(l.train.features().column(1).to_vec(), vec![0.0, 0.0]);
        // A saved model's statistics scale new data as its training data was.
        let shifted = table(vec![3.0, 10.0, 5.0, 10.0], 2, vec![0, 1]);
        let again = finish(&standardize, shifted.clone(), shifted, l.standardizer).unwrap();
        assert_eq!(again.train.features().column(0).to_vec(), vec![1.0, 3.0]);
    }
}
