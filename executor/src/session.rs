//! One connection to the driver: handshake, heartbeats, and routing of
//! messages between the driver, the partition cache and the worker.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use deepdist_wire::proto::{self, FromExecutor, Handshake, ProtoError, Role, TaskSpec, ToExecutor};
use deepdist_wire::transport::{self, Dialed};
use tokio::sync::mpsc;

use crate::ExecutorConfig;
use crate::cache::{PartitionCache, PartitionUnavailable};
use crate::shared_data::SharedCuts;
use crate::worker::{WorkItem, WorkerHandle};

/// Messages queued for the driver before senders wait.
const OUTBOX: usize = 64;

/// How a connection ended without a protocol error.
pub enum Ended {
    /// The driver closed it.
    Served,
    /// The driver ended the run; its job ended in this state.
    RunOver(deepdist_core::job::JobState),
}

/// Dials `driver` and serves it until the connection ends; `registered`
/// turns true once the driver has welcomed this executor.
pub async fn connect_and_serve(
    config: &ExecutorConfig,
    driver: &str,
    worker: &WorkerHandle,
    cache: &PartitionCache,
    registered: &mut bool,
) -> Result<Ended, ProtoError> {
    let hello = Handshake::hello(Role::Executor, &config.name, config.cores as u32);
    let Dialed {
        mut reader,
        mut writer,
        id,
        heartbeat,
    } = match &config.in_process {
        Some(in_process) => {
            transport::dial_in_process(in_process, &config.credentials, hello, config.max_frame).await?
        }
        None => transport::dial(driver, &config.credentials, hello, config.max_frame).await?,
    };
    *registered = true;
    tracing::info!(id, %driver, "registered with the driver");
    let heartbeat = heartbeat.max(Duration::from_millis(50));
    // The driver beats as often as it asks us to; ten missed beats mean it is gone.
    let silence = (heartbeat * 10).max(Duration::from_secs(5));

    let (tx, mut rx) = mpsc::channel::<Bytes>(OUTBOX);
    worker.connect(tx.clone());
    let outgoing = proto::pump::<FromExecutor, _>(&mut writer, &mut rx, heartbeat);
    let send = |msg: FromExecutor| {
        let tx = tx.clone();
        async move {
            if let Ok(frame) = proto::encode(&msg) {
                let _ = tx.send(frame).await;
            }
        }
    };
    let incoming = async {
        let mut partitions = Partitions {
            cache,
            waiting: HashMap::new(),
            shared: SharedCuts::default(),
        };
        loop {
            match reader
                .recv_within(silence, "a message or heartbeat from the driver")
                .await?
            {
                ToExecutor::Heartbeat => {}
                ToExecutor::Assign(task) => partitions.assign(*task, worker, &send).await,
                ToExecutor::Partition { hash, bytes } => partitions.received(hash, bytes, worker, &send).await?,
                ToExecutor::PartitionAt { hash, partition } => {
                    partitions.read_shared(hash, partition, worker, &send).await?
                }
                ToExecutor::Params {
                    job,
                    stage,
                    version,
                    compression,
                    values,
                } => worker.params(job, stage, version, Some(compression.widen(values.0)?)),
                ToExecutor::Unchanged { job, stage, version } => worker.params(job, stage, version, None),
                ToExecutor::Frozen { job, stage, layers } => {
                    let layers = layers.iter().map(|t| t.to_vec()).collect::<Result<Vec<_>, _>>()?;
                    worker.frozen(job, stage, layers);
                }
                ToExecutor::CancelTasks { job } => {
                    tracing::info!(job, "tasks cancelled by the driver");
                    partitions.waiting.clear();
                    worker.abandon_tasks();
                }
                ToExecutor::RunOver { state } => return Ok(Some(state)),
            }
        }
    };
    let result: Result<Option<_>, ProtoError> = tokio::select! {
        r = outgoing => r.map(|()| None),
        r = incoming => r,
    };
    worker.disconnect();
    match result {
        Ok(Some(state)) => {
            // Leave cleanly: the driver then logs a departure, not a loss.
            let _ = writer.close().await;
            Ok(Ended::RunOver(state))
        }
        Ok(None) | Err(ProtoError::Closed) => Ok(Ended::Served),
        Err(e) => Err(e),
    }
}

/// Tasks waiting for their partition on this connection, and where
/// partitions come from: the driver's frames, or a shared filesystem.
struct Partitions<'a> {
    cache: &'a PartitionCache,
    waiting: HashMap<u128, Vec<TaskSpec>>,
    /// The last job's data as read from the shared filesystem.
    shared: SharedCuts,
}

impl Partitions<'_> {
    /// Starts an assigned task if its partition is cached; otherwise asks
    /// the driver for it, once however many tasks wait on it.
    async fn assign<F: std::future::Future<Output = ()>>(
        &mut self,
        task: TaskSpec,
        worker: &WorkerHandle,
        send: &impl Fn(FromExecutor) -> F,
    ) {
        if let Some(data) = self.cache.get(task.partition_hash) {
            return worker.submit(WorkItem { task, data });
        }
        let hash = task.partition_hash;
        let first = !self.waiting.contains_key(&hash);
        self.waiting.entry(hash).or_default().push(task);
        if first {
            send(FromExecutor::NeedPartition { hash }).await;
        }
    }

    /// Partition bytes from the driver: checked against their hash,
    /// decoded and cached off the connection's task, then handed on.
    async fn received<F: std::future::Future<Output = ()>>(
        &mut self,
        hash: u128,
        bytes: Bytes,
        worker: &WorkerHandle,
        send: &impl Fn(FromExecutor) -> F,
    ) -> Result<(), ProtoError> {
        let cache = self.cache.clone();
        let decoded = tokio::task::spawn_blocking(move || cache.insert_encoded(hash, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tasks = self.waiting.remove(&hash).unwrap_or_default();
        hand_on(decoded, tasks, worker, send).await;
        Ok(())
    }

    /// The driver says the partition is on the shared filesystem: it is
    /// read and cut here, and must hash as the driver's did.
    async fn read_shared<F: std::future::Future<Output = ()>>(
        &mut self,
        hash: u128,
        partition: u32,
        worker: &WorkerHandle,
        send: &impl Fn(FromExecutor) -> F,
    ) -> Result<(), ProtoError> {
        let tasks = self.waiting.remove(&hash).unwrap_or_default();
        let Some(first) = tasks.first() else {
            return Ok(());
        };
        let (job, spec, cache) = (first.id.job, first.spec.clone(), self.cache.clone());
        let mut memo = std::mem::take(&mut self.shared);
        let (read, memo) = tokio::task::spawn_blocking(move || {
            let read = memo
                .partition(job, &spec, partition)
                .and_then(|p| cache.insert_read(hash, p));
            (read, memo)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.shared = memo;
        hand_on(read, tasks, worker, send).await;
        Ok(())
    }
}

/// Starts the tasks that waited for a partition, or fails them with why it
/// could not be had.
async fn hand_on<F: std::future::Future<Output = ()>>(
    partition: Result<std::sync::Arc<deepdist_core::data::Dataset>, PartitionUnavailable>,
    tasks: Vec<TaskSpec>,
    worker: &WorkerHandle,
    send: &impl Fn(FromExecutor) -> F,
) {
    match partition {
        Ok(data) => {
            for task in tasks {
                worker.submit(WorkItem {
                    task,
                    data: data.clone(),
                });
            }
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::error!(%reason, "partition unavailable");
            for task in tasks {
                send(FromExecutor::TaskFailed {
                    task: task.id,
                    reason: reason.clone(),
                    diverged: false,
                })
                .await;
            }
        }
    }
}
