//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use deepdist_common::data::Mnist;
use deepdist_common::data::fetch::{FetchOptions, resolve_data_dir};

/// Real MNIST, loaded once per test binary from `$DEEPDIST_DATA` (CI points
/// it at `../shared/data`) or the cache directory, fetched if missing.
pub fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| match Mnist::load(&FetchOptions::new(data_dir())) {
        Ok(m) => m,
        Err(e) => panic!("real MNIST is needed for this test: {e}"),
    })
}

/// The data directory the tests use.
pub fn data_dir() -> PathBuf {
    resolve_data_dir(None)
}

/// Runs the `deepdist` binary with these arguments and environment.
pub fn deepdist(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deepdist"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run deepdist: {e}"),
    }
}
