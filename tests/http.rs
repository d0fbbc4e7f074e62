//! The driver's HTTP side over real TCP: the status and job metrics as
//! JSON, `/metrics` checked by Prometheus's own `promtool`, counters that
//! move as a job trains, and who may read and cancel.

mod support;

use std::time::Duration;

use deepdist_core::job::JobState;
use deepdist_driver::DriverConfig;
use deepdist_wire::client::Client;
use deepdist_wire::proto::auth::Secret;
use deepdist_wire::transport::Credentials;
use support::{TestDriver, small_job};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request; (status code, body).
async fn request(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let port = addr.port();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, dechunk(&body))
}

/// The body of a chunked response, or the body as it is.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    if out.is_empty() { body.to_string() } else { out }
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}")) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_and_prometheus_over_http() {
    let mut driver = TestDriver::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = driver.driver.serve_http(listener).unwrap();
    let (code, before) = request(http, "GET", "/metrics", None).await;
    assert_eq!(code, 200, "{before}");
    assert_eq!(counter(&before, "deepdist_updates_applied_total"), 0);

    let _a = support::start_executor(&driver.addr(), "a");
    let _b = support::start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    let job = client.submit(&small_job("web", "async", 2), "web.toml").await.unwrap();
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");

    let (code, after) = request(http, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    let applied = counter(&after, "deepdist_updates_applied_total");
    assert!(applied > 0, "{after}");
    assert_eq!(counter(&after, "deepdist_updates_received_total"), applied);
    assert_eq!(counter(&after, "deepdist_update_staleness_count"), applied, "{after}");
    assert!(after.contains("deepdist_jobs{state=\"done\"} 1"), "{after}");
    assert_eq!(counter(&after, "deepdist_push_duration_seconds_count"), applied);
    assert_eq!(counter(&after, "deepdist_tasks_reassigned_total"), 0);
    assert!(counter(&after, "deepdist_fetch_duration_seconds_count") > 0, "{after}");
    assert_eq!(
        counter(&after, "deepdist_evaluation_duration_seconds_count"),
        2,
        "an evaluation per epoch"
    );
    // Every update crossed the wire: at least its values' bytes came in.
    let params = (784 * 32 + 32 + 32 * 10 + 10) as u64 * 4;
    assert!(
        counter(&after, "deepdist_executor_received_bytes_total") >= applied * params,
        "{after}"
    );
    assert!(
        counter(&after, "deepdist_executor_sent_bytes_total") > counter(&before, "deepdist_executor_sent_bytes_total")
    );
    check_with_promtool(&after);

    let (code, status) = request(http, "GET", "/api/status", None).await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let executors = status["executors"].as_array().unwrap();
    assert_eq!(executors.len(), 2, "{status}");
    let seen: u64 = executors
        .iter()
        .map(|e| {
            e["staleness"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(
        seen, applied,
        "every applied update is in some executor's staleness histogram"
    );
    assert_eq!(status["jobs"][0]["state"], "done");

    let (code, metrics) = request(http, "GET", &format!("/api/jobs/{job}/metrics"), None).await;
    assert_eq!(code, 200);
    let lines: Vec<serde_json::Value> = serde_json::from_str(&metrics).unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[1]["test_accuracy"].as_f64().unwrap() > 0.5, "{metrics}");
    assert_eq!(request(http, "GET", "/api/jobs/99/metrics", None).await.0, 404);
    // A finished job cannot be cancelled; the refusal says so.
    let (code, body) = request(http, "POST", &format!("/api/jobs/{job}/cancel"), None).await;
    assert_eq!(code, 409, "{body}");
}

/// `promtool check metrics` reads the scrape from stdin; under `CI=true` it must be there.
fn check_with_promtool(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        support::cannot_run(
            "promtool check metrics",
            "promtool is not installed (Debian package prometheus)",
        );
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_every_request_needs_the_secret() {
    // Without a secret the driver refuses to serve beyond loopback.
    let mut open = TestDriver::start().await;
    let wide = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = open.driver.serve_http(wide).unwrap_err().to_string();
    assert!(err.contains("no shared secret"), "{err}");

    let secret_text = "the driver's shared secret";
    let secret = Secret::new(secret_text.as_bytes(), "test").unwrap();
    let mut driver = TestDriver::start_with(DriverConfig {
        secret: Some(secret.clone()),
        ..DriverConfig::default()
    })
    .await;
    let wide = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let http = driver.driver.serve_http(wide).unwrap();
    assert_eq!(request(http, "GET", "/api/status", None).await.0, 401);
    assert_eq!(request(http, "GET", "/metrics", Some("a wrong secret!!")).await.0, 401);
    assert_eq!(request(http, "GET", "/api/status", Some(secret_text)).await.0, 200);

    let credentials = Credentials {
        secret: Some(secret),
        ..Credentials::default()
    };
    let mut client = Client::connect(&driver.addr(), &credentials).await.unwrap();
    let job = client.submit(&small_job("queued", "async", 2), "q.toml").await.unwrap();
    let path = format!("/api/jobs/{job}/cancel");
    assert_eq!(
        request(http, "POST", &path, None).await.0,
        401,
        "an unauthenticated cancel"
    );
    assert_eq!(
        driver.status().jobs[0].state,
        JobState::Running,
        "still there, waiting for executors"
    );
    let (code, body) = request(http, "POST", &path, Some(secret_text)).await;
    assert_eq!(code, 200, "{body}");
    let summary = tokio::time::timeout(Duration::from_secs(60), client.watch(job, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.state, JobState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_shard_shows_in_status_metrics_and_the_cli() {
    let mut driver = TestDriver::start_with(deepdist_driver::DriverConfig {
        server_shards: 3,
        ..Default::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = driver.driver.serve_http(listener).unwrap();
    let _a = support::start_executor(&driver.addr(), "a");
    let _b = support::start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    // Long enough to be watched running; cancelled once seen.
    let job = client
        .submit(
            &small_job("shards", "async", 200).replace("target_accuracy = 0.8\n", ""),
            "shards.toml",
        )
        .await
        .unwrap();
    let status = driver
        .await_status("three shards applying updates and answering fetches", |s| {
            s.server_shards.len() == 3 && s.server_shards.iter().all(|h| h.updates > 0 && h.bytes_fetched > 0)
        })
        .await;
    let params = (784 * 32 + 32 + 32 * 10 + 10) as u64;
    assert_eq!(status.server_shards.iter().map(|h| h.values).sum::<u64>(), params);
    for h in &status.server_shards {
        assert!(h.bytes_pushed >= 4 * h.values, "{h:?}");
    }

    let (code, metrics) = request(http, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    for shard in 0..3 {
        let updates = counter(&metrics, &format!("deepdist_shard_updates_total{{shard=\"{shard}\"}}"));
        assert!(updates > 0, "{metrics}");
    }
    check_with_promtool(&metrics);
    let addr = driver.addr();
    let cli = tokio::task::spawn_blocking(move || support::deepdist(&["status", "--driver", &addr], &[]))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(text.contains("parameter-server shards (3):"), "{text}");
    client.cancel(job).await.unwrap();
}

/// The page in a real headless browser (Debian's chromium): after a job,
/// its accuracy curve has a point per epoch and the executor table a row
/// per executor; a screenshot goes to the test's output directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_job_and_its_executors_in_a_browser() {
    let Some(browser) = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        support::cannot_run(
            "the status page in a browser",
            "chromium is not installed (Debian package chromium)",
        );
        return;
    };
    let mut driver = TestDriver::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = driver.driver.serve_http(listener).unwrap();
    let _a = support::start_executor(&driver.addr(), "a");
    let _b = support::start_executor(&driver.addr(), "b");
    let mut client = driver.client().await;
    let job = client
        .submit(&small_job("page", "async", 3), "page.toml")
        .await
        .unwrap();
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");

    let url = format!("http://{http}/");
    let headless = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=5000",
    ];
    let dom = tokio::process::Command::new(browser)
        .args(headless)
        .args(["--dump-dom", &url])
        .output()
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let points = dom
        .split("id=\"accuracy\"")
        .nth(1)
        .and_then(|s| s.split("points=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .map_or(0, |p| p.split_whitespace().count());
    assert_eq!(points, 3, "an accuracy point per epoch:\n{dom}");
    assert_eq!(dom.matches("class=\"executor\"").count(), 2, "{dom}");
    assert!(dom.contains("id=\"shards\""), "the shards' table: {dom}");
    assert!(dom.contains("page") && dom.contains("done"), "the job's row: {dom}");
    assert!(dom.contains("model: mlp, input 784"), "the job's network: {dom}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let out = tokio::process::Command::new(browser)
        .args(headless)
        .args([
            "--window-size=1000,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .await
        .unwrap();
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A driver with a TLS certificate serves HTTPS only, with that certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_http_side_is_https() {
    use deepdist_wire::transport::{self, TlsClient, TlsServer};
    let signed = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = signed.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(signed.key_pair.serialize_der().into());
    let mut driver = TestDriver::start_with(DriverConfig {
        tls: Some(TlsServer::new(vec![cert.clone()], key).unwrap()),
        ..DriverConfig::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = driver.driver.serve_http(listener).unwrap();
    // Plain HTTP gets no HTTP answer.
    assert_eq!(request(http, "GET", "/api/status", None).await.0, 0);
    let ca = TlsClient::new(vec![cert]).unwrap();
    let (mut read, mut write) = transport::connect(&http.to_string(), Some(&ca)).await.unwrap();
    write
        .write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = read.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"executors\""), "{text}");
}

/// A real Prometheus server (Debian's `prometheus`) scrapes the driver while
/// a job trains: the target is up and the scraped counter is the driver's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_scrapes_the_driver() {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        support::cannot_run(
            "a Prometheus scrape",
            "prometheus is not installed (Debian package prometheus)",
        );
        return;
    }
    let mut driver = TestDriver::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = driver.driver.serve_http(listener).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: deepdist\n    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    // A free port for Prometheus's own API.
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={api}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let _a = support::start_executor(&driver.addr(), "a");
    let mut client = driver.client().await;
    let job = client
        .submit(&small_job("scraped", "async", 2), "s.toml")
        .await
        .unwrap();
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    let applied = driver.status().updates_accepted;

    // Wait (bounded) for a scrape after the job: Prometheus's value equals the driver's.
    let query = "/api/v1/query?query=deepdist_updates_applied_total";
    let start = std::time::Instant::now();
    let seen = loop {
        let (code, body) = request(api, "GET", query, None).await;
        let value = (code == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
            });
        if value == Some(applied) {
            break value;
        }
        assert!(
            start.elapsed() < support::PATIENCE,
            "Prometheus never scraped {applied}: last {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(seen, Some(applied));
    let (_, targets) = request(api, "GET", "/api/v1/targets", None).await;
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
    let _ = server.kill().await;
}
