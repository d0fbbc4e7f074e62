//! The runs of the DBN grid, real or simulated: each run's job, its line
//! of progress, and its times to the thresholds.

use deepdist_core::job::JobSpec;

/// The original criterion, and the one that says the network learned more
/// than softmax regression on raw pixels (about 91%).
pub(super) const THRESHOLDS: [f64; 2] = [0.90, 0.98];

/// The job of one run of the grid: `base` on `partitions`, stopping at
/// `target`, fine-tuning at most `max_epochs`.
pub(super) fn grid_spec(base: &JobSpec, partitions: u32, target: f64, max_epochs: Option<u32>) -> JobSpec {
    let mut spec = base.clone();
    spec.data.partitions = partitions;
    spec.train.target_accuracy = Some(target);
    spec.train.stop_at_target = true;
    if let Some(cap) = max_epochs {
        spec.train.epochs = spec.train.epochs.min(cap);
    }
    spec
}

/// Prints which run of `total` starts (the `i`th, from 0), its result to follow on the line.
pub(super) fn announce(i: usize, total: usize, what: &str) -> std::io::Result<()> {
    print!("[{}/{total}] {what} … ", i + 1);
    std::io::Write::flush(&mut std::io::stdout())
}

/// From each epoch's (test accuracy, seconds since the job started): the
/// time of the first epoch past each threshold (strictly above the first,
/// the original "> 90%"; at or above the others), and the best accuracy.
pub fn times_to(epochs: &[(Option<f64>, f64)], thresholds: &[f64]) -> (Vec<Option<f64>>, Option<f64>) {
    let mut times = vec![None; thresholds.len()];
    let mut best: Option<f64> = None;
    for &(accuracy, elapsed) in epochs {
        let Some(accuracy) = accuracy else { continue };
        best = Some(best.map_or(accuracy, |b| b.max(accuracy)));
        for (i, (&threshold, time)) in thresholds.iter().zip(&mut times).enumerate() {
            let passed = if i == 0 {
                accuracy > threshold
            } else {
                accuracy >= threshold
            };
            if passed && time.is_none() {
                *time = Some(elapsed);
            }
        }
    }
    (times, best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_the_first_epochs_past_each_threshold() {
        // An RBM epoch (no accuracy), then fine-tuning.
        let epochs = [
            (None, 3.0),
            (Some(0.90), 5.0),
            (Some(0.95), 7.0),
            (Some(0.98), 9.0),
            (Some(0.97), 11.0),
        ];
        let (times, best) = times_to(&epochs, &THRESHOLDS);
        // Exactly 90% is not "> 90%"; exactly 98% is "≥ 98%".
        assert_eq!(times, vec![Some(7.0), Some(9.0)]);
        assert_eq!(best, Some(0.98));
    }
}
