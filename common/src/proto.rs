//! The wire protocol between driver, executors and clients.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes of a
//! postcard-encoded [`Message`] (tokio-util's `LengthDelimitedCodec`, with an
//! explicit maximum checked before any buffer is grown). Tensors travel as raw
//! little-endian `f32` bytes. The first frame each way is the handshake:
//! [`Message::Hello`] with magic, protocol version and role, answered by
//! [`Message::Welcome`] or an explicit [`Message::Reject`].

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::job::{JobSpec, JobState};

/// First bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"DDST";
/// Bumped on every incompatible change; peers must match exactly.
pub const PROTOCOL_VERSION: u32 = 1;
/// Default cap on one frame (a whole partition travels in one frame).
pub const DEFAULT_MAX_FRAME: usize = 256 << 20;
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
}

/// Who is connecting to the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Computes gradients.
    Executor,
    /// Submits jobs and asks for status.
    Client,
}

/// Raw little-endian `f32` values.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Tensor(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} values)", self.0.len() / 4)
    }
}

impl Tensor {
    /// Encodes values.
    pub fn from_f32(values: &[f32]) -> Self {
        if cfg!(target_endian = "little") {
            // The in-memory bytes already are the wire format: one memcpy.
            return Self(bytemuck::cast_slice(values).to_vec());
        }
        Self(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes into `out`, which must have exactly [`Tensor::len`] values.
    pub fn read_into(&self, out: &mut [f32]) -> Result<(), ProtoError> {
        if self.0.len() != out.len() * 4 {
            return Err(ProtoError::Decode {
                len: self.0.len(),
                reason: format!(
                    "tensor of {} bytes where {} values were expected",
                    self.0.len(),
                    out.len()
                ),
            });
        }
        if cfg!(target_endian = "little") {
            bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(&self.0);
            return Ok(());
        }
        for (o, c) in out.iter_mut().zip(self.0.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    /// The values without copying, when the bytes happen to be aligned for
    /// `f32` on a little-endian machine (the usual case for decoded frames).
    pub fn as_f32(&self) -> Option<&[f32]> {
        if cfg!(target_endian = "little") {
            bytemuck::try_cast_slice(&self.0).ok()
        } else {
            None
        }
    }

    /// Decodes into a new vector.
    pub fn to_vec(&self) -> Result<Vec<f32>, ProtoError> {
        let mut out = vec![0.0; self.len()];
        self.read_into(&mut out)?;
        Ok(out)
    }
}

/// Identifies one attempt at training one partition in one epoch of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The job.
    pub job: u64,
    /// The stage within the job (0 for single-stage jobs).
    pub stage: u32,
    /// The epoch within the stage, from 1.
    pub epoch: u32,
    /// The partition.
    pub partition: u32,
    /// Which attempt at this (stage, epoch, partition); a reassigned task gets a new one.
    pub attempt: u32,
}

/// Work for an executor: train on one partition for one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Which task.
    pub id: TaskId,
    /// Content hash of the partition to train on.
    pub partition_hash: u128,
    /// The job, for its model and training settings.
    pub spec: JobSpec,
}

/// An update from an executor: the sum of the gradients of `batches` minibatches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// The task it belongs to.
    pub task: TaskId,
    /// Position of this push within the task, from 0.
    pub seq: u64,
    /// Parameter version the gradients were computed from.
    pub base_version: u64,
    /// Minibatches summed.
    pub batches: u32,
    /// Examples covered.
    pub samples: u32,
    /// Sum of the minibatches' mean losses.
    pub loss_sum: f32,
    /// The summed gradient.
    pub grad: Tensor,
}

/// What an executor reports when a task completes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task.
    pub task: TaskId,
    /// Examples trained on.
    pub samples: u64,
    /// Minibatches.
    pub batches: u64,
    /// Sum of the minibatches' mean losses.
    pub loss_sum: f64,
    /// Seconds spent computing gradients.
    pub compute_s: f64,
}

/// One evaluation of a job: a line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The job.
    pub job: u64,
    /// Stage name, e.g. `train`.
    pub stage: String,
    /// Epoch within the stage, from 1.
    pub epoch: u32,
    /// Seconds since the job started running (dataset loading included).
    pub elapsed_s: f64,
    /// Seconds since training started (the first partitions were handed out).
    pub train_s: f64,
    /// Mean training loss over the epoch's minibatches.
    pub train_loss: f64,
    /// Test-set accuracy after the epoch (supervised stages).
    pub test_accuracy: Option<f64>,
    /// Test-set loss after the epoch (supervised stages).
    pub test_loss: Option<f64>,
    /// Mean squared reconstruction error on the test set (RBM stages).
    pub reconstruction_error: Option<f64>,
    /// Training examples per second over the epoch, across executors.
    pub samples_per_s: f64,
    /// Partitions trained to completion in the epoch.
    pub partitions_trained: u32,
    /// Partitions of the dataset.
    pub partitions: u32,
    /// Tasks reassigned after an executor was lost.
    pub reassigned: u32,
    /// Parameter-server version (updates applied) at the end of the epoch.
    pub version: u64,
    /// Mean staleness of the updates applied during the epoch.
    pub mean_staleness: f64,
    /// Executors that took part.
    pub executors: u32,
}

/// Progress streamed to a watching client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Progress {
    /// A partition finished training.
    Task {
        /// The stage's name.
        stage: String,
        /// The epoch.
        epoch: u32,
        /// Partitions done in this epoch.
        done: u32,
        /// Partitions in all.
        total: u32,
    },
    /// An epoch was evaluated.
    Epoch(EpochMetrics),
}

/// The end of a job, as told to a watching client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub job: u64,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub state: JobState,
    /// Epochs evaluated.
    pub epochs: u32,
    /// Test accuracy after the last epoch.
    pub final_accuracy: Option<f64>,
    /// Seconds the job ran.
    pub elapsed_s: f64,
    /// Training seconds to the first epoch evaluated at or above the job's
    /// target accuracy, if it has one and reached it.
    pub time_to_target: Option<f64>,
    /// Where its metrics and model were written.
    pub output_dir: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// An executor as the driver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    /// Driver-assigned id.
    pub id: u64,
    /// Its name (host and process).
    pub name: String,
    /// Cores it computes with.
    pub cores: u32,
    /// The task it is running, if any.
    pub task: Option<TaskId>,
    /// Tasks completed.
    pub tasks_done: u64,
}

/// A job as the driver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Driver-assigned id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// The stage last evaluated (`train`, `rbm1`, …, `finetune`).
    pub stage: String,
    /// Epochs of that stage evaluated so far.
    pub epochs_done: u32,
    /// Epochs planned.
    pub epochs: u32,
    /// Latest test accuracy.
    pub accuracy: Option<f64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The driver's answer to [`Message::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Connected executors.
    pub executors: Vec<ExecutorInfo>,
    /// Every job since the driver started, oldest first.
    pub jobs: Vec<JobInfo>,
    /// Connections closed because of a bad frame or handshake.
    pub rejected_connections: u64,
    /// Executors lost (disconnected or silent past the heartbeat timeout).
    pub executors_lost: u64,
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
    /// Executor → driver: send parameters of at least this version.
    Fetch {
        /// The job.
        job: u64,
        /// The stage.
        stage: u32,
        /// Oldest acceptable version (sync mode waits for the next step).
        min_version: u64,
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

/// Encodes a message as one frame's payload, into a buffer sized up front
/// (a growing buffer would copy a large tensor several times over).
pub fn encode(msg: &Message) -> Result<Bytes, ProtoError> {
    let bulk = match msg {
        Message::Push(p) => p.grad.0.len(),
        Message::Params { values, .. } => values.0.len(),
        Message::Partition { bytes, .. } => bytes.len(),
        _ => 0,
    };
    postcard::to_extend(msg, Vec::with_capacity(bulk + 256))
        .map(Bytes::from)
        .map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Encodes a message whose last field is an empty [`Tensor`] (`Push`,
/// `Params`) as if that tensor held `values`, copying the values once
/// instead of building the tensor and then copying it into the frame.
pub fn encode_with_tensor(msg: &Message, values: &[f32]) -> Result<Bytes, ProtoError> {
    let empty = match msg {
        Message::Push(p) => p.grad.is_empty(),
        Message::Params { values, .. } => values.is_empty(),
        _ => false,
    };
    if !empty || cfg!(target_endian = "big") {
        return Err(ProtoError::Encode(format!(
            "{} cannot take a tensor this way",
            msg.kind()
        )));
    }
    let bytes: &[u8] = bytemuck::cast_slice(values);
    let mut out = postcard::to_extend(msg, Vec::with_capacity(bytes.len() + 256))
        .map_err(|e| ProtoError::Encode(e.to_string()))?;
    // postcard ends the message with the empty tensor's length, a varint 0;
    // replace it with the real length and the raw bytes.
    if out.pop() != Some(0) {
        return Err(ProtoError::Encode("unexpected encoding of an empty tensor".into()));
    }
    let mut len = bytes.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(bytes);
    Ok(Bytes::from(out))
}

/// Decodes one frame's payload.
pub fn decode(frame: &[u8]) -> Result<Message, ProtoError> {
    postcard::from_bytes(frame).map_err(|e| ProtoError::Decode {
        len: frame.len(),
        reason: e.to_string(),
    })
}

/// The framing codec with this maximum frame length.
pub fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(max_frame).new_codec()
}

/// The reading half of a connection.
pub struct MessageReader<R> {
    inner: FramedRead<R, LengthDelimitedCodec>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Wraps a reader.
    pub fn new(reader: R, max_frame: usize) -> Self {
        Self {
            inner: FramedRead::new(reader, codec(max_frame)),
        }
    }

    /// The next message; `Ok(None)` on a clean end of stream between frames
    /// (end of stream inside a frame is an error).
    pub async fn recv(&mut self) -> Result<Option<Message>, ProtoError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(frame) => decode(&frame?).map(Some),
        }
    }

    /// The next message within `limit`; end of stream is [`ProtoError::Closed`].
    pub async fn recv_within(&mut self, limit: Duration, what: &'static str) -> Result<Message, ProtoError> {
        match tokio::time::timeout(limit, self.recv()).await {
            Err(_) => Err(ProtoError::Timeout(limit, what)),
            Ok(result) => result?.ok_or(ProtoError::Closed),
        }
    }
}

/// The writing half of a connection. Frames are written straight to the
/// socket (length, then payload) rather than copied into a codec buffer:
/// parameter frames are megabytes.
pub struct MessageWriter<W> {
    inner: W,
    max_frame: usize,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// Wraps a writer.
    pub fn new(writer: W, max_frame: usize) -> Self {
        Self {
            inner: writer,
            max_frame,
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), ProtoError> {
        self.send_frame(encode(msg)?).await
    }

    /// Sends an already-encoded message (shared by several receivers).
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<(), ProtoError> {
        use bytes::Buf;
        use tokio::io::AsyncWriteExt;
        if frame.len() > self.max_frame {
            return Err(ProtoError::Encode(format!(
                "frame of {} bytes exceeds the maximum of {}",
                frame.len(),
                self.max_frame
            )));
        }
        let header = (frame.len() as u32).to_be_bytes();
        let mut chained = (&header[..]).chain(frame);
        self.inner.write_all_buf(&mut chained).await?;
        Ok(())
    }
}

/// Checks a `Hello` against this build: magic and exact version.
pub fn check_hello(msg: &Message) -> Result<(Role, String, u32), ProtoError> {
    match msg {
        Message::Hello {
            magic,
            version,
            role,
            name,
            cores,
        } => {
            if *magic != MAGIC {
                return Err(ProtoError::Rejected(format!(
                    "wrong magic {magic:02x?} (expected {MAGIC:02x?}): not a deepdist peer"
                )));
            }
            if *version != PROTOCOL_VERSION {
                return Err(ProtoError::Rejected(format!(
                    "protocol version mismatch: peer speaks {version}, this driver speaks {PROTOCOL_VERSION}; \
                     run the same deepdist release on every machine"
                )));
            }
            Ok((*role, name.clone(), *cores))
        }
        other => Err(ProtoError::Unexpected {
            expected: "Hello",
            got: other.kind(),
        }),
    }
}

/// Client side of the handshake: sends `Hello`, waits for `Welcome`.
pub async fn handshake<R, W>(
    reader: &mut MessageReader<R>,
    writer: &mut MessageWriter<W>,
    role: Role,
    name: &str,
    cores: u32,
) -> Result<(u64, Duration), ProtoError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.send(&Message::hello(role, name, cores)).await?;
    match reader.recv_within(HANDSHAKE_TIMEOUT, "the handshake").await? {
        Message::Welcome { id, heartbeat_ms } => Ok((id, Duration::from_millis(heartbeat_ms))),
        Message::Reject { reason } => Err(ProtoError::Rejected(reason)),
        other => Err(ProtoError::Unexpected {
            expected: "Welcome",
            got: other.kind(),
        }),
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
            grad: Tensor::default(),
        });
        let Message::Push(p) = decode(&encode_with_tensor(&push, &values).unwrap()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(p.grad.to_vec().unwrap(), values);
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
