//! CPU backend: the pipeline of the paper — quantize rows, int8 GEMM, dequantize
//! and add the outlier product — split across threads.
//!
//! Every output element is computed by exactly one thread, in the same order
//! whatever the number of threads, so results are bit-identical for any count.

pub(crate) mod isa;
mod threads;

use std::ops::Range;

use crate::dtype::Element;
use crate::error::{try_zeroed_vec, Error, Result};
use crate::quant::{self, InputRounding};
use crate::weight::Weight;

pub use isa::CpuPath;
pub(crate) use threads::default_num_threads;
use threads::{split_ranges, split_slice_mut};

/// Work (in multiply-adds) below which a call stays on the calling thread:
/// spawning a thread costs tens of microseconds.
const MIN_PARALLEL_WORK: usize = 1 << 20;

/// Weight rows per block of the GEMM: 32 rows of a 4096-wide weight (128 KiB)
/// stay in L2 while every row of X passes over them.
const WEIGHT_ROWS_PER_BLOCK: usize = 32;

/// What a call takes from its context, read once at its start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub path: CpuPath,
    pub rounding: InputRounding,
    pub threads: usize,
}

/// How many threads `work` units of work deserve, at most `threads`.
fn threads_for(work: usize, threads: usize) -> usize {
    if work < MIN_PARALLEL_WORK {
        1
    } else {
        threads.clamp(1, work / (MIN_PARALLEL_WORK / 2))
    }
}

/// Quantizes the rows of a weight into `cb` and `scb`. Refuses a non-finite value,
/// naming the first row (lowest index) that holds one.
pub(crate) fn quantize_weight_rows<T: Element>(
    settings: Settings,
    w: &[T],
    in_features: usize,
    cb: &mut [i8],
    scb: &mut [f32],
) -> Result<()> {
    let Settings { path, rounding, threads } = settings;
    let rows = scb.len();
    let parts = split_ranges(rows, threads_for(w.len(), threads));
    let cb_parts = split_slice_mut(cb, &parts, in_features);
    let scb_parts = split_slice_mut(scb, &parts, 1);
    let first_bad = run_parts(parts.iter().cloned().zip(cb_parts).zip(scb_parts), |((range, cb), scb)| {
        let w = &w[range.start * in_features..range.end * in_features];
        quantize_weight_part(path, w, rounding, in_features, cb, scb).map(|(r, col)| (range.start + r, col))
    });
    match first_bad.into_iter().flatten().min() {
        None => Ok(()),
        Some((row, col)) => Err(Error::invalid(format!(
            "weight row {row} holds a non-finite value (column {col}){}; a weight must be finite",
            if rounding == InputRounding::Float16 { " once rounded to float16" } else { "" }
        ))),
    }
}

isa::multiversion! {
    /// Quantizes whole weight rows; returns the (row, column) of the first non-finite value.
    fn quantize_weight_part<T: Element>(
        w: &[T],
        rounding: InputRounding,
        in_features: usize,
        cb: &mut [i8],
        scb: &mut [f32]
    ) -> Option<(usize, usize)> {
        let rows = w.chunks_exact(in_features).zip(cb.chunks_exact_mut(in_features)).zip(scb);
        for (r, ((row, q), s)) in rows.enumerate() {
            match quant::quantize_weight_row(row, rounding, q) {
                Ok(absmax) => *s = absmax,
                Err(col) => return Some((r, col)),
            }
        }
        None
    }
}

isa::multiversion! {
    /// Quantizes whole activation rows, marking their outlier columns in `mask`.
    fn quantize_activation_part<T: Element>(
        x: &[T],
        rounding: InputRounding,
        threshold: f32,
        cols: usize,
        q: &mut [i8],
        absmax: &mut [f32],
        mask: &mut [bool]
    ) -> () {
        for ((row, q), a) in x.chunks_exact(cols).zip(q.chunks_exact_mut(cols)).zip(absmax) {
            *a = quant::quantize_activation_row(row, rounding, threshold, q, mask);
        }
    }
}

/// Runs `f` on each part, the last one on the calling thread, the others on
/// scoped threads, and returns the results in order.
fn run_parts<P: Send, R: Send>(parts: impl Iterator<Item = P>, f: impl Fn(P) -> R + Sync) -> Vec<R> {
    let mut parts: Vec<P> = parts.collect();
    let Some(last) = parts.pop() else { return Vec::new() };
    if parts.is_empty() {
        return vec![f(last)];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = parts.into_iter().map(|p| s.spawn(|| f(p))).collect();
        let last = f(last);
        let mut out: Vec<R> =
            handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect();
        out.push(last);
        out
    })
}

/// Vector-wise quantization of activations (`int8_vectorwise_quant`): fills `q`
/// `[rows, cols]` and `absmax` `[rows]`, zeroes the outlier columns in every row,
/// and returns those columns in ascending order.
pub(crate) fn quantize_activations<T: Element>(
    settings: Settings,
    x: &[T],
    cols: usize,
    threshold: f32,
    q: &mut [i8],
    absmax: &mut [f32],
) -> Result<Vec<usize>> {
    let Settings { path, rounding, threads } = settings;
    let rows = absmax.len();
    let parts = split_ranges(rows, threads_for(x.len(), threads));
    let q_parts = split_slice_mut(q, &parts, cols);
    let a_parts = split_slice_mut(absmax, &parts, 1);
    let masks = run_parts(parts.iter().cloned().zip(q_parts).zip(a_parts), |((range, q), a)| {
        let mut mask = try_zeroed_vec::<bool>(cols, "outlier column mask")?;
        let x = &x[range.start * cols..range.end * cols];
        quantize_activation_part(path, x, rounding, threshold, cols, q, a, &mut mask);
        Ok(mask)
    });
    let mut outlier_columns = Vec::new();
    let mut mask = try_zeroed_vec::<bool>(cols, "outlier column mask")?;
    for m in masks {
        for (acc, v) in mask.iter_mut().zip(m?) {
            *acc |= v;
        }
    }
    let count = mask.iter().filter(|m| **m).count();
    outlier_columns
        .try_reserve_exact(count)
        .map_err(|_| Error::out_of_memory("cannot allocate the outlier column list"))?;
    outlier_columns.extend(mask.iter().enumerate().filter(|(_, m)| **m).map(|(c, _)| c));
    if !outlier_columns.is_empty() {
        for row in q.chunks_exact_mut(cols) {
            for &c in &outlier_columns {
                row[c] = 0;
            }
        }
    }
    Ok(outlier_columns)
}

/// Everything one thread needs to compute a block of the output.
struct Operands<'a> {
    w: &'a Weight,
    /// Quantized X `[rows, k]`, outlier columns zeroed.
    qx: &'a [i8],
    /// Row absmax of X `[rows]`.
    sa: &'a [f32],
    /// Outlier columns of X `[rows, n_outliers]`, in f32.
    x_outliers: &'a [f32],
    /// The dequantized weight at the outlier columns `[n, n_outliers]`.
    w_outliers: &'a [f32],
    n_outliers: usize,
}

impl Operands<'_> {
    /// Computes output rows `rows` × columns `cols` into `out`, a row-major block
    /// whose row `i` starts at `(i - rows.start) * stride` and column `j` at
    /// `j - col0`: int8 GEMM, then dequantization, outlier part, bias and the
    /// conversion to `Y`, fused per element.
    #[inline(always)]
    fn compute<Y: Element>(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [Y], stride: usize, col0: usize) {
        let k = self.w.in_features();
        let (cb, scb, bias) = (self.w.cb(), self.w.scb(), self.w.bias());
        let no = self.n_outliers;
        let mut j0 = cols.start;
        while j0 < cols.end {
            let j1 = (j0 + WEIGHT_ROWS_PER_BLOCK).min(cols.end);
            for i in rows.clone() {
                let x_row = &self.qx[i * k..(i + 1) * k];
                let x_out = &self.x_outliers[i * no..(i + 1) * no];
                let out_row = &mut out[(i - rows.start) * stride..];
                for j in j0..j1 {
                    let acc = quant::dot_i8(x_row, &cb[j * k..(j + 1) * k]);
                    let int8_part = quant::dequantize_product(acc, self.sa[i], scb[j]);
                    let outlier_part =
                        if no == 0 { 0.0 } else { quant::outlier_dot(x_out, &self.w_outliers[j * no..(j + 1) * no]) };
                    let b = bias.map_or(0.0, |b| b[j]);
                    out_row[j - col0] = Y::from_f32(quant::output_value(int8_part, outlier_part, b));
                }
            }
            j0 = j1;
        }
    }
}

isa::multiversion! {
    fn compute_block<Y: Element>(
        ops: &Operands<'_>,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [Y],
        stride: usize,
        col0: usize
    ) -> () {
        ops.compute(rows, cols, out, stride, col0)
    }
}

/// `y = x · Wᵀ + b` with LLM.int8(): `x` is `[rows, k]`, `y` is `[rows, n]`.
/// Returns the number of outlier columns. Shapes are checked by the caller.
pub(crate) fn matmul<X: Element, Y: Element>(
    settings: Settings,
    w: &Weight,
    x: &[X],
    rows: usize,
    threshold: f32,
    y: &mut [Y],
) -> Result<usize> {
    let (k, n) = (w.in_features(), w.out_features());
    let mut qx = try_zeroed_vec::<i8>(x.len(), "quantized activations")?;
    let mut sa = try_zeroed_vec::<f32>(rows, "activation scales")?;
    let outliers = quantize_activations(settings, x, k, threshold, &mut qx, &mut sa)?;
    let (path, threads) = (settings.path, settings.threads);
    let no = outliers.len();

    // The floating-point part is small (the paper: a handful of columns); gather
    // both sides once, so the per-element work is a short contiguous dot product.
    // x is taken as given, never rounded, as bitsandbytes does.
    let mut x_outliers = try_zeroed_vec::<f32>(rows * no, "outlier activations")?;
    let mut w_outliers = try_zeroed_vec::<f32>(n * no, "outlier weight columns")?;
    if no > 0 {
        for (i, dst) in x_outliers.chunks_exact_mut(no).enumerate() {
            for (d, &c) in dst.iter_mut().zip(&outliers) {
                *d = x[i * k + c].to_f32();
            }
        }
        for (j, dst) in w_outliers.chunks_exact_mut(no).enumerate() {
            for (d, &c) in dst.iter_mut().zip(&outliers) {
                *d = w.dequantized(j, c);
            }
        }
    }
    let ops = Operands { w, qx: &qx, sa: &sa, x_outliers: &x_outliers, w_outliers: &w_outliers, n_outliers: no };

    let threads = threads_for(rows.saturating_mul(n).saturating_mul(k), threads);
    if rows >= 4 * threads || threads == 1 {
        // Enough rows: each thread owns whole output rows and writes them in place.
        let parts = split_ranges(rows, threads);
        let y_parts = split_slice_mut(y, &parts, n);
        run_parts(parts.into_iter().zip(y_parts), |(range, y)| compute_block(path, &ops, range, 0..n, y, n, 0));
    } else {
        // Few rows (decode): split the weight rows, so every thread streams its
        // own share of W; each writes a small [rows, cols] block, copied after.
        let parts = split_ranges(n, threads);
        let blocks = run_parts(parts.iter().cloned(), |cols| -> Result<Vec<Y>> {
            let width = cols.len();
            let mut block = try_zeroed_vec::<Y>(rows * width, "output block")?;
            compute_block(path, &ops, 0..rows, cols.clone(), &mut block, width, cols.start);
            Ok(block)
        });
        for (cols, block) in parts.iter().zip(blocks) {
            let block = block?;
            for (dst, src) in y.chunks_exact_mut(n).zip(block.chunks_exact(cols.len())) {
                dst[cols.clone()].copy_from_slice(src);
            }
        }
    }
    Ok(no)
}
