//! Malformed and hostile input on the driver's port: each bad connection is
//! closed, and the driver keeps serving everyone else.

mod support;

use deepdist_common::proto::{self, MAGIC, Message, PROTOCOL_VERSION, Role};
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
    send_raw(&addr, &frame(&proto::encode(&Message::Status).unwrap()), false).await;

    // Wrong magic and wrong version get an explicit reject saying why.
    for (magic, version, want) in [
        (*b"HTTP", PROTOCOL_VERSION, "wrong magic".to_string()),
        (
            MAGIC,
            PROTOCOL_VERSION + 7,
            format!("peer speaks {}", PROTOCOL_VERSION + 7),
        ),
    ] {
        let hello = Message::Hello {
            magic,
            version,
            role: Role::Executor,
            name: "intruder".into(),
            cores: 1,
        };
        let reply = send_raw(&addr, &frame(&proto::encode(&hello).unwrap()), false).await;
        assert!(reply.len() > 4, "a reject frame came back");
        match proto::decode(&reply[4..]).unwrap() {
            Message::Reject { reason } => {
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
    let mut hello = frame(&proto::encode(&Message::hello(Role::Executor, "x", 1)).unwrap());
    hello.extend_from_slice(&frame(&[0xff; 16]));
    send_raw(&addr, &hello, false).await;

    let status = bystander.status().await.unwrap();
    assert!(status.rejected_connections >= 6, "{status:?}");
    assert!(status.executors.is_empty());
    // And a new client is served as usual.
    assert!(driver.client().await.status().await.is_ok());
}
