//! `[data]`: which dataset a job trains on, where its files are, how they
//! are read and scaled, and how the training set is cut.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a job's examples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// MNIST digits, built in: found under the data directory or fetched,
    /// and verified.
    #[default]
    Mnist,
    /// A directory of IDX files under MNIST's four standard names.
    Idx,
    /// `train.csv` and `test.csv` in a directory.
    Csv,
    /// `x_train.npy`, `y_train.npy`, `x_test.npy`, `y_test.npy` in a
    /// directory, or one `.npz` file holding those four arrays.
    Npy,
    /// `train` and `test` Parquet files, or directories of part files.
    Parquet,
    /// `train` and `test` Arrow IPC files, or directories of part files.
    Arrow,
}

impl DataFormat {
    /// The name a job file uses.
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Mnist => "mnist",
            DataFormat::Idx => "idx",
            DataFormat::Csv => "csv",
            DataFormat::Npy => "npy",
            DataFormat::Parquet => "parquet",
            DataFormat::Arrow => "arrow",
        }
    }
}

/// How features are scaled before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Divided by 255, for pixel values 0–255 (the default for byte features).
    Unit,
    /// Per feature, minus the training set's mean, over its standard deviation.
    Standardize,
    /// As they are (the default for other features).
    None,
}

/// The order of an image's values in a row of features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageLayout {
    /// Channel by channel, each map row by row (PyTorch's, and IDX files').
    #[default]
    Chw,
    /// Pixel by pixel, each pixel's channels together (channels-last, as
    /// many NumPy image sets are stored).
    Hwc,
}

/// A CSV file's label column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    /// By position, from 0.
    Index(usize),
    /// By its header's name.
    Name(String),
}

/// How `label_column` is written on the wire: postcard cannot read an
/// untagged value, so only human-readable formats (TOML) see the bare one.
#[derive(Serialize, Deserialize)]
enum LabelColumnTagged {
    Index(usize),
    Name(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LabelColumnBare {
    Index(usize),
    Name(String),
}

impl Serialize for LabelColumn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (LabelColumn::Index(i), true) => s.serialize_u64(*i as u64),
            (LabelColumn::Name(n), true) => s.serialize_str(n),
            (LabelColumn::Index(i), false) => LabelColumnTagged::Index(*i).serialize(s),
            (LabelColumn::Name(n), false) => LabelColumnTagged::Name(n.clone()).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for LabelColumn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Ok(match LabelColumnBare::deserialize(d)? {
                LabelColumnBare::Index(i) => LabelColumn::Index(i),
                LabelColumnBare::Name(n) => LabelColumn::Name(n),
            })
        } else {
            Ok(match LabelColumnTagged::deserialize(d)? {
                LabelColumnTagged::Index(i) => LabelColumn::Index(i),
                LabelColumnTagged::Name(n) => LabelColumn::Name(n),
            })
        }
    }
}

/// `[data]`: the dataset and how it is cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    /// `mnist` (built in), `idx`, `csv` or `npy` (`dataset` is the older name).
    #[serde(alias = "dataset")]
    pub format: DataFormat,
    /// The directory holding the files (for `npy`, or the `.npz` file).
    pub path: Option<String>,
    /// `csv`: whether the first row names the columns (default: it does
    /// when any of its fields is not a number).
    pub header: Option<bool>,
    /// `csv`: the label column, by name or index (default `label`, else the first).
    pub label_column: Option<LabelColumn>,
    /// The shape of one example, `[channels, height, width]`, for networks
    /// with convolutions (default: what the files say, for IDX and NumPy
    /// files; none, a flat vector, for CSV).
    pub shape: Option<Vec<usize>>,
    /// The order of an image's values: `chw` (the default) or `hwc`.
    pub layout: ImageLayout,
    /// Number of classes (default: the largest label + 1).
    pub classes: Option<u32>,
    /// Feature scaling (default `unit` for byte features, else `none`).
    pub scale: Option<Scale>,
    /// Hold out this many training examples (by the job's seed) for the
    /// per-epoch evaluation and `target_accuracy`; the test set is then
    /// scored once, at the end.
    pub validation: Option<u32>,
    /// Partitions the training set is cut into (1–4096; more than executors is normal).
    pub partitions: u32,
    /// Shuffle examples before partitioning.
    pub shuffle: bool,
    /// Use only the first N training examples (quick experiments).
    pub train_examples: Option<u32>,
    /// Evaluate on only the first N test examples.
    pub test_examples: Option<u32>,
    /// The files are on a filesystem every host mounts (NFS, Lustre):
    /// executors read their partitions from `path` themselves and check
    /// them against the driver's content hash, instead of receiving them.
    pub shared: bool,
}

impl DataSpec {
    /// One example's `[channels, height, width]` as far as the job tells:
    /// its `shape`, or MNIST's 1×28×28; files' own shapes are known only
    /// once read.
    pub fn known_shape(&self) -> Option<[usize; 3]> {
        match (&self.shape, self.format) {
            (Some(s), _) => s.as_slice().try_into().ok(),
            (None, DataFormat::Mnist) => Some([1, 28, 28]),
            (None, _) => None,
        }
    }
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            format: DataFormat::Mnist,
            path: None,
            header: None,
            label_column: None,
            shape: None,
            layout: ImageLayout::Chw,
            classes: None,
            scale: None,
            validation: None,
            partitions: 8,
            shuffle: true,
            train_examples: None,
            test_examples: None,
            shared: false,
        }
    }
}
