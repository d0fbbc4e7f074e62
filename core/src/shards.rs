//! Cutting a parameter vector into the shards of a parameter server. Each
//! shard is one contiguous range, so an update or a parameter frame is cut
//! by slicing. Cuts fall between tensors, so a rule that works layer by
//! layer (layer-wise rates, per-tensor compression thresholds) sees whole
//! layers; only a tensor larger than the split threshold is cut, and then
//! between its rows. Among the cuts that respect that, the one whose
//! largest shard is smallest is taken: the shards' threads finish together.

use std::ops::Range;

use crate::model::Layout;

/// Tensors of more values than this may be split between shards (4 MiB of
/// `f32`, the partition size BytePS found to balance its servers).
pub const SPLIT_ABOVE: usize = 1 << 20;

/// The cut a sharded server uses: a tensor is split only when it is larger
/// than an eighth of an even share of the parameters (or than
/// [`SPLIT_ABOVE`]), so the largest shard comes out within an eighth of an
/// even share while every smaller tensor stays whole.
pub fn even(layout: &Layout, shards: usize) -> Vec<Range<usize>> {
    let share = layout.len().div_ceil(shards.max(1));
    let ranges = cut(layout, shards, (share / 8).clamp(1, SPLIT_ABOVE));
    match ranges.is_empty() {
        // A model without values still has a server: one empty shard.
        true => std::iter::once(0..0).collect(),
        false => ranges,
    }
}

/// The ranges of at most `shards` shards of the parameters laid out as
/// `layout`, in order, covering every value once. Fewer when more would not
/// make the largest smaller: a tensor that may not be split bounds it.
pub fn cut(layout: &Layout, shards: usize, split_above: usize) -> Vec<Range<usize>> {
    let pieces = pieces(layout, split_above.max(1));
    let shards = shards.clamp(1, pieces.len().max(1));
    let largest = pieces.iter().map(|p| p.len()).max().unwrap_or(0);
    // The smallest capacity that fits the pieces, in order, into `shards`.
    let (mut low, mut high) = (largest, layout.len().max(largest));
    while low < high {
        let mid = low + (high - low) / 2;
        if pack(&pieces, mid).len() <= shards {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    pack(&pieces, low)
}

/// The tensors in order, a tensor above `split_above` values cut between
/// its rows into pieces of at most that many values (or one row, if a row
/// is larger).
fn pieces(layout: &Layout, split_above: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for t in layout.tensors() {
        let range = t.range();
        if range.is_empty() {
            continue;
        }
        if range.len() <= split_above {
            out.push(range);
            continue;
        }
        let row: usize = t.shape.iter().skip(1).product::<usize>().max(1);
        let step = (split_above / row).max(1) * row;
        let mut start = range.start;
        while start < range.end {
            let end = (start + step).min(range.end);
            out.push(start..end);
            start = end;
        }
    }
    out
}

/// Consecutive pieces joined into ranges of at most `capacity` values (a
/// piece larger than that is a range of its own).
fn pack(pieces: &[Range<usize>], capacity: usize) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for p in pieces {
        match out.last_mut() {
            Some(last) if last.end == p.start && p.end - last.start <= capacity => last.end = p.end,
            _ => out.push(p.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shapes: &[&[usize]]) -> Layout {
        let mut l = Layout::default();
        for (i, s) in shapes.iter().enumerate() {
            l.push(format!("t{i}"), s);
        }
        l
    }

    fn covers(ranges: &[Range<usize>], len: usize) {
        assert_eq!(ranges.first().map(|r| r.start), Some(0));
        assert_eq!(ranges.last().map(|r| r.end), Some(len));
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "{ranges:?}");
    }

    #[test]
    fn shards_cut_between_tensors_and_balance_the_largest() {
        // The MLP 784-500-500-10: weights and biases.
        let mlp = layout(&[&[784, 500], &[500], &[500, 500], &[500], &[500, 10], &[10]]);
        let one = cut(&mlp, 1, SPLIT_ABOVE);
        assert_eq!(one, vec![0..mlp.len()]);
        let two = cut(&mlp, 2, SPLIT_ABOVE);
        covers(&two, mlp.len());
        // No tensor is split: the first weight matrix alone is the largest shard.
        assert_eq!(two, vec![0..392_000, 392_000..mlp.len()]);
        let starts: Vec<usize> = mlp.tensors().iter().map(|t| t.offset).collect();
        for s in 2..=6 {
            let ranges = cut(&mlp, s, SPLIT_ABOVE);
            covers(&ranges, mlp.len());
            assert!(ranges.len() <= s);
            assert!(ranges.iter().all(|r| starts.contains(&r.start)), "{s}: {ranges:?}");
        }
        // The first weight matrix is not split: beyond two shards none is smaller.
        assert_eq!(cut(&mlp, 64, SPLIT_ABOVE), two);
        // Split finer, it spreads over as many shards as asked.
        let fine = cut(&mlp, 4, 100_000);
        covers(&fine, mlp.len());
        assert_eq!(fine.len(), 4);
    }

    #[test]
    fn an_even_cut_splits_only_the_tensors_larger_than_a_share() {
        let mlp = layout(&[&[784, 500], &[500], &[500, 500], &[500], &[500, 10], &[10]]);
        for s in 1..=8 {
            let ranges = even(&mlp, s);
            covers(&ranges, mlp.len());
            assert_eq!(ranges.len(), s);
            let largest = ranges.iter().map(|r| r.len()).max().unwrap();
            // Within an eighth of an even share.
            assert!(largest <= mlp.len().div_ceil(s) * 9 / 8, "{s}: {ranges:?}");
        }
        // Two shards: the biases and the last layer (smaller than a share) are whole.
        let two = even(&mlp, 2);
        let (b2, w3) = (
            392_500 + 250_000..393_000 + 250_000,
            393_000 + 250_000..398_000 + 250_000,
        );
        assert!(two.iter().any(|r| r.start <= b2.start && r.end >= w3.end), "{two:?}");
    }

    #[test]
    fn a_model_without_values_gets_one_empty_shard() {
        assert_eq!(even(&Layout::default(), 4).len(), 1);
    }

    #[test]
    fn a_tensor_above_the_threshold_is_split_between_rows() {
        let big = layout(&[&[10], &[100, 30], &[5]]);
        let ranges = cut(&big, 4, 300);
        covers(&ranges, big.len());
        assert_eq!(ranges.len(), 4);
        let rows_start = 10;
        for r in &ranges[1..] {
            let inside = r.start > rows_start && r.start < rows_start + 3000;
            assert!(
                !inside || (r.start - rows_start) % 30 == 0,
                "a cut inside a row: {ranges:?}"
            );
        }
        let largest = ranges.iter().map(|r| r.len()).max().unwrap();
        // Within one piece (ten rows) of an even share.
        assert!(largest <= 3015 / 4 + 300, "balanced: {ranges:?}");
    }
}
