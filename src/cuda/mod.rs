//! CUDA backend: library discovery, the driver context and streams, kernels
//! compiled with NVRTC, and the cuBLASLt int8 GEMM.
//!
//! Everything is reached through `dlopen` at run time ([`libs`]): the crate
//! builds and every CPU test passes on machines without CUDA, and a CUDA
//! context there fails with `NoDevice`, saying what was looked for.

pub(crate) mod device;
pub(crate) mod libs;
pub(crate) mod nvrtc;
pub(crate) mod ops;
pub(crate) mod params;
pub(crate) mod runtime;
pub(crate) mod sys;
mod weight;

use std::ffi::c_void;
use std::sync::Arc;

use device::{Gpu, StreamState};
use sys::CUdeviceptr;

use crate::call::{Call, Host, Space, Work};
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

/// Device memory: addresses.
pub(crate) struct Device;

impl Space for Device {
    type Matrix<'a> = DeviceMatrix;
    type MatrixMut<'a> = DeviceMatrix;
    type Floats<'a> = CUdeviceptr;
    type FloatsMut<'a> = CUdeviceptr;
}

/// What a CUDA call takes from its context.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub rounding: InputRounding,
    pub row_scale: RowScale,
}

/// A call on device memory.
pub(crate) type DeviceCall<'a> = Call<'a, Weight, Device, Settings>;
/// A call on host memory on a CUDA context.
pub(crate) type HostCall<'a> = Call<'a, Weight, Host, Settings>;

/// Copies the outlier count at `count` (device) to the host, waiting for the
/// stream; a row-parallel partial's refused `row_absmax` entry (its first
/// refused row lies beside the count, read in the same copy) is an error.
fn read_count(gpu: &Gpu, state: &StreamState, count: CUdeviceptr, work: &Work<'_, Device>) -> Result<usize> {
    debug_assert_eq!(ops::BAD_ROW_OFFSET, 4);
    let [n, row] = read_ints::<2>(gpu, state, count)?;
    if matches!(work, Work::Partial { .. }) && row != i32::MAX {
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

/// Runs a call on device memory (see [`crate::Context::run`]) on `gpu`, the
/// context's device: queued on its stream; waits only when `wait_for_stats`,
/// then returns the outlier count (0 otherwise) and reports a refused
/// `row_absmax` entry of a row-parallel partial.
///
/// # Safety
/// The call's buffers are device memory of `gpu`'s device of the sizes its
/// shapes give, valid until the work on the stream has finished.
pub(crate) unsafe fn run_device_memory(gpu: &Arc<Gpu>, call: &DeviceCall<'_>, wait_for_stats: bool) -> Result<usize> {
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    if wait_for_stats {
        gpu.refuse_while_capturing(&state, "a call that returns statistics (stats not NULL)")?;
    }
    // SAFETY: as the caller promises.
    let count = unsafe { ops::run(gpu, call, &mut state)? };
    if wait_for_stats {
        read_count(gpu, &state, count, &call.work)
    } else {
        Ok(0)
    }
}

/// Reserves the scratch space of `gpu`'s context for every matmul of up to
/// `rows` rows with weights of `in_features` columns and up to
/// `out_features` rows, so that such calls allocate nothing afterwards.
pub(crate) fn reserve(gpu: &Gpu, rows: usize, in_features: usize, out_features: usize) -> Result<()> {
    gpu.reserve_scratch(ops::scratch_bytes_for(rows, in_features, out_features)?)
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

/// A host buffer's address and size in bytes: what crosses to the device.
fn host_bytes(data: &Data<'_>) -> (*const c_void, usize) {
    with_data!(data, s => (s.as_ptr().cast(), std::mem::size_of_val(*s)))
}

/// Runs a call on host memory on a CUDA context (`gpu`): copies `x` (and a
/// partial's `row_absmax`) up into stream-ordered buffers, runs the call
/// there, copies every output down, and waits. Returns the outlier count; a
/// refused `row_absmax` entry is an error.
pub(crate) fn run_host_memory(gpu: &Arc<Gpu>, call: HostCall<'_>) -> Result<usize> {
    // `work` keeps the caller's buffers borrowed until this function returns:
    // the raw addresses taken from it below stay valid for the copies.
    let Call { weights, x, rows, threshold, mut work, settings } = call;
    let (x_host, x_bytes) = host_bytes(&x);
    // Each output's host address, size and dtype.
    let outputs: Vec<(*mut c_void, usize, DType)> = match &mut work {
        Work::Products(ys) => ys.iter_mut().map(host_output).collect(),
        Work::Partial { y, .. } => vec![host_output(y)],
        Work::Statistics { row_absmax } => {
            vec![(row_absmax.as_mut_ptr().cast(), std::mem::size_of_val(*row_absmax), DType::F32)]
        }
    };
    let _current = gpu.make_current()?;
    let mut state = gpu.state();
    gpu.refuse_while_capturing(&state, "a call on host memory")?;
    let (d, stream) = (&gpu.rt.driver, state.stream);
    let x_dev = StreamBuffer::new(gpu, &state, x_bytes, "cuMemAllocAsync (x)")?;
    let out_devs: Vec<StreamBuffer<'_>> = outputs
        .iter()
        .map(|&(_, bytes, _)| StreamBuffer::new(gpu, &state, bytes, "cuMemAllocAsync (output)"))
        .collect::<Result<_>>()?;
    let on_device = |i: usize| DeviceMatrix { ptr: out_devs[i].ptr, dtype: outputs[i].2 };
    // A partial's row_absmax goes up too: (device buffer, host address, bytes).
    let mut given = None;
    let device_work = match &work {
        Work::Products(_) => Work::Products((0..outputs.len()).map(on_device).collect()),
        Work::Partial { row_absmax, .. } => {
            let bytes = std::mem::size_of_val(*row_absmax);
            let buffer = StreamBuffer::new(gpu, &state, bytes, "cuMemAllocAsync (row_absmax)")?;
            let device_work = Work::Partial { row_absmax: buffer.ptr, y: on_device(0) };
            given = Some((buffer, row_absmax.as_ptr().cast::<c_void>(), bytes));
            device_work
        }
        Work::Statistics { .. } => Work::Statistics { row_absmax: out_devs[0].ptr },
    };
    let x = DeviceMatrix { ptr: x_dev.ptr, dtype: x.dtype() };
    let device_call = DeviceCall { weights, x, rows, threshold, work: device_work, settings };
    // SAFETY (this block): the device buffers hold the bytes copied; the host
    // addresses stay valid (above); the stream is waited on before they go
    // back (read_count, or `waiting_on_error` on a failure).
    gpu.waiting_on_error(stream, || unsafe {
        gpu.check((d.cuMemcpyHtoDAsync)(x_dev.ptr, x_host, x_bytes, stream), "copying x to the device")?;
        if let Some((dev, host, bytes)) = &given {
            gpu.check((d.cuMemcpyHtoDAsync)(dev.ptr, *host, *bytes, stream), "copying row_absmax up")?;
        }
        let count = ops::run(gpu, &device_call, &mut state)?;
        for (&(host, bytes, _), dev) in outputs.iter().zip(&out_devs) {
            gpu.check((d.cuMemcpyDtoHAsync)(host, dev.ptr, bytes, stream), "copying an output from the device")?;
        }
        read_count(gpu, &state, count, &device_call.work)
    })
}

/// An output's host address, size in bytes and dtype.
fn host_output(y: &mut DataMut<'_>) -> (*mut c_void, usize, DType) {
    let dtype = y.dtype();
    with_data_mut!(y, s => (s.as_mut_ptr().cast(), std::mem::size_of_val(*s), dtype))
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
