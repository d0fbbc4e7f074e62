//! `deepdist bench` with no experiment: gradient() throughput against this
//! machine's GEMM peak.

use deepdist_core::bench::{GradientBench, LayerBench, Throughput, median};
use deepdist_core::cpu::compute_pool;
use deepdist_core::gemm::{PEAK_SIZE, backend_name, gemm_gflops};
use deepdist_core::job::JobSpec;
use deepdist_core::job::kinds::LayersKeys;
use deepdist_core::model::{Activation, Layered, Mlp, ModelError, Network, Rbm, Shape, SharedNetwork};

use crate::cli::BenchArgs;

/// The shipped DBN job, whose fine-tuning network (with its dropout) is measured.
const DBN_JOB: &str = include_str!("../../../jobs/mnist-dbn.toml");

/// The fine-tuning stage's network of the shipped DBN job, on MNIST's shape.
fn dbn_finetune() -> anyhow::Result<SharedNetwork> {
    let spec = JobSpec::from_toml(DBN_JOB, "jobs/mnist-dbn.toml (built in)")?;
    Ok(spec.final_network(784, 10)?)
}

/// The shipped convolutional job, whose LeNet is measured whole and layer by layer.
const CNN_JOB: &str = include_str!("../../../jobs/mnist-cnn.toml");

/// The LeNet of the shipped CNN job, on MNIST's shape.
fn lenet() -> anyhow::Result<(Layered, usize)> {
    let origin = "jobs/mnist-cnn.toml (built in)";
    let spec = JobSpec::from_toml(CNN_JOB, origin)?;
    let keys = spec.model.keys::<LayersKeys>(origin)?;
    let net = Layered::new(&keys.layers, Shape::image(1, 28, 28), true, 10)?;
    Ok((net, spec.train.batch_size as usize))
}

/// One row of the result table.
struct Row {
    what: String,
    threads: usize,
    samples_per_s: Option<f64>,
    gflops: f64,
    /// Median over the rounds of this row's GFLOP/s over the round's peak.
    fraction: f64,
}

/// One round: a window of the GEMM peak, then one of every workload.
struct Round {
    peak: f64,
    workloads: Vec<Throughput>,
}

/// The median over the rounds of one figure.
fn median_of(rounds: &[Round], figure: impl Fn(&Round) -> f64) -> f64 {
    median(&mut rounds.iter().map(figure).collect::<Vec<_>>())
}

/// The table's rows for one thread count, from its rounds of `workloads`.
fn rows_of(rounds: &[Round], workloads: &[String], threads: usize) -> Vec<Row> {
    let mut rows = vec![Row {
        what: format!("sgemm {PEAK_SIZE}³ (peak)"),
        threads,
        samples_per_s: None,
        gflops: median_of(rounds, |r| r.peak),
        fraction: 1.0,
    }];
    for (i, what) in workloads.iter().enumerate() {
        rows.push(Row {
            what: what.clone(),
            threads,
            samples_per_s: Some(median_of(rounds, |r| r.workloads[i].samples_per_s)),
            gflops: median_of(rounds, |r| r.workloads[i].gflops),
            fraction: median_of(rounds, |r| r.workloads[i].gflops / r.peak),
        });
    }
    rows
}

/// A workload timed a window at a time.
type Window<'a> = Box<dyn FnMut(f64) -> Result<Throughput, ModelError> + 'a>;

/// Runs the gradient benchmark and prints a Markdown table.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
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
    let (cnn, cnn_batch) = lenet()?;
    let mut names = vec![
        "MLP 784-500-500-10, batch 128".to_string(),
        "RBM 784-500 CD-1, batch 100".to_string(),
        "DBN fine-tuning 784-500-500-2000-10, dropout, batch 128".to_string(),
        format!("LeNet (jobs/mnist-cnn.toml), batch {cnn_batch}"),
    ];
    names.extend((0..cnn.depth()).map(|l| format!("  LeNet layer {}", cnn.layer_label(l))));
    let mut rows = Vec::new();
    for &threads in &args.threads {
        anyhow::ensure!(threads > 0, "--threads values must be positive");
        let pool = compute_pool(Some(threads))?;
        // The peak and the workloads take turns, one window each per round:
        // this machine's speed drifts by several percent within a minute,
        // and a fraction is only meaningful between windows that shared it.
        let rounds = pool.install(|| -> anyhow::Result<Vec<Round>> {
            let mut mlp = GradientBench::new(&mlp, 128)?;
            let mut rbm = GradientBench::new(&rbm, 100)?;
            let mut dbn = GradientBench::new(dbn.as_ref(), 128)?;
            let mut whole = GradientBench::new(&cnn, cnn_batch)?;
            let mut workloads: Vec<Window<'_>> = vec![
                Box::new(move |s| mlp.window(s)),
                Box::new(move |s| rbm.window(s)),
                Box::new(move |s| dbn.window(s)),
                Box::new(move |s| whole.window(s)),
            ];
            for l in 0..cnn.depth() {
                let mut layer = LayerBench::new(&cnn, l, cnn_batch);
                workloads.push(Box::new(move |s| Ok(layer.window(s))));
            }
            (0..args.trials)
                .map(|_| {
                    let peak = gemm_gflops(PEAK_SIZE, threads, args.seconds);
                    let workloads = workloads
                        .iter_mut()
                        .map(|w| w(args.seconds))
                        .collect::<Result<_, _>>()?;
                    Ok(Round { peak, workloads })
                })
                .collect()
        })?;
        rows.extend(rows_of(&rounds, &names, threads));
    }
    println!("GEMM backend: {}", backend_name());
    println!(
        "Medians of {} rounds, each one window of {:.1} s of every row in turn; GFLOP/s count matrix products only (MLP {}, RBM {}, DBN fine-tuning {}, LeNet {:.1} MFLOP per example).",
        args.trials,
        args.seconds,
        mlp.flops_per_example() as f64 / 1e6,
        rbm.flops_per_example() as f64 / 1e6,
        dbn.flops_per_example() as f64 / 1e6,
        Network::flops_per_example(&cnn) as f64 / 1e6
    );
    println!(
        "A row's fraction is the median of its rounds' fractions of the same round's peak; it is also the fraction of the network's GEMM floor (the samples/s its products would allow at the peak). A LeNet layer row times that layer's forward and backward passes alone, one shard per thread.\n"
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
            100.0 * r.fraction
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(peak: f64, gflops: f64) -> Round {
        let t = Throughput {
            samples_per_s: gflops * 10.0,
            gflops,
        };
        Round {
            peak,
            workloads: vec![t; 3],
        }
    }

    #[test]
    fn a_fraction_is_the_median_of_each_rounds_own_fraction() {
        // A slow round drags the peak and the workload down together: its
        // fraction stays that of the machine, not of the drift.
        let rounds = [round(100.0, 80.0), round(200.0, 60.0), round(300.0, 150.0)];
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let rows = rows_of(&rounds, &names, 2);
        assert_eq!(rows[0].gflops, 200.0, "the peak row is the median peak");
        for row in &rows[1..] {
            // Fractions 0.8, 0.3 and 0.5: the median is 0.5, where the
            // ratio of the medians would say 100 / 200 = 0.4.
            assert_eq!(row.fraction, 0.5, "{}", row.what);
            assert_eq!(row.gflops, 80.0);
            assert_eq!(row.samples_per_s, Some(800.0));
        }
    }
}
