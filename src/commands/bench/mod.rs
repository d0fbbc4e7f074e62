//! `deepdist bench`: the gradient against the GEMM peak by default, or one
//! experiment; each is a module of its own, and this one only dispatches.

mod dbn;
mod dbn_grid;
mod dbn_report;
mod dbn_sim;
mod delays;
mod gradient;
mod hogwild;
mod job;
mod modes;
mod modes_report;
mod ps;
mod scaling;
mod sim_check;

use crate::cli::{BenchArgs, BenchExperiment};

/// Runs the benchmark or experiment the arguments name.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.experiment {
        Some(BenchExperiment::Dbn(args)) => dbn::run(args),
        Some(BenchExperiment::Modes(args)) => modes::run(args),
        Some(BenchExperiment::Delays(args)) => delays::run(args),
        Some(BenchExperiment::Hogwild(args)) => hogwild::run(args),
        Some(BenchExperiment::Ps(args)) => ps::run(args),
        Some(BenchExperiment::Scaling(args)) => scaling::run(args),
        Some(BenchExperiment::SimCheck(args)) => sim_check::run(args),
        None => gradient::run(args),
    }
}
