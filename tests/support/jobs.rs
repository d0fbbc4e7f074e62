//! Job files the tests submit and what their outputs must show.

/// A small, quick job on a slice of real MNIST.
pub fn small_job(name: &str, mode: &str, epochs: u32) -> String {
    let (optimizer, windows) = if mode == "sync" {
        ("kind = \"sgd\"\nlr = 0.1\nmomentum = 0.5", "")
    } else {
        ("kind = \"adarevision\"\nlr = 0.05", "n_push = 2\nn_fetch = 2\n")
    };
    format!(
        r#"name = "{name}"
[data]
partitions = 6
train_examples = 6000
test_examples = 2000
[model]
hidden = [32]
[train]
mode = "{mode}"
epochs = {epochs}
batch_size = 32
{windows}target_accuracy = 0.8
[optimizer]
{optimizer}
"#
    )
}

/// A small, quick convolutional network on a slice of real MNIST.
pub fn small_cnn_job(name: &str, mode: &str, epochs: u32) -> String {
    format!(
        r#"name = "{name}"
[data]
partitions = 4
train_examples = 3000
test_examples = 1000
[[model.layers]]
type = "conv2d"
filters = 4
kernel = 5
stride = 2
activation = "relu"
[[model.layers]]
type = "max_pool2d"
size = 2
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "output"
[train]
mode = "{mode}"
epochs = {epochs}
batch_size = 32
[optimizer]
kind = "sgd"
lr = 0.02
momentum = 0.9
warmup_steps = 30
"#
    )
}

/// The lines of a job's `metrics.jsonl`.
pub fn metrics(dir: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(std::path::Path::new(dir).join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every evaluated epoch trained every partition.
pub fn assert_every_partition_every_epoch(lines: &[serde_json::Value], epochs: usize) {
    assert_eq!(lines.len(), epochs, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["epoch"], i as u64 + 1);
        assert_eq!(
            line["partitions_trained"],
            line["partitions"],
            "epoch {}: {line}",
            i + 1
        );
    }
}

/// A small DBN job on a slice of real MNIST: two RBMs, then fine-tuning.
pub fn small_dbn_job(name: &str, pretrain_epochs: u32) -> String {
    format!(
        r#"name = "{name}"
[data]
partitions = 4
train_examples = 6000
test_examples = 2000
[model]
kind = "dbn"
hidden = [128, 64]
[pretrain]
epochs = {pretrain_epochs}
[train]
epochs = 3
batch_size = 32
[optimizer]
lr = 0.1
momentum = 0.9
# Fine-tuning warms up and evaluates a moving average, so the end-to-end and
# recovery tests cover both (the average also travels in checkpoints).
warmup_steps = 10
average = 0.9
"#
    )
}

/// The metrics list these stages in order, each with its epochs, and every
/// epoch trained every partition.
pub fn assert_stages_complete(lines: &[serde_json::Value], stages: &[(&str, u64)]) {
    let mut expected = Vec::new();
    for &(stage, epochs) in stages {
        for epoch in 1..=epochs {
            expected.push((stage.to_string(), epoch));
        }
    }
    let got: Vec<(String, u64)> = lines
        .iter()
        .map(|l| (l["stage"].as_str().unwrap().to_string(), l["epoch"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, expected);
    for line in lines {
        assert_eq!(line["partitions_trained"], line["partitions"], "{line}");
    }
}

/// A small MLP (784-64-10, four tensors) on a slice of real MNIST, trained
/// by SGD at rate 0.05 in minibatches of 64, with `train` and `optimizer`
/// lines added to those tables.
pub fn small_mlp_job(name: &str, train: &str, optimizer: &str) -> String {
    format!(
        r#"name = "{name}"
[data]
partitions = 4
train_examples = 8000
test_examples = 2000
[model]
hidden = [64]
[train]
batch_size = 64
{train}
[optimizer]
kind = "sgd"
lr = 0.05
{optimizer}
"#
    )
}
