//! `deepdist data fetch` and `deepdist data inspect`.

use std::sync::Arc;

use deepdist_core::data::{Dataset, load};
use deepdist_core::job::{DataFormat, DataSpec, LabelColumn};

use crate::cli::{DataCommand, DatasetName};

/// Runs a data subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Fetch {
            dataset: DatasetName::Mnist,
            data,
        } => {
            let mnist = super::load_mnist(&data)?;
            let dir = deepdist_wire::fetch::resolve_data_dir(data.data_dir).join("mnist");
            println!(
                "MNIST ready in {}: {} training and {} test images, all four files verified by MD5",
                dir.display(),
                mnist.train.len(),
                mnist.test.len()
            );
            Ok(())
        }
        DataCommand::Inspect {
            format,
            path,
            header,
            label_column,
            data,
        } => {
            let spec = DataSpec {
                format: format.into(),
                path,
                header,
                label_column: label_column.map(LabelColumn::Name),
                ..DataSpec::default()
            };
            let (train, test) = match spec.format {
                DataFormat::Mnist => {
                    let m = super::load_mnist(&data)?;
                    (m.train, m.test)
                }
                _ => {
                    let l = load::load(&spec, None)?;
                    (Arc::new(l.train), Arc::new(l.test))
                }
            };
            describe("train", &train);
            describe("test", &test);
            Ok(())
        }
    }
}

/// Shapes, classes, examples per class and the feature range (as scaled for training).
fn describe(name: &str, d: &Dataset) {
    let x = d.features();
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
    println!(
        "{name}: {} examples × {} features, {} classes; features (as scaled) from {lo} to {hi}, mean {mean:.4}",
        d.len(),
        d.dim(),
        d.classes()
    );
    let mut counts = vec![0usize; d.classes()];
    for &l in d.labels() {
        counts[usize::from(l)] += 1;
    }
    let per_class: Vec<String> = counts.iter().enumerate().map(|(c, n)| format!("{c}: {n}")).collect();
    println!("  examples per class  {}", per_class.join("  "));
}
