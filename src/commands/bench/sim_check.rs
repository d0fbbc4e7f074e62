//! `deepdist bench sim-check`: the simulation against real runs on this
//! machine. For each executor count and seed, the job runs for real in local
//! mode (N executors of one core on this machine's cores) and in a
//! simulation of the same machine (`SimConfig::machine`: N executors and
//! the server sharing its cores, messages costing them copies), with the
//! cost model measured here at
//! the minibatch the N executors use. Compared: test accuracy at every
//! epoch, the staleness of the updates (mean and histogram) and samples/s,
//! medians over the seeds, against the tolerances docs/scaling.md states.
//! Outputs `sim-check.md` and `sim-check.svg`.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use deepdist_core::bench::median;
use deepdist_core::gemm::gemm_peak;
use deepdist_core::mode::STALENESS_BOUNDS;
use deepdist_sim::{LinkModel, Machine, SimConfig};
use deepdist_wire::client::Client;
use deepdist_wire::transport::Credentials;
use plotters::prelude::*;

use super::dbn_report::{TAB10, draw_legend, draw_line, plot_error};
use super::job::{JobRun, Target, bench_driver, machine_cores, run_job, write};
use super::scaling::{load_job, measure};
use crate::cli::SimCheckBenchArgs;

/// Largest gap in test accuracy, at any epoch, between the medians of the
/// real and the simulated runs.
pub const ACCURACY_POINTS: f64 = 0.5;
/// Largest ratio (either way) between real and simulated mean staleness.
pub const STALENESS_RATIO: f64 = 1.5;
/// Largest ratio (either way) between real and simulated samples/s.
pub const SPEED_RATIO: f64 = 1.5;

/// One run's figures, real or simulated.
#[derive(Debug, Clone, Default)]
struct Figures {
    /// Test accuracy after each epoch.
    accuracy: Vec<f64>,
    mean_staleness: f64,
    /// Updates by staleness bucket, as fractions.
    staleness: Vec<f64>,
    samples_per_s: f64,
}

/// One executor count's medians over the seeds, real and simulated.
struct Compared {
    executors: usize,
    real: Figures,
    sim: Figures,
}

/// Runs the comparison and writes its report.
pub fn run(args: SimCheckBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.executors.iter().all(|&n| n > 0) && !args.seeds.is_empty(),
        "--executors takes counts of at least 1, --seeds at least one seed"
    );
    let (spec, origin) = super::job::read_spec(args.job.as_deref())?;
    let cores = machine_cores();
    // Without --link, in-process pipes: memory copies, not a network.
    let link = match &args.link {
        Some(text) => {
            LinkModel::parse(text).with_context(|| format!("--link {text}: expected e.g. 1gbit or 250mbit"))?
        }
        None => LinkModel::gbit(40.0),
    };
    let peak = gemm_peak(2);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let runtime = crate::roles::runtime()?;
    let credentials = Credentials::default();
    if let Some(addr) = &args.driver {
        let registered = runtime.block_on(async {
            let mut client = Client::connect(addr, &credentials).await?;
            anyhow::Ok(client.status().await?.executors.len())
        })?;
        anyhow::ensure!(
            args.executors == [registered],
            "the driver at {addr} has {registered} executors: --executors must be that one count"
        );
    }
    let mut copy_s = None;
    let mut compared = Vec::new();
    for &executors in &args.executors {
        let (mut real, mut sim) = (Vec::new(), Vec::new());
        let mut cost = None;
        for &seed in &args.seeds {
            let mut spec = spec.clone();
            spec.train.seed = seed;
            let job = load_job(spec.clone(), &args.data)?;
            // The costs depend on the network and the minibatch, not the
            // seed: measured once per executor count.
            let cost = match cost {
                Some(cost) => cost,
                None => *cost.insert(measure(&job, job.executor_batch(executors), link, args.seconds)?),
            };
            let copy_s = *copy_s.get_or_insert_with(|| copy_s_per_byte(job.init.len(), args.seconds));
            let target = match &args.driver {
                Some(addr) => Target::Remote(addr, &credentials),
                None => Target::Local {
                    config: Box::new(bench_driver(&args.out, &args.data)),
                    executors,
                    cores: 1,
                },
            };
            let run = runtime.block_on(run_job(target, &spec))?;
            let report = job.simulate(&SimConfig {
                executors,
                cores: 1,
                cost,
                eval_every: 1.0,
                stop_at_target: false,
                machine_threads: cores,
                machine: Some(Machine {
                    cores,
                    copy_s_per_byte: copy_s,
                }),
                noise: false,
                server_shards: 1,
                shard_hosts: false,
            })?;
            let r = real_figures(&run);
            let s = Figures {
                accuracy: report.points.iter().map(|p| p.accuracy).collect(),
                mean_staleness: report.mean_staleness,
                staleness: fractions(&report.staleness),
                samples_per_s: report.samples_per_s(),
            };
            println!(
                "{executors} executors, seed {seed}: accuracy {:.2}% real, {:.2}% simulated; staleness {:.2} / {:.2}; {:.0} / {:.0} samples/s",
                r.accuracy.last().copied().unwrap_or(0.0) * 100.0,
                s.accuracy.last().copied().unwrap_or(0.0) * 100.0,
                r.mean_staleness,
                s.mean_staleness,
                r.samples_per_s,
                s.samples_per_s
            );
            real.push(r);
            sim.push(s);
        }
        compared.push(Compared {
            executors,
            real: medians(&real),
            sim: medians(&sim),
        });
    }
    let real = match &args.driver {
        Some(addr) => format!("the driver at {addr} and its executors"),
        None => "`deepdist local`".to_string(),
    };
    let header = format!(
        "`{origin}`, {} seeds ({}), executors of one core on this machine's {cores} cores, real ({real}) against simulated (one machine of {cores} cores, a message copied at {:.1} GB/s per core, a link of {:.0} Mbit/s); GEMM peak {peak:.1} GFLOP/s on 2 threads.",
        args.seeds.len(),
        args.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        1e-9 / copy_s.unwrap_or(f64::INFINITY),
        link.bytes_per_s * 8e-6
    );
    let report = markdown(&header, &compared);
    println!("{report}");
    write(&args.out.join("sim-check.md"), &report)?;
    plot(&compared, &args.out.join("sim-check.svg"))?;
    println!("wrote {}/sim-check.md and sim-check.svg", args.out.display());
    Ok(())
}

/// Seconds one core takes to copy a byte of a message of `values`
/// parameters, copied from and to memory (messages from many executors do
/// not stay in the caches, so the buffers are made larger than they are).
fn copy_s_per_byte(values: usize, seconds: f64) -> f64 {
    const BEYOND_CACHES: usize = 16 << 20;
    let from = vec![1f32; values.max(BEYOND_CACHES)];
    let mut to = vec![0f32; from.len()];
    let mut copies = 0u32;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        to.copy_from_slice(std::hint::black_box(&from));
        std::hint::black_box(&mut to);
        copies += 1;
    }
    started.elapsed().as_secs_f64() / (f64::from(copies.max(1)) * from.len() as f64 * 4.0)
}

/// A real run's figures: its epochs' accuracy, the staleness of its updates
/// (the epochs' means weighted by their updates) and the median epoch's
/// samples/s.
fn real_figures(run: &JobRun) -> Figures {
    let before = std::iter::once(0).chain(run.epochs.iter().map(|e| e.version));
    let staleness_sum: f64 = run
        .epochs
        .iter()
        .zip(before)
        .map(|(e, before)| e.mean_staleness * e.version.saturating_sub(before) as f64)
        .sum();
    let updates = run.epochs.last().map_or(1, |e| e.version.max(1));
    Figures {
        accuracy: run.epochs.iter().filter_map(|e| e.test_accuracy).collect(),
        mean_staleness: staleness_sum / updates as f64,
        staleness: fractions(&run.staleness),
        samples_per_s: median(&mut run.epochs.iter().map(|e| e.samples_per_s).collect::<Vec<_>>()),
    }
}

/// Counts as fractions of their sum.
fn fractions(counts: &[u64]) -> Vec<f64> {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.iter().map(|&c| c as f64 / total).collect()
}

/// The medians, figure by figure, of several runs.
fn medians(runs: &[Figures]) -> Figures {
    let of = |f: &dyn Fn(&Figures) -> Option<f64>| median(&mut runs.iter().filter_map(f).collect::<Vec<_>>());
    let epochs = runs.iter().map(|r| r.accuracy.len()).min().unwrap_or(0);
    let buckets = runs.iter().map(|r| r.staleness.len()).min().unwrap_or(0);
    Figures {
        accuracy: (0..epochs).map(|e| of(&|r| r.accuracy.get(e).copied())).collect(),
        mean_staleness: of(&|r| Some(r.mean_staleness)),
        staleness: (0..buckets).map(|b| of(&|r| r.staleness.get(b).copied())).collect(),
        samples_per_s: of(&|r| Some(r.samples_per_s)),
    }
}

/// Whether `a` and `b` are within a factor of `ratio` of each other.
fn within(a: f64, b: f64, ratio: f64) -> bool {
    a > 0.0 && b > 0.0 && (a / b).max(b / a) <= ratio || a == b
}

/// The report: one row per executor count, then each tolerance and whether it held.
fn markdown(header: &str, compared: &[Compared]) -> String {
    let mut out = format!("# The simulation against this machine\n\n{header}\n\n");
    let labels: Vec<String> = STALENESS_BOUNDS
        .iter()
        .map(|b| format!("≤{b}"))
        .chain(std::iter::once(format!(
            ">{}",
            STALENESS_BOUNDS[STALENESS_BOUNDS.len() - 1]
        )))
        .collect();
    out += "| executors | | accuracy by epoch (%) | mean staleness | staleness histogram (";
    out += &labels.join(", ");
    out += ") | samples/s |\n|---|---|---|---|---|---|\n";
    for c in compared {
        for (side, f) in [("real", &c.real), ("simulated", &c.sim)] {
            let acc: Vec<String> = f.accuracy.iter().map(|a| format!("{:.2}", a * 100.0)).collect();
            let hist: Vec<String> = f.staleness.iter().map(|x| format!("{:.2}", x)).collect();
            let _ = writeln!(
                out,
                "| {} | {side} | {} | {:.2} | {} | {:.0} |",
                c.executors,
                acc.join(" "),
                f.mean_staleness,
                hist.join(" "),
                f.samples_per_s
            );
        }
    }
    let _ = writeln!(
        out,
        "\nTolerances: accuracy within {ACCURACY_POINTS} points at every epoch; mean staleness and samples/s within a factor of {STALENESS_RATIO} and {SPEED_RATIO}.\n"
    );
    out += "| executors | accuracy gap (points, largest) | staleness ratio | speed ratio | held |\n|---|---|---|---|---|\n";
    for c in compared {
        let gap = c
            .real
            .accuracy
            .iter()
            .zip(&c.sim.accuracy)
            .map(|(r, s)| (r - s).abs() * 100.0)
            .fold(0.0, f64::max);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let held = gap <= ACCURACY_POINTS
            && within(c.real.mean_staleness, c.sim.mean_staleness, STALENESS_RATIO)
            && within(c.real.samples_per_s, c.sim.samples_per_s, SPEED_RATIO);
        let _ = writeln!(
            out,
            "| {} | {gap:.2} | {:.2} | {:.2} | {} |",
            c.executors,
            ratio(c.real.mean_staleness, c.sim.mean_staleness),
            ratio(c.real.samples_per_s, c.sim.samples_per_s),
            if held { "yes" } else { "**no**" }
        );
    }
    out
}

/// Accuracy against epochs, real (solid) and simulated (faint), per executor count.
fn plot(compared: &[Compared], path: &std::path::Path) -> anyhow::Result<()> {
    let epochs = compared.iter().map(|c| c.real.accuracy.len()).max().unwrap_or(1) as f64;
    let lowest = compared
        .iter()
        .flat_map(|c| c.real.accuracy.iter().chain(&c.sim.accuracy))
        .fold(1.0f64, |m, &a| m.min(a));
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("test accuracy by epoch: real and simulated", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.8..epochs + 0.2, (lowest * 100.0 - 0.2)..100.0)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("test accuracy (%)")
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(plot_error)?;
    for (i, c) in compared.iter().enumerate() {
        let color = TAB10[i % TAB10.len()];
        let line = |acc: &[f64]| {
            acc.iter()
                .enumerate()
                .map(|(e, a)| ((e + 1) as f64, a * 100.0))
                .collect()
        };
        draw_line(
            &mut chart,
            line(&c.real.accuracy),
            color.to_rgba(),
            format!("{} executors, real", c.executors),
        )?;
        draw_line(
            &mut chart,
            line(&c.sim.accuracy),
            color.mix(0.45),
            format!("{} executors, simulated", c.executors),
        )?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(plot_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_are_taken_figure_by_figure() {
        let run = |a: f64, s: f64| Figures {
            accuracy: vec![a, a + 0.01],
            mean_staleness: s,
            staleness: vec![0.5, 0.5],
            samples_per_s: s * 10.0,
        };
        let m = medians(&[run(0.9, 1.0), run(0.8, 3.0), run(0.95, 2.0)]);
        assert_eq!(m.accuracy, vec![0.9, 0.91]);
        assert_eq!((m.mean_staleness, m.samples_per_s), (2.0, 20.0));
        assert_eq!(fractions(&[1, 3]), vec![0.25, 0.75]);
        assert!(within(2.0, 3.0, 1.5) && within(3.0, 2.0, 1.5) && !within(1.0, 2.0, 1.5));
        assert!(within(0.0, 0.0, 1.5), "no staleness on either side");
    }
}
