//! Arguments of the commands that use a saved model (`eval`, `predict`)
//! and name a dataset format.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::DataDirArg;

/// `deepdist eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model (a job's `model.safetensors`).
    pub model: PathBuf,
    /// The test data's format (default: the model's job's).
    #[arg(long, value_enum)]
    pub data_format: Option<FormatArg>,
    /// The test data's path (default: the model's job's).
    #[arg(long, value_name = "PATH")]
    pub data_path: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// `deepdist predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model (a job's `model.safetensors`).
    pub model: PathBuf,
    /// Examples: a `.csv` of features (no label column), a `.npy`, or an IDX images file.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Where the predictions go (CSV: `predicted,p0,p1,…`).
    #[arg(long, value_name = "FILE", default_value = "predictions.csv")]
    pub out: PathBuf,
}

/// A dataset format, as the job key `data.format` names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// MNIST, built in.
    Mnist,
    /// A directory of IDX files under MNIST's names.
    Idx,
    /// train.csv and test.csv in a directory.
    Csv,
    /// NumPy arrays in a directory, or one .npz file.
    Npy,
    /// train and test Parquet files, or directories of part files.
    Parquet,
    /// train and test Arrow IPC files, or directories of part files.
    Arrow,
}

impl From<FormatArg> for deepdist_core::job::DataFormat {
    fn from(f: FormatArg) -> Self {
        use deepdist_core::job::DataFormat;
        match f {
            FormatArg::Mnist => DataFormat::Mnist,
            FormatArg::Idx => DataFormat::Idx,
            FormatArg::Csv => DataFormat::Csv,
            FormatArg::Npy => DataFormat::Npy,
            FormatArg::Parquet => DataFormat::Parquet,
            FormatArg::Arrow => DataFormat::Arrow,
        }
    }
}
