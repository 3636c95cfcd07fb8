//! CUDA backend: library discovery, the driver context and streams, kernels
//! compiled with NVRTC, and the cuBLASLt int8 GEMM.
//!
//! Everything is reached through `dlopen` at run time ([`libs`]): the crate
//! builds and every CPU test passes on machines without CUDA, and a CUDA
//! context there fails with `NoDevice`, saying what was looked for.

/// Packs kernel arguments: a pointer to a local copy of each value.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        [$( (&$value as *const _ as *mut std::ffi::c_void), )*]
    };
}

pub(crate) mod device;
pub(crate) mod libs;
pub(crate) mod nvrtc;
pub(crate) mod ops;
pub(crate) mod runtime;
pub(crate) mod sys;
mod weight;

use std::sync::Arc;

use device::{Gpu, StreamState};
use sys::CUdeviceptr;

use crate::call::Matmul;
use crate::dtype::{DType, Data, DataMut};
use crate::error::Result;
use crate::quant::{InputRounding, RowScale};
use crate::{with_data, with_data_mut};

pub(crate) use ops::check_in_features;
pub(crate) use weight::Weight;

/// A matrix in device memory: its address and element type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceMatrix {
    pub ptr: CUdeviceptr,
    pub dtype: DType,
}

/// What a CUDA call takes from its context.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub rounding: InputRounding,
    pub row_scale: RowScale,
}

/// A matmul on device memory.
pub(crate) type DeviceMatmul<'a> = Matmul<'a, Weight, DeviceMatrix, DeviceMatrix, Settings>;
/// A matmul on host memory on a CUDA context.
pub(crate) type HostMatmul<'a, 'x, 'y> = Matmul<'a, Weight, Data<'x>, DataMut<'y>, Settings>;

/// Copies the outlier count at `count` (device) to the host, waiting for the stream.
fn read_count(gpu: &Gpu, state: &StreamState, count: CUdeviceptr) -> Result<usize> {
    Ok(read_ints::<1>(gpu, state, count)?[0].max(0) as usize)
}

/// [`read_count`] for a row-parallel call: the count and the first refused
/// row beside it in one copy; a refused `row_absmax` entry is an error.
fn read_row_parallel_count(gpu: &Gpu, state: &StreamState, count: CUdeviceptr) -> Result<usize> {
    debug_assert_eq!(ops::BAD_ROW_OFFSET, 4);
    let [n, row] = read_ints::<2>(gpu, state, count)?;
    if row != i32::MAX {
        return Err(crate::Error::invalid(format!(
            "row_absmax[{row}] is NaN, negative or below this rank's slice of row {row}: pass the MAX over every rank's statistics"
        )));
    }
    Ok(n.max(0) as usize)
}

/// Copies `N` ints from `at` (device) to the host, waiting for the stream.
fn read_ints<const N: usize>(gpu: &Gpu, state: &StreamState, at: CUdeviceptr) -> Result<[i32; N]> {
    let d = &gpu.rt.driver;
    let mut values = [0i32; N];
    // SAFETY: `at` is `4 · N` bytes of the scratch space; `values` receives them.
    unsafe {
        gpu.check(
            (d.cuMemcpyDtoHAsync)(values.as_mut_ptr().cast(), at, 4 * N, state.stream),
            "copying the outlier count",
        )?;
        gpu.check((d.cuStreamSynchronize)(state.stream), "cuStreamSynchronize")?;
    }
    Ok(values)
}

/// The matmul on device memory (see [`crate::Context::matmul_on_device`]),
/// on `gpu`, the context's device: queued on its stream; waits only when
/// `want_stats`. Returns the outlier count when `want_stats`, else 0.
///
/// # Safety
/// `call.x` and `call.y` are device memory of `gpu`'s device of the sizes the
/// shapes give.
pub(crate) unsafe fn matmul_device_memory(gpu: &Arc<Gpu>, call: &DeviceMatmul<'_>, want_stats: bool) -> Result<usize> {
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    refuse_stats_while_capturing(gpu, &state, want_stats)?;
    // SAFETY: as the caller promises.
    let count = unsafe { ops::matmul(gpu, call, &mut state)? };
    if want_stats {
        read_count(gpu, &state, count)
    } else {
        Ok(0)
    }
}

/// [`ops::matmul_shared_input`] on device memory (see
/// [`crate::Context::matmul_shared_input_on_device`]), queued on the stream
/// of `gpu`; waits only when `want_stats`. Returns the outlier count when
/// `want_stats`, else 0.
///
/// # Safety
/// `x` and every output are device memory of `gpu`'s device of the sizes the
/// shapes give.
pub(crate) unsafe fn matmul_shared_input_device_memory(
    gpu: &Arc<Gpu>,
    products: &[(&Weight, DeviceMatrix)],
    x: DeviceMatrix,
    rows: usize,
    threshold: f32,
    settings: Settings,
    want_stats: bool,
) -> Result<usize> {
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    refuse_stats_while_capturing(gpu, &state, want_stats)?;
    // SAFETY: as the caller promises.
    let count = unsafe { ops::matmul_shared_input(gpu, products, x, rows, threshold, None, settings, &mut state)? };
    if want_stats {
        read_count(gpu, &state, count)
    } else {
        Ok(0)
    }
}

/// Refuses a call that would wait for its statistics while the stream is
/// being captured into a CUDA graph (nothing is queued then).
fn refuse_stats_while_capturing(gpu: &Gpu, state: &StreamState, want_stats: bool) -> Result<()> {
    if want_stats {
        gpu.refuse_while_capturing(state, "a call that returns statistics (stats not NULL)")?;
    }
    Ok(())
}

/// Reserves the scratch space of `gpu`'s context for every matmul of up to
/// `rows` rows with weights of `in_features` columns and up to
/// `out_features` rows, so that such calls allocate nothing afterwards.
pub(crate) fn reserve(gpu: &Gpu, rows: usize, in_features: usize, out_features: usize) -> Result<()> {
    gpu.reserve_scratch(ops::scratch_bytes_for(rows, in_features, out_features)?)
}

/// [`ops::matmul_row_parallel`] on device memory (see
/// [`crate::Context::matmul_row_parallel_on_device`]), queued on the stream of
/// `gpu`; waits only when `want_stats`, then reports a refused `row_absmax`
/// entry. Returns the outlier count when `want_stats`, else 0.
///
/// # Safety
/// As [`matmul_device_memory`], and `row_absmax` device memory of `rows` float32.
pub(crate) unsafe fn matmul_row_parallel_device_memory(
    gpu: &Arc<Gpu>,
    call: &DeviceMatmul<'_>,
    row_absmax: CUdeviceptr,
    want_stats: bool,
) -> Result<usize> {
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    refuse_stats_while_capturing(gpu, &state, want_stats)?;
    // SAFETY: as the caller promises.
    let count = unsafe { ops::matmul_row_parallel(gpu, call, row_absmax, &mut state)? };
    if want_stats {
        read_row_parallel_count(gpu, &state, count)
    } else {
        Ok(0)
    }
}

/// [`ops::row_statistics`] on device memory, queued on the stream of `gpu`;
/// waits only when `want_stats`. Returns the outlier count when
/// `want_stats`, else 0.
///
/// # Safety
/// `x` device memory of `rows · in_features` elements of its dtype, `out` of
/// `rows` float32, on `gpu`'s device.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn row_statistics_device_memory(
    gpu: &Arc<Gpu>,
    w: &Weight,
    x: DeviceMatrix,
    rows: usize,
    threshold: f32,
    settings: Settings,
    out: CUdeviceptr,
    want_stats: bool,
) -> Result<usize> {
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    refuse_stats_while_capturing(gpu, &state, want_stats)?;
    // SAFETY: as the caller promises.
    let count = unsafe { ops::row_statistics(gpu, w, x, rows, threshold, settings, out, &mut state)? };
    if want_stats {
        read_count(gpu, &state, count)
    } else {
        Ok(0)
    }
}

/// [`ops::row_statistics`] on host memory on a CUDA context: copies `x` up,
/// the statistics down into `out`, and waits. Returns the outlier count.
pub(crate) fn row_statistics_host_memory(
    gpu: &Arc<Gpu>,
    w: &Weight,
    x: Data<'_>,
    rows: usize,
    threshold: f32,
    settings: Settings,
    out: &mut [f32],
) -> Result<usize> {
    let x_dtype = x.dtype();
    let (x_host, x_bytes) = with_data!(x, x => (x.as_ptr().cast::<std::ffi::c_void>(), std::mem::size_of_val(x)));
    let out_bytes = std::mem::size_of_val(out);
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    gpu.refuse_while_capturing(&state, "a call on host memory")?;
    let d = &gpu.rt.driver;
    let x_dev = StreamBuffer::new(gpu, &state, x_bytes, "cuMemAllocAsync (x)")?;
    let out_dev = StreamBuffer::new(gpu, &state, out_bytes, "cuMemAllocAsync (row_absmax)")?;
    let stream = state.stream;
    // SAFETY (this block): the device buffers hold the bytes copied; `x` and
    // `out` are borrowed for this whole function and the stream is waited on
    // before it returns (read_count, or `waiting_on_error` on a failure).
    gpu.waiting_on_error(stream, || unsafe {
        gpu.check((d.cuMemcpyHtoDAsync)(x_dev.ptr, x_host, x_bytes, state.stream), "copying x to the device")?;
        let x_matrix = DeviceMatrix { ptr: x_dev.ptr, dtype: x_dtype };
        let count = ops::row_statistics(gpu, w, x_matrix, rows, threshold, settings, out_dev.ptr, &mut state)?;
        gpu.check(
            (d.cuMemcpyDtoHAsync)(out.as_mut_ptr().cast(), out_dev.ptr, out_bytes, state.stream),
            "copying row_absmax from the device",
        )?;
        read_count(gpu, &state, count)
    })
}

/// [`ops::matmul_row_parallel`] on host memory on a CUDA context: copies `x`
/// and `row_absmax` up, runs, copies `y` down, and waits. Returns the outlier
/// count; a `row_absmax` entry below this slice's own is refused.
pub(crate) fn matmul_row_parallel_host_memory(
    gpu: &Arc<Gpu>,
    call: HostMatmul<'_, '_, '_>,
    row_absmax: &[f32],
) -> Result<usize> {
    let Matmul { weight, x, rows, threshold, y, settings } = call;
    host_memory_products(gpu, &mut [(weight, y)], x, rows, threshold, Some(row_absmax), settings)
}

/// A stream-ordered device allocation, freed in stream order when dropped.
struct StreamBuffer<'a> {
    gpu: &'a Gpu,
    stream: sys::CUstream,
    ptr: CUdeviceptr,
}

impl<'a> StreamBuffer<'a> {
    fn new(gpu: &'a Gpu, state: &StreamState, bytes: usize, what: &str) -> Result<StreamBuffer<'a>> {
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: valid out-pointer; the stream belongs to this context.
        gpu.check(unsafe { (gpu.rt.driver.cuMemAllocAsync)(&mut ptr, bytes.max(1), state.stream) }, what)?;
        Ok(StreamBuffer { gpu, stream: state.stream, ptr })
    }
}

impl Drop for StreamBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated on this stream in `new`, freed once in stream order.
        unsafe { (self.gpu.rt.driver.cuMemFreeAsync)(self.ptr, self.stream) };
    }
}

/// The matmul on host memory on a CUDA context (`gpu`): copies `x` up, runs,
/// copies `y` down, and waits. Returns the outlier count.
pub(crate) fn matmul_host_memory(gpu: &Arc<Gpu>, call: HostMatmul<'_, '_, '_>) -> Result<usize> {
    let Matmul { weight, x, rows, threshold, y, settings } = call;
    matmul_shared_input_host_memory(gpu, &mut [(weight, y)], x, rows, threshold, settings)
}

/// [`ops::matmul_shared_input`] on host memory on a CUDA context: copies `x`
/// up once, runs every weight's product, copies each `y` down, and waits.
/// Returns the outlier count.
pub(crate) fn matmul_shared_input_host_memory(
    gpu: &Arc<Gpu>,
    products: &mut [(&Weight, DataMut<'_>)],
    x: Data<'_>,
    rows: usize,
    threshold: f32,
    settings: Settings,
) -> Result<usize> {
    host_memory_products(gpu, products, x, rows, threshold, None, settings)
}

/// [`matmul_shared_input_host_memory`], row-parallel when `row_absmax` is given.
fn host_memory_products(
    gpu: &Arc<Gpu>,
    products: &mut [(&Weight, DataMut<'_>)],
    x: Data<'_>,
    rows: usize,
    threshold: f32,
    row_absmax: Option<&[f32]>,
    settings: Settings,
) -> Result<usize> {
    let x_dtype = x.dtype();
    // Only addresses and byte counts cross to the device: no per-dtype body.
    let (x_host, x_bytes) = with_data!(x, x => (x.as_ptr().cast::<std::ffi::c_void>(), std::mem::size_of_val(x)));
    let ys: Vec<(*mut std::ffi::c_void, usize, DType)> = products
        .iter_mut()
        .map(|(_, y)| {
            let dtype = y.dtype();
            with_data_mut!(y, y => (y.as_mut_ptr().cast::<std::ffi::c_void>(), std::mem::size_of_val(*y), dtype))
        })
        .collect();
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    gpu.refuse_while_capturing(&state, "a call on host memory")?;
    let d = &gpu.rt.driver;
    let x_dev = StreamBuffer::new(gpu, &state, x_bytes, "cuMemAllocAsync (x)")?;
    let y_devs: Vec<StreamBuffer<'_>> = ys
        .iter()
        .map(|&(_, bytes, _)| StreamBuffer::new(gpu, &state, bytes, "cuMemAllocAsync (y)"))
        .collect::<Result<_>>()?;
    let given_bytes = row_absmax.map_or(0, std::mem::size_of_val);
    let given_dev = row_absmax.map(|_| StreamBuffer::new(gpu, &state, given_bytes, "cuMemAllocAsync (row_absmax)"));
    let given_dev = given_dev.transpose()?;
    let on_device: Vec<(&Weight, DeviceMatrix)> = products
        .iter()
        .zip(&y_devs)
        .zip(&ys)
        .map(|(((w, _), dev), &(_, _, dtype))| (*w, DeviceMatrix { ptr: dev.ptr, dtype }))
        .collect();
    let x_matrix = DeviceMatrix { ptr: x_dev.ptr, dtype: x_dtype };
    let stream = state.stream;
    // SAFETY (this block): the device buffers hold the bytes copied; `x` and
    // the outputs are borrowed for this whole function, so the host addresses
    // stay valid; the stream is waited on before they go back (read_count, or
    // `waiting_on_error` on a failure).
    gpu.waiting_on_error(stream, || unsafe {
        gpu.check((d.cuMemcpyHtoDAsync)(x_dev.ptr, x_host, x_bytes, state.stream), "copying x to the device")?;
        if let (Some(given), Some(dev)) = (row_absmax, &given_dev) {
            let host = given.as_ptr().cast();
            gpu.check((d.cuMemcpyHtoDAsync)(dev.ptr, host, given_bytes, state.stream), "copying row_absmax up")?;
        }
        let given = given_dev.as_ref().map(|dev| dev.ptr);
        let count = ops::matmul_shared_input(gpu, &on_device, x_matrix, rows, threshold, given, settings, &mut state)?;
        for (&(y_host, y_bytes, _), y_dev) in ys.iter().zip(&y_devs) {
            gpu.check((d.cuMemcpyDtoHAsync)(y_host, y_dev.ptr, y_bytes, state.stream), "copying y from the device")?;
        }
        if given.is_some() {
            read_row_parallel_count(gpu, &state, count)
        } else {
            read_count(gpu, &state, count)
        }
    })
}

/// What the CUDA backend finds on this machine, one fact per line: where each
/// library was found and its version, the driver's CUDA version, and each
/// device. An error (`NoDevice`, listing what was tried) when it is unusable.
pub fn report() -> Result<String> {
    use std::fmt::Write as _;
    let rt = runtime::runtime()?;
    let mut out = String::new();
    let v = rt.driver_version;
    let _ = writeln!(out, "driver: {} (CUDA {}.{})", rt.paths[0], v / 1000, v % 1000 / 10);
    let nvrtc_version = nvrtc::version(&rt.nvrtc).map(|(a, b)| format!("{a}.{b}")).unwrap_or_else(|e| e);
    let _ = writeln!(out, "NVRTC: {} ({nvrtc_version})", rt.paths[1]);
    // SAFETY: cublasLtGetVersion takes no arguments and has no preconditions.
    let lt_version = unsafe { (rt.lt.cublasLtGetVersion)() };
    let _ = writeln!(out, "cuBLASLt: {} (version {lt_version})", rt.paths[2]);
    let mut count = 0;
    // SAFETY: a valid out-pointer.
    let r = unsafe { (rt.driver.cuDeviceGetCount)(&mut count) };
    if r != sys::CUDA_SUCCESS {
        let _ = writeln!(out, "devices: {}", runtime::describe_driver_error(&rt.driver, r));
    } else if count == 0 {
        let _ = writeln!(out, "devices: none");
    }
    for ordinal in 0..count {
        match Gpu::open(ordinal) {
            Ok(gpu) => {
                let _ = writeln!(out, "device {ordinal}: {} (sm_{}), kernels compiled and loaded", gpu.name, gpu.arch);
            }
            Err(e) => {
                let _ = writeln!(out, "device {ordinal}: unusable: {e}");
            }
        }
    }
    Ok(out)
}
