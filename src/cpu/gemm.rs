//! The GEMM stage: the activations laid out for a microkernel, then each
//! thread's block of the output computed block of weight panels by block,
//! tile by tile — the exact int8 sums (`kernel.rs`, `amx.rs`) handed to the
//! one epilogue (`epilogue.rs`).

use std::ops::Range;

use super::epilogue::TileSums;
#[cfg(target_arch = "x86_64")]
use super::pack::GROUP;
use super::pack::PANEL;
use super::phases::{Phase, Timer};
use super::pool::run_parts;
use super::threads::{split_ranges, split_slice_mut};
use super::{aligned, amx, isa, kernel, scratch, threads_for, Weight, PANELS_PER_BLOCK};
use crate::dtype::Element;
use crate::error::{try_zeroed_vec, Result};

/// The activations as the microkernels read them.
#[derive(Clone, Copy)]
pub(super) enum ActivationTile<'a> {
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
pub(super) enum RowTile<'a> {
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
pub(super) struct Operands<'a> {
    pub w: &'a Weight,
    pub x: ActivationTile<'a>,
    /// Row stride of `x` (K padded to a multiple of 4).
    pub kp: usize,
    /// Row absmax of X `[rows]`.
    pub sa: &'a [f32],
    /// The outlier columns, ascending.
    pub outliers: &'a [usize],
    /// Those columns of X `[rows, outliers.len()]`, in f32.
    pub x_outliers: &'a [f32],
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
                for block in blocks(panels, PANELS_PER_BLOCK) {
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
        for block in blocks(panels, AMX_PANELS_PER_BLOCK) {
            self.block_tiles(unit, x, rows.clone(), block, at, out, w_outliers);
        }
    }

    /// One block of panels on the vector microkernels: tiles of the heights
    /// the layout allows, each over at most two panels; the first row of
    /// tiles also dequantizes the block's outlier weight columns (`tile`).
    #[inline(always)]
    fn block_rows<Y: Element>(
        &self,
        x: &RowTile<'_>,
        rows: Range<usize>,
        block: Range<usize>,
        at: Tile,
        out: &mut [Y],
        w_outliers: &mut [f32],
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
    /// accumulator tiles) at a time, the exact sums then the shared epilogue;
    /// the first 32 rows also dequantize the block's outlier weight columns,
    /// right after their products brought those panels into cache.
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
        w_outliers: &mut [f32],
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
                let first = i == rows.start;
                match (mr > amx::TILE_ROWS, np) {
                    (true, 2) => {
                        let s = amx::products::<U, 2, 2>(unit, xs, w, ps, kp);
                        self.outlier_columns_after_products(first, p..p + np, block.start, w_outliers);
                        self.amx_epilogue(at, mr, out, w_outliers, &s)
                    }
                    (true, _) => {
                        let s = amx::products::<U, 2, 1>(unit, xs, w, ps, kp);
                        self.outlier_columns_after_products(first, p..p + np, block.start, w_outliers);
                        self.amx_epilogue(at, mr, out, w_outliers, &s)
                    }
                    (false, 2) => {
                        let s = amx::products::<U, 1, 2>(unit, xs, w, ps, kp);
                        self.outlier_columns_after_products(first, p..p + np, block.start, w_outliers);
                        self.amx_epilogue(at, mr, out, w_outliers, &s)
                    }
                    (false, _) => {
                        let s = amx::products::<U, 1, 1>(unit, xs, w, ps, kp);
                        self.outlier_columns_after_products(first, p..p + np, block.start, w_outliers);
                        self.amx_epilogue(at, mr, out, w_outliers, &s)
                    }
                }
                p += np;
            }
            i += mr;
        }
    }

    /// The epilogue of a register block's `mr` rows: each 16-row tile's sums
    /// read where `tilestored` left them.
    #[inline(always)]
    fn amx_epilogue<const MT: usize, const NP: usize, Y: Element>(
        &self,
        at: Tile,
        mr: usize,
        out: &mut [Y],
        w_outliers: &[f32],
        sums: &[[amx::Sums; NP]; MT],
    ) {
        for (mt, tiles) in sums.iter().enumerate() {
            let rows = mr.saturating_sub(mt * amx::TILE_ROWS).min(amx::TILE_ROWS);
            let mut panels: [&[i32]; NP] = [&[]; NP];
            for (panel, tile) in panels.iter_mut().zip(tiles) {
                *panel = tile.0.as_flattened();
            }
            let at = Tile { i: at.i + mt * amx::TILE_ROWS, ..at };
            self.epilogue_sums(at, rows, out, w_outliers, TileSums { panels, row_stride: PANEL });
        }
    }

    /// One tile: `MR` rows from `at.i`, `NP` panels from `at.p`.
    #[inline(always)]
    fn tile<const MR: usize, const NP: usize, Y: Element>(
        &self,
        x: &RowTile<'_>,
        at: Tile,
        out: &mut [Y],
        w_outliers: &mut [f32],
    ) {
        let packed = self.w.packed();
        let (stride, kp) = (packed.panel_stride(), self.kp);
        let w = &packed.data()[at.p * stride..];
        let (first, panels) = (at.i == at.row0, at.p..at.p + NP);
        match x {
            RowTile::Signed(x) => {
                let acc = kernel::tile_portable::<MR, NP>(&x[at.i * kp..], kp, w, stride, kp);
                self.outlier_columns_after_products(first, panels, at.p0, w_outliers);
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
                self.outlier_columns_after_products(first, panels, at.p0, w_outliers);
                let mut panels: [&[i32]; NP] = [&[]; NP];
                for (panel, acc) in panels.iter_mut().zip(&acc) {
                    *panel = acc.as_flattened().as_flattened();
                }
                self.epilogue_sums(at, MR, out, w_outliers, TileSums { panels, row_stride: PANEL });
            }
            #[cfg(target_arch = "x86_64")]
            RowTile::Vnni { x, sums } => {
                let tile = &x[(at.i / kernel::VNNI_ROWS) * kp * kernel::VNNI_ROWS..];
                let (tile, sums) = (&tile[(at.i % kernel::VNNI_ROWS) * GROUP..], &sums[at.i..]);
                let timer = Timer::start(Phase::Products);
                // SAFETY: `Vnni` is only built when the processor has AVX-512
                // F/BW/VNNI (see `matmul`).
                let acc = unsafe { kernel::tile_vnni::<MR, NP>(tile, sums, w, stride, kp) };
                timer.stop();
                self.outlier_columns_after_products(first, panels, at.p0, w_outliers);
                let values = acc.as_flattened().as_flattened();
                let mut panels: [&[i32]; NP] = [&[]; NP];
                for (p, panel) in panels.iter_mut().enumerate() {
                    *panel = &values[p * PANEL..];
                }
                self.epilogue_sums(at, MR, out, w_outliers, TileSums { panels, row_stride: NP * PANEL });
            }
        }
    }
}

/// Weight panels per block of the AMX nest: one register block's two. The
/// pair (128 KiB at K = 4096) is reused across all of a part's rows from L2
/// while the next comes from L3 (blocks of [`PANELS_PER_BLOCK`]: the nest 10%
/// slower, docs/PERF.md).
const AMX_PANELS_PER_BLOCK: usize = 2;
// The per-part scratch for a block's outlier weight columns holds `PANELS_PER_BLOCK` panels.
const _: () = assert!(AMX_PANELS_PER_BLOCK <= PANELS_PER_BLOCK);

/// `panels` in blocks of at most `per_block` panels, each computed with its
/// outlier weight columns dequantized once.
#[inline(always)]
fn blocks(panels: Range<usize>, per_block: usize) -> impl Iterator<Item = Range<usize>> {
    panels.clone().step_by(per_block).map(move |p0| p0..(p0 + per_block).min(panels.end))
}

/// Where a tile sits: first activation row `i`, first panel `p`, and how the
/// output block is laid out (`row0`, `stride`, `col0` as in `compute`).
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub i: usize,
    pub p: usize,
    /// First panel of the block `p` belongs to (indexes the block's scratch).
    pub p0: usize,
    pub row0: usize,
    pub stride: usize,
    pub col0: usize,
}

isa::multiversion! {
    pub(super) fn compute_block<Y: Element>(
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
pub(super) fn compute_parts<P: Send>(
    parts: impl Iterator<Item = P>,
    outliers: usize,
    compute: impl Fn(P, &mut [f32]) + Sync,
) -> Result<()> {
    run_parts(parts, |part| -> Result<()> {
        let mut w_outliers =
            try_zeroed_vec::<f32>(PANELS_PER_BLOCK * outliers * PANEL, "dequantized outlier weight columns")?;
        let _timer = Timer::start(Phase::Part);
        compute(part, &mut w_outliers);
        Ok(())
    })
    .into_iter()
    .collect()
}

/// Which microkernel a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    Portable,
    Avx2,
    Vnni,
    /// AMX tiles (`model`: in software).
    Amx {
        model: bool,
    },
}

/// The scratch the activation layouts are written into (one per call).
pub(super) struct LayOutScratch<'a> {
    pub i8s: &'a mut Vec<i8>,
    pub i16s: &'a mut Vec<i16>,
    pub sums: &'a mut Vec<i32>,
}

/// Lays the quantized activations `q` `[rows, k]` out for the microkernel:
/// rows padded to `kp` columns, packed in tiles of 8 rows for VNNI, in A tiles
/// for AMX (on up to `threads` threads), widened for AVX2.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(super) fn activation_tile<'a>(
    q: &[i8],
    k: usize,
    kp: usize,
    kernel: Kernel,
    threads: usize,
    scratch: LayOutScratch<'a>,
) -> Result<ActivationTile<'a>> {
    let LayOutScratch { i8s, i16s, sums } = scratch;
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
        let x = aligned::reused_in(i8s, amx::packed_activation_len(rows, kp), "packed activations")?;
        // Each 16 rows are one contiguous run of A tiles: threads pack their own
        // runs (one thread packing 2 MiB at M = 512 was ~5% of a call), padding
        // included; a run past the rows' (the room for a block of 32) is zeroed.
        let groups = rows.div_ceil(amx::TILE_ROWS);
        let tile_rows = split_ranges(groups, threads_for(q.len(), threads));
        let run = amx::TILE_ROWS * kp.div_ceil(amx::TILE_K) * amx::TILE_K;
        x[groups * run..].fill(0);
        let x_parts = split_slice_mut(x, &tile_rows, run);
        run_parts(tile_rows.iter().zip(x_parts), |(t, x)| {
            let q_rows = &q[t.start * amx::TILE_ROWS * k..(t.end * amx::TILE_ROWS).min(rows) * k];
            amx::pack_activations(q_rows, k, x)
        });
        return Ok(ActivationTile::Amx { x, model });
    }
    let x = scratch::zeroed(i8s, rows * kp, "padded activations")?;
    for (dst, src) in x.chunks_exact_mut(kp).zip(q.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    Ok(ActivationTile::Rows(RowTile::Signed(x)))
}
