use super::*;
use crate::model::GradientEngine;

fn toy_batch(rows: usize, dim: usize, classes: usize) -> (Array2<f32>, Vec<u8>) {
    let x = Array2::from_shape_fn((rows, dim), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.4);
    let y = (0..rows).map(|i| (i % classes) as u8).collect();
    (x, y)
}

/// Mean cross-entropy computed independently, in f64, one example at a time.
fn reference_loss(sizes: &[usize], act: Activation, params: &[f64], x: &Array2<f32>, y: &[u8]) -> f64 {
    let mut total = 0.0;
    for (row, &label) in x.rows().into_iter().zip(y) {
        let mut a: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let mut offset = 0;
        for (l, w) in sizes.windows(2).enumerate() {
            let (n_in, n_out) = (w[0], w[1]);
            let bias = offset + n_in * n_out;
            let mut z: Vec<f64> = (0..n_out)
                .map(|j| params[bias + j] + (0..n_in).map(|i| a[i] * params[offset + i * n_out + j]).sum::<f64>())
                .collect();
            offset = bias + n_out;
            if l + 2 < sizes.len() {
                for v in &mut z {
                    *v = match act {
                        Activation::Sigmoid => 1.0 / (1.0 + (-*v).exp()),
                        Activation::Tanh => v.tanh(),
                        Activation::Relu => v.max(0.0),
                    };
                }
            } else {
                let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
                total -= (z[usize::from(label)] - max) - sum.ln();
            }
            a = z;
        }
    }
    total / y.len() as f64
}

/// With dropout, the gradient must be the exact gradient of the network
/// thinned by the masks the pass drew: central differences of the
/// reference loss with those masks applied.
#[test]
fn dropout_gradient_matches_finite_differences_of_the_thinned_network() {
    let sizes = [5, 4, 3, 3];
    let dropout = Dropout {
        input: 0.2,
        hidden: 0.5,
    };
    let mlp = Mlp::new(&sizes, Activation::Sigmoid)
        .unwrap()
        .with_dropout(dropout)
        .unwrap();
    let params = mlp.init(3);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    let x = Array2::from_shape_fn((6, 5), |_| rng.random_range(-1.0f32..1.0));
    let y: Vec<u8> = vec![0, 1, 2, 0, 1, 2];
    let mut scratch = mlp.scratch(6, 9);
    let mut grad = vec![0.0; params.len()];
    let loss = mlp.shard_gradient(&params, x.view(), &y, 1.0 / 6.0, &mut grad, false, &mut scratch);
    // The thinned network: inputs and hidden outputs multiplied by the masks drawn.
    let input_mask = &scratch.input / &x.mapv(|v| if v == 0.0 { 1.0 } else { v });
    let masks = scratch.masks.clone();
    assert!(masks.iter().any(|m| m.iter().any(|&v| v == 0.0)), "some units dropped");
    let thinned = |p: &[f64]| {
        let mut total = 0.0;
        for (r, &label) in y.iter().enumerate() {
            let mut a: Vec<f64> = (0..5).map(|j| f64::from(x[[r, j]] * input_mask[[r, j]])).collect();
            let mut offset = 0;
            for (l, w) in sizes.windows(2).enumerate() {
                let (n_in, n_out) = (w[0], w[1]);
                let bias = offset + n_in * n_out;
                let z: Vec<f64> = (0..n_out)
                    .map(|j| p[bias + j] + (0..n_in).map(|i| a[i] * p[offset + i * n_out + j]).sum::<f64>())
                    .collect();
                offset = bias + n_out;
                if l + 2 < sizes.len() {
                    a = z
                        .iter()
                        .enumerate()
                        .map(|(j, v)| f64::from(masks[l][[r, j]]) / (1.0 + (-v).exp()))
                        .collect();
                } else {
                    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
                    total -= (z[usize::from(label)] - max) - sum.ln();
                }
            }
        }
        total / y.len() as f64
    };
    let p64: Vec<f64> = params.iter().map(|&v| f64::from(v)).collect();
    assert!((f64::from(loss) / 6.0 - thinned(&p64)).abs() < 1e-5);
    let h = 1e-6;
    for i in 0..params.len() {
        let (mut plus, mut minus) = (p64.clone(), p64.clone());
        plus[i] += h;
        minus[i] -= h;
        let numeric = (thinned(&plus) - thinned(&minus)) / (2.0 * h);
        assert!(
            (numeric - f64::from(grad[i])).abs() < 1e-4 + 1e-3 * numeric.abs(),
            "param {i}: analytic {} numeric {numeric}",
            grad[i]
        );
    }
    // Evaluation uses the whole network, with no randomness.
    let probs = mlp.predict_proba(&params, x.view()).unwrap();
    assert_eq!(probs, mlp.predict_proba(&params, x.view()).unwrap());
    assert!(
        Mlp::new(&sizes, Activation::Relu)
            .unwrap()
            .with_dropout(Dropout {
                input: 1.0,
                hidden: 0.0
            })
            .is_err()
    );
}

/// Central differences on the f64 reference loss must match the
/// analytic f32 gradient of every coordinate.
fn check_gradient(act: Activation) {
    let sizes = [5, 4, 3, 3];
    let mlp = Mlp::new(&sizes, act).unwrap();
    let params = mlp.init(3);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    let x = Array2::from_shape_fn((6, 5), |_| rng.random_range(-1.0f32..1.0));
    let y: Vec<u8> = vec![0, 1, 2, 0, 1, 2];
    let mut engine = GradientEngine::with_threads(mlp.clone(), 6, 2, 0);
    let (loss, grad) = engine.gradient(&params, x.view(), &y).unwrap();
    let p64: Vec<f64> = params.iter().map(|&v| f64::from(v)).collect();
    assert!((f64::from(loss) - reference_loss(&sizes, act, &p64, &x, &y)).abs() < 1e-5);
    let h = 1e-6;
    for i in 0..params.len() {
        let (mut plus, mut minus) = (p64.clone(), p64.clone());
        plus[i] += h;
        minus[i] -= h;
        let numeric =
            (reference_loss(&sizes, act, &plus, &x, &y) - reference_loss(&sizes, act, &minus, &x, &y)) / (2.0 * h);
        let diff = (numeric - f64::from(grad[i])).abs();
        assert!(
            diff < 1e-4 + 1e-3 * numeric.abs(),
            "{act:?} param {i}: analytic {} numeric {numeric}",
            grad[i]
        );
    }
}

#[test]
fn gradient_matches_finite_differences_sigmoid() {
    check_gradient(Activation::Sigmoid);
}

#[test]
fn gradient_matches_finite_differences_tanh() {
    check_gradient(Activation::Tanh);
}

#[test]
fn gradient_matches_finite_differences_relu() {
    check_gradient(Activation::Relu);
}

#[test]
fn gradient_is_the_same_on_one_or_many_threads() {
    let mlp = Mlp::new(&[8, 16, 4], Activation::Relu).unwrap();
    let params = mlp.init(1);
    let (x, y) = toy_batch(37, 8, 4);
    let mut one = GradientEngine::with_threads(mlp.clone(), 64, 1, 0);
    let mut many = GradientEngine::with_threads(mlp, 64, 4, 0);
    let (l1, g1) = one.gradient(&params, x.view(), &y).unwrap();
    let g1 = g1.to_vec();
    let (l4, g4) = many.gradient(&params, x.view(), &y).unwrap();
    assert!((l1 - l4).abs() < 1e-5);
    for (a, b) in g1.iter().zip(g4) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn rejects_bad_specs_and_inputs() {
    assert!(Mlp::new(&[5], Activation::Relu).is_err());
    assert!(Mlp::new(&[5, 0, 2], Activation::Relu).is_err());
    let mlp = Mlp::new(&[4, 3], Activation::Relu).unwrap();
    let mut engine = GradientEngine::with_threads(mlp.clone(), 8, 1, 0);
    let params = mlp.init(0);
    let (x, y) = toy_batch(4, 4, 3);
    assert!(matches!(
        engine.gradient(&params[1..], x.view(), &y),
        Err(ModelError::ParamLength { .. })
    ));
    let (wide, _) = toy_batch(4, 5, 3);
    assert!(matches!(
        engine.gradient(&params, wide.view(), &y),
        Err(ModelError::InputDim { .. })
    ));
    assert!(matches!(
        engine.gradient(&params, x.view(), &[0, 1, 2, 3]),
        Err(ModelError::LabelOutOfRange { .. })
    ));
    let (big, by) = toy_batch(9, 4, 3);
    assert!(matches!(
        engine.gradient(&params, big.view(), &by),
        Err(ModelError::BadBatch(_))
    ));
}

#[test]
fn counts_flops() {
    let mlp = Mlp::new(&[784, 500, 500, 10], Activation::Relu).unwrap();
    let all = 784 * 500 + 500 * 500 + 500 * 10;
    assert_eq!(mlp.flops_per_example(), 2 * (3 * all - 784 * 500));
}
