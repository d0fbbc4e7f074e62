//! `format = "idx"`: a directory with MNIST's four file names
//! (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or `.gz`),
//! holding images of any size and shape (flattened) and any classes. An
//! `MD5SUMS` file beside them (`md5sum`'s output), if present, is checked.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::{DataError, Format, Table, read_file};
use crate::data::idx::{self, IdxArray};
use crate::data::md5sum::md5_hex;
use crate::data::spec::DataSpec;

/// The IDX directory reader.
pub struct IdxDir;

const TRAIN: (&str, &str) = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
const TEST: (&str, &str) = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");

impl Format for IdxDir {
    fn read(&self, _spec: &DataSpec, dir: &Path) -> Result<(Table, Table), DataError> {
        let sums = checksums(dir)?;
        let read = |(images, labels): (&str, &str)| -> Result<Table, DataError> {
            let (images, labels) = (find(dir, images)?, find(dir, labels)?);
            table(
                read_checked(&images, &sums)?,
                &images,
                read_checked(&labels, &sums)?,
                &labels,
            )
        };
        Ok((read(TRAIN)?, read(TEST)?))
    }
}

/// The file under its standard name, raw or gzipped.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    match (raw.is_file(), gz.is_file()) {
        (true, _) => Ok(raw),
        (false, true) => Ok(gz),
        (false, false) => Err(DataError::defect(
            dir,
            "",
            format!("no {name} (nor {name}.gz): an IDX dataset is four files under MNIST's names"),
        )),
    }
}

/// `MD5SUMS` as (file name, digest) pairs, if the directory has one.
fn checksums(dir: &Path) -> Result<Vec<(String, String)>, DataError> {
    let path = dir.join("MD5SUMS");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = String::from_utf8(read_file(&path)?).map_err(|_| DataError::defect(&path, "", "not text"))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [sum, name] if sum.len() == 32 => Ok((name.trim_start_matches('*').to_string(), sum.to_lowercase())),
            _ => Err(DataError::defect(
                &path,
                format!("line {}", i + 1),
                "expected `<md5>  <file name>`",
            )),
        })
        .collect()
}

/// Reads an IDX file, checking it against `MD5SUMS` when listed there.
fn read_checked(path: &Path, sums: &[(String, String)]) -> Result<IdxArray, DataError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((_, want)) = sums.iter().find(|(n, _)| *n == name) {
        let got = md5_hex(&read_file(path)?);
        if got != *want {
            return Err(DataError::defect(
                path,
                "",
                format!("MD5 {got} does not match MD5SUMS ({want})"),
            ));
        }
    }
    Ok(idx::read_idx(path)?)
}

fn table(images: IdxArray, image_file: &Path, labels: IdxArray, label_file: &Path) -> Result<Table, DataError> {
    if images.dims.len() < 2 {
        return Err(DataError::defect(
            image_file,
            "",
            format!(
                "dimensions {:?}: images need a count and at least one more",
                images.dims
            ),
        ));
    }
    if labels.dims.len() != 1 {
        return Err(DataError::defect(
            label_file,
            "",
            format!("dimensions {:?}: labels need exactly one", labels.dims),
        ));
    }
    let n = images.dims[0];
    let width: usize = images.dims[1..].iter().product();
    let pixels = images.data.iter().map(|&p| f32::from(p)).collect();
    let features = Array2::from_shape_vec((n, width), pixels).map_err(|e| DataError::read(image_file, "", e))?;
    Ok(Table {
        features,
        labels: labels.data.iter().map(|&l| i64::from(l)).collect(),
        bytes: true,
        dims: images.dims[1..].to_vec(),
        features_file: image_file.to_path_buf(),
        labels_file: label_file.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::encode_idx;

    fn write_set(dir: &Path, n: u32, side: u32) {
        let images: Vec<u8> = (0..n * side * side).map(|i| (i % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        for (images_name, labels_name) in [TRAIN, TEST] {
            std::fs::write(dir.join(images_name), encode_idx(&[n, side, side], &images)).unwrap();
            std::fs::write(dir.join(labels_name), encode_idx(&[n], &labels)).unwrap();
        }
    }

    #[test]
    fn reads_any_image_size_and_checks_md5sums() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 5, 8);
        let (train, test) = IdxDir.read(&DataSpec::default(), dir.path()).unwrap();
        assert_eq!((train.features.dim(), test.labels.len()), ((5, 64), 5));
        let sum = md5_hex(&std::fs::read(dir.path().join(TRAIN.0)).unwrap());
        std::fs::write(dir.path().join("MD5SUMS"), format!("{sum}  {}\n", TRAIN.0)).unwrap();
        assert!(IdxDir.read(&DataSpec::default(), dir.path()).is_ok());
        std::fs::write(dir.path().join("MD5SUMS"), format!("{}  {}\n", "0".repeat(32), TRAIN.0)).unwrap();
        let err = IdxDir.read(&DataSpec::default(), dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("does not match MD5SUMS"),
            "{err}"
        );
    }

    #[test]
    fn missing_truncated_and_disagreeing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 4, 2);
        std::fs::remove_file(dir.path().join(TEST.1)).unwrap();
        let err = IdxDir.read(&DataSpec::default(), dir.path()).unwrap_err().to_string();
        assert!(err.contains("no t10k-labels-idx1-ubyte"), "{err}");
        write_set(dir.path(), 4, 2);
        let mut cut = std::fs::read(dir.path().join(TRAIN.0)).unwrap();
        cut.truncate(cut.len() - 3);
        std::fs::write(dir.path().join(TRAIN.0), cut).unwrap();
        let err = IdxDir.read(&DataSpec::default(), dir.path()).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte: truncated"), "{err}");
        write_set(dir.path(), 4, 2);
        std::fs::write(dir.path().join(TRAIN.1), encode_idx(&[3], &[0, 1, 2])).unwrap();
        let (train, test) = IdxDir.read(&DataSpec::default(), dir.path()).unwrap();
        let err = super::super::finish(&DataSpec::default(), train, test, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4 examples, but") && err.contains("train-labels-idx1-ubyte has 3 labels"),
            "{err}"
        );
    }
}
