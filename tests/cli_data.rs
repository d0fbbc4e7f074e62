//! `deepdist data fetch` as a user runs it.

mod support;

#[test]
fn fetch_reports_a_verified_dataset() {
    let dir = support::data_dir();
    let out = support::deepdist(&["data", "fetch", "mnist", "--data-dir", dir.to_str().unwrap()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("60000 training and 10000 test images"), "{stdout}");
}

#[test]
fn fetch_with_every_source_failing_says_what_was_tried() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = dir.path().join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    std::fs::write(mnist.join("train-images-idx3-ubyte"), b"\0\0\x08\x03truncated").unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror = format!("http://127.0.0.1:{port}/");
    let out = support::deepdist(
        &["data", "fetch", "mnist", "--data-dir", dir.path().to_str().unwrap()],
        &[
            ("DEEPDIST_MNIST_MIRRORS", &mirror),
            ("DEEPDIST_MNIST_PIP", "0"),
            ("RUST_BACKTRACE", "1"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("error: could not obtain")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("acktrace"),
        "a user's error carries no backtrace: {stderr}"
    );
    assert!(stderr.contains("could not obtain train-images-idx3-ubyte"), "{stderr}");
    assert!(stderr.contains("MD5"), "{stderr}");
    assert!(stderr.contains(&mirror), "{stderr}");
    // The corrupt local copy is left for the user to inspect.
    assert!(mnist.join("train-images-idx3-ubyte").exists());
}
