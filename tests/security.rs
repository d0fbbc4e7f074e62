//! Shared-secret authentication and TLS: holders of the secret get in,
//! everyone else is refused with a clear error on both ends, nothing large is
//! read from a peer before it has proved itself, and TLS carries whole jobs.

mod support;

use deepdist_driver::DriverConfig;
use deepdist_executor::{ExecutorConfig, ExecutorError};
use deepdist_wire::client::Client;
use deepdist_wire::proto::auth::Secret;
use deepdist_wire::proto::{self, HANDSHAKE_MAX_FRAME, Handshake, Role};
use deepdist_wire::transport::{Credentials, TlsClient, TlsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes(), "test").unwrap()
}

fn with_secret(s: &str) -> Credentials {
    Credentials {
        secret: Some(secret(s)),
        tls: None,
    }
}

async fn driver_with_secret(s: &str) -> support::TestDriver {
    support::TestDriver::start_with(DriverConfig {
        secret: Some(secret(s)),
        ..DriverConfig::default()
    })
    .await
}

async fn connect_error(addr: &str, credentials: &Credentials) -> String {
    match Client::connect(addr, credentials).await {
        Ok(_) => panic!("connected without the right secret"),
        Err(e) => e.to_string(),
    }
}

/// An executor reaching the driver as `base` says, with the wrong secret,
/// stops with the driver's reason instead of retrying forever.
async fn impostor_is_refused(base: ExecutorConfig) {
    let (_stop, refused) = support::start_executor_with(ExecutorConfig {
        cores: 1,
        name: "impostor".into(),
        credentials: with_secret("not the driver's secret"),
        ..base
    });
    match tokio::time::timeout(support::PATIENCE, refused).await {
        Ok(Ok(Err(ExecutorError::Refused(reason)))) => assert!(reason.contains("authentication failed"), "{reason}"),
        other => panic!("expected the impostor to be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_admits_its_holders_and_refuses_everyone_else() {
    let driver = driver_with_secret("the driver's shared secret").await;
    let addr = driver.addr();

    let wrong = connect_error(&addr, &with_secret("not the driver's secret")).await;
    assert!(wrong.contains("authentication failed"), "{wrong}");
    let missing = connect_error(&addr, &Credentials::default()).await;
    assert!(missing.contains("requires a shared secret"), "{missing}");

    impostor_is_refused(ExecutorConfig {
        driver: addr.clone(),
        ..ExecutorConfig::default()
    })
    .await;
    driver
        .await_status("three refused handshakes", |s| s.rejected_connections >= 3)
        .await;

    // Holders of the secret get in: a client, and an executor that registers.
    let mut client = Client::connect(&addr, &with_secret("the driver's shared secret"))
        .await
        .unwrap();
    assert!(client.status().await.unwrap().executors.is_empty());
    let _executor = support::start_executor_with(ExecutorConfig {
        driver: addr.clone(),
        cores: 1,
        name: "trusted".into(),
        credentials: with_secret("the driver's shared secret"),
        ..ExecutorConfig::default()
    });
    driver
        .await_status("the trusted executor", |s| {
            s.executors.iter().any(|e| e.name == "trusted")
        })
        .await;
    assert!(driver.status().executors.iter().all(|e| e.name != "impostor"));
}

/// An executor in the driver's own process (local mode) goes through the
/// same handshake: without the secret it is refused, with it it registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_executors_shake_hands_like_any_other() {
    let driver = driver_with_secret("the driver's shared secret").await;
    let in_process = driver.driver.in_process();
    impostor_is_refused(ExecutorConfig {
        in_process: Some(in_process.clone()),
        ..ExecutorConfig::default()
    })
    .await;
    let _executor = support::start_executor_with(ExecutorConfig {
        in_process: Some(in_process),
        cores: 1,
        name: "trusted".into(),
        credentials: with_secret("the driver's shared secret"),
        ..ExecutorConfig::default()
    });
    let status = driver
        .await_status("the trusted in-process executor", |s| {
            s.executors.iter().any(|e| e.name == "trusted")
        })
        .await;
    assert!(status.executors.iter().all(|e| e.name != "impostor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_secret_does_not_trust_a_driver_without_one() {
    let driver = support::TestDriver::start().await;
    let err = connect_error(&driver.addr(), &with_secret("a secret the driver lacks")).await;
    assert!(err.contains("did not ask for the shared secret"), "{err}");
}

/// Reads until the driver closes the connection; fails the test if it
/// does not within the patience (it would be waiting for bytes instead).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    match tokio::time::timeout(support::PATIENCE, stream.read_to_end(&mut reply)).await {
        Ok(_) => reply,
        Err(_) => panic!("the driver kept the connection open"),
    }
}

fn header(len: usize) -> [u8; 4] {
    (len as u32).to_be_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_stay_small_until_the_peer_has_proved_the_secret() {
    let driver = driver_with_secret("the driver's shared secret").await;
    let addr = driver.addr();
    let big = HANDSHAKE_MAX_FRAME + 1; // far below the post-handshake cap

    // Before Hello: a header announcing a frame above the handshake cap is
    // refused on the header alone (the body never comes, and is not awaited).
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(&header(big)).await.unwrap();
    read_until_closed(&mut stream).await;

    // After a valid Hello, in place of the Answer: the same.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let hello = proto::encode(&Handshake::hello(Role::Executor, "probe", 1)).unwrap();
    stream.write_all(&header(hello.len())).await.unwrap();
    stream.write_all(&hello).await.unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut challenge = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut challenge).await.unwrap();
    assert!(matches!(
        proto::decode(challenge.into()).unwrap(),
        Handshake::Challenge { .. }
    ));
    stream.write_all(&header(big)).await.unwrap();
    read_until_closed(&mut stream).await;

    driver
        .await_status("both probes refused", |s| s.rejected_connections >= 2)
        .await;
    // The driver still serves holders of the secret.
    let mut client = Client::connect(&addr, &with_secret("the driver's shared secret"))
        .await
        .unwrap();
    client.status().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_secret_carries_a_job_and_refuses_plain_tcp() {
    let signed = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = signed.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(signed.key_pair.serialize_der().into());
    let driver = support::TestDriver::start_with(DriverConfig {
        secret: Some(secret("the driver's shared secret")),
        tls: Some(TlsServer::new(vec![cert.clone()], key).unwrap()),
        ..DriverConfig::default()
    })
    .await;
    let addr = driver.addr();
    let credentials = Credentials {
        secret: Some(secret("the driver's shared secret")),
        tls: Some(TlsClient::new(vec![cert]).unwrap()),
    };

    // Plain TCP, even with the right secret, does not get in.
    let plain = connect_error(&addr, &with_secret("the driver's shared secret")).await;
    assert!(plain.contains("TLS"), "{plain}");
    driver
        .await_status("the plain connection refused", |s| s.rejected_connections >= 1)
        .await;

    // Over TLS, executors train a whole (small) job.
    let executors: Vec<_> = (0..2)
        .map(|i| {
            support::start_executor_with(ExecutorConfig {
                driver: addr.clone(),
                cores: 1,
                name: format!("tls-{i}"),
                credentials: credentials.clone(),
                ..ExecutorConfig::default()
            })
        })
        .collect();
    let mut client = Client::connect(&addr, &credentials).await.unwrap();
    let job = client
        .submit(&support::small_job("tls", "async", 2), "tls.toml")
        .await
        .unwrap();
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, deepdist_core::job::JobState::Done, "{summary:?}");
    assert!(summary.final_accuracy.unwrap_or(0.0) > 0.8, "{summary:?}");
    drop(executors);
}

#[test]
fn the_cli_names_a_bad_secret_file_or_tls_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short-secret");
    std::fs::write(&short, "too short\n").unwrap();
    let short = short.to_str().unwrap();
    let out = support::deepdist(&["status", "--driver", "127.0.0.1:1", "--secret-file", short], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("short-secret") && err.contains("at least 16"), "{err}");

    let missing = dir.path().join("missing-ca.pem");
    let out = support::deepdist(
        &[
            "status",
            "--driver",
            "127.0.0.1:1",
            "--tls-ca",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing-ca.pem"), "{err}");
}

#[test]
fn a_secret_without_tls_beyond_loopback_is_refused_and_a_readable_secret_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "0123456789abcdef0123456789abcdef").unwrap();
    let path = file.to_str().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = support::deepdist(&["driver", "--listen", "0.0.0.0:0", "--secret-file", path], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("without TLS") && stderr.contains("--insecure-plaintext"),
        "{stderr}"
    );
    assert!(stderr.contains("readable by every user"), "{stderr}");
    // chmod 600, or 640 (a group share, as a Kubernetes Secret for the
    // pod's fsGroup): no warning.
    for mode in [0o600, 0o640] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = support::deepdist(&["driver", "--listen", "0.0.0.0:0", "--secret-file", path], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(!stderr.contains("readable by every user"), "{mode:o}: {stderr}");
    }
}

#[test]
fn no_secret_beyond_loopback_is_refused_unless_accepted_by_name() {
    let out = support::deepdist(
        &["driver", "--listen", "0.0.0.0:0", "--runs-dir", "/nonexistent/runs"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no shared secret") && stderr.contains("--insecure-plaintext"),
        "{stderr}"
    );
}

#[test]
fn http_beyond_loopback_with_a_secret_but_no_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "0123456789abcdef0123456789abcdef").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let runs = dir.path().join("runs");
    let out = support::deepdist(
        &[
            "driver",
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            file.to_str().unwrap(),
            "--http",
            "0.0.0.0:0",
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--http 0.0.0.0:0") && stderr.contains("without TLS"),
        "{stderr}"
    );
}
