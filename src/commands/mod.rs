//! One module per subcommand.

pub mod bench;
pub mod client;
pub mod data;
pub mod eval;
pub mod predict;
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
