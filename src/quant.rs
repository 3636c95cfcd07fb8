//! The LLM.int8() arithmetic, written once. Every backend's kernels and epilogues
//! compute exactly these formulas, in this order; the tests check them against
//! bitsandbytes and against an f64 reference.
//!
//! Vector-wise quantization (Dettmers et al., 2022, §3.2): each row of X and of W
//! is scaled by its own absmax to [-127, 127]. Mixed-precision decomposition (§3.3):
//! the columns of X that hold a value with |x| >= threshold are multiplied in
//! floating point against the dequantized weight columns instead.

use half::f16;

use crate::dtype::Element;
use crate::error::{Error, Result};

/// The default outlier threshold of the paper and of bitsandbytes.
pub const DEFAULT_THRESHOLD: f32 = 6.0;

/// Largest number of int8 products summed in one `i32` without any chance of
/// overflow, even with -128 on both sides (128² · 2¹⁶ = 2³⁰ < 2³¹), and even in
/// the u8 × s8 form of VNNI (255 · 128 · 2¹⁶ < 2³¹). Longer dot products are
/// split into chunks of this size whose sums are added in `i64`.
pub const EXACT_I32_CHUNK: usize = 1 << 16;

/// How input values are read before they are quantized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum InputRounding {
    /// Each value as it is: float32 and bfloat16 inputs are quantized from their
    /// own values (the default; the more accurate choice).
    #[default]
    Exact = 0,
    /// Each value rounded to float16 first, as bitsandbytes' `Linear8bitLt` does
    /// with weights and activations of any dtype: float32 inputs then give its
    /// `CB`, `SCB` and outputs exactly. Float16 inputs are unaffected.
    Float16 = 1,
}

impl InputRounding {
    pub fn from_code(code: i32) -> Result<InputRounding> {
        match code {
            0 => Ok(InputRounding::Exact),
            1 => Ok(InputRounding::Float16),
            _ => Err(Error::invalid(format!(
                "unknown input rounding {code} (expected LLMINT8_INPUT_EXACT=0 or LLMINT8_INPUT_ROUND_F16=1)"
            ))),
        }
    }

    /// The value quantization sees for `v`.
    #[inline(always)]
    pub fn load<T: Element>(self, v: T) -> f32 {
        match self {
            InputRounding::Exact => v.to_f32(),
            InputRounding::Float16 => f16::from_f32(v.to_f32()).to_f32(),
        }
    }
}

/// Which values of an activation row set its scale when outlier columns are
/// decomposed (threshold > 0; at threshold 0 both rules are the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum RowScale {
    /// bitsandbytes' rule: the absmax over the row's values below the
    /// threshold. A value of an outlier column that is itself below the
    /// threshold (an outlier in another row) still sets the scale, though the
    /// int8 product never uses it.
    BitsAndBytes = 0,
    /// The absmax over the columns the int8 product uses: every outlier column
    /// is left out, so each row's scale fits the values it quantizes.
    #[default]
    Int8Part = 1,
}

impl RowScale {
    pub fn from_code(code: i32) -> Result<RowScale> {
        match code {
            0 => Ok(RowScale::BitsAndBytes),
            1 => Ok(RowScale::Int8Part),
            _ => Err(Error::invalid(format!(
                "unknown row scale rule {code} (expected LLMINT8_ROW_SCALE_BITSANDBYTES=0 or LLMINT8_ROW_SCALE_INT8_PART=1)"
            ))),
        }
    }
}

/// The error for a weight holding a non-finite value (as read through
/// `rounding`), naming the first such row (and its column when known).
pub fn non_finite_weight(row: usize, column: Option<usize>, rounding: InputRounding) -> Error {
    Error::invalid(format!(
        "weight row {row} holds a non-finite value{}{}; a weight must be finite",
        column.map_or(String::new(), |c| format!(" (column {c})")),
        if rounding == InputRounding::Float16 { " once rounded to float16" } else { "" }
    ))
}

/// Checks an outlier threshold: 0 turns the decomposition off, +Inf leaves only
/// non-finite values as outliers; negative or NaN is refused.
pub fn check_threshold(threshold: f32) -> Result<()> {
    if threshold.is_nan() || threshold < 0.0 {
        return Err(Error::invalid(format!(
            "threshold must be >= 0 (0 turns the outlier decomposition off), got {threshold}"
        )));
    }
    Ok(())
}

/// Whether `v` is an outlier: `|v| >= threshold`, and every non-finite value, when
/// the decomposition is on (`threshold > 0`). Written as `!(|v| < t)` so that NaN
/// is an outlier too and propagates through the floating-point part.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // deliberate: true for NaN
pub fn is_outlier(v: f32, threshold: f32) -> bool {
    threshold > 0.0 && !(v.abs() < threshold)
}

/// The quantization scale of a row, `(1 / absmax) · 127` in f32 — reciprocal first,
/// as PyTorch evaluates bitsandbytes' `127 / absmax`. A zero row has scale 0.
/// Returns `None` when `1 / absmax` overflows (a subnormal absmax), where the
/// f32 formula would saturate every element; [`quantize_row_with`] then falls
/// back to f64.
#[inline(always)]
pub fn row_scale(absmax: f32) -> Option<f32> {
    if absmax == 0.0 {
        return Some(0.0);
    }
    let scale = (1.0 / absmax) * 127.0;
    scale.is_finite().then_some(scale)
}

/// `round_half_even(v · scale)` as int8. `v · scale` never exceeds 127 in
/// magnitude by more than rounding, so the cast never clips. (Through i32:
/// the same value for every in-range input, and it vectorizes.)
#[inline(always)]
pub fn quantize_value(v: f32, scale: f32) -> i8 {
    (v * scale).round_ties_even() as i32 as i8
}

/// Bits of `+Inf`: for non-negative f32, the bit patterns order like the values,
/// and every NaN pattern lies above this one.
pub const INF_BITS: u32 = 0x7f80_0000;

/// `max |v|` over values already made non-negative, as an integer maximum of
/// their bit patterns (which the compiler vectorizes; a float `max` reduction
/// it does not). A NaN or Inf among them gives a result `>= INF_BITS`.
#[inline(always)]
fn abs_max_bits(abs_values: impl Iterator<Item = f32>) -> u32 {
    abs_values.fold(0u32, |m, a| m.max(a.to_bits()))
}

/// Quantizes `row` into `q` with the given absmax, writing 0 where
/// `zero(column, value)`.
#[inline(always)]
fn quantize_row_with<T: Element>(
    row: &[T],
    rounding: InputRounding,
    absmax: f32,
    q: &mut [i8],
    zero: impl Fn(usize, f32) -> bool,
) {
    match row_scale(absmax) {
        Some(scale) => {
            for (c, (qc, &v)) in q.iter_mut().zip(row).enumerate() {
                let v = rounding.load(v);
                *qc = if zero(c, v) { 0 } else { quantize_value(v, scale) };
            }
        }
        None => {
            let absmax = absmax as f64;
            for (c, (qc, &v)) in q.iter_mut().zip(row).enumerate() {
                let v = rounding.load(v);
                *qc = if zero(c, v) { 0 } else { (v as f64 * 127.0 / absmax).round_ties_even() as i8 };
            }
        }
    }
}

/// Quantizes one weight row: `absmax = max |w|`, `q = round(w · scale)`.
/// Returns the absmax (bitsandbytes' `SCB` entry), or the column of the first
/// non-finite value (as read through `rounding`), which a weight may not hold.
#[inline(always)]
pub fn quantize_weight_row<T: Element>(
    row: &[T],
    rounding: InputRounding,
    q: &mut [i8],
) -> std::result::Result<f32, usize> {
    quantize_weight_row_columns(row, 0..row.len(), rounding, q)
}

/// Quantizes columns `cols` of one weight row into `q` with the absmax of the
/// whole row: a row-parallel shard's part of the row (in_features split
/// across ranks), the same int8 values as those columns of the unsharded
/// row. Returns the absmax, or the column of the first non-finite value of
/// the whole row (as [`quantize_weight_row`]: the shard refuses what the
/// layer refuses).
#[inline(always)]
pub fn quantize_weight_row_columns<T: Element>(
    row: &[T],
    cols: std::ops::Range<usize>,
    rounding: InputRounding,
    q: &mut [i8],
) -> std::result::Result<f32, usize> {
    let bits = abs_max_bits(row.iter().map(|&v| rounding.load(v).abs()));
    if bits >= INF_BITS {
        return Err(row.iter().position(|&v| !rounding.load(v).is_finite()).unwrap_or(0));
    }
    let absmax = f32::from_bits(bits);
    quantize_row_with(&row[cols], rounding, absmax, q, |_, _| false);
    Ok(absmax)
}

/// Quantizes one activation row (bitsandbytes' `int8_vectorwise_quant`).
///
/// With `threshold > 0`, outlier elements ([`is_outlier`]) are left out of the
/// absmax and quantized to 0, and their columns are set in `outlier_columns`;
/// the caller zeroes those columns in every row once all rows are done.
/// With `threshold == 0` a row holding NaN or ±Inf gets absmax NaN and an all-zero
/// `q`, so that its output row becomes NaN instead of silently finite.
/// Returns the row's absmax (`SCA` entry).
#[inline(always)]
pub fn quantize_activation_row<T: Element>(
    row: &[T],
    rounding: InputRounding,
    threshold: f32,
    q: &mut [i8],
    outlier_columns: &mut [bool],
) -> f32 {
    // Branch-free, so the compiler vectorizes it: outliers count as 0 for the
    // absmax; a non-finite value that is not an outlier (threshold 0) poisons the row.
    let bits = abs_max_bits(row.iter().zip(outlier_columns.iter_mut()).map(|(&v, is_out)| {
        let v = rounding.load(v);
        let out = is_outlier(v, threshold);
        *is_out |= out;
        if out {
            0.0
        } else {
            v.abs()
        }
    }));
    if bits >= INF_BITS {
        q.fill(0);
        return f32::NAN;
    }
    let absmax = f32::from_bits(bits);
    quantize_row_with(row, rounding, absmax, q, |_, v| is_outlier(v, threshold));
    absmax
}

/// Sets `outlier_columns[c]` for every column where `row` holds an outlier
/// ([`is_outlier`]): the first pass of [`RowScale::Int8Part`].
#[inline(always)]
pub fn mark_outlier_columns<T: Element>(
    row: &[T],
    rounding: InputRounding,
    threshold: f32,
    outlier_columns: &mut [bool],
) {
    for (is_out, &v) in outlier_columns.iter_mut().zip(row) {
        *is_out |= is_outlier(rounding.load(v), threshold);
    }
}

/// Quantizes one activation row under [`RowScale::Int8Part`], once every
/// row's outliers are marked in `outlier_columns` (the union over the call):
/// the absmax is taken over the other columns only, and the outlier columns
/// are quantized to 0. A non-finite value outside them (possible only where
/// nothing is marked) gives absmax NaN and an all-zero `q`, as in
/// [`quantize_activation_row`]. Returns the row's absmax.
#[inline(always)]
pub fn quantize_activation_row_int8_part<T: Element>(
    row: &[T],
    rounding: InputRounding,
    outlier_columns: &[bool],
    q: &mut [i8],
) -> f32 {
    let absmax = int8_part_absmax(row, rounding, outlier_columns);
    quantize_activation_row_given_absmax(row, rounding, absmax, outlier_columns, q);
    absmax
}

/// The absmax of a row's int8 part under [`RowScale::Int8Part`]: over the
/// columns not marked in `outlier_columns`; NaN when one of them holds a
/// non-finite value.
#[inline(always)]
pub fn int8_part_absmax<T: Element>(row: &[T], rounding: InputRounding, outlier_columns: &[bool]) -> f32 {
    let bits =
        abs_max_bits(row.iter().zip(outlier_columns).map(|(&v, &out)| if out { 0.0 } else { rounding.load(v).abs() }));
    if bits >= INF_BITS {
        f32::NAN
    } else {
        f32::from_bits(bits)
    }
}

/// A row's entry in a row-parallel rank's activation statistics: the absmax
/// of its slice's int8 part, or `+Inf` for a row the int8 part cannot
/// quantize (a non-finite value outside the outlier columns, absmax NaN),
/// which a MAX over the ranks keeps whatever it does with NaN.
#[inline(always)]
pub fn row_statistic(absmax: f32) -> f32 {
    if absmax.is_nan() {
        f32::INFINITY
    } else {
        absmax
    }
}

/// The absmax a row-parallel rank quantizes row `row` of its slice with,
/// given the MAX over every rank's [`row_statistic`] (`global`) and its own
/// slice's absmax (`own`, NaN for a row it cannot quantize): `global`, NaN
/// when `global` is `+Inf` (the row's output becomes NaN, as the unsharded
/// layer's). Refuses a `global` that is NaN, negative, or below what this
/// slice holds — not a MAX that included this rank.
pub fn given_row_absmax(row: usize, global: f32, own: f32) -> Result<f32> {
    if global.is_nan() || global < 0.0 {
        return Err(Error::invalid(format!(
            "row_absmax[{row}] = {global}: an all-reduced row absmax is >= 0 (+Inf for a row that cannot be quantized)"
        )));
    }
    if global == f32::INFINITY {
        return Ok(f32::NAN);
    }
    if own.is_nan() || global < own {
        return Err(Error::invalid(format!(
            "row_absmax[{row}] = {global}, but this rank's slice of row {row} has {}: pass the MAX over every rank's statistics",
            if own.is_nan() { "statistic +Inf".to_string() } else { format!("absmax {own}") }
        )));
    }
    Ok(global)
}

/// Quantizes one activation row with the absmax `absmax` (a row-parallel
/// slice, its row scale the MAX over the ranks), `outlier_columns` quantized
/// to 0; `absmax` NaN gives an all-zero row.
#[inline(always)]
pub fn quantize_activation_row_given_absmax<T: Element>(
    row: &[T],
    rounding: InputRounding,
    absmax: f32,
    outlier_columns: &[bool],
    q: &mut [i8],
) {
    if absmax.is_nan() {
        q.fill(0);
        return;
    }
    quantize_row_with(row, rounding, absmax, q, |c, _| outlier_columns[c]);
}

/// `1/127` and `1/127²` in f64: multiplying by them (not dividing) keeps the
/// epilogue cheap, and their error (2⁻⁵³ relative) is far below f32's.
const INV_127: f64 = 1.0 / 127.0;
pub(crate) const INV_127_SQ: f64 = 1.0 / 16129.0;

/// Dequantizes one int8 weight value: `cb · scb / 127`, computed in f64 and
/// rounded once to f32 — no intermediate overflow for a
/// scale near the top of the f32 range (an f32 `cb · scb` would reach ±Inf for
/// `scb` above 2.7e36, which a float32 or bfloat16 weight can hold).
#[inline(always)]
pub fn dequantize_weight(cb: i8, scb: f32) -> f32 {
    (cb as f64 * scb as f64 * INV_127) as f32
}

/// Dequantizes an int8 · int8 dot product with the row scale of X (`sa`) and of
/// W (`sb`): `acc · sa · sb / 127²`, computed in f64 (the integer `acc` held
/// exactly, no intermediate overflow or underflow) and rounded once to f32.
/// (bitsandbytes' CPU backend multiplies by 6.200124e-05, a typo for 1/127² =
/// 6.2000124e-05, relative difference 1.8e-5; we divide by 127² exactly.)
#[inline(always)]
pub fn dequantize_product(acc: f64, sa: f32, sb: f32) -> f32 {
    (acc * sa as f64 * sb as f64 * INV_127_SQ) as f32
}

/// One output element: `(int8 part + outlier part) + bias`, in that order.
#[inline(always)]
pub fn output_value(int8_part: f32, outlier_part: f32, bias: f32) -> f32 {
    (int8_part + outlier_part) + bias
}

/// One step of the floating-point outlier part of an output element, which is
/// `Σ_c x[c] · dequantize_weight(cb[c], scb)` over the outlier columns in
/// ascending order, summed in f32 from 0: `partial + x · w`.
#[inline(always)]
pub fn add_outlier_product(partial: f32, x: f32, w: f32) -> f32 {
    partial + x * w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_rules() {
        assert!(check_threshold(0.0).is_ok());
        assert!(check_threshold(6.0).is_ok());
        assert!(check_threshold(f32::INFINITY).is_ok());
        assert!(check_threshold(-1.0).is_err());
        assert!(check_threshold(f32::NAN).is_err());
        assert!(is_outlier(6.0, 6.0));
        assert!(is_outlier(-6.0, 6.0));
        assert!(!is_outlier(5.999, 6.0));
        assert!(is_outlier(f32::NAN, f32::INFINITY));
        assert!(is_outlier(f32::NEG_INFINITY, f32::INFINITY));
        assert!(!is_outlier(1e30, f32::INFINITY));
        assert!(!is_outlier(f32::NAN, 0.0));
    }

    #[test]
    fn zero_row_quantizes_to_zero() {
        let mut q = [5i8; 4];
        assert_eq!(quantize_weight_row(&[0.0f32; 4], InputRounding::Exact, &mut q), Ok(0.0));
        assert_eq!(q, [0; 4]);
    }

    #[test]
    fn weight_row_rounds_half_to_even() {
        // absmax 127 -> scale 1: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2
        let mut q = [0i8; 4];
        assert_eq!(quantize_weight_row(&[127.0f32, 2.5, 3.5, -2.5], InputRounding::Exact, &mut q), Ok(127.0));
        assert_eq!(q, [127, 2, 4, -2]);
        assert_eq!(quantize_weight_row(&[1.0f32, f32::NAN], InputRounding::Exact, &mut q[..2]), Err(1));
    }

    #[test]
    fn subnormal_absmax_does_not_saturate() {
        let mut q = [0i8; 2];
        let row = [1e-40f32, 5e-41];
        assert_eq!(quantize_weight_row(&row, InputRounding::Exact, &mut q), Ok(1e-40));
        assert_eq!(q, [127, 64]);
    }

    #[test]
    fn activation_outliers_leave_absmax_and_are_zeroed() {
        let mut q = [0i8; 4];
        let mut cols = [false; 4];
        let a = quantize_activation_row(&[1.0f32, -8.0, 0.5, f32::NAN], InputRounding::Exact, 6.0, &mut q, &mut cols);
        assert_eq!(a, 1.0);
        assert_eq!(q, [127, 0, 64, 0]);
        assert_eq!(cols, [false, true, false, true]);
    }

    #[test]
    fn non_finite_without_decomposition_poisons_the_row() {
        let mut q = [1i8; 3];
        let mut cols = [false; 3];
        let a = quantize_activation_row(&[1.0f32, f32::INFINITY, 2.0], InputRounding::Exact, 0.0, &mut q, &mut cols);
        assert!(a.is_nan());
        assert_eq!(q, [0; 3]);
        assert_eq!(cols, [false; 3]);
        assert!(dequantize_product(0.0, a, 1.0).is_nan());
    }

    #[test]
    fn dequantization_does_not_overflow_on_the_way() {
        // cb · scb alone is beyond f32 here; the result is not.
        assert_eq!(dequantize_weight(-127, 4.1e37), -4.1e37);
        assert_eq!(dequantize_weight(127, f32::MAX), f32::MAX);
        // acc · sa alone overflows f32, sb brings it back.
        let y = dequantize_product(1e6, 1e38, 1e-30);
        assert!((y as f64 / (1e6 * 1e38 * 1e-30 / 16129.0) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn float16_rounding_reads_values_as_bitsandbytes_does() {
        let r = InputRounding::Float16;
        assert_eq!(r.load(1.0001f32), 1.0);
        assert_eq!(r.load(70000.0f32), f32::INFINITY);
        assert_eq!(InputRounding::Exact.load(1.0001f32), 1.0001);
        let mut q = [0i8; 2];
        assert_eq!(quantize_weight_row(&[1.0f32, 70000.0], r, &mut q), Err(1));
    }
}
