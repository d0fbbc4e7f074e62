//! Accepting connections and the handshake; then each connection is served
//! by its role's module ([`crate::executor_conn`], [`crate::client_conn`]).
//!
//! A bad frame (too large, truncated, undecodable, or of a kind the role
//! may not send) closes that connection with a logged reason; the driver
//! keeps serving everyone else.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use deepdist_wire::proto::{self, Handshake, MessageReader, MessageWriter, ProtoError, Role};
use deepdist_wire::transport::{self, BoxRead, BoxWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::admission::{Admission, HandshakeSlot};
use crate::state::Shared;
use crate::{client_conn, executor_conn};

/// Largest frame a client may send: job files and requests are small.
const CLIENT_MAX_FRAME: usize = 1 << 20;

/// How long the accept loop pauses after an accept error (out of file
/// descriptors, say) before trying again, instead of spinning.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let admission = Admission::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.rejected_connections.fetch_add(1, Relaxed);
            tracing::warn!(%peer, "connection refused: too many connections");
            refuse(&shared, stream, "at its connection limit");
            continue;
        };
        let Some(slot) = admission.admit(peer.ip()) else {
            shared.rejected_connections.fetch_add(1, Relaxed);
            tracing::warn!(%peer, "connection refused: too many handshakes in progress");
            refuse(&shared, stream, "too many handshakes in progress from this address");
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (read, write) = match transport::accept(stream, shared.config.tls.as_ref()).await {
                Ok(halves) => halves,
                Err(e) => {
                    shared.rejected_connections.fetch_add(1, Relaxed);
                    tracing::warn!(%peer, reason = %e, "peer refused");
                    return;
                }
            };
            let max = shared.config.max_frame;
            let mut reader = MessageReader::new(read, max);
            let mut writer = MessageWriter::new(write, max);
            match serve(&shared, &mut reader, &mut writer, Some(slot), peer, stop).await {
                Err(e @ ProtoError::Rejected(_)) => tracing::warn!(%peer, reason = %e, "peer refused"),
                Err(e) => tracing::info!(%peer, reason = %e, "connection closed"),
                Ok(()) => {}
            }
            drop(permit);
        });
    }
}

/// Tells a refused peer the driver is busy, off the accept loop. A slot
/// held by a silent peer frees at its handshake deadline, so trying again
/// after a second or so is worth it.
fn refuse(shared: &Shared, stream: tokio::net::TcpStream, reason: &'static str) {
    let tls = shared.config.tls.is_some();
    tokio::spawn(transport::refuse_busy(stream, tls, reason, BUSY_RETRY_AFTER));
}

/// The wait a busy reply suggests.
const BUSY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves a connection opened within this process ([`transport::InProcess`]),
/// as [`accept_loop`] serves one from the network, until it ends or the
/// driver stops. Such a peer is this process's own: it takes no connection
/// permit or handshake slot, and counts as the loopback address.
pub async fn serve_in_process(
    shared: Arc<Shared>,
    (mut reader, mut writer): transport::Connection,
    stop: watch::Receiver<bool>,
) {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    if let Err(e) = serve(&shared, &mut reader, &mut writer, None, peer, stop).await {
        tracing::info!(reason = %e, "in-process connection closed");
    }
}

async fn serve(
    shared: &Arc<Shared>,
    reader: &mut MessageReader<BoxRead>,
    writer: &mut MessageWriter<BoxWrite>,
    slot: Option<HandshakeSlot>,
    peer: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(), ProtoError> {
    let (role, name, cores) = match proto::accept_handshake(reader, writer, shared.config.secret.as_ref()).await {
        Ok(hello) => hello,
        Err(e) => {
            shared.rejected_connections.fetch_add(1, Relaxed);
            return Err(e);
        }
    };
    drop(slot);
    match role {
        Role::Client => {
            reader.set_max_frame(CLIENT_MAX_FRAME.min(shared.config.max_frame));
            writer.send(&Handshake::Welcome { id: 0, heartbeat_ms: 0 }).await?;
            client_conn::serve(shared, reader, writer).await
        }
        Role::Executor => {
            reader.set_max_frame(shared.config.max_frame);
            reader.count_into(shared.timings.bytes_in.clone());
            writer.count_into(shared.timings.bytes_out.clone());
            executor_conn::serve(shared, reader, writer, name, peer.ip(), cores.max(1), stop).await
        }
    }
}
