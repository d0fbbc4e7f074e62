//! `dense`: every output a weighted sum of every input plus a bias; also the
//! output layer, whose outputs the network turns into class probabilities.

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::Shape;
use super::layer::{Backward, Flops, Layer, Pass, column_sums, fill_rows};
use crate::model::{mat, mat_mut, narrow};

/// A fully connected layer: `weight` is `inputs × units` (a batch is
/// `X · W`), then `bias`.
#[derive(Debug, Clone)]
pub struct Dense {
    inputs: usize,
    units: usize,
    output_layer: bool,
}

impl Dense {
    /// A layer from `inputs` features to `units`.
    pub fn new(inputs: usize, units: usize) -> Self {
        Self {
            inputs,
            units,
            output_layer: false,
        }
    }

    /// The network's last layer: `classes` logits.
    pub fn output(inputs: usize, classes: usize) -> Self {
        Self {
            output_layer: true,
            ..Self::new(inputs, classes)
        }
    }
}

impl Layer for Dense {
    fn name(&self) -> &'static str {
        if self.output_layer { "output" } else { "dense" }
    }

    fn output(&self) -> Shape {
        Shape::flat(self.units)
    }

    fn tensors(&self) -> Vec<(&'static str, Vec<usize>)> {
        vec![("weight", vec![self.inputs, self.units]), ("bias", vec![self.units])]
    }

    fn init(&self, params: &mut [f32], rng: &mut Xoshiro256PlusPlus, bound: &dyn Fn(usize, usize) -> f32) {
        let bound = bound(self.inputs, self.units);
        let (w, b) = params.split_at_mut(self.inputs * self.units);
        w.iter_mut().for_each(|v| *v = rng.random_range(-bound..bound));
        b.fill(0.0);
    }

    fn forward(&self, rows: usize, params: &[f32], x: &[f32], y: &mut [f32], _: &mut [f32], _: &mut Pass<'_>) {
        let (w, b) = params.split_at(self.inputs * self.units);
        fill_rows(y, b);
        let w = mat(w, self.inputs, self.units);
        narrow::mat_mul(&mat(x, rows, self.inputs), &w, 1.0, &mut mat_mut(y, rows, self.units));
    }

    fn backward(&self, b: Backward<'_>) {
        let (n, m) = (self.inputs, self.units);
        let dy = mat(b.dy, b.rows, m);
        let (gw, gb) = b.grad.split_at_mut(n * m);
        let beta = if b.accumulate { 1.0 } else { 0.0 };
        narrow::mat_mul(&mat(b.x, b.rows, n).t(), &dy, beta, &mut mat_mut(gw, n, m));
        column_sums(gb, b.dy, b.accumulate);
        if let Some(dx) = b.dx {
            let w = mat(&b.params[..n * m], n, m);
            narrow::mat_mul(&dy, &w.t(), 0.0, &mut mat_mut(dx, b.rows, n));
        }
    }

    fn flops(&self) -> Flops {
        let product = 2 * (self.inputs * self.units) as u64;
        Flops {
            forward: product,
            weights: product,
            input: product,
        }
    }
}
