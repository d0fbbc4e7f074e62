//! `kind = "layers"` (the kind of any job that lists `[[model.layers]]`):
//! a network of convolutions, pooling, dense layers, dropout and
//! nonlinearities, ending in a softmax output ([`crate::model::Layered`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::super::check::Check;
use super::super::{JobError, JobSpec, Stage};
use super::ModelKind;
use crate::data::spec::ImageLayout;
use crate::model::{LayerSpec, Layered, ModelError, Network, Shape, SharedNetwork};

/// The `[model]` keys of a layered network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayersKeys {
    /// The layers, input first; the last is `{ type = "output" }`.
    pub layers: Vec<LayerSpec>,
}

/// The layered kind.
pub(super) struct Layers;

impl Layers {
    /// The network for rows of `input_dim` features: images of the job's
    /// resolved `data.shape` when it has one, else flat vectors.
    fn build(job: &JobSpec, input_dim: usize, classes: usize) -> Result<Layered, ModelError> {
        let keys = job
            .model
            .keys::<LayersKeys>("the job")
            .map_err(|e| ModelError::BadSpec(e.to_string()))?;
        let input = match job.data.known_shape() {
            Some([c, h, w]) if c * h * w == input_dim => Shape::image(c, h, w),
            Some(shape) => {
                return Err(ModelError::BadSpec(format!(
                    "data.shape {shape:?} does not hold the data's {input_dim} features"
                )));
            }
            None => Shape::flat(input_dim),
        };
        Layered::new(&keys.layers, input, job.data.layout == ImageLayout::Chw, classes)
    }
}

impl ModelKind for Layers {
    fn name(&self) -> &'static str {
        "layers"
    }

    fn check(&self, job: &JobSpec, origin: &str) -> Result<(), JobError> {
        let c = Check::new(origin);
        let keys = job.model.keys::<LayersKeys>(origin)?;
        if job.pretrain.is_some() {
            return Err(c.invalid(
                "pretrain",
                "(set)".into(),
                "only a model.kind = \"dbn\" job is pre-trained",
            ));
        }
        // Shapes are checked now when the job says them (or the data is
        // MNIST); else when the driver has read the files.
        let Some([ch, h, w]) = job.data.known_shape() else {
            return Ok(());
        };
        let classes = job.data.classes.map_or(10, |n| n as usize);
        match Layered::new(&keys.layers, Shape::image(ch, h, w), true, classes) {
            Ok(_) => Ok(()),
            Err(ModelError::Layer {
                index,
                layer,
                input,
                why,
            }) => Err(c.invalid(
                &format!("model.layers[{index}]"),
                format!("{{ type = \"{layer}\" }}"),
                &format!("its input is {input}; {why}"),
            )),
            Err(other) => Err(c.invalid(
                "model.layers",
                format!("{} layers", keys.layers.len()),
                &other.to_string(),
            )),
        }
    }

    fn stages(&self, job: &JobSpec) -> Vec<Stage> {
        vec![Stage::supervised("train", job)]
    }

    fn network(
        &self,
        job: &JobSpec,
        _index: usize,
        input_dim: usize,
        classes: usize,
    ) -> Result<SharedNetwork, ModelError> {
        Ok(Arc::new(Self::build(job, input_dim, classes)?))
    }

    fn size_key(&self, job: &JobSpec) -> (String, String) {
        // The layer holding the most parameters, where the shape is known.
        let largest = job.data.known_shape().and_then(|[c, h, w]| {
            let classes = job.data.classes.map_or(10, |n| n as usize);
            let net = Self::build(job, c * h * w, classes).ok()?;
            let tensors = net.layout().tensors();
            let biggest = tensors.iter().max_by_key(|t| t.len())?;
            let entry = biggest.name.split('.').nth(1)?.to_string();
            Some((
                format!("model.layers[{entry}]"),
                format!("{} parameters", biggest.len()),
            ))
        });
        largest.unwrap_or_else(|| ("model.layers".into(), "(the list)".into()))
    }
}
