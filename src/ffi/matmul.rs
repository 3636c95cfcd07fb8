//! The LLM.int8() matmul and the row quantizer.

use std::borrow::Cow;
use std::ffi::c_void;

use crate::context::{DeviceData, Input, Operation, Output, Request};
use crate::dtype::DType;
use crate::error::{checked_len, Result};

use super::{
    check_data_region, check_disjoint, check_region, data_in, data_out, guard, llmint8_context, llmint8_weight,
    non_null, slice_out,
};

/// What `llmint8_matmul` reports besides its output.
///
/// 64 bytes: the reserved words keep room for later fields without changing the
/// size; the library sets them to 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct llmint8_matmul_stats {
    /// Feature columns of `x` that held an outlier and went through the
    /// floating-point product (0 when the threshold is 0).
    pub outlier_columns: u64,
    pub reserved: [u64; 7],
}

/// `y = x · Wᵀ + bias` with LLM.int8(): `x` row-major `[rows, in_features]` of
/// `x_dtype`, `y` row-major `[rows, out_features]` of `y_dtype` (any of
/// `LLMINT8_F32`, `_F16`, `_BF16`, independently).
///
/// Each row of `x` is quantized by its absmax; columns of `x` holding a value with
/// |x| >= `threshold` (and any NaN/Inf) are multiplied in floating point with the
/// dequantized weight columns, the rest in int8 with exact integer accumulation.
/// `threshold` 0 turns that decomposition off (a row holding NaN/Inf then gives a
/// NaN output row); `LLMINT8_DEFAULT_THRESHOLD` (6.0) is the paper's.
/// `rows` 0 is a valid call that writes nothing (`x`, `y` may then be NULL).
/// `stats` is NULL or receives the outlier column count.
///
/// Memory: on a CPU context `x` and `y` are host memory, and the call returns
/// with `y` written. On a CUDA context `x` and `y` are device memory of the
/// context's device, and the call only queues the work on the context's
/// stream (`llmint8_context_set_stream`) and returns: `x` must stay unchanged
/// and `y` unread until the stream reaches that point. A non-NULL `stats` makes
/// the call wait for the stream (the outlier count is computed on the device);
/// pass NULL to keep it asynchronous. `llmint8_matmul_host` takes host memory
/// on any context. `x` and `y` must not overlap. Nothing is kept after the call.
/// Returns LLMINT8_OK, or, with `y` unspecified:
/// - LLMINT8_ERR_INVALID_ARGUMENT: NULL `ctx`, `w`, `x` or `y` (with rows > 0),
///   an unknown dtype, a misaligned or overlapping buffer, a negative or NaN
///   threshold, or a weight from a context of another backend;
/// - LLMINT8_ERR_SHAPE: `rows · in_features` or `rows · out_features` overflows;
/// - LLMINT8_ERR_OUT_OF_MEMORY: scratch space cannot be allocated;
/// - LLMINT8_ERR_DEVICE: (CUDA) a launch or cuBLASLt call failed.
///
/// On a CUDA context, `x` or `y` not in the context's device memory is an
/// invalid argument.
///
/// Thread safety: may be called concurrently on the same context and weight;
/// the result is bit-identical whatever the number of threads. The CUDA
/// backend is built to give the CPU backend's bits; that is tested on an
/// emulated GPU, not yet on a GPU (docs/CUDA.md).
///
/// # Safety
/// `x` must hold `rows · in_features` readable elements, `y` be writable for
/// `rows · out_features`, `ctx` and `w` be NULL or live, `stats` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_matmul(
    ctx: *mut llmint8_context,
    w: *const llmint8_weight,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    y: *mut c_void,
    y_dtype: i32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { matmul(Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: false }, w, y, y_dtype) })
}

/// `llmint8_matmul` on host memory, on a context of any backend: on a CUDA
/// context `x` is copied to the device, the product computed there, `y`
/// copied back, and the call returns when `y` is written (the same values as
/// on the CPU). For bindings that hold host arrays; engines with device
/// buffers call `llmint8_matmul`. Arguments, errors and thread safety as in
/// `llmint8_matmul`, with `x` and `y` host memory.
///
/// # Safety
/// As `llmint8_matmul`, with `x` and `y` host memory.
#[no_mangle]
pub unsafe extern "C" fn llmint8_matmul_host(
    ctx: *mut llmint8_context,
    w: *const llmint8_weight,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    y: *mut c_void,
    y_dtype: i32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { matmul(Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: true }, w, y, y_dtype) })
}

/// `y[i] = x · W[i]ᵀ + bias[i]` for `n_weights` weights that share their
/// input — q/k/v, gate/up of a Llama layer: `x` is quantized and its outlier
/// columns found once, then each weight's int8 product and epilogue run.
/// Every `y[i]` is bit for bit what `llmint8_matmul` writes for `w[i]` (the
/// same threshold, settings and dtypes). `w` points to `n_weights` weight
/// handles, all with the same `in_features` (the columns of `x`), and `y` to
/// `n_weights` outputs, `y[i]` row-major `[rows, out_features of w[i]]` of
/// `y_dtype`. `rows` 0 writes nothing. `stats` (NULL or not) as in
/// `llmint8_matmul`: the outlier count is the input's, one for all weights.
///
/// Memory: as `llmint8_matmul` — host memory on a CPU context; on a CUDA
/// context `x` and every `y[i]` are device memory of the context's device and
/// the call only queues the work (the launches before the GEMM once, then each
/// weight's); `llmint8_matmul_shared_input_host` takes host memory on any
/// context. The arrays `w` and `y` are host memory, read during the call only.
/// No two of `x`, the `y[i]` and `stats` may overlap.
/// Returns LLMINT8_OK, or, with every `y[i]` unspecified:
/// - LLMINT8_ERR_INVALID_ARGUMENT: NULL `ctx`, `w`, `y`, any `w[i]`, or `x` or
///   any `y[i]` with rows > 0; `n_weights` 0; an unknown dtype; a misaligned
///   or overlapping buffer; a negative or NaN threshold; a weight of another
///   context's backend or device;
/// - LLMINT8_ERR_SHAPE: the weights' `in_features` differ, or a size overflows;
/// - LLMINT8_ERR_OUT_OF_MEMORY, LLMINT8_ERR_DEVICE: as `llmint8_matmul`.
///
/// Thread safety: as `llmint8_matmul`.
///
/// # Safety
/// `w` and `y` NULL or readable for `n_weights` pointers; `x` readable for
/// `rows · in_features` elements, each `y[i]` writable for
/// `rows · out_features` of its weight; handles NULL or live; `stats` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_matmul_shared_input(
    ctx: *mut llmint8_context,
    w: *const *const llmint8_weight,
    n_weights: usize,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    y: *const *mut c_void,
    y_dtype: i32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    let common = Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: false };
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { shared_input(common, w, n_weights, y, y_dtype) })
}

/// `llmint8_matmul_shared_input` on host memory, on a context of any backend
/// (on a CUDA context `x` is copied up once, every `y[i]` down, and the call
/// waits): for bindings that hold host arrays. Arguments, errors and thread
/// safety as in `llmint8_matmul_shared_input`, with `x` and `y[i]` host memory.
///
/// # Safety
/// As `llmint8_matmul_shared_input`, with `x` and `y[i]` host memory.
#[no_mangle]
pub unsafe extern "C" fn llmint8_matmul_shared_input_host(
    ctx: *mut llmint8_context,
    w: *const *const llmint8_weight,
    n_weights: usize,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    y: *const *mut c_void,
    y_dtype: i32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    let common = Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: true };
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { shared_input(common, w, n_weights, y, y_dtype) })
}

/// Stage 1 of a row-parallel matmul (in_features split across the ranks of a
/// tensor-parallel world; o_proj, down_proj): the statistics of this rank's
/// slice `x` `[rows, in_features of w]` (`x_dtype`) of the activations, for
/// its shard `w` (`llmint8_weight_load_columns`, `_quantize_columns`).
/// `row_absmax[r]` (float32, `rows` entries) receives the absmax of row r's
/// int8 part over the slice, under the context's row scale rule, as the
/// unsharded matmul computes it; `+Inf` for a row holding a NaN/Inf that the
/// int8 part would use (threshold 0), which a MAX keeps. The engine then
/// all-reduces `row_absmax` with MAX over the ranks (`ncclAllReduce(...,
/// ncclFloat32, ncclMax, ...)`) and passes it to `llmint8_matmul_row_parallel`.
/// Outlier columns need no collective: a column's flag depends on that column
/// alone, which one rank holds. `stats` NULL or receives the slice's outlier
/// column count. `rows` 0 writes nothing.
///
/// Memory: as `llmint8_matmul` — host memory on a CPU context; on a CUDA
/// context `x` and `row_absmax` are device memory of the context's device and
/// the call only queues the work on the context's stream (a non-NULL `stats`
/// waits). `llmint8_row_parallel_statistics_host` takes host memory on any
/// context. `x`, `row_absmax` and `stats` must not overlap.
/// Returns LLMINT8_OK, or, with `row_absmax` unspecified, the errors of
/// `llmint8_matmul` (NULL `row_absmax` with rows > 0 is an invalid argument).
///
/// Thread safety: as `llmint8_matmul`.
///
/// # Safety
/// `x` readable for `rows · in_features` elements, `row_absmax` writable for
/// `rows` floats; `ctx` and `w` NULL or live; `stats` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_row_parallel_statistics(
    ctx: *mut llmint8_context,
    w: *const llmint8_weight,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    row_absmax: *mut f32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    let common = Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: false };
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { statistics(common, w, row_absmax) })
}

/// `llmint8_row_parallel_statistics` on host memory, on a context of any
/// backend (a CUDA context copies `x` up and `row_absmax` down, and waits).
/// Arguments, errors and thread safety as in `llmint8_row_parallel_statistics`.
///
/// # Safety
/// As `llmint8_row_parallel_statistics`, with `x` and `row_absmax` host memory.
#[no_mangle]
pub unsafe extern "C" fn llmint8_row_parallel_statistics_host(
    ctx: *mut llmint8_context,
    w: *const llmint8_weight,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    row_absmax: *mut f32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    let common = Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: true };
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { statistics(common, w, row_absmax) })
}

/// Stage 2 of a row-parallel matmul: this rank's partial output `y`
/// `[rows, out_features]` (`y_dtype`) of its shard `w` and slice `x`, each
/// row of `x` quantized with `row_absmax[r]` — the MAX over the ranks of
/// `llmint8_row_parallel_statistics`. The engine all-reduces the partials
/// with SUM (`ncclAllReduce(..., ncclSum, ...)`); the sum is the unsharded
/// layer's output up to float32 rounding: with `m` outlier columns and `W`
/// ranks, |Σ y − y_unsharded| <= γ(2m + W + 4) · S, γ(n) = n·2⁻²⁴/(1 − n·2⁻²⁴),
/// S = Σ_c (|x_c| + a/254)·|ŵ_c| + |bias| (a: the row's absmax, ŵ: the
/// dequantized or kept weight) — for float32 partials (`LLMINT8_F32`; a
/// 16-bit `y` rounds each partial once more). A world of one rank gives
/// `llmint8_matmul`'s bits. `stats` as in `llmint8_matmul` (the slice's count).
///
/// Memory: as `llmint8_matmul`, with `row_absmax` (`rows` float32) in the same
/// memory as `x`. On a CUDA context `row_absmax` is read on the device: a row
/// whose entry is NaN, negative or below this slice's own absmax gets NaN in
/// its whole output row, and a non-NULL `stats` (which waits) turns that into
/// LLMINT8_ERR_INVALID_ARGUMENT naming the row. On host memory (CPU, and
/// `llmint8_matmul_row_parallel_host`) such an entry is always refused with
/// that error. `x`, `y`, `row_absmax` and `stats` must not overlap.
/// Returns LLMINT8_OK or, with `y` unspecified, the errors of `llmint8_matmul`.
///
/// Thread safety: as `llmint8_matmul`.
///
/// # Safety
/// As `llmint8_matmul`, and `row_absmax` readable for `rows` floats.
#[no_mangle]
pub unsafe extern "C" fn llmint8_matmul_row_parallel(
    ctx: *mut llmint8_context,
    w: *const llmint8_weight,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    row_absmax: *const f32,
    y: *mut c_void,
    y_dtype: i32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    let common = Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: false };
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { row_parallel(common, w, row_absmax, y, y_dtype) })
}

/// `llmint8_matmul_row_parallel` on host memory, on a context of any backend
/// (a CUDA context copies `x` and `row_absmax` up and `y` down, and waits).
/// Arguments, errors and thread safety as in `llmint8_matmul_row_parallel`.
///
/// # Safety
/// As `llmint8_matmul_row_parallel`, with `x`, `row_absmax` and `y` host memory.
#[no_mangle]
pub unsafe extern "C" fn llmint8_matmul_row_parallel_host(
    ctx: *mut llmint8_context,
    w: *const llmint8_weight,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    row_absmax: *const f32,
    y: *mut c_void,
    y_dtype: i32,
    stats: *mut llmint8_matmul_stats,
) -> i32 {
    let common = Common { ctx, x, x_dtype, rows, threshold, stats, host_memory: true };
    // SAFETY: the pointers are as the caller promises in `# Safety`.
    guard(|| unsafe { row_parallel(common, w, row_absmax, y, y_dtype) })
}

/// The arguments every matmul entry point shares, as the caller gave them,
/// and whether its buffers are host memory (`_host`) or the context's.
struct Common {
    ctx: *mut llmint8_context,
    x: *const c_void,
    x_dtype: i32,
    rows: usize,
    threshold: f32,
    stats: *mut llmint8_matmul_stats,
    host_memory: bool,
}

impl Common {
    /// The context, the buffers' memory and `x`'s dtype and element count
    /// for weights of `in_features`, checked; `x` declared.
    ///
    /// # Safety
    /// `ctx` is NULL or live.
    unsafe fn open<'a>(&self, in_features: usize) -> Result<(&'a llmint8_context, Buffers, DType, usize)> {
        // SAFETY: as the caller promises.
        let ctx = unsafe { non_null(self.ctx, "ctx")? };
        let x_dtype = DType::from_code(self.x_dtype)?;
        let x_len = checked_len(self.rows, in_features, "x")?;
        let mut buffers = Buffers::new(ctx, self.host_memory);
        buffers.declare("x", self.x, x_dtype, x_len)?;
        Ok((ctx, buffers, x_dtype, x_len))
    }

    /// Runs `operation` on `x` and writes the stats.
    ///
    /// # Safety
    /// `stats` is NULL or writable.
    unsafe fn run(&self, ctx: &llmint8_context, x: Input<'_>, operation: Operation<'_>) -> Result<()> {
        let (rows, threshold, wait_for_stats) = (self.rows, self.threshold, !self.stats.is_null());
        let result = ctx.inner.run(Request { x, rows, threshold, operation, wait_for_stats })?;
        // SAFETY: as the caller promises.
        unsafe { write_stats(self.stats, result) };
        Ok(())
    }
}

/// A C call's buffers on their way into a [`Request`]. In host memory each
/// is checked (NULL with elements, alignment, size), then all of them and
/// `stats` for overlap, before any slice exists; in device memory they pass
/// on as addresses, which the context checks.
struct Buffers {
    host: bool,
    regions: Vec<(Cow<'static, str>, *const c_void, usize)>,
}

impl Buffers {
    /// The one place a C call's memory space is decided: host memory when the
    /// entry point takes it (`_host`), else the context's — device memory on
    /// a CUDA context.
    fn new(ctx: &llmint8_context, host_memory: bool) -> Buffers {
        let host = host_memory || ctx.inner.location() == crate::Location::Cpu;
        Buffers { host, regions: Vec::new() }
    }

    fn declare(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        ptr: *const c_void,
        dtype: DType,
        len: usize,
    ) -> Result<()> {
        if self.host {
            let name = name.into();
            check_data_region(ptr, dtype, len, &name)?;
            self.regions.push((name, ptr, len * dtype.size()));
        }
        Ok(())
    }

    /// Refuses overlapping buffers (with `stats`, when given).
    fn check_disjoint(mut self, stats: *mut llmint8_matmul_stats) -> Result<DeclaredBuffers> {
        let stats_bytes = if stats.is_null() { 0 } else { std::mem::size_of::<llmint8_matmul_stats>() };
        self.regions.push(("stats".into(), stats.cast_const().cast(), stats_bytes));
        check_disjoint(&self.regions)?;
        Ok(DeclaredBuffers { host: self.host })
    }
}

/// Buffers checked by [`Buffers::check_disjoint`]: now made into the
/// request's inputs and outputs.
struct DeclaredBuffers {
    host: bool,
}

impl DeclaredBuffers {
    /// # Safety
    /// `ptr` holds `len` elements of `dtype`, valid for the call (host) or
    /// until the stream has run it (device); declared and checked.
    unsafe fn input<'a>(&self, ptr: *const c_void, dtype: DType, len: usize, name: &str) -> Result<Input<'a>> {
        // SAFETY: as the caller promises.
        unsafe {
            Ok(if self.host {
                Input::Host(data_in(ptr, dtype, len, name)?)
            } else {
                Input::Device(DeviceData::new(ptr, dtype))
            })
        }
    }

    /// # Safety
    /// As [`DeclaredBuffers::input`], writable.
    unsafe fn output<'a>(&self, ptr: *mut c_void, dtype: DType, len: usize, name: &str) -> Result<Output<'a>> {
        // SAFETY: as the caller promises.
        unsafe {
            Ok(if self.host {
                Output::Host(data_out(ptr, dtype, len, name)?)
            } else {
                Output::Device(DeviceData::new(ptr, dtype))
            })
        }
    }
}

/// `llmint8_matmul` and `llmint8_matmul_host`.
///
/// # Safety
/// As `llmint8_matmul_host` (host memory) or `llmint8_matmul`.
unsafe fn matmul(c: Common, w: *const llmint8_weight, y: *mut c_void, y_dtype: i32) -> Result<()> {
    // SAFETY (this block): as the caller promises.
    unsafe {
        let w = &non_null(w, "w")?.inner;
        let (ctx, mut buffers, x_dtype, x_len) = c.open(w.in_features())?;
        let y_dtype = DType::from_code(y_dtype)?;
        let y_len = checked_len(c.rows, w.out_features(), "y")?;
        buffers.declare("y", y, y_dtype, y_len)?;
        let buffers = buffers.check_disjoint(c.stats)?;
        let x = buffers.input(c.x, x_dtype, x_len, "x")?;
        let ys = vec![buffers.output(y, y_dtype, y_len, "y")?];
        c.run(ctx, x, Operation::Matmul { weights: &[w], ys })
    }
}

/// `llmint8_matmul_shared_input` and its `_host` form.
///
/// # Safety
/// As `llmint8_matmul_shared_input_host` (host memory) or `llmint8_matmul_shared_input`.
unsafe fn shared_input(
    c: Common,
    w: *const *const llmint8_weight,
    n_weights: usize,
    y: *const *mut c_void,
    y_dtype: i32,
) -> Result<()> {
    // SAFETY (this block): as the caller promises.
    unsafe {
        non_null(c.ctx, "ctx")?;
        if w.is_null() || y.is_null() {
            return Err(crate::Error::invalid(if w.is_null() { "w is NULL" } else { "y is NULL" }));
        }
        if n_weights == 0 {
            return Err(crate::Error::invalid("n_weights is 0: give at least one weight"));
        }
        let handles = super::slice_in(w, n_weights, "w")?;
        let y_ptrs = super::slice_in(y, n_weights, "y")?;
        let mut weights = Vec::with_capacity(n_weights);
        for (i, &h) in handles.iter().enumerate() {
            weights.push(&non_null(h, &format!("w[{i}]"))?.inner);
        }
        let (ctx, mut buffers, x_dtype, x_len) = c.open(weights[0].in_features())?;
        let y_dtype = DType::from_code(y_dtype)?;
        let mut y_lens = Vec::with_capacity(n_weights);
        for (i, (w, &y)) in weights.iter().zip(y_ptrs).enumerate() {
            let name = format!("y[{i}]");
            let len = checked_len(c.rows, w.out_features(), &name)?;
            buffers.declare(name, y, y_dtype, len)?;
            y_lens.push(len);
        }
        let buffers = buffers.check_disjoint(c.stats)?;
        let x = buffers.input(c.x, x_dtype, x_len, "x")?;
        let mut ys = Vec::with_capacity(n_weights);
        for (i, (&y, &len)) in y_ptrs.iter().zip(&y_lens).enumerate() {
            ys.push(buffers.output(y, y_dtype, len, &format!("y[{i}]"))?);
        }
        c.run(ctx, x, Operation::Matmul { weights: &weights, ys })
    }
}

/// `llmint8_row_parallel_statistics` and its `_host` form.
///
/// # Safety
/// As `llmint8_row_parallel_statistics_host` (host memory) or `llmint8_row_parallel_statistics`.
unsafe fn statistics(c: Common, w: *const llmint8_weight, row_absmax: *mut f32) -> Result<()> {
    // SAFETY (this block): as the caller promises.
    unsafe {
        let w = &non_null(w, "w")?.inner;
        let (ctx, mut buffers, x_dtype, x_len) = c.open(w.in_features())?;
        buffers.declare("row_absmax", row_absmax.cast_const().cast(), DType::F32, c.rows)?;
        let buffers = buffers.check_disjoint(c.stats)?;
        let x = buffers.input(c.x, x_dtype, x_len, "x")?;
        let row_absmax = buffers.output(row_absmax.cast(), DType::F32, c.rows, "row_absmax")?;
        c.run(ctx, x, Operation::RowParallelStatistics { weight: w, row_absmax })
    }
}

/// `llmint8_matmul_row_parallel` and its `_host` form.
///
/// # Safety
/// As `llmint8_matmul_row_parallel_host` (host memory) or `llmint8_matmul_row_parallel`.
unsafe fn row_parallel(
    c: Common,
    w: *const llmint8_weight,
    row_absmax: *const f32,
    y: *mut c_void,
    y_dtype: i32,
) -> Result<()> {
    // SAFETY (this block): as the caller promises.
    unsafe {
        let w = &non_null(w, "w")?.inner;
        let (ctx, mut buffers, x_dtype, x_len) = c.open(w.in_features())?;
        let y_dtype = DType::from_code(y_dtype)?;
        let y_len = checked_len(c.rows, w.out_features(), "y")?;
        buffers.declare("y", y, y_dtype, y_len)?;
        buffers.declare("row_absmax", row_absmax.cast(), DType::F32, c.rows)?;
        let buffers = buffers.check_disjoint(c.stats)?;
        let x = buffers.input(c.x, x_dtype, x_len, "x")?;
        let row_absmax = buffers.input(row_absmax.cast(), DType::F32, c.rows, "row_absmax")?;
        let y = buffers.output(y, y_dtype, y_len, "y")?;
        c.run(ctx, x, Operation::RowParallelMatmul { weight: w, row_absmax, y })
    }
}

/// Writes a call's stats to `stats` unless it is NULL.
///
/// # Safety
/// `stats` is NULL or writable.
unsafe fn write_stats(stats: *mut llmint8_matmul_stats, result: crate::MatmulStats) {
    if !stats.is_null() {
        let s = llmint8_matmul_stats { outlier_columns: result.outlier_columns as u64, ..Default::default() };
        // SAFETY: as the caller promises.
        unsafe { stats.write_unaligned(s) };
    }
}

/// Vector-wise quantization of `x` row-major `[rows, cols]` of `dtype`, the
/// first step of a matmul: `q` `[rows, cols]` int8, `absmax` `[rows]` float
/// (the row scales, bitsandbytes' `SCA`). With `threshold > 0`, values with
/// |x| >= threshold (and NaN/Inf) are outliers and their whole columns are set
/// to 0 in `q`; the row absmax follows the context's row scale rule
/// (`llmint8_context_set_row_scale`): the columns the int8 product uses (the
/// default), or, with `LLMINT8_ROW_SCALE_BITSANDBYTES`, the values below the
/// threshold — then exactly bitsandbytes' `int8_vectorwise_quant`. The outlier columns are
/// written in ascending order to `outlier_cols` (capacity `cols` entries; NULL if
/// not wanted) and their count to `*n_outlier_cols` (NULL if not wanted).
/// A row of zeros has absmax 0 and q 0; with threshold 0 a row holding NaN/Inf
/// has absmax NaN and q 0. `rows` 0 is a valid call that writes only
/// `*n_outlier_cols = 0`.
///
/// Memory: host memory; the output buffers must not overlap each other or `x`.
/// Returns LLMINT8_OK, or, with the outputs unspecified:
/// - LLMINT8_ERR_INVALID_ARGUMENT: NULL `ctx`, `x`, `q` or `absmax` (rows > 0),
///   unknown dtype, misaligned or overlapping buffers, negative or NaN threshold;
/// - LLMINT8_ERR_SHAPE: `cols` 0 or above UINT32_MAX, or `rows · cols` overflows;
/// - LLMINT8_ERR_OUT_OF_MEMORY.
///
/// Thread safety: may be called concurrently on the same context.
///
/// # Safety
/// `x` must hold `rows · cols` readable elements; `q`, `absmax` and
/// `outlier_cols` be writable for `rows · cols`, `rows` and `cols` elements.
#[no_mangle]
pub unsafe extern "C" fn llmint8_quantize_rows(
    ctx: *mut llmint8_context,
    x: *const c_void,
    dtype: i32,
    rows: usize,
    cols: usize,
    threshold: f32,
    q: *mut i8,
    absmax: *mut f32,
    outlier_cols: *mut u32,
    n_outlier_cols: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let ctx = non_null(ctx, "ctx")?;
            let dtype = DType::from_code(dtype)?;
            let len = checked_len(rows, cols, "x")?;
            let out_cols_len = if rows == 0 { 0 } else { cols };
            // NULL, alignment and size first; then overlap, before any slice exists.
            check_data_region(x, dtype, len, "x")?;
            check_region(q, len, "q")?;
            check_region(absmax, rows, "absmax")?;
            if !outlier_cols.is_null() {
                check_region(outlier_cols, out_cols_len, "outlier_cols")?;
            }
            let count_bytes = if n_outlier_cols.is_null() { 0 } else { std::mem::size_of::<usize>() };
            check_disjoint(&[
                ("x", x, len * dtype.size()),
                ("q", q.cast_const().cast(), len),
                ("absmax", absmax.cast_const().cast(), rows * 4),
                ("outlier_cols", outlier_cols.cast_const().cast(), out_cols_len * 4),
                ("n_outlier_cols", n_outlier_cols.cast_const().cast(), count_bytes),
            ])?;
            let x = data_in(x, dtype, len, "x")?;
            let q = slice_out(q, len, "q")?;
            let absmax = slice_out(absmax, rows, "absmax")?;
            let outlier_cols = if outlier_cols.is_null() {
                None
            } else {
                Some(slice_out(outlier_cols, out_cols_len, "outlier_cols")?)
            };
            let n = ctx.inner.quantize_rows(x, rows, cols, threshold, q, absmax, outlier_cols.map(|o| &mut *o))?;
            if !n_outlier_cols.is_null() {
                n_outlier_cols.write_unaligned(n);
            }
        }
        Ok(())
    })
}
