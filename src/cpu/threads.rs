//! Splitting work across threads: contiguous ranges, and the matching disjoint
//! mutable slices, so that every thread writes only its own memory.

use std::ops::Range;
use std::sync::OnceLock;

/// Threads a context uses unless told otherwise: `LLMINT8_NUM_THREADS` when it
/// holds a positive integer, else the processors available to this process.
pub(crate) fn default_num_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("LLMINT8_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Splits `0..total` into at most `parts` contiguous, non-empty ranges of
/// near-equal length (none when `total` is 0).
pub(crate) fn split_ranges(total: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, total.max(1));
    let (base, extra) = (total / parts, total % parts);
    let mut start = 0;
    (0..parts)
        .map(|p| {
            let len = base + usize::from(p < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// Cuts `data` into the sub-slices `[r.start * unit, r.end * unit)` for each of
/// the contiguous `ranges` (which must start at 0 and cover it in order).
pub(crate) fn split_slice_mut<'a, T>(mut data: &'a mut [T], ranges: &[Range<usize>], unit: usize) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let (head, tail) = std::mem::take(&mut data).split_at_mut(r.len() * unit);
        out.push(head);
        data = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        for total in 0..20 {
            for parts in 1..6 {
                let r = split_ranges(total, parts);
                assert!(r.len() <= parts);
                let mut next = 0;
                for x in &r {
                    assert_eq!(x.start, next);
                    assert!(!x.is_empty());
                    next = x.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn slices_follow_ranges() {
        let mut v: Vec<u32> = (0..10).collect();
        let parts = split_slice_mut(&mut v, &[0..2, 2..5], 2);
        assert_eq!(parts[0], &[0, 1, 2, 3]);
        assert_eq!(parts[1], &[4, 5, 6, 7, 8, 9]);
    }
}
