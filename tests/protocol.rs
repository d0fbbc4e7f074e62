//! Malformed and hostile input on the driver's port: each bad connection is
//! closed, and the driver keeps serving everyone else.

mod support;

use deepdist_wire::proto::{self, FromClient, FromExecutor, Handshake, MAGIC, PROTOCOL_VERSION, Role, ToExecutor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and reads until the driver closes the connection.
async fn send_raw(addr: &str, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if close_write {
        stream.shutdown().await.unwrap();
    }
    let mut reply = Vec::new();
    let read = tokio::time::timeout(support::PATIENCE, stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "the driver closed the connection");
    reply
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_rejected_and_the_driver_keeps_serving() {
    let driver = support::TestDriver::start().await;
    let addr = driver.addr();
    // A client that stays connected throughout must be unaffected.
    let mut bystander = driver.client().await;

    // Oversized: a length prefix of 0xFFFFFFFF.
    send_raw(&addr, &[0xff, 0xff, 0xff, 0xff], false).await;
    // Truncated: a header promising 100 bytes, 3 bytes, then EOF.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1, 2, 3]);
    send_raw(&addr, &truncated, true).await;
    // Undecodable: a well-formed frame of garbage.
    send_raw(&addr, &frame(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff]), false).await;
    // Wrong type: a valid message that is not a Hello.
    send_raw(&addr, &frame(&proto::encode(&FromClient::Status).unwrap()), false).await;

    // Wrong magic and wrong version get an explicit reject saying why.
    for (magic, version, want) in [
        (*b"HTTP", PROTOCOL_VERSION, "wrong magic".to_string()),
        (
            MAGIC,
            PROTOCOL_VERSION + 7,
            format!("peer speaks {}", PROTOCOL_VERSION + 7),
        ),
    ] {
        let hello = Handshake::Hello {
            magic,
            version,
            role: Role::Executor,
            name: "intruder".into(),
            cores: 1,
        };
        let reply = send_raw(&addr, &frame(&proto::encode(&hello).unwrap()), false).await;
        assert!(reply.len() > 4, "a reject frame came back");
        match proto::decode(proto::Bytes::copy_from_slice(&reply[4..])).unwrap() {
            Handshake::Reject { reason } => {
                assert!(reason.contains(&want), "{reason}");
                if version != PROTOCOL_VERSION {
                    assert!(
                        reason.contains(&format!("this driver speaks {PROTOCOL_VERSION}")),
                        "{reason}"
                    );
                }
            }
            other => panic!("expected Reject, got {other:?}"),
        }
    }

    // Garbage after a valid handshake, from an executor, closes only that connection.
    let mut hello = frame(&proto::encode(&Handshake::hello(Role::Executor, "x", 1)).unwrap());
    hello.extend_from_slice(&frame(&[0xff; 16]));
    send_raw(&addr, &hello, false).await;

    let status = bystander.status().await.unwrap();
    assert!(status.rejected_connections >= 6, "{status:?}");
    assert!(status.executors.is_empty());
    // And a new client is served as usual.
    assert!(driver.client().await.status().await.is_ok());
}

/// The parameters of `support::small_job`'s MLP 784-32-10.
const SMALL_JOB_PARAMS: usize = 784 * 32 + 32 + 32 * 10 + 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_and_late_updates_are_discarded_and_counted() {
    use deepdist_wire::proto::{Push, Tensor};
    use deepdist_wire::transport::{self, Credentials};

    let driver = support::TestDriver::start().await;
    let addr = driver.addr();
    let mut client = driver.client().await;
    let job = client
        .submit(&support::small_job("replay", "async", 2), "replay.toml")
        .await
        .unwrap();
    // A hand-driven executor: takes the first task and replays its update.
    let hello = Handshake::hello(Role::Executor, "replayer", 1);
    let mut conn = transport::dial(&addr, &Credentials::default(), hello, proto::DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    // It heartbeats while it waits, as an executor does: the test driver
    // drops an executor silent for a second, and loading the job's data on a
    // busy machine can take longer than that.
    let waiting = tokio::time::Instant::now();
    let task = loop {
        assert!(waiting.elapsed() < support::PATIENCE, "no task assigned");
        let beat = std::time::Duration::from_millis(100);
        match tokio::time::timeout(beat, conn.reader.recv::<ToExecutor>()).await {
            Ok(Ok(Some(ToExecutor::Assign(task)))) => break task.id,
            Ok(Ok(Some(_))) => continue,
            Ok(other) => panic!("the driver closed the connection: {other:?}"),
            Err(_) => conn.writer.send(&FromExecutor::Heartbeat).await.unwrap(),
        }
    };
    let push = |task, seq| {
        FromExecutor::Push(Push {
            task,
            seq,
            base_version: 0,
            batches: 1,
            samples: 1,
            loss_sum: 0.0,
            compression: deepdist_core::compress::Compression::None,
            values: Tensor::from_f32(&vec![0.0; SMALL_JOB_PARAMS]),
        })
    };
    conn.writer.send(&push(task, 1)).await.unwrap();
    conn.writer.send(&push(task, 1)).await.unwrap(); // a retry of the same update
    let mut old_attempt = task;
    old_attempt.attempt += 1; // an attempt this executor does not hold
    conn.writer.send(&push(old_attempt, 2)).await.unwrap();
    driver
        .await_status("one repeated and one late update discarded", |s| {
            s.duplicate_updates_discarded == 1 && s.late_updates_discarded == 1
        })
        .await;
    let status = driver.status();
    assert_eq!((status.updates_received, status.updates_accepted), (3, 1), "{status:?}");

    // The job still completes with real executors once the replayer leaves.
    drop(conn);
    let _a = support::start_executor(&addr, "a");
    let summary = support::watch(&mut client, job, |_| {}).await;
    assert_eq!(summary.state, deepdist_core::job::JobState::Done, "{summary:?}");
    assert!(summary.final_accuracy.unwrap_or(0.0) > 0.8, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_inside_a_frame_is_dropped() {
    // The test driver declares an executor lost after 1 s of silence.
    let driver = support::TestDriver::start().await;
    let mut stream = TcpStream::connect(driver.addr()).await.unwrap();
    stream
        .write_all(&frame(
            &proto::encode(&Handshake::hello(Role::Executor, "slowloris", 1)).unwrap(),
        ))
        .await
        .unwrap();
    // A header promising 100 bytes, 10 of them, then nothing: a frame that
    // never completes must not hold the connection open.
    stream.write_all(&100u32.to_be_bytes()).await.unwrap();
    stream.write_all(&[0; 10]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(support::PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the driver kept a stalled connection open");
    driver
        .await_status("the stalled executor to be dropped", |s| {
            s.executors_lost >= 1 && s.executors.is_empty()
        })
        .await;
}
