//! What a stage starts from: its initial parameters (fresh, or for
//! fine-tuning the unrolled RBMs), the test set as that stage sees it, and
//! for RBMs above the first the trained layers executors need.

use std::sync::Arc;

use bytes::Bytes;
use deepdist_core::data::Dataset;
use deepdist_core::job::{JobSpec, Stage, StageKind};
use deepdist_core::model::SharedNetwork;
use deepdist_wire::proto::{self, Tensor, ToExecutor};

use crate::error::JobError;

/// The starting parameters of a stage, its test set (the input it sees),
/// and for RBM stages above the first the encoded trained layers below.
#[allow(clippy::too_many_arguments)]
pub async fn prepare_stage(
    spec: &JobSpec,
    stage: &Stage,
    model: &SharedNetwork,
    rbms: &[Vec<f32>],
    train: &Arc<Dataset>,
    test: &Arc<Dataset>,
    job: u64,
    index: usize,
) -> Result<(Vec<f32>, Arc<Dataset>, Option<Bytes>), JobError> {
    let (spec, stage, model, rbms, train, test) = (
        spec.clone(),
        stage.clone(),
        model.clone(),
        rbms.to_vec(),
        train.clone(),
        test.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let seed = spec.train.seed.wrapping_add(index as u64);
        let (dim, classes) = (train.dim(), train.classes());
        match stage.kind {
            StageKind::Supervised if rbms.is_empty() => Ok((model.init(seed), test, None)),
            StageKind::Supervised => {
                let dbn = spec.build_dbn(dim, classes)?;
                let (_, params) = dbn.unroll(&rbms, seed)?;
                Ok((params, test, None))
            }
            StageKind::Rbm { layer } => {
                let dbn = spec.build_dbn(dim, classes)?;
                let below = &rbms[..layer as usize];
                // Visible biases start from the mean input, estimated on a sample.
                let sample = train.head(5000);
                let inputs = dbn.features(below, &sample, false, seed)?;
                let params = model.init_for(seed, &inputs);
                let stage_test = Arc::new(dbn.features(below, &test, false, seed)?);
                let frozen = if layer == 0 {
                    None
                } else {
                    let layers = below.iter().map(|p| Tensor::from_f32(p)).collect();
                    Some(proto::encode(&ToExecutor::Frozen {
                        job,
                        stage: index as u32,
                        layers,
                    })?)
                };
                Ok((params, stage_test, frozen))
            }
        }
    })
    .await?
}
