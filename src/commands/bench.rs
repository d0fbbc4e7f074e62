//! `deepdist bench`: gradient() throughput against this machine's GEMM peak.

use deepdist_common::bench::{gradient_throughput, median};
use deepdist_common::cpu::compute_pool;
use deepdist_common::gemm::{PEAK_SIZE, backend_name, gemm_gflops};
use deepdist_common::job::{JobSpec, StageKind};
use deepdist_common::model::{Activation, Mlp, Model, Rbm, StageModel};

use crate::cli::{BenchArgs, BenchExperiment};

/// The shipped DBN job, whose fine-tuning network (with its dropout) is measured.
const DBN_JOB: &str = include_str!("../../jobs/mnist-dbn.toml");

/// The fine-tuning stage's network of the shipped DBN job, on MNIST's shape.
fn dbn_finetune() -> anyhow::Result<Mlp> {
    let spec = JobSpec::from_toml(DBN_JOB, "jobs/mnist-dbn.toml (built in)")?;
    match spec.stage_model(StageKind::Supervised, 784, 10)? {
        StageModel::Mlp(mlp) => Ok(mlp),
        StageModel::Rbm(_) => anyhow::bail!("the DBN job's supervised stage is not an MLP"),
    }
}

/// One row of the result table.
struct Row {
    what: String,
    threads: usize,
    samples_per_s: Option<f64>,
    gflops: f64,
    peak: f64,
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.experiment {
        Some(BenchExperiment::Dbn(args)) => return super::grid::run(args),
        Some(BenchExperiment::Modes(args)) => return super::modes_bench::run(args),
        Some(BenchExperiment::Delays(args)) => return super::delays_bench::run(args),
        Some(BenchExperiment::Hogwild(args)) => return super::hogwild_bench::run(args),
        Some(BenchExperiment::Ps(args)) => return super::ps_bench::run(args),
        None => {}
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark figures need `cargo run --release -- bench`");
    }
    anyhow::ensure!(
        args.trials > 0 && args.seconds > 0.0,
        "--trials and --seconds must be positive"
    );
    let mlp = Mlp::new(&[784, 500, 500, 10], Activation::Relu)?;
    let rbm = Rbm::new(784, 500, 1)?;
    let dbn = dbn_finetune()?;
    let mut rows = Vec::new();
    for &threads in &args.threads {
        anyhow::ensure!(threads > 0, "--threads values must be positive");
        let pool = compute_pool(Some(threads))?;
        let (peak, mlp_t, rbm_t, dbn_t) = pool.install(|| -> anyhow::Result<_> {
            let mut peaks: Vec<f64> = (0..args.trials)
                .map(|_| gemm_gflops(PEAK_SIZE, threads, args.seconds))
                .collect();
            let mlp_t = gradient_throughput(mlp.clone(), 128, args.trials, args.seconds)?;
            let rbm_t = gradient_throughput(rbm.clone(), 100, args.trials, args.seconds)?;
            let dbn_t = gradient_throughput(dbn.clone(), 128, args.trials, args.seconds)?;
            Ok((median(&mut peaks), mlp_t, rbm_t, dbn_t))
        })?;
        rows.push(Row {
            what: format!("sgemm {PEAK_SIZE}³ (peak)"),
            threads,
            samples_per_s: None,
            gflops: peak,
            peak,
        });
        for (what, t) in [
            ("MLP 784-500-500-10, batch 128", mlp_t),
            ("RBM 784-500 CD-1, batch 100", rbm_t),
            ("DBN fine-tuning 784-500-500-2000-10, dropout, batch 128", dbn_t),
        ] {
            let mut sps: Vec<f64> = t.iter().map(|x| x.samples_per_s).collect();
            let mut gf: Vec<f64> = t.iter().map(|x| x.gflops).collect();
            rows.push(Row {
                what: what.into(),
                threads,
                samples_per_s: Some(median(&mut sps)),
                gflops: median(&mut gf),
                peak,
            });
        }
    }
    println!("GEMM backend: {}", backend_name());
    println!(
        "Medians of {} windows of {:.1} s; GFLOP/s count matrix products only (MLP {}, RBM {}, DBN fine-tuning {} MFLOP per example).",
        args.trials,
        args.seconds,
        mlp.flops_per_example() as f64 / 1e6,
        rbm.flops_per_example() as f64 / 1e6,
        dbn.flops_per_example() as f64 / 1e6
    );
    println!(
        "The fraction of GEMM peak is also the fraction of each network's GEMM floor: the samples/s its products would allow at the peak.\n"
    );
    println!("| workload | threads | samples/s | GFLOP/s | fraction of GEMM peak |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        let sps = r.samples_per_s.map_or("—".to_string(), |s| format!("{s:.0}"));
        println!(
            "| {} | {} | {} | {:.1} | {:.0}% |",
            r.what,
            r.threads,
            sps,
            r.gflops,
            100.0 * r.gflops / r.peak
        );
    }
    Ok(())
}

/// This machine's f32 GEMM peak on `threads` threads right now, in GFLOP/s
/// (median of three 1-s windows): what benchmark figures are quoted beside.
pub fn gemm_peak(threads: usize) -> f64 {
    let mut peaks: Vec<f64> = (0..3).map(|_| gemm_gflops(PEAK_SIZE, threads, 1.0)).collect();
    median(&mut peaks)
}
