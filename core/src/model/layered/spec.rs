//! `[[model.layers]]`: the layers a job lists, and how they are checked and
//! built. Shapes must chain: each layer is built for the shape the one
//! before it puts out, and an error names the layer, the shape it was given
//! and what it expected.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Shape;
use super::activation::Nonlinearity;
use super::conv::Conv2d;
use super::dense::Dense;
use super::dropout::Dropout;
use super::layer::Layer;
use super::pool::{Pool, Reduce};
use super::reshape::{Flatten, ToChannelsLast};
use crate::model::{Activation, ModelError};

/// Most units in a dense layer.
pub const MAX_UNITS: usize = 65_536;
/// Most filters in a convolution.
pub const MAX_FILTERS: usize = 4_096;
/// The widest kernel, pooling window or stride.
pub const MAX_KERNEL: usize = 64;
/// Most layers in a network.
pub const MAX_LAYERS: usize = 64;

fn one() -> usize {
    1
}

/// One entry of `[[model.layers]]`, by its `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// A fully connected layer of `units`, on a flat input.
    Dense {
        /// Outputs.
        units: usize,
        /// A nonlinearity after it (the same as a layer of its own).
        #[serde(default)]
        activation: Option<Activation>,
    },
    /// A 2-D convolution of `filters` square `kernel`s.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel side.
        kernel: usize,
        /// Step between positions (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zeros added around every side (default 0).
        #[serde(default)]
        padding: usize,
        /// A nonlinearity after it.
        #[serde(default)]
        activation: Option<Activation>,
    },
    /// The largest value of each `size × size` window.
    MaxPool2d {
        /// Window side.
        size: usize,
        /// Step between windows (default: `size`).
        #[serde(default)]
        stride: Option<usize>,
    },
    /// The mean of each `size × size` window.
    AvgPool2d {
        /// Window side.
        size: usize,
        /// Step between windows (default: `size`).
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Dropout with probability `p` while training.
    Dropout {
        /// Probability of dropping each value, in `[0, 1)`.
        p: f32,
    },
    /// An image as a flat vector, before dense layers.
    Flatten,
    /// Rectified linear units.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// The last layer: one output per class, softmax and cross-entropy.
    Output,
}

impl LayerSpec {
    /// The `type` a job file gives.
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Relu => "relu",
            LayerSpec::Tanh => "tanh",
            LayerSpec::Sigmoid => "sigmoid",
            LayerSpec::Output => "output",
        }
    }

    /// The layers this entry becomes on `input` (its own, then any
    /// nonlinearity it names), or what it expected instead.
    fn build(&self, input: Shape, classes: usize) -> Result<Vec<Arc<dyn Layer>>, String> {
        let mut built: Vec<Arc<dyn Layer>> = Vec::new();
        let then = |layer: Arc<dyn Layer>, activation: &Option<Activation>| {
            let mut v = vec![layer.clone()];
            if let Some(unit) = activation {
                v.push(Arc::new(Nonlinearity::new(layer.output(), *unit)) as Arc<dyn Layer>);
            }
            v
        };
        match self {
            LayerSpec::Dense { units, activation } => {
                flat(input)?;
                within("units", *units, MAX_UNITS)?;
                built.extend(then(Arc::new(Dense::new(input.len(), *units)), activation));
            }
            LayerSpec::Output => {
                flat(input)?;
                built.push(Arc::new(Dense::output(input.len(), classes)));
            }
            LayerSpec::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                activation,
            } => {
                image(input)?;
                within("filters", *filters, MAX_FILTERS)?;
                within("kernel", *kernel, MAX_KERNEL)?;
                within("stride", *stride, MAX_KERNEL)?;
                if *padding >= *kernel {
                    return Err(format!("padding {padding} must be smaller than the kernel ({kernel})"));
                }
                let conv = Conv2d::new(input, *filters, *kernel, *stride, *padding)
                    .ok_or_else(|| format!("a {kernel}×{kernel} kernel with padding {padding} does not fit it"))?;
                built.extend(then(Arc::new(conv), activation));
            }
            LayerSpec::MaxPool2d { size, stride } | LayerSpec::AvgPool2d { size, stride } => {
                image(input)?;
                within("size", *size, MAX_KERNEL)?;
                let stride = stride.unwrap_or(*size);
                within("stride", stride, MAX_KERNEL)?;
                let reduce = match self {
                    LayerSpec::MaxPool2d { .. } => Reduce::Max,
                    _ => Reduce::Mean,
                };
                let pool = Pool::new(input, *size, stride, reduce)
                    .ok_or_else(|| format!("a {size}×{size} window does not fit it"))?;
                built.push(Arc::new(pool));
            }
            LayerSpec::Dropout { p } => {
                if !(0.0..1.0).contains(p) {
                    return Err(format!("p = {p}: must be in [0, 1)"));
                }
                built.push(Arc::new(Dropout::new(input, *p)));
            }
            LayerSpec::Flatten => built.push(Arc::new(Flatten::new(input))),
            LayerSpec::Relu => built.push(Arc::new(Nonlinearity::new(input, Activation::Relu))),
            LayerSpec::Tanh => built.push(Arc::new(Nonlinearity::new(input, Activation::Tanh))),
            LayerSpec::Sigmoid => built.push(Arc::new(Nonlinearity::new(input, Activation::Sigmoid))),
        }
        Ok(built)
    }
}

/// A layer built from entry `index` of the job's list.
#[derive(Debug, Clone)]
pub struct Built {
    /// The entry it came from (`None` for the reordering of channels-first input).
    pub index: Option<usize>,
    /// The layer.
    pub layer: Arc<dyn Layer>,
}

/// Builds `specs` on examples of `input` (channels-first when
/// `channels_first`) for `classes` classes, checking that the shapes chain.
pub fn build(
    specs: &[LayerSpec],
    input: Shape,
    channels_first: bool,
    classes: usize,
) -> Result<Vec<Built>, ModelError> {
    let bad = |why: String| ModelError::BadSpec(why);
    if specs.is_empty() || specs.len() > MAX_LAYERS {
        return Err(bad(format!(
            "model.layers: 1 to {MAX_LAYERS} layers, got {}",
            specs.len()
        )));
    }
    if let Some(i) = specs.iter().position(|s| *s == LayerSpec::Output)
        && i + 1 != specs.len()
    {
        return Err(bad(format!(
            "model.layers[{i}] (output): the output layer must be the last"
        )));
    }
    if specs.last() != Some(&LayerSpec::Output) {
        return Err(bad(
            "model.layers: the last layer must be { type = \"output\" } (one output per class)".into(),
        ));
    }
    let mut layers = Vec::new();
    if channels_first && input.channels > 1 && !input.is_flat() {
        layers.push(Built {
            index: None,
            layer: Arc::new(ToChannelsLast::new(input)),
        });
    }
    let mut shape = input;
    for (i, spec) in specs.iter().enumerate() {
        let built = spec.build(shape, classes).map_err(|why| ModelError::Layer {
            index: i,
            layer: spec.type_name(),
            input: shape.to_string(),
            why,
        })?;
        for layer in built {
            shape = layer.output();
            layers.push(Built { index: Some(i), layer });
        }
    }
    Ok(layers)
}

fn flat(input: Shape) -> Result<(), String> {
    match input.is_flat() {
        true => Ok(()),
        false => Err("expected a flat vector: put { type = \"flatten\" } before it".into()),
    }
}

fn image(input: Shape) -> Result<(), String> {
    match input.is_flat() {
        false => Ok(()),
        true => Err(
            "expected an image (channels × height × width): IDX and NumPy files carry their shape, \
             other data gives it as [data] shape = [channels, height, width]"
                .into(),
        ),
    }
}

fn within(key: &str, value: usize, most: usize) -> Result<(), String> {
    match (1..=most).contains(&value) {
        true => Ok(()),
        false => Err(format!("{key} = {value}: must be 1 to {most}")),
    }
}
