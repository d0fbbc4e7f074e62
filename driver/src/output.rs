//! A job's outputs: `metrics.jsonl`, one JSON object per evaluation, and the
//! final `model.safetensors` with the job definition in its metadata.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use deepdist_core::checkpoint::{CLASSES_KEY, CheckpointError, INPUT_KEY, JOB_KEY, LAYERS_KEY, save_model};
use deepdist_core::data::load::Standardizer;
use deepdist_core::job::JobSpec;
use deepdist_core::model::Network;
use deepdist_wire::proto::EpochMetrics;

/// Appends metrics lines, flushing each so a crash loses at most the line
/// being written.
pub struct MetricsWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl MetricsWriter {
    /// Creates (or truncates) `dir/metrics.jsonl`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("metrics.jsonl");
        Ok(Self {
            file: BufWriter::new(File::create(&path)?),
            path,
        })
    }

    /// Reopens `dir/metrics.jsonl` of a resumed job, keeping only the lines
    /// `keep` accepts (those its checkpoint covers), and appends from there.
    pub fn reopen(dir: &Path, keep: impl Fn(&EpochMetrics) -> bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("metrics.jsonl");
        let old = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut kept = String::new();
        for line in old.lines() {
            // A line cut short by the crash does not parse and is dropped.
            if serde_json::from_str::<EpochMetrics>(line).is_ok_and(|m| keep(&m)) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        deepdist_core::atomic::write_atomically(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            file: BufWriter::new(file),
            path,
        })
    }

    /// Appends one line.
    pub fn append(&mut self, metrics: &EpochMetrics) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.file, metrics)?;
        self.file.write_all(b"\n")?;
        self.file.flush()
    }

    /// Makes every line appended so far durable: a checkpoint claims them.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a saved model's metadata says of where it came from.
pub struct Provenance<'a> {
    /// The job.
    pub spec: &'a JobSpec,
    /// Its id.
    pub job: u64,
    /// How it ended: done, cancelled, or why it failed.
    pub state: String,
    /// How its features were standardized, so new data can be scaled alike.
    pub standardizer: Option<&'a Standardizer>,
}

/// Saves a model as `path` (in the job's directory `dir`), with its
/// [`Provenance`] in its metadata.
pub fn save_final_model(
    dir: &Path,
    path: &Path,
    network: &dyn Network,
    params: &[f32],
    about: &Provenance<'_>,
) -> Result<PathBuf, CheckpointError> {
    let layout = network.layout();
    let Provenance {
        spec,
        job,
        state,
        standardizer,
    } = about;
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut metadata = HashMap::from([
        (JOB_KEY.to_string(), spec.to_toml()),
        ("deepdist.job_id".to_string(), job.to_string()),
        ("deepdist.state".to_string(), state.clone()),
        (INPUT_KEY.to_string(), network.input_dim().to_string()),
        (
            "deepdist.layer_sizes".to_string(),
            format!(
                "{:?}",
                layout.tensors().iter().map(|t| t.shape.clone()).collect::<Vec<_>>()
            ),
        ),
    ]);
    if let Some(classes) = network.classes() {
        metadata.insert(CLASSES_KEY.to_string(), classes.to_string());
    }
    if let Some(layers) = network.describe() {
        metadata.insert(LAYERS_KEY.to_string(), layers);
    }
    if let Some(s) = standardizer {
        let json = serde_json::to_string(s).map_err(|e| CheckpointError::Format(e.to_string()))?;
        metadata.insert(deepdist_core::checkpoint::STANDARDIZER_KEY.to_string(), json);
    }
    save_model(path, layout, params, metadata)?;
    Ok(path.to_path_buf())
}
