//! `/metrics`: the driver's counters in Prometheus's format, read at each
//! scrape (prometheus-client's `Collector`). Names follow Prometheus's
//! conventions: a `deepdist_` prefix, base units, `_total` counters, and no
//! label with more than a handful of values.

use deepdist_core::job::JobState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::staleness::{BOUNDS, StalenessLog};
use crate::state::Shared;
use crate::timings::Timings;
use deepdist_wire::proto::StatusReport;

/// The OpenMetrics content type, which Prometheus asks for first.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus's classic text format, for everyone else (promtool included).
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The scrape in OpenMetrics.
pub fn render(shared: &std::sync::Arc<Shared>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(shared.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The same in the classic text format: a counter's `HELP` and `TYPE` name
/// its `_total` series, and OpenMetrics' `UNIT` and `EOF` lines go.
pub fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

struct Scrape(std::sync::Arc<Shared>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape(..)")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.status();
        counters(&mut e, &s)?;
        shards(&mut e, &s)?;
        jobs(&mut e, &s)?;
        timings(&mut e, &self.0.timings)?;
        staleness(&mut e, &self.0.staleness)
    }
}

/// The driver's counters of updates, executors, tasks and connections.
fn counters(e: &mut DescriptorEncoder, s: &StatusReport) -> Result<(), std::fmt::Error> {
    for (name, help, v) in [
        (
            "deepdist_updates_received",
            "Updates received from executors.",
            s.updates_received,
        ),
        (
            "deepdist_updates_applied",
            "Updates handed to a parameter server.",
            s.updates_accepted,
        ),
        (
            "deepdist_executors_lost",
            "Executors lost: dropped, silent, or gone with work in hand (not those that left cleanly).",
            s.executors_lost,
        ),
        (
            "deepdist_task_leases_expired",
            "Tasks taken back from executors that made no progress.",
            s.leases_expired,
        ),
        (
            "deepdist_tasks_reassigned",
            "Tasks given back by executors that were lost.",
            s.tasks_reassigned,
        ),
        (
            "deepdist_connections_rejected",
            "Connections closed for a bad frame or handshake, or refused at a connection limit.",
            s.rejected_connections,
        ),
        (
            "deepdist_tasks_push_mismatched",
            "Finished tasks whose reported update count differs from the accepted one.",
            s.task_push_mismatches,
        ),
    ] {
        counter(e, name, help, v)?;
    }
    let mut family = e.encode_descriptor(
        "deepdist_updates_discarded",
        "Updates discarded: repeated (already applied) or late (the sender no longer held the task).",
        None,
        MetricType::Counter,
    )?;
    for (reason, v) in [
        ("repeated", s.duplicate_updates_discarded),
        ("late", s.late_updates_discarded),
    ] {
        ConstCounter::new(v).encode(family.encode_family(&[("reason", reason)])?)?;
    }
    Ok(())
}

/// Each parameter-server shard of the running stage, labelled by its index.
fn shards(e: &mut DescriptorEncoder, s: &StatusReport) -> Result<(), std::fmt::Error> {
    type Field = fn(&deepdist_wire::proto::ShardInfo) -> u64;
    let counted: [(&str, &str, Field); 4] = [
        (
            "deepdist_shard_updates",
            "Updates a parameter-server shard has applied in the running stage.",
            |s| s.updates,
        ),
        (
            "deepdist_shard_pushed_bytes",
            "Bytes of updates a parameter-server shard has received in the running stage.",
            |s| s.bytes_pushed,
        ),
        (
            "deepdist_shard_fetched_bytes",
            "Bytes of parameters a parameter-server shard has sent in the running stage.",
            |s| s.bytes_fetched,
        ),
        (
            "deepdist_shard_queued_bytes",
            "Bytes of updates waiting for a parameter-server shard.",
            |s| s.queued_bytes,
        ),
    ];
    for (name, help, field) in counted {
        let kind = match name.ends_with("queued_bytes") {
            true => MetricType::Gauge,
            false => MetricType::Counter,
        };
        let mut family = e.encode_descriptor(name, help, None, kind)?;
        for (i, shard) in s.server_shards.iter().enumerate() {
            let label = i.to_string();
            let labels = [("shard", label.as_str())];
            match kind {
                MetricType::Gauge => ConstGauge::new(field(shard) as f64).encode(family.encode_family(&labels)?)?,
                _ => ConstCounter::new(field(shard)).encode(family.encode_family(&labels)?)?,
            }
        }
    }
    Ok(())
}

/// Executors connected, jobs by state, and the running job's progress.
fn jobs(e: &mut DescriptorEncoder, s: &StatusReport) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "deepdist_executors",
        "Executors connected.",
        s.executors.len() as f64,
    )?;
    {
        let mut family = e.encode_descriptor(
            "deepdist_jobs",
            "Jobs known to the driver, by state.",
            None,
            MetricType::Gauge,
        )?;
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Done,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            let n = s.jobs.iter().filter(|j| j.state == state).count();
            let name = state.to_string();
            ConstGauge::new(n as f64).encode(family.encode_family(&[("state", name.as_str())])?)?;
        }
    }
    let Some(job) = s.jobs.iter().rev().find(|j| j.state == JobState::Running) else {
        return Ok(());
    };
    gauge(
        e,
        "deepdist_job_epochs_done",
        "Epochs of the running job's current stage evaluated.",
        f64::from(job.epochs_done),
    )?;
    match job.accuracy {
        Some(a) => gauge(
            e,
            "deepdist_job_accuracy_ratio",
            "The running job's latest evaluated accuracy (0–1).",
            a,
        ),
        None => Ok(()),
    }
}

/// How long pushes, fetches, evaluations and checkpoints took, and the
/// bytes exchanged with executors.
fn timings(e: &mut DescriptorEncoder, t: &Timings) -> Result<(), std::fmt::Error> {
    for (name, help, h) in [
        (
            "deepdist_push_duration",
            "From a push's arrival to its place in the parameter server's queue.",
            &t.push,
        ),
        (
            "deepdist_fetch_duration",
            "From a parameter fetch's arrival to its answer.",
            &t.fetch,
        ),
        ("deepdist_evaluation_duration", "Evaluating one epoch.", &t.evaluation),
        (
            "deepdist_checkpoint_duration",
            "Writing one job checkpoint.",
            &t.checkpoint,
        ),
    ] {
        h.encode(e.encode_descriptor(name, help, Some(&Unit::Seconds), h.metric_type())?)?;
    }
    for (name, help, v) in [
        ("deepdist_executor_received", "Bytes read from executors.", &t.bytes_in),
        ("deepdist_executor_sent", "Bytes written to executors.", &t.bytes_out),
    ] {
        let c = ConstCounter::new(v.load(std::sync::atomic::Ordering::Relaxed));
        c.encode(e.encode_descriptor(name, help, Some(&Unit::Bytes), c.metric_type())?)?;
    }
    Ok(())
}

/// The staleness of updates at the parameter server, as a histogram.
fn staleness(e: &mut DescriptorEncoder, tally: &StalenessLog) -> Result<(), std::fmt::Error> {
    let total = tally.total();
    let buckets: Vec<(f64, u64)> = BOUNDS
        .iter()
        .map(|&b| b as f64)
        .chain([f64::INFINITY])
        .zip(total.buckets)
        .collect();
    let mut histogram = e.encode_descriptor(
        "deepdist_update_staleness",
        "Staleness of updates at the parameter server: versions applied since the parameters they were computed from.",
        None,
        MetricType::Histogram,
    )?;
    histogram.encode_histogram::<prometheus_client::encoding::NoLabelSet>(total.sum as f64, total.count, &buckets, None)
}
