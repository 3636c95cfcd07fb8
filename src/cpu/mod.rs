//! CPU backend: the pipeline of the paper — quantize rows, int8 GEMM, dequantize
//! and add the outlier product — split across threads.
//!
//! Every output element is computed by exactly one thread, in the same order
//! whatever the number of threads, so results are bit-identical for any count.

mod aligned;
mod amx;
pub(crate) mod isa;
mod kernel;
pub(crate) mod pack;
mod pool;
mod quantize;
mod scratch;
mod threads;
mod weight;

use std::ops::Range;

use crate::call::{Call, Host, Work};
use crate::dtype::{DType, DataMut, Element};
use crate::error::{try_zeroed_vec, Error, Result};
use crate::quant::{self, InputRounding, RowScale};
use crate::with_data;
use pack::{BLOCK, GROUP, PANEL};

pub use isa::CpuPath;
use pool::run_parts;
pub(crate) use quantize::quantize_activations;
use quantize::quantize_weight_rows;
pub(crate) use threads::default_num_threads;
use threads::{split_ranges, split_slice_mut};
pub(crate) use weight::{KeptColumns, Weight};

/// Work (in multiply-adds) below which a call stays on the calling thread:
/// handing a part to a worker and waiting for it costs microseconds.
const MIN_PARALLEL_WORK: usize = 1 << 20;

/// From this many activation rows on, threads split the rows (each streams all
/// of W, reused across many rows); below it they split W, which dominates.
const ROWS_TO_SPLIT_ROWS: usize = 64;

/// Weight panels per block of the GEMM: 8 panels (128 rows) of a 4096-wide
/// weight, 512 KiB, stay in L2 while every tile of X passes over them.
const PANELS_PER_BLOCK: usize = 8;

/// From this many activation rows on, the AMX path multiplies on the tiles;
/// below it, on AVX-512 VNNI: measured at K = N = 4096 with the operands on
/// cache lines (docs/PERF.md), AMX loses at 1 and 4 rows and wins from 5 on.
const AMX_MIN_ROWS: usize = 5;

/// What a call takes from its context, read once at its start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub path: CpuPath,
    pub rounding: InputRounding,
    pub row_scale: RowScale,
    pub threads: usize,
}

impl Settings {
    /// The rounding to apply to elements of `T`: rounding float16 values to
    /// float16 changes nothing, so they take the `Exact` code, which has the
    /// fast paths (same bytes, bit for bit).
    pub(crate) fn rounding_for<T: Element>(self) -> InputRounding {
        if T::DTYPE == crate::DType::F16 {
            InputRounding::Exact
        } else {
            self.rounding
        }
    }
}

/// How many threads `work` units of work deserve, at most `threads`.
fn threads_for(work: usize, threads: usize) -> usize {
    if work < MIN_PARALLEL_WORK {
        1
    } else {
        threads.clamp(1, work / (MIN_PARALLEL_WORK / 2))
    }
}

/// The activations as the microkernels read them.
#[derive(Clone, Copy)]
enum ActivationTile<'a> {
    /// Row by row, for the vector microkernels (`kernel.rs`).
    Rows(RowTile<'a>),
    /// Packed as AMX A tiles (`amx::pack_activations`; calls split rows at
    /// multiples of 32), for the AMX tiles (`model`: the software model of the
    /// tile instructions).
    Amx { x: &'a [i8], model: bool },
}

/// The activations of the vector microkernels: one row per activation row,
/// `kp` bytes each (K padded to a multiple of 4 with zeros).
#[derive(Clone, Copy)]
enum RowTile<'a> {
    /// Signed int8, for the portable kernel.
    Signed(&'a [i8]),
    /// Widened to i16, for the AVX2 kernel (`vpmaddwd`).
    #[cfg(target_arch = "x86_64")]
    Wide(&'a [i16]),
    /// Packed in tiles of 8 rows with their row sums, for the AVX-512 VNNI
    /// kernel (see `kernel::pack_vnni_activations`).
    #[cfg(target_arch = "x86_64")]
    Vnni { x: &'a [i8], sums: &'a [i32] },
}

impl RowTile<'_> {
    /// The tile heights (largest first) and the most panels per tile the
    /// kernel for this layout keeps in registers.
    fn tile_shape(&self) -> (&'static [usize], usize) {
        match self {
            RowTile::Signed(_) => (&[4, 2, 1], 1),
            #[cfg(target_arch = "x86_64")]
            RowTile::Wide(_) => (&[2, 1], 1),
            #[cfg(target_arch = "x86_64")]
            RowTile::Vnni { .. } => (&[8, 4, 2, 1], 2),
        }
    }
}

/// Everything one thread needs to compute a block of the output.
struct Operands<'a> {
    w: &'a Weight,
    x: ActivationTile<'a>,
    /// Row stride of `x` (K padded to a multiple of 4).
    kp: usize,
    /// Row absmax of X `[rows]`.
    sa: &'a [f32],
    /// The outlier columns, ascending.
    outliers: &'a [usize],
    /// Those columns of X `[rows, outliers.len()]`, in f32.
    x_outliers: &'a [f32],
}

impl Operands<'_> {
    /// Computes output rows `rows` × weight panels `panels` into `out`, a
    /// row-major block whose row `i` starts at `(i - rows.start) * stride` and
    /// column `j` at `j - col0`, block of panels by block of panels, tile by
    /// tile: exact int8 products in the microkernel, then the shared epilogue.
    ///
    /// `w_outliers` is scratch for the block's outlier weight columns
    /// (`PANELS_PER_BLOCK · outliers · PANEL` floats).
    #[inline(always)]
    fn compute<Y: Element>(
        &self,
        rows: Range<usize>,
        panels: Range<usize>,
        out: &mut [Y],
        stride: usize,
        col0: usize,
        w_outliers: &mut [f32],
    ) {
        let at = Tile { i: rows.start, p: panels.start, p0: panels.start, row0: rows.start, stride, col0 };
        // Plain loops, not a closure per block: a closure is compiled without
        // the target features of the function it is passed into (measured: the
        // AMX path's epilogue ran on SSE2, ~30% of a call at M = 512).
        match &self.x {
            ActivationTile::Rows(x) => {
                for block in blocks(panels) {
                    self.dequantize_outlier_columns(block.clone(), w_outliers);
                    self.block_rows(x, rows.clone(), block, at, out, w_outliers);
                }
            }
            &ActivationTile::Amx { x, model } => {
                #[cfg(target_arch = "x86_64")]
                if !model {
                    if let Some(mut tiles) = amx::Hardware::configure() {
                        return self.blocks_tiles(&mut tiles, x, rows, panels, at, out, w_outliers);
                    }
                }
                let _ = model; // where the processor lacks AMX, the model computes the same sums
                self.blocks_tiles(&mut amx::Model::new(), x, rows, panels, at, out, w_outliers)
            }
        }
    }

    /// Every block of `panels` on AMX tiles ([`Self::block_tiles`]).
    #[allow(clippy::too_many_arguments)] // the tile loop's state, inlined into the AMX nest (issue 31 restructures it)
    #[inline(always)]
    fn blocks_tiles<U: amx::TileUnit, Y: Element>(
        &self,
        unit: &mut U,
        x: &[i8],
        rows: Range<usize>,
        panels: Range<usize>,
        at: Tile,
        out: &mut [Y],
        w_outliers: &mut [f32],
    ) {
        for block in blocks(panels) {
            self.dequantize_outlier_columns(block.clone(), w_outliers);
            self.block_tiles(unit, x, rows.clone(), block, at, out, w_outliers);
        }
    }

    /// One block of panels on the vector microkernels: tiles of the heights
    /// the layout allows, each over at most two panels.
    #[inline(always)]
    fn block_rows<Y: Element>(
        &self,
        x: &RowTile<'_>,
        rows: Range<usize>,
        block: Range<usize>,
        at: Tile,
        out: &mut [Y],
        w_outliers: &[f32],
    ) {
        let (heights, max_np) = x.tile_shape();
        let mut i = rows.start;
        while i < rows.end {
            // Tiles never straddle a group of 8 rows (the packed VNNI layout).
            let room = (rows.end - i).min(kernel::VNNI_ROWS - i % kernel::VNNI_ROWS);
            let mr = heights.iter().copied().find(|&m| m <= room).unwrap_or(1);
            let mut p = block.start;
            while p < block.end {
                let np = (block.end - p).min(max_np);
                let at = Tile { i, p, p0: block.start, ..at };
                match (mr, np) {
                    (8, 2) => self.tile::<8, 2, Y>(x, at, out, w_outliers),
                    (8, _) => self.tile::<8, 1, Y>(x, at, out, w_outliers),
                    (4, 2) => self.tile::<4, 2, Y>(x, at, out, w_outliers),
                    (4, _) => self.tile::<4, 1, Y>(x, at, out, w_outliers),
                    (2, 2) => self.tile::<2, 2, Y>(x, at, out, w_outliers),
                    (2, _) => self.tile::<2, 1, Y>(x, at, out, w_outliers),
                    (_, 2) => self.tile::<1, 2, Y>(x, at, out, w_outliers),
                    _ => self.tile::<1, 1, Y>(x, at, out, w_outliers),
                }
                p += np;
            }
            i += mr;
        }
    }

    /// One block of panels on AMX tiles: 32 rows × 2 panels (2 × 2
    /// accumulator tiles) at a time, the exact sums then the shared epilogue.
    #[allow(clippy::too_many_arguments)] // as `blocks_tiles`
    #[inline(always)]
    fn block_tiles<U: amx::TileUnit, Y: Element>(
        &self,
        unit: &mut U,
        x: &[i8],
        rows: Range<usize>,
        block: Range<usize>,
        at: Tile,
        out: &mut [Y],
        w_outliers: &[f32],
    ) {
        let (packed, kp) = (self.w.packed(), self.kp);
        let ps = packed.panel_stride();
        let mut i = rows.start;
        while i < rows.end {
            let mr = (rows.end - i).min(amx::BLOCK_ROWS);
            let xs = &x[amx::packed_activation_len(i, kp)..];
            let mut p = block.start;
            while p < block.end {
                let np = (block.end - p).min(2);
                let w = &packed.data()[p * ps..];
                let at = Tile { i, p, p0: block.start, ..at };
                let t = amx::TILE_ROWS;
                match (mr > t, np) {
                    (true, 2) => {
                        let s = amx::products::<U, 2, 2>(unit, xs, w, ps, kp);
                        self.epilogue_rows::<2, Y>(at, mr, out, w_outliers, |r, p, l| s[r / t][p][r % t][l] as f64)
                    }
                    (true, _) => {
                        let s = amx::products::<U, 2, 1>(unit, xs, w, ps, kp);
                        self.epilogue_rows::<1, Y>(at, mr, out, w_outliers, |r, p, l| s[r / t][p][r % t][l] as f64)
                    }
                    (false, 2) => {
                        let s = amx::products::<U, 1, 2>(unit, xs, w, ps, kp);
                        self.epilogue_rows::<2, Y>(at, mr, out, w_outliers, |r, p, l| s[0][p][r][l] as f64)
                    }
                    (false, _) => {
                        let s = amx::products::<U, 1, 1>(unit, xs, w, ps, kp);
                        self.epilogue_rows::<1, Y>(at, mr, out, w_outliers, |r, p, l| s[0][p][r][l] as f64)
                    }
                }
                p += np;
            }
            i += mr;
        }
    }

    /// The epilogue of `mr` rows from `at.i` (any count up to 32), in pieces
    /// of 16, 8, 4, 2 and 1 rows; `acc(r, …)` indexes rows from `at.i`.
    #[inline(always)]
    fn epilogue_rows<const NP: usize, Y: Element>(
        &self,
        at: Tile,
        mr: usize,
        out: &mut [Y],
        w_outliers: &[f32],
        acc: impl Fn(usize, usize, usize) -> f64,
    ) {
        let mut r0 = 0;
        while r0 < mr {
            let piece = Tile { i: at.i + r0, ..at };
            let acc = |r, p, l| acc(r0 + r, p, l);
            r0 += match mr - r0 {
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
    fn epilogue_n<const MR: usize, const NP: usize, Y: Element>(
        &self,
        at: Tile,
        out: &mut [Y],
        w_outliers: &[f32],
        acc: impl Fn(usize, usize, usize) -> f64,
    ) -> usize {
        self.epilogue::<MR, NP, Y>(at, out, w_outliers, acc);
        MR
    }

    /// One tile: `MR` rows from `at.i`, `NP` panels from `at.p`.
    #[inline(always)]
    fn tile<const MR: usize, const NP: usize, Y: Element>(
        &self,
        x: &RowTile<'_>,
        at: Tile,
        out: &mut [Y],
        w_outliers: &[f32],
    ) {
        let packed = self.w.packed();
        let (stride, kp) = (packed.panel_stride(), self.kp);
        let w = &packed.data()[at.p * stride..];
        match x {
            RowTile::Signed(x) => {
                let acc = kernel::tile_portable::<MR, NP>(&x[at.i * kp..], kp, w, stride, kp);
                self.epilogue::<MR, NP, Y>(at, out, w_outliers, |r, p, l| acc[r][p][l] as f64);
            }
            #[cfg(target_arch = "x86_64")]
            RowTile::Wide(x) => {
                // The AVX2 kernel computes one panel (`tile_shape` asks for one
                // at a time); a wider tile would take its panels one by one.
                let acc: [_; NP] = std::array::from_fn(|p| {
                    // SAFETY: `Wide` is only built when the processor has AVX2 (see `matmul`).
                    unsafe { kernel::tile_avx2::<MR>(&x[at.i * kp..], kp, &w[p * stride..], kp) }
                });
                self.epilogue::<MR, NP, Y>(at, out, w_outliers, |r, p, l| acc[p][r][0][l] as f64);
            }
            #[cfg(target_arch = "x86_64")]
            RowTile::Vnni { x, sums } => {
                let tile = &x[(at.i / kernel::VNNI_ROWS) * kp * kernel::VNNI_ROWS..];
                let (tile, sums) = (&tile[(at.i % kernel::VNNI_ROWS) * GROUP..], &sums[at.i..]);
                // SAFETY: `Vnni` is only built when the processor has AVX-512
                // F/BW/VNNI (see `matmul`).
                let acc = unsafe { kernel::tile_vnni::<MR, NP>(tile, sums, w, stride, kp) };
                self.epilogue::<MR, NP, Y>(at, out, w_outliers, |r, p, l| acc[r][p][l] as f64);
            }
        }
    }

    /// Dequantizes the outlier columns of the weight panels `panels` into
    /// `w_outliers` as `[panel - panels.start][outlier][lane]` (a column the
    /// weight keeps in its source dtype is copied from there): once per block
    /// of panels instead of once per tile (at M = 512 that was 64 times over,
    /// ~7% of a call with 6 outlier columns).
    #[inline(always)]
    fn dequantize_outlier_columns(&self, panels: Range<usize>, w_outliers: &mut [f32]) {
        let no = self.outliers.len();
        if no == 0 {
            return;
        }
        let (scb, packed, kept) = (self.w.scb(), self.w.packed(), self.w.kept());
        let n = self.w.out_features();
        for (pi, p) in panels.enumerate() {
            let j0 = p * PANEL;
            let sb: [f32; PANEL] = std::array::from_fn(|l| scb.get(j0 + l).copied().unwrap_or(0.0)); // padding rows: 0
            for (ci, &c) in self.outliers.iter().enumerate() {
                let dst = &mut w_outliers[(pi * no + ci) * PANEL..][..PANEL];
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
    fn epilogue<const MR: usize, const NP: usize, Y: Element>(
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

/// `panels` in blocks of at most [`PANELS_PER_BLOCK`] panels, each computed
/// with its outlier weight columns dequantized once.
#[inline(always)]
fn blocks(panels: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    panels.clone().step_by(PANELS_PER_BLOCK).map(move |p0| p0..(p0 + PANELS_PER_BLOCK).min(panels.end))
}

/// Where a tile sits: first activation row `i`, first panel `p`, and how the
/// output block is laid out (`row0`, `stride`, `col0` as in `compute`).
#[derive(Clone, Copy)]
struct Tile {
    i: usize,
    p: usize,
    /// First panel of the block `p` belongs to (indexes the block's scratch).
    p0: usize,
    row0: usize,
    stride: usize,
    col0: usize,
}

isa::multiversion! {
    fn compute_block<Y: Element>(
        ops: &Operands<'_>,
        rows: Range<usize>,
        panels: Range<usize>,
        out: &mut [Y],
        stride: usize,
        col0: usize,
        w_outliers: &mut [f32]
    ) -> () {
        ops.compute(rows, panels, out, stride, col0, w_outliers)
    }
}

/// Runs `compute` on each part on the worker pool, each with its own scratch
/// for a block's dequantized outlier weight columns (`outliers` of them).
fn compute_parts<P: Send>(
    parts: impl Iterator<Item = P>,
    outliers: usize,
    compute: impl Fn(P, &mut [f32]) + Sync,
) -> Result<()> {
    run_parts(parts, |part| -> Result<()> {
        let mut w_outliers =
            try_zeroed_vec::<f32>(PANELS_PER_BLOCK * outliers * PANEL, "dequantized outlier weight columns")?;
        compute(part, &mut w_outliers);
        Ok(())
    })
    .into_iter()
    .collect()
}

/// Which microkernel a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Portable,
    Avx2,
    Vnni,
    /// AMX tiles (`model`: in software).
    Amx {
        model: bool,
    },
}

/// Lays the quantized activations `q` `[rows, k]` out for the microkernel:
/// rows padded to `kp` columns, packed in tiles of 8 rows for VNNI, widened for AVX2.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn activation_tile<'a>(
    q: &[i8],
    k: usize,
    kp: usize,
    kernel: Kernel,
    i8s: &'a mut Vec<i8>,
    i16s: &'a mut Vec<i16>,
    sums: &'a mut Vec<i32>,
) -> Result<ActivationTile<'a>> {
    let rows = q.len() / k;
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 {
        let x = scratch::zeroed(i16s, rows * kp, "widened activations")?;
        for (dst, src) in x.chunks_exact_mut(kp).zip(q.chunks_exact(k)) {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v as i16;
            }
        }
        return Ok(ActivationTile::Rows(RowTile::Wide(x)));
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Vnni {
        let tiles = rows.div_ceil(kernel::VNNI_ROWS);
        let x = aligned::zeroed_in(i8s, tiles * kernel::VNNI_ROWS * kp, "packed activations")?;
        let sums = scratch::zeroed(sums, rows, "activation row sums")?;
        kernel::pack_vnni_activations(q, k, kp, x, sums);
        return Ok(ActivationTile::Rows(RowTile::Vnni { x, sums }));
    }
    if let Kernel::Amx { model } = kernel {
        let x = aligned::zeroed_in(i8s, amx::packed_activation_len(rows, kp), "packed activations")?;
        amx::pack_activations(q, k, x);
        return Ok(ActivationTile::Amx { x, model });
    }
    let x = scratch::zeroed(i8s, rows * kp, "padded activations")?;
    for (dst, src) in x.chunks_exact_mut(kp).zip(q.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    Ok(ActivationTile::Rows(RowTile::Signed(x)))
}

/// Runs a call on host memory (see [`Work`]): X is quantized once, then
/// each weight's product, or a row-parallel rank's statistics. The context
/// has checked the call. Returns the number of outlier columns.
pub(crate) fn run(call: Call<'_, Weight, Host, Settings>) -> Result<usize> {
    let Call { weights, x, rows, threshold, work, settings } = call;
    let k = weights[0].in_features();
    with_data!(x, x => {
        let input = Activations { x, rows, k, threshold, settings, row_absmax: None };
        match work {
            Work::Products(ys) => products(input, &weights, ys),
            Work::Partial { row_absmax, y } => products(Activations { row_absmax: Some(row_absmax), ..input }, &weights, vec![y]),
            Work::Statistics { row_absmax } => row_statistics(input, row_absmax),
        }
    })
}

/// A call's activations `x` `[rows, k]` and how to quantize them.
#[derive(Clone, Copy)]
pub(crate) struct Activations<'a, X> {
    pub x: &'a [X],
    pub rows: usize,
    pub k: usize,
    pub threshold: f32,
    pub settings: Settings,
    /// A row-parallel partial's row absmax (the MAX over the ranks).
    pub row_absmax: Option<&'a [f32]>,
}

/// `ys[i] = x · weights[i]ᵀ + b[i]` for weights that share their input (q/k/v,
/// gate/up; one weight: a plain matmul): X is quantized, its outlier columns
/// found and gathered and its int8 rows laid out for the microkernel once,
/// then each weight's product and epilogue run as in a call of its own — the
/// same bits. The outputs share one dtype (checked by the context).
fn products<X: Element>(input: Activations<'_, X>, weights: &[&Weight], mut ys: Vec<DataMut<'_>>) -> Result<usize> {
    fn typed<X: Element, Y: Element>(
        input: Activations<'_, X>,
        weights: &[&Weight],
        ys: &mut [DataMut<'_>],
    ) -> Result<usize> {
        let mut typed: Vec<&mut [Y]> = ys
            .iter_mut()
            .map(|y| Y::slice_mut(y).ok_or_else(|| Error::invalid("the outputs differ in dtype")))
            .collect::<Result<_>>()?;
        scratch::with_scratch(|scratch| matmul_in(input, weights, &mut typed, scratch))
    }
    match ys.first().map(DataMut::dtype) {
        Some(DType::F32) | None => typed::<X, f32>(input, weights, &mut ys),
        Some(DType::F16) => typed::<X, half::f16>(input, weights, &mut ys),
        Some(DType::BF16) => typed::<X, half::bf16>(input, weights, &mut ys),
    }
}

/// A row-parallel rank's statistics of its slice `x` `[rows, k]` of the
/// activations: each row's [`quant::row_statistic`] in `row_absmax`.
/// Returns the slice's number of outlier columns.
fn row_statistics<X: Element>(input: Activations<'_, X>, row_absmax: &mut [f32]) -> Result<usize> {
    scratch::with_scratch(|scratch| {
        let qx = scratch::zeroed(&mut scratch.qx, input.x.len(), "quantized activations")?;
        quantize_activations(input, qx, row_absmax, &mut scratch.masks, &mut scratch.outliers)?;
        for a in row_absmax.iter_mut() {
            *a = quant::row_statistic(*a);
        }
        Ok(scratch.outliers.len())
    })
}

/// Quantizes X into the scratch space, then [`multiply`].
fn matmul_in<X: Element, Y: Element>(
    input: Activations<'_, X>,
    weights: &[&Weight],
    ys: &mut [&mut [Y]],
    scratch: &mut scratch::Scratch,
) -> Result<usize> {
    let qx = scratch::zeroed(&mut scratch.qx, input.x.len(), "quantized activations")?;
    let sa = scratch::zeroed(&mut scratch.sa, input.rows, "activation scales")?;
    let mut outliers = std::mem::take(&mut scratch.outliers);
    let result = quantize_activations(input, qx, sa, &mut scratch.masks, &mut outliers)
        .and_then(|()| multiply(input, weights, &outliers, ys, scratch));
    scratch.outliers = outliers;
    result
}

/// The rest of [`matmul_in`] once `scratch.qx` and `scratch.sa` hold the
/// quantized activations and `outliers` their outlier columns: X's outlier
/// columns and microkernel layout once, then each weight's product.
fn multiply<X: Element, Y: Element>(
    input: Activations<'_, X>,
    weights: &[&Weight],
    outliers: &[usize],
    ys: &mut [&mut [Y]],
    scratch: &mut scratch::Scratch,
) -> Result<usize> {
    let Activations { x, rows, k, settings, .. } = input;
    let scratch::Scratch { qx, sa, x_outliers, tile_i8, tile_i16, tile_sums, blocks, .. } = scratch;
    let (qx, sa) = (&qx[..], &sa[..]);
    let path = settings.path;
    let no = outliers.len();

    // The floating-point part is small (the paper: a handful of columns): gather
    // those columns of x once, as given (never rounded, as bitsandbytes does).
    let x_outliers = scratch::zeroed(x_outliers, rows * no, "outlier activations")?;
    if no > 0 {
        for (i, dst) in x_outliers.chunks_exact_mut(no).enumerate() {
            for (d, &c) in dst.iter_mut().zip(outliers) {
                *d = x[i * k + c].to_f32();
            }
        }
    }
    let kp = weights[0].packed().k_padded(); // the same for every weight of this k
                                             // The SIMD kernels sum in i32 without chunking: exact up to 65 536 columns;
                                             // longer rows take the portable kernel, which chunks.
    let kernel = match path {
        _ if kp > quant::EXACT_I32_CHUNK || !path.is_available() => Kernel::Portable,
        CpuPath::AmxModel => Kernel::Amx { model: true },
        CpuPath::Amx if rows >= AMX_MIN_ROWS => Kernel::Amx { model: false },
        CpuPath::Avx512Vnni | CpuPath::Amx => Kernel::Vnni,
        CpuPath::Avx2 => Kernel::Avx2,
        CpuPath::Portable => Kernel::Portable,
    };
    let x_tile = activation_tile(qx, k, kp, kernel, tile_i8, tile_i16, tile_sums)?;
    for (w, y) in weights.iter().zip(ys.iter_mut()) {
        let ops = Operands { w, x: x_tile, kp, sa, outliers, x_outliers };
        product(settings, &ops, kernel, rows, y, blocks)?;
    }
    Ok(no)
}

/// One weight's product with the laid-out activations of `ops`, split over
/// the threads: by output rows for many rows, else by weight panels.
fn product<Y: Element>(
    settings: Settings,
    ops: &Operands<'_>,
    kernel: Kernel,
    rows: usize,
    y: &mut [Y],
    blocks: &mut Vec<f32>,
) -> Result<()> {
    let (path, threads) = (settings.path, settings.threads);
    let (w, no) = (ops.w, ops.outliers.len());
    let (k, n) = (w.in_features(), w.out_features());
    let panels = w.packed().panels();
    let threads = threads_for(rows.saturating_mul(n).saturating_mul(k), threads);
    if rows >= ROWS_TO_SPLIT_ROWS || threads == 1 {
        // Many rows: each thread owns whole output rows (in groups of 8, the VNNI
        // tile, or 32, the AMX block) and writes them in place.
        let group = if matches!(kernel, Kernel::Amx { .. }) { amx::BLOCK_ROWS } else { kernel::VNNI_ROWS };
        let tiles = split_ranges(rows.div_ceil(group), threads);
        let parts: Vec<Range<usize>> = tiles.iter().map(|t| t.start * group..(t.end * group).min(rows)).collect();
        let y_parts = split_slice_mut(y, &parts, n);
        compute_parts(parts.into_iter().zip(y_parts), no, |(range, y), w_outliers| {
            compute_block(path, ops, range, 0..panels, y, n, 0, w_outliers)
        })?;
    } else {
        // Few rows (decode, short prompts): split the weight panels, so every
        // thread streams only its share of W from memory.
        let parts = split_ranges(panels, threads);
        let col_parts: Vec<Range<usize>> = parts.iter().map(|p| p.start * PANEL..(p.end * PANEL).min(n)).collect();
        if rows == 1 {
            // One row: each thread's columns are a contiguous piece of y.
            let y_parts = split_slice_mut(y, &col_parts, 1);
            compute_parts(parts.iter().cloned().zip(y_parts).zip(&col_parts), no, |((p, y), cols), w_outliers| {
                compute_block(path, ops, 0..1, p, y, n, cols.start, w_outliers)
            })?;
        } else {
            // Each thread writes a [rows, its columns] block of float32 (the
            // epilogue's value before conversion), converted into y after:
            // the same values as writing y directly.
            let blocks = scratch::zeroed(blocks, rows * n, "output blocks")?;
            let block_parts = split_slice_mut(blocks, &col_parts, rows);
            compute_parts(
                parts.iter().cloned().zip(block_parts).zip(&col_parts),
                no,
                |((p, block), cols), w_outliers| {
                    compute_block(path, ops, 0..rows, p, block, cols.len(), cols.start, w_outliers)
                },
            )?;
            convert_blocks(path, blocks, &col_parts, rows, y);
        }
    }
    Ok(())
}

isa::multiversion! {
    /// Writes the threads' float32 blocks (`[rows, cols]` for each column
    /// range of `col_parts`, one after another) into `y` `[rows, n]` as `Y`,
    /// compiled per path: bfloat16's rounding vectorizes there, float16 takes
    /// F16C (`kernel::convert_from_f32`).
    fn convert_blocks<Y: Element>(blocks: &[f32], col_parts: &[Range<usize>], rows: usize, y: &mut [Y]) -> () {
        let n = y.len() / rows;
        for cols in col_parts {
            let block = &blocks[rows * cols.start..rows * cols.end];
            for (dst, src) in y.chunks_exact_mut(n).zip(block.chunks_exact(cols.len())) {
                kernel::convert_from_f32(src, &mut dst[cols.clone()]);
            }
        }
    }
}
