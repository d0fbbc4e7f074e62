//! Models over one flat `f32` parameter vector: [`Mlp`], [`Rbm`], [`Dbn`]
//! and [`Layered`] (convolutional networks listed layer by layer),
//! each with a `gradient()` that [`GradientEngine`] spreads over every local
//! core with rayon. The rest of deepdist sees every model through one seam,
//! [`Network`] (and its [`Engine`]).

pub mod activation;
mod check;
pub mod dbn;
pub mod dropout;
pub mod engine;
pub mod layered;
pub mod layout;
pub mod mlp;
pub mod narrow;
pub mod network;
pub mod rbm;
pub mod stage;

use ndarray::{ArrayView2, ArrayViewMut2};

pub use activation::Activation;
pub use dbn::Dbn;
pub use dropout::Dropout;
pub use engine::GradientEngine;
pub use layered::{LayerSpec, Layered, Shape};
pub use layout::{Layout, TensorSpec};
pub use mlp::{Evaluation, Mlp};
pub use network::{Engine, Network, SharedNetwork, StageEval, same_network};
pub use rbm::Rbm;

/// What can be wrong with a model specification or a call into a model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The specification itself is unusable.
    #[error("invalid model: {0}")]
    BadSpec(String),
    /// A layer of `[[model.layers]]` that does not fit the shape before it,
    /// or whose keys are out of range.
    #[error("model.layers[{index}] ({layer}): its input is {input}; {why}")]
    Layer {
        /// Its place in the job's list.
        index: usize,
        /// Its type.
        layer: &'static str,
        /// The shape it was given.
        input: String,
        /// What it expected.
        why: String,
    },
    /// A parameter vector of the wrong length.
    #[error("parameter vector has {actual} values, the model's layout needs {expected}")]
    ParamLength {
        /// Values the layout needs.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// Inputs of the wrong width.
    #[error("batch rows have {actual} features, the model takes {expected}")]
    InputDim {
        /// Features the model takes.
        expected: usize,
        /// Features given.
        actual: usize,
    },
    /// A batch with no rows, more rows than the engine was sized for, or a
    /// label count that differs from the row count.
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// A label the model has no output for.
    #[error("label {label} out of range: the model has {classes} outputs")]
    LabelOutOfRange {
        /// The label.
        label: u8,
        /// Outputs of the model.
        classes: usize,
    },
}

/// A model whose batch-mean loss gradient can be computed on shards of a batch
/// and summed: what [`GradientEngine`] needs to use every core.
pub trait Model: Send + Sync {
    /// Per-thread working memory, allocated once so steady-state steps do not allocate.
    type Scratch: Send + Sync;

    /// Names and shapes of the tensors inside the flat parameter vector.
    fn layout(&self) -> &Layout;

    /// Features per input row.
    fn input_dim(&self) -> usize;

    /// Number of classes the labels index, or `None` for unsupervised models.
    fn classes(&self) -> Option<usize>;

    /// Fresh parameters, deterministic for a seed.
    fn init(&self, seed: u64) -> Vec<f32>;

    /// Working memory for shards of up to `max_rows` rows; `seed` seeds any
    /// sampling the model does.
    fn scratch(&self, max_rows: usize, seed: u64) -> Self::Scratch;

    /// Writes into `grad` (or, with `accumulate`, adds to it) this shard's
    /// part of the gradient of the batch-mean loss (every per-example term
    /// multiplied by `scale`, the reciprocal of the whole batch's size) and
    /// returns the shard's summed loss. `params` has the layout's length; `x`
    /// has `input_dim` columns and at most the scratch's rows; labels are in
    /// range. Accumulating happens inside the matrix products (β = 1), so
    /// summing gradients over steps costs no extra pass over memory.
    #[allow(clippy::too_many_arguments)]
    fn shard_gradient(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u8],
        scale: f32,
        grad: &mut [f32],
        accumulate: bool,
        scratch: &mut Self::Scratch,
    ) -> f32;

    /// Floating-point operations of one example's gradient, counting the
    /// matrix products (2 per multiply-add); elementwise work is not counted.
    fn flops_per_example(&self) -> u64;
}

/// A read-only matrix view over a parameter slice of exactly `rows × cols`.
pub(crate) fn mat(slice: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols), &slice[..rows * cols]).expect("slice is rows × cols long")
}

/// A mutable matrix view over a parameter slice of exactly `rows × cols`.
pub(crate) fn mat_mut(slice: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), &mut slice[..rows * cols]).expect("slice is rows × cols long")
}
