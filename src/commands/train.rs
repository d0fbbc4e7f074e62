//! `deepdist train`: an MLP on MNIST in this process, every core busy.

use deepdist_core::cpu::compute_pool;
use deepdist_core::model::{Mlp, Model};
use deepdist_core::optim::OptimizerConfig;
use deepdist_core::train::Trainer;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::TrainArgs;

/// Trains and prints one line per epoch.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    compute_pool(args.threads)?.install(|| train(&args))
}

fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let mnist = super::load_mnist(&args.data)?;
    let mut sizes = vec![mnist.train.dim()];
    sizes.extend(&args.hidden);
    sizes.push(mnist.train.classes());
    let mlp = Mlp::new(&sizes, args.activation.into())?;
    let config = OptimizerConfig {
        lr: args.lr,
        weight_decay: args.weight_decay,
        momentum: Some(args.momentum),
        nesterov: Some(args.momentum > 0.0),
        lr_decay: Some(args.lr_decay),
        ..OptimizerConfig::default()
    };
    let optimizer = config.build(mlp.layout().len())?;
    let mut params = mlp.init(args.seed);
    let mut trainer = Trainer::new(mlp.clone(), optimizer, args.batch, args.seed);
    println!(
        "MLP {} ({:?}), {} parameters, batch {}, {} threads",
        sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join("-"),
        mlp.activation(),
        params.len(),
        args.batch,
        rayon::current_num_threads()
    );
    let bar = ProgressBar::new(args.epochs as u64).with_style(
        ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut train_time = 0.0;
    for epoch in 1..=args.epochs {
        trainer.optimizer_mut().begin_epoch(epoch as u32);
        let stats = trainer.epoch(&mut params, &mnist.train)?;
        train_time += stats.elapsed_s;
        let eval = mlp.evaluate(&params, &mnist.test)?;
        // Printed around the bar, not through it: a hidden bar (no terminal)
        // would swallow the line.
        bar.suspend(|| {
            println!(
                "epoch {epoch:>3}  train loss {:.4}  test accuracy {:.2}%  {:.0} samples/s  training time {train_time:.1} s",
                stats.train_loss,
                100.0 * eval.accuracy,
                stats.samples_per_s()
            )
        });
        bar.set_message(format!("test accuracy {:.2}%", 100.0 * eval.accuracy));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}
