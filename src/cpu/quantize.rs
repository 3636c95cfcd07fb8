//! The quantize stage: weight rows into the packed int8 layout, activation
//! rows into int8 with their scales and outlier columns — split across the
//! threads, each row by [`RowQuantizer`]: the AVX-512 kernels where they apply,
//! else `quant`'s statement of the arithmetic (the same bits).

use std::ops::Range;

use super::pack::{PackedWeight, PanelWriter, PANEL};
use super::pool::run_parts;
use super::threads::{split_ranges, split_slice_mut};
use super::{isa, scratch, threads_for, Activations, Settings};
use crate::dtype::Element;
use crate::error::{try_zeroed_vec, Error, Result};
use crate::quant::{self, InputRounding, RowScale};

#[cfg(target_arch = "x86_64")]
use super::kernel;

/// `$rule` (an expression of `$row` and `$rounding`) on the row as
/// [`RowQuantizer::scalar`] gives it: written once, compiled for the row as
/// it is and for the smoothed float32 row (read as it is).
macro_rules! on_scalar_row {
    ($quantizer:expr, $values:expr, $buf:expr, |$row:ident, $rounding:ident| $rule:expr) => {
        match $quantizer.scalar($values, $buf) {
            ScalarRow::Plain($row, $rounding) => $rule,
            ScalarRow::Smoothed($row) => {
                let $rounding = InputRounding::Exact;
                $rule
            }
        }
    };
}

/// Quantizes one row at a time: on the AVX-512 kernels when the path has them
/// and values are read as they are, else with `quant`'s functions, which the
/// kernels match bit for bit (they decline a row they cannot take by
/// returning `None`). Inlined into each path's compiled body: a `match` there,
/// not a closure (a closure is compiled without the path's instructions —
/// measured: a libm `rintf` call per value on AVX2).
///
/// With `factors` (a smoothed weight: `s` for its rows, `1/s` for the
/// activations) each value is multiplied by its column's factor as it is read,
/// before anything looks at it: the outlier test, the row scale and the
/// rounding all see the smoothed values. The AVX-512 kernels multiply in
/// registers (`kernel::Row`); the other paths first write the smoothed row
/// into a float32 row of their own (`buf`, in L1, allocated at the first
/// such row) and quantize that.
#[derive(Clone, Copy)]
struct RowQuantizer<'f> {
    rounding: InputRounding,
    /// Whether the processor has AVX-512 F/BW/VNNI.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read on x86-64 only
    simd: bool,
    factors: Option<&'f [f32]>,
}

impl<'f> RowQuantizer<'f> {
    /// The quantizer for values of `T` on `path` (a path this processor runs),
    /// each column multiplied by `factors` when given.
    fn new<T: Element>(settings: Settings, factors: Option<&'f [f32]>) -> RowQuantizer<'f> {
        RowQuantizer { rounding: settings.rounding_for::<T>(), simd: settings.path.has_avx512(), factors }
    }

    /// The row for the AVX-512 kernels, when they take it (they read values
    /// as they are).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn avx512<'r, T: Element>(self, row: &'r [T]) -> Option<kernel::Row<'r, T>>
    where
        'f: 'r,
    {
        (self.simd && self.rounding == InputRounding::Exact).then(|| kernel::Row::new(row, self.factors))
    }

    /// The row as `quant`'s rules are to read it: with factors, the smoothed
    /// row written into `buf` (float32, read as it is); else `row` itself.
    #[inline(always)]
    fn scalar<'r, T: Element>(self, row: &'r [T], buf: &'r mut Vec<f32>) -> ScalarRow<'r, T> {
        let Some(factors) = self.factors else { return ScalarRow::Plain(row, self.rounding) };
        if buf.len() < row.len() {
            buf.resize(row.len(), 0.0); // once per part: its rows are as long
        }
        let buf = &mut buf[..row.len()];
        // One loop per rounding, each vectorized (a `match` per value is not).
        match self.rounding {
            InputRounding::Exact => {
                for ((b, &v), &f) in buf.iter_mut().zip(row).zip(factors) {
                    *b = v.to_f32() * f;
                }
            }
            InputRounding::Float16 => {
                for ((b, &v), &f) in buf.iter_mut().zip(row).zip(factors) {
                    *b = InputRounding::Float16.load(v) * f;
                }
            }
        }
        ScalarRow::Smoothed(buf)
    }

    /// [`quant::quantize_weight_row`] (of the smoothed row).
    #[inline(always)]
    fn weight_row<T: Element>(self, row: &[T], buf: &mut Vec<f32>, q: &mut [i8]) -> std::result::Result<f32, usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(r) = self.avx512(row) {
            // SAFETY: `avx512` gives a row only when the processor has AVX-512 F/BW/VNNI.
            if let Some(done) = unsafe { kernel::quantize_weight_row_avx512(r, &mut *q) } {
                return done;
            }
        }
        on_scalar_row!(self, row, buf, |row, rounding| quant::quantize_weight_row(row, rounding, q))
    }

    /// [`quant::quantize_weight_row_columns`] (of the smoothed row). Not on
    /// the SIMD kernels: a row-parallel shard is quantized once, at load.
    #[inline(always)]
    fn weight_row_columns<T: Element>(
        self,
        row: &[T],
        cols: Range<usize>,
        buf: &mut Vec<f32>,
        q: &mut [i8],
    ) -> std::result::Result<f32, usize> {
        on_scalar_row!(self, row, buf, |row, rounding| quant::quantize_weight_row_columns(row, cols, rounding, q))
    }

    /// [`quant::quantize_activation_row`].
    #[inline(always)]
    fn activation_row<T: Element>(
        self,
        row: &[T],
        buf: &mut Vec<f32>,
        threshold: f32,
        q: &mut [i8],
        mask: &mut [bool],
    ) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(r) = self.avx512(row) {
            // SAFETY: as in `weight_row`.
            if let Some(absmax) = unsafe { kernel::quantize_activation_row_avx512(r, threshold, &mut *q, &mut *mask) } {
                return absmax;
            }
        }
        on_scalar_row!(self, row, buf, |row, rounding| quant::quantize_activation_row(
            row, rounding, threshold, q, mask
        ))
    }

    /// [`quant::mark_outlier_columns`].
    #[inline(always)]
    fn mark_outliers<T: Element>(self, row: &[T], buf: &mut Vec<f32>, threshold: f32, mask: &mut [bool]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(r) = self.avx512(row) {
            // SAFETY: as in `weight_row`.
            unsafe { kernel::mark_outlier_columns_avx512(r, threshold, mask) };
            return;
        }
        on_scalar_row!(self, row, buf, |row, rounding| quant::mark_outlier_columns(row, rounding, threshold, mask))
    }

    /// Value `c` of `row` as every rule reads it: rounded as the settings
    /// say, then multiplied by its factor (`kernel::Row::get`, `scalar`).
    #[inline(always)]
    fn value<T: Element>(self, row: &[T], c: usize) -> f32 {
        let v = self.rounding.load(row[c]);
        self.factors.map_or(v, |f| v * f[c])
    }

    /// [`quant::quantize_activation_row_int8_part`].
    #[inline(always)]
    fn int8_part_row<T: Element>(self, row: &[T], buf: &mut Vec<f32>, outlier_columns: &[bool], q: &mut [i8]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(r) = self.avx512(row) {
            // SAFETY: as in `weight_row`.
            if let Some(absmax) =
                unsafe { kernel::quantize_activation_row_int8_part_avx512(r, outlier_columns, &mut *q) }
            {
                return absmax;
            }
        }
        on_scalar_row!(self, row, buf, |row, rounding| quant::quantize_activation_row_int8_part(
            row,
            rounding,
            outlier_columns,
            q
        ))
    }

    /// [`quant::int8_part_absmax`].
    #[inline(always)]
    fn int8_part_absmax<T: Element>(self, row: &[T], buf: &mut Vec<f32>, outlier_columns: &[bool]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(r) = self.avx512(row) {
            // SAFETY: as in `weight_row`.
            let bits = unsafe { kernel::int8_part_absmax_bits_avx512(r, outlier_columns) };
            return if bits >= quant::INF_BITS { f32::NAN } else { f32::from_bits(bits) };
        }
        on_scalar_row!(self, row, buf, |row, rounding| quant::int8_part_absmax(row, rounding, outlier_columns))
    }

    /// [`quant::quantize_activation_row_given_absmax`] of the int8 part.
    #[inline(always)]
    fn with_absmax<T: Element>(
        self,
        row: &[T],
        buf: &mut Vec<f32>,
        absmax: f32,
        outlier_columns: &[bool],
        q: &mut [i8],
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Some(r) = self.avx512(row) {
            // SAFETY: as in `weight_row`.
            if unsafe { kernel::quantize_int8_part_with_bits_avx512(r, outlier_columns, absmax.to_bits(), &mut *q) }
                .is_some()
            {
                return;
            }
        }
        on_scalar_row!(self, row, buf, |row, rounding| quant::quantize_activation_row_given_absmax(
            row,
            rounding,
            absmax,
            outlier_columns,
            q
        ))
    }
}

/// A row as [`RowQuantizer::scalar`] hands it to `quant`'s rules.
enum ScalarRow<'r, T> {
    Plain(&'r [T], InputRounding),
    Smoothed(&'r [f32]),
}

/// Quantizes the rows of a weight `[n, k]` into the packed int8 layout and the
/// row scales (`SCB`), each row multiplied by the smoothing factors `s` first
/// when given. Refuses a non-finite value, naming the first row (lowest index)
/// that holds one.
pub(super) fn quantize_weight_rows<T: Element>(
    settings: Settings,
    w: &[T],
    n: usize,
    k: usize,
    smoothing: Option<&[f32]>,
) -> Result<(PackedWeight, Vec<f32>)> {
    let Settings { path, threads, .. } = settings;
    let rows_q = RowQuantizer::new::<T>(settings, smoothing);
    let mut packed = PackedWeight::zeroed(n, k)?;
    let mut scb = try_zeroed_vec::<f32>(n, "weight scales")?;
    // Threads take whole panels, so each writes only its own bytes.
    let panel_parts = split_ranges(packed.panels(), threads_for(w.len(), threads));
    let row_parts: Vec<Range<usize>> = panel_parts.iter().map(|p| p.start * PANEL..(p.end * PANEL).min(n)).collect();
    let writers = packed.panel_writers(&panel_parts);
    let scb_parts = split_slice_mut(&mut scb, &row_parts, 1);
    let first_bad = run_parts(row_parts.iter().cloned().zip(writers).zip(scb_parts), |((rows, mut writer), scb)| {
        let mut row_q = try_zeroed_vec::<i8>(k, "weight row")?;
        let w = &w[rows.start * k..rows.end * k];
        Ok(quantize_weight_part(path, w, rows_q, k, rows.start, &mut writer, &mut row_q, scb))
    });
    // Parts run in row order: the first one that found a bad row has the lowest.
    let mut bad = None;
    for part in first_bad {
        let part = part?;
        if bad.is_none() {
            bad = part;
        }
    }
    match bad {
        None => Ok((packed, scb)),
        Some((row, col)) => Err(quant::non_finite_weight(row, Some(col), rows_q.rounding)),
    }
}

/// The columns `columns` of each row of a row-major `[n, k]` weight quantized
/// with the whole row's absmax (`quant::quantize_weight_row_columns`): a
/// row-parallel shard's row-major `CB [n, columns.len()]` and `SCB`, each
/// whole row multiplied by the smoothing factors `s` (`[k]`) first when given.
/// Refuses a non-finite value anywhere in the weight, naming its row and column.
pub(super) fn quantize_weight_columns<T: Element>(
    settings: Settings,
    w: &[T],
    n: usize,
    k: usize,
    columns: Range<usize>,
    smoothing: Option<&[f32]>,
) -> Result<(Vec<i8>, Vec<f32>)> {
    let kc = columns.len();
    let rows_q = RowQuantizer::new::<T>(settings, smoothing);
    let mut cb = try_zeroed_vec::<i8>(n * kc, "the shard's CB")?;
    let mut scb = try_zeroed_vec::<f32>(n, "weight scales")?;
    let mut buf = Vec::new();
    for (j, (row, (q, s))) in w.chunks_exact(k).zip(cb.chunks_exact_mut(kc).zip(&mut scb)).enumerate() {
        *s = rows_q
            .weight_row_columns(row, columns.clone(), &mut buf, q)
            .map_err(|c| quant::non_finite_weight(j, Some(c), rows_q.rounding))?;
    }
    Ok((cb, scb))
}

isa::multiversion! {
    /// Quantizes whole weight rows starting at `first_row` into `writer`;
    /// returns the (row, column) of the first non-finite value.
    fn quantize_weight_part<T: Element>(
        w: &[T],
        rows_q: RowQuantizer,
        k: usize,
        first_row: usize,
        writer: &mut PanelWriter<'_>,
        row_q: &mut [i8],
        scb: &mut [f32]
    ) -> Option<(usize, usize)> {
        let mut buf = Vec::new();
        for (r, (row, s)) in w.chunks_exact(k).zip(scb).enumerate() {
            match rows_q.weight_row(row, &mut buf, row_q) {
                Ok(absmax) => *s = absmax,
                Err(col) => return Some((first_row + r, col)),
            }
            writer.write_row(first_row + r, row_q);
        }
        None
    }
}

isa::multiversion! {
    /// Quantizes whole activation rows, marking their outlier columns in `mask`.
    fn quantize_activation_part<T: Element>(
        x: &[T],
        rows_q: RowQuantizer,
        threshold: f32,
        cols: usize,
        q: &mut [i8],
        absmax: &mut [f32],
        mask: &mut [bool]
    ) -> () {
        let mut buf = Vec::new();
        for ((row, q), a) in x.chunks_exact(cols).zip(q.chunks_exact_mut(cols)).zip(absmax) {
            *a = rows_q.activation_row(row, &mut buf, threshold, q, mask);
        }
    }
}

isa::multiversion! {
    /// Marks the outlier columns of whole activation rows in `mask`.
    fn mark_outlier_part<T: Element>(
        x: &[T],
        rows_q: RowQuantizer,
        threshold: f32,
        cols: usize,
        mask: &mut [bool]
    ) -> () {
        let mut buf = Vec::new();
        for row in x.chunks_exact(cols) {
            rows_q.mark_outliers(row, &mut buf, threshold, mask);
        }
    }
}

isa::multiversion! {
    /// Turns rows quantized under bitsandbytes' rule (each row's own outliers
    /// out of its absmax, `quantize_activation_part`) into the int8-part
    /// rule's: the two differ only in a row where a column of the `outliers`
    /// (ascending) that is not an outlier in that row holds its absmax — that
    /// row is quantized again without the outlier columns. The other rows'
    /// bytes and absmax are the int8-part rule's already (their absmax lies in
    /// a column outside the union); the outlier columns are zeroed after.
    fn int8_part_from_own_outliers<T: Element>(
        x: &[T],
        rows_q: RowQuantizer,
        threshold: f32,
        outlier_columns: &[bool],
        outliers: &[usize],
        cols: usize,
        q: &mut [i8],
        absmax: &mut [f32]
    ) -> () {
        let mut buf = Vec::new();
        for ((row, q), a) in x.chunks_exact(cols).zip(q.chunks_exact_mut(cols)).zip(absmax) {
            // Outside a row's own outliers every value is below the threshold
            // and counted in its absmax: at most `a`, equal where it holds it.
            let holds_absmax = |&c: &usize| {
                let v = rows_q.value(row, c);
                !quant::is_outlier(v, threshold) && v.abs().to_bits() >= a.to_bits()
            };
            if outliers.iter().any(holds_absmax) {
                *a = rows_q.int8_part_row(row, &mut buf, outlier_columns, q);
            }
        }
    }
}

isa::multiversion! {
    /// Quantizes whole activation rows (from row `first_row`) under the
    /// int8-part rule with a row-parallel call's given absmax (`given`, the
    /// MAX over the ranks), after checking it against each row's own;
    /// `absmax` takes the given values.
    fn quantize_int8_part_given<T: Element>(
        x: &[T],
        rows_q: RowQuantizer,
        outlier_columns: &[bool],
        given: &[f32],
        first_row: usize,
        cols: usize,
        q: &mut [i8],
        absmax: &mut [f32]
    ) -> Result<()> {
        let mut buf = Vec::new();
        for (r, ((row, q), a)) in x.chunks_exact(cols).zip(q.chunks_exact_mut(cols)).zip(absmax).enumerate() {
            let own = rows_q.int8_part_absmax(row, &mut buf, outlier_columns);
            *a = quant::given_row_absmax(first_row + r, given[r], own)?;
            rows_q.with_absmax(row, &mut buf, *a, outlier_columns, q);
        }
        Ok(())
    }
}

isa::multiversion! {
    /// Requantizes whole activation rows (from row `first_row`) whose given
    /// absmax (`given`, a row-parallel call's MAX over the ranks) is not their
    /// own (`absmax`), the outlier columns quantized to 0; `absmax` takes the
    /// given values. Refuses a given value that is not such a MAX.
    fn requantize_part<T: Element>(
        x: &[T],
        rows_q: RowQuantizer,
        given: &[f32],
        first_row: usize,
        outlier_columns: &[bool],
        cols: usize,
        q: &mut [i8],
        absmax: &mut [f32]
    ) -> Result<()> {
        let mut buf = Vec::new();
        for (r, ((row, q), a)) in x.chunks_exact(cols).zip(q.chunks_exact_mut(cols)).zip(absmax).enumerate() {
            let m = quant::given_row_absmax(first_row + r, given[r], *a)?;
            if m.to_bits() != a.to_bits() {
                rows_q.with_absmax(row, &mut buf, m, outlier_columns, q);
                *a = m;
            }
        }
        Ok(())
    }
}

/// Vector-wise quantization of activations (`int8_vectorwise_quant`): fills `q`
/// `[rows, cols]` and `absmax` `[rows]`, zeroes the outlier columns in every row,
/// and fills `outliers` with those columns in ascending order. `masks` is
/// scratch space (reused across calls). With `row_absmax` (a row-parallel
/// rank's slice: the MAX over the ranks of [`quant::row_statistic`]) each row
/// is quantized with that absmax instead of its own ([`quant::given_row_absmax`]).
pub(crate) fn quantize_activations<T: Element>(
    input: Activations<'_, T>,
    q: &mut [i8],
    absmax: &mut [f32],
    masks: &mut Vec<bool>,
    outliers: &mut Vec<usize>,
) -> Result<()> {
    let Activations { x, k: cols, threshold, settings, row_absmax, smoothing, .. } = input;
    let Settings { path, threads, .. } = settings;
    let rows_q = RowQuantizer::new::<T>(settings, smoothing);
    // The int8-part rule needs every row's outliers before any row's scale (at
    // threshold 0 the rules agree). Without a given absmax it takes one pass
    // over X: the rows quantized under bitsandbytes' rule (which needs no
    // other row), then the few rows where the two differ quantized again (one
    // pass over X fewer: ~3% of an M = 512 call). With one, a first pass
    // marks the outliers.
    let int8_part = settings.row_scale == RowScale::Int8Part && threshold > 0.0;
    let one_pass = int8_part && row_absmax.is_none();
    let rows = absmax.len();
    let parts = split_ranges(rows, threads_for(x.len(), threads));
    let row_slice = |range: &Range<usize>| &x[range.start * cols..range.end * cols];
    // One mask per part, then their union in the first.
    let masks = scratch::zeroed(masks, parts.len().max(1) * cols, "outlier column masks")?;
    let mask_parts = split_slice_mut(masks, &split_ranges(parts.len(), parts.len()), cols);
    if int8_part && !one_pass {
        run_parts(parts.iter().zip(mask_parts), |(range, mask)| {
            mark_outlier_part(path, row_slice(range), rows_q, threshold, cols, mask)
        });
    } else {
        let q_parts = split_slice_mut(&mut *q, &parts, cols);
        let a_parts = split_slice_mut(&mut *absmax, &parts, 1);
        run_parts(parts.iter().zip(q_parts).zip(a_parts).zip(mask_parts), |(((range, q), a), mask)| {
            quantize_activation_part(path, row_slice(range), rows_q, threshold, cols, q, a, mask);
        });
    }
    let union = merge_masks(masks, cols);
    list_outliers(union, outliers)?;
    if one_pass {
        let q_parts = split_slice_mut(&mut *q, &parts, cols);
        let a_parts = split_slice_mut(&mut *absmax, &parts, 1);
        let columns = &outliers[..];
        run_parts(parts.iter().zip(q_parts).zip(a_parts), |((range, q), a)| {
            let x = row_slice(range);
            int8_part_from_own_outliers(path, x, rows_q, threshold, union, columns, cols, q, a)
        });
    } else if let (true, Some(given)) = (int8_part, row_absmax) {
        // Row-parallel: each row's own absmax checked against the given one
        // and quantized with the latter, in one pass.
        let q_parts = split_slice_mut(&mut *q, &parts, cols);
        let a_parts = split_slice_mut(&mut *absmax, &parts, 1);
        let checked = run_parts(parts.iter().zip(q_parts).zip(a_parts), |((range, q), a)| {
            let given = &given[range.clone()];
            let x = row_slice(range);
            quantize_int8_part_given(path, x, rows_q, union, given, range.start, cols, q, a)
        });
        // Parts run in row order: the first error names the lowest row.
        checked.into_iter().collect::<Result<Vec<()>>>()?;
    }
    if let (Some(given), false) = (row_absmax, int8_part) {
        // bitsandbytes' rule: each row's own absmax is this slice's share of
        // the MAX; requantize the rows whose MAX lies on another rank.
        let q_parts = split_slice_mut(&mut *q, &parts, cols);
        let a_parts = split_slice_mut(&mut *absmax, &parts, 1);
        let checked = run_parts(parts.iter().zip(q_parts).zip(a_parts), |((range, q), a)| {
            requantize_part(path, row_slice(range), rows_q, &given[range.clone()], range.start, union, cols, q, a)
        });
        // Parts run in row order: the first error names the lowest row.
        checked.into_iter().collect::<Result<Vec<()>>>()?;
    }
    // Outlier columns go through the floating-point product: 0 in the int8 one.
    if !outliers.is_empty() {
        for row in q.chunks_exact_mut(cols) {
            for &c in outliers.iter() {
                row[c] = 0;
            }
        }
    }
    Ok(())
}

/// The union of the parts' outlier masks (`parts × cols`), in the first.
fn merge_masks(masks: &mut [bool], cols: usize) -> &[bool] {
    let (union, rest) = masks.split_at_mut(cols);
    for m in rest.chunks_exact(cols) {
        for (acc, &v) in union.iter_mut().zip(m) {
            *acc |= v;
        }
    }
    union
}

/// The marked columns of `mask`, ascending, into `outliers`.
fn list_outliers(mask: &[bool], outliers: &mut Vec<usize>) -> Result<()> {
    let count = mask.iter().filter(|m| **m).count();
    outliers.clear();
    outliers.try_reserve_exact(count).map_err(|_| Error::out_of_memory("cannot allocate the outlier column list"))?;
    outliers.extend(mask.iter().enumerate().filter(|(_, m)| **m).map(|(c, _)| c));
    Ok(())
}
