//! Networks listed layer by layer in the job (`[[model.layers]]`):
//! convolutions, pooling, dense layers, dropout and nonlinearities, ending
//! in a softmax output. Each layer is a module behind [`layer::Layer`]; this
//! one chains them, runs them forward and back over a shard of a batch, and
//! gives the network to the rest of deepdist through [`Model`] and
//! [`super::Network`].
//!
//! A tensor is named after the job's entry it belongs to:
//! `layers.{i}.weight` and `layers.{i}.bias` for `model.layers[i]`.

mod activation;
mod conv;
mod dense;
mod dropout;
pub mod layer;
mod pool;
mod reshape;
mod shape;
pub mod spec;

use ndarray::{Array2, ArrayView2, s};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use std::ops::Range;

use super::activation::softmax_rows;
use super::check::{check_labels, check_params, check_width};
use super::mlp::argmax;
use super::{Activation, Evaluation, Layout, Model, ModelError, StageEval, mat, mat_mut};
use crate::data::Dataset;
use layer::{Backward, Layer, Pass};
pub use shape::Shape;
pub use spec::LayerSpec;

/// Smallest probability taken into a log, as the MLP's.
const MIN_PROB: f32 = 1e-7;
/// Examples per chunk when evaluating or predicting: a convolution's patches
/// for a chunk must stay a few megabytes.
const EVAL_ROWS: usize = 128;

/// A network of layers, as a job lists them.
#[derive(Debug, Clone)]
pub struct Layered {
    input: Shape,
    layers: Vec<spec::Built>,
    /// Each layer's parameters in the flat vector.
    ranges: Vec<Range<usize>>,
    /// Whether some layer before each one has parameters (so the gradient
    /// must flow back through it).
    flows_back: Vec<bool>,
    layout: Layout,
    classes: usize,
}

/// Per-thread activations, their gradients and the layers' working memory.
#[derive(Debug)]
pub struct LayeredScratch {
    acts: Vec<Vec<f32>>,
    deltas: Vec<Vec<f32>>,
    work: Vec<Vec<f32>>,
    /// A batch that did not arrive as one block, copied into one.
    input: Vec<f32>,
    rng: Xoshiro256PlusPlus,
}

impl Layered {
    /// The network `specs` describes, on examples of `input` (given
    /// channels-first when `channels_first`), for `classes` classes.
    pub fn new(specs: &[LayerSpec], input: Shape, channels_first: bool, classes: usize) -> Result<Self, ModelError> {
        if !(2..=256).contains(&classes) {
            return Err(ModelError::BadSpec(format!(
                "{classes} classes: labels are bytes, 2 to 256 classes"
            )));
        }
        let layers = spec::build(specs, input, channels_first, classes)?;
        let mut layout = Layout::default();
        let mut ranges = Vec::new();
        for built in &layers {
            let start = layout.len();
            for (suffix, shape) in built.layer.tensors() {
                let entry = built.index.unwrap_or_default();
                layout.push(format!("layers.{entry}.{suffix}"), &shape);
            }
            ranges.push(start..layout.len());
        }
        let flows_back = (0..layers.len())
            .map(|l| ranges[..l].iter().any(|r| !r.is_empty()))
            .collect();
        Ok(Self {
            input,
            layers,
            ranges,
            flows_back,
            layout,
            classes,
        })
    }

    /// The layers in order, with the job entry each came from.
    pub fn layers(&self) -> impl Iterator<Item = (Option<usize>, &dyn Layer)> {
        self.layers.iter().map(|b| (b.index, b.layer.as_ref()))
    }

    /// One line per layer: its type, the job entry and its output shape.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!("input {}", self.input)];
        lines.extend((0..self.layers.len()).map(|l| self.layer_label(l)));
        lines.join("\n")
    }

    fn layer(&self, l: usize) -> &dyn Layer {
        self.layers[l].layer.as_ref()
    }

    /// The first `rows` examples of `x` through every layer; the class
    /// probabilities end in the last activation buffer.
    fn forward(&self, params: &[f32], rows: usize, x: &[f32], scratch: &mut LayeredScratch, train: bool) {
        let mut pass = Pass {
            train,
            rng: &mut scratch.rng,
        };
        for l in 0..self.layers.len() {
            let (before, rest) = scratch.acts.split_at_mut(l);
            let input = if l == 0 { x } else { &before[l - 1][..] };
            let input = &input[..rows * self.input_len(l)];
            let out = &mut rest[0][..rows * self.layer(l).output().len()];
            self.layer(l).forward(
                rows,
                &params[self.ranges[l].clone()],
                input,
                out,
                &mut scratch.work[l],
                &mut pass,
            );
        }
        let last = self.layers.len() - 1;
        softmax_rows(&mut mat_mut(&mut scratch.acts[last], rows, self.classes));
    }

    /// Values per example going into layer `l`.
    fn input_len(&self, l: usize) -> usize {
        if l == 0 {
            self.input.len()
        } else {
            self.layer(l - 1).output().len()
        }
    }

    /// Runs `each(chunk_start, probabilities)` over `x` in parallel chunks.
    fn chunked<T: Send>(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        each: impl Fn(usize, ArrayView2<'_, f32>) -> T + Sync,
    ) -> Vec<T> {
        let n = x.nrows();
        (0..n.div_ceil(EVAL_ROWS))
            .into_par_iter()
            .map_init(
                || (self.scratch(EVAL_ROWS, 0), Vec::new()),
                |(scratch, block), c| {
                    crate::cpu::flush_denormals();
                    let range = c * EVAL_ROWS..((c + 1) * EVAL_ROWS).min(n);
                    let rows = range.len();
                    let chunk = x.slice(s![range, ..]);
                    let values = contiguous(chunk, block);
                    self.forward(params, rows, values, scratch, false);
                    let last = &scratch.acts[self.layers.len() - 1][..rows * self.classes];
                    each(c * EVAL_ROWS, mat(last, rows, self.classes))
                },
            )
            .collect()
    }

    /// Mean loss and accuracy on `data`.
    pub fn evaluate(&self, params: &[f32], data: &Dataset) -> Result<Evaluation, ModelError> {
        check_params(&self.layout, params)?;
        check_width(self.input.len(), data.features())?;
        check_labels(data.labels(), self.classes)?;
        if data.is_empty() {
            return Err(ModelError::BadBatch("cannot evaluate on an empty dataset".into()));
        }
        let labels = data.labels();
        let parts = self.chunked(params, data.features(), |start, probs| {
            let mut loss = 0.0f64;
            let mut correct = 0usize;
            for (i, p) in probs.rows().into_iter().enumerate() {
                let label = usize::from(labels[start + i]);
                loss -= f64::from(p[label].max(MIN_PROB).ln());
                correct += usize::from(argmax(p.as_slice().unwrap_or(&[])) == label);
            }
            (loss, correct)
        });
        let (loss, correct) = parts.into_iter().fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        Ok(Evaluation {
            loss: (loss / data.len() as f64) as f32,
            accuracy: correct as f32 / data.len() as f32,
        })
    }

    /// Class probabilities for every row of `x`.
    pub fn predict_proba(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Result<Array2<f32>, ModelError> {
        check_params(&self.layout, params)?;
        check_width(self.input.len(), x)?;
        let mut out = Array2::zeros((x.nrows(), self.classes));
        for (start, block) in self.chunked(params, x, |start, probs| (start, probs.to_owned())) {
            out.slice_mut(s![start..start + block.nrows(), ..]).assign(&block);
        }
        Ok(out)
    }
}

/// One layer's forward and backward passes over a shard of synthetic
/// examples, as a training step runs them: what the per-layer benchmark
/// times on every core at once.
pub struct LayerPass<'a> {
    net: &'a Layered,
    l: usize,
    rows: usize,
    params: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    grad: Vec<f32>,
    work: Vec<f32>,
    rng: Xoshiro256PlusPlus,
}

impl LayerPass<'_> {
    /// One forward and one backward pass.
    pub fn run(&mut self) {
        let (net, l, rows) = (self.net, self.l, self.rows);
        let layer = net.layer(l);
        let params = &self.params[net.ranges[l].clone()];
        let mut pass = Pass {
            train: true,
            rng: &mut self.rng,
        };
        layer.forward(rows, params, &self.x, &mut self.y, &mut self.work, &mut pass);
        layer.backward(Backward {
            rows,
            params,
            x: &self.x,
            y: &self.y,
            dy: &self.dy,
            dx: net.flows_back[l].then_some(&mut self.dx[..]),
            grad: &mut self.grad,
            accumulate: false,
            work: &mut self.work,
        });
    }
}

impl Layered {
    /// Number of layers, with those a job entry adds (its activation).
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Layer `l` as a benchmark names it: the job entry, type and output.
    pub fn layer_label(&self, l: usize) -> String {
        let (index, layer) = (self.layers[l].index, self.layer(l));
        let at = index.map_or_else(String::new, |i| format!("[{i}] "));
        format!("{at}{} → {}", layer.name(), layer.output())
    }

    /// Operations per example of layer `l` in a training step: forward,
    /// the parameters' gradient, and the input's where it flows back.
    pub fn layer_flops(&self, l: usize) -> u64 {
        let f = self.layer(l).flops();
        let weights = if self.ranges[l].is_empty() { 0 } else { f.weights };
        let input = if self.flows_back[l] { f.input } else { 0 };
        f.forward + weights + input
    }

    /// Layer `l`'s passes over `rows` synthetic examples.
    pub fn layer_pass(&self, l: usize, rows: usize, seed: u64) -> LayerPass<'_> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let values = |n: usize, rng: &mut Xoshiro256PlusPlus| -> Vec<f32> {
            (0..n).map(|_| rand::Rng::random_range(rng, -1.0..1.0)).collect()
        };
        let (n_in, n_out) = (rows * self.input_len(l), rows * self.layer(l).output().len());
        LayerPass {
            net: self,
            l,
            rows,
            params: self.init(seed),
            x: values(n_in, &mut rng),
            y: vec![0.0; n_out],
            dy: values(n_out, &mut rng),
            dx: vec![0.0; n_in],
            grad: vec![0.0; self.ranges[l].len()],
            work: vec![0.0; self.layer(l).work(rows)],
            rng,
        }
    }
}

/// `x` as one block of values: itself when it is one, else copied into `buffer`.
fn contiguous<'a>(x: ArrayView2<'a, f32>, buffer: &'a mut Vec<f32>) -> &'a [f32] {
    match x.to_slice() {
        Some(values) => values,
        None => {
            buffer.clear();
            buffer.extend(x.iter());
            buffer
        }
    }
}

impl Model for Layered {
    type Scratch = LayeredScratch;

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_dim(&self) -> usize {
        self.input.len()
    }

    fn classes(&self) -> Option<usize> {
        Some(self.classes)
    }

    fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut params = vec![0.0; self.layout.len()];
        for l in 0..self.layers.len() {
            // A layer's bound suits the nonlinearity after it (Glorot before
            // tanh, sigmoid and the softmax, He before ReLU).
            let unit = match self.layers.get(l + 1).map(|b| b.layer.name()) {
                Some("relu") => Activation::Relu,
                Some("sigmoid") => Activation::Sigmoid,
                _ => Activation::Tanh,
            };
            let bound = move |fan_in, fan_out| unit.init_bound(fan_in, fan_out);
            self.layer(l)
                .init(&mut params[self.ranges[l].clone()], &mut rng, &bound);
        }
        params
    }

    fn scratch(&self, max_rows: usize, seed: u64) -> LayeredScratch {
        let per_layer = |len: &dyn Fn(&dyn Layer) -> usize| {
            self.layers
                .iter()
                .map(|b| vec![0.0; len(b.layer.as_ref())])
                .collect::<Vec<_>>()
        };
        LayeredScratch {
            acts: per_layer(&|l| max_rows * l.output().len()),
            deltas: per_layer(&|l| max_rows * l.output().len()),
            work: per_layer(&|l| l.work(max_rows)),
            input: Vec::new(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    fn shard_gradient(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u8],
        scale: f32,
        grad: &mut [f32],
        accumulate: bool,
        scratch: &mut LayeredScratch,
    ) -> f32 {
        let rows = x.nrows();
        let mut block = std::mem::take(&mut scratch.input);
        let x = contiguous(x, &mut block);
        self.forward(params, rows, x, scratch, true);

        // Softmax and cross-entropy: d loss / d logits = p − onehot(y).
        let last = self.layers.len() - 1;
        let mut loss = 0.0f32;
        {
            let (c, probs) = (self.classes, &scratch.acts[last][..rows * self.classes]);
            let delta = &mut scratch.deltas[last][..rows * c];
            for (i, &label) in y.iter().enumerate() {
                let label = usize::from(label);
                let (p, d) = (&probs[i * c..(i + 1) * c], &mut delta[i * c..(i + 1) * c]);
                loss -= p[label].max(MIN_PROB).ln();
                d.iter_mut().zip(p).for_each(|(d, &p)| *d = p * scale);
                d[label] -= scale;
            }
        }

        for l in (0..self.layers.len()).rev() {
            let range = self.ranges[l].clone();
            let flows_back = self.flows_back[l];
            if range.is_empty() && !flows_back {
                break;
            }
            let (n_in, n_out) = (rows * self.input_len(l), rows * self.layer(l).output().len());
            let (lower, upper) = scratch.deltas.split_at_mut(l);
            let dx = match flows_back {
                true => lower.last_mut().map(|d| &mut d[..n_in]),
                false => None,
            };
            let input = if l == 0 { x } else { &scratch.acts[l - 1][..n_in] };
            self.layer(l).backward(Backward {
                rows,
                params: &params[range.clone()],
                x: input,
                y: &scratch.acts[l][..n_out],
                dy: &upper[0][..n_out],
                dx,
                grad: &mut grad[range],
                accumulate,
                work: &mut scratch.work[l],
            });
        }
        scratch.input = block;
        loss
    }

    fn flops_per_example(&self) -> u64 {
        (0..self.layers.len()).map(|l| self.layer_flops(l)).sum()
    }
}

impl super::Network for Layered {
    crate::network_from_model!();

    fn evaluate(&self, params: &[f32], data: &Dataset) -> Result<StageEval, ModelError> {
        Layered::evaluate(self, params, data).map(StageEval::Supervised)
    }

    fn predict(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Result<Array2<f32>, ModelError> {
        self.predict_proba(params, x)
    }

    fn describe(&self) -> Option<String> {
        Some(self.summary())
    }
}

#[cfg(test)]
mod tests;
