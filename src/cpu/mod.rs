//! CPU backend: the pipeline of the paper — quantize rows, int8 GEMM, dequantize
//! and add the outlier product — split across threads.
//!
//! Every output element is computed by exactly one thread, in the same order
//! whatever the number of threads, so results are bit-identical for any count.

mod aligned;
mod amx;
mod epilogue;
mod gemm;
pub(crate) mod isa;
mod kernel;
pub(crate) mod pack;
pub mod phases;
mod pool;
mod quantize;
mod scratch;
mod threads;
mod weight;

use std::ops::Range;

use crate::call::{Call, Host, Work};
use crate::dtype::{DType, DataMut, Element};
use crate::error::{Error, Result};
use crate::quant::{self, InputRounding, RowScale};
use crate::smoothing::Smoothing;
use crate::with_data;
use pack::PANEL;

use gemm::{activation_tile, compute_block, compute_parts, Kernel, LayOutScratch, Operands};
pub use isa::CpuPath;
use phases::{Phase, Timer};
pub(crate) use quantize::quantize_activations;
use quantize::{quantize_weight_columns, quantize_weight_rows};
pub(crate) use threads::default_num_threads;
use threads::{split_ranges, split_slice_mut};
pub(crate) use weight::{HostParts, Weight};

/// Work (in multiply-adds) below which a call stays on the calling thread:
/// handing a part to a worker and waiting for it costs about a microsecond
/// while the worker spins between calls (pool.rs), tens when it sleeps. At
/// 1 << 20 every decoder layer of a small model ran on one thread
/// (SmolLM2-135M's are 110 K–885 K multiply-adds per token): 1 << 16 took its
/// decode from 60–62 to 84–90 tokens/s and a 576 × 1536 product at M = 1 from
/// ~70 to ~110 GOPS (Intel Xeon, AMX, 2 threads; docs/PERF.md).
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// From this many activation rows on, threads split the rows (each streams all
/// of W, reused across many rows); below it they split W, which dominates.
const ROWS_TO_SPLIT_ROWS: usize = 64;

/// Weight panels per block of the vector kernels' GEMM: 8 panels (128 rows)
/// of a 4096-wide weight, 512 KiB, stay in L2 while every tile of X passes
/// over them (the AMX nest takes blocks of two, `gemm::AMX_PANELS_PER_BLOCK`).
pub(super) const PANELS_PER_BLOCK: usize = 8;

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

/// Runs a call on host memory (see [`Work`]): X is quantized once, then
/// each weight's product, or a row-parallel rank's statistics. The context
/// has checked the call. Returns the number of outlier columns.
pub(crate) fn run(call: Call<'_, Weight, Host, Settings>) -> Result<usize> {
    let Call { weights, x, rows, threshold, work, settings } = call;
    let k = weights[0].in_features();
    // The weights share one smoothing (checked by the context).
    let smoothing = weights[0].smoothing().map(Smoothing::inverse);
    with_data!(x, x => {
        let input = Activations { x, rows, k, threshold, settings, row_absmax: None, smoothing };
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
    /// The weights' smoothing, `1/s` `[k]`: each column multiplied by it as
    /// it is read, before the outlier test, the row scale and the rounding.
    pub smoothing: Option<&'a [f32]>,
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
        let qx = scratch::reused(&mut scratch.qx, input.x.len(), "quantized activations")?; // every value written
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
    // `quantize_activations` writes every value.
    let qx = scratch::reused(&mut scratch.qx, input.x.len(), "quantized activations")?;
    let sa = scratch::zeroed(&mut scratch.sa, input.rows, "activation scales")?;
    let mut outliers = std::mem::take(&mut scratch.outliers);
    let quantized = {
        let _timer = Timer::start(Phase::Quantize);
        quantize_activations(input, qx, sa, &mut scratch.masks, &mut outliers)
    };
    let result = quantized.and_then(|()| multiply(input, weights, &outliers, ys, scratch));
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
    let Activations { x, rows, k, settings, smoothing, .. } = input;
    let scratch::Scratch { qx, sa, x_outliers, tile_i8, tile_i16, tile_sums, blocks, .. } = scratch;
    let (qx, sa) = (&qx[..], &sa[..]);
    let path = settings.path;
    let no = outliers.len();

    // The floating-point part is small (the paper: a handful of columns): gather
    // those columns of x once, as given (never rounded, as bitsandbytes does),
    // smoothed as the int8 part is (the weight's columns are of `W·diag(s)`).
    let x_outliers = scratch::zeroed(x_outliers, rows * no, "outlier activations")?;
    if no > 0 {
        for (i, dst) in x_outliers.chunks_exact_mut(no).enumerate() {
            for (d, &c) in dst.iter_mut().zip(outliers) {
                *d = x[i * k + c].to_f32() * smoothing.map_or(1.0, |inverse| inverse[c]);
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
    let x_tile = {
        let _timer = Timer::start(Phase::LayOut);
        let scratch = LayOutScratch { i8s: tile_i8, i16s: tile_i16, sums: tile_sums };
        activation_tile(qx, k, kp, kernel, settings.threads, scratch)?
    };
    for (w, y) in weights.iter().zip(ys.iter_mut()) {
        let ops = Operands { w, x: x_tile, kp, sa, outliers, x_outliers };
        let _timer = Timer::start(Phase::Product);
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
