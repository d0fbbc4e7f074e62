//! `deepdist bench modes`: every training mode on the MLP job, in local
//! mode, for several executor counts, `--runs` times each; a table of
//! medians, a CSV of every run, and two plots (test accuracy against
//! training time per mode; final accuracy against executors).

use anyhow::Context;
use deepdist_core::job::{JobSpec, TrainSpec};

use super::job::{JobRun, Target, bench_driver, machine_cores, run_job};
use super::modes_report::{ModeRun, report};
use crate::roles::client::read_job;
use deepdist_core::gemm::gemm_peak;

use crate::cli::ModesBenchArgs;

/// The shipped example job of every mode (and of Hogwild! executors): the
/// same MLP, each with its mode's keys.
pub const EXAMPLES: [(&str, &str); 6] = [
    ("async", include_str!("../../../jobs/mnist-mlp.toml")),
    ("sync", include_str!("../../../jobs/mnist-mlp-sync.toml")),
    ("ssp", include_str!("../../../jobs/mnist-mlp-ssp.toml")),
    ("average", include_str!("../../../jobs/mnist-mlp-average.toml")),
    ("easgd", include_str!("../../../jobs/mnist-mlp-easgd.toml")),
    ("async+hogwild", include_str!("../../../jobs/mnist-mlp-hogwild.toml")),
];

/// `base` trained the way `example` trains: its mode, the mode's keys and
/// Hogwild!; everything else (data, model, optimizer, epochs) is `base`'s.
pub fn in_mode_of(base: &JobSpec, example: &JobSpec) -> JobSpec {
    let e = &example.train;
    JobSpec {
        train: TrainSpec {
            hogwild: e.hogwild,
            ..base.train.with_mode(e.mode, &e.mode_keys())
        },
        ..base.clone()
    }
}

/// Runs the comparison and writes its outputs.
pub fn run(args: ModesBenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark figures need `cargo run --release -- bench modes`");
    }
    anyhow::ensure!(
        args.runs > 0 && !args.executors.is_empty() && !args.executors.contains(&0),
        "--runs and --executors take positive numbers"
    );
    let base = args
        .job
        .as_ref()
        .map(|p| read_job(p).map(|(_, spec)| spec))
        .transpose()?;
    let mut jobs = Vec::new();
    for (label, text) in EXAMPLES {
        if !args.modes.is_empty() && !args.modes.iter().any(|m| m == label) {
            continue;
        }
        let example = JobSpec::from_toml(text, label)?;
        let spec = match &base {
            Some(base) => in_mode_of(base, &example),
            None => example,
        };
        jobs.push((label, spec));
    }
    anyhow::ensure!(
        !jobs.is_empty(),
        "--modes names none of {}",
        EXAMPLES.map(|(l, _)| l).join(", ")
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let peak = gemm_peak(machine_cores());
    let driver = bench_driver(&args.out, &args.data);
    let runtime = crate::roles::runtime()?;
    let total = jobs.len() * args.executors.len() * args.runs;
    let mut runs = Vec::new();
    // Rounds outermost, so the runs of one configuration are spread over the
    // session and a change in the machine's speed spreads over every row.
    for round in 1..=args.runs {
        for (label, spec) in &jobs {
            for &executors in &args.executors {
                print!(
                    "[{}/{total}] {label}, {executors} executors, run {round} … ",
                    runs.len() + 1
                );
                std::io::Write::flush(&mut std::io::stdout())?;
                let target = Target::Local {
                    config: Box::new(driver.clone()),
                    executors,
                    cores: (machine_cores() / executors).max(1),
                };
                let run = runtime.block_on(run_job(target, spec))?;
                let run = ModeRun::from_job(label, executors, round, &run, spec.train.target_accuracy);
                println!(
                    "{:.2}%, {:.1} s of training",
                    run.final_accuracy * 100.0,
                    run.curve.last().map_or(0.0, |p| p.0)
                );
                runs.push(run);
            }
        }
        // Written after every round, so that a session cut short keeps the
        // rounds it completed (the table says how many).
        report(&runs, peak, &args.out)?;
    }
    Ok(())
}

impl ModeRun {
    /// The figures of one finished job.
    pub fn from_job(label: &str, executors: usize, round: usize, job: &JobRun, target: Option<f64>) -> Self {
        let accuracy = |l: &deepdist_wire::proto::EpochMetrics| l.test_accuracy.unwrap_or(0.0);
        let reached = target.and_then(|t| job.epochs.iter().find(|l| accuracy(l) >= t));
        let n = job.epochs.len().max(1) as f64;
        Self {
            label: label.to_string(),
            executors,
            round,
            final_accuracy: job.summary.final_accuracy.unwrap_or(0.0),
            best_accuracy: job.epochs.iter().map(accuracy).fold(0.0, f64::max),
            time_to_target: reached.map(|l| l.train_s),
            epochs_to_target: reached.map(|l| l.epoch),
            samples_per_s: job.epochs.iter().map(|l| l.samples_per_s).sum::<f64>() / n,
            staleness: job.epochs.iter().map(|l| l.mean_staleness).sum::<f64>() / n,
            curve: job.epochs.iter().map(|l| (l.train_s, accuracy(l))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_is_the_same_mlp_in_its_own_mode() {
        let specs: Vec<JobSpec> = EXAMPLES
            .iter()
            .map(|(label, text)| JobSpec::from_toml(text, label).unwrap())
            .collect();
        for spec in &specs {
            assert_eq!(spec.model, specs[0].model);
            assert_eq!(spec.data, specs[0].data);
        }
        // A user's job takes each mode's keys and keeps its own settings.
        let base = JobSpec::from_toml("name = \"mine\"\n[train]\nepochs = 3\nn_push = 2\n", "mine").unwrap();
        let ssp = in_mode_of(&base, &specs[2]);
        assert_eq!((ssp.name.as_str(), ssp.train.epochs), ("mine", 3));
        assert_eq!(ssp.train.mode, deepdist_core::mode::Mode::Ssp);
        assert_eq!(ssp.train.staleness_bound, specs[2].train.staleness_bound);
        ssp.validate("derived").unwrap();
        in_mode_of(&base, &specs[1]).validate("derived").unwrap();
    }
}
