//! `format = "parquet"` and `format = "arrow"`: columnar files as Spark,
//! pandas, Polars and pyarrow write them. `path` holds `train` and `test`,
//! each either one file (`train.parquet`, `train.arrow`) or a directory of
//! part files — Spark's `_SUCCESS` and `.crc` files and other hidden files
//! skipped, Hive-style `key=value/` partition directories read as columns.
//! The rows become a table in [`super::arrow_table`].

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::arrow_table::{Constant, Rows};
use super::{DataError, Format, Table};
use crate::data::spec::DataSpec;

/// Parquet files (snappy, zstd, gzip-free: the codecs Spark, pandas and
/// Polars write by default).
pub struct ParquetFiles;

/// Arrow IPC files (Feather v2), or streams.
pub struct ArrowFiles;

impl Format for ParquetFiles {
    fn read(&self, spec: &DataSpec, path: &Path) -> Result<(Table, Table), DataError> {
        read_both(spec, path, "parquet", read_parquet)
    }
}

impl Format for ArrowFiles {
    fn read(&self, spec: &DataSpec, path: &Path) -> Result<(Table, Table), DataError> {
        read_both(spec, path, "arrow", read_arrow)
    }
}

/// Reads one file's batches into `rows`.
type ReadFile = fn(&Path, &[Constant], &mut Rows) -> Result<(), DataError>;

fn read_both(spec: &DataSpec, dir: &Path, ext: &str, read: ReadFile) -> Result<(Table, Table), DataError> {
    let set = |name: &str| -> Result<Table, DataError> {
        let file = dir.join(format!("{name}.{ext}"));
        let (what, files) = if file.is_file() {
            (file.clone(), vec![(file, Vec::new())])
        } else {
            let sub = dir.join(name);
            if !sub.is_dir() {
                return Err(DataError::Setting(format!(
                    "{}: neither {name}.{ext} nor a directory {name}/ of part files",
                    dir.display()
                )));
            }
            (sub.clone(), part_files(&sub)?)
        };
        if files.is_empty() {
            return Err(DataError::defect(&what, "", "no part files"));
        }
        let mut rows = Rows::new(spec.label_column.as_ref())?;
        for (file, constants) in &files {
            read(file, constants, &mut rows)?;
        }
        rows.finish(&what)
    };
    Ok((set("train")?, set("test")?))
}

/// The data files under `dir`, in name order, each with the `key=value`
/// directories above it: Spark's markers (`_SUCCESS`), checksums (`.crc`)
/// and hidden files are not data.
fn part_files(dir: &Path) -> Result<Vec<(PathBuf, Vec<Constant>)>, DataError> {
    let mut out = Vec::new();
    walk(dir, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, above: &mut Vec<Constant>, out: &mut Vec<(PathBuf, Vec<Constant>)>) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || name.starts_with('.') || name.ends_with(".crc") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            let Some((key, value)) = name.split_once('=') else {
                return Err(DataError::defect(
                    &path,
                    "",
                    "a directory among part files that is not a key=value partition",
                ));
            };
            above.push(Constant {
                name: key.to_string(),
                value: value.to_string(),
            });
            walk(&path, above, out)?;
            above.pop();
        } else {
            out.push((path, above.clone()));
        }
    }
    Ok(())
}

fn read_parquet(path: &Path, constants: &[Constant], rows: &mut Rows) -> Result<(), DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| DataError::read(path, "", e))?;
    for batch in reader {
        let batch = batch.map_err(|e| DataError::read(path, "", e))?;
        rows.add(path, &batch, constants)?;
    }
    Ok(())
}

fn read_arrow(path: &Path, constants: &[Constant], rows: &mut Rows) -> Result<(), DataError> {
    let open = || {
        File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    // A file (with its footer) first; else a stream, as some writers make.
    let batches: Vec<RecordBatch> = match arrow_ipc::reader::FileReader::try_new(open()?, None) {
        Ok(reader) => reader.collect::<Result<_, _>>(),
        Err(_) => arrow_ipc::reader::StreamReader::try_new(open()?, None)
            .map_err(|e| DataError::read(path, "not an Arrow IPC file or stream", e))?
            .collect::<Result<_, _>>(),
    }
    .map_err(|e| DataError::read(path, "", e))?;
    for batch in &batches {
        rows.add(path, batch, constants)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_files_skip_markers_and_read_partition_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "_SUCCESS",
            ".part-0.parquet.crc",
            "part-1.parquet",
            "label=3/part-0.parquet",
        ] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let files = part_files(root).unwrap();
        let names: Vec<_> = files.iter().map(|(p, _)| p.strip_prefix(root).unwrap()).collect();
        assert_eq!(
            names,
            [Path::new("label=3/part-0.parquet"), Path::new("part-1.parquet")]
        );
        let label = Constant {
            name: "label".into(),
            value: "3".into(),
        };
        assert_eq!(files[0].1, [label]);
        assert!(files[1].1.is_empty());
        std::fs::create_dir(root.join("stray")).unwrap();
        let err = part_files(root).unwrap_err().to_string();
        assert!(
            err.contains("stray") && err.contains("not a key=value partition"),
            "{err}"
        );
    }
}
