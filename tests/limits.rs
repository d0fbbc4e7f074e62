//! Jobs that cannot fit, tasks that cannot run, executors that stop working
//! but keep heartbeating: refused, failed with the reason, or routed around,
//! while the driver and its executors go on serving.

mod support;

use std::time::Duration;

use deepdist_core::job::{JobSpec, JobState};
use deepdist_driver::DriverConfig;
use deepdist_executor::ExecutorConfig;
use deepdist_wire::client::ClientError;
use deepdist_wire::proto::{self, FromExecutor, Handshake, Role, ToExecutor};
use deepdist_wire::transport::{self, Credentials};
use support::{TestDriver, small_job, start_executor_with, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_too_large_for_the_driver_is_refused_at_submit_and_the_driver_goes_on() {
    let driver = TestDriver::start().await;
    let mut client = driver.client().await;
    // 4.3 billion parameters: 17 GB per copy, and far above one frame.
    let huge = small_job("huge", "async", 1).replace("hidden = [32]", "hidden = [65536, 65536]");
    match client.submit(&huge, "huge.toml").await {
        Err(ClientError::Refused(reason)) => {
            assert!(reason.contains("model.hidden"), "{reason}");
            assert!(reason.contains("parameters"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(driver.status().jobs.is_empty(), "nothing was queued");

    let _executor = support::start_executor(&driver.addr(), "e1");
    let job = client
        .submit(&small_job("after", "async", 1), "after.toml")
        .await
        .unwrap();
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_executor_can_take_fails_its_job_and_the_next_job_runs() {
    let driver = TestDriver::start().await;
    // Room for the 25k parameters of `hidden = [32]`, not the 400k of [500].
    let (_executor, _) = start_executor_with(ExecutorConfig {
        driver: driver.addr(),
        cores: 1,
        name: "small".into(),
        max_model_bytes: 200_000,
        ..ExecutorConfig::default()
    });
    let mut client = driver.client().await;
    let big = small_job("big", "async", 1).replace("hidden = [32]", "hidden = [500]");
    let job = client.submit(&big, "big.toml").await.unwrap();
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Failed, "{summary:?}");
    let error = summary.error.unwrap_or_default();
    assert!(error.contains("failed 4 times"), "{error}");
    assert!(error.contains("--max-model-mb"), "{error}");

    // The executor holds no task of the failed job: it takes the next one.
    let job = client
        .submit(&small_job("next", "async", 1), "next.toml")
        .await
        .unwrap();
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_heartbeats_but_never_reads_loses_its_task_to_the_lease() {
    let driver = TestDriver::start_with(DriverConfig {
        task_lease: Duration::from_secs(2),
        ..DriverConfig::default()
    })
    .await;
    // Registers, then only heartbeats: it never reads its task.
    let hello = Handshake::hello(Role::Executor, "wedged", 1);
    let wedged = transport::dial(&driver.addr(), &Credentials::default(), hello, proto::DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    let (_unread, mut writer) = (wedged.reader, wedged.writer);
    let heartbeats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if writer.send(&FromExecutor::Heartbeat).await.is_err() {
                return;
            }
        }
    });
    driver
        .await_status("the wedged executor registered", |s| s.executors.len() == 1)
        .await;
    let mut client = driver.client().await;
    let job = client
        .submit(&small_job("lease", "async", 1), "lease.toml")
        .await
        .unwrap();
    // It holds a task before anyone else can.
    driver
        .await_status("a task given to the wedged executor", |s| {
            s.executors.iter().any(|e| e.name == "wedged" && e.task.is_some())
        })
        .await;
    let _healthy = support::start_executor(&driver.addr(), "healthy");
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    let status = driver.status();
    assert!(status.leases_expired >= 1, "{status:?}");
    assert!(
        status.executors.iter().all(|e| e.name != "wedged"),
        "disconnected: {status:?}"
    );
    heartbeats.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_checkpoint_stops_the_job_and_the_model_is_kept() {
    let scenario = "disk full under the driver's checkpoint";
    let disk = match support::sandbox::SmallDisk::create(16 << 20) {
        Ok(disk) => disk,
        Err(why) => return support::cannot_run(scenario, &why),
    };
    disk.fill("filler");
    let driver = TestDriver::start_with(DriverConfig {
        checkpoint_dir: Some(disk.path().to_path_buf()),
        ..DriverConfig::default()
    })
    .await;
    let _executor = support::start_executor(&driver.addr(), "e1");
    let mut client = driver.client().await;
    let job = client
        .submit(&small_job("full", "async", 6), "full.toml")
        .await
        .unwrap();
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Failed, "{summary:?}");
    let error = summary.error.clone().unwrap_or_default();
    assert!(
        error.contains("checkpoint") && error.contains("No space left"),
        "{error}"
    );
    assert!(
        summary.epochs < 6,
        "stopped at the first checkpoint, not at the end: {summary:?}"
    );
    // What it trained is saved, and says how the job ended.
    let model = std::path::Path::new(&summary.output_dir).join("model.safetensors");
    let spec = JobSpec::from_toml(&small_job("full", "async", 6), "full.toml").unwrap();
    let layout = spec.final_network(784, 10).unwrap().layout().clone();
    let (_, metadata) = deepdist_core::checkpoint::load_model(&model, &layout).unwrap();
    let state = metadata.get("deepdist.state").cloned().unwrap_or_default();
    assert!(state.starts_with("failed after epoch"), "{state}");
    assert!(state.contains("No space left"), "{state}");

    // With room again, the same driver runs the next job to the end.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let job = client
        .submit(&small_job("room", "async", 1), "room.toml")
        .await
        .unwrap();
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_while_a_job_trains_does_not_keep_executors_or_clients_out() {
    let driver = TestDriver::start().await;
    let addr: std::net::SocketAddr = driver.addr().parse().unwrap();
    // A job long enough to be training throughout the flood.
    let _first = support::start_executor(&driver.addr(), "first");
    let mut client = driver.client().await;
    let job = client
        .submit(&small_job("flood", "async", 120), "flood.toml")
        .await
        .unwrap();
    driver
        .await_status("the job training", |s| {
            s.jobs.iter().any(|j| j.id == job && j.epochs_done >= 1)
        })
        .await;
    // 2,000 connections from another loopback address: half connect and
    // stay silent in the handshake, half connect and leave at once.
    let flooder: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut silent = Vec::new();
    for i in 0..2000 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((flooder, 0).into()).unwrap();
        // A plain (non-blocking) socket, so that a read below asks the kernel.
        let stream = match socket.connect(addr).await {
            Ok(stream) => stream.into_std().unwrap(),
            Err(e) => panic!("cannot open flood connection {i}: {e} (is `ulimit -n` above 2,100?)"),
        };
        if i % 2 == 0 {
            silent.push(stream);
        }
    }
    let during = driver.status();
    let training = during.jobs.iter().find(|j| j.id == job).map(|j| j.state);
    assert_eq!(
        training,
        Some(JobState::Running),
        "the flood ended before the job: {during:?}"
    );
    // A client that sends a 2 MiB frame after its handshake is cut off...
    let mut greedy = driver.client().await;
    let huge = "#".repeat(2 << 20);
    assert!(
        greedy.submit(&huge, "huge.toml").await.is_err(),
        "an oversized client frame"
    );
    // ...while an executor from elsewhere joins the running job, and the job completes.
    let _late = support::start_executor(&driver.addr(), "late");
    driver
        .await_status("the late executor registered", |s| {
            s.executors.iter().any(|e| e.name == "late")
        })
        .await;
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    // The driver refused most of the flood rather than holding it: the
    // silent connections it admitted are still in their handshake (open),
    // the others were closed at once.
    let mut open = 0;
    let mut buf = [0u8; 1];
    for mut stream in &silent {
        match std::io::Read::read(&mut stream, &mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    let cap = deepdist_driver::MAX_HANDSHAKES_PER_ADDRESS as usize;
    assert!(
        open <= cap && open < silent.len() / 2,
        "{open} of {} silent connections are held",
        silent.len()
    );
    assert!(driver.status().rejected_connections >= 800, "{:?}", driver.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_piling_up_fetches_is_cut_off_and_the_job_goes_on() {
    let driver = TestDriver::start().await;
    let hello = Handshake::hello(Role::Executor, "greedy", 1);
    let mut greedy = transport::dial(&driver.addr(), &Credentials::default(), hello, proto::DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    // It heartbeats from the start, so only the fetch cap can end it (the
    // driver drops an executor silent for a second, and a loaded machine can
    // take that long to assign the first task).
    let writer = std::sync::Arc::new(tokio::sync::Mutex::new(greedy.writer));
    let heartbeats = tokio::spawn({
        let writer = writer.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if writer.lock().await.send(&FromExecutor::Heartbeat).await.is_err() {
                    return;
                }
            }
        }
    });
    driver
        .await_status("the greedy executor registered", |s| s.executors.len() == 1)
        .await;
    let mut client = driver.client().await;
    // Sync: a fetch waiting for a version no round reaches stays waiting.
    let job = client.submit(&small_job("greedy", "sync", 1), "g.toml").await.unwrap();
    let task = loop {
        match greedy.reader.recv().await.unwrap() {
            Some(ToExecutor::Assign(spec)) => break spec.id,
            Some(_) => continue,
            None => panic!("closed before a task"),
        }
    };
    for _ in 0..40 {
        let fetch = FromExecutor::Fetch {
            job: task.job,
            stage: task.stage,
            wait_for: u64::MAX,
            newer_than: None,
        };
        if writer.lock().await.send(&fetch).await.is_err() {
            break;
        }
    }
    // The driver closes the connection and reading ends.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match greedy.reader.recv::<ToExecutor>().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the greedy executor was not cut off");
    heartbeats.abort();
    let _healthy = support::start_executor(&driver.addr(), "healthy");
    let summary = watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, JobState::Done, "{summary:?}");
    assert!(driver.status().executors.iter().all(|e| e.name != "greedy"));
}

/// Silent connections from the client's own address fill the driver's
/// handshake slots for that address: the client is told the driver is busy,
/// tries again, and gets in once the handshake deadline frees the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooded_out_from_its_own_address_is_told_busy_and_gets_in_by_retrying() {
    let driver = TestDriver::start().await;
    let addr: std::net::SocketAddr = driver.addr().parse().unwrap();
    let mut silent = Vec::new();
    for i in 0..1500 {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => silent.push(stream),
            Err(e) => panic!("cannot open flood connection {i}: {e} (is `ulimit -n` above 3,100?)"),
        }
    }
    // A raw peer past the cap reads why it is refused, in place of a handshake.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut reader = proto::MessageReader::new(stream, proto::HANDSHAKE_MAX_FRAME);
    match reader.recv::<Handshake>().await {
        Ok(Some(Handshake::Busy { reason, retry_after_ms })) => {
            assert!(reason.contains("handshakes"), "{reason}");
            assert!(retry_after_ms > 0);
        }
        other => panic!("expected a busy reply, got {other:?}"),
    }
    let status =
        tokio::task::spawn_blocking(move || support::deepdist(&["status", "--driver", &addr.to_string()], &[]))
            .await
            .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr),
    );
    assert!(status.status.success(), "status failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("busy"), "the client was never refused:\n{stderr}");
    assert!(stdout.contains("executors (0)"), "{stdout}");
    drop(silent);
}
