//! Multi-layer perceptron: hidden layers of one [`Activation`], a softmax
//! output and cross-entropy loss.
//!
//! Layer `l` owns `layer{l}.weight` (`in × out`, so a batch is `X · W`) and
//! `layer{l}.bias` (`out`).

use ndarray::{Array2, ArrayView2, Axis, s};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use super::activation::{Activation, softmax_rows};
use super::check::{check_labels, check_params, check_width};
use super::dropout::{self, Dropout};
use super::narrow;
use super::{Layout, Model, ModelError, mat, mat_mut};
use crate::cpu::wide;
use crate::data::Dataset;

/// Smallest probability taken into a log, so a confident mistake costs a
/// large but finite loss.
const MIN_PROB: f32 = 1e-7;
/// Rows per chunk when evaluating a whole dataset in parallel.
const EVAL_CHUNK: usize = 1024;

/// A fully connected network ending in softmax.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    sizes: Vec<usize>,
    activation: Activation,
    dropout: Dropout,
    layout: Layout,
}

/// Per-thread activations and deltas, one matrix per layer.
#[derive(Debug)]
pub struct MlpScratch {
    acts: Vec<Array2<f32>>,
    deltas: Vec<Array2<f32>>,
    /// Dropout masks of the hidden layers (0 or `1 / (1 − p)`); empty without dropout.
    masks: Vec<Array2<f32>>,
    /// The batch after input dropout; empty without it.
    input: Array2<f32>,
    rng: Xoshiro256PlusPlus,
}

/// Loss and accuracy of a model on a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction classified correctly.
    pub accuracy: f32,
}

impl Mlp {
    /// A network with these layer sizes (input first, classes last) and
    /// hidden nonlinearity.
    pub fn new(sizes: &[usize], activation: Activation) -> Result<Self, ModelError> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(ModelError::BadSpec(format!(
                "an MLP needs at least an input and an output size, all positive (got {sizes:?})"
            )));
        }
        if sizes[sizes.len() - 1] > 256 {
            return Err(ModelError::BadSpec("labels are bytes: at most 256 classes".into()));
        }
        let mut layout = Layout::default();
        for (l, w) in sizes.windows(2).enumerate() {
            layout.push(format!("layer{l}.weight"), &[w[0], w[1]]);
            layout.push(format!("layer{l}.bias"), &[w[1]]);
        }
        Ok(Self {
            sizes: sizes.to_vec(),
            activation,
            dropout: Dropout::default(),
            layout,
        })
    }

    /// The same network trained with dropout.
    pub fn with_dropout(mut self, dropout: Dropout) -> Result<Self, ModelError> {
        for (name, p) in [("input", dropout.input), ("hidden", dropout.hidden)] {
            if !(0.0..1.0).contains(&p) {
                return Err(ModelError::BadSpec(format!(
                    "{name} dropout must be in [0, 1), got {p}"
                )));
            }
        }
        self.dropout = dropout;
        Ok(self)
    }

    /// Layer sizes, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The hidden nonlinearity.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Runs the forward pass for the first `rows` rows; the class
    /// probabilities end up in the last activation matrix. With `train`,
    /// dropout is applied: `x` must then be the scratch's dropped input
    /// when input dropout is on (see [`Mlp::drop_inputs`]).
    fn forward(&self, params: &[f32], x: ArrayView2<'_, f32>, scratch: &mut MlpScratch, train: bool) {
        let rows = x.nrows();
        for l in 0..self.layers() {
            let (before, rest) = scratch.acts.split_at_mut(l);
            let input = if l == 0 { x } else { before[l - 1].slice(s![..rows, ..]) };
            let mut out = rest[0].slice_mut(s![..rows, ..]);
            let (w, b) = self.weight_bias(params, l);
            for mut row in out.rows_mut() {
                row.assign(&b);
            }
            narrow::mat_mul(&input, &w, 1.0, &mut out);
            if l + 1 < self.layers() {
                self.activation.apply(&mut out);
                if train && self.dropout.hidden > 0.0 {
                    let mut mask = scratch.masks[l].slice_mut(s![..rows, ..]);
                    dropout::drop_units(&mut out, &mut mask, self.dropout.hidden, &mut scratch.rng);
                }
            } else {
                softmax_rows(&mut out);
            }
        }
    }

    /// Copies `x` into the scratch with input dropout applied.
    fn drop_inputs(&self, x: ArrayView2<'_, f32>, scratch: &mut MlpScratch) {
        let mut input = scratch.input.slice_mut(s![..x.nrows(), ..]);
        dropout::drop_inputs(x, &mut input, self.dropout.input, &mut scratch.rng);
    }

    fn weight_bias<'a>(&self, params: &'a [f32], l: usize) -> (ArrayView2<'a, f32>, ndarray::ArrayView1<'a, f32>) {
        let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
        let w = mat(&params[self.layout.range(2 * l)], fan_in, fan_out);
        let b = ndarray::ArrayView1::from(&params[self.layout.range(2 * l + 1)]);
        (w, b)
    }

    /// Class probabilities for every row of `x` (allocates; for evaluation).
    pub fn predict_proba(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Result<Array2<f32>, ModelError> {
        check_params(&self.layout, params)?;
        check_width(self.sizes[0], x)?;
        let mut scratch = self.scratch(x.nrows(), 0);
        self.forward(params, x, &mut scratch, false);
        Ok(scratch.acts.pop().unwrap_or_default())
    }

    /// Mean loss and accuracy on a dataset, in parallel over chunks of rows.
    pub fn evaluate(&self, params: &[f32], data: &Dataset) -> Result<Evaluation, ModelError> {
        check_params(&self.layout, params)?;
        check_width(self.sizes[0], data.features())?;
        check_labels(data.labels(), self.sizes[self.layers()])?;
        if data.is_empty() {
            return Err(ModelError::BadBatch("cannot evaluate on an empty dataset".into()));
        }
        let (loss, correct) = (0..data.len().div_ceil(EVAL_CHUNK))
            .into_par_iter()
            .map(|c| {
                // Evaluations run on whichever pool calls them (the driver's
                // is rayon's global one), and far-off logits give denormals.
                crate::cpu::flush_denormals();
                let rows = c * EVAL_CHUNK..((c + 1) * EVAL_CHUNK).min(data.len());
                let x = data.features().slice_move(s![rows.clone(), ..]);
                let y = &data.labels()[rows];
                let mut scratch = self.scratch(x.nrows(), 0);
                self.forward(params, x, &mut scratch, false);
                let probs = &scratch.acts[self.layers() - 1];
                let mut loss = 0.0f64;
                let mut correct = 0usize;
                for (p, &label) in probs.axis_iter(Axis(0)).zip(y) {
                    loss -= f64::from(p[usize::from(label)].max(MIN_PROB).ln());
                    if argmax(p.as_slice().unwrap_or(&[])) == usize::from(label) {
                        correct += 1;
                    }
                }
                (loss, correct)
            })
            .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        Ok(Evaluation {
            loss: (loss / data.len() as f64) as f32,
            accuracy: correct as f32 / data.len() as f32,
        })
    }

    /// Puts pre-trained weights and hidden biases (one pair per hidden layer)
    /// into a parameter vector of this network; the output layer keeps the
    /// values in `params`.
    pub fn load_hidden_layers(&self, params: &mut [f32], layers: &[(&[f32], &[f32])]) -> Result<(), ModelError> {
        check_params(&self.layout, params)?;
        if layers.len() >= self.layers() {
            return Err(ModelError::BadSpec(format!(
                "{} pre-trained layers for a network with {} hidden layers",
                layers.len(),
                self.layers() - 1
            )));
        }
        for (l, (w, b)) in layers.iter().enumerate() {
            let (wr, br) = (self.layout.range(2 * l), self.layout.range(2 * l + 1));
            if w.len() != wr.len() || b.len() != br.len() {
                return Err(ModelError::BadSpec(format!(
                    "pre-trained layer {l} does not fit {}×{}",
                    self.sizes[l],
                    self.sizes[l + 1]
                )));
            }
            params[wr].copy_from_slice(w);
            params[br].copy_from_slice(b);
        }
        Ok(())
    }
}

impl Model for Mlp {
    type Scratch = MlpScratch;

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_dim(&self) -> usize {
        self.sizes[0]
    }

    fn classes(&self) -> Option<usize> {
        Some(self.sizes[self.layers()])
    }

    fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut params = vec![0.0; self.layout.len()];
        for l in 0..self.layers() {
            let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
            // The softmax layer is initialised like a tanh layer (Glorot).
            let act = if l + 1 < self.layers() {
                self.activation
            } else {
                Activation::Tanh
            };
            let bound = act.init_bound(fan_in, fan_out);
            for v in &mut params[self.layout.range(2 * l)] {
                *v = rng.random_range(-bound..bound);
            }
        }
        params
    }

    fn scratch(&self, max_rows: usize, seed: u64) -> MlpScratch {
        let per_layer = |sizes: &[usize]| sizes.iter().map(|&n| Array2::zeros((max_rows, n))).collect();
        let hidden = &self.sizes[1..self.sizes.len() - 1];
        MlpScratch {
            acts: per_layer(&self.sizes[1..]),
            deltas: per_layer(&self.sizes[1..]),
            masks: if self.dropout.hidden > 0.0 {
                per_layer(hidden)
            } else {
                Vec::new()
            },
            input: if self.dropout.input > 0.0 {
                Array2::zeros((max_rows, self.sizes[0]))
            } else {
                Array2::zeros((0, 0))
            },
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
        scratch: &mut MlpScratch,
    ) -> f32 {
        let rows = x.nrows();
        let last = self.layers() - 1;
        // The dropped input is taken out of the scratch for the pass, so the
        // scratch's other buffers stay borrowable, and put back after it.
        let dropped = (self.dropout.input > 0.0).then(|| {
            self.drop_inputs(x, scratch);
            std::mem::take(&mut scratch.input)
        });
        let x = dropped.as_ref().map_or(x, |d| d.slice(s![..rows, ..]));
        self.forward(params, x, scratch, true);

        // Softmax + cross-entropy: d loss / d logits = p − onehot(y).
        let mut loss = 0.0f32;
        {
            let probs = scratch.acts[last].slice(s![..rows, ..]);
            let mut delta = scratch.deltas[last].slice_mut(s![..rows, ..]);
            delta.assign(&probs);
            for (i, &label) in y.iter().enumerate() {
                let label = usize::from(label);
                loss -= probs[[i, label]].max(MIN_PROB).ln();
                delta[[i, label]] -= 1.0;
            }
            delta.mapv_inplace(|d| d * scale);
        }

        for l in (0..=last).rev() {
            let input = if l == 0 {
                x
            } else {
                scratch.acts[l - 1].slice(s![..rows, ..])
            };
            let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
            let (lower, upper) = scratch.deltas.split_at_mut(l);
            let delta = upper[0].slice(s![..rows, ..]);
            let (gw, gb) =
                grad[self.layout.range(2 * l).start..self.layout.range(2 * l + 1).end].split_at_mut(fan_in * fan_out);
            let beta = if accumulate { 1.0 } else { 0.0 };
            narrow::mat_mul(&input.t(), &delta, beta, &mut mat_mut(gw, fan_in, fan_out));
            if !accumulate {
                gb.fill(0.0);
            }
            add_rows(gb, delta);
            if l > 0 {
                let (w, _) = self.weight_bias(params, l);
                let mut below = lower[l - 1].slice_mut(s![..rows, ..]);
                narrow::mat_mul(&delta, &w.t(), 0.0, &mut below);
                let a = scratch.acts[l - 1].slice(s![..rows, ..]);
                if self.dropout.hidden > 0.0 {
                    let mask = scratch.masks[l - 1].slice(s![..rows, ..]);
                    self.activation
                        .backprop_dropped(&mut below, mask, a, 1.0 - self.dropout.hidden);
                } else {
                    self.activation.backprop(&mut below, a);
                }
            }
        }
        if let Some(d) = dropped {
            scratch.input = d;
        }
        loss
    }

    fn flops_per_example(&self) -> u64 {
        let products: Vec<u64> = self.sizes.windows(2).map(|w| (w[0] * w[1]) as u64).collect();
        // Forward and weight gradient for every layer; input gradient for all
        // but the first.
        let all: u64 = products.iter().sum();
        2 * (2 * all + (all - products[0]))
    }
}

/// Adds every row of `rows` to `sum` (a bias's gradient from its layer's deltas).
fn add_rows(sum: &mut [f32], rows: ArrayView2<'_, f32>) {
    match rows.as_slice() {
        Some(values) => wide(|| {
            for row in values.chunks_exact(sum.len()) {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }),
        None => rows.rows().into_iter().for_each(|row| {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }),
    }
}

/// Index of the largest value (the first, on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &x)| if x > best.1 { (i, x) } else { best },
        )
        .0
}

impl super::Network for Mlp {
    crate::network_from_model!();

    fn evaluate(&self, params: &[f32], data: &Dataset) -> Result<super::StageEval, ModelError> {
        Mlp::evaluate(self, params, data).map(super::StageEval::Supervised)
    }

    fn predict(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Result<Array2<f32>, ModelError> {
        self.predict_proba(params, x)
    }
}

#[cfg(test)]
mod tests;
