//! Bernoulli–Bernoulli restricted Boltzmann machine trained by contrastive
//! divergence (CD-k).
//!
//! Parameters: `weight` (`visible × hidden`), `visible_bias`, `hidden_bias`.
//! `gradient()` returns the negated CD statistics, `⟨v h⟩_model − ⟨v h⟩_data`
//! (and likewise for the biases), so any optimizer that *subtracts* a
//! gradient climbs the likelihood. Its loss is the squared reconstruction
//! error of the first negative phase, summed over units and averaged over the
//! batch. Following Hinton's practical guide, the negative phase uses
//! visible probabilities, and hidden states are sampled only where they drive
//! a further reconstruction.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip, s};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::activation::sigmoid_inplace;
use super::check::{check_params, check_width};
use super::{Layout, Model, ModelError, mat, mat_mut};

/// Standard deviation-like spread of the initial weights (Hinton: 0.01).
const INIT_SCALE: f32 = 0.01;

/// An RBM with `visible` and `hidden` binary units.
#[derive(Debug, Clone, PartialEq)]
pub struct Rbm {
    visible: usize,
    hidden: usize,
    cd_k: usize,
    layout: Layout,
}

/// Per-thread buffers for the positive and negative phases.
#[derive(Debug)]
pub struct RbmScratch {
    pos_hidden: Array2<f32>,
    hidden_states: Array2<f32>,
    neg_visible: Array2<f32>,
    neg_hidden: Array2<f32>,
    rng: Xoshiro256PlusPlus,
}

impl Rbm {
    /// An RBM trained with CD-`cd_k` (k ≥ 1; 1 is the usual choice).
    pub fn new(visible: usize, hidden: usize, cd_k: usize) -> Result<Self, ModelError> {
        if visible == 0 || hidden == 0 || cd_k == 0 {
            return Err(ModelError::BadSpec(format!(
                "an RBM needs positive sizes and k ≥ 1 (got {visible}×{hidden}, k = {cd_k})"
            )));
        }
        let mut layout = Layout::default();
        layout.push("weight", &[visible, hidden]);
        layout.push("visible_bias", &[visible]);
        layout.push("hidden_bias", &[hidden]);
        Ok(Self {
            visible,
            hidden,
            cd_k,
            layout,
        })
    }

    /// Visible units.
    pub fn visible(&self) -> usize {
        self.visible
    }

    /// Hidden units.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Splits parameters into weight, visible bias and hidden bias.
    pub fn split<'a>(&self, params: &'a [f32]) -> (ArrayView2<'a, f32>, ArrayView1<'a, f32>, ArrayView1<'a, f32>) {
        (
            mat(&params[self.layout.range(0)], self.visible, self.hidden),
            ArrayView1::from(&params[self.layout.range(1)]),
            ArrayView1::from(&params[self.layout.range(2)]),
        )
    }

    /// Mean-field hidden probabilities for every row of `x`: the input of the
    /// next layer in a DBN.
    pub fn hidden_probabilities(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Result<Array2<f32>, ModelError> {
        check_params(&self.layout, params)?;
        check_width(self.visible, x)?;
        let (w, _, c) = self.split(params);
        let mut h = Array2::zeros((x.nrows(), self.hidden));
        affine_sigmoid(x, w, c, &mut h.view_mut());
        Ok(h)
    }

    /// Mean squared reconstruction error per example (summed over visible
    /// units) of the deterministic pass v → p(h|v) → p(v|h).
    pub fn reconstruction_error(&self, params: &[f32], x: ArrayView2<'_, f32>) -> Result<f32, ModelError> {
        let h = self.hidden_probabilities(params, x)?;
        let (w, b, _) = self.split(params);
        let mut v = Array2::zeros((x.nrows(), self.visible));
        affine_sigmoid(h.view(), w.t(), b, &mut v.view_mut());
        let err: f32 = Zip::from(&v).and(&x).fold(0.0, |acc, a, b| acc + (a - b) * (a - b));
        Ok(err / x.nrows().max(1) as f32)
    }
}

/// `out = sigmoid(input · w + bias)` for every row.
fn affine_sigmoid(
    input: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    bias: ArrayView1<'_, f32>,
    out: &mut ArrayViewMut2<'_, f32>,
) {
    for mut row in out.rows_mut() {
        row.assign(&bias);
    }
    general_mat_mul(1.0, &input, &w, 1.0, out);
    sigmoid_inplace(out);
}

/// Adds `scale ×` (the rows of `a` minus the rows of `b`, summed) to `out`.
fn add_column_difference(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, scale: f32, out: &mut [f32]) {
    for (ra, rb) in a.rows().into_iter().zip(b.rows()) {
        for ((o, x), y) in out.iter_mut().zip(ra).zip(rb) {
            *o += scale * (x - y);
        }
    }
}

impl Model for Rbm {
    type Scratch = RbmScratch;

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_dim(&self) -> usize {
        self.visible
    }

    fn classes(&self) -> Option<usize> {
        None
    }

    fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut params = vec![0.0; self.layout.len()];
        // Uniform with the spread of N(0, 0.01²); biases start at zero.
        let bound = INIT_SCALE * 3f32.sqrt();
        for v in &mut params[self.layout.range(0)] {
            *v = rng.random_range(-bound..bound);
        }
        params
    }

    fn scratch(&self, max_rows: usize, seed: u64) -> RbmScratch {
        RbmScratch {
            pos_hidden: Array2::zeros((max_rows, self.hidden)),
            hidden_states: Array2::zeros((max_rows, self.hidden)),
            neg_visible: Array2::zeros((max_rows, self.visible)),
            neg_hidden: Array2::zeros((max_rows, self.hidden)),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    fn shard_gradient(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        _y: &[u8],
        scale: f32,
        grad: &mut [f32],
        accumulate: bool,
        sc: &mut RbmScratch,
    ) -> f32 {
        let rows = x.nrows();
        let (w, b, c) = self.split(params);
        let mut pos_h = sc.pos_hidden.slice_mut(s![..rows, ..]);
        let mut states = sc.hidden_states.slice_mut(s![..rows, ..]);
        let mut neg_v = sc.neg_visible.slice_mut(s![..rows, ..]);
        let mut neg_h = sc.neg_hidden.slice_mut(s![..rows, ..]);
        let rng = &mut sc.rng;
        let mut sample = |probs: ArrayView2<'_, f32>, out: &mut ArrayViewMut2<'_, f32>| {
            Zip::from(out)
                .and(probs)
                .for_each(|s, &p| *s = if rng.random::<f32>() < p { 1.0 } else { 0.0 });
        };

        affine_sigmoid(x, w, c, &mut pos_h);
        sample(pos_h.view(), &mut states);
        let mut loss = 0.0;
        for step in 0..self.cd_k {
            affine_sigmoid(states.view(), w.t(), b, &mut neg_v);
            if step == 0 {
                loss = Zip::from(&neg_v).and(&x).fold(0.0, |acc, a, b| acc + (a - b) * (a - b));
            }
            affine_sigmoid(neg_v.view(), w, c, &mut neg_h);
            if step + 1 < self.cd_k {
                sample(neg_h.view(), &mut states);
            }
        }

        let (gw, rest) = grad.split_at_mut(self.visible * self.hidden);
        let (gb, gc) = rest.split_at_mut(self.visible);
        let mut gw = mat_mut(gw, self.visible, self.hidden);
        general_mat_mul(scale, &neg_v.t(), &neg_h, if accumulate { 1.0 } else { 0.0 }, &mut gw);
        general_mat_mul(-scale, &x.t(), &pos_h, 1.0, &mut gw);
        if !accumulate {
            gb.fill(0.0);
            gc.fill(0.0);
        }
        add_column_difference(neg_v.view(), x, scale, gb);
        add_column_difference(neg_h.view(), pos_h.view(), scale, gc);
        loss
    }

    fn flops_per_example(&self) -> u64 {
        // Per CD step: reconstruct v and re-infer h; plus the positive phase
        // and the two outer-product accumulations.
        let vh = (self.visible * self.hidden) as u64;
        2 * vh * (1 + 2 * self.cd_k as u64 + 2)
    }
}

/// Mean of each column (used to initialise visible biases, see Hinton's guide).
pub fn column_means(x: ArrayView2<'_, f32>) -> Vec<f32> {
    x.mean_axis(Axis(0)).map(|m| m.to_vec()).unwrap_or_default()
}

impl super::Network for Rbm {
    crate::network_from_model!();

    /// Visible biases start at `log(p / (1 − p))` of the sample's mean
    /// activations, as the practical guide recommends.
    fn init_for(&self, seed: u64, sample: &crate::data::Dataset) -> Vec<f32> {
        let mut params = Model::init(self, seed);
        let means = column_means(sample.features());
        if means.len() == self.visible {
            let range = self.layout.range(1);
            for (b, &p) in params[range].iter_mut().zip(&means) {
                let p = p.clamp(0.01, 0.99);
                *b = (p / (1.0 - p)).ln();
            }
        }
        params
    }

    fn evaluate(&self, params: &[f32], data: &crate::data::Dataset) -> Result<super::StageEval, ModelError> {
        self.reconstruction_error(params, data.features())
            .map(super::StageEval::Reconstruction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GradientEngine;

    #[test]
    fn gradient_is_the_negated_cd_statistics_for_k1() {
        // With hidden probabilities saturated at 0/1 sampling is deterministic,
        // so the CD-1 statistics can be computed by hand.
        let rbm = Rbm::new(2, 1, 1).unwrap();
        // w = [[40], [-40]], b = [0, 0], c = [-20].
        let params = vec![40.0, -40.0, 0.0, 0.0, -20.0];
        let x = ndarray::array![[1.0f32, 0.0], [0.0, 1.0]];
        let mut engine = GradientEngine::with_threads(rbm, 2, 1, 1);
        let (_, g) = engine.gradient(&params, x.view(), &[]).unwrap();
        // Row 0: h = 1, v' = sigmoid([40, -40]) ≈ [1, 0], h' = 1.
        // Row 1: h = 0, v' = sigmoid([0, 0]) = [0.5, 0.5], h' = sigmoid(-20) ≈ 0.
        // gW = mean(v'ᵀh') − mean(vᵀh) = ([1,0] − [1,0]) / 2 = [0, 0].
        // gb = mean(v' − v) = ([0,0] + [0.5,-0.5]) / 2 = [0.25, -0.25].
        // gc = mean(h' − h) = 0.
        let want = [0.0, 0.0, 0.25, -0.25, 0.0];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{g:?}");
        }
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(Rbm::new(0, 3, 1).is_err());
        assert!(Rbm::new(3, 3, 0).is_err());
    }
}
