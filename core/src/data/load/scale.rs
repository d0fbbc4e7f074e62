//! Per-feature standardization, with statistics from the training set only.

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

/// The mean and standard deviation of each feature of a training set; a
/// saved model keeps them, so new data is scaled as its training data was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    mean: Vec<f32>,
    /// Standard deviations, with 1 where a feature is constant (it then
    /// only loses its mean).
    std: Vec<f32>,
}

impl Standardizer {
    /// The statistics of `x`'s columns.
    pub fn fit(x: &Array2<f32>) -> Self {
        let n = x.nrows().max(1) as f64;
        let mean64 = x.map(|&v| f64::from(v)).sum_axis(Axis(0)) / n;
        let var = x
            .map(|&v| f64::from(v))
            .rows()
            .into_iter()
            .fold(Array1::<f64>::zeros(x.ncols()), |acc, row| {
                acc + (&row - &mean64).mapv(|d| d * d)
            })
            / n;
        Self {
            mean: mean64.iter().map(|&m| m as f32).collect(),
            std: var
                .iter()
                .map(|&v| if v > 1e-12 { v.sqrt() as f32 } else { 1.0 })
                .collect(),
        }
    }

    /// Features it was fitted on.
    pub fn width(&self) -> usize {
        self.mean.len()
    }

    /// Standardizes `x` (of [`Standardizer::width`] columns) in place.
    pub fn apply(&self, x: &mut Array2<f32>) {
        let (mean, std) = (Array1::from(self.mean.clone()), Array1::from(self.std.clone()));
        for mut row in x.rows_mut() {
            row -= &mean;
            row /= &std;
        }
    }
}
