//! The wire protocol between driver, executors and clients.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes
//! (tokio-util's `LengthDelimitedCodec`, with an explicit maximum checked
//! before any buffer is grown): a postcard header and a raw bulk part
//! ([`frame`]). Each direction of each role has its own message type
//! ([`messages`]). The first frames each way are the [`Handshake`]: `Hello`
//! with magic, protocol version and role, answered by `Welcome` or an
//! explicit `Reject`.

pub mod auth;
mod frame;
mod messages;
mod payload;
mod wire;

use std::time::Duration;

/// Frames and bulk fields are shared bytes (a decoded tensor is a view of its frame).
pub use bytes::Bytes;
pub use frame::*;
pub use messages::*;
pub use payload::*;
pub use wire::*;

/// First bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"DDST";
/// Bumped on every incompatible change; peers must match exactly.
pub const PROTOCOL_VERSION: u32 = 13;
/// Default cap on one frame (a whole partition travels in one frame).
pub const DEFAULT_MAX_FRAME: usize = 256 << 20;
/// Cap on every frame until the handshake is done, so an unauthenticated
/// peer cannot make the driver allocate more than this.
pub const HANDSHAKE_MAX_FRAME: usize = 64 << 10;
/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed, or a frame was malformed at the framing level
    /// (including a length above the maximum).
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that does not decode as a message.
    #[error("undecodable frame of {len} bytes: {reason}")]
    Decode {
        /// Frame length.
        len: usize,
        /// What postcard said.
        reason: String,
    },
    /// A tensor in a frame does not hold the values expected.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// Compressed values in a frame that do not decode.
    #[error(transparent)]
    Values(#[from] deepdist_core::compress::DecodeError),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// Nothing arrived in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// The peer spoke, but not what this point of the protocol expects.
    #[error("unexpected message: expected {expected}, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// The message kind received.
        got: &'static str,
    },
    /// The handshake failed: wrong magic, version or role.
    #[error("handshake refused: {0}")]
    Rejected(String),
    /// The driver is at a connection limit: trying again later may succeed.
    #[error("the driver is busy ({reason}); try again in {retry_after:?}")]
    Busy {
        /// Which limit.
        reason: String,
        /// When trying again may succeed.
        retry_after: Duration,
    },
    /// The peer stopped reading, or held its task without progress past
    /// its lease: the connection is closed.
    #[error("the peer is stuck: not reading, or no progress on its task within the lease")]
    Stuck,
    /// The peer asked for more at once than a peer may (fetches waiting).
    #[error("the peer has more than {limit} {what} waiting")]
    Overrun {
        /// What it asked for.
        what: &'static str,
        /// How many may wait.
        limit: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn push(values: Tensor) -> FromExecutor {
        FromExecutor::Push(Push {
            task: TaskId {
                job: 1,
                stage: 0,
                epoch: 3,
                partition: 4,
                attempt: 1,
            },
            seq: 9,
            base_version: 12,
            batches: 4,
            samples: 512,
            loss_sum: 1.25,
            compression: deepdist_core::compress::Compression::None,
            values,
        })
    }

    #[test]
    fn messages_round_trip() {
        let msg = ToExecutor::Params {
            job: 3,
            stage: 0,
            version: 9,
            compression: deepdist_core::compress::Compression::None,
            values: Tensor::from_f32(&[1.5, -2.0]),
        };
        assert_eq!(decode::<ToExecutor>(encode(&msg).unwrap()).unwrap(), msg);
        assert_eq!(Tensor::from_f32(&[1.5, -2.0]).to_vec().unwrap(), vec![1.5, -2.0]);
        let part = ToExecutor::Partition {
            hash: 7,
            bytes: Bytes::from_static(&[1, 2, 3]),
        };
        assert_eq!(decode::<ToExecutor>(encode(&part).unwrap()).unwrap(), part);
        let status = FromClient::Status;
        assert_eq!(decode::<FromClient>(encode(&status).unwrap()).unwrap(), status);
    }

    #[test]
    fn tensors_can_be_appended_to_an_encoded_message() {
        let values: Vec<f32> = (0..300).map(|i| i as f32 - 7.5).collect();
        let params = ToExecutor::Params {
            job: 2,
            stage: 1,
            version: 700,
            compression: deepdist_core::compress::Compression::None,
            values: Tensor::default(),
        };
        let frame = encode_with_tensor(&params, &values).unwrap();
        let want = ToExecutor::Params {
            job: 2,
            stage: 1,
            version: 700,
            compression: deepdist_core::compress::Compression::None,
            values: Tensor::from_f32(&values),
        };
        assert_eq!(frame, encode(&want).unwrap());
        let FromExecutor::Push(p) = decode(encode_with_tensor(&push(Tensor::default()), &values).unwrap()).unwrap()
        else {
            panic!("not a push")
        };
        assert_eq!(p.values.to_vec().unwrap(), values);
        assert!(encode_with_tensor(&FromClient::Status, &values).is_err());
        assert!(
            encode_with_tensor(&want, &values).is_err(),
            "a filled bulk field is not replaced"
        );
    }

    #[test]
    fn tensors_start_four_bytes_aligned_whatever_the_header() {
        let values = [1.0f32, -2.5, 3.0];
        // Versions of every varint length give headers of every length mod 4.
        for version in [0, 200, 70_000, 1 << 30, u64::MAX] {
            let msg = ToExecutor::Params {
                job: 1,
                stage: 0,
                version,
                compression: deepdist_core::compress::Compression::None,
                values: Tensor::default(),
            };
            let frame = encode_with_tensor(&msg, &values).unwrap();
            let bulk = frame.len() - 4 * values.len();
            assert_eq!(bulk % 4, 0, "version {version}: tensor at byte {bulk}");
            assert!(frame[bulk - padding_of(&frame)..bulk].iter().all(|&b| b == 0));
            let ToExecutor::Params { values: got, .. } = decode(frame).unwrap() else {
                panic!("not params")
            };
            assert_eq!(got.to_vec().unwrap(), values);
        }
    }

    /// The zero bytes between a frame's header and its bulk part.
    fn padding_of(frame: &[u8]) -> usize {
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        (4 - (4 + len) % 4) % 4
    }

    #[test]
    fn frames_are_checked_on_decode() {
        let frame = encode(&push(Tensor::from_f32(&[1.0; 8]))).unwrap();
        // A header length beyond the frame.
        let mut long = frame.to_vec();
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode::<FromExecutor>(long.into()).is_err());
        // Bulk bytes after a kind that carries none.
        let mut extra = encode(&FromExecutor::Heartbeat).unwrap().to_vec();
        extra.extend_from_slice(&[0; 8]);
        let err = decode::<FromExecutor>(extra.into()).unwrap_err().to_string();
        assert!(err.contains("carries none"), "{err}");
        // A header longer than its message.
        let mut padded = encode(&FromClient::Status).unwrap().to_vec();
        padded[..4].copy_from_slice(&2u32.to_le_bytes());
        padded.push(0);
        assert!(decode::<FromClient>(padded.into()).is_err());
        // Another role's message does not decode as this role's.
        let submit = encode(&FromClient::Submit {
            spec: "x".repeat(40),
            origin: "o".into(),
        })
        .unwrap();
        assert!(decode::<FromExecutor>(submit).is_err());
    }

    #[test]
    fn job_specs_survive_the_wire() {
        let text = "name = \"d\"\n[model]\nkind = \"dbn\"\nhidden = [8]\n[pretrain]\nepochs = 2\n";
        for spec in [
            deepdist_core::job::JobSpec::from_toml(text, "d").unwrap(),
            deepdist_core::job::JobSpec::from_toml("name = \"m\"", "m").unwrap(),
            deepdist_core::job::JobSpec::from_toml(
                "name = \"c\"\n[data]\nformat = \"csv\"\npath = \"/d\"\nlabel_column = 2",
                "c",
            )
            .unwrap(),
            deepdist_core::job::JobSpec::from_toml(
                "name = \"c\"\n[data]\nformat = \"csv\"\npath = \"/d\"\nlabel_column = \"y\"\nshared = true",
                "c",
            )
            .unwrap(),
        ] {
            // TOML and postcard both carry it: the journal keeps TOML.
            assert_eq!(
                deepdist_core::job::JobSpec::from_toml(&spec.to_toml(), "again").unwrap(),
                spec
            );
            let msg = ToExecutor::Assign(Box::new(TaskSpec {
                id: TaskId {
                    job: 1,
                    stage: 0,
                    epoch: 1,
                    partition: 0,
                    attempt: 1,
                },
                partition_hash: 7,
                spec,
                peers: 2,
            }));
            assert_eq!(decode::<ToExecutor>(encode(&msg).unwrap()).unwrap(), msg);
        }
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode::<Handshake>(Bytes::from_static(&[0xff; 5])).is_err());
        assert!(decode::<Handshake>(Bytes::new()).is_err());
    }

    #[test]
    fn tensors_check_their_length() {
        let t = Tensor::from_f32(&[1.0, 2.0, 3.0]);
        assert!(t.read_into(&mut [0.0; 2]).is_err());
    }

    #[test]
    fn hello_checks_magic_and_version() {
        assert!(check_hello(&Handshake::hello(Role::Client, "c", 0)).is_ok());
        let wrong = Handshake::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION + 1,
            role: Role::Executor,
            name: "e".into(),
            cores: 1,
        };
        let err = check_hello(&wrong).unwrap_err().to_string();
        assert!(err.contains(&format!("peer speaks {}", PROTOCOL_VERSION + 1)), "{err}");
        assert!(err.contains(&format!("this driver speaks {PROTOCOL_VERSION}")), "{err}");
        let bad_magic = Handshake::Hello {
            magic: *b"HTTP",
            version: PROTOCOL_VERSION,
            role: Role::Executor,
            name: "e".into(),
            cores: 1,
        };
        assert!(check_hello(&bad_magic).is_err());
        assert!(check_hello(&Handshake::Reject { reason: "x".into() }).is_err());
    }

    #[tokio::test]
    async fn framing_rejects_oversized_and_truncated_frames() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = MessageReader::new(server, 1024);
        client.write_all(&0xFFFF_FFFFu32.to_be_bytes()).await.unwrap();
        assert!(matches!(reader.recv::<Handshake>().await, Err(ProtoError::Io(_))));

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = MessageReader::new(server, 1024);
        client.write_all(&100u32.to_be_bytes()).await.unwrap();
        client.write_all(&[1, 2, 3]).await.unwrap();
        drop(client);
        assert!(matches!(reader.recv::<Handshake>().await, Err(ProtoError::Io(_))));

        let (client, server) = tokio::io::duplex(1 << 16);
        let mut reader = MessageReader::new(server, 1024);
        drop(client);
        assert!(matches!(reader.recv::<Handshake>().await, Ok(None)));
    }

    type Ends = PipeEnd<tokio::io::Empty, tokio::io::Sink>;

    #[tokio::test]
    async fn a_pipe_hands_over_frames_whole_without_copying_the_tensor() {
        let ((_, mut executor), (mut driver, _)): (Ends, Ends) = pipe((1 << 20, 1 << 20));
        let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let frame = encode(&push(Tensor::from_f32(&values))).unwrap();
        let sent = frame.as_ptr_range();
        executor.send_frame(frame).await.unwrap();
        let Some(FromExecutor::Push(got)) = driver.recv::<FromExecutor>().await.unwrap() else {
            panic!("not a push");
        };
        let read = got.values.as_f32().expect("the tensor is aligned in its frame");
        assert_eq!(read, &values[..]);
        assert!(
            sent.contains(&(read.as_ptr() as *const u8)),
            "the received tensor is a view of the sent frame"
        );
    }

    #[tokio::test]
    async fn a_pipe_refuses_frames_above_either_cap_and_ends_cleanly() {
        let ((mut a_reader, mut a_writer), (mut b_reader, mut b_writer)): (Ends, Ends) = pipe((64, 1 << 20));
        let big = push(Tensor::from_f32(&[0.0; 64]));
        assert!(
            matches!(a_writer.send(&big).await, Err(ProtoError::Encode(_))),
            "the sender's cap"
        );
        b_writer.send(&big).await.unwrap();
        assert!(
            matches!(a_reader.recv::<FromExecutor>().await, Err(ProtoError::Io(_))),
            "the receiver's cap"
        );
        a_writer.close().await.unwrap();
        assert!(matches!(b_reader.recv::<FromExecutor>().await, Ok(None)));
        assert!(
            a_writer
                .send(&Handshake::Reject { reason: "late".into() })
                .await
                .is_err()
        );
        drop(b_writer);
        assert!(matches!(a_reader.recv::<Handshake>().await, Ok(None)));
    }
}
