//! `deepdist eval`: a saved model's accuracy, loss, per-class accuracy and
//! confusion matrix on a test set (by default its own job's).

use std::sync::Arc;

use deepdist_core::data::Dataset;
use deepdist_core::data::load;
use deepdist_core::job::{DataFormat, DataSpec};
use deepdist_core::model::mlp::argmax;
use ndarray::s;
use serde::Serialize;

use super::saved_model::SavedModel;
use crate::cli::EvalArgs;

/// Rows predicted at once.
const CHUNK: usize = 4096;

/// What `eval` reports (also its `--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Test examples.
    pub examples: usize,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Per class: examples and the fraction of them classified correctly.
    pub per_class: Vec<ClassScore>,
    /// `confusion[true][predicted]`: examples.
    pub confusion: Vec<Vec<u64>>,
}

/// One class's score.
#[derive(Debug, Serialize)]
pub struct ClassScore {
    /// The class.
    pub class: usize,
    /// Its test examples.
    pub examples: u64,
    /// The fraction of them classified correctly (absent without examples).
    pub accuracy: Option<f64>,
}

/// Runs `deepdist eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let model = SavedModel::open(&args.model)?;
    let data = DataSpec {
        format: args.data_format.map_or(model.spec.data.format, Into::into),
        path: args.data_path.or(model.spec.data.path.clone()),
        validation: None,
        train_examples: None,
        test_examples: None,
        ..model.spec.data.clone()
    };
    let test = test_set(&data, &model, &args.data)?;
    let report = evaluate(&model, &test)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

/// The test set of `data`, scaled as the model's training data was.
fn test_set(data: &DataSpec, model: &SavedModel, dir: &crate::cli::DataDirArg) -> anyhow::Result<Arc<Dataset>> {
    let test = match data.format {
        DataFormat::Mnist => super::load_mnist(dir)?.test,
        _ => Arc::new(load::load(data, model.standardizer.clone())?.test),
    };
    anyhow::ensure!(
        test.dim() == model.input_dim(),
        "the test set has {} features per example, the model takes {}",
        test.dim(),
        model.input_dim()
    );
    anyhow::ensure!(
        test.classes() <= model.classes(),
        "the test set has {} classes, the model {}",
        test.classes(),
        model.classes()
    );
    Ok(test)
}

/// Scores `model` on `test`.
pub fn evaluate(model: &SavedModel, test: &Dataset) -> anyhow::Result<Report> {
    let classes = model.classes();
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut loss = 0.0f64;
    for start in (0..test.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(test.len());
        let probs = model
            .network
            .predict(&model.params, test.features().slice(s![start..end, ..]))?;
        for (row, &label) in probs.rows().into_iter().zip(&test.labels()[start..end]) {
            let p = row.to_vec();
            loss -= f64::from(p[usize::from(label)].max(1e-7)).ln();
            confusion[usize::from(label)][argmax(&p)] += 1;
        }
    }
    let n = test.len().max(1) as f64;
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class = (0..classes)
        .map(|c| {
            let examples: u64 = confusion[c].iter().sum();
            ClassScore {
                class: c,
                examples,
                accuracy: (examples > 0).then(|| confusion[c][c] as f64 / examples as f64),
            }
        })
        .collect();
    Ok(Report {
        examples: test.len(),
        accuracy: correct as f64 / n,
        loss: loss / n,
        per_class,
        confusion,
    })
}

fn print(r: &Report) {
    println!(
        "{} test examples: accuracy {:.2}%, loss {:.4}\n",
        r.examples,
        100.0 * r.accuracy,
        r.loss
    );
    println!("class  examples  accuracy");
    for c in &r.per_class {
        let acc = c.accuracy.map_or("—".to_string(), |a| format!("{:.2}%", 100.0 * a));
        println!("{:>5}  {:>8}  {acc:>8}", c.class, c.examples);
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted)");
    let width = r
        .confusion
        .iter()
        .flatten()
        .max()
        .map_or(1, |m| m.to_string().len())
        .max(3);
    print!("{:>5} ", "");
    for c in 0..r.confusion.len() {
        print!(" {c:>width$}");
    }
    println!();
    for (t, row) in r.confusion.iter().enumerate() {
        print!("{t:>5} ");
        for v in row {
            print!(" {v:>width$}");
        }
        println!();
    }
}
