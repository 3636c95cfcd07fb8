//! Microkernels: the exact int8 products of a tile of `MR` activation rows ×
//! `NP` weight panels (16 output rows each) over the whole of K, in the packed
//! layout of [`super::pack`]. Both return the same integers; the epilogue that
//! turns them into outputs is shared (`super::Operands::epilogue`).

use super::pack::{BLOCK, GROUP, PANEL};
use crate::quant::EXACT_I32_CHUNK;

/// Portable tile: `x` holds `MR` rows of quantized activations (int8, row stride
/// `x_stride`, `kp` used columns), `w` starts at the first panel (panel stride
/// `panel_stride`). Sums in i32 over chunks of [`EXACT_I32_CHUNK`] columns, the
/// chunks in i64, so any K is exact.
#[inline(always)]
pub fn tile_portable<const MR: usize, const NP: usize>(
    x: &[i8],
    x_stride: usize,
    w: &[i8],
    panel_stride: usize,
    kp: usize,
) -> [[[i64; PANEL]; NP]; MR] {
    let mut total = [[[0i64; PANEL]; NP]; MR];
    let groups = kp / GROUP;
    let chunk = EXACT_I32_CHUNK / GROUP;
    let mut g0 = 0;
    while g0 < groups {
        let g1 = (g0 + chunk).min(groups);
        let mut acc = [[[0i32; PANEL]; NP]; MR];
        for g in g0..g1 {
            for p in 0..NP {
                let block: &[i8; BLOCK] = w[p * panel_stride + g * BLOCK..][..BLOCK].try_into().unwrap();
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xs: &[i8; GROUP] = x[r * x_stride + g * GROUP..][..GROUP].try_into().unwrap();
                    for (lane, a) in acc_r[p].iter_mut().enumerate() {
                        let ws = &block[lane * GROUP..][..GROUP];
                        *a += (0..GROUP).map(|t| xs[t] as i32 * ws[t] as i32).sum::<i32>();
                    }
                }
            }
        }
        for (t, a) in total.iter_mut().zip(&acc) {
            for (tp, ap) in t.iter_mut().zip(a) {
                for (tl, al) in tp.iter_mut().zip(ap) {
                    *tl += *al as i64;
                }
            }
        }
        g0 = g1;
    }
    total
}

/// Activation rows per packed VNNI tile (see [`pack_vnni_activations`]).
pub const VNNI_ROWS: usize = 8;

/// AVX-512 VNNI tile: `x` is one packed activation tile (`[kp / 4][8][4]`
/// signed bytes, see [`pack_vnni_activations`]), of which rows `0..MR` are
/// used; `x_sums` their row sums; `w` starts at the first panel. The weight is
/// made unsigned on the fly (`w + 128`, one xor per 64 bytes) so that the
/// activations are the signed operand of `vpdpbusd` and can be broadcast from
/// memory inside the instruction: `Σ x·(w + 128) − 128·Σ x` is the exact int8
/// product. Exact in i32 when `kp <= 65536` (255 · 128 · 65536 < 2³¹).
///
/// # Safety
/// The processor must support AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn tile_vnni<const MR: usize, const NP: usize>(
    x: &[i8],
    x_sums: &[i32],
    w: &[i8],
    panel_stride: usize,
    kp: usize,
) -> [[[i32; PANEL]; NP]; MR] {
    use std::arch::x86_64::*;
    const TILE_GROUP: usize = VNNI_ROWS * GROUP;
    assert!(MR <= VNNI_ROWS && kp <= EXACT_I32_CHUNK && kp.is_multiple_of(GROUP));
    assert!(x.len() >= (kp / GROUP - 1) * TILE_GROUP + MR * GROUP && x_sums.len() >= MR);
    assert!(w.len() >= (NP - 1) * panel_stride + kp * PANEL);
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [[_mm512_setzero_si512(); NP]; MR];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    for g in 0..kp / GROUP {
        let mut wv = [_mm512_setzero_si512(); NP];
        for (p, v) in wv.iter_mut().enumerate() {
            // SAFETY: p * panel_stride + g * 64 + 64 <= w.len() by the assert above.
            let signed = unsafe { _mm512_loadu_si512(wp.add(p * panel_stride + g * BLOCK).cast()) };
            *v = _mm512_xor_si512(signed, flip);
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: g * 32 + r * 4 + 4 <= x.len() by the assert above.
            let four = unsafe { xp.add(g * TILE_GROUP + r * GROUP).cast::<i32>().read_unaligned() };
            let xv = _mm512_set1_epi32(four);
            for (a, &wvp) in acc_r.iter_mut().zip(&wv) {
                *a = _mm512_dpbusd_epi32(*a, wvp, xv);
            }
        }
    }
    let mut out = [[[0i32; PANEL]; NP]; MR];
    for ((o_r, acc_r), &sum) in out.iter_mut().zip(&acc).zip(x_sums) {
        let shift = _mm512_set1_epi32(sum << 7);
        for (o, &a) in o_r.iter_mut().zip(acc_r) {
            // SAFETY: o is 16 i32.
            unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), _mm512_sub_epi32(a, shift)) };
        }
    }
    out
}

/// Packs quantized activations `q` `[rows, k]` for [`tile_vnni`]: tiles of
/// [`VNNI_ROWS`] rows, each `[kp / 4][8][4]` bytes (the 4 bytes of a column
/// group for row 0, row 1, …), so one tile's broadcasts sit at fixed offsets
/// from one pointer. Missing rows and columns are zero. Also returns each row's
/// sum, for the `w + 128` correction.
#[cfg(target_arch = "x86_64")]
pub fn pack_vnni_activations(q: &[i8], k: usize, kp: usize, x: &mut [i8], sums: &mut [i32]) {
    let tile_bytes = kp * VNNI_ROWS;
    for (r, (row, sum)) in q.chunks_exact(k).zip(sums.iter_mut()).enumerate() {
        let tile = &mut x[(r / VNNI_ROWS) * tile_bytes..][..tile_bytes];
        let at = |g: usize| g * VNNI_ROWS * GROUP + (r % VNNI_ROWS) * GROUP;
        // Fixed-size copies of whole groups (a variable-length copy per 4 bytes
        // would be a call each), then the partial last group.
        let groups = row.chunks_exact(GROUP);
        let tail = groups.remainder();
        for (g, four) in groups.enumerate() {
            tile[at(g)..][..GROUP].copy_from_slice(four);
        }
        if !tail.is_empty() {
            tile[at(k / GROUP)..][..tail.len()].copy_from_slice(tail);
        }
        *sum = row.iter().map(|&v| v as i32).sum();
    }
}

/// AVX2 tile (`NP` = 1): `x` holds `MR` rows of activations widened to i16
/// (row stride `x_stride` elements, `kp` used), `w` starts at the panel. Each
/// group's 64 weight bytes are widened to four registers of 16 i16 (4 lanes ×
/// 4 columns); `vpmaddwd` against the row's 4 values repeated gives, per lane,
/// two partial sums in i32, added at the end. Exact in i32 when `kp <= 65536`.
///
/// # Safety
/// The processor must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn tile_avx2<const MR: usize>(x: &[i16], x_stride: usize, w: &[i8], kp: usize) -> [[[i32; PANEL]; 1]; MR] {
    use std::arch::x86_64::*;
    assert!(kp <= EXACT_I32_CHUNK && kp.is_multiple_of(GROUP));
    assert!(x.len() >= (MR - 1) * x_stride + kp);
    assert!(w.len() >= kp * PANEL);
    let mut acc = [[_mm256_setzero_si256(); 4]; MR];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    for g in 0..kp / GROUP {
        let mut wv = [_mm256_setzero_si256(); 4];
        for (q, v) in wv.iter_mut().enumerate() {
            // SAFETY: g * 64 + q * 16 + 16 <= w.len() by the assert above.
            let bytes = unsafe { _mm_loadu_si128(wp.add(g * BLOCK + q * 16).cast()) };
            *v = _mm256_cvtepi8_epi16(bytes);
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r * x_stride + 4 * g + 4 <= x.len() by the assert above.
            let four = unsafe { xp.add(r * x_stride + g * GROUP).cast::<i64>().read_unaligned() };
            let xv = _mm256_set1_epi64x(four);
            for (a, &wq) in acc_r.iter_mut().zip(&wv) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(wq, xv));
            }
        }
    }
    let mut out = [[[0i32; PANEL]; 1]; MR];
    for (o, acc_r) in out.iter_mut().zip(&acc) {
        for (q, a) in acc_r.iter().enumerate() {
            let mut pairs = [0i32; 8];
            // SAFETY: pairs holds 8 i32.
            unsafe { _mm256_storeu_si256(pairs.as_mut_ptr().cast(), *a) };
            for l in 0..4 {
                o[0][q * 4 + l] = pairs[2 * l] + pairs[2 * l + 1];
            }
        }
    }
    out
}

/// `dst[i] = Y::from_f32(src[i])` for equal lengths, the same bits. float16
/// takes F16C's `vcvtps2ph` (round to nearest even, the instruction
/// `f16::from_f32` uses on such a processor) 8 values at a time:
/// `f16::from_f32` checks for F16C and calls out for every value (float16
/// calls were 1.45× float32's at M = 512, docs/PERF.md). Plain code with the
/// intrinsics inside, not a `#[target_feature]` function: those are not
/// inlined into the multiversioned epilogue (measured: a call per panel).
#[inline(always)]
pub(super) fn convert_from_f32<Y: crate::dtype::Element>(src: &[f32], dst: &mut [Y]) {
    assert_eq!(src.len(), dst.len());
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // only x86-64 converts ahead
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if Y::DTYPE == crate::dtype::DType::F16
        && std::arch::is_x86_feature_detected!("avx")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        use std::arch::x86_64::*;
        let out: *mut u16 = dst.as_mut_ptr().cast();
        done = src.len() / 8 * 8;
        for i in (0..done).step_by(8) {
            // SAFETY: the processor has AVX and F16C (checked); 8 values from
            // `i` lie in both slices (equal lengths); `Y` is float16, a u16.
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
                _mm_storeu_si128(out.add(i).cast(), h);
            }
        }
    }
    for (d, &v) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = Y::from_f32(v);
    }
}

/// Whether [`epilogue_tile_avx512`] runs here (AVX-512 F and F16C).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn has_avx512_epilogue() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("f16c")
}

/// The epilogue's inputs for `rows` rows of one tile over its panels of 16
/// output columns: each panel's exact int8 sums as the microkernel left them
/// (row `r`, lane `l` at `[r · row_stride + l]`), the rows' scales and
/// outlier activations (`[row][outlier]`), the columns' scales, the outlier
/// weight columns (`[panel][outlier][lane]`) and the bias.
#[cfg(target_arch = "x86_64")]
pub(super) struct EpilogueTile<'a> {
    pub sums: &'a [&'a [i32]],
    pub row_stride: usize,
    pub rows: usize,
    pub sa: &'a [f32],
    pub sb: &'a [f32],
    pub x_outliers: &'a [f32],
    pub w_outliers: &'a [f32],
    pub bias: Option<&'a [f32]>,
}

/// A tile's epilogue in AVX-512 registers, 16 outputs at a time, operation
/// for operation `quant`'s: `quant::dequantize_product` (`((acc · sa) · sb) ·
/// 1/127²` in f64, rounded once to f32), `quant::add_outlier_product` from 0
/// in column order (a multiply then an add, never fused),
/// `quant::output_value` (`(int8 part + outlier part) + bias`, the bias 0
/// where there is none), then stored as float16 (nearest-even, as
/// `f16::from_f32`), bfloat16 (as `bf16::from_f32`) or float32. Panel by panel, the column scales and bias
/// held in registers across the rows, the sums read where the tile stores
/// left them. Output row `r`, panel `p`, lane `l` is written at element
/// `r · dst_stride + 16 · p + l` of `dst`.
///
/// # Safety
/// AVX-512 F and F16C; `dst` holds `(rows - 1) · dst_stride + 16 · panels`
/// values of `output` (the slices' lengths are checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
#[inline]
pub(super) unsafe fn epilogue_tile_avx512(
    tile: EpilogueTile<'_>,
    dst: *mut u8,
    dst_stride: usize,
    output: crate::dtype::DType,
) {
    use crate::dtype::DType;
    use std::arch::x86_64::*;
    let EpilogueTile { sums, row_stride, rows, sa, sb, x_outliers, w_outliers, bias } = tile;
    let panels = sums.len();
    let no = w_outliers.len() / (PANEL * panels).max(1);
    assert!(sa.len() == rows && x_outliers.len() == rows * no && w_outliers.len() == panels * no * PANEL);
    assert!(sb.len() == panels * PANEL && bias.is_none_or(|b| b.len() == panels * PANEL));
    assert!(rows == 0 || sums.iter().all(|s| s.len() >= (rows - 1) * row_stride + PANEL));
    let inv = _mm512_set1_pd(crate::quant::INV_127_SQ);
    for (p, s) in sums.iter().enumerate() {
        // Lanes 0..8 and 8..16 of the column scales, widened to f64 once per panel.
        let sb_lo = _mm512_cvtps_pd(_mm256_loadu_ps(sb.as_ptr().add(PANEL * p)));
        let sb_hi = _mm512_cvtps_pd(_mm256_loadu_ps(sb.as_ptr().add(PANEL * p + 8)));
        let bias = bias.map_or(_mm512_setzero_ps(), |b| _mm512_loadu_ps(b.as_ptr().add(PANEL * p)));
        let w = w_outliers.as_ptr().add(p * no * PANEL);
        for r in 0..rows {
            let acc = _mm512_loadu_si512(s.as_ptr().add(r * row_stride).cast());
            let sa = _mm512_set1_pd(sa[r] as f64);
            let lo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(acc));
            let hi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(acc));
            let lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(lo, sa), sb_lo), inv));
            let hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(hi, sa), sb_hi), inv));
            let int8_part = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                _mm256_castps_pd(hi),
            ));
            let mut outlier_part = _mm512_setzero_ps();
            for c in 0..no {
                let x = _mm512_set1_ps(x_outliers[r * no + c]);
                outlier_part = _mm512_add_ps(outlier_part, _mm512_mul_ps(x, _mm512_loadu_ps(w.add(PANEL * c))));
            }
            let y = _mm512_add_ps(_mm512_add_ps(int8_part, outlier_part), bias);
            let at = r * dst_stride + PANEL * p;
            match output {
                DType::F32 => _mm512_storeu_ps(dst.add(4 * at).cast(), y),
                DType::F16 => {
                    _mm256_storeu_si256(dst.add(2 * at).cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(y))
                }
                DType::BF16 => _mm256_storeu_si256(dst.add(2 * at).cast(), bf16_nearest_even(y)),
            }
        }
    }
}

/// 16 floats rounded to bfloat16 as `bf16::from_f32` does: to nearest, ties
/// to even, in integer arithmetic on the bits (overflow to ±Inf, subnormals
/// kept); a NaN keeps its top bits with the quiet bit set. Not
/// `vcvtneps2bf16`, which flushes subnormal inputs to zero.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn bf16_nearest_even(y: std::arch::x86_64::__m512) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let bits = _mm512_castps_si512(y);
    let high = _mm512_srli_epi32::<16>(bits);
    let lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb));
    let quiet_nan = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(y, y);
    _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet_nan))
}

/// A row as the AVX-512 quantizers read it: each value widened to float32
/// exactly (`Element::to_f32`) and, for a smoothed weight, multiplied by its
/// column's factor (`1/s` for activations, `s` for weight rows) in float32 —
/// the value `quant` is then given, so the bytes are the scalar rules' of the
/// smoothed row.
#[derive(Clone, Copy)]
pub struct Row<'a, T> {
    values: &'a [T],
    factors: Option<&'a [f32]>,
}

impl<'a, T: crate::dtype::Element> Row<'a, T> {
    /// `factors`, when given, as long as `values`.
    pub fn new(values: &'a [T], factors: Option<&'a [f32]>) -> Row<'a, T> {
        assert!(factors.is_none_or(|f| f.len() == values.len()));
        Row { values, factors }
    }
    fn len(self) -> usize {
        self.values.len()
    }
    /// Value `c` as read.
    #[inline(always)]
    fn get(self, c: usize) -> f32 {
        let v = self.values[c].to_f32();
        self.factors.map_or(v, |f| v * f[c])
    }
}

/// 16 values of `row` from `i` as float32, exactly as [`Row::get`] reads
/// them (every dtype).
///
/// Always inlined, so without `target_feature` of its own (the two may not
/// be combined): left to the inliner it was an outlined call per 16 values
/// returning through memory — a third of the quantize stage's time.
///
/// # Safety
/// The processor must support AVX-512 F and BW; `i + 16 <= row.len()`; only
/// called from functions compiled with those features.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load16<T: crate::dtype::Element>(row: Row<'_, T>, i: usize) -> std::arch::x86_64::__m512 {
    use crate::dtype::DType;
    use std::arch::x86_64::*;
    debug_assert!(i + 16 <= row.len());
    let ptr = row.values.as_ptr().add(i);
    // SAFETY (caller): 16 elements from `ptr` lie in `row`; every T is a plain
    // bit pattern of its size; `factors` is as long as the values.
    let v = match T::DTYPE {
        DType::F32 => _mm512_loadu_ps(ptr.cast()),
        DType::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(ptr.cast())),
        // bfloat16 is the top half of a float32.
        DType::BF16 => {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(ptr.cast()))))
        }
    };
    match row.factors {
        Some(f) => _mm512_mul_ps(v, _mm512_loadu_ps(f.as_ptr().add(i))),
        None => v,
    }
}

/// `round_half_even(v · scale)` of 16 values as int8, 0 where `zero` is set
/// (`vrndscaleps` rounds to nearest even whatever the rounding mode; the
/// values are integral and within ±127.5, so the conversions are exact, and
/// `vpmovdb` keeps the low byte as `as i32 as i8` does).
///
/// # Safety
/// The processor must support AVX-512 F and BW; `i + 16 <= q.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn store_quantized16(
    q: &mut [i8],
    i: usize,
    v: std::arch::x86_64::__m512,
    scale: std::arch::x86_64::__m512,
    zero: std::arch::x86_64::__mmask16,
) {
    use std::arch::x86_64::*;
    debug_assert!(i + 16 <= q.len());
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(v, scale));
    let ints = _mm512_maskz_mov_epi32(!zero, _mm512_cvtps_epi32(r));
    // SAFETY (caller): 16 bytes from `i` lie in `q`.
    _mm_storeu_si128(q.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(ints));
}

/// [`crate::quant::quantize_activation_row`] with AVX-512, for rows read as
/// they are (no rounding to float16): the same outlier rule, the same absmax
/// (an integer maximum of the bits of |x| over the non-outliers), the same
/// scale and the same rounding, so the bytes and the absmax are identical.
/// Returns `None` for a subnormal absmax, which the caller then quantizes as
/// usual (the outlier columns it marked are marked again).
///
/// # Safety
/// The processor must support AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn quantize_activation_row_avx512<T: crate::dtype::Element>(
    row: Row<'_, T>,
    threshold: f32,
    q: &mut [i8],
    outlier_columns: &mut [bool],
) -> Option<f32> {
    use crate::quant;
    use std::arch::x86_64::*;
    assert!(row.len() == q.len() && row.len() == outlier_columns.len());
    let full = row.len() / 16 * 16;
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let decompose = threshold > 0.0;
    let t = _mm512_set1_ps(threshold);
    // `!(|v| < t)`, true for NaN, as `quant::is_outlier`.
    let outliers = |abs: __m512| -> __mmask16 {
        if decompose {
            _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(abs, t)
        } else {
            0
        }
    };
    let mut max = _mm512_setzero_si512();
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= full <= row.len().
        let abs = _mm512_and_si512(_mm512_castps_si512(unsafe { load16(row, i) }), abs_mask);
        let out = outliers(_mm512_castsi512_ps(abs));
        if out != 0 {
            // Outliers are few: mark their columns one by one.
            let mut bits = out;
            while bits != 0 {
                outlier_columns[i + bits.trailing_zeros() as usize] = true;
                bits &= bits - 1;
            }
        }
        max = _mm512_mask_max_epu32(max, !out, max, abs);
    }
    let mut bits = _mm512_reduce_max_epu32(max);
    for (c, is_out) in (full..row.len()).zip(&mut outlier_columns[full..]) {
        let v = row.get(c);
        let out = quant::is_outlier(v, threshold);
        *is_out |= out;
        if !out {
            bits = bits.max(v.abs().to_bits());
        }
    }
    // SAFETY: the processor has AVX-512 F/BW (this function's contract).
    unsafe {
        quantize_with_absmax_avx512(
            row,
            bits,
            q,
            |_, v| outliers(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask))),
            |_, v| quant::is_outlier(v, threshold),
        )
    }
}

/// The second pass of the AVX-512 activation quantizers, from the bits of
/// the row's absmax: NaN or ±Inf among them give absmax NaN and an all-zero
/// `q` (as the scalar rules); otherwise the row quantized with the scale of
/// that absmax, 0 in the lanes `zero16(i, values)` sets (16 columns from `i`)
/// and in the tail's columns where `zero(column, value)`. Returns `None` for a
/// subnormal absmax (the caller quantizes the row as usual).
///
/// # Safety
/// The processor must support AVX-512 F and BW; `row` and `q` are as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn quantize_with_absmax_avx512<T: crate::dtype::Element>(
    row: Row<'_, T>,
    bits: u32,
    q: &mut [i8],
    zero16: impl Fn(usize, std::arch::x86_64::__m512) -> std::arch::x86_64::__mmask16,
    zero: impl Fn(usize, f32) -> bool,
) -> Option<f32> {
    use crate::quant;
    use std::arch::x86_64::*;
    if bits >= quant::INF_BITS {
        q.fill(0);
        return Some(f32::NAN);
    }
    let absmax = f32::from_bits(bits);
    let scale = quant::row_scale(absmax)?;
    let s = _mm512_set1_ps(scale);
    let full = row.len() / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY (caller): i + 16 <= full, the length of `row` and `q`.
        let v = load16(row, i);
        store_quantized16(q, i, v, s, zero16(i, v));
    }
    for (c, d) in (full..row.len()).zip(&mut q[full..]) {
        let v = row.get(c);
        *d = if zero(c, v) { 0 } else { quant::quantize_value(v, scale) };
    }
    Some(absmax)
}

/// [`crate::quant::quantize_activation_row_int8_part`] with AVX-512, for rows
/// read as they are: the absmax over the columns not marked in
/// `outlier_columns` (an integer maximum of |x|'s bits, as the scalar rule),
/// the same scale and rounding, the marked columns 0 — identical bytes and
/// absmax. Returns `None` for a subnormal absmax, which the caller then
/// quantizes as usual.
///
/// # Safety
/// The processor must support AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn quantize_activation_row_int8_part_avx512<T: crate::dtype::Element>(
    row: Row<'_, T>,
    outlier_columns: &[bool],
    q: &mut [i8],
) -> Option<f32> {
    assert!(row.len() == q.len() && row.len() == outlier_columns.len());
    // SAFETY: the processor has AVX-512 F/BW/VNNI (this function's contract).
    unsafe {
        let bits = int8_part_absmax_bits_avx512(row, outlier_columns);
        quantize_int8_part_with_bits_avx512(row, outlier_columns, bits, q)
    }
}

/// The bits of the absmax over the columns of `row` not marked in
/// `outlier_columns` (an integer maximum of |x|'s bits, as
/// `quant::int8_part_absmax`; NaN or ±Inf among them give bits >= `INF_BITS`).
///
/// # Safety
/// The processor must support AVX-512 F, BW and VNNI; the slices are as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn int8_part_absmax_bits_avx512<T: crate::dtype::Element>(row: Row<'_, T>, outlier_columns: &[bool]) -> u32 {
    use std::arch::x86_64::*;
    assert_eq!(row.len(), outlier_columns.len());
    let full = row.len() / 16 * 16;
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let mut max = _mm512_setzero_si512();
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= full <= row.len() = outlier_columns.len().
        let (v, marked) = unsafe { (load16(row, i), marked_lanes(outlier_columns, i)) };
        let abs = _mm512_and_si512(_mm512_castps_si512(v), abs_mask);
        max = _mm512_mask_max_epu32(max, !marked, max, abs);
    }
    let mut bits = _mm512_reduce_max_epu32(max);
    for (c, &out) in (full..row.len()).zip(&outlier_columns[full..]) {
        if !out {
            bits = bits.max(row.get(c).abs().to_bits());
        }
    }
    bits
}

/// The 16 flags of `outlier_columns` from `i` as a lane mask (a `bool` is one
/// byte, 0 or 1).
///
/// # Safety
/// The processor must support AVX-512 F and BW; `i + 16 <= outlier_columns.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn marked_lanes(outlier_columns: &[bool], i: usize) -> std::arch::x86_64::__mmask16 {
    use std::arch::x86_64::*;
    // SAFETY: i + 16 <= outlier_columns.len() (the caller's promise).
    let flags = unsafe { _mm_loadu_si128(outlier_columns.as_ptr().add(i).cast()) };
    !(_mm_movemask_epi8(_mm_cmpeq_epi8(flags, _mm_setzero_si128())) as u16)
}

/// The second pass of [`quantize_activation_row_int8_part_avx512`] from the
/// bits of a given absmax (a row-parallel call's MAX over the ranks; NaN: an
/// all-zero row): the marked columns 0, the same bytes as the scalar rule.
/// `None` for a subnormal absmax (the caller quantizes the row as usual).
///
/// # Safety
/// The processor must support AVX-512 F, BW and VNNI; the three slices are as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn quantize_int8_part_with_bits_avx512<T: crate::dtype::Element>(
    row: Row<'_, T>,
    outlier_columns: &[bool],
    bits: u32,
    q: &mut [i8],
) -> Option<f32> {
    assert!(row.len() == q.len() && row.len() == outlier_columns.len());
    // SAFETY: the processor has AVX-512 F/BW (this function's contract); the
    // lanes asked for lie inside `outlier_columns` (as long as `row`).
    unsafe {
        quantize_with_absmax_avx512(row, bits, q, |i, _| marked_lanes(outlier_columns, i), |c, _| outlier_columns[c])
    }
}

/// [`crate::quant::mark_outlier_columns`] for rows read as they are, 16
/// columns at a time: `!(|v| < threshold)` (so NaN too), OR-ed into the
/// flags; a group of 16 with no outlier (nearly all) writes nothing.
///
/// # Safety
/// The processor must support AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // deliberate: a NaN threshold marks nothing, as quant::is_outlier
pub unsafe fn mark_outlier_columns_avx512<T: crate::dtype::Element>(
    row: Row<'_, T>,
    threshold: f32,
    outlier_columns: &mut [bool],
) {
    use std::arch::x86_64::*;
    assert_eq!(row.len(), outlier_columns.len());
    if !(threshold > 0.0) {
        return; // no decomposition: nothing is an outlier (quant::is_outlier)
    }
    let full = row.len() / 16 * 16;
    let t = _mm512_set1_ps(threshold);
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= full <= row.len().
        let abs = _mm512_abs_ps(unsafe { load16(row, i) });
        let outliers = !_mm512_cmp_ps_mask::<_CMP_LT_OQ>(abs, t);
        if outliers != 0 {
            // A bool is one byte, 0 or 1: OR in a 1 for each outlier lane.
            let ones = _mm512_castsi512_si128(_mm512_maskz_set1_epi8(outliers as u64, 1));
            let at = outlier_columns[i..i + 16].as_mut_ptr().cast::<__m128i>();
            // SAFETY: `at` points at 16 flags of `outlier_columns`, each 0 or 1,
            // so the OR of two flags is 0 or 1: a valid bool.
            unsafe { _mm_storeu_si128(at, _mm_or_si128(_mm_loadu_si128(at), ones)) };
        }
    }
    for (is_out, c) in outlier_columns[full..].iter_mut().zip(full..row.len()) {
        *is_out |= crate::quant::is_outlier(row.get(c), threshold);
    }
}

/// [`crate::quant::quantize_weight_row`] for rows read as they are with
/// AVX-512: the same absmax (an integer maximum of |w|'s bits), the same
/// scale, and per element the same float32 product rounded half to even, so
/// the bytes are identical. Returns `None` for a subnormal absmax, which the
/// caller then quantizes as usual.
///
/// # Safety
/// The processor must support AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn quantize_weight_row_avx512<T: crate::dtype::Element>(
    row: Row<'_, T>,
    q: &mut [i8],
) -> Option<std::result::Result<f32, usize>> {
    use crate::quant;
    use std::arch::x86_64::*;
    assert_eq!(row.len(), q.len());
    let full = row.len() / 16 * 16;
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let mut max = _mm512_setzero_si512();
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= full <= row.len().
        max = _mm512_max_epu32(max, _mm512_and_si512(_mm512_castps_si512(unsafe { load16(row, i) }), abs_mask));
    }
    let mut bits = _mm512_reduce_max_epu32(max);
    for c in full..row.len() {
        bits = bits.max(row.get(c).abs().to_bits());
    }
    if bits >= quant::INF_BITS {
        return Some(Err((0..row.len()).position(|c| !row.get(c).is_finite()).unwrap_or(0)));
    }
    let absmax = f32::from_bits(bits);
    let scale = quant::row_scale(absmax)?;
    let s = _mm512_set1_ps(scale);
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= full, the length of `row` and `q`.
        unsafe { store_quantized16(q, i, load16(row, i), s, 0) };
    }
    for (d, c) in q[full..].iter_mut().zip(full..row.len()) {
        *d = quant::quantize_value(row.get(c), scale);
    }
    Some(Ok(absmax))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::dtype::{DType, Element};
    use crate::quant::{self, InputRounding};
    use half::{bf16, f16};

    /// Rows of every kind the quantizers meet: tails of every length, outliers
    /// below and above the threshold, ±Inf, NaN, −0, an all-zero row, a row
    /// whose absmax is subnormal (the f64 fallback).
    fn rows() -> Vec<Vec<f32>> {
        let mut seed = 99u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let mut rows = Vec::new();
        for len in [1, 5, 15, 16, 17, 31, 32, 33, 64, 70, 100] {
            let base: Vec<f32> = (0..len).map(|_| next() * 3.0).collect();
            rows.push(base.clone());
            let mut outliers = base.clone();
            outliers[len / 2] = 40.0;
            outliers[len - 1] = -5.999;
            rows.push(outliers.clone());
            for special in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 6.0, -6.0] {
                let mut r = outliers.clone();
                r[len / 3] = special;
                rows.push(r);
            }
            rows.push(vec![0.0; len]);
            rows.push(base.iter().map(|v| v * 1e-40).collect());
        }
        rows
    }

    /// The AVX-512 epilogue gives, bit for bit, `quant`'s scalar composition
    /// (`dequantize_product`, `add_outlier_product` from 0, `output_value`,
    /// `f16::from_f32`): sums from 0 to ±127²·65536, scales from subnormal to
    /// large, 0 to 7 outlier columns with ±0 products, with and without bias,
    /// tiles of 1 to 5 rows over 1 or 2 panels with gaps between the sums'
    /// rows and the output's (which it leaves as they were).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_epilogue_is_quants_arithmetic_bit_for_bit() {
        if !has_avx512_epilogue() {
            eprintln!("no AVX-512 F / F16C: the epilogue's vector form does not run here");
            return;
        }
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..400 {
            let (rows, panels, no) = (1 + case % 5, 1 + case % 2, case % 8);
            let (row_stride, dst_stride) = (16 * (1 + case % 3), 16 * panels + 8 * (case % 3));
            let big = 127.0 * 127.0 * 65536.0;
            let sums: Vec<Vec<i32>> = (0..panels)
                .map(|_| {
                    (0..rows * row_stride)
                        .map(|i| match (case + i) % 5 {
                            0 => 0,
                            1 => ((next() * 2.0 - 1.0) * big).round() as i32,
                            _ => ((next() * 2.0 - 1.0) * 1e6).round() as i32,
                        })
                        .collect()
                })
                .collect();
            let sa: Vec<f32> =
                (0..rows).map(|r| [1e-40f32, 0.5, 3.0, 1e4][(case + r) % 4] * (1.0 + next() as f32)).collect();
            let sb: Vec<f32> = (0..16 * panels).map(|l| if l == 3 { 0.0 } else { (next() * 0.2) as f32 }).collect();
            let x_outliers: Vec<f32> = (0..rows * no)
                .map(|c| if c % no.max(1) == 1 { -0.0 } else { ((next() - 0.5) * 120.0) as f32 })
                .collect();
            let w_outliers: Vec<f32> = (0..panels * no * 16).map(|_| ((next() - 0.5) * 0.3) as f32).collect();
            let bias: Option<Vec<f32>> =
                (case % 3 != 0).then(|| (0..16 * panels).map(|_| (next() - 0.5) as f32).collect());
            let len = (rows - 1) * dst_stride + 16 * panels;
            let (mut out32, mut out16, mut outb) =
                (vec![f32::NAN; len + 8], vec![f16::NAN; len + 8], vec![bf16::NAN; len + 8]);
            let panel_sums: Vec<&[i32]> = sums.iter().map(Vec::as_slice).collect();
            let tile = || EpilogueTile {
                sums: &panel_sums,
                row_stride,
                rows,
                sa: &sa,
                sb: &sb,
                x_outliers: &x_outliers,
                w_outliers: &w_outliers,
                bias: bias.as_deref(),
            };
            // SAFETY: AVX-512 F and F16C are present (checked); `len` outputs of each dtype.
            unsafe {
                epilogue_tile_avx512(tile(), out32.as_mut_ptr().cast(), dst_stride, DType::F32);
                epilogue_tile_avx512(tile(), out16.as_mut_ptr().cast(), dst_stride, DType::F16);
                epilogue_tile_avx512(tile(), outb.as_mut_ptr().cast(), dst_stride, DType::BF16);
            }
            for (i, ((&o32, &o16), &ob)) in out32.iter().zip(&out16).zip(&outb).enumerate() {
                let (r, c) = (i / dst_stride, i % dst_stride);
                if r >= rows || c >= 16 * panels {
                    assert!(
                        o32.is_nan() && o16.is_nan() && ob.is_nan(),
                        "case {case}: output {i} outside the tile written"
                    );
                    continue;
                }
                let (p, l) = (c / 16, c % 16);
                let int8_part = quant::dequantize_product(sums[p][r * row_stride + l] as f64, sa[r], sb[c]);
                let outlier_part = (0..no).fold(0.0f32, |o, k| {
                    quant::add_outlier_product(o, x_outliers[r * no + k], w_outliers[(p * no + k) * 16 + l])
                });
                let want = quant::output_value(int8_part, outlier_part, bias.as_ref().map_or(0.0, |b| b[c]));
                assert_eq!(o32.to_bits(), want.to_bits(), "case {case} row {r} column {c}: float32");
                assert_eq!(o16.to_bits(), f16::from_f32(want).to_bits(), "case {case} row {r} column {c}: float16");
                assert_eq!(ob.to_bits(), bf16::from_f32(want).to_bits(), "case {case} row {r} column {c}: bfloat16");
            }
        }
    }

    /// `convert_from_f32` into float16 gives `f16::from_f32`'s bits (F16C 8 at
    /// a time, the tail one by one) for every float16 value, the midpoints
    /// between neighbours (ties to even) and the floats just either side,
    /// overflow, subnormals, ±0, ±Inf and NaN; and those bits are the nearest
    /// float16, ties to even (checked in f64, independently of either).
    #[test]
    fn float16_conversion_is_from_f32_bit_for_bit() {
        let mut values = Vec::new();
        for h in 0..=u16::MAX {
            let v = f16::from_bits(h).to_f32();
            let next = f16::from_bits(h.wrapping_add(1)).to_f32();
            values.push(v);
            if v.is_finite() && next.is_finite() && next.abs() > v.abs() {
                let mid = ((v as f64 + next as f64) / 2.0) as f32; // exact: 11-bit significands
                values.extend([mid, f32::from_bits(mid.to_bits() - 1), f32::from_bits(mid.to_bits() + 1)]);
            }
        }
        values.extend([65519.99, 65520.0, 1e6, -1e6, 1e-8, -1e-8, 2.9802322e-8, 2.9802326e-8, f32::MIN_POSITIVE]);
        values.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7fa0_0001), f32::from_bits(0xffc1_2345)]);
        let want: Vec<u16> = values.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
        for len in [0, 1, 7, 8, 9, 16, 17, values.len()] {
            let mut got = vec![f16::ZERO; len];
            convert_from_f32(&values[..len], &mut got);
            let got: Vec<u16> = got.iter().map(|h| h.to_bits()).collect();
            assert_eq!(got[..], want[..len], "length {len}");
        }
        for (&v, &h) in values.iter().zip(&want) {
            if v.is_nan() {
                assert!(f16::from_bits(h).is_nan() && (h >> 15) == (v.to_bits() >> 31) as u16, "{v}");
                continue;
            }
            if f16::from_bits(h).is_infinite() {
                // Overflow: from the midpoint between 65504 and 2^16 on.
                assert!(v.abs() >= 65520.0 && (h >> 15) == (v.to_bits() >> 31) as u16, "{v}: {h:#06x}");
                continue;
            }
            let d = |h: u16| (f16::from_bits(h).to_f64() - v as f64).abs();
            let here = d(h);
            for other in [h.wrapping_sub(1), h.wrapping_add(1), h ^ 0x8000] {
                if f16::from_bits(other).is_nan() {
                    continue;
                }
                assert!(here < d(other) || (here == d(other) && h & 1 == 0), "{v}: {h:#06x} against {other:#06x}");
            }
        }
    }

    /// The kernels on `row` (times `factors` when given: a smoothed row)
    /// against the scalar rules on the row as read (`Row::get`).
    fn check<T: Element>() {
        for (r, values) in rows().into_iter().enumerate() {
            let values: Vec<T> = values.iter().map(|&v| T::from_f32(v)).collect();
            let factors: Vec<f32> = (0..values.len()).map(|c| [0.37, 1.0, 2.5, 1e-3, 7.0][(c + r) % 5]).collect();
            check_row(Row::new(&values, None));
            check_row(Row::new(&values, Some(&factors)));
        }
    }

    fn check_row<T: Element>(fast_row: Row<'_, T>) {
        {
            let row: Vec<f32> = (0..fast_row.len()).map(|c| fast_row.get(c)).collect();
            for threshold in [0.0, 6.0, f32::INFINITY] {
                let (mut q, mut mask) = (vec![0i8; row.len()], vec![false; row.len()]);
                let (mut q_ref, mut mask_ref) = (vec![0i8; row.len()], vec![false; row.len()]);
                // SAFETY: called only where the processor has AVX-512 F/BW/VNNI.
                let fast = unsafe { quantize_activation_row_avx512(fast_row, threshold, &mut q, &mut mask) };
                let want =
                    quant::quantize_activation_row(&row, InputRounding::Exact, threshold, &mut q_ref, &mut mask_ref);
                if let Some(absmax) = fast {
                    assert_eq!(absmax.to_bits(), want.to_bits(), "{:?} t {threshold}", T::DTYPE);
                    assert_eq!(q, q_ref, "{:?} t {threshold}: {:?}", T::DTYPE, &row);
                } else {
                    assert!(!(1.0 / want * 127.0).is_finite(), "no fast result only for a subnormal absmax");
                }
                assert_eq!(mask, mask_ref);
            }
            // The int8-part rule, with the columns bitsandbytes' rule marked
            // at 6 and a few more (a column an outlier only in another row).
            let (mut q, mut mask) = (vec![0i8; row.len()], vec![false; row.len()]);
            quant::quantize_activation_row(&row, InputRounding::Exact, 6.0, &mut q, &mut mask);
            for c in (0..row.len()).step_by(7) {
                mask[c] = true;
            }
            for mask in [mask.clone(), vec![false; row.len()], vec![true; row.len()]] {
                let (mut q, mut q_ref) = (vec![1i8; row.len()], vec![1i8; row.len()]);
                // SAFETY: as above.
                let fast = unsafe { quantize_activation_row_int8_part_avx512(fast_row, &mask, &mut q) };
                let want = quant::quantize_activation_row_int8_part(&row, InputRounding::Exact, &mask, &mut q_ref);
                match fast {
                    Some(absmax) => {
                        assert_eq!(absmax.to_bits(), want.to_bits(), "{:?} int8 part", T::DTYPE);
                        assert_eq!(q, q_ref, "{:?} int8 part", T::DTYPE);
                    }
                    None => assert!(!(1.0 / want * 127.0).is_finite(), "no fast result only for a subnormal absmax"),
                }
            }
            // Marking adds to the flags already set, as the scalar rule does.
            for threshold in [0.0, 6.0, 40.0, f32::INFINITY] {
                for start in [vec![false; row.len()], (0..row.len()).map(|c| c % 5 == 0).collect()] {
                    let (mut fast, mut want) = (start.clone(), start);
                    // SAFETY: as above.
                    unsafe { mark_outlier_columns_avx512(fast_row, threshold, &mut fast) };
                    quant::mark_outlier_columns(&row, InputRounding::Exact, threshold, &mut want);
                    assert_eq!(fast, want, "{:?} marking at {threshold}", T::DTYPE);
                }
            }
            let (mut q, mut q_ref) = (vec![0i8; row.len()], vec![0i8; row.len()]);
            // SAFETY: as above.
            let fast = unsafe { quantize_weight_row_avx512(fast_row, &mut q) };
            let want = quant::quantize_weight_row(&row, InputRounding::Exact, &mut q_ref);
            if let Some(got) = fast {
                assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits));
                if want.is_ok() {
                    assert_eq!(q, q_ref);
                }
            }
        }
    }

    #[test]
    fn the_avx512_quantizers_give_the_bytes_of_the_scalar_ones() {
        if !crate::cpu::CpuPath::Avx512Vnni.is_available() {
            eprintln!("no AVX-512 VNNI on this machine: nothing to compare");
            return;
        }
        check::<f32>();
        check::<f16>();
        check::<bf16>();
    }
}
