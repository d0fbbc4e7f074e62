//! Users' own data end to end: small datasets the tests write themselves in
//! each format (not MNIST re-saved: other widths, shapes and class counts)
//! train to a sane accuracy through a real driver and executors over TCP;
//! `deepdist eval` agrees with the job's own figure; `predict` and
//! `data inspect` work on the results; a defective file fails its job with
//! a message naming the file and the defect.

mod support;

use std::path::Path;

use deepdist_core::data::idx::encode_idx;
use deepdist_core::data::md5sum::md5_hex;
use deepdist_core::job::JobState;
use deepdist_wire::proto::JobSummary;
use ndarray::{Array1, Array2};
use ndarray_npy::{NpzWriter, WriteNpyExt};
use support::TestDriver;

/// A small deterministic generator (xorshift), so the data need no crate.
struct Noise(u64);

impl Noise {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// About normal, mean 0, deviation 1 (sum of uniforms).
    fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.unit()).sum::<f32>() - 6.0
    }
}

/// `n` examples of `classes` Gaussian clusters in `width` dimensions.
fn clusters(n: usize, width: usize, classes: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut centers = Noise(7);
    let centers: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..width).map(|_| 1.5 * centers.normal()).collect())
        .collect();
    let mut noise = Noise(seed);
    let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    let rows = labels
        .iter()
        .map(|&c| centers[c].iter().map(|m| m + noise.normal()).collect())
        .collect();
    (rows, labels)
}

/// A 3-class, 20-feature CSV pair with a header and the label in the middle.
fn write_csv(dir: &Path) {
    for (name, n, seed) in [("train.csv", 1800, 1), ("test.csv", 600, 2)] {
        let (rows, labels) = clusters(n, 20, 3, seed);
        let mut text = String::new();
        let names: Vec<String> = (0..20).map(|j| format!("f{j}")).collect();
        text += &format!("{},class,{}\n", names[..10].join(","), names[10..].join(","));
        for (row, label) in rows.iter().zip(labels) {
            let fields: Vec<String> = row.iter().map(|v| format!("{v:.4}")).collect();
            text += &format!("{},{label},{}\n", fields[..10].join(","), fields[10..].join(","));
        }
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// 8×8 images of 4 classes (class c lights up quadrant c), in IDX files
/// under MNIST's names, the training images gzipped, with an MD5SUMS file.
fn write_idx(dir: &Path) {
    let mut noise = Noise(3);
    let mut sums = String::new();
    for (prefix, n) in [("train", 800u32), ("t10k", 200)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
        let mut pixels = Vec::new();
        for &c in &labels {
            for y in 0..8 {
                for x in 0..8 {
                    let lit = (y / 4) * 2 + x / 4 == usize::from(c);
                    let base = if lit { 150.0 } else { 20.0 };
                    pixels.push((base + 60.0 * noise.unit()) as u8);
                }
            }
        }
        let images = encode_idx(&[n, 8, 8], &pixels);
        let images_name = format!("{prefix}-images-idx3-ubyte");
        let (images_name, images) = if prefix == "train" {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&images).unwrap();
            (format!("{images_name}.gz"), gz.finish().unwrap())
        } else {
            (images_name, images)
        };
        let labels_name = format!("{prefix}-labels-idx1-ubyte");
        let labels = encode_idx(&[n], &labels);
        for (name, bytes) in [(&images_name, &images), (&labels_name, &labels)] {
            sums += &format!("{}  {name}\n", md5_hex(bytes));
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    std::fs::write(dir.join("MD5SUMS"), sums).unwrap();
}

/// A 2-class, 10-feature set far from the origin (standardizing matters),
/// float32 features and int32 labels, in one compressed .npz; the test
/// features also as a .npy for `predict`.
fn write_npz(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("set.npz");
    let mut npz = NpzWriter::new_compressed(std::fs::File::create(&path).unwrap());
    for (split, n, seed) in [("train", 1000, 4), ("test", 400, 5)] {
        let (rows, labels) = clusters(n, 10, 2, seed);
        let x = Array2::from_shape_fn((n, 10), |(i, j)| 1000.0 + 50.0 * rows[i][j]);
        let y = Array1::from_iter(labels.iter().map(|&l| l as i32));
        npz.add_array(format!("x_{split}"), &x).unwrap();
        npz.add_array(format!("y_{split}"), &y).unwrap();
        if split == "test" {
            x.write_npy(std::fs::File::create(dir.join("x_test.npy")).unwrap())
                .unwrap();
        }
    }
    npz.finish().unwrap();
    path
}

/// One dataset of each format, each in a directory of its own.
struct Sets {
    csv: tempfile::TempDir,
    idx: tempfile::TempDir,
    npy: tempfile::TempDir,
    npz: std::path::PathBuf,
}

impl Sets {
    fn write() -> Self {
        let (csv, idx, npy) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write_csv(csv.path());
        write_idx(idx.path());
        let npz = write_npz(npy.path());
        Self { csv, idx, npy, npz }
    }
}

/// `[data]` keys for the CSV set in `dir`, and more.
fn csv_data(dir: &Path, more: &str) -> String {
    format!("format = \"csv\"\npath = {dir:?}\nlabel_column = \"class\"{more}")
}

fn job(name: &str, data: &str) -> String {
    format!(
        r#"name = "{name}"
[data]
partitions = 4
{data}
[model]
hidden = [32]
[train]
epochs = 6
batch_size = 32
[optimizer]
lr = 0.05
"#
    )
}

/// Runs a job on a test driver with two executors.
async fn train(driver: &TestDriver, name: &str, data: &str) -> JobSummary {
    let _a = support::start_executor(&driver.addr(), "a");
    let _b = support::start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    let id = client.submit(&job(name, data), &format!("{name}.toml")).await.unwrap();
    support::watch(&mut client, id, |_| {}).await
}

/// `deepdist eval --json` of a job's model.
fn eval(summary: &JobSummary) -> serde_json::Value {
    let model = Path::new(&summary.output_dir).join("model.safetensors");
    let out = support::deepdist(&["eval", model.to_str().unwrap(), "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_trained(summary: &JobSummary, bar: f64) -> f64 {
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    let accuracy = summary.final_accuracy.unwrap_or(0.0);
    assert!(accuracy >= bar, "{summary:?}");
    accuracy
}

/// The same test set and model: the same figure, to within one example
/// (the saved model is the last evaluated one).
fn assert_agrees(report: &serde_json::Value, accuracy: f64) {
    let examples = report["examples"].as_f64().unwrap();
    let evaluated = report["accuracy"].as_f64().unwrap();
    assert!(
        (evaluated - accuracy).abs() <= 1.0 / examples + 1e-9,
        "eval {evaluated} vs job {accuracy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_trains_and_eval_agrees_with_the_job() {
    let driver = TestDriver::start().await;
    let Sets {
        csv,
        idx,
        npy: _npy,
        npz,
    } = Sets::write();
    let cases = [
        ("csv3", csv_data(csv.path(), ""), 3, 20),
        ("idx4", format!("format = \"idx\"\npath = {:?}", idx.path()), 4, 64),
        (
            "npz2",
            format!("format = \"npy\"\npath = {npz:?}\nscale = \"standardize\""),
            2,
            10,
        ),
    ];
    for (name, data, classes, width) in cases {
        let summary = train(&driver, name, &data).await;
        let accuracy = assert_trained(&summary, 0.9);
        let report = eval(&summary);
        assert_agrees(&report, accuracy);
        assert_eq!(report["per_class"].as_array().unwrap().len(), classes, "{name}");
        let metrics = support::metrics(&summary.output_dir);
        assert_eq!(metrics.len(), 6, "{name}: an evaluation per epoch");
        let model = Path::new(&summary.output_dir).join("model.safetensors");
        let (_, shapes) = deepdist_core::checkpoint::model_info(&model).unwrap();
        assert_eq!(shapes["layer0.weight"], vec![width, 32], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_is_held_out_and_the_test_set_scored_once_at_the_end() {
    let driver = TestDriver::start().await;
    let csv = tempfile::tempdir().unwrap();
    write_csv(csv.path());
    let data = csv_data(csv.path(), "\nvalidation = 300");
    let summary = train(&driver, "held", &data).await;
    assert_trained(&summary, 0.9);
    let test = summary.test_accuracy.expect("the test set scored at the end");
    assert!(test >= 0.9, "{summary:?}");
    // The per-epoch figures are the validation examples', the end's the test set's.
    let metrics = support::metrics(&summary.output_dir);
    assert!(metrics.iter().all(|l| l["validation"] == true), "{metrics:?}");
    let report = eval(&summary);
    assert_eq!(report["examples"], 600);
    assert_agrees(&report, test);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_and_inspect_work_on_the_results() {
    let driver = TestDriver::start().await;
    let npy = tempfile::tempdir().unwrap();
    let npz = write_npz(npy.path());
    let data = format!("format = \"npy\"\npath = {npz:?}\nscale = \"standardize\"");
    let summary = train(&driver, "predictable", &data).await;
    let accuracy = assert_trained(&summary, 0.9);
    let model = Path::new(&summary.output_dir).join("model.safetensors");
    let (input, out_file) = (npy.path().join("x_test.npy"), npy.path().join("preds.csv"));
    let text = support::predict(&model, &input, &out_file);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("predicted,p0,p1"));
    // The test labels alternate 0, 1, …: the predictions score as the job did.
    let predicted: Vec<usize> = lines.map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(predicted.len(), 400);
    let correct = predicted.iter().enumerate().filter(|(i, p)| i % 2 == **p).count();
    assert!(
        (correct as f64 / 400.0 - accuracy).abs() <= 1.0 / 400.0 + 1e-9,
        "{correct} of 400 vs {accuracy}"
    );

    let out = support::deepdist(
        &["data", "inspect", "--format", "npy", "--path", npz.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("train: 1000 examples × 10 features, 2 classes"), "{text}");
    assert!(text.contains("0: 200  1: 200"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defective_file_fails_its_job_naming_the_file_and_the_defect() {
    let driver = TestDriver::start().await;
    let Sets {
        csv,
        idx,
        npy: _npy,
        npz,
    } = Sets::write();
    let mut text = std::fs::read_to_string(csv.path().join("train.csv")).unwrap();
    text.push_str("1,2,3\n");
    std::fs::write(csv.path().join("train.csv"), text).unwrap();
    let labels = idx.path().join("t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&labels, bytes).unwrap();
    std::fs::write(&npz, b"PK\x03\x04 not a zip").unwrap();
    let cases = [
        (
            "ragged",
            csv_data(csv.path(), ""),
            "train.csv: line 1802: 3 fields where the first row has 21",
        ),
        (
            "md5",
            format!("format = \"idx\"\npath = {:?}", idx.path()),
            "t10k-labels-idx1-ubyte: MD5",
        ),
        (
            "zip",
            format!("format = \"npy\"\npath = {npz:?}"),
            "set.npz: not an .npz archive",
        ),
    ];
    let mut client = driver.client().await;
    for (name, data, want) in cases {
        let id = client.submit(&job(name, &data), "bad.toml").await.unwrap();
        let summary = support::watch(&mut client, id, |_| {}).await;
        assert_eq!(summary.state, JobState::Failed, "{summary:?}");
        let error = summary.error.unwrap_or_default();
        assert!(error.contains(want), "{name}: {error}");
    }
    // A job that names keys of another format is refused at submit.
    let wrong = job("wrong", &format!("format = \"npy\"\npath = {npz:?}\nheader = true"));
    let err = client.submit(&wrong, "wrong.toml").await.unwrap_err().to_string();
    assert!(
        err.contains("data.header") && err.contains("only for format = \"csv\""),
        "{err}"
    );
    // The driver goes on: a good job after the bad ones trains.
    let good = tempfile::tempdir().unwrap();
    write_csv(good.path());
    let summary = train(&driver, "after", &csv_data(good.path(), "")).await;
    assert_trained(&summary, 0.9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_read_a_shared_directory_themselves_and_check_what_they_read() {
    let driver = TestDriver::start().await;
    let csv = tempfile::tempdir().unwrap();
    write_csv(csv.path());
    let data = csv_data(csv.path(), "\nshared = true");
    let summary = train(&driver, "shared", &data).await;
    assert_trained(&summary, 0.9);

    // An executor whose view of the shared path differs (another host's
    // stale copy: here a mount namespace binds other files over the path)
    // reads partitions that do not hash to the driver's: its tasks fail
    // with that reason rather than training on the wrong data.
    let scenario = "shared data that differs on one host";
    let unshare = std::process::Command::new("unshare").args(["--mount", "true"]).status();
    if !unshare.is_ok_and(|s| s.success()) {
        support::cannot_run(scenario, "`unshare --mount` is not allowed here (it needs root)");
        return;
    }
    let other = tempfile::tempdir().unwrap();
    write_csv(other.path());
    let mut text = std::fs::read_to_string(other.path().join("train.csv")).unwrap();
    text = text.replacen(",0,", ",1,", 1);
    std::fs::write(other.path().join("train.csv"), text).unwrap();
    let bind = format!(
        "mount --bind {} {} && exec \"$0\" \"$@\"",
        other.path().display(),
        csv.path().display()
    );
    let prefix: Vec<String> = ["unshare", "--mount", "--propagation", "private", "sh", "-c", &bind]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _stale = support::spawn_executor_process_in(&prefix, &driver.addr(), "stale");
    driver
        .await_status("the stale executor registered", |s| {
            s.executors.iter().any(|e| e.name == "stale")
        })
        .await;
    let mut client = driver.client().await;
    let id = client.submit(&job("stale", &data), "stale.toml").await.unwrap();
    let summary = support::watch(&mut client, id, |_| {}).await;
    assert_eq!(summary.state, JobState::Failed, "{summary:?}");
    let error = summary.error.unwrap_or_default();
    assert!(
        error.contains("the shared data differs between this host and the driver's"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_and_arrow_files_as_users_tools_write_them_train_and_eval_agrees() {
    let dir = tempfile::tempdir().unwrap();
    // (layout, [data] keys, classes, features)
    let cases = [
        ("columns", "format = \"parquet\"\nlabel_column = \"class\"", 3, 12),
        ("list", "format = \"parquet\"", 3, 12),
        ("vector", "format = \"parquet\"", 3, 12),
        ("arrow", "format = \"arrow\"\nlabel_column = \"digit\"", 4, 64),
    ];
    for (layout, _, _, _) in cases {
        if !support::write_columnar("columnar files", layout, &dir.path().join(layout)) {
            return;
        }
    }
    let driver = TestDriver::start().await;
    for (layout, keys, classes, width) in cases {
        let data = format!("{keys}\npath = {:?}", dir.path().join(layout));
        let summary = train(&driver, layout, &data).await;
        let accuracy = assert_trained(&summary, 0.9);
        let report = eval(&summary);
        assert_agrees(&report, accuracy);
        assert_eq!(report["per_class"].as_array().unwrap().len(), classes, "{layout}");
        let model = Path::new(&summary.output_dir).join("model.safetensors");
        let (_, shapes) = deepdist_core::checkpoint::model_info(&model).unwrap();
        assert_eq!(shapes["layer0.weight"], vec![width, 32], "{layout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_mistyped_columnar_file_fails_its_job_naming_the_defect() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("corrupt", "train.parquet: Parquet error"),
        ("mistyped", "train.parquet: column \"note\": Utf8 is not a number"),
        ("null", "train.parquet: column \"f3\": row 6: null"),
    ];
    for (layout, _) in cases {
        if !support::write_columnar("bad columnar files", layout, &dir.path().join(layout)) {
            return;
        }
    }
    let driver = TestDriver::start().await;
    let mut client = driver.client().await;
    for (layout, want) in cases {
        let data = format!(
            "format = \"parquet\"\nlabel_column = \"class\"\npath = {:?}",
            dir.path().join(layout)
        );
        let id = client.submit(&job(layout, &data), "bad.toml").await.unwrap();
        let summary = support::watch(&mut client, id, |_| {}).await;
        assert_eq!(summary.state, JobState::Failed, "{summary:?}");
        let error = summary.error.unwrap_or_default();
        assert!(error.contains(want), "{layout}: {error}");
    }
    // Columns are named: a label column by position is refused at submit.
    let by_index = job("index", "format = \"parquet\"\npath = \"x\"\nlabel_column = 0");
    let err = client.submit(&by_index, "index.toml").await.unwrap_err().to_string();
    assert!(
        err.contains("data.label_column") && err.contains("columns are named"),
        "{err}"
    );
}
