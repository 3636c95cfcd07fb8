//! A call as a caller states it — [`Request`]: the operation, its weights and
//! its buffers in host or device memory — and the checks that turn it into
//! the [`Call`] a backend runs. Every matmul entry point, Rust or C, goes
//! through [`Context::run`](super::Context::run) and these checks once.

use std::ffi::c_void;

use crate::call::{Call, Host, Work};
use crate::cuda::{device::Gpu, Device, DeviceMatrix};
use crate::dtype::{DType, Data, DataMut};
use crate::error::{check_len, checked_len, Error, Result};
use crate::smoothing::Smoothing;
use crate::weight::Weight;

/// Elements of one dtype in a CUDA context's device memory (an address the
/// library does not own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceData {
    ptr: u64,
    dtype: DType,
}

impl DeviceData {
    /// Device memory at `ptr` holding elements of `dtype`.
    ///
    /// # Safety
    /// `ptr` must be NULL or device memory of the device of the context that
    /// runs the request holding it, with as many elements as the request's
    /// shapes give, readable (an input) or writable (an output) until the
    /// work on the context's stream has finished.
    pub unsafe fn new(ptr: *const c_void, dtype: DType) -> DeviceData {
        DeviceData { ptr: ptr as u64, dtype }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// A buffer a call reads.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Host(Data<'a>),
    Device(DeviceData),
}

/// A buffer a call writes.
#[derive(Debug)]
pub enum Output<'a> {
    Host(DataMut<'a>),
    Device(DeviceData),
}

/// What a [`Request`] computes.
#[derive(Debug)]
pub enum Operation<'a> {
    /// `ys[i] = x · weights[i]ᵀ + b[i]`, `ys[i]` `[rows, weights[i].out_features]`:
    /// one weight (a plain matmul), or several that share their input — q/k/v,
    /// gate/up — with X quantized and its outlier columns found once; every
    /// output is bit for bit that of a call with its weight alone. The weights
    /// share in_features, the outputs one dtype.
    Matmul { weights: &'a [&'a Weight], ys: Vec<Output<'a>> },
    /// Stage 1 of a row-parallel matmul: `row_absmax` (`rows` float32)
    /// receives each row's absmax of the int8 part of this rank's slice of X,
    /// for its shard `weight` (see [`super::Context::row_parallel_statistics`]).
    RowParallelStatistics { weight: &'a Weight, row_absmax: Output<'a> },
    /// Stage 2: this rank's partial output `y` `[rows, out_features]`, each
    /// row of X quantized with `row_absmax` (`rows` float32, the MAX over the
    /// ranks of stage 1; see [`super::Context::matmul_row_parallel`]).
    RowParallelMatmul { weight: &'a Weight, row_absmax: Input<'a>, y: Output<'a> },
}

/// One call of the LLM.int8() matmul: `x` `[rows, in_features]` row-major,
/// the outlier `threshold` (0 turns the decomposition off), the operation.
/// Every buffer is in one memory space: host memory (any context; a CUDA
/// context copies to the device and back and waits) or the device memory of
/// a CUDA context (queued on its stream without waiting, unless
/// `wait_for_stats`).
#[derive(Debug)]
pub struct Request<'a> {
    pub x: Input<'a>,
    pub rows: usize,
    pub threshold: f32,
    pub operation: Operation<'a>,
    /// Device memory: wait for the stream and report the outlier count (and,
    /// row-parallel, a refused `row_absmax` entry). Host memory always waits.
    pub wait_for_stats: bool,
}

/// The memory space of a request's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Memory {
    Host,
    Device,
}

impl Input<'_> {
    fn dtype(&self) -> DType {
        match self {
            Input::Host(data) => data.dtype(),
            Input::Device(data) => data.dtype,
        }
    }
}

impl Output<'_> {
    fn dtype(&self) -> DType {
        match self {
            Output::Host(data) => data.dtype(),
            Output::Device(data) => data.dtype,
        }
    }
}

/// A buffer's name in messages: `x`, `y`, `ys[i]`, `row_absmax` (formatted
/// only when a check fails: the checks run on every call).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Name(&'static str, Option<usize>);

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(i) => write!(f, "{}[{i}]", self.0),
            None => f.write_str(self.0),
        }
    }
}

/// `rows · cols` elements, or a shape error naming the buffer.
fn elements(rows: usize, cols: usize, name: Name) -> Result<usize> {
    rows.checked_mul(cols).map_or_else(|| checked_len(rows, cols, &name.to_string()), Ok)
}

/// A buffer of a request as the checks see it.
struct Buffer {
    name: Name,
    dtype: DType,
    /// Elements in host memory; `None` for device memory (no length to check).
    host_len: Option<usize>,
    /// Elements the shapes ask for.
    len: usize,
    /// The device address (0 for host memory).
    ptr: u64,
}

impl Buffer {
    fn memory(&self) -> Memory {
        if self.host_len.is_some() {
            Memory::Host
        } else {
            Memory::Device
        }
    }
}

impl<'a> Request<'a> {
    /// The request's weights: at least one.
    pub(super) fn weights(&self) -> &[&'a Weight] {
        match &self.operation {
            Operation::Matmul { weights, .. } => weights,
            Operation::RowParallelStatistics { weight, .. } | Operation::RowParallelMatmul { weight, .. } => {
                std::slice::from_ref(weight)
            }
        }
    }

    /// Checks the weights against each other (shared in_features, one output
    /// each); returns their in_features. Where they live is the context's check.
    pub(super) fn check_weights(&self) -> Result<usize> {
        let weights = self.weights();
        let Some(first) = weights.first() else { return Err(Error::invalid("no weights given")) };
        if let Operation::Matmul { ys, .. } = &self.operation {
            if ys.len() != weights.len() {
                return Err(Error::invalid(format!("{} weights but {} outputs", weights.len(), ys.len())));
            }
        }
        let k = first.in_features();
        for (i, w) in weights.iter().enumerate() {
            if w.in_features() != k {
                return Err(Error::shape(format!(
                    "weights[{i}] has in_features {}, weights[0] {k}: a shared input needs the same",
                    w.in_features()
                )));
            }
            // One activation pass serves them all: it divides by one vector.
            if !Smoothing::same(w.smoothing_of(), first.smoothing_of()) {
                let which = match (w.smoothing_of(), first.smoothing_of()) {
                    (Some(_), Some(_)) => format!("weights[{i}] and weights[0] have different smoothing vectors"),
                    (Some(_), None) => format!("weights[{i}] is smoothed and weights[0] is not"),
                    _ => format!("weights[0] is smoothed and weights[{i}] is not"),
                };
                return Err(Error::invalid(format!(
                    "{which}: weights sharing an input must share one smoothing vector (one activation pass divides by it)"
                )));
            }
        }
        Ok(k)
    }

    /// Every buffer with the length its shape asks for (checked not to overflow).
    fn buffers(&self, k: usize) -> Result<Vec<Buffer>> {
        let rows = self.rows;
        let input = |name: Name, b: &Input<'_>, len: usize| Buffer {
            name,
            dtype: b.dtype(),
            host_len: if let Input::Host(d) = b { Some(d.len()) } else { None },
            len,
            ptr: if let Input::Device(d) = b { d.ptr } else { 0 },
        };
        let output = |name: Name, b: &Output<'_>, len: usize| Buffer {
            name,
            dtype: b.dtype(),
            host_len: if let Output::Host(d) = b { Some(d.len()) } else { None },
            len,
            ptr: if let Output::Device(d) = b { d.ptr } else { 0 },
        };
        let x = Name("x", None);
        let mut buffers = Vec::with_capacity(4);
        buffers.push(input(x, &self.x, elements(rows, k, x)?));
        match &self.operation {
            Operation::Matmul { weights, ys } => {
                let single = ys.len() == 1;
                for (i, (w, y)) in weights.iter().zip(ys).enumerate() {
                    let name = if single { Name("y", None) } else { Name("ys", Some(i)) };
                    buffers.push(output(name, y, elements(rows, w.out_features(), name)?));
                }
            }
            Operation::RowParallelStatistics { row_absmax, .. } => {
                check_float32(row_absmax.dtype())?;
                buffers.push(output(Name("row_absmax", None), row_absmax, rows))
            }
            Operation::RowParallelMatmul { weight, row_absmax, y } => {
                check_float32(row_absmax.dtype())?;
                buffers.push(input(Name("row_absmax", None), row_absmax, rows));
                let name = Name("y", None);
                buffers.push(output(name, y, elements(rows, weight.out_features(), name)?));
            }
        }
        Ok(buffers)
    }

    /// Checks the buffers' lengths (host memory), dtypes and memory space;
    /// returns the space. `row_absmax` must be float32 and the outputs of a
    /// shared input share one dtype. Device memory with rows to compute
    /// needs `gpu`, the context's device (`Unsupported` on a CPU context),
    /// and every address must be that device's memory, not NULL.
    pub(super) fn check_buffers(&self, k: usize, gpu: Option<&Gpu>) -> Result<Memory> {
        let buffers = self.buffers(k)?;
        let memory = buffers[0].memory();
        let y_dtype = buffers.get(1).map(|b| b.dtype);
        for b in &buffers {
            if b.memory() != memory {
                return Err(Error::invalid(format!(
                    "x is in {} memory, {} in {}: a call's buffers are all in one memory space",
                    memory.name(),
                    b.name,
                    b.memory().name()
                )));
            }
            if let Some(len) = b.host_len {
                if len != b.len {
                    check_len(&b.name.to_string(), len, b.len)?;
                }
            }
        }
        if let (Operation::Matmul { .. }, Some(y_dtype)) = (&self.operation, y_dtype) {
            for b in &buffers[1..] {
                if b.dtype != y_dtype {
                    return Err(Error::invalid(format!(
                        "{} is {}, {} {}: the outputs share one dtype",
                        b.name,
                        b.dtype.name(),
                        buffers[1].name,
                        y_dtype.name()
                    )));
                }
            }
        }
        // No rows: nothing is read or written, and the addresses may be NULL.
        if memory == Memory::Device && self.rows > 0 {
            let Some(gpu) = gpu else {
                return Err(Error::unsupported("a call on device memory needs a CUDA context"));
            };
            for b in &buffers {
                if b.ptr == 0 {
                    return Err(Error::invalid(format!("{} is NULL", b.name)));
                }
                gpu.check_device_pointer(b.ptr as *const c_void, &b.name.to_string())?;
            }
        }
        Ok(memory)
    }

    /// The host-memory call for a backend whose weights `weight_of` picks,
    /// with `settings`. The buffers were checked to be host memory.
    pub(super) fn into_host_call<W, S>(
        self,
        weight_of: impl Fn(&'a Weight) -> Result<&'a W>,
        settings: S,
    ) -> Result<Call<'a, W, Host, S>> {
        let weights = self.weights().iter().map(|&w| weight_of(w)).collect::<Result<Vec<_>>>()?;
        let host = |b: Input<'a>| match b {
            Input::Host(data) => Ok(data),
            Input::Device(_) => Err(Error::invalid("a host-memory call was given device memory")),
        };
        let host_mut = |b: Output<'a>| match b {
            Output::Host(data) => Ok(data),
            Output::Device(_) => Err(Error::invalid("a host-memory call was given device memory")),
        };
        let work = match self.operation {
            Operation::Matmul { ys, .. } => Work::Products(ys.into_iter().map(host_mut).collect::<Result<_>>()?),
            Operation::RowParallelStatistics { row_absmax, .. } => {
                Work::Statistics { row_absmax: f32_slice_mut(host_mut(row_absmax)?)? }
            }
            Operation::RowParallelMatmul { row_absmax, y, .. } => {
                Work::Partial { row_absmax: f32_slice(host(row_absmax)?)?, y: host_mut(y)? }
            }
        };
        let call = Call { weights, x: host(self.x)?, rows: self.rows, threshold: self.threshold, work, settings };
        Ok(call)
    }

    /// The device-memory call, as [`Request::into_host_call`].
    pub(super) fn into_device_call<W, S>(
        self,
        weight_of: impl Fn(&'a Weight) -> Result<&'a W>,
        settings: S,
    ) -> Result<Call<'a, W, Device, S>> {
        let weights = self.weights().iter().map(|&w| weight_of(w)).collect::<Result<Vec<_>>>()?;
        let device = |b: Input<'_>| match b {
            Input::Device(d) => Ok(DeviceMatrix { ptr: d.ptr, dtype: d.dtype }),
            Input::Host(_) => Err(Error::invalid("a device-memory call was given host memory")),
        };
        let device_mut = |b: Output<'_>| match b {
            Output::Device(d) => Ok(DeviceMatrix { ptr: d.ptr, dtype: d.dtype }),
            Output::Host(_) => Err(Error::invalid("a device-memory call was given host memory")),
        };
        let work: Work<'a, Device> = match self.operation {
            Operation::Matmul { ys, .. } => Work::Products(ys.into_iter().map(device_mut).collect::<Result<_>>()?),
            Operation::RowParallelStatistics { row_absmax, .. } => {
                Work::Statistics { row_absmax: device_mut(row_absmax)?.ptr }
            }
            Operation::RowParallelMatmul { row_absmax, y, .. } => {
                Work::Partial { row_absmax: device(row_absmax)?.ptr, y: device_mut(y)? }
            }
        };
        let call = Call { weights, x: device(self.x)?, rows: self.rows, threshold: self.threshold, work, settings };
        Ok(call)
    }
}

impl Memory {
    fn name(self) -> &'static str {
        match self {
            Memory::Host => "host",
            Memory::Device => "device",
        }
    }
}

/// `row_absmax` is float32 whatever the call's other dtypes.
fn check_float32(dtype: DType) -> Result<()> {
    if dtype != DType::F32 {
        return Err(Error::invalid(format!("row_absmax is {}: it is float32", dtype.name())));
    }
    Ok(())
}

fn f32_slice(data: Data<'_>) -> Result<&[f32]> {
    match data {
        Data::F32(s) => Ok(s),
        other => Err(Error::invalid(format!("row_absmax is {}: it is float32", other.dtype().name()))),
    }
}

fn f32_slice_mut(data: DataMut<'_>) -> Result<&mut [f32]> {
    match data {
        DataMut::F32(s) => Ok(s),
        other => Err(Error::invalid(format!("row_absmax is {}: it is float32", other.dtype().name()))),
    }
}
