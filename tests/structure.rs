//! The workspace's shape, as the compiler and Cargo see it: the numeric core
//! stays ignorant of the network.

use std::process::Command;

/// Crates that would mean the core talks to the network.
const NETWORKING: [&str; 7] = ["tokio", "tokio-rustls", "rustls", "ureq", "hyper", "axum", "mio"];

#[test]
fn the_core_has_no_networking_dependency() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "deepdist-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("ndarray"),
        "the tree lists the core's dependencies:\n{tree}"
    );
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(!NETWORKING.contains(&name), "deepdist-core depends on {name}:\n{tree}");
    }
}
