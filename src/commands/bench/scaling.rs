//! `deepdist bench scaling`: a job on simulated clusters of N executors × C
//! cores (`deepdist-sim`: the real executor loops, server rules and
//! optimizers in virtual time). For every N and C: epochs and updates to the
//! job's target, simulated time to it, samples/s, bytes per update, the
//! server's and its network card's utilisation, and the speed-up over one
//! executor of C cores. The cost model is measured here first: one
//! example's gradient on 1 and 2 threads, one step over the parameters.
//! Outputs `scaling.md`, `scaling.csv` and `scaling.svg`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use deepdist_core::bench::{GradientBench, median};
use deepdist_core::cpu::compute_pool;
use deepdist_core::data::cut::cut;
use deepdist_core::data::{Dataset, load};
use deepdist_core::gemm::gemm_peak;
use deepdist_core::job::{DataFormat, JobSpec};
use deepdist_core::noise::ceiling;
use deepdist_sim::{CostModel, LinkModel, SimConfig, SimJob, SimReport};

use plotters::prelude::*;

use super::dbn_report::{TAB10, draw_legend, draw_line, plot_error};
use super::job::write;
use crate::cli::{DataDirArg, ScalingBenchArgs};

/// Runs the sweep and writes its tables.
pub fn run(args: ScalingBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.executors.iter().chain(&args.cores).all(|&n| n > 0),
        "--executors and --cores take counts of at least 1"
    );
    let link = LinkModel::parse(&args.link)
        .with_context(|| format!("--link {:?}: give a rate such as 10gbit, 1gbit or 100mbit", args.link))?;
    let (spec, origin) = super::job::read_spec(args.job.as_deref())?;
    let job = load_job(spec, &args.data)?;
    let peak = gemm_peak(2);
    let mut cost = measure(&job, job.stage.batch_size as usize, link, args.seconds)?;
    if let Some(e) = args.core_efficiency {
        anyhow::ensure!((0.0..=1.0).contains(&e), "--core-efficiency is a fraction in [0, 1]");
        cost.core_efficiency = e;
    }
    println!(
        "{origin}: one example's gradient {:.1} µs on one core, each further core adds {:.0}% of one, a step {:.2} ns per value; link {}; GEMM peak {peak:.1} GFLOP/s on 2 threads",
        cost.example_s * 1e6,
        cost.core_efficiency * 100.0,
        cost.step_s_per_value * 1e9,
        args.link
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();
    let mut noise = Vec::new();
    for &cores in &args.cores {
        let mut single = None;
        for &executors in &args.executors {
            // The first run goes to the end of the job, measuring the noise
            // scale every epoch; the others stop at the target.
            let first = rows.is_empty();
            let config = SimConfig {
                executors,
                cores,
                cost,
                eval_every: args.eval_every,
                stop_at_target: !first,
                machine_threads: threads,
                machine: None,
                noise: first,
                server_shards: usize::from(args.shards),
                shard_hosts: args.shard_hosts,
            };
            let started = Instant::now();
            let report = job.simulate(&config)?;
            if executors == 1 {
                single = report.time_to_target_s;
            }
            if first {
                noise = report
                    .points
                    .iter()
                    .filter_map(|p| p.noise.map(|n| (format!("{:.2}", p.epochs), n.b_noise)))
                    .collect();
                noise.extend(report.pooled_noise(0.0).map(|b| ("pooled, all".to_string(), b)));
                noise.extend(
                    report
                        .pooled_noise(1.0)
                        .map(|b| ("pooled, from epoch 1".to_string(), b)),
                );
            }
            let row = Row::new(executors, cores, &report, single);
            println!(
                "{}   ({:.0} s to simulate)",
                row.line(),
                started.elapsed().as_secs_f64()
            );
            rows.push(row);
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let header = format!(
        "`{origin}` on simulated clusters; link {}; one example {:.1} µs on one core, each further core {:.0}% of one; a step {:.2} ns per value; GEMM peak {peak:.1} GFLOP/s on 2 threads.",
        args.link,
        cost.example_s * 1e6,
        cost.core_efficiency * 100.0,
        cost.step_s_per_value * 1e9
    );
    let batch = f64::from(job.stage.batch_size);
    let noise_table = noise_table(&noise, batch, &args.executors);
    println!("{noise_table}");
    write(
        &args.out.join("scaling.md"),
        &(markdown(&header, &rows) + "\n" + &noise_table),
    )?;
    write(&args.out.join("scaling.csv"), &csv(&rows))?;
    plot(&rows, &args.out.join("scaling.svg"))?;
    println!("wrote {}/scaling.md, scaling.csv and scaling.svg", args.out.display());
    Ok(())
}

/// The job's data, loaded and cut as the driver cuts it.
pub(super) fn load_job(spec: JobSpec, data: &DataDirArg) -> anyhow::Result<SimJob> {
    let (spec, train, test) = load_sets(spec, data)?;
    let cut = cut(&spec.data, spec.train.seed, &train, &test)?;
    anyhow::ensure!(
        spec.train.target_accuracy.is_some(),
        "the job sets no train.target_accuracy: the sweep measures the time to it"
    );
    Ok(SimJob::new(spec, &cut.train.head(5000), cut.partitions, cut.eval)?)
}

/// The job's training and test sets, and the job with their shape.
pub(super) fn load_sets(spec: JobSpec, data: &DataDirArg) -> anyhow::Result<(JobSpec, Arc<Dataset>, Arc<Dataset>)> {
    let (train, test, shape) = match spec.data.format {
        DataFormat::Mnist => {
            let mnist = super::super::load_mnist(data)?;
            (mnist.train, mnist.test, spec.data.known_shape())
        }
        _ => {
            let loaded = load::load(&spec.data, None)?;
            (Arc::new(loaded.train), Arc::new(loaded.test), loaded.shape)
        }
    };
    Ok((spec.with_shape(shape), train, test))
}

/// The cost model measured on this machine: the gradient at minibatch
/// `batch` on 1 and 2 threads, and the server's step over the parameters.
pub(super) fn measure(job: &SimJob, batch: usize, link: LinkModel, seconds: f64) -> anyhow::Result<CostModel> {
    let rate = |threads: usize| -> anyhow::Result<f64> {
        let pool = compute_pool(Some(threads))?;
        pool.install(|| {
            let mut bench = GradientBench::new(job.network.as_ref(), batch)?;
            let mut windows = (0..3)
                .map(|_| bench.window(seconds).map(|t| t.samples_per_s))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(median(&mut windows))
        })
    };
    let (one, two) = (rate(1)?, rate(2)?);
    let len = job.init.len();
    let mode = job.spec.train.mode;
    let mut optimizer = mode
        .server_optimizer(&job.stage.optimizer, job.spec.train.compression)
        .build(len)?;
    let (mut params, grad) = (job.init.clone(), vec![1e-6f32; len]);
    let pool = compute_pool(Some(1))?;
    let step_s = pool.install(|| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut steps = 0u32;
        while started.elapsed().as_secs_f64() < seconds {
            optimizer.step(&mut params, &grad, 0)?;
            steps += 1;
        }
        Ok(started.elapsed().as_secs_f64() / f64::from(steps.max(1)))
    })?;
    Ok(CostModel {
        example_s: 1.0 / one,
        core_efficiency: (two / one - 1.0).clamp(0.0, 1.0),
        step_s_per_value: step_s / len.max(1) as f64,
        link,
    })
}

/// One simulated cluster's figures.
struct Row {
    executors: usize,
    cores: usize,
    epochs: Option<f64>,
    time_s: Option<f64>,
    updates_per_epoch: f64,
    samples_per_s: f64,
    bytes_per_update: f64,
    server_busy: f64,
    card_busy: f64,
    staleness: f64,
    speedup: Option<f64>,
    final_accuracy: f64,
}

impl Row {
    fn new(executors: usize, cores: usize, r: &SimReport, single: Option<f64>) -> Self {
        let epochs_done = r.points.last().map_or(0.0, |p| p.epochs).max(1e-9);
        Self {
            executors,
            cores,
            epochs: r.epochs_to_target,
            time_s: r.time_to_target_s,
            updates_per_epoch: r.updates as f64 / epochs_done,
            samples_per_s: r.samples_per_s(),
            bytes_per_update: (r.bytes_in + r.bytes_out) as f64 / r.updates.max(1) as f64,
            server_busy: r.server_busy_s / r.time_s.max(1e-12),
            card_busy: r.card_busy_s / r.time_s.max(1e-12),
            staleness: r.mean_staleness,
            speedup: single.zip(r.time_to_target_s).map(|(one, t)| one / t),
            final_accuracy: r.final_accuracy,
        }
    }

    fn line(&self) -> String {
        format!(
            "{:>3} × {:<2} cores: target {} in {} (speed-up {}), {:.0} samples/s, staleness {:.1}, server {:.0}% busy, card {:.0}%",
            self.executors,
            self.cores,
            opt(self.epochs, |e| format!("at {e:.2} epochs")),
            opt(self.time_s, |t| format!("{t:.2} s")),
            opt(self.speedup, |s| format!("{s:.2}×")),
            self.samples_per_s,
            self.staleness,
            self.server_busy * 100.0,
            self.card_busy * 100.0
        )
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "never".to_string(), f)
}

fn markdown(header: &str, rows: &[Row]) -> String {
    let mut s = format!("# Scaling\n\n{header}\n\n");
    s.push_str("| executors × cores | epochs to target | simulated time to target | speed-up | samples/s | updates per epoch | MB per update | staleness | server busy | card busy | accuracy at the end |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} × {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.0}% | {:.0}% | {:.2}% |",
            r.executors,
            r.cores,
            opt(r.epochs, |e| format!("{e:.2}")),
            opt(r.time_s, |t| format!("{t:.2} s")),
            opt(r.speedup, |x| format!("{x:.2}×")),
            r.samples_per_s,
            r.updates_per_epoch,
            r.bytes_per_update / 1e6,
            r.staleness,
            r.server_busy * 100.0,
            r.card_busy * 100.0,
            r.final_accuracy * 100.0
        );
    }
    s
}

/// The noise scale per epoch and the ceilings it implies when the global
/// batch grows with the executors (`N ×` the job's minibatch).
fn noise_table(noise: &[(String, f64)], batch: f64, executors: &[usize]) -> String {
    let grown: Vec<usize> = executors.iter().copied().filter(|&n| n > 1).collect();
    let mut s = format!(
        "## Gradient noise scale\n\nB_noise at the server's parameters (minibatches of {batch} against {}), each epoch and pooled (mean tr(Σ) over mean |G|²), and the speed-up ceiling `(1 + B/b)/(1 + B/(N·b))` it implies for N executors whose global batch is N × {batch}:\n\n| epochs | B_noise |",
        8.0 * batch
    );
    for n in &grown {
        let _ = write!(s, " ceiling at {n} |");
    }
    s.push_str("\n|---|---:|");
    s.push_str(&"---:|".repeat(grown.len()));
    s.push('\n');
    for (when, b) in noise {
        let _ = write!(s, "| {when} | {b:.0} |");
        for &n in &grown {
            let _ = write!(s, " {:.2}× |", ceiling(*b, batch, batch * n as f64));
        }
        s.push('\n');
    }
    s
}

/// Speed-up against executors, one line per core count, with the ideal.
fn plot(rows: &[Row], path: &std::path::Path) -> anyhow::Result<()> {
    let log = |v: f64| v.max(1e-3).log2();
    let most = rows.iter().map(|r| r.executors).max().unwrap_or(1) as f64;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "speed-up to the target against executors (simulated)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.3..log(most) + 0.3, -7.0..log(most) + 0.5)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("executors (log scale)")
        .y_desc("speed-up over one executor (log scale)")
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 0.05 {
                format!("{:.0}", v.round().exp2())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format!("{:.2}", v.exp2()))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(plot_error)?;
    let ideal: Vec<(f64, f64)> = [1.0, most].iter().map(|&n| (log(n), log(n))).collect();
    draw_line(&mut chart, ideal, BLACK.mix(0.4), "ideal".into())?;
    let mut cores: Vec<usize> = rows.iter().map(|r| r.cores).collect();
    cores.dedup();
    for (i, c) in cores.iter().enumerate() {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.cores == *c)
            .filter_map(|r| Some((log(r.executors as f64), log(r.speedup?))))
            .collect();
        draw_line(
            &mut chart,
            points,
            TAB10[i % TAB10.len()].to_rgba(),
            format!("{c} cores each"),
        )?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    root.present().map_err(plot_error)
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "executors,cores,epochs_to_target,time_to_target_s,speedup,samples_per_s,updates_per_epoch,bytes_per_update,staleness,server_busy,card_busy,final_accuracy\n",
    );
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.1},{:.1},{:.0},{:.3},{:.4},{:.4},{:.4}",
            r.executors,
            r.cores,
            cell(r.epochs),
            cell(r.time_s),
            cell(r.speedup),
            r.samples_per_s,
            r.updates_per_epoch,
            r.bytes_per_update,
            r.staleness,
            r.server_busy,
            r.card_busy,
            r.final_accuracy
        );
    }
    s
}
