//! Showing a job's progress to a person: a bar over all partitions of all
//! epochs, one line per evaluated epoch, and a summary at the end.

use deepdist_common::proto::{JobSummary, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Draws progress events as they arrive.
pub struct ProgressView {
    bar: ProgressBar,
    partitions: Option<u32>,
    epochs: u32,
}

impl ProgressView {
    /// A view for a job of `epochs` epochs.
    pub fn new(name: &str, epochs: u32) -> Self {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        Self {
            bar,
            partitions: None,
            epochs,
        }
    }

    /// Shows one event.
    pub fn update(&mut self, event: Progress) {
        match event {
            Progress::Task { epoch, done, total } => {
                if self.partitions.is_none() {
                    self.partitions = Some(total);
                    self.bar.set_length(u64::from(total) * u64::from(self.epochs));
                }
                let pos = u64::from(epoch.saturating_sub(1)) * u64::from(total) + u64::from(done);
                self.bar.set_position(pos.max(self.bar.position()));
                if !self.bar.message().contains("accuracy") {
                    self.bar.set_message(format!("epoch {epoch}/{}", self.epochs));
                }
            }
            Progress::Epoch(m) => {
                // Printed beside the bar, not through it: a hidden bar (no
                // terminal) would swallow the line.
                self.bar.suspend(|| {
                    println!(
                        "{} epoch {:>3}/{}  {:>7.1} s  train loss {:.4}  test accuracy {:.2}%  {:>7.0} samples/s  staleness {:.1}  partitions {}/{}{}",
                        m.stage,
                        m.epoch,
                        self.epochs,
                        m.train_s,
                        m.train_loss,
                        100.0 * m.test_accuracy,
                        m.samples_per_s,
                        m.mean_staleness,
                        m.partitions_trained,
                        m.partitions,
                        if m.reassigned > 0 { format!("  ({} reassigned)", m.reassigned) } else { String::new() }
                    )
                });
                self.bar.set_message(format!(
                    "epoch {}/{} · loss {:.4} · test accuracy {:.2}% · {:.0} samples/s",
                    m.epoch,
                    self.epochs,
                    m.train_loss,
                    100.0 * m.test_accuracy,
                    m.samples_per_s
                ));
            }
        }
    }

    /// Clears the bar and prints the summary.
    pub fn finish(self, summary: &JobSummary) {
        self.bar.finish_and_clear();
        println!("\njob {} ({}) {}", summary.job, summary.name, summary.state);
        if let Some(acc) = summary.final_accuracy {
            println!(
                "  final test accuracy  {:.2}% after {} epochs",
                100.0 * acc,
                summary.epochs
            );
        }
        println!("  wall time            {:.1} s", summary.elapsed_s);
        if let Some(t) = summary.time_to_target {
            println!("  time to target       {t:.1} s of training");
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
