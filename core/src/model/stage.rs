//! The model one stage of a job trains, whatever its family.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{Dbn, Evaluation, Layout, Mlp, Model, ModelError, Rbm};
use crate::data::Dataset;

/// An MLP (supervised stages) or one RBM of a DBN (pre-training stages).
#[derive(Debug, Clone, PartialEq)]
pub enum StageModel {
    /// Trained with labels.
    Mlp(Mlp),
    /// Trained by contrastive divergence.
    Rbm(Rbm),
}

/// How a stage's model did on the test set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageEval {
    /// Loss and accuracy of a classifier.
    Supervised(Evaluation),
    /// Mean squared reconstruction error of an RBM.
    Reconstruction(f32),
}

impl StageModel {
    /// The parameter layout.
    pub fn layout(&self) -> &Layout {
        match self {
            StageModel::Mlp(m) => m.layout(),
            StageModel::Rbm(r) => r.layout(),
        }
    }

    /// Fresh parameters. An RBM's visible biases start at `log(p / (1 − p))`
    /// of the training data's mean activations `means`, as the practical
    /// guide recommends.
    pub fn init(&self, seed: u64, means: Option<&[f32]>) -> Vec<f32> {
        match self {
            StageModel::Mlp(m) => m.init(seed),
            StageModel::Rbm(r) => {
                let mut params = r.init(seed);
                if let Some(means) = means.filter(|m| m.len() == r.visible()) {
                    let range = r.layout().range(1);
                    for (b, &p) in params[range].iter_mut().zip(means) {
                        let p = p.clamp(0.01, 0.99);
                        *b = (p / (1.0 - p)).ln();
                    }
                }
                params
            }
        }
    }

    /// Evaluates on a dataset whose features are this stage's inputs.
    pub fn evaluate(&self, params: &[f32], data: &Dataset) -> Result<StageEval, ModelError> {
        match self {
            StageModel::Mlp(m) => m.evaluate(params, data).map(StageEval::Supervised),
            StageModel::Rbm(r) => r
                .reconstruction_error(params, data.features())
                .map(StageEval::Reconstruction),
        }
    }
}

impl Dbn {
    /// Passes `data` through the trained RBMs `rbms` (the first ones of the
    /// stack), giving the input of the next RBM: mean-field hidden
    /// probabilities, or with `sample`, binary states drawn from them.
    pub fn features(&self, rbms: &[Vec<f32>], data: &Dataset, sample: bool, seed: u64) -> Result<Dataset, ModelError> {
        let mut x: Array2<f32> = data.features().to_owned();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        for (layer, params) in rbms.iter().enumerate() {
            x = self.rbm(layer)?.hidden_probabilities(params, x.view())?;
            if sample {
                x.mapv_inplace(|p| if rng.random::<f32>() < p { 1.0 } else { 0.0 });
            }
        }
        Dataset::new(x, data.labels().to_vec(), data.classes()).map_err(|e| ModelError::BadSpec(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Activation;

    #[test]
    fn rbm_stages_see_the_features_of_the_layers_below() {
        let dbn = Dbn::new(&[6, 4, 3], 2, 1).unwrap();
        let data = Dataset::new(Array2::from_elem((5, 6), 1.0), vec![0, 1, 0, 1, 0], 2).unwrap();
        let rbm0 = dbn.rbm(0).unwrap().init(1);
        let f = dbn.features(std::slice::from_ref(&rbm0), &data, false, 0).unwrap();
        assert_eq!((f.len(), f.dim()), (5, 4));
        assert!(f.features().iter().all(|&p| p > 0.0 && p < 1.0));
        let s = dbn.features(&[rbm0], &data, true, 0).unwrap();
        assert!(s.features().iter().all(|&p| p == 0.0 || p == 1.0));
        assert_eq!(s.labels(), data.labels());
        assert!(dbn.features(&[vec![0.0; 3]], &data, false, 0).is_err());
    }

    #[test]
    fn visible_biases_start_at_the_data_log_odds() {
        let model = StageModel::Rbm(Rbm::new(2, 3, 1).unwrap());
        let params = model.init(1, Some(&[0.5, 0.9]));
        let b = &params[6..8];
        assert!(b[0].abs() < 1e-6 && (b[1] - 9f32.ln()).abs() < 1e-5, "{b:?}");
        let mlp = StageModel::Mlp(Mlp::new(&[2, 2], Activation::Relu).unwrap());
        assert!(matches!(
            mlp.evaluate(
                &mlp.init(0, None),
                &Dataset::new(Array2::zeros((1, 2)), vec![1], 2).unwrap()
            ),
            Ok(StageEval::Supervised(_))
        ));
    }
}
