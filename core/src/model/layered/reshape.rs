//! Layers that only move values: `flatten`, and the reordering of
//! channels-first input into the channels-last order between layers.

use super::Shape;
use super::layer::{Backward, Layer, Pass};

/// `flatten`: an image as a flat vector of its values (channels-last order),
/// for the dense layers after convolutions.
#[derive(Debug, Clone)]
pub struct Flatten {
    len: usize,
}

impl Flatten {
    /// Flattening `input`.
    pub fn new(input: Shape) -> Self {
        Self { len: input.len() }
    }
}

impl Layer for Flatten {
    fn name(&self) -> &'static str {
        "flatten"
    }

    fn output(&self) -> Shape {
        Shape::flat(self.len)
    }

    fn forward(&self, _: usize, _: &[f32], x: &[f32], y: &mut [f32], _: &mut [f32], _: &mut Pass<'_>) {
        y.copy_from_slice(x);
    }

    fn backward(&self, b: Backward<'_>) {
        if let Some(dx) = b.dx {
            dx.copy_from_slice(b.dy);
        }
    }
}

/// Channels-first input (`[data] layout = "chw"`, several channels) put in
/// channels-last order; the network's first layer when it is needed.
#[derive(Debug, Clone)]
pub struct ToChannelsLast {
    shape: Shape,
}

impl ToChannelsLast {
    /// Reordering images of `shape`.
    pub fn new(shape: Shape) -> Self {
        Self { shape }
    }

    /// `(channels-first, channels-last)` offsets of every value of one example.
    fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let Shape {
            channels: c,
            height: h,
            width: w,
        } = self.shape;
        (0..c).flat_map(move |ch| (0..h * w).map(move |p| (ch * h * w + p, p * c + ch)))
    }
}

impl Layer for ToChannelsLast {
    fn name(&self) -> &'static str {
        "channels-last"
    }

    fn output(&self) -> Shape {
        self.shape
    }

    fn forward(&self, rows: usize, _: &[f32], x: &[f32], y: &mut [f32], _: &mut [f32], _: &mut Pass<'_>) {
        let n = self.shape.len();
        for (x, y) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).take(rows) {
            self.pairs().for_each(|(first, last)| y[last] = x[first]);
        }
    }

    fn backward(&self, b: Backward<'_>) {
        let n = self.shape.len();
        if let Some(dx) = b.dx {
            for (dx, dy) in dx.chunks_exact_mut(n).zip(b.dy.chunks_exact(n)) {
                self.pairs().for_each(|(first, last)| dx[first] = dy[last]);
            }
        }
    }
}
