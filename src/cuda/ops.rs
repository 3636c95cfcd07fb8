//! The LLM.int8() pipeline on a CUDA device: weights on the device, and the
//! matmul as a handful of launches on the context's stream — quantize X (row
//! absmax without outliers, outlier columns flagged), list the outlier columns,
//! gather them (X's as float32, W's dequantized), the int8 GEMM in cuBLASLt
//! (int32 accumulators, exact), and one epilogue kernel. Nothing waits on the
//! host: the outlier count stays on the device.

use std::ffi::c_void;

use super::device::{Gpu, StreamState, WORKSPACE_BYTES};
use super::nvrtc::{self, BLOCK_THREADS};
use super::params::*;
use super::sys::{self, CUdeviceptr};
use super::{DeviceCall, DeviceMatrix};
use crate::call::Work;
use crate::error::{Error, Result};
use crate::quant::{InputRounding, RowScale};

/// Row stride of the int8 matrices on the device: in_features rounded up to 16
/// bytes, as cuBLASLt's int8 tensor-core kernels want (the padding is zero).
pub(crate) fn cb_row_stride(k: usize) -> usize {
    k.div_ceil(16) * 16
}

/// Weight rows on the device: out_features rounded up to 16 (zero rows), so
/// that every GEMM's m is a multiple of 16.
pub(crate) fn padded_n(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// Activation rows of the int8 GEMM: rows rounded up to 4 (zero rows).
fn padded_rows(rows: usize) -> usize {
    rows.div_ceil(4) * 4
}

/// Longest rows the device takes: cuBLASLt sums int8 products in int32, exact
/// while 127² · in_features < 2³¹ (in_features ≤ 133 143).
pub(crate) const MAX_IN_FEATURES: usize = 1 << 17;

/// Refuses a weight whose rows are too long for int32 accumulation.
pub(crate) fn check_in_features(k: usize) -> Result<()> {
    if k > MAX_IN_FEATURES {
        return Err(Error::unsupported(format!(
            "in_features = {k} is above {MAX_IN_FEATURES}, where the GPU's int32 accumulators could overflow; \
             use a CPU context for such a weight"
        )));
    }
    Ok(())
}

/// Outlier columns gathered into compact matrices; beyond this many (never seen
/// in real models: the paper finds at most 7) the epilogue reads X and W directly.
const MAX_GATHERED: usize = 64;

/// Up to this many rows, everything before the GEMM runs in one block
/// (`llmint8_prep_small_*`): a decode step is dominated by launches.
const SMALL_ROWS: usize = 16;

/// Whether few-row calls take the one-block prep kernel: yes, unless
/// `LLMINT8_CUDA_PREP=separate` asks for the separate launches (to compare the
/// two on a GPU, or to rule one out).
fn one_block_prep() -> bool {
    static ONE_BLOCK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONE_BLOCK.get_or_init(|| std::env::var("LLMINT8_CUDA_PREP").as_deref() != Ok("separate"))
}

/// int32 accumulators per GEMM: the weight's rows are taken in chunks so that
/// `rows × chunk × 4` stays near this, bounding the scratch space.
const ACC_BUDGET_BYTES: usize = 64 << 20;

/// The most blocks a grid-stride launch uses.
const MAX_BLOCKS: usize = 8192;

pub(crate) fn grid_for(total: usize) -> u32 {
    total.div_ceil(BLOCK_THREADS as usize).clamp(1, MAX_BLOCKS) as u32
}

/// Offsets of the scratch regions of one matmul, each 256-byte aligned.
struct ScratchLayout {
    q: usize,
    sa: usize,
    flags: usize,
    list: usize,
    /// The outlier count, then a row-parallel call's first refused row
    /// (two `int`s: one copy reads both, see [`BAD_ROW_OFFSET`]).
    count: usize,
    x_out: usize,
    w_out: usize,
    acc: usize,
    total: usize,
}

impl ScratchLayout {
    /// `rows` is the padded row count (`padded_rows`).
    fn new(rows: usize, k: usize, kp: usize, n: usize, chunk: usize) -> Result<ScratchLayout> {
        let mut at = 0usize;
        let mut take = |bytes: Option<usize>| -> Result<usize> {
            let bytes = bytes.ok_or_else(|| Error::shape("the matmul's scratch size overflows size_t"))?;
            let start = at;
            at = at.checked_add(bytes.div_ceil(256) * 256).ok_or_else(|| Error::shape("scratch size overflows"))?;
            Ok(start)
        };
        Ok(ScratchLayout {
            q: take(rows.checked_mul(kp))?,
            sa: take(rows.checked_mul(4))?,
            flags: take(k.checked_mul(4))?,
            list: take(k.checked_mul(4))?,
            count: take(Some(8))?,
            x_out: take(rows.checked_mul(MAX_GATHERED * 4))?,
            w_out: take(n.checked_mul(MAX_GATHERED * 4))?,
            acc: take(rows.checked_mul(chunk).and_then(|c| c.checked_mul(4)))?,
            total: at,
        })
    }
}

/// Scratch bytes that every matmul of up to `rows` rows with weights of
/// `in_features` = `k` and up to `n` out_features fits (the largest layout
/// over the row counts: the accumulator chunk shrinks as rows grow, so the
/// largest count is not always the largest layout).
pub(crate) fn scratch_bytes_for(rows: usize, k: usize, n: usize) -> Result<usize> {
    check_in_features(k)?;
    let kp = cb_row_stride(k);
    let mut most = 0;
    for mp in (4..=padded_rows(rows.max(1))).step_by(4) {
        most = most.max(ScratchLayout::new(mp, k, kp, n, chunk_rows(mp, padded_n(n)))?.total);
    }
    Ok(most)
}

/// Weight rows per GEMM: all of them when the accumulators fit the budget, else
/// a multiple of 16 that does (`n` is a multiple of 16).
fn chunk_rows(rows: usize, n: usize) -> usize {
    let fit = (ACC_BUDGET_BYTES / (rows * 4).max(1)) / 16 * 16;
    n.min(fit.max(256))
}

/// Runs a call on device memory (see [`Work`]), queued on the stream of
/// `gpu` (the context's device, which `state` belongs to). Returns the
/// device address of the outlier count — for a row-parallel partial, the
/// first refused row follows it at [`BAD_ROW_OFFSET`] — valid until the next
/// call on this context's stream, so that a caller that wants it can copy it.
///
/// # Safety
/// `call.x`, the outputs and `row_absmax` must be device memory of `gpu`'s
/// device holding the elements the call's shapes give.
pub(crate) unsafe fn run(gpu: &Gpu, call: &DeviceCall<'_>, state: &mut StreamState) -> Result<CUdeviceptr> {
    // SAFETY (this block): as the caller promises.
    unsafe {
        match &call.work {
            Work::Products(ys) => products(gpu, call, ys, None, state),
            Work::Partial { row_absmax, y } => products(gpu, call, std::slice::from_ref(y), Some(*row_absmax), state),
            Work::Statistics { row_absmax } => row_statistics(gpu, call, *row_absmax, state),
        }
    }
}

/// Where a row-parallel call's first refused row (`int`, `i32::MAX`: none)
/// lies after the outlier count a call returns.
pub(crate) const BAD_ROW_OFFSET: u64 = 4;

/// A call's activations on the device and how to quantize them.
#[derive(Clone, Copy)]
struct Activations {
    x: DeviceMatrix,
    rows: usize,
    k: usize,
    /// `k` padded to the int8 matrices' row stride.
    kp: usize,
    threshold: f32,
    settings: super::Settings,
    /// The weights' smoothing `1/s` `[k]` on the device (0: unsmoothed);
    /// the weights of a call share it (checked by the context).
    smooth: CUdeviceptr,
}

impl Activations {
    fn of(call: &DeviceCall<'_>) -> Activations {
        let w = call.first_weight();
        let (x, rows, threshold, settings) = (call.x, call.rows, call.threshold, call.settings);
        Activations { x, rows, k: w.in_features, kp: w.row_stride, threshold, settings, smooth: w.smoothing_ptr() }
    }
}

/// A row-parallel rank's statistics of its slice `x` `[rows, w.in_features]`:
/// X quantized as a matmul quantizes it, then each row's absmax
/// (`quant::row_statistic`) into `out` (device, `rows` float32). Returns the
/// device address of the slice's outlier count, as [`run`].
///
/// # Safety
/// As [`run`].
unsafe fn row_statistics(
    gpu: &Gpu,
    call: &DeviceCall<'_>,
    out: CUdeviceptr,
    state: &mut StreamState,
) -> Result<CUdeviceptr> {
    let input = Activations::of(call);
    let layout = ScratchLayout::new(padded_rows(input.rows), input.k, input.kp, 0, 0)?;
    let regions = layout_at(&layout, gpu.ensure_scratch(state, layout.total)?);
    // SAFETY (this block): the regions lie in the scratch space sized by
    // `layout`; `x` and `out` are as the caller promises.
    unsafe {
        quantize_input(gpu, state, regions, input)?;
        if input.threshold > 0.0 {
            let k_i = input.k as i32;
            let Regions { flags, list, count, .. } = regions;
            let params = OutlierListParams { col_flags: flags, cols: k_i, list, count };
            gpu.launch(nvrtc::OUTLIER_LIST, 1, state.stream, &params)?;
        }
        let params = RowStatisticsParams { absmax: regions.sa, rows: input.rows as i64, out };
        gpu.launch(nvrtc::ROW_STATISTICS, grid_for(input.rows), state.stream, &params)?;
    }
    Ok(regions.count)
}

/// X's quantization for many rows (the separate launches): the column flags
/// or the count zeroed, q's padding rows zeroed, the quantizer's pass(es).
/// Leaves `q`, `sa` and (decomposing) `flags` in the scratch regions.
///
/// # Safety
/// `regions` in a scratch space sized for `input`'s rows, `k`, `kp`;
/// `input.x` device memory of `rows · k` elements of its dtype.
unsafe fn quantize_input(gpu: &Gpu, state: &StreamState, regions: Regions, input: Activations) -> Result<()> {
    let Regions { q, sa, flags, count, .. } = regions;
    let Activations { x, rows, k, kp, threshold, settings, .. } = input;
    let (stream, d) = (state.stream, &gpu.rt.driver);
    let (xi, x) = (x.dtype as usize, x.ptr);
    let (rows_i, k_i, kp_i) = (rows as i64, k as i32, kp as i32);
    let round = i32::from(settings.rounding == InputRounding::Float16);
    let mp = padded_rows(rows);
    // The int8-part row scale needs every row's outlier columns first: a pass
    // that only flags them (mode 2), then the quantization that reads them
    // (mode 3). At threshold 0 the two rules agree.
    let int8_part = settings.row_scale == RowScale::Int8Part && threshold > 0.0;
    let (mode, no_bad_row) = (if int8_part { 3i32 } else { 0i32 }, 0u64);
    // SAFETY (this block): as the caller promises.
    unsafe {
        // Threshold 0: no outliers; the count is 0 and two launches are skipped.
        if threshold > 0.0 {
            gpu.check((d.cuMemsetD32Async)(flags, 0, k, stream), "cuMemsetD32Async")?;
        } else {
            gpu.check((d.cuMemsetD32Async)(count, 0, 1, stream), "cuMemsetD32Async")?;
        }
        if mp > rows {
            // The GEMM's padding rows of X must be zero.
            let pad = q + (rows * kp) as u64;
            gpu.check((d.cuMemsetD32Async)(pad, 0, (mp - rows) * kp / 4, stream), "cuMemsetD32Async")?;
        }
        let grid = rows.clamp(1, 65535) as u32;
        // The int8-part rule flags every row's outliers (mode 2) before quantizing.
        let modes: &[i32] = if int8_part { &[2, mode] } else { &[mode] };
        for &mode in modes {
            let params = QuantizeRowsParams {
                x,
                rows: rows_i,
                cols: k_i,
                ld_q: kp_i,
                threshold,
                round_f16: round,
                mode,
                q,
                absmax: sa,
                col_flags: flags,
                first_bad_row: no_bad_row,
                smooth: input.smooth,
            };
            gpu.launch(nvrtc::QUANTIZE_ROWS[xi], grid, stream, &params)?;
        }
    }
    Ok(())
}

/// `ys[i] = x · W[i]ᵀ + b[i]` for the call's weights, which share their
/// input (q/k/v, gate/up; one weight: a plain matmul): X is quantized, its
/// outlier columns listed and gathered once (the launches before the GEMM),
/// then each weight's column gather, GEMMs and epilogue — the bits of a call
/// of its own. With `row_absmax` (a row-parallel partial, one weight) each
/// row of X is requantized with the given absmax. Returns the device address
/// of the outlier count, as [`run`].
///
/// # Safety
/// As [`run`], for `x`, every `y` and `row_absmax`.
unsafe fn products(
    gpu: &Gpu,
    call: &DeviceCall<'_>,
    ys: &[DeviceMatrix],
    row_absmax: Option<CUdeviceptr>,
    state: &mut StreamState,
) -> Result<CUdeviceptr> {
    // The context's device (its kernels, cuBLASLt handle and workspace, used
    // under its stream lock), not the one that built the weight: two contexts
    // on one device share weights, not workspaces.
    let input = Activations::of(call);
    let Activations { rows, k, kp, threshold, settings, .. } = input;
    let (x, x_dtype) = (input.x.ptr, input.x.dtype);
    let mp = padded_rows(rows);
    // One scratch layout for the largest weight.
    let n_max = call.weights.iter().map(|w| w.out_features).max().unwrap_or(0);
    let chunk_max = call.weights.iter().map(|w| chunk_rows(mp, padded_n(w.out_features))).max().unwrap_or(0);
    let layout = ScratchLayout::new(mp, k, kp, n_max, chunk_max)?;
    let base = gpu.ensure_scratch(state, layout.total)?;
    let regions = layout_at(&layout, base);
    let Regions { q, sa, flags, list, count, bad_row, x_out, .. } = regions;
    let stream = state.stream;
    let d = &gpu.rt.driver;
    let xi = x_dtype as usize;
    let (rows_i, k_i, kp_i, max_g) = (rows as i64, k as i32, kp as i32, MAX_GATHERED as i32);
    let round = i32::from(settings.rounding == InputRounding::Float16);
    let int8_part = settings.row_scale == RowScale::Int8Part && threshold > 0.0;
    // SAFETY (this block): every device pointer below lies in the scratch space
    // sized by `layout`, in the weight's buffers, or in `x`/`y` as the caller
    // promises.
    unsafe {
        // A row-parallel call requantizes between the quantizer and the
        // gathers, so it takes the separate launches.
        let small = rows <= SMALL_ROWS && one_block_prep() && row_absmax.is_none();
        if small {
            // Few rows (decode): flags, quantization, outlier list, gathers and
            // q's padding in one launch (launches dominate at this size).
            let params = PrepSmallParams {
                x,
                rows: rows_i,
                cols: k_i,
                ld_q: kp_i,
                rows_padded: mp as i64,
                threshold,
                round_f16: round,
                int8_part: i32::from(int8_part),
                q,
                absmax: sa,
                col_flags: flags,
                list,
                count,
                max_gathered: max_g,
                x_out,
                smooth: input.smooth,
            };
            gpu.launch(nvrtc::PREP_SMALL[xi], 1, stream, &params)?;
        } else {
            quantize_input(gpu, state, regions, input)?;
            let grid = rows.clamp(1, 65535) as u32;
            if let Some(given) = row_absmax {
                gpu.check((d.cuMemsetD32Async)(bad_row, i32::MAX as u32, 1, stream), "cuMemsetD32Async")?;
                let params = RescaleRowsParams {
                    x,
                    rows: rows_i,
                    cols: k_i,
                    ld_q: kp_i,
                    round_f16: round,
                    given,
                    absmax: sa,
                    col_flags: flags,
                    use_flags: i32::from(threshold > 0.0),
                    q,
                    bad_row,
                    smooth: input.smooth,
                };
                gpu.launch(nvrtc::RESCALE_ROWS[xi], grid, stream, &params)?;
            }
            if threshold > 0.0 {
                let params = OutlierListParams { col_flags: flags, cols: k_i, list, count };
                gpu.launch(nvrtc::OUTLIER_LIST, 1, stream, &params)?;
                let params = GatherOutliersParams {
                    x,
                    rows: rows_i,
                    cols: k_i,
                    list,
                    count,
                    max_gathered: max_g,
                    q,
                    ld_q: kp_i,
                    x_out,
                    smooth: input.smooth,
                };
                gpu.launch(nvrtc::GATHER_OUTLIERS[xi], grid_for(rows * MAX_GATHERED), stream, &params)?;
            }
        }
        for (&w, &y) in call.weights.iter().zip(ys) {
            weight_product(gpu, state, regions, input, w, y, small)?;
        }
    }
    Ok(count)
}

/// The scratch regions of `layout` at `base`.
fn layout_at(layout: &ScratchLayout, base: CUdeviceptr) -> Regions {
    let at = |offset: usize| base + offset as u64;
    Regions {
        q: at(layout.q),
        sa: at(layout.sa),
        flags: at(layout.flags),
        list: at(layout.list),
        count: at(layout.count),
        bad_row: at(layout.count) + BAD_ROW_OFFSET,
        x_out: at(layout.x_out),
        w_out: at(layout.w_out),
        acc: at(layout.acc),
    }
}

/// Device addresses of a matmul's scratch regions.
#[derive(Clone, Copy)]
struct Regions {
    q: CUdeviceptr,
    sa: CUdeviceptr,
    flags: CUdeviceptr,
    list: CUdeviceptr,
    count: CUdeviceptr,
    /// A row-parallel call's first row whose given absmax was refused
    /// (`i32::MAX`: none).
    bad_row: CUdeviceptr,
    x_out: CUdeviceptr,
    w_out: CUdeviceptr,
    acc: CUdeviceptr,
}

/// One weight's part of a matmul once X is quantized: its outlier columns
/// gathered (many rows), its GEMMs in chunks of rows, and the epilogue.
///
/// # Safety
/// As [`run`]; the scratch regions hold X's quantized rows and outliers.
unsafe fn weight_product(
    gpu: &Gpu,
    state: &mut StreamState,
    scratch: Regions,
    input: Activations,
    w: &super::Weight,
    y: DeviceMatrix,
    small: bool,
) -> Result<()> {
    let Regions { q, sa, list, count, x_out, w_out, acc, .. } = scratch;
    let (rows, decompose) = (input.rows, input.threshold > 0.0);
    let (x, xi) = (input.x.ptr, input.x.dtype as usize);
    let (y, yi) = (y.ptr, y.dtype as usize);
    let (n, k, kp) = (w.out_features, w.in_features, w.row_stride);
    let (mp, np) = (padded_rows(rows), padded_n(n));
    let chunk = chunk_rows(mp, np);
    let (rows_i, k_i, kp_i, n_i, max_g) = (rows as i64, k as i32, kp as i32, n as i32, MAX_GATHERED as i32);
    let stream = state.stream;
    // SAFETY (this block): as for `products`'.
    unsafe {
        // Few rows: the epilogue reads the weight's outlier columns from CB
        // instead (one launch fewer; each is read by at most 16 rows).
        let w_gathered = i32::from(!small);
        // Columns the weight keeps in their source dtype replace dequantized ones.
        let (kept_slot, kept, kept_dtype) = w.kept_args();
        if decompose && !small {
            let params = GatherWeightColumnsParams {
                cb: w.cb.ptr,
                ld_w: kp_i,
                scb: w.scb.ptr,
                n: n as i64,
                list,
                count,
                max_gathered: max_g,
                kept_slot,
                kept,
                kept_dtype,
                w_out,
            };
            gpu.launch(nvrtc::GATHER_WEIGHT_COLUMNS, grid_for(n * 8), stream, &params)?;
        }
        let bias = w.bias.as_ref().map_or(0u64, |b| b.ptr);
        let epilogue = nvrtc::EPILOGUE[xi][yi];
        // Chunks of the weight's rows (multiples of 16, as `np` and `chunk` are).
        let mut j0 = 0usize;
        while j0 < n {
            let nc_padded = chunk.min(np - j0);
            let nc = nc_padded.min(n - j0);
            let gemm = Int8Gemm { w: w.cb.ptr + (j0 * kp) as u64, q, acc, nc: nc_padded, rows: mp, kp };
            int8_gemm(gpu, state, gemm)?;
            let params = EpilogueParams {
                acc,
                ld_acc: nc_padded as i32,
                rows: rows_i,
                nc: nc as i32,
                j0: j0 as i32,
                n: n_i,
                sa,
                scb: w.scb.ptr,
                bias,
                list,
                count,
                max_gathered: max_g,
                w_gathered,
                x_out,
                w_out,
                x,
                cols: k_i,
                cb: w.cb.ptr,
                ld_w: kp_i,
                kept_slot,
                kept,
                kept_dtype,
                y,
                smooth: input.smooth,
            };
            gpu.launch(epilogue, grid_for(rows * nc), stream, &params)?;
            j0 += nc_padded;
        }
    }
    Ok(())
}

/// The operands of one [`int8_gemm`]: device addresses and shape.
struct Int8Gemm {
    w: CUdeviceptr,
    q: CUdeviceptr,
    acc: CUdeviceptr,
    nc: usize,
    rows: usize,
    kp: usize,
}

/// `acc [rows, nc]` (int32, row-major) = `q [rows, kp]` · `w [nc, kp]`ᵀ, exact,
/// with cuBLASLt. In its column-major terms: C `[nc, rows]` = Wᵀ-op(`[kp, nc]`)
/// · `[kp, rows]` — the "TN" form its int8 tensor-core kernels take. The
/// shape's descriptors and algorithm are made once per context ([`GemmPlan`]).
fn int8_gemm(gpu: &Gpu, state: &mut StreamState, gemm: Int8Gemm) -> Result<()> {
    let Int8Gemm { w, q, acc, nc, rows, kp } = gemm;
    let shape = (nc as u64, rows as u64, kp as u64);
    let at = match state.gemm_plans.iter().position(|p| p.shape == shape) {
        Some(at) => at,
        None => {
            state.gemm_plans.push(GemmPlan::new(gpu, shape)?);
            state.gemm_plans.len() - 1
        }
    };
    let plan = &state.gemm_plans[at];
    let (alpha, beta) = (1i32, 0i32);
    // SAFETY: the plan's descriptors describe `w`, `q` and `acc` (device
    // memory of these shapes, as the caller's regions are); the workspace
    // holds WORKSPACE_BYTES; alpha and beta are int32, as COMPUTE_32I takes.
    let status = unsafe {
        (gpu.rt.lt.cublasLtMatmul)(
            gpu.lt,
            plan.desc,
            (&alpha as *const i32).cast(),
            w as *const c_void,
            plan.layouts[0],
            q as *const c_void,
            plan.layouts[1],
            (&beta as *const i32).cast(),
            acc as *const c_void,
            plan.layouts[2],
            acc as *mut c_void,
            plan.layouts[2],
            &plan.algo,
            gpu.workspace as *mut c_void,
            WORKSPACE_BYTES,
            state.stream,
        )
    };
    gpu.check_lt(status, "cublasLtMatmul (int8)")
}

/// One int8 GEMM shape's cuBLASLt descriptors (the TN matmul and the three
/// matrix layouts) and the algorithm chosen for it: made at the shape's
/// first call on a context and kept in its stream state, not rebuilt for
/// every chunk of every call. Destroyed with the state.
#[derive(Debug)]
pub(crate) struct GemmPlan {
    lt: &'static sys::CublasLt,
    /// (m, n, k) in cuBLASLt's terms: weight rows, padded activation rows, padded in_features.
    shape: (u64, u64, u64),
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    algo: sys::cublasLtMatmulAlgo_t,
}

impl GemmPlan {
    fn new(gpu: &Gpu, shape: (u64, u64, u64)) -> Result<GemmPlan> {
        let lt = &gpu.rt.lt;
        let (m, n, k) = shape;
        let mut plan = GemmPlan {
            lt,
            shape,
            desc: std::ptr::null_mut(),
            layouts: [std::ptr::null_mut(); 3],
            algo: sys::cublasLtMatmulAlgo_t::default(),
        };
        // SAFETY (this block): valid out-pointers; what is made is destroyed
        // by `plan`'s Drop, on success or on an early return; attribute
        // buffers have the attribute's type (int32 for the transposes).
        unsafe {
            gpu.check_lt(
                (lt.cublasLtMatmulDescCreate)(&mut plan.desc, sys::CUBLAS_COMPUTE_32I, sys::CUDA_R_32I),
                "cublasLtMatmulDescCreate",
            )?;
            for (attribute, op, what) in [
                (sys::CUBLASLT_MATMUL_DESC_TRANSA, sys::CUBLAS_OP_T, "cublasLtMatmulDescSetAttribute(TRANSA)"),
                (sys::CUBLASLT_MATMUL_DESC_TRANSB, sys::CUBLAS_OP_N, "cublasLtMatmulDescSetAttribute(TRANSB)"),
            ] {
                let op: i32 = op;
                gpu.check_lt(
                    (lt.cublasLtMatmulDescSetAttribute)(plan.desc, attribute, (&op as *const i32).cast(), 4),
                    what,
                )?;
            }
            let shapes =
                [(sys::CUDA_R_8I, k, m, k as i64), (sys::CUDA_R_8I, k, n, k as i64), (sys::CUDA_R_32I, m, n, m as i64)];
            for (layout, (dtype, r, c, ld)) in plan.layouts.iter_mut().zip(shapes) {
                gpu.check_lt((lt.cublasLtMatrixLayoutCreate)(layout, dtype, r, c, ld), "cublasLtMatrixLayoutCreate")?;
            }
        }
        plan.algo = choose_algo(gpu, plan.desc, &plan.layouts)?;
        Ok(plan)
    }
}

impl Drop for GemmPlan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was made by `new` (null ones never were)
        // and is destroyed once; they are host objects, no context needed.
        unsafe {
            for layout in self.layouts.into_iter().filter(|l| !l.is_null()) {
                (self.lt.cublasLtMatrixLayoutDestroy)(layout);
            }
            if !self.desc.is_null() {
                (self.lt.cublasLtMatmulDescDestroy)(self.desc);
            }
        }
    }
}

/// cuBLASLt's first heuristic choice for this problem.
fn choose_algo(
    gpu: &Gpu,
    desc: sys::cublasLtMatmulDesc_t,
    layouts: &[sys::cublasLtMatrixLayout_t; 3],
) -> Result<sys::cublasLtMatmulAlgo_t> {
    let lt = &gpu.rt.lt;
    let mut pref: sys::cublasLtMatmulPreference_t = std::ptr::null_mut();
    let mut result = sys::cublasLtMatmulHeuristicResult_t::default();
    let mut found = 0i32;
    // SAFETY: the preference is created and destroyed here; out-pointers valid.
    let status = unsafe {
        let mut status = (lt.cublasLtMatmulPreferenceCreate)(&mut pref);
        if status == sys::CUBLAS_STATUS_SUCCESS {
            let bytes: u64 = WORKSPACE_BYTES as u64;
            status = (lt.cublasLtMatmulPreferenceSetAttribute)(
                pref,
                sys::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&bytes as *const u64).cast(),
                8,
            );
        }
        if status == sys::CUBLAS_STATUS_SUCCESS {
            status = (lt.cublasLtMatmulAlgoGetHeuristic)(
                gpu.lt,
                desc,
                layouts[0],
                layouts[1],
                layouts[2],
                layouts[2],
                pref,
                1,
                &mut result,
                &mut found,
            );
        }
        if !pref.is_null() {
            (lt.cublasLtMatmulPreferenceDestroy)(pref);
        }
        status
    };
    gpu.check_lt(status, "cublasLtMatmulAlgoGetHeuristic")?;
    if found < 1 {
        return Err(Error::device("cuBLASLt offers no int8 algorithm for this shape on this device"));
    }
    Ok(result.algo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_shapes_are_padded_and_chunked_as_cublaslt_wants() {
        assert_eq!((cb_row_stride(1), cb_row_stride(16), cb_row_stride(4097)), (16, 16, 4112));
        assert_eq!((padded_n(77), padded_rows(1), padded_rows(16)), (80, 4, 16));
        for rows in [4, 64, 4096, 1 << 20] {
            for n in [16, 4096, 28672] {
                let chunk = chunk_rows(rows, n);
                assert!(chunk.is_multiple_of(16) && chunk > 0 && chunk <= n, "{rows} {n} {chunk}");
                assert!(chunk == n || rows * chunk * 4 <= ACC_BUDGET_BYTES || chunk == 256, "{rows} {n} {chunk}");
            }
        }
    }

    #[test]
    fn scratch_regions_are_aligned_and_disjoint() {
        let l = ScratchLayout::new(8, 4097, 4112, 300, 304).unwrap();
        let starts = [l.q, l.sa, l.flags, l.list, l.count, l.x_out, l.w_out, l.acc];
        assert!(starts.iter().all(|s| s % 256 == 0));
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
        assert!(l.acc + 8 * 304 * 4 <= l.total);
        assert!(ScratchLayout::new(usize::MAX / 2, 4097, 4112, 300, 304).is_err());
    }

    #[test]
    fn rows_too_long_for_int32_sums_are_refused() {
        assert!(check_in_features(MAX_IN_FEATURES).is_ok());
        assert_eq!(check_in_features(MAX_IN_FEATURES + 1).unwrap_err().status(), crate::Status::Unsupported);
    }
}
