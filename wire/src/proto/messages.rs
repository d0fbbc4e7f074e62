//! The messages, one type per direction of each role, so that the type
//! system says who may send what: a handler matches only what its peer may
//! send, and a message of another role does not decode.
//!
//! | type | from → to |
//! |---|---|
//! | [`Handshake`] | either side, before `Welcome` (shared by both roles) |
//! | [`FromExecutor`] | executor → driver |
//! | [`ToExecutor`] | driver → executor |
//! | [`FromClient`] | client → driver |
//! | [`ToClient`] | driver → client |
//!
//! A message with a large field ([`FromExecutor::Push`], [`ToExecutor::Params`],
//! [`ToExecutor::Partition`]) names it through [`Wire::set_bulk`]; that field
//! is left out of the postcard header and travels raw after it (see
//! [`super::frame`]).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use deepdist_core::compress::Compression;

use super::payload::{JobSummary, Progress, Push, StatusReport, TaskId, TaskReport, TaskSpec, Tensor};
use super::{MAGIC, PROTOCOL_VERSION, auth};

/// A message type of the protocol.
pub trait Wire: Serialize + DeserializeOwned {
    /// The message's kind, for logs and errors.
    fn kind(&self) -> &'static str;

    /// The one field that travels as the frame's bulk payload, if this kind
    /// of message has one (serde skips it in the header).
    fn bulk(&self) -> Option<&[u8]> {
        None
    }

    /// Fills [`Wire::bulk`] on decode (a view of the frame, not a copy);
    /// false if this kind has no bulk field.
    fn set_bulk(&mut self, _bulk: Bytes) -> bool {
        false
    }
}

/// A message type that has a heartbeat.
pub trait Beat: Wire {
    /// The heartbeat message.
    fn heartbeat() -> Self;
}

/// Who is connecting to the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Computes gradients.
    Executor,
    /// Submits jobs and asks for status.
    Client,
}

/// The handshake, shared by both roles (see [`super::auth`] for the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Handshake {
    /// First frame from the connecting side.
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
    /// Driver → peer, after `Hello` when the driver has a shared secret:
    /// prove you hold it.
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
    /// Handshake accepted; from here on each side speaks its role's types.
    Welcome {
        /// The id given to this executor (0 for clients).
        id: u64,
        /// How often the driver expects a heartbeat, in milliseconds.
        heartbeat_ms: u64,
    },
    /// Handshake refused, with the reason.
    Reject {
        /// Why.
        reason: String,
    },
    /// Driver → peer, in place of any handshake: the driver is at a
    /// connection limit; try again later. Sent before the peer's `Hello` is
    /// read, on plain TCP only (a TLS driver closes without a word rather
    /// than pay for a TLS handshake it would refuse).
    Busy {
        /// Which limit.
        reason: String,
        /// When trying again may succeed, in milliseconds.
        retry_after_ms: u64,
    },
}

impl Handshake {
    /// A `Hello` from this build.
    pub fn hello(role: Role, name: impl Into<String>, cores: u32) -> Self {
        Handshake::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            role,
            name: name.into(),
            cores,
        }
    }
}

impl Wire for Handshake {
    fn kind(&self) -> &'static str {
        match self {
            Handshake::Hello { .. } => "Hello",
            Handshake::Challenge { .. } => "Challenge",
            Handshake::Answer { .. } => "Answer",
            Handshake::Proof { .. } => "Proof",
            Handshake::Welcome { .. } => "Welcome",
            Handshake::Reject { .. } => "Reject",
            Handshake::Busy { .. } => "Busy",
        }
    }
}

/// Executor → driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromExecutor {
    /// Liveness.
    Heartbeat,
    /// Send me this partition.
    NeedPartition {
        /// Its content hash.
        hash: u128,
    },
    /// Send the parameters.
    Fetch {
        /// The job.
        job: u64,
        /// The stage.
        stage: u32,
        /// What the answer waits for, by mode: a version (`sync`, `average`
        /// wait for the next step), the sender's clock (`ssp`); 0 is now.
        wait_for: u64,
        /// The version the sender holds: if the parameters are still at it,
        /// the answer is [`ToExecutor::Unchanged`] instead of megabytes of
        /// the same values.
        newer_than: Option<u64>,
    },
    /// An update; its values are the bulk payload.
    Push(Push),
    /// A task completed.
    TaskDone(TaskReport),
    /// A task could not run.
    TaskFailed {
        /// The task.
        task: TaskId,
        /// Why.
        reason: String,
        /// Training diverged: retrying elsewhere cannot help.
        diverged: bool,
    },
}

impl Wire for FromExecutor {
    fn kind(&self) -> &'static str {
        match self {
            FromExecutor::Heartbeat => "Heartbeat",
            FromExecutor::NeedPartition { .. } => "NeedPartition",
            FromExecutor::Fetch { .. } => "Fetch",
            FromExecutor::Push(_) => "Push",
            FromExecutor::TaskDone(_) => "TaskDone",
            FromExecutor::TaskFailed { .. } => "TaskFailed",
        }
    }

    fn bulk(&self) -> Option<&[u8]> {
        match self {
            FromExecutor::Push(p) => Some(&p.values.0),
            _ => None,
        }
    }

    fn set_bulk(&mut self, bulk: Bytes) -> bool {
        match self {
            FromExecutor::Push(p) => p.values.0 = bulk,
            _ => return false,
        }
        true
    }
}

impl Beat for FromExecutor {
    fn heartbeat() -> Self {
        FromExecutor::Heartbeat
    }
}

/// Driver → executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToExecutor {
    /// Liveness.
    Heartbeat,
    /// Run this task.
    Assign(Box<TaskSpec>),
    /// A partition's encoded bytes (the bulk payload).
    Partition {
        /// Its content hash.
        hash: u128,
        /// The encoding of [`deepdist_core::data::Partition`].
        #[serde(skip)]
        bytes: Bytes,
    },
    /// Read partition `partition` of the task's job from its shared
    /// `data.path` (`data.shared`); it must hash to `hash`.
    PartitionAt {
        /// Its content hash, as the driver cut it.
        hash: u128,
        /// Its position among the job's partitions.
        partition: u32,
    },
    /// Parameters; their values are the bulk payload.
    Params {
        /// The job.
        job: u64,
        /// The stage.
        stage: u32,
        /// Their version (updates applied).
        version: u64,
        /// How `values` encodes them (the job's `train.fetch_compression`).
        compression: Compression,
        /// The values.
        #[serde(skip)]
        values: Tensor,
    },
    /// The answer to a fetch whose sender holds the current parameters:
    /// nothing was applied since the version it named, or only its own
    /// updates (which its copy already has). It is now at `version`.
    Unchanged {
        /// The job.
        job: u64,
        /// The stage.
        stage: u32,
        /// The current version, which the sender's copy now stands for.
        version: u64,
    },
    /// The trained RBMs below a pre-training stage, which executors pass
    /// their partitions through to get the stage's input.
    Frozen {
        /// The job.
        job: u64,
        /// The stage these layers feed.
        stage: u32,
        /// Parameters of RBM 0, 1, … in order.
        layers: Vec<Tensor>,
    },
    /// Abandon the tasks of this job.
    CancelTasks {
        /// The job.
        job: u64,
    },
    /// The run this executor joined is over (`deepdist launch`, or an
    /// executor started with `--exit-with-run`): exit with the job's state
    /// instead of reconnecting.
    RunOver {
        /// How the run's job ended.
        state: deepdist_core::job::JobState,
    },
}

impl Wire for ToExecutor {
    fn kind(&self) -> &'static str {
        match self {
            ToExecutor::Heartbeat => "Heartbeat",
            ToExecutor::Assign(_) => "Assign",
            ToExecutor::Partition { .. } => "Partition",
            ToExecutor::PartitionAt { .. } => "PartitionAt",
            ToExecutor::Params { .. } => "Params",
            ToExecutor::Unchanged { .. } => "Unchanged",
            ToExecutor::Frozen { .. } => "Frozen",
            ToExecutor::CancelTasks { .. } => "CancelTasks",
            ToExecutor::RunOver { .. } => "RunOver",
        }
    }

    fn bulk(&self) -> Option<&[u8]> {
        match self {
            ToExecutor::Partition { bytes, .. } => Some(bytes),
            ToExecutor::Params { values, .. } => Some(&values.0),
            _ => None,
        }
    }

    fn set_bulk(&mut self, bulk: Bytes) -> bool {
        match self {
            ToExecutor::Partition { bytes, .. } => *bytes = bulk,
            ToExecutor::Params { values, .. } => values.0 = bulk,
            _ => return false,
        }
        true
    }
}

impl Beat for ToExecutor {
    fn heartbeat() -> Self {
        ToExecutor::Heartbeat
    }
}

/// Client → driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromClient {
    /// Liveness.
    Heartbeat,
    /// Queue this job (TOML text).
    Submit {
        /// The job file's text.
        spec: String,
        /// Where it came from, for error messages.
        origin: String,
    },
    /// Describe executors and jobs.
    Status,
    /// Cancel a job.
    Cancel {
        /// The job.
        job: u64,
    },
    /// Stream this job's progress until it ends.
    Watch {
        /// The job.
        job: u64,
    },
}

impl Wire for FromClient {
    fn kind(&self) -> &'static str {
        match self {
            FromClient::Heartbeat => "Heartbeat",
            FromClient::Submit { .. } => "Submit",
            FromClient::Status => "Status",
            FromClient::Cancel { .. } => "Cancel",
            FromClient::Watch { .. } => "Watch",
        }
    }
}

/// Driver → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToClient {
    /// Liveness, while a watched job is quiet.
    Heartbeat,
    /// The job was queued.
    Submitted {
        /// Its id.
        job: u64,
    },
    /// The answer to [`FromClient::Status`].
    StatusReport(StatusReport),
    /// The job is (being) cancelled.
    Cancelled {
        /// The job.
        job: u64,
    },
    /// Progress of a watched job.
    Progress(Progress),
    /// The watched job ended.
    JobEnded(JobSummary),
    /// The request was refused, with the reason.
    Reject {
        /// Why.
        reason: String,
    },
}

impl Wire for ToClient {
    fn kind(&self) -> &'static str {
        match self {
            ToClient::Heartbeat => "Heartbeat",
            ToClient::Submitted { .. } => "Submitted",
            ToClient::StatusReport(_) => "StatusReport",
            ToClient::Cancelled { .. } => "Cancelled",
            ToClient::Progress(_) => "Progress",
            ToClient::JobEnded(_) => "JobEnded",
            ToClient::Reject { .. } => "Reject",
        }
    }
}
