//! Deep belief network: a stack of RBMs trained greedily layer by layer,
//! whose weights then initialise a sigmoid MLP with a softmax layer on top
//! for supervised fine-tuning.

use super::rbm::Rbm;
use super::{Activation, Mlp, Model, ModelError};

/// The shape of a DBN: input size, hidden layer sizes and classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Dbn {
    sizes: Vec<usize>,
    classes: usize,
    cd_k: usize,
}

impl Dbn {
    /// A DBN over `sizes` (input first, then each hidden layer) with a softmax
    /// layer of `classes` for fine-tuning; RBMs train with CD-`cd_k`.
    pub fn new(sizes: &[usize], classes: usize, cd_k: usize) -> Result<Self, ModelError> {
        if sizes.len() < 2 {
            return Err(ModelError::BadSpec(format!(
                "a DBN needs an input size and at least one hidden layer (got {sizes:?})"
            )));
        }
        // Validates every size, the classes and k once, up front.
        for w in sizes.windows(2) {
            Rbm::new(w[0], w[1], cd_k)?;
        }
        let mut all = sizes.to_vec();
        all.push(classes);
        Mlp::new(&all, Activation::Sigmoid)?;
        Ok(Self {
            sizes: sizes.to_vec(),
            classes,
            cd_k,
        })
    }

    /// Number of RBMs (hidden layers).
    pub fn depth(&self) -> usize {
        self.sizes.len() - 1
    }

    /// RBM number `layer` (0-based), from `sizes[layer]` to `sizes[layer + 1]`.
    pub fn rbm(&self, layer: usize) -> Result<Rbm, ModelError> {
        match self.sizes.get(layer..layer + 2) {
            Some(w) => Rbm::new(w[0], w[1], self.cd_k),
            None => Err(ModelError::BadSpec(format!(
                "layer {layer} of a {}-layer DBN",
                self.depth()
            ))),
        }
    }

    /// The network fine-tuning trains: sigmoid hidden layers plus softmax.
    pub fn fine_tune_mlp(&self) -> Result<Mlp, ModelError> {
        let mut all = self.sizes.clone();
        all.push(self.classes);
        Mlp::new(&all, Activation::Sigmoid)
    }

    /// The fine-tuning network with its hidden layers initialised from the
    /// pre-trained RBMs (weights and hidden biases) and its softmax layer
    /// from `seed`.
    pub fn unroll(&self, rbm_params: &[Vec<f32>], seed: u64) -> Result<(Mlp, Vec<f32>), ModelError> {
        if rbm_params.len() != self.depth() {
            return Err(ModelError::BadSpec(format!(
                "{} pre-trained RBMs for a DBN of depth {}",
                rbm_params.len(),
                self.depth()
            )));
        }
        let mlp = self.fine_tune_mlp()?;
        let mut params = mlp.init(seed);
        let mut layers = Vec::with_capacity(self.depth());
        for (l, p) in rbm_params.iter().enumerate() {
            let rbm = self.rbm(l)?;
            if p.len() != rbm.layout().len() {
                return Err(ModelError::ParamLength {
                    expected: rbm.layout().len(),
                    actual: p.len(),
                });
            }
            let (w, _, c) = rbm.split(p);
            layers.push((w.to_slice().unwrap_or(&[]), c.to_slice().unwrap_or(&[])));
        }
        mlp.load_hidden_layers(&mut params, &layers)?;
        Ok((mlp, params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn unrolled_network_reproduces_the_rbm_features() {
        let dbn = Dbn::new(&[6, 4, 3], 2, 1).unwrap();
        let rbms: Vec<Vec<f32>> = (0..2).map(|l| dbn.rbm(l).unwrap().init(l as u64 + 5)).collect();
        let (mlp, params) = dbn.unroll(&rbms, 9).unwrap();
        assert_eq!(mlp.sizes(), &[6, 4, 3, 2]);
        let x = Array2::from_shape_fn((3, 6), |(i, j)| ((i + j) % 2) as f32);
        // Layer-0 weights of the MLP are the first RBM's.
        let h1 = dbn.rbm(0).unwrap().hidden_probabilities(&rbms[0], x.view()).unwrap();
        let mlp0 = Mlp::new(&[6, 4], Activation::Sigmoid).unwrap();
        assert_eq!(&params[..24], &rbms[0][..24]);
        assert_eq!(&params[24..28], &rbms[0][30..34]);
        assert!(h1.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(mlp0.layout().len(), 28);
        assert!(dbn.unroll(&rbms[..1], 0).is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(Dbn::new(&[6], 2, 1).is_err());
        assert!(Dbn::new(&[6, 0], 2, 1).is_err());
        assert!(Dbn::new(&[6, 3], 2, 0).is_err());
        assert!(Dbn::new(&[6, 3], 2, 1).unwrap().rbm(1).is_err());
    }
}
