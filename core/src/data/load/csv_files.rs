//! `format = "csv"`: `train.csv` and `test.csv` in a directory, one example
//! per row, every column a feature but the label's. A header row is used
//! when `header = true`, or when left out and a field of the first row is
//! not a number. Rows are checked as they are read: a ragged row or a field
//! that is not a number is refused with its line.

use std::path::Path;

use ndarray::Array2;

use super::{DataError, Format, Table, read_file};
use crate::data::spec::{DataSpec, LabelColumn};

/// The CSV reader.
pub struct CsvFiles;

impl Format for CsvFiles {
    fn read(&self, spec: &DataSpec, dir: &Path) -> Result<(Table, Table), DataError> {
        let train = read_csv(&dir.join("train.csv"), spec)?;
        let test = read_csv(&dir.join("test.csv"), spec)?;
        Ok((train, test))
    }
}

fn read_csv(path: &Path, spec: &DataSpec) -> Result<Table, DataError> {
    read_rows(path, spec, true)
}

/// A CSV file of features only (every column), as `predict` reads its input.
pub(super) fn read_features(path: &Path) -> Result<Array2<f32>, DataError> {
    read_rows(path, &DataSpec::default(), false).map(|t| t.features)
}

/// Reads rows of numbers; with `labelled`, one column is the label.
fn read_rows(path: &Path, spec: &DataSpec, labelled: bool) -> Result<Table, DataError> {
    let bytes = read_file(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let bad = |line: u64, why: String| DataError::defect(path, format!("line {line}"), why);
    let mut records = reader.records();
    let first = match records.next() {
        None => return Err(DataError::defect(path, "", "empty file")),
        Some(r) => r.map_err(|e| DataError::read(path, "line 1", e))?,
    };
    let numeric = |r: &csv::StringRecord| r.iter().all(|f| f.parse::<f64>().is_ok());
    let header = spec.header.unwrap_or(!numeric(&first));
    let names: Option<Vec<String>> = header.then(|| first.iter().map(str::to_string).collect());
    let width = first.len();
    let label = if labelled {
        label_index(spec.label_column.as_ref(), names.as_deref(), width).map_err(|why| bad(1, why))?
    } else {
        usize::MAX
    };
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let rows = (!header).then_some(Ok(first)).into_iter().chain(records);
    for (i, record) in rows.enumerate() {
        let record = record.map_err(|e| DataError::read(path, format!("line {}", i + 1), e))?;
        let line = record.position().map_or(i as u64 + 1, |p| p.line());
        if record.len() != width {
            return Err(bad(
                line,
                format!("{} fields where the first row has {width}", record.len()),
            ));
        }
        for (col, field) in record.iter().enumerate() {
            let value: f64 = field
                .parse()
                .map_err(|_| bad(line, format!("column {}: {field:?} is not a number", col + 1)))?;
            if col == label {
                if value.fract() != 0.0 || value.abs() > 1e15 {
                    return Err(bad(line, format!("label {field:?} is not a whole number")));
                }
                labels.push(value as i64);
            } else {
                features.push(value as f32);
            }
        }
    }
    let feature_width = if labelled { width - 1 } else { width };
    let n = features.len().checked_div(feature_width).unwrap_or(0);
    let features = Array2::from_shape_vec((n, feature_width), features).map_err(|e| DataError::read(path, "", e))?;
    Ok(Table {
        features,
        labels,
        bytes: false,
        dims: Vec::new(),
        features_file: path.to_path_buf(),
        labels_file: path.to_path_buf(),
    })
}

/// The label's column: as the job names it, else `label` if the header has
/// one, else the first.
fn label_index(wanted: Option<&LabelColumn>, names: Option<&[String]>, width: usize) -> Result<usize, String> {
    if width < 2 {
        return Err(format!("{width} column: a label and at least one feature are needed"));
    }
    match (wanted, names) {
        (Some(LabelColumn::Index(i)), _) if *i < width => Ok(*i),
        (Some(LabelColumn::Index(i)), _) => Err(format!(
            "data.label_column = {i}, but rows have {width} columns (from 0)"
        )),
        (Some(LabelColumn::Name(n)), Some(names)) => names
            .iter()
            .position(|c| c == n)
            .ok_or_else(|| format!("data.label_column = {n:?}, but the header has {names:?}")),
        (Some(LabelColumn::Name(n)), None) => Err(format!(
            "data.label_column = {n:?} names a column, but the file has no header row"
        )),
        (None, names) => Ok(names.and_then(|n| n.iter().position(|c| c == "label")).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, spec: &DataSpec) -> Result<Table, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.csv");
        std::fs::write(&path, text).unwrap();
        read_csv(&path, spec)
    }

    #[test]
    fn headers_and_label_columns() {
        let t = read("a,label,b\n1,0,2\n3,1,4\n", &DataSpec::default()).unwrap();
        assert_eq!((t.labels, t.features.row(1).to_vec()), (vec![0, 1], vec![3.0, 4.0]));
        let t = read("2,1.5,7\n0,2.5,8\n", &DataSpec::default()).unwrap();
        assert_eq!((t.labels, t.features.row(0).to_vec()), (vec![2, 0], vec![1.5, 7.0]));
        let by_index = DataSpec {
            label_column: Some(LabelColumn::Index(2)),
            ..DataSpec::default()
        };
        assert_eq!(read("1.5,7,2\n", &by_index).unwrap().labels, vec![2]);
        let by_name = DataSpec {
            label_column: Some(LabelColumn::Name("y".into())),
            ..DataSpec::default()
        };
        assert_eq!(read("x,y\n0.5,3\n", &by_name).unwrap().labels, vec![3]);
    }

    #[test]
    fn defects_name_the_line() {
        let spec = DataSpec::default();
        for (text, want) in [
            ("label,a,b\n1,2,3\n1,2\n", "line 3: 2 fields where the first row has 3"),
            ("label,a\n1,2\n0,x\n", "line 3: column 2: \"x\" is not a number"),
            ("label,a\n1.5,2\n", "line 2: label \"1.5\" is not a whole number"),
            ("", "empty file"),
        ] {
            let err = read(text, &spec).unwrap_err().to_string();
            assert!(err.contains("train.csv") && err.contains(want), "{err}");
        }
        let named = DataSpec {
            label_column: Some(LabelColumn::Name("y".into())),
            ..DataSpec::default()
        };
        let err = read("a,b\n1,2\n", &named).unwrap_err().to_string();
        assert!(err.contains("line 1: data.label_column = \"y\""), "{err}");
    }
}
