//! `conv2d`: filters slid over an image, as matrix products over the shard.
//!
//! The patches are unrolled into a matrix (im2col): one row per output
//! position of every example, `kernel × kernel × channels` wide. The output
//! is then `patches · W`, and with channels-last activations that product's
//! rows are already the output's layout — no reordering. The weight's
//! gradient is `patchesᵀ · dY`; the input's is `dY · Wᵀ` folded back onto the
//! image (col2im). All three are GEMMs, so a convolution runs at the GEMM's
//! speed on every core, as a dense layer does.
//!
//! A shard is unrolled a few examples at a time ([`CHUNK_VALUES`]), and
//! unrolled again for the backward pass rather than kept: a chunk's patches
//! stay in the core's cache from unrolling to the products that read them,
//! where a whole shard's (8 MB for LeNet's second convolution at 64
//! examples) would go out to memory and back twice. Unrolling is a copy, a
//! few percent of the products' time.

use std::ops::Range;

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::Shape;
use super::layer::{Backward, Flops, Layer, Pass, column_sums, fill_rows};
use crate::model::{mat, mat_mut, narrow};

/// Patch values unrolled at a time (512 KB): half a core's L2 cache, the rest
/// left to the GEMM's packed blocks.
const CHUNK_VALUES: usize = 1 << 17;

/// A 2-D convolution. `weight` is `kernel × kernel × in_channels × filters`
/// (height, width, input channel, filter: TensorFlow's HWIO), then `bias`
/// (one per filter).
#[derive(Debug, Clone)]
pub struct Conv2d {
    input: Shape,
    output: Shape,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// `filters` maps from `input`, with a square kernel; `None` when the
    /// kernel does not fit the (padded) input.
    pub fn new(input: Shape, filters: usize, kernel: usize, stride: usize, padding: usize) -> Option<Self> {
        let out = |side: usize| {
            let padded = side + 2 * padding;
            (kernel <= padded && stride > 0).then(|| (padded - kernel) / stride + 1)
        };
        Some(Self {
            input,
            output: Shape::image(filters, out(input.height)?, out(input.width)?),
            kernel,
            stride,
            padding,
        })
    }

    /// Values per patch: a row of the unrolled matrix.
    fn patch(&self) -> usize {
        self.kernel * self.kernel * self.input.channels
    }

    /// Output positions per example.
    fn positions(&self) -> usize {
        self.output.height * self.output.width
    }

    /// The shard's examples in chunks whose patches fill at most
    /// [`CHUNK_VALUES`] (one example at least).
    fn chunks(&self, rows: usize) -> impl Iterator<Item = Range<usize>> {
        let size = (CHUNK_VALUES / (self.positions() * self.patch())).max(1);
        (0..rows).step_by(size).map(move |r| r..(r + size).min(rows))
    }

    /// Visits every (patch value run, image value run) pair of a shard: for
    /// output position `p` and kernel offset, `f(patch_offset, image_offset,
    /// len)` with `image_offset` `None` where the kernel lies on padding.
    fn for_each_run(&self, rows: usize, mut f: impl FnMut(usize, Option<usize>, usize)) {
        let (c, h, w) = (self.input.channels, self.input.height, self.input.width);
        let (k, s, pad) = (self.kernel, self.stride, self.padding as isize);
        let (oh, ow) = (self.output.height, self.output.width);
        let patch = self.patch();
        for r in 0..rows {
            let image = r * self.input.len();
            for y in 0..oh {
                for x in 0..ow {
                    let row = ((r * oh + y) * ow + x) * patch;
                    let left = (x * s) as isize - pad;
                    let whole_row = s == 1 && left >= 0 && left as usize + k <= w;
                    for i in 0..k {
                        let ih = (y * s + i) as isize - pad;
                        let dst = row + i * k * c;
                        if ih < 0 || ih as usize >= h {
                            f(dst, None, k * c);
                            continue;
                        }
                        let line = image + ih as usize * w * c;
                        if whole_row {
                            // The kernel's row lies inside the image: one run.
                            f(dst, Some(line + left as usize * c), k * c);
                            continue;
                        }
                        for j in 0..k {
                            let iw = left + j as isize;
                            let inside = iw >= 0 && (iw as usize) < w;
                            f(dst + j * c, inside.then(|| line + iw as usize * c), c);
                        }
                    }
                }
            }
        }
    }

    /// Unrolls the shard's patches into `cols` (positions × patch).
    fn im2col(&self, rows: usize, x: &[f32], cols: &mut [f32]) {
        self.for_each_run(rows, |dst, src, len| match src {
            Some(src) => cols[dst..dst + len].copy_from_slice(&x[src..src + len]),
            None => cols[dst..dst + len].fill(0.0),
        });
    }

    /// Adds every patch value of `cols` back onto the image it came from.
    fn col2im(&self, rows: usize, cols: &[f32], dx: &mut [f32]) {
        dx.fill(0.0);
        self.for_each_run(rows, |src, dst, len| {
            if let Some(dst) = dst {
                dx[dst..dst + len]
                    .iter_mut()
                    .zip(&cols[src..src + len])
                    .for_each(|(d, v)| *d += v);
            }
        });
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn output(&self) -> Shape {
        self.output
    }

    fn tensors(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (k, c, f) = (self.kernel, self.input.channels, self.output.channels);
        vec![("weight", vec![k, k, c, f]), ("bias", vec![f])]
    }

    fn init(&self, params: &mut [f32], rng: &mut Xoshiro256PlusPlus, bound: &dyn Fn(usize, usize) -> f32) {
        let f = self.output.channels;
        let bound = bound(self.patch(), self.kernel * self.kernel * f);
        let (w, b) = params.split_at_mut(self.patch() * f);
        w.iter_mut().for_each(|v| *v = rng.random_range(-bound..bound));
        b.fill(0.0);
    }

    fn work(&self, rows: usize) -> usize {
        self.chunks(rows).next().map_or(0, |c| c.len()) * self.positions() * self.patch()
    }

    fn forward(&self, rows: usize, params: &[f32], x: &[f32], y: &mut [f32], work: &mut [f32], _: &mut Pass<'_>) {
        let (k, f, n) = (self.patch(), self.output.channels, self.input.len());
        let (w, b) = params.split_at(k * f);
        fill_rows(y, b);
        for chunk in self.chunks(rows) {
            let p = chunk.len() * self.positions();
            let cols = &mut work[..p * k];
            self.im2col(chunk.len(), &x[chunk.start * n..chunk.end * n], cols);
            let y = &mut y[chunk.start * self.positions() * f..][..p * f];
            narrow::mat_mul(&mat(cols, p, k), &mat(w, k, f), 1.0, &mut mat_mut(y, p, f));
        }
    }

    fn backward(&self, b: Backward<'_>) {
        let (k, f, n) = (self.patch(), self.output.channels, self.input.len());
        let (gw, gb) = b.grad.split_at_mut(k * f);
        column_sums(gb, b.dy, b.accumulate);
        let w = mat(&b.params[..k * f], k, f);
        let mut dx = b.dx;
        for (i, chunk) in self.chunks(b.rows).enumerate() {
            let p = chunk.len() * self.positions();
            let cols = &mut b.work[..p * k];
            self.im2col(chunk.len(), &b.x[chunk.start * n..chunk.end * n], cols);
            let dy = mat(&b.dy[chunk.start * self.positions() * f..][..p * f], p, f);
            let beta = if i > 0 || b.accumulate { 1.0 } else { 0.0 };
            narrow::mat_mul(&mat(cols, p, k).t(), &dy, beta, &mut mat_mut(gw, k, f));
            if let Some(dx) = dx.as_deref_mut() {
                // The patches are spent: their buffer takes the patches' gradient.
                narrow::mat_mul(&dy, &w.t(), 0.0, &mut mat_mut(cols, p, k));
                self.col2im(chunk.len(), cols, &mut dx[chunk.start * n..chunk.end * n]);
            }
        }
    }

    fn flops(&self) -> Flops {
        let product = 2 * (self.positions() * self.patch() * self.output.channels) as u64;
        Flops {
            forward: product,
            weights: product,
            input: product,
        }
    }
}
