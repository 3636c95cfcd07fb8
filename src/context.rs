//! The safe API: a context chooses where the work runs; it builds weights and
//! runs the matmul and the row quantizer on them.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::cpu::{self, CpuPath};
use crate::dtype::{Data, DataMut};
use crate::error::{check_len, checked_len, Error, Result};
use crate::quant::{self, InputRounding};
use crate::weight::Weight;
use crate::{with_data, with_data_mut};

/// Where the work runs. Codes are part of ABI version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Backend {
    /// The GPU when one is usable, else the CPU.
    Auto = 0,
    Cpu = 1,
    Cuda = 2,
}

impl Backend {
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
    backend: Backend,
    /// 0 means [`cpu::default_num_threads`].
    num_threads: AtomicUsize,
    /// Whether inputs are rounded to float16 before quantization ([`InputRounding::Float16`]).
    round_inputs_to_f16: AtomicBool,
    /// Index into [`CpuPath::ALL`]; always a path this processor runs.
    cpu_path: AtomicU8,
}

impl Context {
    /// Creates a context. `Auto` resolves to the CPU in this build, which has no
    /// CUDA backend yet; asking for `Cuda` explicitly is refused.
    pub fn new(backend: Backend, device: i32) -> Result<Context> {
        match backend {
            Backend::Auto | Backend::Cpu => {
                if device != 0 {
                    return Err(Error::invalid(format!("the CPU backend has only device 0, got {device}")));
                }
                Ok(Context::cpu())
            }
            Backend::Cuda => Err(Error::unsupported(
                "this build of llmint8 has no CUDA backend; use LLMINT8_BACKEND_CPU or LLMINT8_BACKEND_AUTO",
            )),
        }
    }

    /// A CPU context using the default number of threads.
    pub fn cpu() -> Context {
        Context {
            backend: Backend::Cpu,
            num_threads: AtomicUsize::new(0),
            round_inputs_to_f16: AtomicBool::new(false),
            cpu_path: AtomicU8::new(CpuPath::default_for_process() as u8),
        }
    }

    /// The backend this context runs on (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
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

    /// The settings a call runs with, read once at its start.
    fn settings(&self) -> cpu::Settings {
        cpu::Settings { path: self.cpu_path(), rounding: self.input_rounding(), threads: self.num_threads() }
    }

    /// Quantizes a row-major 16/32-bit weight `[out_features, in_features]`.
    pub fn quantize_weight(
        &self,
        w: Data<'_>,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        Weight::quantize(self.backend, self.settings(), w, out_features, in_features, bias)
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
        Weight::from_int8(self.backend, cb, scb, out_features, in_features, bias)
    }

    /// `y = x · Wᵀ + b` with LLM.int8(): `x` is row-major `[rows, in_features]`,
    /// `y` row-major `[rows, out_features]`, each in any supported dtype.
    /// `threshold` 0 turns the outlier decomposition off.
    pub fn matmul(&self, w: &Weight, x: Data<'_>, rows: usize, threshold: f32, y: DataMut<'_>) -> Result<MatmulStats> {
        quant::check_threshold(threshold)?;
        if w.backend() != self.backend {
            return Err(Error::invalid(format!(
                "the weight lives on the {:?} backend, the context on {:?}",
                w.backend(),
                self.backend
            )));
        }
        let x_len = checked_len(rows, w.in_features(), "x")?;
        let y_len = checked_len(rows, w.out_features(), "y")?;
        check_len("x", x.len(), x_len)?;
        check_len("y", y.len(), y_len)?;
        if rows == 0 {
            return Ok(MatmulStats::default());
        }
        let settings = self.settings();
        let outlier_columns =
            with_data!(x, x => with_data_mut!(y, y => cpu::matmul(settings, w, x, rows, threshold, y)))?;
        Ok(MatmulStats { outlier_columns })
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
        with_data!(x, x => cpu::quantize_activations(settings, x, cols, threshold, q, absmax, &mut masks, &mut found))?;
        if let Some(out) = outlier_columns {
            for (o, &c) in out.iter_mut().zip(&found) {
                *o = c as u32; // fits: cols <= u32::MAX was checked above
            }
        }
        Ok(found.len())
    }
}
