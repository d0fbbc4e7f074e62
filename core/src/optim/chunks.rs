//! A descent step walked chunk by chunk across the cores.
//!
//! A step is memory-bound: it reads the update, the parameters and the
//! optimizer's buffers and writes the last two back. Done as separate
//! passes (fold the update into a round's sum, step, average the
//! parameters, copy them into a frame) each pass streams every buffer again;
//! done chunk by chunk, every pass over a chunk finds it still in cache.
//! On the parameter server that pass is on every executor's critical path in
//! the synchronous modes, so this walk is where it is kept short.

use std::ops::Range;

use rayon::prelude::*;

use super::CHUNK;

/// Values formed at a time on the stack when an update is folded as it is
/// read: small enough to stay in the first-level cache.
const BLOCK: usize = 2048;

/// An update as a step reads it.
#[derive(Debug, Clone, Copy)]
pub enum Grad<'a> {
    /// The values themselves.
    Values(&'a [f32]),
    /// `(sum + values · weight) · scale`, formed as the step reads it: the
    /// last update of a round folded into the round's running sum (none for
    /// a round of one) without a pass of its own.
    Folded {
        /// The round's sum so far.
        sum: Option<&'a [f32]>,
        /// The update that completes the round.
        values: &'a [f32],
        /// The update's weight (its examples).
        weight: f32,
        /// What turns the sum into the mean.
        scale: f32,
    },
}

impl Grad<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Grad::Values(v) => v.len(),
            Grad::Folded { values, .. } => values.len(),
        }
    }

    /// True for an update without values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every part has the same length.
    fn consistent(&self) -> bool {
        match self {
            Grad::Values(_) | Grad::Folded { sum: None, .. } => true,
            Grad::Folded {
                sum: Some(sum), values, ..
            } => sum.len() == values.len(),
        }
    }

    /// The values at `range`, formed in `buf` when they must be.
    fn block<'b>(&'b self, range: Range<usize>, buf: &'b mut [f32; BLOCK]) -> &'b [f32] {
        match *self {
            Grad::Values(v) => &v[range],
            Grad::Folded {
                sum,
                values,
                weight,
                scale,
            } => {
                let out = &mut buf[..range.len()];
                let values = &values[range.clone()];
                match sum {
                    Some(sum) => {
                        for ((o, &s), &v) in out.iter_mut().zip(&sum[range]).zip(values) {
                            *o = (s + v * weight) * scale;
                        }
                    }
                    None => {
                        for (o, &v) in out.iter_mut().zip(values) {
                            *o = v * weight * scale;
                        }
                    }
                }
                out
            }
        }
    }
}

/// Called with the offset of each chunk of parameters and the chunk, once
/// stepped (the average folds it in, the server copies it into a frame).
pub type Stepped<'a> = &'a (dyn Fn(usize, &[f32]) + Sync);

/// One step's inputs.
#[derive(Clone, Copy)]
pub struct Step<'a> {
    /// The update.
    pub grad: Grad<'a>,
    /// Steps applied since the parameters the update was computed from.
    pub staleness: u64,
    /// Those parameters, when kept (only delay compensation reads them).
    pub base: Option<&'a [f32]>,
    /// Sees every chunk of the new parameters.
    pub stepped: Option<Stepped<'a>>,
    /// Job minibatches' worth of examples the update covers: how far it
    /// takes the warm-up.
    pub minibatches: f64,
}

impl<'a> Step<'a> {
    /// A step with `grad`, computed `staleness` steps ago.
    pub fn new(grad: Grad<'a>, staleness: u64) -> Self {
        Self {
            grad,
            staleness,
            base: None,
            stepped: None,
            minibatches: 1.0,
        }
    }
}

/// Runs `rule(offset, params, grad, buffers)` over the parameters block by
/// block, chunks in parallel, with the same ranges of each of `buffers`
/// (all as long as `params`), then hands each stepped chunk to `stepped`.
pub(crate) fn for_each_block<const M: usize>(
    params: &mut [f32],
    grad: &Grad<'_>,
    buffers: [&mut [f32]; M],
    stepped: Option<Stepped<'_>>,
    rule: impl Fn(usize, &mut [f32], &[f32], [&mut [f32]; M]) + Sync,
) {
    let mut split = buffers.map(|b| b.chunks_mut(CHUNK));
    let chunks: Vec<[&mut [f32]; M]> = (0..params.len().div_ceil(CHUNK))
        .map(|_| split.each_mut().map(|c| c.next().unwrap_or_default()))
        .collect();
    params
        .par_chunks_mut(CHUNK)
        .zip(chunks)
        .enumerate()
        .for_each(|(i, (params, mut buffers))| {
            // The chunk may run on any pool's thread (the driver steps on
            // rayon's global pool): velocities that decay towards zero
            // would otherwise reach the denormal range and slow every step.
            crate::cpu::flush_denormals();
            let offset = i * CHUNK;
            let mut buf = [0.0; BLOCK];
            for start in (0..params.len()).step_by(BLOCK) {
                let end = (start + BLOCK).min(params.len());
                let g = grad.block(offset + start..offset + end, &mut buf);
                let blocks = buffers.each_mut().map(|b| &mut b[start..end]);
                rule(offset + start, &mut params[start..end], g, blocks);
            }
            if let Some(stepped) = stepped {
                stepped(offset, params);
            }
        });
}

/// Checks that the parameters, the update and the optimizer's `expected`
/// length agree.
pub(crate) fn check(expected: usize, params: &[f32], grad: &Grad<'_>) -> Result<(), super::OptimError> {
    if params.len() != expected || grad.len() != expected || !grad.consistent() {
        return Err(super::OptimError::LengthMismatch {
            expected,
            params: params.len(),
            grad: grad.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folded_update_is_the_weighted_mean() {
        let (sum, values) = ([2.0, 4.0], [1.0, 3.0]);
        let folded = Grad::Folded {
            sum: Some(&sum),
            values: &values,
            weight: 2.0,
            scale: 0.25,
        };
        let mut buf = [0.0; BLOCK];
        assert_eq!(folded.block(0..2, &mut buf), [1.0, 2.5]);
        let alone = Grad::Folded {
            sum: None,
            values: &values,
            weight: 2.0,
            scale: 0.5,
        };
        assert_eq!(alone.block(1..2, &mut buf), [3.0]);
    }

    #[test]
    fn every_value_is_visited_once_at_its_offset() {
        let n = 2 * CHUNK + BLOCK + 5;
        let grad: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut params = vec![0.0; n];
        let mut seen = vec![0.0; n];
        let offsets = std::sync::Mutex::new(Vec::new());
        let record = |offset: usize, p: &[f32]| offsets.lock().unwrap().push((offset, p.len()));
        for_each_block(
            &mut params,
            &Grad::Values(&grad),
            [&mut seen],
            Some(&record),
            |offset, p, g, [s]| {
                for (i, ((p, &g), s)) in p.iter_mut().zip(g).zip(s.iter_mut()).enumerate() {
                    *p += g;
                    *s = (offset + i) as f32;
                }
            },
        );
        assert_eq!(params, grad);
        assert_eq!(seen, grad, "each buffer block sits at the same offset");
        let mut offsets = offsets.into_inner().unwrap();
        offsets.sort();
        assert_eq!(offsets, [(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, BLOCK + 5)]);
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let values = [1.0; 3];
        let short = [1.0; 2];
        assert!(check(3, &[0.0; 3], &Grad::Values(&values)).is_ok());
        assert!(check(3, &[0.0; 2], &Grad::Values(&values)).is_err());
        let folded = Grad::Folded {
            sum: Some(&short),
            values: &values,
            weight: 1.0,
            scale: 1.0,
        };
        assert!(check(3, &[0.0; 3], &folded).is_err());
    }
}
