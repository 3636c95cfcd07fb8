//! The f64 reference of LLM.int8(), written independently of the library from
//! the rules in tests/data/GOLDEN-README.md: quantization in f32 exactly as
//! bitsandbytes does it, everything after it in f64. No dependencies, so the
//! fuzz targets (fuzz/checks.rs) use it too.

/// Row quantization with bitsandbytes' row scale: returns (q, absmax, outlier columns).
pub fn quantize_rows(x: &[f32], rows: usize, cols: usize, threshold: f32) -> (Vec<i8>, Vec<f32>, Vec<usize>) {
    quantize_rows_with(x, rows, cols, threshold, false)
}

/// Row quantization; `int8_part`: each row's absmax over the columns that
/// hold no outlier in any row (the int8-part row scale), else over the row's
/// values that are not outliers (bitsandbytes').
pub fn quantize_rows_with(
    x: &[f32],
    rows: usize,
    cols: usize,
    threshold: f32,
    int8_part: bool,
) -> (Vec<i8>, Vec<f32>, Vec<usize>) {
    let decompose = threshold > 0.0;
    let outlier = |v: f32| decompose && (v.is_nan() || v.abs() >= threshold);
    let mut is_outlier_col = vec![false; cols];
    for (i, &v) in x[..rows * cols].iter().enumerate() {
        if outlier(v) {
            is_outlier_col[i % cols] = true;
        }
    }
    let left_out = |c: usize, v: f32| if int8_part { is_outlier_col[c] } else { outlier(v) };
    let mut absmax = vec![0.0f32; rows];
    let mut q = vec![0i8; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mut m = 0.0f32;
        let mut poisoned = false;
        for (c, &v) in row.iter().enumerate() {
            if left_out(c, v) {
            } else if !v.is_finite() {
                poisoned = true;
            } else if v.abs() > m {
                m = v.abs();
            }
        }
        if poisoned {
            absmax[r] = f32::NAN;
            continue;
        }
        absmax[r] = m;
        if m == 0.0 {
            continue;
        }
        let scale: f32 = (1.0f32 / m) * 127.0f32;
        for (c, &v) in row.iter().enumerate() {
            let v = if left_out(c, v) { 0.0 } else { v };
            if scale.is_finite() {
                q[r * cols + c] = (v * scale).round_ties_even() as i8;
            } else {
                q[r * cols + c] = (v as f64 * 127.0 / m as f64).round_ties_even() as i8;
            }
        }
    }
    let cols_list: Vec<usize> = (0..cols).filter(|&c| is_outlier_col[c]).collect();
    for r in 0..rows {
        for &c in &cols_list {
            q[r * cols + c] = 0;
        }
    }
    (q, absmax, cols_list)
}

/// One reference output element and a bound on the f32 rounding a correct
/// implementation may add to it (before the final rounding to the output dtype).
pub struct Output {
    pub y: Vec<f64>,
    pub slack: Vec<f64>,
    pub outlier_cols: usize,
}

/// `y = x·Wᵀ + b` through the int8 weight `(cb, scb)` with the rules of LLM.int8().
pub fn matmul(
    x: &[f32],
    rows: usize,
    cb: &[i8],
    scb: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    threshold: f32,
) -> Output {
    matmul_rounded(x, x, rows, cb, scb, bias, k, threshold, false)
}

/// [`matmul`] with the int8-part row scale when `int8_part`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    x: &[f32],
    rows: usize,
    cb: &[i8],
    scb: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    threshold: f32,
    int8_part: bool,
) -> Output {
    matmul_rounded(x, x, rows, cb, scb, bias, k, threshold, int8_part)
}

/// [`matmul`] where the activations are quantized (and outliers detected) from
/// `x_quantized` — e.g. rounded to float16 first, as bitsandbytes' Linear8bitLt
/// does — while the outlier product uses `x` as given; the int8-part row
/// scale when `int8_part`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_rounded(
    x_quantized: &[f32],
    x: &[f32],
    rows: usize,
    cb: &[i8],
    scb: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    threshold: f32,
    int8_part: bool,
) -> Output {
    product(quantize_rows_with(x_quantized, rows, k, threshold, int8_part), x, rows, cb, scb, bias, k, &|_, _| None)
}

/// [`matmul_with`] for a weight that keeps columns in their source form: an
/// outlier column `c` with `kept(j, c) = Some(v)` is multiplied by `v` in
/// output row `j` instead of by the dequantized int8 weight.
#[allow(clippy::too_many_arguments)]
pub fn matmul_kept(
    x: &[f32],
    rows: usize,
    cb: &[i8],
    scb: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    threshold: f32,
    int8_part: bool,
    kept: &dyn Fn(usize, usize) -> Option<f32>,
) -> Output {
    product(quantize_rows_with(x, rows, k, threshold, int8_part), x, rows, cb, scb, bias, k, kept)
}

/// The product of quantized activations `(q, sa, outlier columns)` with the
/// int8 weight, the outlier columns of `x` against the dequantized weight (or
/// the value `kept(j, c)` gives).
#[allow(clippy::too_many_arguments)]
fn product(
    (q, sa, cols): (Vec<i8>, Vec<f32>, Vec<usize>),
    x: &[f32],
    rows: usize,
    cb: &[i8],
    scb: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    kept: &dyn Fn(usize, usize) -> Option<f32>,
) -> Output {
    let n = scb.len();
    let mut y = vec![0.0f64; rows * n];
    let mut slack = vec![0.0f64; rows * n];
    let eps = f32::EPSILON as f64;
    for i in 0..rows {
        for j in 0..n {
            let acc: i64 = (0..k).map(|c| q[i * k + c] as i64 * cb[j * k + c] as i64).sum();
            let int8_part = acc as f64 * sa[i] as f64 * scb[j] as f64 / 16129.0;
            let mut outl = 0.0f64;
            let mut outl_abs = 0.0f64;
            // A dequantized weight rounded to an f32 subnormal is off by up to
            // 2⁻¹⁵⁰ absolute, not by a relative epsilon: |x| times that.
            let mut subnormal = 0.0f64;
            for &c in &cols {
                let w = kept(j, c).map_or(cb[j * k + c] as f64 * scb[j] as f64 / 127.0, |v| v as f64);
                let t = x[i * k + c] as f64 * w;
                outl += t;
                outl_abs += t.abs();
                subnormal += (x[i * k + c] as f64).abs() * 2f64.powi(-150);
            }
            let b = bias.map_or(0.0, |b| b[j] as f64);
            y[i * n + j] = int8_part + outl + b;
            slack[i * n + j] = 6.0 * eps * int8_part.abs()
                + (cols.len() as f64 + 3.0) * eps * outl_abs
                + 2.0 * eps * b.abs()
                + subnormal;
        }
    }
    Output { y, slack, outlier_cols: cols.len() }
}

/// Rigorous bound on |LLM.int8() − exact x·Wᵀ| for one element, from the
/// rounding of each quantized value (at most half a step, `absmax/254`).
pub fn quantization_bound(x: &[f32], w: &[f32], rows: usize, n: usize, k: usize, threshold: f32) -> Vec<f64> {
    let (_, sa, cols) = quantize_rows(x, rows, k, threshold);
    let mut out = vec![0.0; rows * n];
    for i in 0..rows {
        for j in 0..n {
            let sb = (0..k).map(|c| w[j * k + c].abs()).fold(0.0f32, f32::max) as f64;
            let ew = sb / 254.0;
            let ex = sa[i] as f64 / 254.0;
            let mut b = 0.0;
            for c in 0..k {
                let (xv, wv) = (x[i * k + c].abs() as f64, w[j * k + c].abs() as f64);
                if cols.contains(&c) {
                    b += xv * ew;
                } else {
                    b += ex * wv + xv * ew + ex * ew;
                }
            }
            out[i * n + j] = b;
        }
    }
    out
}
