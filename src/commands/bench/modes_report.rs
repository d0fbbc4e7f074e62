//! The mode comparison's outputs: `modes.md` (medians), `modes.csv` (every
//! run), `modes-curves.svg` (test accuracy against training time, one curve
//! per mode) and `modes-executors.svg` (final accuracy against executors).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use deepdist_core::bench::median;
use plotters::prelude::*;

use super::dbn_report::{TAB10, draw_legend, draw_line, percent, plot_error, seconds};
use super::job::write;

/// One run of one mode with some executors.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeRun {
    /// The mode (`async+hogwild` for Hogwild! executors).
    pub label: String,
    /// Executors.
    pub executors: usize,
    /// Which run of this configuration, from 1.
    pub round: usize,
    /// Test accuracy after the last epoch.
    pub final_accuracy: f64,
    /// Best epoch's test accuracy.
    pub best_accuracy: f64,
    /// Training seconds to the job's target accuracy.
    pub time_to_target: Option<f64>,
    /// Epochs to it.
    pub epochs_to_target: Option<u32>,
    /// Mean of the epochs' samples/s.
    pub samples_per_s: f64,
    /// Mean of the epochs' mean staleness.
    pub staleness: f64,
    /// (training seconds, test accuracy) after each epoch.
    pub curve: Vec<(f64, f64)>,
}

/// The labels in the order they first appear, and the executor counts.
fn axes(runs: &[ModeRun]) -> (Vec<String>, Vec<usize>) {
    let mut labels: Vec<String> = Vec::new();
    for r in runs {
        if !labels.contains(&r.label) {
            labels.push(r.label.clone());
        }
    }
    let executors: BTreeSet<usize> = runs.iter().map(|r| r.executors).collect();
    (labels, executors.into_iter().collect())
}

/// The median of `f` over the runs of one configuration.
fn med(runs: &[&ModeRun], f: impl Fn(&ModeRun) -> Option<f64>) -> Option<f64> {
    let mut values: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
    // A target reached in fewer than half the runs has no median.
    (values.len() * 2 > runs.len()).then(|| median(&mut values))
}

/// The Markdown report.
pub fn markdown(runs: &[ModeRun], peak: f64) -> String {
    let (labels, executors) = axes(runs);
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    let mut out = format!(
        "Medians of {rounds} runs per row, release build, `deepdist local`; this machine's f32 GEMM peak \
         at the start: {peak:.0} GFLOP/s. Times are training seconds (from the first partition handed out).\n\n\
         | mode | executors | final accuracy | (min–max) | Δ vs {} executors | time to target | epochs to target | samples/s | staleness |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        executors.first().copied().unwrap_or(0)
    );
    for label in &labels {
        let first = executors
            .first()
            .and_then(|&e| med(&of(runs, label, e), |r| Some(r.final_accuracy)));
        for &e in &executors {
            let group = of(runs, label, e);
            if group.is_empty() {
                continue;
            }
            let finals: Vec<f64> = group.iter().map(|r| r.final_accuracy).collect();
            let (lo, hi) = finals
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), &a| (lo.min(a), hi.max(a)));
            let accuracy = med(&group, |r| Some(r.final_accuracy));
            let delta = match (accuracy, first) {
                (Some(a), Some(f)) => format!("{:+.2}", (a - f) * 100.0),
                _ => "—".into(),
            };
            let _ = writeln!(
                out,
                "| {label} | {e} | {} | {:.2}–{:.2}% | {delta} | {} | {} | {:.0} | {:.1} |",
                percent(accuracy),
                lo * 100.0,
                hi * 100.0,
                seconds(med(&group, |r| r.time_to_target)),
                med(&group, |r| r.epochs_to_target.map(f64::from)).map_or("—".into(), |e| format!("{e:.0}")),
                med(&group, |r| Some(r.samples_per_s)).unwrap_or(0.0),
                med(&group, |r| Some(r.staleness)).unwrap_or(0.0),
            );
        }
    }
    out
}

fn of<'a>(runs: &'a [ModeRun], label: &str, executors: usize) -> Vec<&'a ModeRun> {
    runs.iter()
        .filter(|r| r.label == label && r.executors == executors)
        .collect()
}

/// Every run, one line each.
pub fn csv(runs: &[ModeRun]) -> String {
    let mut out = String::from(
        "mode,executors,run,final_accuracy,best_accuracy,time_to_target_s,epochs_to_target,samples_per_s,staleness\n",
    );
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for r in runs {
        let _ = writeln!(
            out,
            "{},{},{},{:.4},{:.4},{},{},{:.0},{:.2}",
            r.label,
            r.executors,
            r.round,
            r.final_accuracy,
            r.best_accuracy,
            cell(r.time_to_target),
            r.epochs_to_target.map_or(String::new(), |e| e.to_string()),
            r.samples_per_s,
            r.staleness
        );
    }
    out
}

/// Test accuracy against training time with the fewest executors, the
/// first run of each mode.
fn plot_curves(runs: &[ModeRun], path: &Path) -> anyhow::Result<()> {
    let (labels, executors) = axes(runs);
    let fewest = executors.first().copied().unwrap_or(0);
    let curves: Vec<(&String, &Vec<(f64, f64)>)> = labels
        .iter()
        .filter_map(|l| Some((l, &of(runs, l, fewest).first()?.curve)))
        .collect();
    let max_t = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("test accuracy, {fewest} executors"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..max_t * 1.02, 0.95..0.99)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("training seconds")
        .y_label_formatter(&|a| format!("{:.1}%", a * 100.0))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(plot_error)?;
    for (i, (label, curve)) in curves.iter().enumerate() {
        let color = TAB10[i % TAB10.len()].to_rgba();
        let points: Vec<(f64, f64)> = curve.iter().map(|&(t, a)| (t, a.clamp(0.95, 0.99))).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)
}

/// Median final accuracy against executors (log₂ axis), one line per mode.
fn plot_executors(runs: &[ModeRun], path: &Path) -> anyhow::Result<()> {
    let (labels, executors) = axes(runs);
    let log = |e: usize| (e as f64).log2();
    let (lo, hi) = (
        log(executors.first().copied().unwrap_or(1)) - 0.3,
        log(executors.last().copied().unwrap_or(2)) + 0.3,
    );
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("final test accuracy against executors", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, 0.95..0.99)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("executors")
        .x_labels(executors.len().max(2) * 2)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{}", 2f64.powf(x.round()))
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|a| format!("{:.1}%", a * 100.0))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(plot_error)?;
    for (i, label) in labels.iter().enumerate() {
        let color = TAB10[i % TAB10.len()].to_rgba();
        let points: Vec<(f64, f64)> = executors
            .iter()
            .filter_map(|&e| {
                Some((
                    log(e),
                    med(&of(runs, label, e), |r| Some(r.final_accuracy))?.clamp(0.95, 0.99),
                ))
            })
            .collect();
        draw_line(&mut chart, points, color, label.to_string())?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    root.present().map_err(plot_error)
}

/// Writes and prints the report.
pub fn report(runs: &[ModeRun], peak: f64, out: &Path) -> anyhow::Result<()> {
    let table = markdown(runs, peak);
    write(&out.join("modes.md"), &table)?;
    write(&out.join("modes.csv"), &csv(runs))?;
    plot_curves(runs, &out.join("modes-curves.svg"))?;
    plot_executors(runs, &out.join("modes-executors.svg"))?;
    println!("\n{table}");
    for f in ["modes.md", "modes.csv", "modes-curves.svg", "modes-executors.svg"] {
        println!("wrote {}", out.join(f).display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, executors: usize, round: usize, accuracy: f64) -> ModeRun {
        ModeRun {
            label: label.into(),
            executors,
            round,
            final_accuracy: accuracy,
            best_accuracy: accuracy,
            time_to_target: (accuracy >= 0.98).then_some(10.0),
            epochs_to_target: (accuracy >= 0.98).then_some(5),
            samples_per_s: 1000.0,
            staleness: 2.0,
            curve: vec![(5.0, 0.97), (10.0, accuracy)],
        }
    }

    #[test]
    fn the_table_gives_medians_and_the_change_from_the_fewest_executors() {
        let runs = [
            run("async", 2, 1, 0.982),
            run("async", 2, 2, 0.980),
            run("async", 2, 3, 0.984),
            run("async", 8, 1, 0.975),
            run("async", 8, 2, 0.979),
            run("async", 8, 3, 0.970),
        ];
        let table = markdown(&runs, 150.0);
        assert!(table.contains("150 GFLOP/s"), "{table}");
        assert!(
            table.contains("| async | 2 | 98.20% | 98.00–98.40% | +0.00 | 10.0 s | 5 |"),
            "{table}"
        );
        // One run of three reached 98%: no median time.
        assert!(
            table.contains("| async | 8 | 97.50% | 97.00–97.90% | -0.70 | — | — |"),
            "{table}"
        );
        assert_eq!(csv(&runs).lines().count(), 7);
        let dir = tempfile::tempdir().unwrap();
        report(&runs, 150.0, dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("modes-executors.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("async"));
    }
}
