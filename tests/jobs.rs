//! The job files shipped in `jobs/`, and how the CLI treats a bad one.

mod support;

use deepdist_core::job::JobSpec;
use deepdist_core::mode::Mode;

#[test]
fn every_shipped_job_is_valid() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let spec = JobSpec::from_toml(&text, &path.display().to_string()).unwrap();
            names.push(spec.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "fashion-cnn",
            "mnist-cnn",
            "mnist-dbn",
            "mnist-dbn-fast",
            "mnist-dbn-nopretrain",
            "mnist-mlp",
            "mnist-mlp-average",
            "mnist-mlp-easgd",
            "mnist-mlp-hogwild",
            "mnist-mlp-ssp",
            "mnist-mlp-sync"
        ]
    );
}

/// The Fashion-MNIST job reads Debian's files (whose shape they carry) and
/// trains the MNIST job's LeNet with dropout added.
#[test]
fn the_fashion_job_reads_debians_files_into_the_mnist_jobs_network() {
    let read = |f: &str| {
        let path = format!("{}/jobs/{f}", env!("CARGO_MANIFEST_DIR"));
        JobSpec::from_toml(&std::fs::read_to_string(&path).unwrap(), f).unwrap()
    };
    let (fashion, mnist) = (read("fashion-cnn.toml"), read("mnist-cnn.toml"));
    let dir = fashion.data.path.clone().unwrap();
    if !std::path::Path::new(&dir).exists() {
        support::cannot_run(
            "the Fashion-MNIST job",
            &format!("{dir} is missing (apt-get install dataset-fashion-mnist)"),
        );
        return;
    }
    let loaded = deepdist_core::data::load::load(&fashion.data, None).unwrap();
    assert_eq!(
        (loaded.train.len(), loaded.test.len(), loaded.train.classes()),
        (60_000, 10_000, 10)
    );
    assert_eq!(loaded.shape, Some([1, 28, 28]));
    let net = fashion.with_shape(loaded.shape).final_network(784, 10).unwrap();
    let shapes = |n: &dyn deepdist_core::model::Network| -> Vec<Vec<usize>> {
        n.layout().tensors().iter().map(|t| t.shape.clone()).collect()
    };
    assert_eq!(
        shapes(net.as_ref()),
        shapes(mnist.final_network(784, 10).unwrap().as_ref())
    );
    let layers = |spec: &JobSpec| spec.model.keys["layers"].as_array().unwrap().clone();
    let mut without_dropout = layers(&fashion);
    without_dropout.retain(|l| l["type"].as_str() != Some("dropout"));
    assert_eq!(without_dropout, layers(&mnist));
}

#[test]
fn every_mode_has_an_example_job() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs");
    let read = |f: String| JobSpec::from_toml(&std::fs::read_to_string(format!("{dir}/{f}")).unwrap(), &f).unwrap();
    for mode in Mode::ALL {
        let file = match mode {
            Mode::Async => "mnist-mlp.toml".to_string(),
            other => format!("mnist-mlp-{other}.toml"),
        };
        assert_eq!(read(file).train.mode, mode);
    }
    assert!(read("mnist-mlp-hogwild.toml".into()).train.hogwild);
}

#[test]
fn the_dbn_jobs_differ_only_in_pretraining() {
    let read = |f: &str| {
        let path = format!("{}/jobs/{f}", env!("CARGO_MANIFEST_DIR"));
        JobSpec::from_toml(&std::fs::read_to_string(&path).unwrap(), f).unwrap()
    };
    let (with, without) = (read("mnist-dbn.toml"), read("mnist-dbn-nopretrain.toml"));
    assert_eq!(with.model.kind, "dbn");
    assert_eq!(
        (with.model.clone(), with.train.clone(), with.optimizer),
        (without.model.clone(), without.train.clone(), without.optimizer)
    );
    assert_eq!(without.stages().len(), 1);
    let keys: deepdist_core::job::kinds::DenseKeys = with.model.keys("dbn").unwrap();
    assert_eq!(with.stages().len(), keys.hidden.len() + 1);
}

#[test]
fn submit_refuses_an_invalid_job_before_touching_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"x\"\n[train]\nbatch_size = 0\n").unwrap();
    // Nothing listens on this driver address: the error must come from the file.
    let out = support::deepdist(&["submit", path.to_str().unwrap(), "--driver", "127.0.0.1:9"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`train.batch_size` = 0: must be between 1 and 65536"),
        "{stderr}"
    );
}
