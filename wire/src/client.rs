//! A client of the driver: submit jobs, watch them, ask for status, cancel.

use crate::proto::{
    DEFAULT_MAX_FRAME, FromClient, Handshake, JobSummary, MessageReader, MessageWriter, Progress, ProtoError, Role,
    StatusReport, ToClient, Wire,
};
use crate::transport::{self, BoxRead, BoxWrite, Credentials};

/// What a client request can end in.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The driver refused the request, and said why.
    #[error("{0}")]
    Refused(String),
}

/// How long [`Client::connect_patiently`] keeps trying by default: longer
/// than the driver's handshake deadline, after which slots held by silent
/// peers are free again.
pub const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a failed connection may succeed if tried again soon.
fn busy(e: &ProtoError) -> bool {
    match e {
        ProtoError::Busy { .. } | ProtoError::Timeout(..) => true,
        ProtoError::Io(io) => io.kind() == std::io::ErrorKind::ConnectionAborted,
        _ => false,
    }
}

/// Longest a watch waits for anything from the driver.
const WATCH_SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// A connection to the driver in the client role.
pub struct Client {
    reader: MessageReader<BoxRead>,
    writer: MessageWriter<BoxWrite>,
}

impl Client {
    /// Connects and shakes hands, presenting `credentials` (TLS, secret).
    pub async fn connect(addr: &str, credentials: &Credentials) -> Result<Self, ClientError> {
        let hello = Handshake::hello(Role::Client, "client", 0);
        let dialed = transport::dial(addr, credentials, hello, DEFAULT_MAX_FRAME).await?;
        Ok(Self {
            reader: dialed.reader,
            writer: dialed.writer,
        })
    }

    /// Connects as [`Client::connect`], trying again with growing pauses
    /// while the driver is busy (at a connection limit, or closing during the
    /// handshake as a TLS driver at its limit does), until `patience` has
    /// passed. Any other failure, a refused secret say, ends at once.
    pub async fn connect_patiently(
        addr: &str,
        credentials: &Credentials,
        patience: std::time::Duration,
    ) -> Result<Self, ClientError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let error = match Self::connect(addr, credentials).await {
                Err(ClientError::Proto(e)) if busy(&e) => e,
                done => return done,
            };
            if let ProtoError::Busy { retry_after, .. } = &error {
                pause = pause.max(*retry_after);
            }
            let now = tokio::time::Instant::now();
            if now + pause > deadline {
                return Err(error.into());
            }
            tracing::warn!(%addr, error = %error, retry_in = ?pause, "the driver is busy; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(5));
        }
    }

    async fn request(&mut self, msg: FromClient) -> Result<ToClient, ClientError> {
        self.writer.send(&msg).await?;
        match self.reader.recv().await? {
            Some(ToClient::Reject { reason }) => Err(ClientError::Refused(reason)),
            Some(reply) => Ok(reply),
            None => Err(ProtoError::Closed.into()),
        }
    }

    fn unexpected(expected: &'static str, got: &ToClient) -> ClientError {
        ProtoError::Unexpected {
            expected,
            got: got.kind(),
        }
        .into()
    }

    /// Submits a job file's text; returns the job id. An invalid job is
    /// refused with a message naming the key.
    pub async fn submit(&mut self, spec: &str, origin: &str) -> Result<u64, ClientError> {
        let msg = FromClient::Submit {
            spec: spec.to_string(),
            origin: origin.to_string(),
        };
        match self.request(msg).await? {
            ToClient::Submitted { job } => Ok(job),
            other => Err(Self::unexpected("Submitted", &other)),
        }
    }

    /// Executors and jobs.
    pub async fn status(&mut self) -> Result<StatusReport, ClientError> {
        match self.request(FromClient::Status).await? {
            ToClient::StatusReport(report) => Ok(report),
            other => Err(Self::unexpected("StatusReport", &other)),
        }
    }

    /// Cancels a job.
    pub async fn cancel(&mut self, job: u64) -> Result<(), ClientError> {
        match self.request(FromClient::Cancel { job }).await? {
            ToClient::Cancelled { .. } => Ok(()),
            other => Err(Self::unexpected("Cancelled", &other)),
        }
    }

    /// Streams a job's progress to `on_progress` until it ends.
    pub async fn watch(&mut self, job: u64, mut on_progress: impl FnMut(Progress)) -> Result<JobSummary, ClientError> {
        self.writer.send(&FromClient::Watch { job }).await?;
        loop {
            // The driver heartbeats a quiet job every 10 s; a minute of
            // silence is a driver that is gone or wedged.
            match self
                .reader
                .recv_within(WATCH_SILENCE, "the driver's progress or heartbeat")
                .await?
            {
                ToClient::Heartbeat => {}
                ToClient::Progress(p) => on_progress(p),
                ToClient::JobEnded(summary) => return Ok(summary),
                ToClient::Reject { reason } => return Err(ClientError::Refused(reason)),
                other => return Err(Self::unexpected("Progress or JobEnded", &other)),
            }
        }
    }
}
