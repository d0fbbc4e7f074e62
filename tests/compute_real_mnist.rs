//! The compute core on real MNIST, in-process: only working models pass.

mod support;

use deepdist_core::cpu::compute_pool;
use deepdist_core::model::{Activation, Mlp, Model, Rbm};
use deepdist_core::optim::OptimizerConfig;
use deepdist_core::train::Trainer;

fn sgd(lr: f32, momentum: f32, len: usize) -> Box<dyn deepdist_core::optim::Optimizer> {
    OptimizerConfig {
        lr,
        momentum: Some(momentum),
        nesterov: Some(true),
        ..OptimizerConfig::default()
    }
    .build(len)
    .unwrap()
}

#[test]
fn mlp_reaches_95_percent_on_the_test_set_in_two_epochs() {
    let mnist = support::mnist();
    let pool = compute_pool(None).unwrap();
    let accuracy = pool.install(|| {
        let mlp = Mlp::new(&[784, 256, 10], Activation::Relu).unwrap();
        let mut params = mlp.init(7);
        let before = mlp.evaluate(&params, &mnist.test).unwrap().accuracy;
        assert!(before < 0.3, "an untrained network should be near chance, got {before}");
        let mut trainer = Trainer::new(mlp.clone(), sgd(0.05, 0.9, params.len()), 64, 7);
        for _ in 0..2 {
            trainer.epoch(&mut params, &mnist.train).unwrap();
        }
        mlp.evaluate(&params, &mnist.test).unwrap().accuracy
    });
    eprintln!("MLP 784-256-10, 2 epochs: test accuracy {:.2}%", 100.0 * accuracy);
    assert!(accuracy >= 0.95, "test accuracy {accuracy}");
}

#[test]
fn rbm_cd1_lowers_reconstruction_error_on_real_digits() {
    let mnist = support::mnist();
    let train = mnist.train.head(10_000);
    let held_out = mnist.test.head(1_000);
    let pool = compute_pool(None).unwrap();
    let (before, after) = pool.install(|| {
        let rbm = Rbm::new(784, 256, 1).unwrap();
        let mut params = rbm.init(3);
        let before = rbm.reconstruction_error(&params, held_out.features()).unwrap();
        let mut trainer = Trainer::new(rbm.clone(), sgd(0.1, 0.5, params.len()), 100, 3);
        let stats = trainer.epoch(&mut params, &train).unwrap();
        assert!(stats.train_loss.is_finite());
        (before, rbm.reconstruction_error(&params, held_out.features()).unwrap())
    });
    eprintln!("RBM 784-256 CD-1, 1 epoch of 10k: held-out reconstruction error {before:.1} -> {after:.1}");
    assert!(after < 0.25 * before, "reconstruction error {before} -> {after}");
}
