//! One executor's connection: registered on arrival, its messages handed to
//! [`crate::executor_messages`] as they come, its outbox pumped out with
//! heartbeats, and on any end its tasks given back.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use deepdist_wire::proto::{self, FromExecutor, Handshake, MessageReader, MessageWriter, ProtoError, ToExecutor};
use deepdist_wire::transport::{BoxRead, BoxWrite};
use tokio::sync::watch;

use crate::executor_messages;
use crate::outbox::Outbox;
use crate::state::{ExecutorEntry, Shared};

/// Frames queued per connection before it counts as not reading.
const OUTBOX: usize = 64;

/// Serves one executor's connection until it closes, is lost or the driver
/// stops; its tasks then go back to the scheduler.
pub async fn serve(
    shared: &Arc<Shared>,
    reader: &mut MessageReader<BoxRead>,
    writer: &mut MessageWriter<BoxWrite>,
    name: String,
    host: std::net::IpAddr,
    cores: u32,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProtoError> {
    let id = shared.next_executor.fetch_add(1, Relaxed);
    let heartbeat = shared.config.heartbeat;
    writer
        .send(&Handshake::Welcome {
            id,
            heartbeat_ms: heartbeat.as_millis() as u64,
        })
        .await?;
    let (tx, mut rx) = Outbox::new(OUTBOX);
    shared.lock().executors.insert(
        id,
        ExecutorEntry {
            name: name.clone(),
            cores,
            tx: tx.clone(),
            task: None,
            last_heard: Instant::now(),
            last_message: Instant::now(),
            fetches_waiting: 0,
            tasks_done: 0,
            host: host.to_string(),
            samples: 0,
            compute_s: 0.0,
            cached: Default::default(),
        },
    );
    tracing::info!(id, %name, cores, "executor registered");
    shared.wake.notify_one();
    shared.executors_changed.notify_waiters();
    if let Some(state) = *shared
        .run_over
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        && let Ok(frame) = proto::encode(&ToExecutor::RunOver { state })
    {
        tx.offer(frame);
    }

    let outgoing = proto::pump::<ToExecutor, _>(writer, &mut rx, heartbeat);
    let incoming = async {
        loop {
            let msg: FromExecutor = reader
                .recv_within(shared.config.heartbeat_timeout, "a message or heartbeat")
                .await?;
            executor_messages::handle(shared, id, &tx, msg).await?;
        }
    };
    let (result, driver_stopping) = tokio::select! {
        r = outgoing => (r, false),
        r = incoming => (r, false),
        _ = tx.stuck() => (Err(ProtoError::Stuck), false),
        _ = stop.changed() => (Ok(()), true),
    };
    let lost = remove_executor(shared, id);
    if driver_stopping {
        tracing::debug!(id, "executor connection closed: the driver is stopping");
        return result;
    }
    // A connection closed cleanly with nothing in hand is an executor shutting
    // down (as `deepdist local` does at the end, and executors told the run is
    // over); anything else costs work or signals a fault: that is what the
    // count of lost executors and operators' warnings are for.
    match &result {
        Err(ProtoError::Closed) if lost == 0 => tracing::info!(id, "executor disconnected"),
        Err(e) => {
            shared.executors_lost.fetch_add(1, Relaxed);
            tracing::warn!(id, tasks_reassigned = lost, error = %e, "executor lost")
        }
        Ok(()) => {
            shared.executors_lost.fetch_add(1, Relaxed);
            tracing::warn!(id, tasks_reassigned = lost, "executor lost")
        }
    }
    result
}

/// Removes an executor and gives its tasks back to the scheduler; returns
/// how many went back.
fn remove_executor(shared: &Shared, id: u64) -> usize {
    let mut state = shared.lock();
    state.executors.remove(&id);
    shared.staleness.forget(id);
    let lost = state.run.as_mut().map_or(0, |run| run.scheduler.lose(id));
    shared.tasks_reassigned.fetch_add(lost as u64, Relaxed);
    drop(state);
    shared.wake.notify_one();
    shared.executors_changed.notify_waiters();
    lost
}
