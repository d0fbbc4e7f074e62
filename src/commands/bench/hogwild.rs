//! `deepdist bench hogwild`: how fast one executor's cores step on MNIST
//! three ways — each minibatch split across the cores (the default), one
//! minibatch per core on a shared copy under a lock, and the same without
//! the lock (Hogwild!) — on dense steps (the MLP, batch 128, momentum) and
//! on sparse ones (batch 1, no momentum: a step leaves the first layer's
//! weights of blank pixels alone).

use std::time::Instant;

use deepdist_core::bench::median;
use deepdist_core::cpu::compute_pool;
use deepdist_core::data::Dataset;
use deepdist_core::mode::{Compute, LocalSteps};
use deepdist_core::model::{Activation, GradientEngine, Mlp, Model};
use deepdist_core::optim::OptimizerConfig;
use deepdist_core::train::Minibatches;
use deepdist_executor::compute::{Hogwild, SplitBatch};

use deepdist_core::gemm::gemm_peak;

use crate::cli::HogwildBenchArgs;

/// How the cores share the work.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sharing {
    Split,
    Locked,
    LockFree,
}

impl Sharing {
    fn name(self) -> &'static str {
        match self {
            Sharing::Split => "split minibatches",
            Sharing::Locked => "shared copy, locked",
            Sharing::LockFree => "shared copy, lock-free (Hogwild!)",
        }
    }
}

/// Runs the measurement and prints a Markdown table.
pub fn run(args: HogwildBenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark figures need `cargo run --release -- bench hogwild`");
    }
    anyhow::ensure!(
        args.threads > 0 && args.trials > 0 && args.seconds > 0.0,
        "--threads, --trials and --seconds must be positive"
    );
    let mnist = crate::commands::load_mnist(&args.data)?;
    let mlp = Mlp::new(&[784, 500, 500, 10], Activation::Relu)?;
    let peak = gemm_peak(args.threads);
    let dense = OptimizerConfig {
        lr: 0.01,
        momentum: Some(0.9),
        nesterov: Some(true),
        ..OptimizerConfig::default()
    };
    let sparse = OptimizerConfig {
        lr: 0.01,
        ..OptimizerConfig::default()
    };
    println!(
        "{} threads; this machine's f32 GEMM peak on them: {peak:.0} GFLOP/s; medians of {} windows of {:.1} s.\n",
        args.threads, args.trials, args.seconds
    );
    println!("| steps | sharing | samples/s | ÷ split minibatches | mean loss |");
    println!("|---|---|---:|---:|---:|");
    let pool = compute_pool(Some(args.threads))?;
    for (what, batch, optimizer) in [
        ("dense: batch 128, momentum 0.9", 128, dense),
        ("sparse: batch 1, no momentum", 1, sparse),
    ] {
        let mut split = None;
        for sharing in [Sharing::Split, Sharing::Locked, Sharing::LockFree] {
            let (sps, loss) = pool.install(|| measure(&mlp, &mnist.train, batch, &optimizer, sharing, &args))?;
            let base = *split.get_or_insert(sps);
            println!(
                "| {what} | {} | {sps:.0} | {:.2} | {loss:.3} |",
                sharing.name(),
                sps / base
            );
        }
    }
    Ok(())
}

/// Samples/s (median of the trials) and the mean training loss seen.
fn measure(
    mlp: &Mlp,
    data: &Dataset,
    batch: usize,
    optimizer: &OptimizerConfig,
    sharing: Sharing,
    args: &HogwildBenchArgs,
) -> anyhow::Result<(f64, f64)> {
    let mut params = mlp.init(1);
    let mut steps = LocalSteps::new(optimizer, params.len());
    steps.start_task(optimizer.lr, optimizer.momentum.unwrap_or(0.0), 1.0);
    let mut engine = GradientEngine::new(mlp.clone(), batch, 1);
    let (mut rates, mut losses) = (Vec::new(), Vec::new());
    // The first window warms up caches and the allocator; it is not counted.
    for trial in 0..=args.trials {
        let batches = Minibatches::seeded(data.len(), batch, trial as u64);
        let mut compute: Box<dyn Compute> = match sharing {
            Sharing::Split => Box::new(SplitBatch::new(&mut engine, data, batches)),
            Sharing::Locked => Box::new(Hogwild::new(&mut engine, data, batches, 1, true)),
            Sharing::LockFree => Box::new(Hogwild::new(&mut engine, data, batches, 1, false)),
        };
        let start = Instant::now();
        let (mut samples, mut loss, mut n) = (0u64, 0.0f64, 0u64);
        while start.elapsed().as_secs_f64() < args.seconds && compute.remaining() > 0 {
            // Rounds as long as an `n_push` window of a few minibatches per core.
            let work = compute.local_steps(&mut params, &mut steps, 4 * args.threads)?;
            steps.take_window(&params);
            samples += u64::from(work.samples);
            loss += f64::from(work.loss_sum);
            n += u64::from(work.batches);
        }
        if trial > 0 {
            rates.push(samples as f64 / start.elapsed().as_secs_f64());
            losses.push(loss / n.max(1) as f64);
        }
    }
    Ok((median(&mut rates), median(&mut losses)))
}
