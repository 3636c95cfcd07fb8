//! The int8 weight in the layout the CPU microkernels stream.
//!
//! Output rows are grouped in panels of [`PANEL`] = 16 and input columns in
//! groups of [`GROUP`] = 4. Within a panel, each group of 4 columns holds the
//! 4 bytes of row 0, then row 1, …, row 15: 64 bytes, one 512-bit register, the
//! exact operand of AVX-512 VNNI `vpdpbusd` (16 lanes × 4 byte products). Rows
//! and columns past the weight's shape are zero. The layout costs at most 15
//! rows and 3 columns of padding; bitsandbytes' row-major `CB` is recovered by
//! [`PackedWeight::unpack_into`].

use super::aligned::AlignedBytes;
use crate::error::{Error, Result};

/// Output rows per panel.
pub const PANEL: usize = 16;
/// Input columns per group (the bytes of one `vpdpbusd` lane).
pub const GROUP: usize = 4;
/// Bytes of one (panel, group) block.
pub const BLOCK: usize = PANEL * GROUP;

#[derive(Debug)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of [`GROUP`].
    kp: usize,
    /// `[panels][kp / GROUP][PANEL][GROUP]`, from a cache line (every tile
    /// row and vector load of the kernels then reads one line, not two).
    data: AlignedBytes,
}

/// `k` rounded up to a multiple of [`GROUP`].
pub fn k_padded_to_group(k: usize) -> usize {
    k.div_ceil(GROUP) * GROUP
}

impl PackedWeight {
    /// An all-zero packed weight of `n` rows and `k` columns.
    pub fn zeroed(n: usize, k: usize) -> Result<PackedWeight> {
        let kp = k_padded_to_group(k);
        let panels = n.div_ceil(PANEL);
        let len = panels
            .checked_mul(PANEL)
            .and_then(|rows| rows.checked_mul(kp))
            .ok_or_else(|| Error::shape(format!("weight [{n}, {k}] padded for the kernels overflows size_t")))?;
        let data = AlignedBytes::zeroed(len, "int8 weight")?;
        Ok(PackedWeight { n, k, kp, data })
    }

    /// Output rows (the weight's `out_features`).
    pub fn rows(&self) -> usize {
        self.n
    }
    /// Input columns (the weight's `in_features`).
    pub fn cols(&self) -> usize {
        self.k
    }
    pub fn k_padded(&self) -> usize {
        self.kp
    }
    pub fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }
    /// Bytes of one panel.
    pub fn panel_stride(&self) -> usize {
        PANEL * self.kp
    }
    pub fn data(&self) -> &[i8] {
        self.data.as_slice()
    }
    /// The layout's bytes (the allocation holds up to 63 more, for the alignment).
    pub fn resident_bytes(&self) -> usize {
        self.data.len()
    }

    /// Offset of element `[row, col]` in `data`.
    #[inline(always)]
    fn offset(&self, row: usize, col: usize) -> usize {
        (row / PANEL) * self.panel_stride() + (col / GROUP) * BLOCK + (row % PANEL) * GROUP + col % GROUP
    }

    /// Element `[row, col]`.
    #[inline]
    pub fn get(&self, row: usize, col: usize) -> i8 {
        self.data()[self.offset(row, col)]
    }

    /// Splits the weight into disjoint writers of whole panels, one per range of
    /// `panel_ranges` (contiguous, starting at panel 0).
    pub fn panel_writers(&mut self, panel_ranges: &[std::ops::Range<usize>]) -> Vec<PanelWriter<'_>> {
        let (stride, kp) = (self.panel_stride(), self.kp);
        let mut data: &mut [i8] = self.data.as_mut_slice();
        let mut out = Vec::with_capacity(panel_ranges.len());
        for r in panel_ranges {
            let (d, rest) = std::mem::take(&mut data).split_at_mut(r.len() * stride);
            data = rest;
            out.push(PanelWriter { first_row: r.start * PANEL, kp, data: d });
        }
        out
    }

    /// Packs a row-major `[n, k]` int8 matrix (bitsandbytes' `CB`).
    pub fn from_row_major(cb: &[i8], n: usize, k: usize) -> Result<PackedWeight> {
        let mut packed = PackedWeight::zeroed(n, k)?;
        let panels = packed.panels();
        for mut writer in packed.panel_writers(std::slice::from_ref(&(0..panels))) {
            for (row, values) in cb.chunks_exact(k).enumerate() {
                writer.write_row(row, values);
            }
        }
        Ok(packed)
    }

    /// Writes row-major `[n, k]` into `cb` (which holds exactly `n · k` bytes).
    pub fn unpack_into(&self, cb: &mut [i8]) {
        for (row, dst) in cb.chunks_exact_mut(self.k).enumerate() {
            for (col, d) in dst.iter_mut().enumerate() {
                *d = self.get(row, col);
            }
        }
    }
}

/// Exclusive access to whole panels of a [`PackedWeight`] being built.
pub struct PanelWriter<'a> {
    /// The weight row of this writer's first panel row.
    first_row: usize,
    kp: usize,
    data: &'a mut [i8],
}

impl PanelWriter<'_> {
    /// Stores weight row `row` (global index, inside [`Self::row_range`]).
    #[inline(always)]
    pub fn write_row(&mut self, row: usize, values: &[i8]) {
        let local = row - self.first_row;
        let base = (local / PANEL) * PANEL * self.kp + (local % PANEL) * GROUP;
        // Fixed-size copies of whole groups, then the partial last group.
        let groups = values.chunks_exact(GROUP);
        let tail = groups.remainder();
        for (g, four) in groups.enumerate() {
            self.data[base + g * BLOCK..][..GROUP].copy_from_slice(four);
        }
        if !tail.is_empty() {
            let at = base + (values.len() / GROUP) * BLOCK;
            self.data[at..at + tail.len()].copy_from_slice(tail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_shapes_are_refused_not_wrapped() {
        let e = PackedWeight::zeroed(usize::MAX / 2, 3).unwrap_err();
        assert_eq!(e.status(), crate::Status::Shape);
        let e = PackedWeight::zeroed(usize::MAX, 1).unwrap_err();
        assert_eq!(e.status(), crate::Status::Shape);
        // Representable but impossible: the allocator says no, nothing aborts.
        let e = PackedWeight::zeroed(1 << 40, 1 << 20).unwrap_err();
        assert_eq!(e.status(), crate::Status::OutOfMemory);
    }

    #[test]
    fn pack_unpack_round_trips_with_padding() {
        for (n, k) in [(1, 1), (3, 5), (16, 4), (17, 9), (40, 33)] {
            let cb: Vec<i8> = (0..n * k).map(|i| ((i * 7919) % 255) as i8).collect();
            let p = PackedWeight::from_row_major(&cb, n, k).unwrap();
            assert_eq!(p.data().len(), n.div_ceil(PANEL) * PANEL * k_padded_to_group(k));
            let mut back = vec![0i8; n * k];
            p.unpack_into(&mut back);
            assert_eq!(back, cb);
            // Padding is zero: the block of row 0, group 0 holds columns 0..4 of row 0.
            assert_eq!(p.data()[..k.min(4)], cb[..k.min(4)]);
        }
    }
}
