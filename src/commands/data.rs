//! `deepdist data fetch`.

use crate::cli::{DataCommand, DatasetName};

/// Runs a data subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Fetch {
            dataset: DatasetName::Mnist,
            data,
        } => {
            let mnist = super::load_mnist(&data)?;
            let dir = deepdist_common::data::fetch::resolve_data_dir(data.data_dir).join("mnist");
            println!(
                "MNIST ready in {}: {} training and {} test images, all four files verified by MD5",
                dir.display(),
                mnist.train.len(),
                mnist.test.len()
            );
            Ok(())
        }
    }
}
