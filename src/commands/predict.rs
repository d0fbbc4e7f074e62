//! `deepdist predict`: a saved model's class and class probabilities for
//! each example of a `.csv`, `.npy` or IDX images file, as CSV.

use std::io::Write;

use anyhow::Context;
use deepdist_core::data::load;
use deepdist_core::model::mlp::argmax;
use ndarray::s;

use super::saved_model::SavedModel;
use crate::cli::PredictArgs;

/// Rows predicted at once.
const CHUNK: usize = 4096;

/// Runs `deepdist predict`.
pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let model = SavedModel::open(&args.model)?;
    let x = load::read_inputs(&args.input, &model.spec.data, model.standardizer.as_ref())?;
    anyhow::ensure!(
        x.ncols() == model.input_dim(),
        "{}: {} features per example, the model takes {}",
        args.input.display(),
        x.ncols(),
        model.input_dim()
    );
    // Written beside the destination and renamed, so a failure leaves no half file.
    let dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        let header: Vec<String> = (0..model.classes()).map(|c| format!("p{c}")).collect();
        writeln!(out, "predicted,{}", header.join(","))?;
        for start in (0..x.nrows()).step_by(CHUNK) {
            let end = (start + CHUNK).min(x.nrows());
            let probs = model.network.predict(&model.params, x.slice(s![start..end, ..]))?;
            for row in probs.rows() {
                let p = row.to_vec();
                let cols: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
                writeln!(out, "{},{}", argmax(&p), cols.join(","))?;
            }
        }
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("{} predictions written to {}", x.nrows(), args.out.display());
    Ok(())
}
