//! Showing a job's progress to a person: one bar over every partition of
//! every epoch of every stage, one line per evaluated epoch, and a summary.

use deepdist_core::job::JobSpec;
use deepdist_wire::proto::{EpochMetrics, JobSummary, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Draws progress events as they arrive.
pub struct ProgressView {
    bar: ProgressBar,
    /// Each stage's name and epochs, in order.
    stages: Vec<(String, u32)>,
    sized: bool,
}

/// What an epoch line reports: accuracy for supervised stages, reconstruction for RBMs.
fn quality(m: &EpochMetrics) -> String {
    match (m.test_accuracy, m.reconstruction_error) {
        (Some(a), _) if m.validation => format!("validation accuracy {:.2}%", 100.0 * a),
        (Some(a), _) => format!("test accuracy {:.2}%", 100.0 * a),
        (None, Some(r)) => format!("reconstruction error {r:.2}"),
        (None, None) => String::new(),
    }
}

impl ProgressView {
    /// A view for this job.
    pub fn new(spec: &JobSpec) -> Self {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(spec.name.clone());
        Self {
            bar,
            stages: spec.stages().into_iter().map(|s| (s.name, s.epochs)).collect(),
            sized: false,
        }
    }

    fn epochs_before(&self, stage: &str) -> u32 {
        self.stages.iter().take_while(|(n, _)| n != stage).map(|(_, e)| e).sum()
    }

    fn epochs_of(&self, stage: &str) -> u32 {
        self.stages.iter().find(|(n, _)| n == stage).map_or(0, |(_, e)| *e)
    }

    /// Shows one event.
    pub fn update(&mut self, event: Progress) {
        match event {
            Progress::Task {
                stage,
                epoch,
                done,
                total,
            } => {
                if !self.sized {
                    let all: u32 = self.stages.iter().map(|(_, e)| e).sum();
                    self.bar.set_length(u64::from(total) * u64::from(all));
                    self.sized = true;
                }
                let epochs = u64::from(self.epochs_before(&stage) + epoch.saturating_sub(1));
                let pos = epochs * u64::from(total) + u64::from(done);
                self.bar.set_position(pos.max(self.bar.position()));
                if self.bar.message().is_empty() {
                    self.bar
                        .set_message(format!("{stage} epoch {epoch}/{}", self.epochs_of(&stage)));
                }
            }
            Progress::Epoch(m) => {
                let epochs = self.epochs_of(&m.stage);
                // Printed beside the bar, not through it: a hidden bar (no
                // terminal) would swallow the line.
                self.bar.suspend(|| {
                    println!(
                        "{:<8} epoch {:>3}/{epochs}  {:>7.1} s  train loss {:.4}  {}  {:>7.0} samples/s  staleness {:.1}  partitions {}/{}{}",
                        m.stage,
                        m.epoch,
                        m.train_s,
                        m.train_loss,
                        quality(&m),
                        m.samples_per_s,
                        m.mean_staleness,
                        m.partitions_trained,
                        m.partitions,
                        if m.reassigned > 0 { format!("  ({} reassigned)", m.reassigned) } else { String::new() }
                    );
                    if let Some(why) = &m.diverging {
                        println!("         DIVERGING: {why}");
                    }
                });
                self.bar.set_message(format!(
                    "{} epoch {}/{epochs} · loss {:.4} · {} · {:.0} samples/s",
                    m.stage,
                    m.epoch,
                    m.train_loss,
                    quality(&m),
                    m.samples_per_s
                ));
            }
        }
    }

    /// Clears the bar and prints the summary.
    pub fn finish(self, summary: &JobSummary) {
        self.bar.finish_and_clear();
        println!("\njob {} ({}) {}", summary.job, summary.name, summary.state);
        match (summary.final_accuracy, summary.test_accuracy) {
            (Some(acc), None) => println!(
                "  final test accuracy  {:.2}% after {} epochs",
                100.0 * acc,
                summary.epochs
            ),
            (Some(acc), Some(test)) => {
                println!(
                    "  validation accuracy  {:.2}% after {} epochs",
                    100.0 * acc,
                    summary.epochs
                );
                println!("  test accuracy        {:.2}% (scored once, at the end)", 100.0 * test);
            }
            (None, _) => {}
        }
        println!("  wall time            {:.1} s", summary.elapsed_s);
        if let Some(t) = summary.time_to_target {
            println!("  time to target       {t:.1} s of training");
        }
        if let Some(w) = &summary.warning {
            println!("  warning              diverging: {w}");
        }
        if let Some(e) = &summary.error {
            println!("  error                {e}");
        }
        if !summary.output_dir.is_empty() {
            println!(
                "  outputs              {}/ (metrics.jsonl, model.safetensors)",
                summary.output_dir
            );
        }
    }
}
