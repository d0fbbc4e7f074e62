use ndarray::Array2;
use rand::Rng;

use super::activation::Nonlinearity;
use super::conv::Conv2d;
use super::dense::Dense;
use super::dropout::Dropout;
use super::pool::{Pool, Reduce};
use super::reshape::{Flatten, ToChannelsLast};
use super::*;
use crate::model::GradientEngine;

fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// `sum(dy ⊙ layer(x))` in f64, with the layer's random stream reseeded so
/// that dropout draws the same mask every time.
fn probe(layer: &dyn Layer, rows: usize, params: &[f32], x: &[f32], dy: &[f32], work: &mut [f32]) -> f64 {
    let mut y = vec![0.0; rows * layer.output().len()];
    let mut r = rng(7);
    let mut pass = Pass {
        train: true,
        rng: &mut r,
    };
    layer.forward(rows, params, x, &mut y, work, &mut pass);
    y.iter().zip(dy).map(|(&y, &d)| f64::from(y) * f64::from(d)).sum()
}

/// The layer's input and parameter gradients of `sum(dy ⊙ y)` against
/// central differences of it, at inputs drawn by `draw`.
fn check_layer(layer: &dyn Layer, input: Shape, draw: impl Fn(usize, &mut Xoshiro256PlusPlus) -> Vec<f32>) {
    let rows = 3;
    let mut r = rng(1);
    let x = draw(rows * input.len(), &mut r);
    let mut params: Vec<f32> = vec![0.0; layer.tensors().iter().map(|(_, s)| s.iter().product::<usize>()).sum()];
    params.iter_mut().for_each(|p| *p = r.random_range(-0.5..0.5));
    let dy: Vec<f32> = (0..rows * layer.output().len())
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let mut work = vec![0.0; layer.work(rows)];

    let mut y = vec![0.0; dy.len()];
    let mut seeded = rng(7);
    let mut pass = Pass {
        train: true,
        rng: &mut seeded,
    };
    layer.forward(rows, &params, &x, &mut y, &mut work, &mut pass);
    let mut dx = vec![0.0; x.len()];
    let mut grad = vec![0.0; params.len()];
    layer.backward(Backward {
        rows,
        params: &params,
        x: &x,
        y: &y,
        dy: &dy,
        dx: Some(&mut dx),
        grad: &mut grad,
        accumulate: false,
        work: &mut work,
    });

    let eps = 1e-2f32;
    let close = |what: &str, i: usize, analytic: f32, numeric: f64| {
        let tolerance = 2e-3 + 2e-3 * numeric.abs();
        assert!(
            (f64::from(analytic) - numeric).abs() < tolerance,
            "{}: d/d{what}[{i}] is {analytic}, finite differences give {numeric}",
            layer.name()
        );
    };
    let mut scratch = vec![0.0; work.len()];
    for i in 0..x.len() {
        let (mut up, mut down) = (x.clone(), x.clone());
        up[i] += eps;
        down[i] -= eps;
        let numeric = (probe(layer, rows, &params, &up, &dy, &mut scratch)
            - probe(layer, rows, &params, &down, &dy, &mut scratch))
            / f64::from(2.0 * eps);
        close("x", i, dx[i], numeric);
    }
    for i in 0..params.len() {
        let (mut up, mut down) = (params.clone(), params.clone());
        up[i] += eps;
        down[i] -= eps;
        let numeric = (probe(layer, rows, &up, &x, &dy, &mut scratch)
            - probe(layer, rows, &down, &x, &dy, &mut scratch))
            / f64::from(2.0 * eps);
        close("params", i, grad[i], numeric);
    }
}

fn uniform(r: &mut Xoshiro256PlusPlus) -> f32 {
    r.random_range(-1.0..1.0)
}

fn uniforms(n: usize, r: &mut Xoshiro256PlusPlus) -> Vec<f32> {
    (0..n).map(|_| uniform(r)).collect()
}

/// Distinct values at least 0.05 apart and from zero, in random order, so
/// that a step of 0.01 crosses no kink (ReLU's, or a change of a window's
/// maximum).
fn distinct(n: usize, r: &mut Xoshiro256PlusPlus) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0 + 0.5) * 0.05).collect();
    for i in (1..n).rev() {
        v.swap(i, r.random_range(0..=i));
    }
    v
}

#[test]
fn dense_gradients_match_finite_differences() {
    check_layer(&Dense::new(7, 4), Shape::flat(7), uniforms);
    check_layer(&Dense::output(5, 3), Shape::flat(5), uniforms);
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let input = Shape::image(2, 6, 5);
    // Plain, strided and padded, and a stride that skips the last column.
    for (filters, kernel, stride, padding) in [(3, 3, 1, 0), (2, 3, 2, 1), (4, 2, 2, 0), (1, 5, 1, 2)] {
        let conv = Conv2d::new(input, filters, kernel, stride, padding).unwrap();
        check_layer(&conv, input, uniforms);
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    let input = Shape::image(3, 6, 6);
    for reduce in [Reduce::Max, Reduce::Mean] {
        for (size, stride) in [(2, 2), (3, 2), (3, 3)] {
            check_layer(&Pool::new(input, size, stride, reduce).unwrap(), input, distinct);
        }
    }
}

#[test]
fn nonlinearity_dropout_and_reshape_gradients_match_finite_differences() {
    let shape = Shape::image(2, 3, 3);
    for unit in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
        check_layer(&Nonlinearity::new(shape, unit), shape, distinct);
    }
    check_layer(&Dropout::new(shape, 0.4), shape, uniforms);
    check_layer(&Flatten::new(shape), shape, uniforms);
    check_layer(&ToChannelsLast::new(shape), shape, uniforms);
}

/// A layer's output and input gradient for `rows` examples in one pass; the
/// parameter gradient goes to `grad`, or is added to it.
fn pass_through(
    layer: &dyn Layer,
    rows: usize,
    params: &[f32],
    (x, dy): (&[f32], &[f32]),
    grad: &mut [f32],
    accumulate: bool,
) -> (Vec<f32>, Vec<f32>) {
    let mut work = vec![0.0; layer.work(rows)];
    let mut y = vec![0.0; dy.len()];
    let mut seeded = rng(0);
    let mut pass = Pass {
        train: true,
        rng: &mut seeded,
    };
    layer.forward(rows, params, x, &mut y, &mut work, &mut pass);
    let mut dx = vec![0.0; x.len()];
    layer.backward(Backward {
        rows,
        params,
        x,
        y: &y,
        dy,
        dx: Some(&mut dx),
        grad,
        accumulate,
        work: &mut work,
    });
    (y, dx)
}

/// A shard too big to unroll at once goes through in chunks: the same
/// output and gradients as one example at a time.
#[test]
fn conv2d_in_chunks_matches_one_example_at_a_time() {
    let input = Shape::image(3, 40, 40);
    let conv = Conv2d::new(input, 4, 5, 1, 2).unwrap();
    let rows = 5;
    assert!(conv.work(rows) < rows * conv.work(1), "the shard is unrolled in chunks");
    let mut r = rng(4);
    let x = uniforms(rows * input.len(), &mut r);
    let dy = uniforms(rows * conv.output().len(), &mut r);
    let params = uniforms(5 * 5 * 3 * 4 + 4, &mut r);
    let mut grad = vec![1.0; params.len()];
    let (y, dx) = pass_through(&conv, rows, &params, (&x, &dy), &mut grad, false);
    let mut one_by_one = vec![1.0; params.len()];
    let (n, m) = (input.len(), conv.output().len());
    for i in 0..rows {
        let example = (&x[i * n..][..n], &dy[i * m..][..m]);
        let (yi, dxi) = pass_through(&conv, 1, &params, example, &mut one_by_one, i > 0);
        let near = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()));
        assert!(near(&y[i * m..][..m], &yi), "example {i}'s output");
        assert!(near(&dx[i * n..][..n], &dxi), "example {i}'s input gradient");
    }
    let near = grad
        .iter()
        .zip(&one_by_one)
        .all(|(a, b)| (a - b).abs() <= 1e-3 * (1.0 + b.abs()));
    assert!(near, "the parameters' gradient");
}

/// The convolution computes what its definition says: every output a sum
/// over the kernel's window of input times weight, plus the filter's bias.
#[test]
fn conv2d_is_a_convolution() {
    let (c, h, w, f, k, s, p) = (2, 7, 6, 3, 3, 2, 1);
    let input = Shape::image(c, h, w);
    let conv = Conv2d::new(input, f, k, s, p).unwrap();
    let out = conv.output();
    assert_eq!(
        (out.height, out.width),
        ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1)
    );
    let mut r = rng(3);
    let x: Vec<f32> = (0..2 * input.len()).map(|_| uniform(&mut r)).collect();
    let params: Vec<f32> = (0..k * k * c * f + f).map(|_| uniform(&mut r)).collect();
    let mut y = vec![0.0; 2 * out.len()];
    let mut work = vec![0.0; conv.work(2)];
    let mut seeded = rng(0);
    let mut pass = Pass {
        train: false,
        rng: &mut seeded,
    };
    conv.forward(2, &params, &x, &mut y, &mut work, &mut pass);
    // Channels-last throughout; the weight is kernel row, column, input channel, filter.
    let at = |n: usize, ch: usize, i: isize, j: isize| -> f64 {
        if i < 0 || j < 0 || i as usize >= h || j as usize >= w {
            return 0.0;
        }
        f64::from(x[n * input.len() + (i as usize * w + j as usize) * c + ch])
    };
    for n in 0..2 {
        for oy in 0..out.height {
            for ox in 0..out.width {
                for fi in 0..f {
                    let mut want = f64::from(params[k * k * c * f + fi]);
                    for ki in 0..k {
                        for kj in 0..k {
                            for ch in 0..c {
                                let weight = f64::from(params[((ki * k + kj) * c + ch) * f + fi]);
                                let (i, j) = ((oy * s + ki) as isize - p as isize, (ox * s + kj) as isize - p as isize);
                                want += weight * at(n, ch, i, j);
                            }
                        }
                    }
                    let got = y[n * out.len() + (oy * out.width + ox) * f + fi];
                    assert!(
                        (f64::from(got) - want).abs() < 1e-4,
                        "({n},{oy},{ox},{fi}): {got} vs {want}"
                    );
                }
            }
        }
    }
}

fn lenet_like(activation: Option<Activation>) -> Vec<LayerSpec> {
    vec![
        LayerSpec::Conv2d {
            filters: 3,
            kernel: 3,
            stride: 1,
            padding: 1,
            activation,
        },
        LayerSpec::MaxPool2d { size: 2, stride: None },
        LayerSpec::Conv2d {
            filters: 4,
            kernel: 2,
            stride: 1,
            padding: 0,
            activation: None,
        },
        LayerSpec::Tanh,
        LayerSpec::AvgPool2d { size: 2, stride: None },
        LayerSpec::Flatten,
        LayerSpec::Dense {
            units: 5,
            activation: Some(Activation::Sigmoid),
        },
        LayerSpec::Output,
    ]
}

fn images(rows: usize, shape: Shape, seed: u64) -> (Array2<f32>, Vec<u8>) {
    let mut r = rng(seed);
    let x = Array2::from_shape_fn((rows, shape.len()), |_| uniform(&mut r));
    (x, (0..rows).map(|i| (i % 3) as u8).collect())
}

/// The whole network's gradient is the gradient of its loss.
#[test]
fn network_gradient_matches_finite_differences_of_the_loss() {
    let shape = Shape::image(2, 6, 6);
    let net = Layered::new(&lenet_like(Some(Activation::Tanh)), shape, false, 3).unwrap();
    let params = net.init(4);
    let (x, y) = images(4, shape, 5);
    let loss_at = |p: &[f32]| {
        let mut scratch = net.scratch(4, 0);
        let mut g = vec![0.0; p.len()];
        f64::from(net.shard_gradient(p, x.view(), &y, 0.25, &mut g, false, &mut scratch)) * 0.25
    };
    let mut scratch = net.scratch(4, 0);
    let mut grad = vec![0.0; params.len()];
    net.shard_gradient(&params, x.view(), &y, 0.25, &mut grad, false, &mut scratch);
    let eps = 1e-2;
    for i in (0..params.len()).step_by(3) {
        let (mut up, mut down) = (params.clone(), params.clone());
        up[i] += eps;
        down[i] -= eps;
        let numeric = (loss_at(&up) - loss_at(&down)) / f64::from(2.0 * eps);
        assert!(
            (f64::from(grad[i]) - numeric).abs() < 1e-3 + 1e-2 * numeric.abs(),
            "{}: {} vs {numeric}",
            i,
            grad[i]
        );
    }
}

/// Channels-first input gives what the same images channels-last give.
#[test]
fn channels_first_input_is_reordered() {
    let shape = Shape::image(2, 6, 6);
    let specs = lenet_like(None);
    let last = Layered::new(&specs, shape, false, 3).unwrap();
    let first = Layered::new(&specs, shape, true, 3).unwrap();
    assert_eq!(last.layout(), first.layout());
    let params = last.init(1);
    let (x, _) = images(5, shape, 2);
    let hw = shape.height * shape.width;
    let chw = Array2::from_shape_fn(x.dim(), |(n, i)| {
        let (ch, pos) = (i / hw, i % hw);
        x[[n, pos * shape.channels + ch]]
    });
    let a = last.predict_proba(&params, x.view()).unwrap();
    let b = first.predict_proba(&params, chw.view()).unwrap();
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6));
}

#[test]
fn engines_on_one_and_several_threads_agree() {
    let shape = Shape::image(1, 8, 8);
    let net = Layered::new(&lenet_like(Some(Activation::Relu)), shape, true, 3).unwrap();
    let params = net.init(9);
    let (x, y) = images(7, shape, 3);
    let mut one = GradientEngine::with_threads(net.clone(), 7, 1, 0);
    let mut three = GradientEngine::with_threads(net.clone(), 7, 3, 0);
    let (l1, g1) = one.gradient(&params, x.view(), &y).unwrap();
    let g1 = g1.to_vec();
    let (l3, g3) = three.gradient(&params, x.view(), &y).unwrap();
    assert!((l1 - l3).abs() < 1e-5);
    assert!(g1.iter().zip(g3).all(|(a, b)| (a - b).abs() < 1e-5));
    // Evaluation in chunks agrees with the training pass's loss.
    let eval = net
        .evaluate(&params, &Dataset::new(x.clone(), y.clone(), 3).unwrap())
        .unwrap();
    assert!((eval.loss - l1).abs() < 1e-4, "{} vs {l1}", eval.loss);
}

#[test]
fn lenet_has_caffes_parameter_count() {
    let specs: Vec<LayerSpec> = toml::from_str::<toml::Table>(
        r#"
        layers = [
            { type = "conv2d", filters = 20, kernel = 5 },
            { type = "max_pool2d", size = 2 },
            { type = "conv2d", filters = 50, kernel = 5 },
            { type = "max_pool2d", size = 2 },
            { type = "flatten" },
            { type = "dense", units = 500, activation = "relu" },
            { type = "output" },
        ]"#,
    )
    .unwrap()["layers"]
        .clone()
        .try_into()
        .unwrap();
    let net = Layered::new(&specs, Shape::image(1, 28, 28), true, 10).unwrap();
    assert_eq!(net.layout().len(), 431_080);
    assert_eq!(net.layout().tensors()[0].name, "layers.0.weight");
    assert_eq!(net.layout().tensors()[0].shape, vec![5, 5, 1, 20]);
    assert!(net.summary().contains("[3] max_pool2d → 50×4×4"), "{}", net.summary());
}

#[test]
fn shapes_that_do_not_chain_are_refused_naming_the_layer() {
    let image = Shape::image(1, 28, 28);
    let err = |specs: &[LayerSpec], input: Shape| Layered::new(specs, input, true, 10).unwrap_err().to_string();
    let conv = |kernel| LayerSpec::Conv2d {
        filters: 4,
        kernel,
        stride: 1,
        padding: 0,
        activation: None,
    };
    let dense = LayerSpec::Dense {
        units: 8,
        activation: None,
    };
    let e = err(&[conv(5), dense.clone(), LayerSpec::Output], image);
    assert!(
        e.contains("model.layers[1] (dense): its input is 4×24×24; expected a flat vector"),
        "{e}"
    );
    let e = err(&[conv(5), LayerSpec::Output], Shape::flat(784));
    assert!(
        e.contains("model.layers[0] (conv2d): its input is 784 features; expected an image"),
        "{e}"
    );
    let e = err(&[conv(30), LayerSpec::Flatten, LayerSpec::Output], image);
    assert!(e.contains("a 30×30 kernel"), "{e}");
    let e = err(&[LayerSpec::Flatten, LayerSpec::Output, dense.clone()], image);
    assert!(
        e.contains("model.layers[1] (output): the output layer must be the last"),
        "{e}"
    );
    let e = err(&[LayerSpec::Flatten, dense], image);
    assert!(e.contains("the last layer must be"), "{e}");
    let e = err(
        &[LayerSpec::Dropout { p: 1.0 }, LayerSpec::Flatten, LayerSpec::Output],
        image,
    );
    assert!(e.contains("model.layers[0] (dropout)") && e.contains("[0, 1)"), "{e}");
}

#[test]
fn unknown_layer_types_and_keys_are_refused_by_name() {
    let parse = |text: &str| toml::from_str::<LayerSpec>(text).unwrap_err().to_string();
    assert!(parse("type = \"conv3d\"").contains("conv3d"));
    assert!(parse("type = \"dense\"\nunits = 3\nwidth = 2").contains("width"));
}
