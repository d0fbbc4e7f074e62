//! `format = "npy"`: NumPy arrays, as `x_train.npy`, `y_train.npy`,
//! `x_test.npy`, `y_test.npy` in a directory, or those four arrays in one
//! `.npz` file (`np.savez` or `np.savez_compressed`; `path` is then the
//! file). Features are `uint8` or floats of any shape (flattened after the
//! first axis); labels any integer type. Read with `ndarray-npy`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, IxDyn};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpyExt, ReadNpzError, ReadableElement};

use super::{DataError, Format, Table, read_file};
use crate::data::spec::DataSpec;

/// The NumPy reader.
pub struct NpyFiles;

impl Format for NpyFiles {
    fn read(&self, _spec: &DataSpec, path: &Path) -> Result<(Table, Table), DataError> {
        let mut source = if path.is_file() {
            let bytes = read_file(path)?;
            let npz = NpzReader::new(Cursor::new(bytes))
                .map_err(|e| DataError::defect(path, "", format!("not an .npz archive: {e}")))?;
            Source::Npz(path.to_path_buf(), npz)
        } else {
            Source::Dir(path.to_path_buf())
        };
        Ok((source.table("x_train", "y_train")?, source.table("x_test", "y_test")?))
    }
}

/// A `.npy` file of features only, as `predict` reads its input; true when they are bytes.
pub(super) fn read_features(path: &Path) -> Result<(Array2<f32>, bool), DataError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (x, bytes) = Source::Dir(dir.to_path_buf()).features(&name)?;
    Ok((flatten(x, path)?, bytes))
}

/// Examples along the first axis, the rest flattened.
fn flatten(x: ArrayD<f32>, path: &Path) -> Result<Array2<f32>, DataError> {
    if x.ndim() == 0 {
        return Err(DataError::defect(path, "", "a scalar, not an array of examples"));
    }
    let n = x.shape()[0];
    let width: usize = x.shape()[1..].iter().product();
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, width))
        .map_err(|e| DataError::read(path, "", e))
}

enum Source {
    Dir(PathBuf),
    Npz(PathBuf, NpzReader<Cursor<Vec<u8>>>),
}

/// An array read as one element type; `Wrong` when stored as another.
enum Read<T> {
    Array(ArrayD<T>),
    Wrong(String),
}

impl Source {
    /// Where array `name` is, for errors.
    fn place(&self, name: &str) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.join(format!("{name}.npy")),
            Source::Npz(file, _) => PathBuf::from(format!("{}[{name}]", file.display())),
        }
    }

    fn read_as<T: ReadableElement>(&mut self, name: &str) -> Result<Read<T>, DataError> {
        let place = self.place(name);
        let result = match self {
            Source::Dir(_) => ArrayD::<T>::read_npy(Cursor::new(read_file(&place)?)).map_err(ReadNpzError::Npy),
            Source::Npz(_, npz) => npz.by_name::<ndarray::OwnedRepr<T>, IxDyn>(name),
        };
        match result {
            Ok(a) => Ok(Read::Array(a)),
            Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d))) => Ok(Read::Wrong(d.to_string())),
            Err(e) => Err(DataError::read(&place, "", e)),
        }
    }

    /// The features: bytes, or floats (converted to `f32`).
    fn features(&mut self, name: &str) -> Result<(ArrayD<f32>, bool), DataError> {
        if let Read::Array(a) = self.read_as::<u8>(name)? {
            return Ok((a.mapv(f32::from), true));
        }
        if let Read::Array(a) = self.read_as::<f32>(name)? {
            return Ok((a, false));
        }
        match self.read_as::<f64>(name)? {
            Read::Array(a) => Ok((a.mapv(|v| v as f32), false)),
            Read::Wrong(d) => Err(DataError::defect(
                &self.place(name),
                "",
                format!("features of dtype {d}: uint8, float32 or float64 are supported"),
            )),
        }
    }

    /// The labels, of any integer type.
    fn labels(&mut self, name: &str) -> Result<ArrayD<i64>, DataError> {
        macro_rules! try_as {
            ($($t:ty),*) => {$(
                if let Read::Array(a) = self.read_as::<$t>(name)? {
                    return Ok(a.mapv(|v| v as i64));
                }
            )*};
        }
        try_as!(i64, i32, i16, i8, u8, u16, u32);
        match self.read_as::<u64>(name)? {
            Read::Array(a) => Ok(a.mapv(|v| i64::try_from(v).unwrap_or(i64::MAX))),
            Read::Wrong(d) => Err(DataError::defect(
                &self.place(name),
                "",
                format!("labels of dtype {d}: an integer type is needed"),
            )),
        }
    }

    fn table(&mut self, x: &str, y: &str) -> Result<Table, DataError> {
        let (features, bytes) = self.features(x)?;
        let labels = self.labels(y)?;
        let (features_file, labels_file) = (self.place(x), self.place(y));
        let labels = match labels.shape() {
            [_] | [_, 1] => labels.iter().copied().collect(),
            shape => {
                return Err(DataError::defect(
                    &labels_file,
                    "",
                    format!("shape {shape:?}: labels need one per example"),
                ));
            }
        };
        let dims = features.shape().get(1..).unwrap_or_default().to_vec();
        Ok(Table {
            features: flatten(features, &features_file)?,
            labels,
            bytes,
            dims,
            features_file,
            labels_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array3};
    use ndarray_npy::{NpzWriter, WriteNpyExt};

    fn save<A: WriteNpyExt>(dir: &Path, name: &str, a: &A) {
        a.write_npy(std::fs::File::create(dir.join(format!("{name}.npy"))).unwrap())
            .unwrap();
    }

    #[test]
    fn reads_a_directory_of_any_dtypes_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "x_train", &Array3::<u8>::from_elem((4, 2, 3), 7));
        save(dir.path(), "y_train", &Array1::<i32>::from(vec![0, 1, 2, 1]));
        save(dir.path(), "x_test", &Array2::<f64>::from_elem((2, 6), 0.5));
        save(dir.path(), "y_test", &Array2::<u16>::from_elem((2, 1), 2));
        let (train, test) = NpyFiles.read(&DataSpec::default(), dir.path()).unwrap();
        assert_eq!(
            (train.features.dim(), train.bytes, train.labels),
            ((4, 6), true, vec![0, 1, 2, 1])
        );
        assert_eq!(
            (test.features[[1, 5]], test.bytes, test.labels),
            (0.5, false, vec![2, 2])
        );
        save(dir.path(), "y_test", &Array1::<f32>::from(vec![0.0, 1.0]));
        let err = NpyFiles.read(&DataSpec::default(), dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("y_test.npy") && err.contains("an integer type is needed"),
            "{err}"
        );
        std::fs::write(dir.path().join("x_test.npy"), b"\x93NUMPY garbage").unwrap();
        let err = NpyFiles.read(&DataSpec::default(), dir.path()).unwrap_err().to_string();
        assert!(err.contains("x_test.npy"), "{err}");
    }

    #[test]
    fn reads_an_npz_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.npz");
        let mut npz = NpzWriter::new_compressed(std::fs::File::create(&path).unwrap());
        npz.add_array("x_train", &Array2::<f32>::from_elem((3, 2), 1.0))
            .unwrap();
        npz.add_array("y_train", &Array1::<i64>::from(vec![0, 1, 0])).unwrap();
        npz.add_array("x_test", &Array2::<f32>::from_elem((1, 2), 1.0)).unwrap();
        npz.add_array("y_test", &Array1::<i64>::from(vec![1])).unwrap();
        npz.finish().unwrap();
        let (train, test) = NpyFiles.read(&DataSpec::default(), &path).unwrap();
        assert_eq!((train.labels.len(), test.labels), (3, vec![1]));
        std::fs::write(&path, b"PK not really").unwrap();
        let err = NpyFiles.read(&DataSpec::default(), &path).unwrap_err().to_string();
        assert!(err.contains("set.npz") && err.contains("not an .npz archive"), "{err}");
    }
}
