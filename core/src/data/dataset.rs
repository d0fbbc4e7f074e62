//! An in-memory labelled dataset: one row of `f32` features per example.

use ndarray::{Array2, ArrayView2, ArrayViewMut1, s};
use rayon::prelude::*;

/// What can be wrong when building a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Feature rows and labels disagree in number.
    #[error("{rows} feature rows but {labels} labels")]
    CountMismatch {
        /// Rows of features.
        rows: usize,
        /// Labels.
        labels: usize,
    },
    /// A label is not below the number of classes.
    #[error("label {label} at row {row} is out of range (classes: {classes})")]
    LabelOutOfRange {
        /// The row.
        row: usize,
        /// The label found.
        label: u8,
        /// The number of classes.
        classes: usize,
    },
}

/// Examples as rows of features (`n × dim`) with one class label each.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Array2<f32>,
    labels: Vec<u8>,
    classes: usize,
}

impl Dataset {
    /// Builds a dataset, checking that counts agree and labels are in range.
    pub fn new(features: Array2<f32>, labels: Vec<u8>, classes: usize) -> Result<Self, DatasetError> {
        if features.nrows() != labels.len() {
            return Err(DatasetError::CountMismatch {
                rows: features.nrows(),
                labels: labels.len(),
            });
        }
        if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| usize::from(**l) >= classes) {
            return Err(DatasetError::LabelOutOfRange { row, label, classes });
        }
        Ok(Self {
            features,
            labels,
            classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per example.
    pub fn dim(&self) -> usize {
        self.features.ncols()
    }

    /// Number of classes labels range over.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All features, one row per example.
    pub fn features(&self) -> ArrayView2<'_, f32> {
        self.features.view()
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The first `n` examples (all of them if `n` exceeds the length).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            features: self.features.slice(s![..n, ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes,
        }
    }

    /// A new dataset of the given rows, in the given order.
    pub fn select(&self, rows: &[usize]) -> Dataset {
        // Row by row into one buffer: `ndarray`'s `select` appends a row at a
        // time and took most of a job's start-up cutting MNIST into partitions.
        let dim = self.dim();
        let mut features = Vec::with_capacity(rows.len() * dim);
        for &r in rows {
            let row = self.features.row(r);
            match row.as_slice() {
                Some(values) => features.extend_from_slice(values),
                None => features.extend(row.iter().copied()),
            }
        }
        Dataset {
            features: Array2::from_shape_vec((rows.len(), dim), features).expect("one row of `dim` values per index"),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            classes: self.classes,
        }
    }

    /// Copies the given rows into caller-owned batch buffers without
    /// allocating: `x` must have at least `rows.len()` rows of `dim()` columns.
    /// The rows are copied in one block per thread of the current pool: on
    /// an executor with many cores a serial copy would take a growing share
    /// of each minibatch while the other cores wait; on one core it stays
    /// one loop.
    pub fn gather(&self, rows: &[usize], x: &mut Array2<f32>, y: &mut Vec<u8>) {
        y.clear();
        y.extend(rows.iter().map(|&r| self.labels[r]));
        let copy = |out: &mut [f32], r: usize| ArrayViewMut1::from(out).assign(&self.features.row(r));
        let dim = x.ncols().max(1);
        match x.as_slice_mut() {
            Some(values) => {
                let per = rows.len().div_ceil(rayon::current_num_threads().max(1)).max(1);
                let blocks = values.par_chunks_mut(per * dim).zip(rows.par_chunks(per));
                blocks.for_each(|(block, rows)| {
                    block.chunks_exact_mut(dim).zip(rows).for_each(|(out, &r)| copy(out, r));
                });
            }
            None => {
                for (i, &r) in rows.iter().enumerate() {
                    x.row_mut(i).assign(&self.features.row(r));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_counts_and_labels() {
        let x = Array2::zeros((3, 2));
        assert!(matches!(
            Dataset::new(x.clone(), vec![0, 1], 10),
            Err(DatasetError::CountMismatch { rows: 3, labels: 2 })
        ));
        assert!(matches!(
            Dataset::new(x.clone(), vec![0, 1, 10], 10),
            Err(DatasetError::LabelOutOfRange { row: 2, label: 10, .. })
        ));
        assert_eq!(Dataset::new(x, vec![0, 1, 9], 10).unwrap().len(), 3);
    }

    #[test]
    fn select_and_gather_copy_rows() {
        let x = Array2::from_shape_fn((4, 2), |(i, j)| (i * 10 + j) as f32);
        let d = Dataset::new(x, vec![0, 1, 2, 3], 4).unwrap();
        let s = d.select(&[3, 1]);
        assert_eq!(s.labels(), &[3, 1]);
        assert_eq!(s.features()[[0, 1]], 31.0);
        let mut bx = Array2::zeros((8, 2));
        let mut by = Vec::with_capacity(8);
        d.gather(&[2, 0], &mut bx, &mut by);
        assert_eq!(by, vec![2, 0]);
        assert_eq!(bx[[0, 0]], 20.0);
        assert_eq!(d.head(100).len(), 4);
    }

    #[test]
    fn gathering_on_several_threads_copies_every_row_in_order() {
        let x = Array2::from_shape_fn((9, 3), |(i, j)| (i * 10 + j) as f32);
        let d = Dataset::new(x, (0..9).collect(), 9).unwrap();
        let rows = [8, 1, 4, 4, 0, 7, 2];
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let (mut bx, mut by) = (Array2::from_elem((8, 3), -1.0), Vec::new());
        pool.install(|| d.gather(&rows, &mut bx, &mut by));
        assert_eq!(by, rows.iter().map(|&r| r as u8).collect::<Vec<_>>());
        for (i, &r) in rows.iter().enumerate() {
            assert_eq!(bx.row(i), d.features().row(r), "row {i}");
        }
        assert!(
            bx.row(7).iter().all(|&v| v == -1.0),
            "rows past the batch are untouched"
        );
    }
}
