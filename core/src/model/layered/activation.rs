//! `relu`, `tanh`, `sigmoid`: a nonlinearity on every value.

use super::Shape;
use super::layer::{Backward, Layer, Pass};
use crate::model::{Activation, mat, mat_mut};

/// A nonlinearity as a layer of its own.
#[derive(Debug, Clone)]
pub struct Nonlinearity {
    shape: Shape,
    unit: Activation,
}

impl Nonlinearity {
    /// `unit` on every value of `shape`.
    pub fn new(shape: Shape, unit: Activation) -> Self {
        Self { shape, unit }
    }
}

impl Layer for Nonlinearity {
    fn name(&self) -> &'static str {
        match self.unit {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        }
    }

    fn output(&self) -> Shape {
        self.shape
    }

    fn forward(&self, rows: usize, _: &[f32], x: &[f32], y: &mut [f32], _: &mut [f32], _: &mut Pass<'_>) {
        y.copy_from_slice(x);
        self.unit.apply(&mut mat_mut(y, rows, self.shape.len()));
    }

    fn backward(&self, b: Backward<'_>) {
        if let Some(dx) = b.dx {
            dx.copy_from_slice(b.dy);
            let n = self.shape.len();
            self.unit.backprop(&mut mat_mut(dx, b.rows, n), mat(b.y, b.rows, n));
        }
    }
}
