//! What a stage starts from: its initial parameters (as its model kind
//! says: fresh, or for a DBN's fine-tuning the unrolled RBMs), the test set
//! as that stage sees it, and for stages whose input passes through earlier
//! stages the trained layers executors need.

use std::sync::Arc;

use bytes::Bytes;
use deepdist_core::data::Dataset;
use deepdist_core::job::{JobSpec, Stage};
use deepdist_core::model::SharedNetwork;
use deepdist_wire::proto::{self, Tensor, ToExecutor};

use crate::error::JobError;

/// Rows of the training set a stage's start looks at (an RBM's mean input).
const START_SAMPLE: usize = 5000;

/// The starting parameters of a stage, its test set (the input it sees),
/// and when its input passes through earlier stages, their encoded layers.
#[allow(clippy::too_many_arguments)]
pub async fn prepare_stage(
    spec: &JobSpec,
    stage: &Stage,
    model: &SharedNetwork,
    trained: &[Vec<f32>],
    train: &Arc<Dataset>,
    test: &Arc<Dataset>,
    job: u64,
    index: usize,
) -> Result<(Vec<f32>, Arc<Dataset>, Option<Bytes>), JobError> {
    let (spec, layers, model, trained, train, test) = (
        spec.clone(),
        stage.input_layers as usize,
        model.clone(),
        trained.to_vec(),
        train.clone(),
        test.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let seed = spec.train.seed.wrapping_add(index as u64);
        let kind = spec.kind()?;
        let sample = train.head(START_SAMPLE);
        if layers == 0 {
            let params = kind.start(&spec, index, &trained, model.as_ref(), &sample, seed)?;
            return Ok((params, test, None));
        }
        let sample = kind.input(&spec, index, &trained, &sample, false, seed)?;
        let params = kind.start(&spec, index, &trained, model.as_ref(), &sample, seed)?;
        let stage_test = Arc::new(kind.input(&spec, index, &trained, &test, false, seed)?);
        let below = trained.get(..layers).unwrap_or(&trained);
        let frozen = proto::encode(&ToExecutor::Frozen {
            job,
            stage: index as u32,
            layers: below.iter().map(|p| Tensor::from_f32(p)).collect(),
        })?;
        Ok((params, stage_test, Some(frozen)))
    })
    .await?
}
