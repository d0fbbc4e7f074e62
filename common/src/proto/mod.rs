//! The wire protocol between driver, executors and clients.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes of a
//! postcard-encoded [`Message`] (tokio-util's `LengthDelimitedCodec`, with an
//! explicit maximum checked before any buffer is grown). Tensors travel as raw
//! little-endian `f32` bytes. The first frame each way is the handshake:
//! [`Message::Hello`] with magic, protocol version and role, answered by
//! [`Message::Welcome`] or an explicit [`Message::Reject`].

pub mod auth;
mod payload;
mod wire;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use payload::*;
pub use wire::*;

/// First bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"DDST";
/// Bumped on every incompatible change; peers must match exactly.
pub const PROTOCOL_VERSION: u32 = 4;
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

/// Who is connecting to the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Computes gradients.
    Executor,
    /// Submits jobs and asks for status.
    Client,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Handshake, first frame from the connecting side.
    Hello {
        /// Must be [`MAGIC`].
        magic: [u8; 4],
        /// Must equal [`PROTOCOL_VERSION`].
        version: u32,
        /// Executor or client.
        role: Role,
        /// A name for logs and status.
        name: String,
        /// Cores an executor computes with (0 for clients).
        cores: u32,
    },
    /// Handshake accepted.
    Welcome {
        /// The id given to this executor (0 for clients).
        id: u64,
        /// How often the driver expects a heartbeat, in milliseconds.
        heartbeat_ms: u64,
    },
    /// Handshake or request refused, with the reason.
    Reject {
        /// Why.
        reason: String,
    },
    /// Liveness, both ways.
    Heartbeat,
    /// Driver → executor: run this task.
    Assign(TaskSpec),
    /// Driver → executor: a partition's encoded bytes.
    Partition {
        /// Its content hash.
        hash: u128,
        /// The encoding of [`crate::data::Partition`].
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Driver → executor: parameters.
    Params {
        /// The job.
        job: u64,
        /// The stage.
        stage: u32,
        /// Their version (updates applied).
        version: u64,
        /// The values.
        values: Tensor,
    },
    /// Driver → executor: the trained RBMs below a pre-training stage, which
    /// executors pass their partitions through to get the stage's input.
    Frozen {
        /// The job.
        job: u64,
        /// The stage these layers feed.
        stage: u32,
        /// Parameters of RBM 0, 1, … in order.
        layers: Vec<Tensor>,
    },
    /// Driver → executor: abandon the tasks of this job.
    CancelTasks {
        /// The job.
        job: u64,
    },
    /// Executor → driver: send me this partition.
    NeedPartition {
        /// Its content hash.
        hash: u128,
    },
    /// Executor → driver: send the parameters.
    Fetch {
        /// The job.
        job: u64,
        /// The stage.
        stage: u32,
        /// What the answer waits for, by mode: a version (`sync`, `average`
        /// wait for the next step), the sender's clock (`ssp`); 0 is now.
        wait_for: u64,
    },
    /// Executor → driver: an update.
    Push(Push),
    /// Executor → driver: a task completed.
    TaskDone(TaskReport),
    /// Executor → driver: a task could not run.
    TaskFailed {
        /// The task.
        task: TaskId,
        /// Why.
        reason: String,
        /// Training diverged: retrying elsewhere cannot help.
        diverged: bool,
    },
    /// Client → driver: queue this job (TOML text).
    Submit {
        /// The job file's text.
        spec: String,
        /// Where it came from, for error messages.
        origin: String,
    },
    /// Driver → client: the job was queued.
    Submitted {
        /// Its id.
        job: u64,
    },
    /// Client → driver: describe executors and jobs.
    Status,
    /// Driver → client: the description.
    StatusReport(StatusReport),
    /// Client → driver: cancel a job.
    Cancel {
        /// The job.
        job: u64,
    },
    /// Driver → client: the job is (being) cancelled.
    Cancelled {
        /// The job.
        job: u64,
    },
    /// Client → driver: stream this job's progress until it ends.
    Watch {
        /// The job.
        job: u64,
    },
    /// Driver → client: progress.
    Progress(Progress),
    /// Driver → client: the job ended.
    JobEnded(JobSummary),
    /// Driver → peer, after `Hello` when the driver has a shared secret:
    /// prove you hold it (see [`auth`]).
    Challenge {
        /// The driver's fresh nonce.
        nonce: auth::Nonce,
    },
    /// Peer → driver: the proof.
    Answer {
        /// The peer's fresh nonce.
        nonce: auth::Nonce,
        /// HMAC of both nonces under the shared secret.
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// Driver → peer: the driver's own proof, before `Welcome`.
    Proof {
        /// HMAC of both nonces under the shared secret.
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
}

impl Message {
    /// The message's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Reject { .. } => "Reject",
            Message::Heartbeat => "Heartbeat",
            Message::Assign(_) => "Assign",
            Message::Partition { .. } => "Partition",
            Message::Params { .. } => "Params",
            Message::Frozen { .. } => "Frozen",
            Message::CancelTasks { .. } => "CancelTasks",
            Message::NeedPartition { .. } => "NeedPartition",
            Message::Fetch { .. } => "Fetch",
            Message::Push(_) => "Push",
            Message::TaskDone(_) => "TaskDone",
            Message::TaskFailed { .. } => "TaskFailed",
            Message::Submit { .. } => "Submit",
            Message::Submitted { .. } => "Submitted",
            Message::Status => "Status",
            Message::StatusReport(_) => "StatusReport",
            Message::Cancel { .. } => "Cancel",
            Message::Cancelled { .. } => "Cancelled",
            Message::Watch { .. } => "Watch",
            Message::Progress(_) => "Progress",
            Message::JobEnded(_) => "JobEnded",
            Message::Challenge { .. } => "Challenge",
            Message::Answer { .. } => "Answer",
            Message::Proof { .. } => "Proof",
        }
    }

    /// A `Hello` from this build.
    pub fn hello(role: Role, name: impl Into<String>, cores: u32) -> Self {
        Message::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            role,
            name: name.into(),
            cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msg = Message::Params {
            job: 3,
            stage: 0,
            version: 9,
            values: Tensor::from_f32(&[1.5, -2.0]),
        };
        assert_eq!(decode(&encode(&msg).unwrap()).unwrap(), msg);
        assert_eq!(Tensor::from_f32(&[1.5, -2.0]).to_vec().unwrap(), vec![1.5, -2.0]);
    }

    #[test]
    fn tensors_can_be_appended_to_an_encoded_message() {
        let values: Vec<f32> = (0..300).map(|i| i as f32 - 7.5).collect();
        let params = Message::Params {
            job: 2,
            stage: 1,
            version: 700,
            values: Tensor::default(),
        };
        let frame = encode_with_tensor(&params, &values).unwrap();
        let want = Message::Params {
            job: 2,
            stage: 1,
            version: 700,
            values: Tensor::from_f32(&values),
        };
        assert_eq!(frame, encode(&want).unwrap());
        let push = Message::Push(Push {
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
            values: Tensor::default(),
        });
        let Message::Push(p) = decode(&encode_with_tensor(&push, &values).unwrap()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(p.values.to_vec().unwrap(), values);
        assert!(encode_with_tensor(&Message::Status, &values).is_err());
    }

    #[test]
    fn job_specs_survive_the_wire() {
        let text = "name = \"d\"\n[model]\nkind = \"dbn\"\nhidden = [8]\n[pretrain]\nepochs = 2\n";
        for spec in [
            crate::job::JobSpec::from_toml(text, "d").unwrap(),
            crate::job::JobSpec::from_toml("name = \"m\"", "m").unwrap(),
        ] {
            let msg = Message::Assign(TaskSpec {
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
            });
            assert_eq!(decode(&encode(&msg).unwrap()).unwrap(), msg);
        }
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn tensors_check_their_length() {
        let t = Tensor::from_f32(&[1.0, 2.0, 3.0]);
        assert!(t.read_into(&mut [0.0; 2]).is_err());
    }

    #[test]
    fn hello_checks_magic_and_version() {
        assert!(check_hello(&Message::hello(Role::Client, "c", 0)).is_ok());
        let wrong = Message::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION + 1,
            role: Role::Executor,
            name: "e".into(),
            cores: 1,
        };
        let err = check_hello(&wrong).unwrap_err().to_string();
        assert!(err.contains(&format!("peer speaks {}", PROTOCOL_VERSION + 1)), "{err}");
        assert!(err.contains(&format!("this driver speaks {PROTOCOL_VERSION}")), "{err}");
        let bad_magic = Message::Hello {
            magic: *b"HTTP",
            version: PROTOCOL_VERSION,
            role: Role::Executor,
            name: "e".into(),
            cores: 1,
        };
        assert!(check_hello(&bad_magic).is_err());
        assert!(check_hello(&Message::Status).is_err());
    }

    #[tokio::test]
    async fn framing_rejects_oversized_and_truncated_frames() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = MessageReader::new(server, 1024);
        client.write_all(&0xFFFF_FFFFu32.to_be_bytes()).await.unwrap();
        assert!(matches!(reader.recv().await, Err(ProtoError::Io(_))));

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = MessageReader::new(server, 1024);
        client.write_all(&100u32.to_be_bytes()).await.unwrap();
        client.write_all(&[1, 2, 3]).await.unwrap();
        drop(client);
        assert!(matches!(reader.recv().await, Err(ProtoError::Io(_))));

        let (client, server) = tokio::io::duplex(1 << 16);
        let mut reader = MessageReader::new(server, 1024);
        drop(client);
        assert!(matches!(reader.recv().await, Ok(None)));
    }
}
