//! The epilogue: a tile's exact int8 sums turned into outputs — dequantized
//! with the two scale vectors, the outlier columns' floating-point product
//! added, the bias, the conversion to the output dtype — in `quant`'s order,
//! the one place the CPU paths' results are made the same bits.

use std::ops::Range;

use super::gemm::{Operands, Tile};
use super::kernel;
use super::pack::{BLOCK, GROUP, PANEL};
use super::phases::{Phase, Timer};
use crate::dtype::{DType, Element};
use crate::quant;

/// A tile's exact int8 sums as a microkernel left them: panel `p`'s row `r`,
/// lane `l` at `panels[p][r · row_stride + l]`.
#[derive(Clone, Copy)]
pub(super) struct TileSums<'a, const NP: usize> {
    pub panels: [&'a [i32]; NP],
    pub row_stride: usize,
}

impl Operands<'_> {
    /// The epilogue of `rows` rows from `at.i` over `NP` panels from `at.p`
    /// (any number of rows up to the tile's): on AVX-512 for outputs of
    /// whole panels, the tile at once
    /// ([`kernel::epilogue_tile_avx512`]), else in pieces of 16, 8, 4, 2 and
    /// 1 rows ([`Self::epilogue`]) — the same bits.
    #[inline(always)]
    pub(super) fn epilogue_sums<const NP: usize, Y: Element>(
        &self,
        at: Tile,
        rows: usize,
        out: &mut [Y],
        w_outliers: &[f32],
        sums: TileSums<'_, NP>,
    ) {
        // Timed around the whole tile, not inside `epilogue`: a guard there
        // slowed the instrumented epilogue twofold.
        let _timer = Timer::start(Phase::Epilogue);
        #[cfg(target_arch = "x86_64")]
        if (at.p + NP) * PANEL <= self.w.out_features() && kernel::has_avx512_epilogue() {
            let (no, j0) = (self.outliers.len(), at.p * PANEL);
            let tile = kernel::EpilogueTile {
                sums: &sums.panels,
                row_stride: sums.row_stride,
                rows,
                sa: &self.sa[at.i..][..rows],
                sb: &self.w.scb()[j0..][..NP * PANEL],
                x_outliers: &self.x_outliers[at.i * no..][..rows * no],
                w_outliers: &w_outliers[(at.p - at.p0) * no * PANEL..][..NP * no * PANEL],
                bias: self.w.bias().map(|b| &b[j0..][..NP * PANEL]),
            };
            let dst = &mut out[(at.i - at.row0) * at.stride + j0 - at.col0..];
            assert!(rows == 0 || (rows - 1) * at.stride + NP * PANEL <= dst.len());
            // SAFETY: the processor has AVX-512 F and F16C (checked above);
            // `dst` holds the tile's outputs (checked), of `Y`, whose dtype is given.
            unsafe { kernel::epilogue_tile_avx512(tile, dst.as_mut_ptr().cast(), at.stride, Y::DTYPE) };
            return;
        }
        let (panels, row_stride) = (sums.panels, sums.row_stride);
        let acc = |r: usize, p: usize, l: usize| panels[p][r * row_stride + l] as f64;
        let mut r0 = 0;
        while r0 < rows {
            let piece = Tile { i: at.i + r0, ..at };
            let acc = |r, p, l| acc(r0 + r, p, l);
            r0 += match rows - r0 {
                16.. => self.epilogue_n::<16, NP, Y>(piece, out, w_outliers, acc),
                8.. => self.epilogue_n::<8, NP, Y>(piece, out, w_outliers, acc),
                4.. => self.epilogue_n::<4, NP, Y>(piece, out, w_outliers, acc),
                2.. => self.epilogue_n::<2, NP, Y>(piece, out, w_outliers, acc),
                _ => self.epilogue_n::<1, NP, Y>(piece, out, w_outliers, acc),
            };
        }
    }

    /// [`Self::epilogue`], returning the rows it wrote.
    #[inline(always)]
    pub(super) fn epilogue_n<const MR: usize, const NP: usize, Y: Element>(
        &self,
        at: Tile,
        out: &mut [Y],
        w_outliers: &[f32],
        acc: impl Fn(usize, usize, usize) -> f64,
    ) -> usize {
        self.epilogue::<MR, NP, Y>(at, out, w_outliers, acc);
        MR
    }

    /// [`Self::dequantize_outlier_columns`] where `first`: in the first row of
    /// tiles over `panels`, after their products.
    #[inline(always)]
    pub(super) fn outlier_columns_after_products(
        &self,
        first: bool,
        panels: Range<usize>,
        p0: usize,
        w_outliers: &mut [f32],
    ) {
        if first {
            self.dequantize_outlier_columns(panels, p0, w_outliers);
        }
    }

    /// Dequantizes the outlier columns of the weight panels `panels` into
    /// `w_outliers` as `[panel - p0][outlier][lane]` (`p0`: the first panel of
    /// the block; a column the weight keeps in its source dtype is copied from
    /// there): once per block of panels, not once per tile (at M = 512 that was
    /// 64 times over, ~7% of a call with 6 outlier columns), and right after
    /// the first tile's products over those panels, which leave their bytes in
    /// cache (before them, each column of each panel was a miss to memory:
    /// 2–7% of a call).
    #[inline(always)]
    pub(super) fn dequantize_outlier_columns(&self, panels: Range<usize>, p0: usize, w_outliers: &mut [f32]) {
        let no = self.outliers.len();
        if no == 0 {
            return;
        }
        let _timer = Timer::start(Phase::OutlierWeights);
        let (scb, packed, kept) = (self.w.scb(), self.w.packed(), self.w.kept());
        let n = self.w.out_features();
        for p in panels {
            let j0 = p * PANEL;
            let mut sb = [0.0f32; PANEL]; // padding rows: 0
            for (l, s) in sb.iter_mut().enumerate() {
                *s = scb.get(j0 + l).copied().unwrap_or(0.0);
            }
            for (ci, &c) in self.outliers.iter().enumerate() {
                let dst = &mut w_outliers[((p - p0) * no + ci) * PANEL..][..PANEL];
                // A kept column: its source values (the paper's 16-bit outlier weights).
                if let Some((kept, slot)) = kept.and_then(|k| k.slot(c).map(|s| (k, s))) {
                    for (l, d) in dst.iter_mut().enumerate() {
                        *d = if j0 + l < n { kept.value(slot, j0 + l) } else { 0.0 };
                    }
                    continue;
                }
                let block = &packed.data()[p * packed.panel_stride() + (c / GROUP) * BLOCK..][..BLOCK];
                for (l, d) in dst.iter_mut().enumerate() {
                    *d = quant::dequantize_weight(block[l * GROUP + c % GROUP], sb[l]);
                }
            }
        }
    }

    /// Dequantization, outlier part, bias and conversion to `Y` for one tile,
    /// in the fixed order of [`quant`]; `acc(r, p, lane)` is the exact integer
    /// product (as f64, which holds it exactly).
    #[inline(always)]
    pub(super) fn epilogue<const MR: usize, const NP: usize, Y: Element>(
        &self,
        at: Tile,
        out: &mut [Y],
        w_outliers: &[f32],
        acc: impl Fn(usize, usize, usize) -> f64,
    ) {
        let n = self.w.out_features();
        if Y::DTYPE == DType::F16 {
            // The float32 epilogue into a tile of its own, then F16C 8 values
            // at a time (`convert_from_f32`): `f16::from_f32` value by value
            // made float16 calls 1.45× float32's at M = 512, and a float16
            // loop of its own here did not vectorize (docs/PERF.md).
            let mut tile = [[[0.0f32; PANEL]; NP]; MR];
            let tile = tile.as_flattened_mut().as_flattened_mut();
            let width = NP * PANEL;
            let in_tile = Tile { row0: at.i, stride: width, col0: at.p * PANEL, ..at };
            self.epilogue::<MR, NP, f32>(in_tile, tile, w_outliers, acc);
            let cols = width.min(n - at.p * PANEL);
            for (r, values) in tile.chunks_exact(width).enumerate() {
                let row = &mut out[(at.i + r - at.row0) * at.stride + at.p * PANEL - at.col0..];
                kernel::convert_from_f32(&values[..cols], &mut row[..cols]);
            }
            return;
        }
        let (scb, bias) = (self.w.scb(), self.w.bias());
        // The outlier part, column by column in ascending order, against the
        // weight columns the block dequantized once (`dequantize_outlier_columns`).
        let no = self.outliers.len();
        // Per row and panel, the 16 lanes' sums stay in registers across the
        // columns (a column-outer loop would keep the whole tile's in memory).
        let mut outlier_part = [[[0.0f32; PANEL]; NP]; MR];
        if no > 0 {
            for (r, part) in outlier_part.iter_mut().enumerate() {
                let x_outliers = &self.x_outliers[(at.i + r) * no..][..no];
                for (p, part) in part.iter_mut().enumerate() {
                    let w = &w_outliers[(at.p + p - at.p0) * no * PANEL..][..no * PANEL];
                    let mut sum = [0.0f32; PANEL];
                    for (&xv, w) in x_outliers.iter().zip(w.chunks_exact(PANEL)) {
                        for (o, &wv) in sum.iter_mut().zip(w) {
                            *o = quant::add_outlier_product(*o, xv, wv);
                        }
                    }
                    *part = sum;
                }
            }
        }
        for (r, part) in outlier_part.iter().enumerate() {
            let i = at.i + r;
            let sa = self.sa[i];
            let out_row = &mut out[(i - at.row0) * at.stride..];
            for (p, part) in part.iter().enumerate() {
                let j0 = (at.p + p) * PANEL;
                for (l, &o) in part.iter().enumerate().take(n.saturating_sub(j0)) {
                    let j = j0 + l;
                    let int8_part = quant::dequantize_product(acc(r, p, l), sa, scb[j]);
                    let b = bias.map_or(0.0, |b| b[j]);
                    out_row[j - at.col0] = Y::from_f32(quant::output_value(int8_part, o, b));
                }
            }
        }
    }
}
