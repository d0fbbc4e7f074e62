//! The DBN grid's outputs: a Markdown table, a CSV file (which can be read
//! back to redraw), and an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRun {
    pub executors: usize,
    pub cores: usize,
    pub partitions: u32,
    /// Seconds from the job's start to the first epoch above each of [`super::dbn_grid::THRESHOLDS`].
    pub time_to: [Option<f64>; 2],
    pub best_accuracy: Option<f64>,
    pub elapsed_s: f64,
}

impl GridRun {
    /// "executors × cores".
    pub fn label(&self) -> String {
        format!("{} × {}", self.executors, self.cores)
    }
}

pub fn seconds(t: Option<f64>) -> String {
    t.map_or("—".into(), |t| format!("{t:.1} s"))
}

pub fn percent(a: Option<f64>) -> String {
    a.map_or("—".into(), |a| format!("{:.2}%", a * 100.0))
}

/// Time to > 90% of the 1 × 1 run with the same partitions over this
/// run's; where there is none and one 1 × 1 run (one partition per
/// executor, as the study cut its data), that run's.
fn speedup(runs: &[GridRun], run: &GridRun) -> Option<f64> {
    let singles: Vec<&GridRun> = runs.iter().filter(|r| r.executors == 1 && r.cores == 1).collect();
    let single = match singles.iter().find(|r| r.partitions == run.partitions) {
        Some(single) => single,
        None if singles.len() == 1 => singles[0],
        None => return None,
    };
    Some(single.time_to[0]? / run.time_to[0]?)
}

/// The Markdown table.
pub fn markdown(runs: &[GridRun]) -> String {
    let mut out = String::from(
        "| executors × cores | partitions | > 90% at | ≥ 98% at | speed-up to > 90% (vs 1 × 1) | best accuracy | run |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} s |",
            run.label(),
            run.partitions,
            seconds(run.time_to[0]),
            seconds(run.time_to[1]),
            speedup(runs, run).map_or("—".into(), |s| format!("{s:.2}")),
            percent(run.best_accuracy),
            run.elapsed_s
        );
    }
    out
}

/// The CSV file (empty cells for thresholds never reached).
pub fn csv(runs: &[GridRun]) -> String {
    let mut out = String::from("executors,cores,partitions,time_to_90_s,time_to_98_s,best_accuracy,elapsed_s\n");
    let cell = |v: Option<f64>, decimals: usize| v.map_or(String::new(), |v| format!("{v:.decimals$}"));
    for run in runs {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.3}",
            run.executors,
            run.cores,
            run.partitions,
            cell(run.time_to[0], 3),
            cell(run.time_to[1], 3),
            cell(run.best_accuracy, 4),
            run.elapsed_s
        );
    }
    out
}

/// Matplotlib's "tab10" colours: distinct from each other and on white.
pub const TAB10: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// Reads runs back from [`csv`]'s format.
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<GridRun>> {
    let mut lines = text.lines();
    anyhow::ensure!(
        lines.next() == csv(&[]).lines().next(),
        "not a dbn-grid CSV file (its header differs)"
    );
    lines
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').collect();
            anyhow::ensure!(
                cells.len() == 7,
                "line {}: expected 7 cells, found {}",
                i + 2,
                cells.len()
            );
            let number = |j: usize| -> anyhow::Result<Option<f64>> {
                match cells[j] {
                    "" => Ok(None),
                    cell => cell
                        .parse()
                        .map(Some)
                        .with_context(|| format!("line {}: `{cell}` is not a number", i + 2)),
                }
            };
            let count = |j: usize| -> anyhow::Result<u32> {
                cells[j]
                    .parse()
                    .with_context(|| format!("line {}: `{}` is not a count", i + 2, cells[j]))
            };
            Ok(GridRun {
                executors: count(0)? as usize,
                cores: count(1)? as usize,
                partitions: count(2)?,
                time_to: [number(3)?, number(4)?],
                best_accuracy: number(5)?,
                elapsed_s: number(6)?.unwrap_or(0.0),
            })
        })
        .collect()
}

/// Two panels (time to > 90%, to ≥ 98%) against partitions on a log₂ axis
/// (ticks at powers of two), one line per executors × cores.
pub fn plot(runs: &[GridRun], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut labels: Vec<String> = runs.iter().map(GridRun::label).collect();
    labels.dedup();
    let octave = |p: u32| f64::from(p).log2();
    let max_x = octave(runs.iter().map(|r| r.partitions).max().unwrap_or(2)) + 0.3;
    let min_x = octave(runs.iter().map(|r| r.partitions).min().unwrap_or(1)) - 0.3;
    for (panel, (area, title)) in root
        .split_evenly((1, 2))
        .iter()
        .zip(["time to > 90% test accuracy", "time to ≥ 98% test accuracy"])
        .enumerate()
    {
        // Headroom above the highest point for the legend.
        let max_t = runs.iter().filter_map(|r| r.time_to[panel]).fold(1.0, f64::max) * 1.35;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(min_x..max_x, 0.0..max_t)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("partitions")
            .y_desc("seconds from the job's start")
            .x_labels(((max_x - min_x).ceil() as usize + 1).max(2))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{}", 2f64.powf(x.round()))
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|t| format!("{t:.0}"))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(plot_error)?;
        for (i, label) in labels.iter().enumerate() {
            let color = TAB10[i % TAB10.len()].to_rgba();
            let points: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| &r.label() == label)
                .filter_map(|r| Some((octave(r.partitions), r.time_to[panel]?)))
                .collect();
            draw_line(&mut chart, points, color, format!("{label} (executors × cores)"))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

pub fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the plot: {e}")
}

/// The benchmark reports' charts: `f64` on both axes, drawn as SVG.
pub type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Draws one labelled series: a line with a dot at each point.
pub fn draw_line(
    chart: &mut Chart<'_, '_>,
    points: Vec<(f64, f64)>,
    color: RGBAColor,
    label: String,
) -> anyhow::Result<()> {
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
        .map_err(plot_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))
        .map_err(plot_error)?;
    Ok(())
}

/// Draws the legend of the series drawn so far, at `position`.
pub fn draw_legend<'b>(chart: &mut Chart<'b, 'b>, position: SeriesLabelPosition) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_compares_each_run_with_one_core() {
        let run = |executors, cores, t90| GridRun {
            executors,
            cores,
            partitions: 8,
            time_to: [Some(t90), None],
            best_accuracy: Some(0.975),
            elapsed_s: 30.0,
        };
        let runs = [run(1, 1, 20.0), run(2, 1, 10.0)];
        let table = markdown(&runs);
        assert!(
            table.contains("| 2 × 1 | 8 | 10.0 s | — | 2.00 | 97.50% | 30.0 s |"),
            "{table}"
        );
        let csv = csv(&runs);
        assert_eq!(csv.lines().nth(2), Some("2,1,8,10.000,,0.9750,30.000"));
        assert_eq!(parse_csv(&csv).unwrap(), runs);
        let err = parse_csv(&csv.replace("10.000", "ten")).unwrap_err();
        assert!(format!("{err:#}").contains("line 3: `ten` is not a number"), "{err:#}");
        assert!(parse_csv("a,b\n1,2").is_err());
    }

    #[test]
    fn the_plot_is_an_svg_with_both_panels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.svg");
        let runs: Vec<GridRun> = [2u32, 8, 32]
            .iter()
            .map(|&p| GridRun {
                executors: 2,
                cores: 1,
                partitions: p,
                time_to: [Some(10.0 + f64::from(p)), Some(60.0)],
                best_accuracy: Some(0.98),
                elapsed_s: 70.0,
            })
            .collect();
        plot(&runs, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("time to &gt; 90% test accuracy") || svg.contains("time to > 90% test accuracy"));
        assert!(svg.contains("2 × 1 (executors × cores)"));
    }
}
