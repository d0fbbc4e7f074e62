//! One module per subcommand.

pub mod bench;
pub mod bench_job;
pub mod client;
pub mod data;
pub mod delays_bench;
pub mod eval;
pub mod grid;
pub mod grid_report;
pub mod hogwild_bench;
pub mod local;
pub mod modes_bench;
pub mod modes_report;
pub mod mpi_group;
pub mod predict;
pub mod progress;
pub mod ps_bench;
pub mod saved_model;
pub mod service;
pub mod train;

use deepdist_core::data::{Mnist, mnist};
use deepdist_wire::fetch::{FetchOptions, resolve_data_dir};
use indicatif::ProgressBar;

use crate::cli::DataDirArg;

/// Loads MNIST from the chosen data directory, fetching it if needed, with a
/// spinner so a first-time download does not look like a hang.
pub fn load_mnist(arg: &DataDirArg) -> anyhow::Result<Mnist> {
    let opts = FetchOptions::new(resolve_data_dir(arg.data_dir.clone()));
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "loading MNIST from {} (fetching and verifying if needed)",
        opts.mnist_dir().display()
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let result = deepdist_wire::fetch::load_mnist(&opts);
    spinner.finish_and_clear();
    let data = result?;
    tracing::info!(
        train = data.train.len(),
        test = data.test.len(),
        files = mnist::FILES.len(),
        "MNIST loaded"
    );
    Ok(data)
}

/// A multi-threaded tokio runtime for the network commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Resolves on Ctrl-C or SIGTERM (how Slurm, Kubernetes and `kill` stop a task).
pub async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
