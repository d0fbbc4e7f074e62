//! What a DBN's stages share: the features its trained RBMs give the next.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{Dbn, ModelError};
use crate::data::Dataset;

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

    #[test]
    fn rbm_stages_see_the_features_of_the_layers_below() {
        let dbn = Dbn::new(&[6, 4, 3], 2, 1).unwrap();
        let data = Dataset::new(Array2::from_elem((5, 6), 1.0), vec![0, 1, 0, 1, 0], 2).unwrap();
        let rbm0 = crate::model::Model::init(&dbn.rbm(0).unwrap(), 1);
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
        use crate::model::{Activation, Mlp, Network, Rbm, StageEval};
        let rbm: &dyn Network = &Rbm::new(2, 3, 1).unwrap();
        let sample = Dataset::new(ndarray::array![[0.0, 0.8], [1.0, 1.0]], vec![0, 0], 2).unwrap();
        let params = rbm.init_for(1, &sample);
        let b = &params[6..8];
        assert!(b[0].abs() < 1e-6 && (b[1] - 9f32.ln()).abs() < 1e-5, "{b:?}");
        let mlp: &dyn Network = &Mlp::new(&[2, 2], Activation::Relu).unwrap();
        assert!(matches!(
            mlp.evaluate(&mlp.init(0), &Dataset::new(Array2::zeros((1, 2)), vec![1], 2).unwrap()),
            Ok(StageEval::Supervised(_))
        ));
    }
}
