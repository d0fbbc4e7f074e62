//! One layer of a [`super::Layered`] network, behind a small trait: a new
//! kind of layer is a module implementing [`Layer`] and one line in
//! [`super::spec::LayerSpec::build`].
//!
//! A layer works on a shard of a batch: `rows` examples, each its input
//! shape's values in a row (channels-last), laid end to end in one slice.

use rand_xoshiro::Xoshiro256PlusPlus;

use super::Shape;

/// What a forward pass knows besides the data.
pub struct Pass<'a> {
    /// Training (dropout draws masks) or evaluating (it passes everything).
    pub train: bool,
    /// The shard's random stream.
    pub rng: &'a mut Xoshiro256PlusPlus,
}

/// The arguments of a backward pass through one layer.
pub struct Backward<'a> {
    /// Examples in the shard.
    pub rows: usize,
    /// The layer's parameters (its own slice of the vector).
    pub params: &'a [f32],
    /// Its input in the forward pass.
    pub x: &'a [f32],
    /// Its output in the forward pass.
    pub y: &'a [f32],
    /// The loss's gradient with respect to its output.
    pub dy: &'a [f32],
    /// Where the gradient with respect to its input goes (overwritten);
    /// `None` when nothing below needs it.
    pub dx: Option<&'a mut [f32]>,
    /// Its parameters' gradient (its own slice).
    pub grad: &'a mut [f32],
    /// Add to `grad` instead of overwriting it.
    pub accumulate: bool,
    /// The layer's working memory ([`Layer::work`] values), as the forward pass left it.
    pub work: &'a mut [f32],
}

/// Floating-point operations of one example through a layer, counting the
/// matrix products (2 per multiply-add).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flops {
    /// The forward pass.
    pub forward: u64,
    /// The parameters' gradient.
    pub weights: u64,
    /// The input's gradient.
    pub input: u64,
}

/// A layer: its shapes, its parameters, and its forward and backward passes.
pub trait Layer: Send + Sync + std::fmt::Debug {
    /// Its type as the job file names it (`conv2d`).
    fn name(&self) -> &'static str;

    /// The shape of one example going out.
    fn output(&self) -> Shape;

    /// The tensors it owns, as name suffixes (`weight`) and shapes; none by
    /// default.
    fn tensors(&self) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }

    /// Writes fresh values into its parameters (laid out as
    /// [`Layer::tensors`]), with a bound suited to `bound(fan_in, fan_out)`.
    fn init(&self, params: &mut [f32], rng: &mut Xoshiro256PlusPlus, bound: &dyn Fn(usize, usize) -> f32) {
        let _ = (params, rng, bound);
    }

    /// Values of working memory a shard of `rows` examples needs.
    fn work(&self, rows: usize) -> usize {
        let _ = rows;
        0
    }

    /// Writes the outputs of `rows` examples `x` into `y`.
    fn forward(&self, rows: usize, params: &[f32], x: &[f32], y: &mut [f32], work: &mut [f32], pass: &mut Pass<'_>);

    /// Writes the input's and the parameters' gradients.
    fn backward(&self, b: Backward<'_>);

    /// Operations per example.
    fn flops(&self) -> Flops {
        Flops::default()
    }
}

/// Sums of every column of `rows × sum.len()` values into `sum` (a bias's
/// gradient), added or written.
pub(crate) fn column_sums(sum: &mut [f32], values: &[f32], accumulate: bool) {
    if !accumulate {
        sum.fill(0.0);
    }
    crate::cpu::wide(|| {
        for row in values.chunks_exact(sum.len()) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
    });
}

/// Every row of `out` (`bias.len()` wide) set to `bias`.
pub(crate) fn fill_rows(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}
