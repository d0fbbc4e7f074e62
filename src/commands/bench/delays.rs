//! `deepdist bench delays`: delay-tolerant optimizers against delay. The
//! parameter server applies every update `inject_delay` updates after it
//! arrived (on top of the cluster's own staleness), and the sweep job is
//! trained with each optimizer at each delay: AdaGrad, AdaRevision (McMahan
//! & Streeter 2014), SGD with the rate divided by staleness, and DC-ASGD
//! (Zheng et al. 2017). As in McMahan & Streeter's comparison, each
//! optimizer runs at several rates and the best (by median) counts at each
//! delay. Outputs: `delays.md`, `delays.csv`, `delays.svg`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use deepdist_core::bench::median;
use deepdist_core::job::JobSpec;
use deepdist_core::optim::{OptimizerConfig, OptimizerKind};
use plotters::prelude::*;

use super::dbn_report::{TAB10, draw_legend, draw_line, plot_error};
use super::job::{Target, bench_driver, run_job, write};
use crate::cli::DelaysBenchArgs;

/// The sweep's job: a small MLP, so that the versions DC-ASGD and
/// AdaRevision keep for 1,024 delayed updates fit in memory; plain steps
/// pushed one minibatch at a time, so that every update is a gradient.
pub const SWEEP_JOB: &str = r#"name = "delay-sweep"
[data]
partitions = 16
[model]
hidden = [128]
[train]
mode = "async"
epochs = 3
batch_size = 32
n_push = 1
n_fetch = 1
"#;

/// Multiples of each optimizer's rate that the sweep tries at every delay.
pub const RATE_FACTORS: [f32; 4] = [4.0, 1.0, 0.25, 0.0625];

/// The optimizers swept, each at its base rate.
pub fn optimizers() -> [(&'static str, OptimizerConfig); 4] {
    let base = OptimizerConfig::default();
    [
        (
            "AdaGrad",
            OptimizerConfig {
                kind: OptimizerKind::Adagrad,
                lr: 0.02,
                ..base
            },
        ),
        (
            "AdaRevision",
            OptimizerConfig {
                kind: OptimizerKind::Adarevision,
                lr: 0.02,
                ..base
            },
        ),
        (
            "SGD, rate / staleness",
            OptimizerConfig {
                lr: 0.1,
                staleness_scaled: true,
                ..base
            },
        ),
        (
            "DC-ASGD",
            OptimizerConfig {
                kind: OptimizerKind::Dcasgd,
                lr: 0.1,
                lambda: Some(2.0),
                ..base
            },
        ),
    ]
}

/// One run of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayRun {
    /// The optimizer's label.
    pub optimizer: String,
    /// The injected delay.
    pub delay: u32,
    /// The learning rate.
    pub lr: f32,
    /// Which run, from 1.
    pub round: usize,
    /// Test accuracy at the end.
    pub final_accuracy: f64,
    /// Mean staleness of the applied updates, over the epochs.
    pub staleness: f64,
}

/// The sweep's job for one optimizer and delay.
pub fn sweep_job(optimizer: &OptimizerConfig, delay: u32) -> anyhow::Result<JobSpec> {
    let mut spec = JobSpec::from_toml(SWEEP_JOB, "the delay sweep's job")?;
    spec.train.inject_delay = Some(delay);
    spec.optimizer = *optimizer;
    if optimizer.kind == OptimizerKind::Adarevision {
        // Remember every delay the updates will have.
        spec.optimizer.max_staleness = Some(delay + 64);
    }
    spec.validate("the delay sweep's job")?;
    Ok(spec)
}

/// Runs the sweep and writes its outputs.
pub fn run(args: DelaysBenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark figures need `cargo run --release -- bench delays`");
    }
    anyhow::ensure!(
        args.runs > 0 && !args.delays.is_empty(),
        "--runs and --delays need values"
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let driver = bench_driver(&args.out, &args.data);
    let runtime = crate::roles::runtime()?;
    let optimizers = optimizers();
    let total = args.runs * optimizers.len() * args.delays.len() * RATE_FACTORS.len();
    let mut runs = Vec::new();
    for round in 1..=args.runs {
        for (label, optimizer) in &optimizers {
            for (&delay, factor) in args
                .delays
                .iter()
                .flat_map(|d| RATE_FACTORS.iter().map(move |f| (d, f)))
            {
                let optimizer = OptimizerConfig {
                    lr: optimizer.lr * factor,
                    ..*optimizer
                };
                let spec = sweep_job(&optimizer, delay)?;
                print!(
                    "[{}/{total}] {label}, lr {}, delay {delay}, run {round} … ",
                    runs.len() + 1,
                    optimizer.lr
                );
                std::io::Write::flush(&mut std::io::stdout())?;
                let target = Target::Local {
                    config: Box::new(driver.clone()),
                    executors: 2,
                    cores: 1,
                };
                let job = runtime.block_on(run_job(target, &spec))?;
                let n = job.epochs.len().max(1) as f64;
                let run = DelayRun {
                    optimizer: label.to_string(),
                    delay,
                    lr: optimizer.lr,
                    round,
                    final_accuracy: job.summary.final_accuracy.unwrap_or(0.0),
                    staleness: job.epochs.iter().map(|l| l.mean_staleness).sum::<f64>() / n,
                };
                println!("{:.2}%", run.final_accuracy * 100.0);
                runs.push(run);
            }
        }
        // After every round, as the modes bench does: a cut-short sweep keeps its rounds.
        report(&runs, &args.out)?;
    }
    Ok(())
}

fn axes(runs: &[DelayRun]) -> (Vec<String>, Vec<u32>) {
    let mut labels: Vec<String> = Vec::new();
    let mut delays: Vec<u32> = Vec::new();
    for r in runs {
        if !labels.contains(&r.optimizer) {
            labels.push(r.optimizer.clone());
        }
        if !delays.contains(&r.delay) {
            delays.push(r.delay);
        }
    }
    delays.sort_unstable();
    (labels, delays)
}

/// The best rate's median final accuracy of one optimizer at one delay, and that rate.
fn cell(runs: &[DelayRun], label: &str, delay: u32) -> Option<(f64, f32)> {
    let mut rates: Vec<f32> = Vec::new();
    for r in runs.iter().filter(|r| r.optimizer == label && r.delay == delay) {
        if !rates.contains(&r.lr) {
            rates.push(r.lr);
        }
    }
    rates
        .into_iter()
        .map(|lr| {
            let mut values: Vec<f64> = runs
                .iter()
                .filter(|r| r.optimizer == label && r.delay == delay && r.lr == lr)
                .map(|r| r.final_accuracy)
                .collect();
            (median(&mut values), lr)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The Markdown table: optimizers down, delays across.
pub fn markdown(runs: &[DelayRun]) -> String {
    let (labels, delays) = axes(runs);
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    let mut out = format!(
        "Final test accuracy at the best rate (median of {rounds} runs, rate in brackets); the server applies every \
         update `delay` updates late.\n\n| optimizer |"
    );
    for d in &delays {
        let _ = write!(out, " delay {d} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(delays.len()));
    out.push('\n');
    for label in &labels {
        let _ = write!(out, "| {label} |");
        for &d in &delays {
            let text = cell(runs, label, d).map_or("—".into(), |(a, lr)| format!("{:.2}% ({lr})", a * 100.0));
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out
}

/// Every run, one line each.
pub fn csv(runs: &[DelayRun]) -> String {
    let mut out = String::from("optimizer,lr,delay,run,final_accuracy,mean_staleness\n");
    for r in runs {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.4},{:.1}",
            r.optimizer, r.lr, r.delay, r.round, r.final_accuracy, r.staleness
        );
    }
    out
}

/// Accuracy against delay (log₂ of 1 + delay), one line per optimizer.
fn plot(runs: &[DelayRun], path: &Path) -> anyhow::Result<()> {
    let (labels, delays) = axes(runs);
    let x = |d: u32| f64::from(d + 1).log2();
    let max_x = x(delays.last().copied().unwrap_or(1)) + 0.5;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("final test accuracy against the update delay", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..max_x, 0.0..1.0)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("delay (updates, log scale)")
        .x_labels(delays.len() * 4)
        .x_label_formatter(&|v| {
            delays
                .iter()
                .find(|&&d| (x(d) - v).abs() < 0.05)
                .map_or(String::new(), |d| d.to_string())
        })
        .y_label_formatter(&|a| format!("{:.0}%", a * 100.0))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(plot_error)?;
    for (i, label) in labels.iter().enumerate() {
        let color = TAB10[i % TAB10.len()].to_rgba();
        let points: Vec<(f64, f64)> = delays
            .iter()
            .filter_map(|&d| Some((x(d), cell(runs, label, d)?.0)))
            .collect();
        draw_line(&mut chart, points, color, label.to_string())?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    root.present().map_err(plot_error)
}

/// Writes and prints the outputs.
pub fn report(runs: &[DelayRun], out: &Path) -> anyhow::Result<()> {
    let table = markdown(runs);
    write(&out.join("delays.md"), &table)?;
    write(&out.join("delays.csv"), &csv(runs))?;
    plot(runs, &out.join("delays.svg"))?;
    println!("\n{table}");
    for f in ["delays.md", "delays.csv", "delays.svg"] {
        println!("wrote {}", out.join(f).display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_optimizer_makes_a_valid_sweep_job_at_every_delay() {
        for (_, optimizer) in optimizers() {
            for delay in [0, 1024] {
                let spec = sweep_job(&optimizer, delay).unwrap();
                assert_eq!(spec.train.inject_delay, Some(delay));
            }
        }
    }

    #[test]
    fn the_table_has_a_column_per_delay() {
        let run = |optimizer: &str, delay, final_accuracy| DelayRun {
            optimizer: optimizer.into(),
            delay,
            lr: 0.1,
            round: 1,
            final_accuracy,
            staleness: 1.0,
        };
        let slower = DelayRun {
            lr: 0.025,
            ..run("AdaGrad", 64, 0.93)
        };
        let runs = [
            run("AdaGrad", 0, 0.97),
            run("AdaGrad", 64, 0.9),
            slower,
            run("DC-ASGD", 0, 0.96),
        ];
        let table = markdown(&runs);
        assert!(table.contains("| optimizer | delay 0 | delay 64 |"), "{table}");
        assert!(
            table.contains("| AdaGrad | 97.00% (0.1) | 93.00% (0.025) |"),
            "the best rate counts: {table}"
        );
        assert!(table.contains("| DC-ASGD | 96.00% (0.1) | — |"), "{table}");
        let dir = tempfile::tempdir().unwrap();
        report(&runs, dir.path()).unwrap();
        assert!(dir.path().join("delays.svg").exists());
    }
}
