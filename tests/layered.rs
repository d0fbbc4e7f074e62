//! Networks listed layer by layer (`[[model.layers]]`) end to end: a
//! convolutional network trains on images the test writes — channels-last
//! NumPy files whose shape the files carry — through a real driver and
//! executors over TCP, in every mode; `eval` and `predict` agree with the
//! job; layers whose shapes do not chain are refused at submit, naming the
//! layer.

mod support;

use std::path::Path;

use deepdist_core::job::JobState;
use deepdist_core::mode::Mode;
use deepdist_wire::proto::JobSummary;
use ndarray::{Array1, Array4};
use ndarray_npy::WriteNpyExt;
use support::TestDriver;

/// Side of the test's images.
const SIDE: usize = 10;

/// `n` two-channel images of 4 classes, channels-last: stripes across or
/// down (at a random phase) on channel 0 or channel 1, in noise. No single
/// pixel tells the classes apart; a filter that sees a stripe's direction does.
fn stripes(n: usize, seed: u64) -> (Array4<f32>, Array1<u8>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut unit = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let labels = Array1::from_shape_fn(n, |i| (i % 4) as u8);
    let mut x = Array4::zeros((n, SIDE, SIDE, 2));
    for (i, &label) in labels.iter().enumerate() {
        let (channel, across) = (usize::from(label / 2), label % 2 == 0);
        let phase = (unit() * 3.0) as usize;
        for y in 0..SIDE {
            for col in 0..SIDE {
                let along = if across { y } else { col };
                let lit = (along + phase).is_multiple_of(3);
                for c in 0..2 {
                    let signal = if c == channel && lit { 0.8 } else { 0.0 };
                    x[[i, y, col, c]] = signal + 0.5 * unit();
                }
            }
        }
    }
    (x, labels)
}

/// The training and test images as `x_train.npy` … in `dir`.
fn write_images(dir: &Path) {
    for (split, n, seed) in [("train", 1200, 1), ("test", 400, 2)] {
        let (x, y) = stripes(n, seed);
        x.write_npy(std::fs::File::create(dir.join(format!("x_{split}.npy"))).unwrap())
            .unwrap();
        y.write_npy(std::fs::File::create(dir.join(format!("y_{split}.npy"))).unwrap())
            .unwrap();
    }
}

/// A small convolutional network on the images in `dir`, in `mode`.
fn cnn_job(name: &str, dir: &Path, mode: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
[data]
format = "npy"
path = {dir:?}
layout = "hwc"
partitions = 4

[[model.layers]]
type = "conv2d"
filters = 6
kernel = 3
padding = 1
activation = "relu"

[[model.layers]]
type = "max_pool2d"
size = 2

[[model.layers]]
type = "flatten"

[[model.layers]]
type = "dense"
units = 24
activation = "tanh"

[[model.layers]]
type = "dropout"
p = 0.1

[[model.layers]]
type = "output"

[train]
mode = "{mode}"
epochs = 8
batch_size = 32
{extra}
[optimizer]
kind = "sgd"
lr = 0.02
momentum = 0.9
warmup_steps = 30
"#
    )
}

/// Runs a job on a test driver with two executors.
async fn train(driver: &TestDriver, job: &str) -> JobSummary {
    let _a = support::start_executor(&driver.addr(), "a");
    let _b = support::start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    let id = client.submit(job, "cnn.toml").await.unwrap();
    support::watch(&mut client, id, |_| {}).await
}

fn trained(summary: &JobSummary, bar: f64) -> f64 {
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    let accuracy = summary.final_accuracy.unwrap_or(0.0);
    assert!(accuracy >= bar, "{summary:?}");
    accuracy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cnn_trains_on_images_and_eval_and_predict_agree_with_the_job() {
    let driver = TestDriver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    let summary = train(&driver, &cnn_job("stripes", dir.path(), "async", "")).await;
    let accuracy = trained(&summary, 0.95);
    // The status (and the page with it) shows the network the job built.
    let status = driver.client().await.status().await.unwrap();
    let model = status.jobs[0].model.clone().unwrap_or_default();
    assert!(model.starts_with("input 2×10×10 · [0] conv2d"), "{model}");
    assert!(model.ends_with(" parameters"), "{model}");

    // The saved model names its tensors after the job's layers and keeps the
    // kernel's shape (height, width, input channels, filters).
    let model = Path::new(&summary.output_dir).join("model.safetensors");
    let (metadata, shapes) = deepdist_core::checkpoint::model_info(&model).unwrap();
    assert_eq!(shapes["layers.0.weight"], vec![3, 3, 2, 6]);
    assert_eq!(shapes["layers.3.weight"], vec![6 * 5 * 5, 24]);
    let job = &metadata[deepdist_core::checkpoint::JOB_KEY];
    assert!(
        job.contains("shape = [2, 10, 10]"),
        "the files' shape is kept with the model:\n{job}"
    );
    assert!(
        metadata[deepdist_core::checkpoint::LAYERS_KEY].contains("[1] max_pool2d → 6×5×5"),
        "{metadata:?}"
    );

    let out = support::deepdist(&["eval", model.to_str().unwrap(), "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let evaluated = report["accuracy"].as_f64().unwrap();
    assert!(
        (evaluated - accuracy).abs() <= 1.0 / 400.0 + 1e-9,
        "eval {evaluated} vs job {accuracy}"
    );

    let (input, preds) = (dir.path().join("x_test.npy"), dir.path().join("preds.csv"));
    let text = support::predict(&model, &input, &preds);
    let predicted: Vec<usize> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    // The test labels cycle 0, 1, 2, 3: the predictions score as the job did.
    let correct = predicted.iter().enumerate().filter(|(i, p)| i % 4 == **p).count();
    assert!(
        (correct as f64 / 400.0 - accuracy).abs() <= 1.0 / 400.0 + 1e-9,
        "{correct} of 400 vs {accuracy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_trains_a_cnn() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    let mut modes: Vec<(&str, &str, &str)> = Mode::ALL.iter().map(|m| (m.name(), m.name(), "")).collect();
    modes.push(("hogwild", "async", "hogwild = true\nn_push = 2\nn_fetch = 2"));
    for (name, mode, extra) in modes {
        let driver = TestDriver::start().await;
        let summary = train(&driver, &cnn_job(name, dir.path(), mode, extra)).await;
        trained(&summary, 0.9);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_whose_shapes_do_not_chain_are_refused_at_submit() {
    let driver = TestDriver::start().await;
    let mut client = driver.client().await;
    // MNIST's shape is known before any file is read.
    let job = r#"name = "no-flatten"
[[model.layers]]
type = "conv2d"
filters = 4
kernel = 5
[[model.layers]]
type = "dense"
units = 10
[[model.layers]]
type = "output"
"#;
    let err = client.submit(job, "no-flatten.toml").await.unwrap_err().to_string();
    assert!(
        err.contains("model.layers[1]") && err.contains("its input is 4×24×24; expected a flat vector"),
        "{err}"
    );
    let job = job.replace("type = \"dense\"\nunits = 10", "type = \"max_pool2d\"\nsize = 30");
    let err = client.submit(&job, "too-wide.toml").await.unwrap_err().to_string();
    assert!(
        err.contains("model.layers[1]") && err.contains("a 30×30 window does not fit"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_that_does_not_hold_the_files_examples_fails_the_job_naming_it() {
    let driver = TestDriver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    let job = cnn_job("misshapen", dir.path(), "async", "").replace("layout = \"hwc\"", "shape = [3, 10, 10]");
    let summary = train(&driver, &job).await;
    assert_eq!(summary.state, JobState::Failed, "{summary:?}");
    let error = summary.error.clone().unwrap_or_default();
    assert!(
        error.contains("data.shape = [3, 10, 10] holds 300 values") && error.contains("200 features"),
        "{error}"
    );
}
