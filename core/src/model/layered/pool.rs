//! `max_pool2d` and `avg_pool2d`: each channel's windows reduced to their
//! largest or mean value.

use super::Shape;
use super::layer::{Backward, Layer, Pass};

/// How a window is reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// The largest value; its gradient goes to the first position holding it.
    Max,
    /// The mean; its gradient is shared equally.
    Mean,
}

/// Pooling over square windows of `size`, `stride` apart, without padding.
#[derive(Debug, Clone)]
pub struct Pool {
    input: Shape,
    output: Shape,
    stride: usize,
    reduce: Reduce,
    /// Offsets of a window's values from its top-left, row by row.
    offsets: Vec<usize>,
}

impl Pool {
    /// Pooling of `input`; `None` when the window does not fit.
    pub fn new(input: Shape, size: usize, stride: usize, reduce: Reduce) -> Option<Self> {
        let out = |side: usize| (size > 0 && stride > 0 && size <= side).then(|| (side - size) / stride + 1);
        let (line, c) = (input.width * input.channels, input.channels);
        Some(Self {
            input,
            output: Shape::image(input.channels, out(input.height)?, out(input.width)?),
            stride,
            reduce,
            offsets: (0..size)
                .flat_map(|i| (0..size).map(move |j| i * line + j * c))
                .collect(),
        })
    }

    /// Calls `f(output_offset, window_offset)` for every output position
    /// of `rows` examples: offsets of the position's first channel and of
    /// its window's top-left value (channels follow contiguously, rows of
    /// the window are `line` apart).
    #[inline(always)]
    fn for_each_window(&self, rows: usize, mut f: impl FnMut(usize, usize)) {
        let (c, w) = (self.input.channels, self.input.width);
        let (oh, ow) = (self.output.height, self.output.width);
        for r in 0..rows {
            let (image, out) = (r * self.input.len(), r * self.output.len());
            for y in 0..oh {
                for x in 0..ow {
                    f(
                        out + (y * ow + x) * c,
                        image + (y * self.stride * w + x * self.stride) * c,
                    );
                }
            }
        }
    }
}

impl Layer for Pool {
    fn name(&self) -> &'static str {
        match self.reduce {
            Reduce::Max => "max_pool2d",
            Reduce::Mean => "avg_pool2d",
        }
    }

    fn output(&self) -> Shape {
        self.output
    }

    fn forward(&self, rows: usize, _: &[f32], x: &[f32], y: &mut [f32], _: &mut [f32], _: &mut Pass<'_>) {
        let c = self.input.channels;
        let offsets = &self.offsets;
        let scale = 1.0 / offsets.len() as f32;
        crate::cpu::wide(|| {
            self.for_each_window(rows, |at, origin| {
                let out = &mut y[at..at + c];
                out.copy_from_slice(&x[origin..origin + c]);
                for &o in &offsets[1..] {
                    let run = &x[origin + o..origin + o + c];
                    match self.reduce {
                        Reduce::Max => out.iter_mut().zip(run).for_each(|(m, &v)| *m = m.max(v)),
                        Reduce::Mean => out.iter_mut().zip(run).for_each(|(m, &v)| *m += v),
                    }
                }
                if self.reduce == Reduce::Mean {
                    out.iter_mut().for_each(|m| *m *= scale);
                }
            })
        });
    }

    /// Which channels of a window have given their maximum its gradient.
    fn work(&self, _rows: usize) -> usize {
        self.input.channels
    }

    fn backward(&self, b: Backward<'_>) {
        let Some(dx) = b.dx else { return };
        dx.fill(0.0);
        let c = self.input.channels;
        let offsets = &self.offsets;
        let scale = 1.0 / offsets.len() as f32;
        let taken = &mut b.work[..c];
        crate::cpu::wide(|| {
            self.for_each_window(b.rows, |at, origin| {
                let (y, dy) = (&b.y[at..at + c], &b.dy[at..at + c]);
                match self.reduce {
                    // The first position holding a channel's maximum takes its
                    // gradient: branch-free, so the loop runs a vector of
                    // channels at a time.
                    Reduce::Max => {
                        taken.fill(0.0);
                        for &o in offsets {
                            let (x, dx) = (&b.x[origin + o..origin + o + c], &mut dx[origin + o..origin + o + c]);
                            for ch in 0..c {
                                let hit = f32::from(u8::from(x[ch] == y[ch])) * (1.0 - taken[ch]);
                                dx[ch] += hit * dy[ch];
                                taken[ch] += hit;
                            }
                        }
                    }
                    Reduce::Mean => {
                        for &o in offsets {
                            let run = &mut dx[origin + o..origin + o + c];
                            run.iter_mut().zip(dy).for_each(|(d, &g)| *d += g * scale);
                        }
                    }
                }
            })
        });
    }
}
