//! The safe API: a context chooses where the work runs; it builds weights and
//! runs the matmul and the row quantizer on them.

mod checkpoint;
mod request;

pub use checkpoint::save_weight;
pub use request::{DeviceData, Input, Operation, Output, Request};

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::cpu::{self, CpuPath};
use crate::cuda::{self, device::Gpu};
use crate::dtype::{DType, Data, DataMut};
use crate::error::{check_len, checked_len, Error, Result};
use crate::quant::{self, InputRounding, RowScale};
use crate::weight::{Int8Extras, Location, Storage, Weight, WeightOptions};
use crate::with_data;
use request::Memory;

/// Where a caller asks the work to run (a context then runs at one
/// [`Location`]). Codes are part of ABI version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Backend {
    /// The GPU when one is usable, else the CPU.
    Auto = 0,
    Cpu = 1,
    Cuda = 2,
}

impl Backend {
    /// The backend that runs at `location` (never `Auto`).
    pub fn of(location: Location) -> Backend {
        match location {
            Location::Cpu => Backend::Cpu,
            Location::Cuda { .. } => Backend::Cuda,
        }
    }

    pub fn from_code(code: i32) -> Result<Backend> {
        match code {
            0 => Ok(Backend::Auto),
            1 => Ok(Backend::Cpu),
            2 => Ok(Backend::Cuda),
            _ => Err(Error::invalid(format!(
                "unknown backend {code} (expected LLMINT8_BACKEND_AUTO=0, _CPU=1 or _CUDA=2)"
            ))),
        }
    }
}

/// A larger thread count asked of a context counts as this many, so that a
/// mistaken `SIZE_MAX` cannot make a call try to spawn more threads than exist.
pub const MAX_THREADS: usize = 1024;

/// What a matmul reports besides its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulStats {
    /// Feature columns of X sent through the floating-point outlier product.
    pub outlier_columns: usize,
}

/// A backend instance. Shareable across threads: every method takes `&self`.
#[derive(Debug)]
pub struct Context {
    /// 0 means [`cpu::default_num_threads`].
    num_threads: AtomicUsize,
    /// Whether inputs are rounded to float16 before quantization ([`InputRounding::Float16`]).
    round_inputs_to_f16: AtomicBool,
    /// Whether activation rows take the int8-part scale ([`RowScale::Int8Part`]).
    int8_part_row_scale: AtomicBool,
    /// Index into [`CpuPath::ALL`]; always a path this processor runs.
    cpu_path: AtomicU8,
    place: Place,
}

/// Where a context runs: the one thing the rest of this file matches on.
#[derive(Debug)]
enum Place {
    Cpu,
    Cuda(Arc<Gpu>),
}

/// A CUDA context waits for the work it queued and gives up the engine's
/// stream and its scratch space: its weights may keep the device open after
/// it, and the engine may destroy the stream next.
impl Drop for Context {
    fn drop(&mut self) {
        if let Place::Cuda(gpu) = &self.place {
            gpu.release_stream();
        }
    }
}

impl Context {
    /// Creates a context. `Cuda` opens CUDA device `device` (`NoDevice` when no
    /// driver, library or device is usable, saying what was looked for);
    /// `Auto` takes CUDA device `device` when it is usable, else the CPU.
    ///
    /// Refuses an `LLMINT8_CPU_PATH` that names no CPU path or one this
    /// processor cannot run (`InvalidArgument`, `Unsupported`), whatever the
    /// backend: a forced path is never silently replaced.
    pub fn new(backend: Backend, device: i32) -> Result<Context> {
        CpuPath::from_environment()?;
        let cpu = |device: i32| {
            if device != 0 {
                return Err(Error::invalid(format!("the CPU backend has only device 0, got {device}")));
            }
            Ok(Context::cpu())
        };
        match backend {
            Backend::Cpu => cpu(device),
            Backend::Cuda => Ok(Context::on_gpu(Gpu::open(device)?)),
            Backend::Auto => match Gpu::open(device) {
                Ok(gpu) => Ok(Context::on_gpu(gpu)),
                Err(e) if e.status() == crate::Status::NoDevice => cpu(device),
                Err(e) => Err(e),
            },
        }
    }

    fn on_gpu(gpu: Arc<Gpu>) -> Context {
        let mut context = Context::cpu();
        context.place = Place::Cuda(gpu);
        context
    }

    /// A CPU context using the default number of threads and the default CPU
    /// path ([`CpuPath::default_for_process`]; unlike [`Context::new`], it
    /// falls back to the fastest path when `LLMINT8_CPU_PATH` is refused).
    pub fn cpu() -> Context {
        Context {
            num_threads: AtomicUsize::new(0),
            round_inputs_to_f16: AtomicBool::new(false),
            int8_part_row_scale: AtomicBool::new(RowScale::default() == RowScale::Int8Part),
            cpu_path: AtomicU8::new(CpuPath::default_for_process() as u8),
            place: Place::Cpu,
        }
    }

    /// The CUDA device of this context, or an `Unsupported` error naming `what`.
    fn gpu(&self, what: &str) -> Result<&Arc<Gpu>> {
        match &self.place {
            Place::Cuda(gpu) => Ok(gpu),
            Place::Cpu => Err(Error::unsupported(format!("{what} needs a CUDA context"))),
        }
    }

    /// Reserves a CUDA context's scratch space for every matmul of up to
    /// `rows` rows with weights of `in_features` columns and up to
    /// `out_features` rows (plain, shared-input — `out_features` the largest
    /// weight's — or row-parallel), so that such calls on device memory
    /// afterwards allocate nothing: what capturing them in a CUDA graph
    /// needs. Call it before the capture (it allocates; refused while the
    /// stream is capturing). A CPU context has nothing to reserve: `Ok`.
    pub fn reserve(&self, rows: usize, in_features: usize, out_features: usize) -> Result<()> {
        if rows == 0 || in_features == 0 || out_features == 0 {
            return Err(Error::shape(format!(
                "reserve for {rows} rows, in_features {in_features}, out_features {out_features}: each must be > 0"
            )));
        }
        checked_len(rows, in_features, "rows · in_features")?;
        checked_len(rows, out_features, "rows · out_features")?;
        match &self.place {
            Place::Cuda(gpu) => cuda::reserve(gpu, rows, in_features, out_features),
            Place::Cpu => Ok(()),
        }
    }

    /// Sends this context's later device work to `stream` (a `CUstream` of the
    /// context's device; NULL is the default stream). Asynchronous: nothing
    /// waits on the host. CUDA contexts only.
    ///
    /// # Safety
    /// `stream` must be NULL or a live stream of this context's device, and
    /// stay live while work of this context may run on it.
    pub unsafe fn set_stream(&self, stream: *mut c_void) -> Result<()> {
        self.gpu("a CUDA stream")?.set_stream(stream)
    }

    /// Waits until all work queued by this context has finished (nothing to do
    /// on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        match &self.place {
            Place::Cuda(gpu) => gpu.synchronize(),
            Place::Cpu => Ok(()),
        }
    }

    /// Where this context runs its work and keeps its weights.
    pub fn location(&self) -> Location {
        match &self.place {
            Place::Cpu => Location::Cpu,
            Place::Cuda(gpu) => Location::Cuda { device: gpu.ordinal },
        }
    }

    /// Threads a call may use: the value set last, or the default
    /// (`LLMINT8_NUM_THREADS`, else the available processors); at most [`MAX_THREADS`].
    pub fn num_threads(&self) -> usize {
        let n = match self.num_threads.load(Ordering::Relaxed) {
            0 => cpu::default_num_threads(),
            n => n,
        };
        n.min(MAX_THREADS)
    }

    /// Sets how many threads later calls may use; 0 restores the default.
    /// Results do not depend on it, bit for bit.
    pub fn set_num_threads(&self, n: usize) {
        self.num_threads.store(n, Ordering::Relaxed);
    }

    /// The instruction set the CPU kernels of this context use: by default the
    /// fastest this processor has, or the one `LLMINT8_CPU_PATH` names.
    pub fn cpu_path(&self) -> CpuPath {
        CpuPath::ALL[self.cpu_path.load(Ordering::Relaxed) as usize]
    }

    /// Chooses the CPU kernels' instruction set (results do not change, bit for
    /// bit; tests and benchmarks compare paths). A path this processor cannot run
    /// is refused with `Unsupported`.
    pub fn set_cpu_path(&self, path: CpuPath) -> Result<()> {
        if !path.is_available() {
            return Err(Error::unsupported(format!("this processor cannot run the {} CPU path", path.name())));
        }
        self.cpu_path.store(path as u8, Ordering::Relaxed);
        Ok(())
    }

    /// How this context reads values before quantizing them (weights, and the
    /// activations of `matmul` and `quantize_rows`). Default: [`InputRounding::Exact`].
    pub fn input_rounding(&self) -> InputRounding {
        if self.round_inputs_to_f16.load(Ordering::Relaxed) {
            InputRounding::Float16
        } else {
            InputRounding::Exact
        }
    }

    /// Sets how later calls read values before quantizing them.
    pub fn set_input_rounding(&self, rounding: InputRounding) {
        self.round_inputs_to_f16.store(rounding == InputRounding::Float16, Ordering::Relaxed);
    }

    /// Which values set an activation row's scale when outliers are
    /// decomposed (the matmul and `quantize_rows`). Default:
    /// [`RowScale::Int8Part`] (closer to float32 on a real model; see
    /// docs/SEMANTICS.md); [`Context::match_bitsandbytes`] sets bitsandbytes' rule.
    pub fn row_scale(&self) -> RowScale {
        if self.int8_part_row_scale.load(Ordering::Relaxed) {
            RowScale::Int8Part
        } else {
            RowScale::BitsAndBytes
        }
    }

    /// Sets the row scale rule of later calls.
    pub fn set_row_scale(&self, rule: RowScale) {
        self.int8_part_row_scale.store(rule == RowScale::Int8Part, Ordering::Relaxed);
    }

    /// Computes what bitsandbytes' `Linear8bitLt` computes, bit for bit where
    /// its outputs are: inputs rounded to float16 and bitsandbytes' row scale.
    pub fn match_bitsandbytes(&self) {
        self.set_input_rounding(InputRounding::Float16);
        self.set_row_scale(RowScale::BitsAndBytes);
    }

    /// The settings a CPU call runs with, read once at its start.
    fn settings(&self) -> cpu::Settings {
        cpu::Settings {
            path: self.cpu_path(),
            rounding: self.input_rounding(),
            row_scale: self.row_scale(),
            threads: self.num_threads(),
        }
    }

    /// The settings a CUDA call runs with, read once at its start.
    fn cuda_settings(&self) -> cuda::Settings {
        cuda::Settings { rounding: self.input_rounding(), row_scale: self.row_scale() }
    }

    /// Quantizes a row-major 16/32-bit weight `[out_features, in_features]`.
    pub fn quantize_weight(
        &self,
        w: Data<'_>,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        self.quantize_weight_keep(w, out_features, in_features, bias, &[])
    }

    /// [`Context::quantize_weight`], the weight also keeping the columns `keep`
    /// of `w` in its dtype: a matmul's outlier column that is kept is
    /// multiplied by those values instead of the dequantized int8 column (the
    /// paper's 16-bit outlier weights). `keep` may be in any order; a column
    /// outside the shape or listed twice is refused. On a CUDA context the
    /// kept columns go to the device with the int8 values.
    pub fn quantize_weight_keep(
        &self,
        w: Data<'_>,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
        keep: &[u32],
    ) -> Result<Weight> {
        self.quantize_weight_with(w, out_features, in_features, bias, &WeightOptions { keep, ..Default::default() })
    }

    /// Quantizes a row-major 16/32-bit weight `[out_features, in_features]`
    /// as `options` say: kept columns, a smoothing vector (SmoothQuant's `s`:
    /// the int8 values are those of `W·diag(s)` and every matmul on the weight
    /// divides the activations by `s` before quantizing them), a row-parallel
    /// shard. A smoothing vector of the wrong length, or with a value that is
    /// not finite and > 0, is refused (`InvalidArgument`).
    pub fn quantize_weight_with(
        &self,
        w: Data<'_>,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
        options: &WeightOptions<'_>,
    ) -> Result<Weight> {
        // On a CUDA context: quantized on the host (the same bytes as the device
        // kernel), then only the int8 values go up, half the bytes of float16.
        self.place(Weight::quantize(self.settings(), w, out_features, in_features, bias, options)?)
    }

    /// A weight built on the host, moved to this context's device if it has one.
    fn place(&self, weight: Weight) -> Result<Weight> {
        match &self.place {
            Place::Cuda(gpu) => weight.into_device(gpu),
            Place::Cpu => Ok(weight),
        }
    }

    /// Quantizes a row-major weight `[out_features, in_features]` of `dtype`
    /// that is already in this context's device memory, on the device.
    /// Synchronous. CUDA contexts only.
    ///
    /// # Safety
    /// `w` must be device memory of this context's device holding
    /// `out_features · in_features` elements of `dtype`.
    pub unsafe fn quantize_weight_on_device(
        &self,
        w: *const c_void,
        dtype: DType,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        let gpu = self.gpu("quantizing a weight in device memory")?;
        if w.is_null() {
            return Err(Error::invalid("w is NULL"));
        }
        gpu.check_device_pointer(w, "w")?;
        // SAFETY: as the caller promises.
        unsafe {
            Weight::quantize_on_device(gpu, self.input_rounding(), w as u64, dtype, out_features, in_features, bias)
        }
    }

    /// Builds a weight from bitsandbytes' `CB` (row-major int8) and `SCB`.
    pub fn weight_from_int8(
        &self,
        cb: &[i8],
        scb: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        self.place(Weight::from_int8(cb, scb, out_features, in_features, bias, &Int8Extras::default())?)
    }

    /// [`Context::weight_from_int8`], the weight also keeping the columns
    /// `kept.0` with their 16/32-bit values `kept.1` `[kept.0.len(), out_features]`
    /// (row `s` is column `kept.0[s]`; see [`Context::quantize_weight_keep`]).
    pub fn weight_from_int8_keep(
        &self,
        cb: &[i8],
        scb: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
        kept: (&[u32], Data<'_>),
    ) -> Result<Weight> {
        self.place(Weight::from_int8(
            cb,
            scb,
            out_features,
            in_features,
            bias,
            &Int8Extras { kept: Some(kept), smoothing: None },
        )?)
    }

    /// [`Context::weight_from_int8`] with what llmint8 adds to bitsandbytes'
    /// form (see [`Int8Extras`]): kept columns, and the smoothing vector the
    /// int8 values (and kept values) were made with.
    pub fn weight_from_int8_with(
        &self,
        cb: &[i8],
        scb: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
        extras: &Int8Extras<'_>,
    ) -> Result<Weight> {
        self.place(Weight::from_int8(cb, scb, out_features, in_features, bias, extras)?)
    }

    /// The row-parallel tensor-parallel shard `columns` (a range of
    /// in_features: o_proj, down_proj split across ranks) of a row-major
    /// 16/32-bit weight `[out_features, in_features]`, as a weight of
    /// `columns.len()` in_features: each row quantized with the absmax of the
    /// whole row, so its int8 values and `SCB` are the unsharded weight's.
    /// The columns of `keep` (full coordinates) inside the shard are kept, as
    /// [`Context::quantize_weight_keep`]. Pass the bias to one rank only: the
    /// engine's SUM of the partials adds it once. `columns` must be a
    /// non-empty range inside `[0, in_features)` (`Status::Shape` otherwise).
    /// Use it with [`Context::row_parallel_statistics`] and
    /// [`Context::matmul_row_parallel`].
    pub fn quantize_weight_columns(
        &self,
        w: Data<'_>,
        out_features: usize,
        in_features: usize,
        columns: std::ops::Range<usize>,
        bias: Option<Data<'_>>,
        keep: &[u32],
    ) -> Result<Weight> {
        let options = WeightOptions { keep, columns: Some(columns), ..Default::default() };
        self.quantize_weight_with(w, out_features, in_features, bias, &options)
    }

    /// Runs one matmul [`Request`] — plain, shared-input or row-parallel, on
    /// host or device memory. Every matmul, from Rust or C, is checked here
    /// once (threshold, weights, shapes, lengths, memory space, device
    /// pointers) and handed whole to the backend. Device memory needs a CUDA
    /// context (`Unsupported` otherwise); see [`DeviceData::new`] for what
    /// such a request promises.
    pub fn run(&self, request: Request<'_>) -> Result<MatmulStats> {
        quant::check_threshold(request.threshold)?;
        let k = request.check_weights()?;
        for w in request.weights() {
            self.check_weight(w)?;
        }
        let gpu = match &self.place {
            Place::Cuda(gpu) => Some(&**gpu),
            Place::Cpu => None,
        };
        let memory = request.check_buffers(k, gpu)?;
        if let Operation::RowParallelMatmul { row_absmax: Input::Host(Data::F32(given)), .. } = &request.operation {
            for (r, &a) in given.iter().enumerate() {
                quant::given_row_absmax(r, a, 0.0)?;
            }
        }
        if request.rows == 0 {
            return Ok(MatmulStats::default());
        }
        let outlier_columns = match (memory, &self.place) {
            (Memory::Host, Place::Cpu) => cpu::run(request.into_host_call(|w| self.cpu_weight(w), self.settings())?)?,
            (Memory::Host, Place::Cuda(gpu)) => {
                cuda::run_host_memory(gpu, request.into_host_call(|w| self.cuda_weight(w), self.cuda_settings())?)?
            }
            (Memory::Device, Place::Cuda(gpu)) => {
                let wait_for_stats = request.wait_for_stats;
                let call = request.into_device_call(|w| self.cuda_weight(w), self.cuda_settings())?;
                // SAFETY: the addresses are the device memory of this device
                // with the sizes the shapes give, as `DeviceData::new`'s caller
                // promised; checked in `check_buffers` to be this device's and not NULL.
                unsafe { cuda::run_device_memory(gpu, &call, wait_for_stats)? }
            }
            // Refused by `check_buffers` (rows > 0 here).
            (Memory::Device, Place::Cpu) => {
                return Err(Error::unsupported("a call on device memory needs a CUDA context"))
            }
        };
        Ok(MatmulStats { outlier_columns })
    }

    /// `y = x · Wᵀ + b` with LLM.int8(): `x` is row-major `[rows, in_features]`,
    /// `y` row-major `[rows, out_features]`, each in any supported dtype, both in
    /// host memory whatever the backend (a CUDA context copies them to the
    /// device and back, and waits). `threshold` 0 turns the outlier
    /// decomposition off. [`Context::run`] with one weight.
    pub fn matmul(&self, w: &Weight, x: Data<'_>, rows: usize, threshold: f32, y: DataMut<'_>) -> Result<MatmulStats> {
        self.matmul_shared_input(&[w], x, rows, threshold, &mut [y])
    }

    /// `ys[i] = x · weights[i]ᵀ + b[i]` for weights that share their input —
    /// q/k/v, gate/up: X is quantized and its outlier columns found once, then
    /// each weight's product and epilogue run; every output is bit for bit
    /// that of [`Context::matmul`] with the same weight. Every weight needs
    /// `in_features` = the columns of `x`; the outputs share one dtype, each
    /// `[rows, weights[i].out_features]`. Host memory, as [`Context::matmul`].
    /// The outlier count is the input's, the same for every weight.
    pub fn matmul_shared_input(
        &self,
        weights: &[&Weight],
        x: Data<'_>,
        rows: usize,
        threshold: f32,
        ys: &mut [DataMut<'_>],
    ) -> Result<MatmulStats> {
        let ys = ys.iter_mut().map(|y| Output::Host(y.reborrow())).collect();
        let operation = Operation::Matmul { weights, ys };
        self.run(Request { x: Input::Host(x), rows, threshold, operation, wait_for_stats: true })
    }

    /// Stage 1 of a row-parallel matmul: the statistics of this rank's slice
    /// `x` `[rows, w.in_features]` of the activations. `row_absmax[r]` gets
    /// the absmax of row `r`'s int8 part over the slice — under the
    /// context's row scale rule, as the unsharded call computes it, `+Inf`
    /// for a row holding a non-finite value the int8 part would use. The
    /// engine all-reduces `row_absmax` with MAX across the ranks and passes
    /// the result to [`Context::matmul_row_parallel`]. Outlier columns need
    /// no collective: a column's flag depends on that column alone, which
    /// one rank holds. Returns the slice's outlier column count. Host
    /// memory, as [`Context::matmul`].
    pub fn row_parallel_statistics(
        &self,
        w: &Weight,
        x: Data<'_>,
        rows: usize,
        threshold: f32,
        row_absmax: &mut [f32],
    ) -> Result<usize> {
        let operation =
            Operation::RowParallelStatistics { weight: w, row_absmax: Output::Host(DataMut::F32(row_absmax)) };
        let stats = self.run(Request { x: Input::Host(x), rows, threshold, operation, wait_for_stats: true })?;
        Ok(stats.outlier_columns)
    }

    /// Stage 2 of a row-parallel matmul: this rank's partial output
    /// `y = x · Wᵀ (+ b)` `[rows, out_features]` of its shard `w` and slice
    /// `x`, each row of X quantized with `row_absmax[r]` — the MAX over the
    /// ranks of [`Context::row_parallel_statistics`]. The engine all-reduces
    /// the partials with SUM; the sum equals the unsharded layer's output up
    /// to float32 rounding: with `m` outlier columns and `W` ranks,
    /// `|Σ y − y_unsharded| ≤ γ(2m + W + 4) · S`, `γ(n) = n·2⁻²⁴ / (1 − n·2⁻²⁴)`,
    /// `S = Σ_c (|x_c| + a/254) · |ŵ_c| + |b|` (`a` the row's absmax, `ŵ` the
    /// dequantized or kept weight) — for float32 partials; a 16-bit `y` rounds
    /// each partial once more. One rank (a world of 1) gives [`Context::matmul`]'s
    /// bits. A `row_absmax` entry that is NaN, negative, or below this
    /// slice's own is refused (`InvalidArgument`). Host memory, as
    /// [`Context::matmul`].
    pub fn matmul_row_parallel(
        &self,
        w: &Weight,
        x: Data<'_>,
        rows: usize,
        threshold: f32,
        row_absmax: &[f32],
        y: DataMut<'_>,
    ) -> Result<MatmulStats> {
        let row_absmax = Input::Host(Data::F32(row_absmax));
        let operation = Operation::RowParallelMatmul { weight: w, row_absmax, y: Output::Host(y) };
        self.run(Request { x: Input::Host(x), rows, threshold, operation, wait_for_stats: true })
    }

    /// The CPU backend's part of `w` (a weight of another context is refused).
    fn cpu_weight<'w>(&self, w: &'w Weight) -> Result<&'w cpu::Weight> {
        match w.storage() {
            Storage::Cpu(weight) => Ok(weight),
            Storage::Cuda(_) => Err(self.foreign_weight(w)),
        }
    }

    /// The CUDA backend's part of `w` (a weight of another context is refused).
    fn cuda_weight<'w>(&self, w: &'w Weight) -> Result<&'w cuda::Weight> {
        match w.storage() {
            Storage::Cuda(weight) => Ok(weight),
            Storage::Cpu(_) => Err(self.foreign_weight(w)),
        }
    }

    /// Checks that `w` lives where this context runs (backend and device).
    fn check_weight(&self, w: &Weight) -> Result<()> {
        if w.location() == self.location() {
            Ok(())
        } else {
            Err(self.foreign_weight(w))
        }
    }

    /// The error for a weight that lives elsewhere than this context.
    fn foreign_weight(&self, w: &Weight) -> Error {
        let name = |l: Location| match l {
            Location::Cpu => "the CPU".to_string(),
            Location::Cuda { device } => format!("CUDA device {device}"),
        };
        Error::invalid(format!("the weight lives on {}, the context on {}", name(w.location()), name(self.location())))
    }
    /// Vector-wise quantization of `x` `[rows, cols]` as bitsandbytes'
    /// `int8_vectorwise_quant` does it: `q` `[rows, cols]`, `absmax` `[rows]`,
    /// and the outlier columns in ascending order in `outlier_columns` (capacity
    /// `cols`) when given. Returns the number of outlier columns.
    #[allow(clippy::too_many_arguments)] // mirrors llmint8_quantize_rows
    pub fn quantize_rows(
        &self,
        x: Data<'_>,
        rows: usize,
        cols: usize,
        threshold: f32,
        q: &mut [i8],
        absmax: &mut [f32],
        outlier_columns: Option<&mut [u32]>,
    ) -> Result<usize> {
        quant::check_threshold(threshold)?;
        if rows == 0 {
            return Ok(0);
        }
        if cols == 0 {
            return Err(Error::shape("cols must be > 0"));
        }
        if u32::try_from(cols).is_err() {
            return Err(Error::shape(format!("cols = {cols} does not fit the uint32 outlier column indices")));
        }
        let len = checked_len(rows, cols, "x")?;
        check_len("x", x.len(), len)?;
        check_len("q", q.len(), len)?;
        check_len("absmax", absmax.len(), rows)?;
        if let Some(out) = &outlier_columns {
            check_len("outlier_columns", out.len(), cols)?;
        }
        let settings = self.settings();
        let (mut masks, mut found) = (Vec::new(), Vec::new());
        with_data!(x, x => {
            let input = cpu::Activations { x, rows, k: cols, threshold, settings, row_absmax: None, smoothing: None };
            cpu::quantize_activations(input, q, absmax, &mut masks, &mut found)
        })?;
        if let Some(out) = outlier_columns {
            for (o, &c) in out.iter_mut().zip(&found) {
                *o = c as u32; // fits: cols <= u32::MAX was checked above
            }
        }
        Ok(found.len())
    }
}
