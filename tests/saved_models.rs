//! Models saved by earlier releases still open: their network is rebuilt
//! through the job's model kind from the metadata they carry.

mod support;

use std::collections::HashMap;

use deepdist_core::checkpoint::{JOB_KEY, save_model};
use deepdist_core::job::JobSpec;

/// A model as the release before the model seam saved it: the job and the
/// tensors, without the input width and classes in its metadata.
#[test]
fn a_model_saved_without_its_shape_in_the_metadata_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let job = "name = \"old\"\n[model]\nhidden = [16]\n";
    let spec = JobSpec::from_toml(job, "old.toml").unwrap();
    let network = spec.final_network(784, 10).unwrap();
    let path = dir.path().join("model.safetensors");
    let metadata = HashMap::from([(JOB_KEY.to_string(), job.to_string())]);
    save_model(&path, network.layout(), &network.init(3), metadata).unwrap();
    let data = support::data_dir();
    let out = support::deepdist(
        &["eval", path.to_str().unwrap(), "--json"],
        &[("DEEPDIST_DATA", data.to_str().unwrap())],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["examples"], 10_000, "{report}");
    // Untrained: about one in ten, and certainly not what a trained model scores.
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!((0.0..0.5).contains(&accuracy), "{accuracy}");
}

/// A saved RBM (a DBN's earlier stage) is not a model to evaluate, and says so.
#[test]
fn an_rbm_is_refused_by_eval_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let job = "name = \"d\"\n[model]\nkind = \"dbn\"\nhidden = [16]\n[pretrain]\nepochs = 1\n";
    let spec = JobSpec::from_toml(job, "d.toml").unwrap();
    let rbm = spec.network(0, 784, 10).unwrap();
    let path = dir.path().join("rbm1.safetensors");
    let metadata = HashMap::from([(JOB_KEY.to_string(), job.to_string())]);
    save_model(&path, rbm.layout(), &rbm.init(3), metadata).unwrap();
    let out = support::deepdist(&["eval", path.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rbm1.safetensors"), "{stderr}");
}
