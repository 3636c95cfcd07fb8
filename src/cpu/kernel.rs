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

/// [`crate::quant::quantize_weight_row`] for float32 and float16 rows with
/// AVX-512: the same absmax (an integer maximum of |w|'s bits), the same scale,
/// and per element the same float32 product rounded half to even
/// (`vrndscaleps` with round-to-nearest-even, independent of the rounding
/// mode), so the bytes are identical. Returns `None` for a dtype it does not
/// handle or a subnormal absmax, which the caller then quantizes as usual.
///
/// # Safety
/// The processor must support AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn quantize_weight_row_avx512<T: crate::dtype::Element>(
    row: &[T],
    q: &mut [i8],
) -> Option<std::result::Result<f32, usize>> {
    use crate::dtype::DType;
    use crate::quant;
    use std::arch::x86_64::*;
    assert_eq!(row.len(), q.len());
    let full = row.len() / 16 * 16;
    let ptr = row.as_ptr();
    let load = |i: usize| -> __m512 {
        // SAFETY: i + 16 <= full <= row.len(); T is f32 or f16 (checked below),
        // both plain bit patterns of their size.
        unsafe {
            match T::DTYPE {
                DType::F32 => _mm512_loadu_ps(ptr.add(i).cast()),
                _ => _mm512_cvtph_ps(_mm256_loadu_si256(ptr.add(i).cast())),
            }
        }
    };
    if !matches!(T::DTYPE, DType::F32 | DType::F16) {
        return None;
    }
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let mut max = _mm512_setzero_si512();
    for i in (0..full).step_by(16) {
        max = _mm512_max_epu32(max, _mm512_and_si512(_mm512_castps_si512(load(i)), abs_mask));
    }
    let mut bits = _mm512_reduce_max_epu32(max);
    for v in &row[full..] {
        bits = bits.max(v.to_f32().abs().to_bits());
    }
    if bits >= quant::INF_BITS {
        return Some(Err(row.iter().position(|v| !v.to_f32().is_finite()).unwrap_or(0)));
    }
    let absmax = f32::from_bits(bits);
    let scale = quant::row_scale(absmax)?;
    let s = _mm512_set1_ps(scale);
    for i in (0..full).step_by(16) {
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(load(i), s));
        // Integral and within ±127.5: the conversions are exact.
        let bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r));
        // SAFETY: i + 16 <= q.len().
        unsafe { _mm_storeu_si128(q.as_mut_ptr().add(i).cast(), bytes) };
    }
    for (d, v) in q[full..].iter_mut().zip(&row[full..]) {
        *d = quant::quantize_value(v.to_f32(), scale);
    }
    Some(Ok(absmax))
}
