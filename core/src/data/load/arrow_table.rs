//! Arrow record batches — what Parquet and Arrow IPC files read into — as a
//! [`Table`]: the label column by name, every other column a feature or
//! several. A feature column may be a number (any integer, float or
//! boolean type), a list or fixed-size list of numbers (one value per
//! element, the same length on every row), or a Spark ML vector as
//! `VectorAssembler` writes it (a struct of `type`, `size`, `indices` and
//! `values`, dense or sparse). Nulls, ragged lists and other types are
//! refused with the file, the column and the row.

use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use ndarray::Array2;

use super::{DataError, Table};
use crate::data::spec::LabelColumn;

/// A column whose value is the same on every row of a file: a Spark or Hive
/// partition directory's `key=value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    /// The key.
    pub name: String,
    /// The value, as the directory names it.
    pub value: String,
}

/// Rows gathered from the batches of one or more files.
pub struct Rows {
    names: Option<Vec<String>>,
    width: Option<usize>,
    features: Vec<f32>,
    labels: Vec<i64>,
    bytes: bool,
    first: Option<PathBuf>,
    label: String,
}

impl Rows {
    /// No rows yet; the label is the column `label_column` names (default `label`).
    pub fn new(label_column: Option<&LabelColumn>) -> Result<Self, DataError> {
        let label = match label_column {
            None => "label".to_string(),
            Some(LabelColumn::Name(n)) => n.clone(),
            Some(LabelColumn::Index(i)) => {
                return Err(DataError::Setting(format!(
                    "data.label_column = {i}: Parquet and Arrow columns are named, so name the label's column"
                )));
            }
        };
        Ok(Self {
            names: None,
            width: None,
            features: Vec::new(),
            labels: Vec::new(),
            bytes: true,
            first: None,
            label,
        })
    }

    /// Adds the rows of `batch`, read from `path`, with the partition
    /// directories' `constants` as further columns.
    pub fn add(&mut self, path: &Path, batch: &RecordBatch, constants: &[Constant]) -> Result<(), DataError> {
        let schema = batch.schema();
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .chain(constants.iter().map(|c| c.name.clone()))
            .collect();
        match &self.names {
            None => {
                self.names = Some(names.clone());
                self.first = Some(path.to_path_buf());
            }
            Some(before) if *before != names => {
                let first = self.first.as_deref().unwrap_or(path).display();
                return Err(DataError::defect(
                    path,
                    "",
                    format!("columns {names:?}, but {first} has {before:?}"),
                ));
            }
            Some(_) => {}
        }
        let rows = batch.num_rows();
        let at_row = self.labels.len();
        let label_at = names.iter().position(|n| *n == self.label).ok_or_else(|| {
            DataError::defect(
                path,
                "",
                format!("no column {:?} for the label (columns: {names:?})", self.label),
            )
        })?;
        let mut blocks = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let column = match i.checked_sub(batch.num_columns()) {
                None => Column::Array(batch.column(i)),
                Some(c) => Column::Constant(&constants[c].value),
            };
            let bad = |why: String| DataError::defect(path, format!("column {name:?}"), why);
            if i == label_at {
                let labels = column.labels(rows).map_err(|e| bad(e.at(at_row)))?;
                self.labels.extend(labels);
            } else {
                let block = column.numbers(rows).map_err(|e| bad(e.at(at_row)))?;
                self.bytes &= block.bytes;
                blocks.push(block);
            }
        }
        let width: usize = blocks.iter().map(|b| b.width).sum();
        match self.width {
            None => self.width = Some(width),
            Some(w) if w != width => {
                return Err(DataError::defect(
                    path,
                    "",
                    format!("{width} features per row, where the rows before have {w}"),
                ));
            }
            Some(_) => {}
        }
        self.features.reserve(rows * width);
        for row in 0..rows {
            for b in &blocks {
                self.features
                    .extend_from_slice(&b.values[row * b.width..(row + 1) * b.width]);
            }
        }
        Ok(())
    }

    /// The table of every row added; `what` (the file or directory) names it in errors.
    pub fn finish(self, what: &Path) -> Result<Table, DataError> {
        let width = self.width.unwrap_or(0);
        if self.labels.is_empty() || width == 0 {
            return Err(DataError::defect(what, "", "no examples, or no feature columns"));
        }
        let features = Array2::from_shape_vec((self.labels.len(), width), self.features)
            .map_err(|e| DataError::read(what, "", e))?;
        Ok(Table {
            features,
            labels: self.labels,
            bytes: self.bytes,
            dims: Vec::new(),
            features_file: what.to_path_buf(),
            labels_file: what.to_path_buf(),
        })
    }
}

/// A defect at a row of a batch (counted from the batch's start).
struct AtRow {
    row: Option<usize>,
    why: String,
}

impl AtRow {
    fn new(row: usize, why: impl Into<String>) -> Self {
        Self {
            row: Some(row),
            why: why.into(),
        }
    }

    fn whole(why: impl Into<String>) -> Self {
        Self {
            row: None,
            why: why.into(),
        }
    }

    /// The message, with the row counted from the file's first (`before` rows came earlier).
    fn at(self, before: usize) -> String {
        match self.row {
            Some(r) => format!("row {}: {}", before + r + 1, self.why),
            None => self.why,
        }
    }
}

/// One column's features: `width` values per row, row after row.
struct Block {
    values: Vec<f32>,
    width: usize,
    /// Stored as bytes (0–255).
    bytes: bool,
}

/// A column of a batch, or a partition directory's constant.
enum Column<'a> {
    Array(&'a ArrayRef),
    Constant(&'a str),
}

impl Column<'_> {
    fn numbers(&self, rows: usize) -> Result<Block, AtRow> {
        match self {
            Column::Constant(v) => {
                let x: f32 = v
                    .parse()
                    .map_err(|_| AtRow::whole(format!("partition value {v:?} is not a number")))?;
                Ok(Block {
                    values: vec![x; rows],
                    width: 1,
                    bytes: false,
                })
            }
            Column::Array(a) => features(a.as_ref()),
        }
    }

    fn labels(&self, rows: usize) -> Result<Vec<i64>, AtRow> {
        let whole = |x: f64, row: usize| {
            if x.fract() == 0.0 && x.abs() <= 1e15 {
                Ok(x as i64)
            } else {
                Err(AtRow::new(row, format!("label {x} is not a whole number")))
            }
        };
        match self {
            Column::Constant(v) => {
                let x: f64 = v
                    .parse()
                    .map_err(|_| AtRow::whole(format!("partition value {v:?} is not a label")))?;
                Ok(vec![whole(x, 0)?; rows])
            }
            Column::Array(a) => {
                let (values, _) = scalars(a.as_ref())?;
                values.iter().enumerate().map(|(r, &x)| whole(x, r)).collect()
            }
        }
    }
}

/// A feature column's values.
fn features(a: &dyn Array) -> Result<Block, AtRow> {
    match a.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => list(a),
        DataType::Struct(_) => vector(a),
        _ => {
            let (values, bytes) = scalars(a)?;
            Ok(Block {
                values: values.into_iter().map(|x| x as f32).collect(),
                width: 1,
                bytes,
            })
        }
    }
}

/// A list column: the same number of elements on every row.
fn list(a: &dyn Array) -> Result<Block, AtRow> {
    nulls(a)?;
    // No nulls (checked above): every row holds a list.
    let rows: Vec<ArrayRef> = if let Some(l) = a.as_list_opt::<i32>() {
        (0..l.len()).map(|r| l.value(r)).collect()
    } else if let Some(l) = a.as_list_opt::<i64>() {
        (0..l.len()).map(|r| l.value(r)).collect()
    } else if let Some(l) = a.as_fixed_size_list_opt() {
        (0..l.len()).map(|r| l.value(r)).collect()
    } else {
        return Err(AtRow::whole(format!("{} is not a list", a.data_type())));
    };
    let mut width = None;
    let mut values = Vec::new();
    let mut bytes = true;
    for (r, row) in rows.iter().enumerate() {
        let (row_values, b) = scalars(row.as_ref()).map_err(|e| AtRow::new(r, e.why))?;
        let w = *width.get_or_insert(row_values.len());
        if row_values.len() != w {
            return Err(AtRow::new(
                r,
                format!("{} elements where the first row has {w}", row_values.len()),
            ));
        }
        bytes &= b;
        values.extend(row_values.into_iter().map(|x| x as f32));
    }
    Ok(Block {
        values,
        width: width.unwrap_or(0),
        bytes,
    })
}

/// A Spark ML vector (`pyspark.ml.linalg.VectorUDT`): `type` 1 dense with
/// `values`; 0 sparse with `size`, `indices` and `values`.
fn vector(a: &dyn Array) -> Result<Block, AtRow> {
    nulls(a)?;
    let s = a
        .as_struct_opt()
        .ok_or_else(|| AtRow::whole(format!("{} is not a struct", a.data_type())))?;
    let field = |name: &str| {
        s.column_by_name(name).ok_or_else(|| {
            AtRow::whole(format!(
                "a struct without `{name}`: only Spark ML vectors (type, size, indices, values) are read"
            ))
        })
    };
    let (kind, _) = scalars(field("type")?.as_ref())?;
    let sizes = field("size")?;
    let indices = field("indices")?;
    let values = field("values")?;
    let mut width = None;
    let mut out = Vec::new();
    for (r, &kind) in kind.iter().enumerate() {
        let dense = match kind as i64 {
            1 => element_scalars(values.as_ref(), r)?,
            0 => {
                let size = match scalar_at(sizes.as_ref(), r) {
                    Some(n) if n >= 0.0 => n as usize,
                    _ => return Err(AtRow::new(r, "a sparse vector without its size")),
                };
                let at = element_scalars(indices.as_ref(), r)?;
                let vs = element_scalars(values.as_ref(), r)?;
                if at.len() != vs.len() {
                    return Err(AtRow::new(r, "a sparse vector's indices and values differ in length"));
                }
                let mut dense = vec![0.0; size];
                for (&i, &v) in at.iter().zip(&vs) {
                    let slot = dense
                        .get_mut(i as usize)
                        .filter(|_| i >= 0.0)
                        .ok_or_else(|| AtRow::new(r, format!("index {i} past the vector's size {size}")))?;
                    *slot = v;
                }
                dense
            }
            k => return Err(AtRow::new(r, format!("vector type {k} (0 sparse, 1 dense)"))),
        };
        let w = *width.get_or_insert(dense.len());
        if dense.len() != w {
            return Err(AtRow::new(
                r,
                format!("a vector of {} values where the first row's has {w}", dense.len()),
            ));
        }
        out.extend(dense.into_iter().map(|x| x as f32));
    }
    Ok(Block {
        values: out,
        width: width.unwrap_or(0),
        bytes: false,
    })
}

/// The numbers of row `r`'s list in a list column.
fn element_scalars(a: &dyn Array, r: usize) -> Result<Vec<f64>, AtRow> {
    let row = if let Some(l) = a.as_list_opt::<i32>() {
        l.is_valid(r).then(|| l.value(r))
    } else if let Some(l) = a.as_list_opt::<i64>() {
        l.is_valid(r).then(|| l.value(r))
    } else {
        return Err(AtRow::whole(format!("{} is not a list", a.data_type())));
    };
    match row {
        Some(row) => scalars(row.as_ref()).map(|(v, _)| v).map_err(|e| AtRow::new(r, e.why)),
        None => Ok(Vec::new()),
    }
}

/// Row `r` of a column of numbers, if it is one and not null.
fn scalar_at(a: &dyn Array, r: usize) -> Option<f64> {
    if r >= a.len() || a.is_null(r) {
        return None;
    }
    scalars(&a.slice(r, 1)).ok().and_then(|(v, _)| v.first().copied())
}

/// Refuses a column with nulls, naming the first.
fn nulls(a: &dyn Array) -> Result<(), AtRow> {
    match a.logical_nulls().and_then(|n| n.iter().position(|valid| !valid)) {
        Some(r) => Err(AtRow::new(r, "null")),
        None => Ok(()),
    }
}

/// A column of numbers as `f64`, and whether it is stored as bytes.
fn scalars(a: &dyn Array) -> Result<(Vec<f64>, bool), AtRow> {
    nulls(a)?;
    macro_rules! numbers {
        ($($t:ty),*) => {
            $(if let Some(p) = a.as_primitive_opt::<$t>() {
                return Ok((p.values().iter().map(|&x| f64::from(x)).collect(), false));
            })*
        };
    }
    if let Some(p) = a.as_primitive_opt::<UInt8Type>() {
        return Ok((p.values().iter().map(|&x| f64::from(x)).collect(), true));
    }
    numbers!(
        Int8Type,
        Int16Type,
        Int32Type,
        UInt16Type,
        UInt32Type,
        Float32Type,
        Float64Type
    );
    if let Some(p) = a.as_primitive_opt::<Float16Type>() {
        return Ok((p.values().iter().map(|&x| f64::from(x.to_f32())).collect(), false));
    }
    if let Some(p) = a.as_primitive_opt::<Int64Type>() {
        return Ok((p.values().iter().map(|&x| x as f64).collect(), false));
    }
    if let Some(p) = a.as_primitive_opt::<UInt64Type>() {
        return Ok((p.values().iter().map(|&x| x as f64).collect(), false));
    }
    if let Some(b) = a.as_boolean_opt() {
        return Ok((b.values().iter().map(|x| f64::from(u8::from(x))).collect(), false));
    }
    Err(AtRow::whole(format!(
        "{} is not a number, a list of numbers or a Spark ML vector",
        a.data_type()
    )))
}
