//! Frames on a connection: the length-delimited reader, the direct writer,
//! the in-process pipe, the heartbeat pump and the handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::auth::{DriverChallenge, PeerAnswer, SECRET_ENV, Secret};
use super::{
    Beat, HANDSHAKE_MAX_FRAME, HANDSHAKE_TIMEOUT, Handshake, MAGIC, PROTOCOL_VERSION, ProtoError, Role, Wire, decode,
    encode,
};

/// The framing codec with this maximum frame length.
pub fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(max_frame).new_codec()
}

/// The reading half of a connection.
pub struct MessageReader<R> {
    inner: Incoming<R>,
    counter: Option<Arc<AtomicU64>>,
}

/// Where a reader's frames come from.
enum Incoming<R> {
    /// Length-delimited frames on a byte stream.
    Stream(FramedRead<R, LengthDelimitedCodec>),
    /// Whole frames handed over within this process ([`pipe`]).
    Memory {
        frames: mpsc::Receiver<Bytes>,
        max_frame: usize,
    },
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Wraps a reader.
    pub fn new(reader: R, max_frame: usize) -> Self {
        Self {
            inner: Incoming::Stream(FramedRead::new(reader, codec(max_frame))),
            counter: None,
        }
    }

    /// Adds the bytes of every frame read from now on to `counter`.
    pub fn count_into(&mut self, counter: Arc<AtomicU64>) {
        self.counter = Some(counter);
    }

    /// The largest frame accepted now.
    pub fn max_frame(&self) -> usize {
        match &self.inner {
            Incoming::Stream(framed) => framed.decoder().max_frame_length(),
            Incoming::Memory { max_frame, .. } => *max_frame,
        }
    }

    /// Changes the largest frame accepted (checked on the length prefix,
    /// before any buffer grows).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        match &mut self.inner {
            Incoming::Stream(framed) => framed.decoder_mut().set_max_frame_length(max_frame),
            Incoming::Memory { max_frame: max, .. } => *max = max_frame,
        }
    }

    /// The next message; `Ok(None)` on a clean end of stream between frames
    /// (end of stream inside a frame is an error).
    pub async fn recv<M: Wire>(&mut self) -> Result<Option<M>, ProtoError> {
        let frame = match &mut self.inner {
            Incoming::Stream(framed) => match framed.next().await {
                None => return Ok(None),
                Some(frame) => frame?.freeze(),
            },
            Incoming::Memory { frames, max_frame } => match frames.recv().await {
                None => return Ok(None),
                Some(frame) => {
                    check_frame_len(frame.len(), *max_frame)?;
                    frame
                }
            },
        };
        if let Some(c) = &self.counter {
            c.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        }
        decode(frame).map(Some)
    }

    /// The next message within `limit`; end of stream is [`ProtoError::Closed`].
    pub async fn recv_within<M: Wire>(&mut self, limit: Duration, what: &'static str) -> Result<M, ProtoError> {
        match tokio::time::timeout(limit, self.recv()).await {
            Err(_) => Err(ProtoError::Timeout(limit, what)),
            Ok(result) => result?.ok_or(ProtoError::Closed),
        }
    }
}

/// A frame longer than `max_frame` is refused as the length codec refuses it.
fn check_frame_len(len: usize, max_frame: usize) -> Result<(), std::io::Error> {
    if len > max_frame {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the maximum of {max_frame}"),
        ));
    }
    Ok(())
}

/// The writing half of a connection. Frames are written straight to the
/// socket (length, then payload) rather than copied into a codec buffer:
/// parameter frames are megabytes.
pub struct MessageWriter<W> {
    inner: Outgoing<W>,
    max_frame: usize,
    counter: Option<Arc<AtomicU64>>,
}

/// Where a writer's frames go.
enum Outgoing<W> {
    /// Length-prefixed onto a byte stream.
    Stream(W),
    /// Handed over whole within this process ([`pipe`]); `None` once closed.
    Memory(Option<mpsc::Sender<Bytes>>),
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// Wraps a writer.
    pub fn new(writer: W, max_frame: usize) -> Self {
        Self {
            inner: Outgoing::Stream(writer),
            max_frame,
            counter: None,
        }
    }

    /// Adds the bytes of every frame written from now on to `counter`.
    pub fn count_into(&mut self, counter: Arc<AtomicU64>) {
        self.counter = Some(counter);
    }

    /// Sends one message.
    pub async fn send<M: Wire>(&mut self, msg: &M) -> Result<(), ProtoError> {
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
        let len = frame.len() as u64 + 4;
        match &mut self.inner {
            Outgoing::Stream(writer) => {
                let header = (frame.len() as u32).to_be_bytes();
                let mut chained = (&header[..]).chain(frame);
                writer.write_all_buf(&mut chained).await?;
            }
            Outgoing::Memory(frames) => {
                let sent = match frames {
                    Some(tx) => tx.send(frame).await.is_ok(),
                    None => false,
                };
                if !sent {
                    return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into());
                }
            }
        }
        if let Some(c) = &self.counter {
            c.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Ends this side of the connection (with TLS, a `close_notify`), so the
    /// peer reads a clean end rather than a broken connection.
    pub async fn close(&mut self) -> Result<(), ProtoError> {
        use tokio::io::AsyncWriteExt;
        match &mut self.inner {
            Outgoing::Stream(writer) => writer.shutdown().await?,
            Outgoing::Memory(frames) => *frames = None,
        }
        Ok(())
    }
}

/// Frames in flight each way on a [`pipe`] before the sender waits, as a
/// socket's buffers would make it.
const PIPE_FRAMES: usize = 4;

/// One end of a [`pipe`]: its reader and writer.
pub type PipeEnd<R, W> = (MessageReader<R>, MessageWriter<W>);

/// A connection within one process: each frame is handed over whole, as
/// shared bytes, so a tensor the receiver decodes is a view of the sender's
/// buffer, with no copy and no system call. Each end refuses frames above
/// its own cap, like a socket's; closing or dropping one end's writer is a
/// clean end of stream for the other's reader.
pub fn pipe<R, W>(max_frame: (usize, usize)) -> (PipeEnd<R, W>, PipeEnd<R, W>) {
    let (a_tx, a_rx) = mpsc::channel(PIPE_FRAMES);
    let (b_tx, b_rx) = mpsc::channel(PIPE_FRAMES);
    let end = |frames, tx, max_frame| {
        let reader = MessageReader {
            inner: Incoming::Memory { frames, max_frame },
            counter: None,
        };
        let writer = MessageWriter {
            inner: Outgoing::Memory(Some(tx)),
            max_frame,
            counter: None,
        };
        (reader, writer)
    };
    (end(b_rx, a_tx, max_frame.0), end(a_rx, b_tx, max_frame.1))
}

/// Sends every frame queued on `outbox`, and a heartbeat whenever
/// `heartbeat` passes, until the outbox closes or the connection fails.
/// The heartbeat is `M`'s, the type the receiving side reads.
pub async fn pump<M: Beat, W: AsyncWrite + Unpin>(
    writer: &mut MessageWriter<W>,
    outbox: &mut tokio::sync::mpsc::Receiver<Bytes>,
    heartbeat: Duration,
) -> Result<(), ProtoError> {
    let beat = encode(&M::heartbeat())?;
    let mut ticker = tokio::time::interval(heartbeat);
    loop {
        let frame = tokio::select! {
            f = outbox.recv() => match f { Some(f) => f, None => return Ok(()) },
            _ = ticker.tick() => beat.clone(),
        };
        writer.send_frame(frame).await?;
    }
}

/// Checks a `Hello` against this build: magic and exact version.
pub fn check_hello(msg: &Handshake) -> Result<(Role, String, u32), ProtoError> {
    match msg {
        Handshake::Hello {
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

/// Client side of the handshake: sends `Hello`, answers the driver's
/// challenge when it has a secret, waits for `Welcome`. Frames stay capped at
/// [`HANDSHAKE_MAX_FRAME`] until then. A peer with a secret refuses a driver
/// that does not ask for it: that driver could be anyone.
pub async fn handshake<R, W>(
    reader: &mut MessageReader<R>,
    writer: &mut MessageWriter<W>,
    hello: Handshake,
    secret: Option<&Secret>,
) -> Result<(u64, Duration), ProtoError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let full = reader.max_frame();
    reader.set_max_frame(HANDSHAKE_MAX_FRAME);
    let exchange = async {
        writer.send(&hello).await?;
        let mut reply: Handshake = reader.recv().await?.ok_or(ProtoError::Closed)?;
        if let Handshake::Challenge { nonce } = reply {
            let secret = secret.ok_or_else(|| {
                ProtoError::Rejected(format!(
                    "the driver requires a shared secret: pass --secret-file or set {SECRET_ENV}"
                ))
            })?;
            let answer = PeerAnswer::new(nonce)?;
            writer.send(&answer.message(secret)).await?;
            answer.check(secret, &reader.recv().await?.ok_or(ProtoError::Closed)?)?;
            reply = reader.recv().await?.ok_or(ProtoError::Closed)?;
        } else if secret.is_some() && matches!(reply, Handshake::Welcome { .. }) {
            return Err(ProtoError::Rejected(
                "the driver did not ask for the shared secret (it runs without one); refusing to trust it".into(),
            ));
        }
        match reply {
            Handshake::Welcome { id, heartbeat_ms } => Ok((id, Duration::from_millis(heartbeat_ms))),
            Handshake::Reject { reason } => Err(ProtoError::Rejected(reason)),
            Handshake::Busy { reason, retry_after_ms } => Err(ProtoError::Busy {
                reason,
                retry_after: Duration::from_millis(retry_after_ms),
            }),
            other => Err(ProtoError::Unexpected {
                expected: "Welcome",
                got: other.kind(),
            }),
        }
    };
    let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Err(_) => Err(ProtoError::Timeout(HANDSHAKE_TIMEOUT, "the handshake")),
        // A TLS driver answers plain TCP with a TLS alert (not a frame) or
        // silence; say what may be wrong.
        Ok(Err(ProtoError::Closed)) => Err(ProtoError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the driver closed the connection during the handshake \
             (does it expect TLS? then pass --tls-ca; or a TLS driver at its connection limit)",
        ))),
        Ok(Err(ProtoError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(ProtoError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the driver's reply is not deepdist framing ({e}); does it expect TLS? then pass --tls-ca"),
            )))
        }
        Ok(result) => result,
    };
    reader.set_max_frame(full);
    result
}

/// Driver side of the handshake up to (not including) `Welcome`: reads and
/// checks `Hello`, and when the driver has a secret, challenges the peer and
/// proves itself. Frames stay capped at [`HANDSHAKE_MAX_FRAME`] throughout;
/// the caller raises the cap after `Welcome`. A refused peer is told why.
pub async fn accept_handshake<R, W>(
    reader: &mut MessageReader<R>,
    writer: &mut MessageWriter<W>,
    secret: Option<&Secret>,
) -> Result<(Role, String, u32), ProtoError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    reader.set_max_frame(HANDSHAKE_MAX_FRAME);
    let exchange = async {
        let hello = check_hello(&reader.recv().await?.ok_or(ProtoError::Closed)?)?;
        if let Some(secret) = secret {
            let challenge = DriverChallenge::new()?;
            writer.send(&challenge.message()).await?;
            let answer: Handshake = reader.recv().await?.ok_or(ProtoError::Closed)?;
            let proof = challenge.check(secret, &answer)?;
            writer.send(&proof).await?;
        }
        Ok(hello)
    };
    let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ProtoError::Timeout(HANDSHAKE_TIMEOUT, "the handshake")),
    };
    if let Err(e @ (ProtoError::Rejected(_) | ProtoError::Unexpected { .. })) = &result {
        let _ = writer.send(&Handshake::Reject { reason: e.to_string() }).await;
    }
    result
}
