//! A TCP proxy for fault injection between executors and the driver: it can
//! add a delay to every chunk, cut every open connection, and stall all
//! traffic until told to resume (this kernel has no `tc netem`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Faults {
    delay_ms: AtomicU64,
    cuts: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    connections: AtomicU64,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    addr: String,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end with the cut.
        self.cut_all();
    }
}

impl FaultProxy {
    /// A proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Faults {
            delay_ms: AtomicU64::new(0),
            cuts: watch::channel(0).0,
            stalled: watch::channel(false).0,
            connections: AtomicU64::new(0),
        });
        let f = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                f.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, server, f.clone()));
            }
        });
        Self { addr, faults, task }
    }

    /// Where executors should connect.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Adds `delay` before every chunk forwarded, each way.
    pub fn set_delay(&self, delay: Duration) {
        self.faults.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Closes every connection open now.
    pub fn cut_all(&self) {
        self.faults.cuts.send_modify(|n| *n += 1);
    }

    /// Holds all traffic (connections stay open) until [`FaultProxy::resume`].
    pub fn stall(&self) {
        self.faults.stalled.send_replace(true);
    }

    /// Lets traffic flow again.
    pub fn resume(&self) {
        self.faults.stalled.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.faults.connections.load(Ordering::Relaxed)
    }
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let mut cut = faults.cuts.subscribe();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, faults.clone()) => {}
        _ = pump(sr, cw, faults.clone()) => {}
        _ = cut.changed() => {}
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, faults: Arc<Faults>) {
    let mut stalled = faults.stalled.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
