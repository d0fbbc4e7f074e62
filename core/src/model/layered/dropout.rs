//! `dropout`: while training, each value is dropped with probability `p` and
//! the survivors scaled by `1 / (1 − p)` (inverted dropout, so evaluation
//! passes values through unchanged).

use super::Shape;
use super::layer::{Backward, Layer, Pass};
use crate::model::{dropout, mat_mut};

/// Dropout of every value of `shape`.
#[derive(Debug, Clone)]
pub struct Dropout {
    shape: Shape,
    p: f32,
}

impl Dropout {
    /// Dropping with probability `p`, in `[0, 1)`.
    pub fn new(shape: Shape, p: f32) -> Self {
        Self { shape, p }
    }
}

impl Layer for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn output(&self) -> Shape {
        self.shape
    }

    /// The mask the forward pass drew (0 or `1 / (1 − p)` per value).
    fn work(&self, rows: usize) -> usize {
        rows * self.shape.len()
    }

    fn forward(&self, rows: usize, _: &[f32], x: &[f32], y: &mut [f32], work: &mut [f32], pass: &mut Pass<'_>) {
        y.copy_from_slice(x);
        if pass.train && self.p > 0.0 {
            let n = self.shape.len();
            let mask = &mut work[..rows * n];
            dropout::drop_units(&mut mat_mut(y, rows, n), &mut mat_mut(mask, rows, n), self.p, pass.rng);
        }
    }

    fn backward(&self, b: Backward<'_>) {
        if let Some(dx) = b.dx {
            if self.p > 0.0 {
                let mask = &b.work[..dx.len()];
                dx.iter_mut().zip(b.dy).zip(mask).for_each(|((d, &g), &m)| *d = g * m);
            } else {
                dx.copy_from_slice(b.dy);
            }
        }
    }
}
