//! Frames on their way to one executor. Nothing that serves every executor
//! waits on one of them: a frame is offered, and an executor whose queue is
//! full has stopped reading and is disconnected, its tasks given to others.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

/// Frames queued for one executor's connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
    stuck: Arc<Notify>,
}

impl Outbox {
    /// An outbox of `capacity` frames and the receiving end its connection drains.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity);
        let stuck = Arc::new(Notify::new());
        (Self { tx, stuck }, rx)
    }

    /// Queues `frame` without waiting; a full queue marks the executor stuck.
    pub fn offer(&self, frame: Bytes) {
        match self.tx.try_send(frame) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => self.stuck.notify_one(),
        }
    }

    /// Marks the executor stuck (it holds a task without progress).
    pub fn evict(&self) {
        self.stuck.notify_one();
    }

    /// Resolves once the executor is marked stuck: its connection closes.
    pub async fn stuck(&self) {
        self.stuck.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_outbox_marks_its_executor_stuck_without_waiting() {
        let (outbox, mut rx) = Outbox::new(2);
        outbox.offer(Bytes::from_static(b"a"));
        outbox.offer(Bytes::from_static(b"b"));
        outbox.offer(Bytes::from_static(b"c"));
        // The stored permit resolves at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), outbox.stuck())
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"a"));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"b"));
        assert!(rx.try_recv().is_err(), "the third frame was dropped");
    }
}
