//! Context handles.

use std::ffi::c_void;

use crate::context::{Backend, Context};
use crate::quant::{InputRounding, RowScale};

use super::{clear_out, guard, guard_void, non_null, write_out};

/// A backend instance: where the work runs and how many threads it may use.
///
/// Opaque. Created by `llmint8_context_create`, owned by the caller, freed with
/// `llmint8_context_destroy`. Every function taking a context may be called from
/// many threads at once on the same context, except `llmint8_context_destroy`.
pub struct llmint8_context {
    pub(crate) inner: Context,
}

/// Creates a context on `backend` (`LLMINT8_BACKEND_*`) and `device` (0 for the
/// CPU; the GPU ordinal for CUDA).
///
/// `LLMINT8_BACKEND_CUDA` opens CUDA device `device`: the CUDA libraries are
/// loaded at run time (libcuda.so.1, libcublasLt.so.13/.12, libnvrtc.so.13/.12;
/// `LLMINT8_LIBCUDA`, `LLMINT8_LIBCUBLASLT`, `LLMINT8_LIBNVRTC` name a file or
/// folder to use instead; otherwise the dynamic loader's path, `$CUDA_HOME`,
/// `$CUDA_PATH`, /usr/local/cuda and the `nvidia/<package>/lib` folders of PyTorch's wheels are
/// searched), and the kernels are compiled for the device with NVRTC on the
/// first context of each architecture in the process. Work is queued on the
/// default stream until `llmint8_context_set_stream`.
/// `LLMINT8_BACKEND_AUTO` takes CUDA device `device` when it is usable, else
/// the CPU (then `device` must be 0).
///
/// On success writes a new context to `*out`; the caller owns it and must
/// eventually pass it to `llmint8_context_destroy`. On failure writes NULL to
/// `*out` (when `out` is not NULL) and returns:
/// - LLMINT8_ERR_INVALID_ARGUMENT: `out` is NULL, `backend` is unknown, the
///   CPU backend is asked for a device other than 0, or the environment
///   variable `LLMINT8_CPU_PATH` names no CPU path;
/// - LLMINT8_ERR_UNSUPPORTED: `LLMINT8_CPU_PATH` names a CPU path this
///   processor cannot run (`portable`, `avx2`, `avx512vnni`, `amx`,
///   `amx-model`; unset or empty: the fastest);
/// - LLMINT8_ERR_NO_DEVICE: (CUDA) no driver, no cuBLASLt or NVRTC the driver
///   can run, no device `device`, or a device older than sm_75 — the message
///   lists every place looked in;
/// - LLMINT8_ERR_DEVICE: (CUDA) a driver, NVRTC or cuBLASLt call failed;
/// - LLMINT8_ERR_OUT_OF_MEMORY.
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `out` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_create(backend: i32, device: i32, out: *mut *mut llmint8_context) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL out is writable.
        unsafe { clear_out(out) }?;
        let inner = Context::new(Backend::from_code(backend)?, device)?;
        // SAFETY: out is non-NULL and writable (checked by clear_out).
        unsafe { out.write_unaligned(Box::into_raw(Box::new(llmint8_context { inner }))) };
        Ok(())
    })
}

/// Destroys a context. NULL is fine (does nothing).
///
/// On a CUDA context this waits for the work it queued and frees its scratch
/// space; the stream given to `llmint8_context_set_stream` is not used after
/// it returns (the engine may destroy it next). Weights built on the context
/// stay valid (they keep the device open) and must still be destroyed with
/// `llmint8_weight_destroy`. No other call may use `ctx` during or after this
/// one; destroying the same context twice is not allowed.
///
/// # Safety
/// `ctx` must be NULL or a context from `llmint8_context_create` not yet destroyed.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_destroy(ctx: *mut llmint8_context) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: ctx came from Box::into_raw in llmint8_context_create and the caller
    // gives up every use of it.
    guard_void(|| drop(unsafe { Box::from_raw(ctx) }));
}

/// Sets how many CPU threads later calls on `ctx` may use; 0 restores the
/// default (the environment variable `LLMINT8_NUM_THREADS`, else every processor
/// available to the process); a count above 1024 counts as 1024. Results are
/// bit-identical whatever the count.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when `ctx` is NULL.
/// Thread safety: may be called concurrently with any other call on `ctx`;
/// calls already running keep the count they started with.
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_set_num_threads(ctx: *mut llmint8_context, num_threads: usize) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        ctx.inner.set_num_threads(num_threads);
        Ok(())
    })
}

/// Writes the number of CPU threads calls on `ctx` may use to `*num_threads`.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL.
/// Thread safety: may be called concurrently with any other call on `ctx`.
///
/// # Safety
/// `ctx` must be NULL or a live context; `num_threads` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_num_threads(ctx: *const llmint8_context, num_threads: *mut usize) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        // SAFETY: the caller promises a non-NULL num_threads is writable.
        unsafe { write_out(num_threads, ctx.inner.num_threads(), "num_threads") }
    })
}

/// Writes the backend `ctx` runs on (`LLMINT8_BACKEND_CPU` or `_CUDA`, never
/// `_AUTO`) to `*backend`.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL.
/// Thread safety: may be called concurrently with any other call on `ctx`.
///
/// # Safety
/// `ctx` must be NULL or a live context; `backend` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_backend(ctx: *const llmint8_context, backend: *mut i32) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        // SAFETY: the caller promises a non-NULL backend is writable.
        unsafe { write_out(backend, crate::Backend::of(ctx.inner.location()) as i32, "backend") }
    })
}

/// Sets how later calls on `ctx` read 16/32-bit values before quantizing them —
/// weights in `llmint8_weight_quantize`, activations in `llmint8_matmul` and
/// `llmint8_quantize_rows`:
/// - `LLMINT8_INPUT_EXACT` (the default): from their own values;
/// - `LLMINT8_INPUT_ROUND_F16`: rounded to float16 first, as bitsandbytes'
///   `Linear8bitLt` does, so float32 inputs reproduce its results exactly (a
///   float32 weight beyond ±65504 is then refused as not finite). Float16 inputs
///   are unaffected; bfloat16 ones only outside the float16 range.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when `ctx` is NULL or `rounding` unknown.
/// Thread safety: may be called concurrently with any other call on `ctx`;
/// calls already running keep the setting they started with.
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_set_input_rounding(ctx: *mut llmint8_context, rounding: i32) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        ctx.inner.set_input_rounding(InputRounding::from_code(rounding)?);
        Ok(())
    })
}

/// Writes the input rounding of `ctx` (`LLMINT8_INPUT_*`) to `*rounding`.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL.
/// Thread safety: may be called concurrently with any other call on `ctx`.
///
/// # Safety
/// `ctx` must be NULL or a live context; `rounding` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_input_rounding(ctx: *const llmint8_context, rounding: *mut i32) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        // SAFETY: the caller promises a non-NULL rounding is writable.
        unsafe { write_out(rounding, ctx.inner.input_rounding() as i32, "rounding") }
    })
}

/// Sets which values give an activation row its scale in later `llmint8_matmul`
/// and `llmint8_quantize_rows` calls on `ctx` when outliers are decomposed
/// (threshold > 0; at threshold 0 both rules are the same):
/// - `LLMINT8_ROW_SCALE_BITSANDBYTES`: bitsandbytes' rule, the
///   absmax over the row's values below the threshold — a value of an outlier
///   column that is below the threshold in this row still sets the scale,
///   though the int8 product does not use it;
/// - `LLMINT8_ROW_SCALE_INT8_PART` (the default): the absmax over the columns
///   the int8 product uses (every outlier column of the call left out), so no
///   row is quantized coarser than its int8 part needs. It reads the
///   activations one more time (the outlier columns before the row scales).
///   On SmolLM2-135M it takes 11% off the KL divergence from float32
///   (docs/SEMANTICS.md); `llmint8_context_match_bitsandbytes` sets
///   bitsandbytes' rule with its input rounding.
///
/// Every backend computes both rules alike (the CUDA kernels checked against
/// the CPU on the emulated GPU).
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when `ctx` is NULL or `rule` unknown.
/// Thread safety: may be called concurrently with any other call on `ctx`;
/// calls already running keep the setting they started with.
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_set_row_scale(ctx: *mut llmint8_context, rule: i32) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        ctx.inner.set_row_scale(RowScale::from_code(rule)?);
        Ok(())
    })
}

/// Writes the row scale rule of `ctx` (`LLMINT8_ROW_SCALE_*`) to `*rule`.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL.
/// Thread safety: may be called concurrently with any other call on `ctx`.
///
/// # Safety
/// `ctx` must be NULL or a live context; `rule` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_row_scale(ctx: *const llmint8_context, rule: *mut i32) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        // SAFETY: the caller promises a non-NULL rule is writable.
        unsafe { write_out(rule, ctx.inner.row_scale() as i32, "rule") }
    })
}

/// Makes later calls on `ctx` compute what bitsandbytes' `Linear8bitLt`
/// computes: inputs rounded to float16 (`LLMINT8_INPUT_ROUND_F16`) and
/// bitsandbytes' row scale (`LLMINT8_ROW_SCALE_BITSANDBYTES`) — its `CB`,
/// `SCB`, `CA`, `SCA` and outlier columns bit for bit (tests/golden.rs), its
/// outputs up to the dequantization's rounding (docs/SEMANTICS.md). One call
/// for the two settings, which stay readable and settable one by one.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when `ctx` is NULL.
/// Thread safety: may be called concurrently with any other call on `ctx`;
/// calls already running keep the settings they started with.
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_match_bitsandbytes(ctx: *mut llmint8_context) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        ctx.inner.match_bitsandbytes();
        Ok(())
    })
}

/// Reserves a CUDA context's scratch space for every matmul of up to `rows`
/// rows with weights of `in_features` columns and up to `out_features` rows
/// — plain, shared-input (`out_features` the largest weight's) and
/// row-parallel calls — so that afterwards such calls on device memory
/// allocate nothing, wait for nothing and copy nothing to the host: they can
/// be captured in a CUDA graph on the engine's stream and replayed. Call it
/// once before capturing, with the largest shapes the captured steps use
/// (e.g. the decode batch and the model's widest layer). It allocates on the
/// context's stream (stream-ordered) and returns without waiting.
///
/// While the context's stream is capturing, llmint8 refuses, before queuing
/// anything (so the capture stays valid), every call that cannot be
/// captured, with LLMINT8_ERR_UNSUPPORTED: a matmul whose scratch does not fit
/// what was reserved, one with a non-NULL `stats` (it waits), the `_host`
/// calls, making a weight, `llmint8_context_synchronize` and this function.
///
/// Returns LLMINT8_OK (also on a CPU context, which has nothing to reserve),
/// LLMINT8_ERR_INVALID_ARGUMENT when `ctx` is NULL, LLMINT8_ERR_SHAPE for a
/// zero size or one whose products overflow, LLMINT8_ERR_UNSUPPORTED for
/// `in_features` above what the GPU takes or while capturing,
/// LLMINT8_ERR_DEVICE when the allocation fails.
/// Thread safety: may be called concurrently with other calls on `ctx`.
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_reserve(
    ctx: *mut llmint8_context,
    rows: usize,
    in_features: usize,
    out_features: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        ctx.inner.reserve(rows, in_features, out_features)
    })
}

/// Makes all later device work of a CUDA context run on `stream` (a
/// `CUstream` / `cudaStream_t` of the context's device, owned by the caller;
/// NULL is the default stream). Asynchronous: later work on `stream` is
/// ordered after the work already queued on the previous stream with an
/// event; nothing waits on the host. The stream must outlive the work the
/// context queues on it (destroy the context, or set another stream and
/// synchronize, before destroying the stream).
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when `ctx` is NULL,
/// LLMINT8_ERR_UNSUPPORTED on a CPU context, LLMINT8_ERR_DEVICE when the
/// driver refuses the stream.
/// Thread safety: may be called concurrently with other calls on `ctx`; a
/// call already queuing work finishes on the stream it started with.
///
/// # Safety
/// `ctx` must be NULL or a live context; `stream` NULL or a live stream of the
/// context's device.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_set_stream(ctx: *mut llmint8_context, stream: *mut c_void) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        // SAFETY: the caller promises the stream is NULL or live on the device.
        unsafe { ctx.inner.set_stream(stream) }
    })
}

/// Waits until all work queued by `ctx` has finished (does nothing on a CPU
/// context, whose calls return finished).
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when `ctx` is NULL, LLMINT8_ERR_DEVICE
/// when queued work failed on the device.
/// Thread safety: may be called concurrently with any other call on `ctx`.
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn llmint8_context_synchronize(ctx: *mut llmint8_context) -> i32 {
    guard(|| {
        // SAFETY: the caller promises a non-NULL ctx is live.
        let ctx = unsafe { non_null(ctx, "ctx") }?;
        ctx.inner.synchronize()
    })
}
