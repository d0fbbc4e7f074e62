//! HTTPS for the HTTP side, with the driver's own certificate: a listener
//! for axum whose connections arrive with their TLS handshake done. The
//! handshakes run concurrently (at most [`HANDSHAKES`] at once), so one
//! slow or silent client does not hold up the others.

use std::net::SocketAddr;
use std::sync::Arc;

use deepdist_wire::transport::TlsServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

/// TLS handshakes in progress at once.
const HANDSHAKES: usize = 64;

/// Connections with their handshake done, as axum takes them.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and shakes hands with `tls`, until the listener is dropped.
    pub fn new(tcp: TcpListener, tls: TlsServer) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES);
        let permits = Arc::new(Semaphore::new(HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (tls, sender) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tls.handshake(stream).await {
                        Ok(stream) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Err(e) => tracing::info!(%peer, reason = %e, "HTTPS connection refused"),
                    }
                    drop(permit);
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task is gone: nothing will arrive again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
