//! Weight handles: quantize, import bitsandbytes' int8 form, export, shape.

use std::ffi::c_void;

use crate::dtype::DType;
use crate::error::Result;
use crate::weight::{check_weight_shape, Int8Extras, Weight, WeightOptions};

use super::{clear_out, data_in, guard, guard_void, llmint8_context, non_null, slice_in, slice_out, write_out};

/// A quantized weight `[out_features, in_features]`: int8 values, one float
/// scale per output row, and an optional bias.
///
/// Opaque and immutable once built. Created by `llmint8_weight_quantize` or
/// `llmint8_weight_from_int8`, owned by the caller, freed with
/// `llmint8_weight_destroy`. A `const llmint8_weight *` may be used by many
/// threads at once. A weight may outlive the context that built it, and is used
/// with contexts of the same backend.
pub struct llmint8_weight {
    pub(crate) inner: Weight,
}

/// Hands a new weight to the caller through `out` (checked non-NULL by `clear_out`).
///
/// # Safety
/// `out` must be non-NULL and writable.
pub(super) unsafe fn hand_out(out: *mut *mut llmint8_weight, inner: Weight) {
    // SAFETY: forwarded to the caller; the caller now owns the box.
    unsafe { out.write_unaligned(Box::into_raw(Box::new(llmint8_weight { inner }))) }
}

/// Reads an optional bias of `len` elements of `dtype_code`; the dtype is not
/// looked at when `bias` is NULL.
///
/// # Safety
/// A non-NULL `bias` must point to `len` readable elements.
unsafe fn optional_bias<'a>(bias: *const c_void, dtype_code: i32, len: usize) -> Result<Option<crate::Data<'a>>> {
    if bias.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded to the caller.
    Ok(Some(unsafe { data_in(bias, DType::from_code(dtype_code)?, len, "bias") }?))
}

/// Quantizes a 16/32-bit weight: row-major `w` `[out_features, in_features]` of
/// `w_dtype` (`LLMINT8_F32`, `_F16` or `_BF16`), each row to int8 by its absmax
/// (bitsandbytes' `CB`, `SCB`). `bias` is NULL or `[out_features]` elements of
/// `bias_dtype` (ignored when `bias` is NULL).
///
/// Memory: `w` and `bias` are host memory, read during the call only, never
/// kept; the weight holds `out·in` bytes of int8 plus `4·out` of scales and bias.
/// On a CUDA context the weight is quantized on the host (the bytes the device
/// kernel gives on the emulated GPU) and its int8 values, scales and bias are copied to the
/// device (rows padded to 16 bytes); the call returns when they are there.
/// On success writes a new weight to `*out`; the caller owns it and must
/// eventually pass it to `llmint8_weight_destroy`. On failure writes NULL to
/// `*out` (when `out` is not NULL) and returns:
/// - LLMINT8_ERR_INVALID_ARGUMENT: `ctx`, `w` or `out` NULL, an unknown dtype, a
///   pointer not aligned to its element size, a NaN/Inf in `w` or `bias` (the
///   message names the row);
/// - LLMINT8_ERR_SHAPE: a zero size, or `out_features · in_features` overflows;
/// - LLMINT8_ERR_OUT_OF_MEMORY: the int8 copy cannot be allocated.
///
/// Thread safety: may be called concurrently on the same context.
///
/// # Safety
/// `w` must hold `out_features · in_features` readable elements of `w_dtype`,
/// `bias` NULL or `out_features` elements of `bias_dtype`, `ctx` NULL or live,
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_quantize(
    ctx: *mut llmint8_context,
    w: *const c_void,
    w_dtype: i32,
    out_features: usize,
    in_features: usize,
    bias: *const c_void,
    bias_dtype: i32,
    out: *mut *mut llmint8_weight,
) -> i32 {
    // SAFETY: as the caller promises; no kept columns.
    unsafe {
        llmint8_weight_quantize_keep(
            ctx,
            w,
            w_dtype,
            out_features,
            in_features,
            bias,
            bias_dtype,
            std::ptr::null(),
            0,
            out,
        )
    }
}

/// As `llmint8_weight_quantize`, the weight also keeping the columns
/// `keep_columns[0..n_keep]` of `w` in `w_dtype` — the paper's Figure 2: a
/// matmul's outlier column that is kept is multiplied by these 16/32-bit
/// values, every other outlier column by the dequantized int8 one as
/// bitsandbytes does. Which columns to keep is the engine's calibration (the
/// outlier columns a layer saw on a calibration text; see
/// examples/cpp/llama). `keep_columns` may be in any order; NULL is fine when
/// `n_keep` is 0 (then the call is `llmint8_weight_quantize`).
///
/// Memory: as `llmint8_weight_quantize`, plus `n_keep · out_features`
/// elements of `w_dtype` (on a CUDA context in device memory, with a table of
/// `4 · in_features` bytes, and a host copy that export reads;
/// `llmint8_weight_memory` counts them);
/// `keep_columns` is host memory, read during the call only.
/// Ownership and `*out` as for `llmint8_weight_quantize`. Returns:
/// - LLMINT8_ERR_INVALID_ARGUMENT: as `llmint8_weight_quantize`; `keep_columns`
///   NULL with `n_keep` > 0, or misaligned; a column >= `in_features`, or one
///   listed twice (the message names it);
/// - LLMINT8_ERR_SHAPE, LLMINT8_ERR_OUT_OF_MEMORY: as `llmint8_weight_quantize`.
///
/// Thread safety: may be called concurrently on the same context.
///
/// # Safety
/// As `llmint8_weight_quantize`; `keep_columns` NULL or `n_keep` readable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_quantize_keep(
    ctx: *mut llmint8_context,
    w: *const c_void,
    w_dtype: i32,
    out_features: usize,
    in_features: usize,
    bias: *const c_void,
    bias_dtype: i32,
    keep_columns: *const u32,
    n_keep: usize,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let w_dtype = DType::from_code(w_dtype)?;
            let len = check_weight_shape(out_features, in_features)?;
            let w = data_in(w, w_dtype, len, "w")?;
            let bias = optional_bias(bias, bias_dtype, out_features)?;
            let keep = slice_in(keep_columns, n_keep, "keep_columns")?;
            let inner = ctx.inner.quantize_weight_keep(w, out_features, in_features, bias, keep)?;
            hand_out(out, inner);
        }
        Ok(())
    })
}

/// One rank's shard of a row-parallel layer (in_features split across the
/// ranks of a tensor-parallel world; o_proj, down_proj): input columns
/// `[col_begin, col_end)` of the row-major 16/32-bit weight `w`
/// `[out_features, in_features]` (the whole weight; host memory), as a weight
/// of `col_end - col_begin` in_features. Each row is quantized with the
/// absmax of the *whole* row, so the shard's int8 values and scales are
/// those columns of `llmint8_weight_quantize`'s and the ranks' partial
/// products add up (`llmint8_matmul_row_parallel`). `keep_columns` lists
/// columns of the whole weight (as `llmint8_weight_quantize_keep`); those
/// inside the shard are kept. Give `bias` to one rank only (NULL elsewhere):
/// the engine's SUM of the partials adds it once.
///
/// Ownership, `*out`, memory and thread safety as for
/// `llmint8_weight_quantize_keep`. Returns its errors, and
/// LLMINT8_ERR_SHAPE when `col_begin >= col_end` or `col_end > in_features`.
/// A NaN/Inf anywhere in `w` is refused, also outside the shard (every row
/// is read whole for its scale).
///
/// # Safety
/// As `llmint8_weight_quantize_keep`.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_quantize_columns(
    ctx: *mut llmint8_context,
    w: *const c_void,
    w_dtype: i32,
    out_features: usize,
    in_features: usize,
    col_begin: usize,
    col_end: usize,
    bias: *const c_void,
    bias_dtype: i32,
    keep_columns: *const u32,
    n_keep: usize,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let w_dtype = DType::from_code(w_dtype)?;
            let len = check_weight_shape(out_features, in_features)?;
            let w = data_in(w, w_dtype, len, "w")?;
            let bias = optional_bias(bias, bias_dtype, out_features)?;
            let keep = slice_in(keep_columns, n_keep, "keep_columns")?;
            let columns = col_begin..col_end;
            let inner = ctx.inner.quantize_weight_columns(w, out_features, in_features, columns, bias, keep)?;
            hand_out(out, inner);
        }
        Ok(())
    })
}

/// Quantizes a 16/32-bit weight with a smoothing vector (SmoothQuant's `s`,
/// Xiao et al., 2023): the weight stored is `W·diag(s)`, quantized row by row
/// as usual, and every matmul on it multiplies each activation column by
/// `1/s_c` as it quantizes the activations — before the outlier test, the row
/// scale and the rounding, so the threshold applies to the smoothed values —
/// and uses the smoothed values in the outlier product. `X·diag(1/s)` times
/// `(W·diag(s))ᵀ` is `X·Wᵀ`: smoothing moves range from activation columns
/// into the weight without changing the product, and costs the int8 GEMM
/// nothing. Weights that share an input (`llmint8_matmul_shared_input`) must
/// share one vector.
///
/// `smoothing`: host memory, `in_features` floats (the whole weight's), each
/// finite and > 0; copied. `col_begin`, `col_end`: the input columns to keep —
/// `0, in_features` for the whole weight, a narrower range for one rank's
/// row-parallel shard (as `llmint8_weight_quantize_columns`; the shard keeps
/// its columns' factors). `keep_columns` (NULL when `n_keep` is 0) as
/// `llmint8_weight_quantize_keep`: the kept columns are kept as the float32
/// values of `W·diag(s)`. `w`, `bias` as `llmint8_weight_quantize`.
///
/// Ownership, `*out`, memory and thread safety as for
/// `llmint8_weight_quantize_keep`. Returns its errors and
/// `llmint8_weight_quantize_columns`', and LLMINT8_ERR_INVALID_ARGUMENT for a
/// NULL `smoothing` or a factor that is NaN, infinite, zero or negative (the
/// message names it), or a smoothed weight value that overflows float32.
///
/// # Safety
/// As `llmint8_weight_quantize_keep`; `smoothing` NULL or `in_features`
/// readable floats.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_quantize_smoothed(
    ctx: *mut llmint8_context,
    w: *const c_void,
    w_dtype: i32,
    out_features: usize,
    in_features: usize,
    smoothing: *const f32,
    col_begin: usize,
    col_end: usize,
    bias: *const c_void,
    bias_dtype: i32,
    keep_columns: *const u32,
    n_keep: usize,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let w_dtype = DType::from_code(w_dtype)?;
            let len = check_weight_shape(out_features, in_features)?;
            let w = data_in(w, w_dtype, len, "w")?;
            let smoothing = slice_in(smoothing, in_features, "smoothing")?;
            let bias = optional_bias(bias, bias_dtype, out_features)?;
            let keep = slice_in(keep_columns, n_keep, "keep_columns")?;
            let columns = (col_begin, col_end) != (0, in_features);
            let options =
                WeightOptions { keep, smoothing: Some(smoothing), columns: columns.then_some(col_begin..col_end) };
            let inner = ctx.inner.quantize_weight_with(w, out_features, in_features, bias, &options)?;
            hand_out(out, inner);
        }
        Ok(())
    })
}

/// Quantizes a 16/32-bit weight that is already in device memory — how an
/// engine holding its float16 weights on the GPU hands them over: `w` a device
/// pointer (of the context's device) to row-major `[out_features, in_features]`
/// of `w_dtype`, quantized on the device; `bias` NULL or *host* memory of
/// `out_features` elements of `bias_dtype`. Otherwise as `llmint8_weight_quantize`.
///
/// Synchronous: waits for the quantization on the context's stream (it reports
/// a non-finite value by row). `w` is not kept. No smoothing vector here: a
/// smoothed weight is quantized from host memory
/// (`llmint8_weight_quantize_smoothed`) or loaded from a checkpoint.
/// Returns LLMINT8_ERR_UNSUPPORTED on a CPU context, LLMINT8_ERR_INVALID_ARGUMENT
/// when `w` is not device memory of the context's device, and the errors of
/// `llmint8_weight_quantize` (LLMINT8_ERR_DEVICE when the device fails).
/// Thread safety: may be called concurrently on the same context.
///
/// # Safety
/// `w` must be device memory holding `out_features · in_features` elements of
/// `w_dtype`; `bias` NULL or host memory of `out_features` elements; `ctx` NULL
/// or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_quantize_device(
    ctx: *mut llmint8_context,
    w: *const c_void,
    w_dtype: i32,
    out_features: usize,
    in_features: usize,
    bias: *const c_void,
    bias_dtype: i32,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let w_dtype = DType::from_code(w_dtype)?;
            check_weight_shape(out_features, in_features)?;
            let bias = optional_bias(bias, bias_dtype, out_features)?;
            let inner = ctx.inner.quantize_weight_on_device(w, w_dtype, out_features, in_features, bias)?;
            hand_out(out, inner);
        }
        Ok(())
    })
}

/// Builds a weight from an already-quantized one as bitsandbytes stores it:
/// `cb` row-major int8 `[out_features, in_features]` (its `CB`, the checkpoint's
/// `weight`) and `scb` float `[out_features]` (its `SCB`, the row absmax). Both are
/// copied; the caller keeps its buffers. `bias` as in `llmint8_weight_quantize`.
///
/// On success writes a new weight to `*out`, owned by the caller (free with
/// `llmint8_weight_destroy`). On failure writes NULL to `*out` (when not NULL) and
/// returns:
/// - LLMINT8_ERR_INVALID_ARGUMENT: a NULL `ctx`, `cb`, `scb` or `out`; an unknown
///   `bias_dtype`; a misaligned pointer; a scale that is negative or not finite,
///   or a non-finite bias (the message names the row);
/// - LLMINT8_ERR_SHAPE: a zero size or an overflowing product;
/// - LLMINT8_ERR_OUT_OF_MEMORY.
///
/// Memory: host memory, read during the call only (on a CUDA context, copied
/// to the device before the call returns).
/// Thread safety: may be called concurrently on the same context.
///
/// # Safety
/// `cb` must hold `out_features · in_features` readable bytes, `scb`
/// `out_features` floats, `bias` NULL or `out_features` elements of `bias_dtype`.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_from_int8(
    ctx: *mut llmint8_context,
    cb: *const i8,
    scb: *const f32,
    out_features: usize,
    in_features: usize,
    bias: *const c_void,
    bias_dtype: i32,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let len = check_weight_shape(out_features, in_features)?;
            let cb = slice_in(cb, len, "cb")?;
            let scb = slice_in(scb, out_features, "scb")?;
            let bias = optional_bias(bias, bias_dtype, out_features)?;
            let inner = ctx.inner.weight_from_int8(cb, scb, out_features, in_features, bias)?;
            hand_out(out, inner);
        }
        Ok(())
    })
}

/// `llmint8_weight_from_int8` of a smoothed weight: `cb` and `scb` are those
/// of `W·diag(s)` (as `llmint8_weight_quantize_smoothed` makes them and
/// `llmint8_weight_smoothing` reports `s`), and `smoothing` is `s`
/// (`in_features` floats, host memory, copied), which every matmul on the
/// weight divides the activations by. Ownership, `*out`, memory and thread
/// safety as `llmint8_weight_from_int8`; its errors, and
/// LLMINT8_ERR_INVALID_ARGUMENT for a NULL `smoothing` or a factor that is
/// not finite and > 0.
///
/// # Safety
/// As `llmint8_weight_from_int8`; `smoothing` NULL or `in_features` readable
/// floats.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_from_int8_smoothed(
    ctx: *mut llmint8_context,
    cb: *const i8,
    scb: *const f32,
    out_features: usize,
    in_features: usize,
    smoothing: *const f32,
    bias: *const c_void,
    bias_dtype: i32,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let len = check_weight_shape(out_features, in_features)?;
            let cb = slice_in(cb, len, "cb")?;
            let scb = slice_in(scb, out_features, "scb")?;
            let smoothing = slice_in(smoothing, in_features, "smoothing")?;
            let bias = optional_bias(bias, bias_dtype, out_features)?;
            let extras = Int8Extras { smoothing: Some(smoothing), ..Default::default() };
            let inner = ctx.inner.weight_from_int8_with(cb, scb, out_features, in_features, bias, &extras)?;
            hand_out(out, inner);
        }
        Ok(())
    })
}

/// Reports the weight's smoothing: writes 1 to `*smoothed` and copies `s`
/// (`in_features` floats; a shard's: its columns') into `smoothing` when the
/// weight was made with a smoothing vector, else writes 0 and leaves
/// `smoothing` alone. `smoothing` may be NULL to ask only whether; else it is
/// the caller's host buffer of `len` floats, and `len` must be `in_features`.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when `w` or `smoothed` is NULL or
/// `smoothing` is misaligned, LLMINT8_ERR_SHAPE when `smoothing` is given
/// with a `len` other than `in_features` (nothing written then).
/// Thread safety: may be called concurrently with any call that uses `w`.
///
/// # Safety
/// `w` NULL or live; `smoothed` NULL or writable; `smoothing` NULL or
/// writable for `len` floats.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_smoothing(
    w: *const llmint8_weight,
    smoothing: *mut f32,
    len: usize,
    smoothed: *mut i32,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let w = &non_null(w, "w")?.inner;
            if smoothed.is_null() {
                return Err(crate::Error::invalid("smoothed is NULL"));
            }
            if !smoothing.is_null() {
                crate::error::check_len("smoothing buffer", len, w.in_features())?;
                super::check_region(smoothing, len, "smoothing")?;
            }
            let factors = w.smoothing();
            if let (Some(factors), false) = (factors, smoothing.is_null()) {
                slice_out(smoothing, len, "smoothing")?.copy_from_slice(factors);
            }
            write_out(smoothed, i32::from(factors.is_some()), "smoothed")
        }
    })
}

/// Copies the weight out in bitsandbytes' layout: `cb` row-major int8
/// `[out_features, in_features]`, `scb` float `[out_features]`. The two
/// buffers are the caller's, in host memory, and must not overlap.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL or `scb` is not
/// 4-byte aligned; nothing is written then.
/// Thread safety: may be called concurrently with any call that uses `w`.
///
/// # Safety
/// `cb` must be writable for `out_features · in_features` bytes and `scb` for
/// `out_features` floats.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_export(w: *const llmint8_weight, cb: *mut i8, scb: *mut f32) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let w = &non_null(w, "w")?.inner;
            let (n, k) = (w.out_features(), w.in_features());
            super::check_region(cb, n * k, "cb")?;
            super::check_region(scb, n, "scb")?;
            super::check_disjoint(&[("cb", cb.cast_const().cast(), n * k), ("scb", scb.cast_const().cast(), n * 4)])?;
            let cb = slice_out(cb, n * k, "cb")?;
            let scb = slice_out(scb, n, "scb")?;
            w.export(cb, scb)
        }
    })
}

/// Writes the weight's shape to `*out_features` and `*in_features`.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL (nothing written).
/// Thread safety: may be called concurrently with any call that uses `w`.
///
/// # Safety
/// `w` must be NULL or live; the out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_shape(
    w: *const llmint8_weight,
    out_features: *mut usize,
    in_features: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let w = &non_null(w, "w")?.inner;
            if in_features.is_null() {
                return Err(crate::Error::invalid("in_features is NULL"));
            }
            write_out(out_features, w.out_features(), "out_features")?;
            write_out(in_features, w.in_features(), "in_features")
        }
    })
}

/// Writes the bytes `w` holds to `*host_bytes` (host memory: a CPU weight's
/// packed values, scales, bias, kept columns and smoothing vector — `s` and
/// `1/s`, 8 bytes per input column; a CUDA weight's host copy of its scales,
/// bias, kept columns and smoothing vector) and `*device_bytes` (device
/// memory: a CUDA weight's values, scales, bias, kept columns and `1/s`; 0 on
/// the CPU) — what an engine budgets for the layer. Buffers a matmul
/// allocates while it runs are not counted.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL (nothing written).
/// Thread safety: may be called concurrently with any call that uses `w`.
///
/// # Safety
/// `w` must be NULL or live; the out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_memory(
    w: *const llmint8_weight,
    host_bytes: *mut u64,
    device_bytes: *mut u64,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let w = &non_null(w, "w")?.inner;
            if device_bytes.is_null() {
                return Err(crate::Error::invalid("device_bytes is NULL"));
            }
            let memory = w.memory();
            write_out(host_bytes, memory.host_bytes as u64, "host_bytes")?;
            write_out(device_bytes, memory.device_bytes as u64, "device_bytes")
        }
    })
}

/// Destroys a weight. NULL is fine (does nothing). No other call may use `w`
/// during or after this one; destroying the same weight twice is not allowed.
///
/// # Safety
/// `w` must be NULL or a weight from this library not yet destroyed.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_destroy(w: *mut llmint8_weight) {
    if w.is_null() {
        return;
    }
    // SAFETY: w came from Box::into_raw in a weight constructor and the caller
    // gives up every use of it.
    guard_void(|| drop(unsafe { Box::from_raw(w) }));
}
