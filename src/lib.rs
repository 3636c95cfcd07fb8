//! llmint8 — LLM.int8() (Dettmers et al., 2022, "8-bit Matrix Multiplication for
//! Transformers at Scale") as a library with a C ABI.
//!
//! A 16/32-bit weight is quantized once, row by row, into int8 plus one f32 scale
//! per output row; each matmul quantizes the activations row by row, sends the
//! few activation columns holding an outlier through a floating-point product,
//! multiplies the rest in int8 with exact integer accumulation, and dequantizes
//! with the outer product of the two scale vectors. The arithmetic lives in
//! [`quant`]; [`Context`] and [`Weight`] are the safe API; `ffi` is the C ABI.
//!
//! ```
//! use llmint8::{Context, Data, DataMut};
//! let ctx = Context::cpu();
//! let w = vec![0.5f32, -1.0, 2.0, 0.25, 1.0, -0.5]; // [out = 2, in = 3]
//! let weight = ctx.quantize_weight(Data::F32(&w), 2, 3, None).unwrap();
//! let x = vec![1.0f32, 2.0, 3.0];
//! let mut y = vec![0.0f32; 2];
//! ctx.matmul(&weight, Data::F32(&x), 1, 6.0, DataMut::F32(&mut y)).unwrap();
//! assert!((y[0] - 4.5).abs() < 0.05 && (y[1] - 0.75).abs() < 0.05);
//! ```

mod call;
mod context;
pub mod convert;
mod cpu;
mod cuda;
mod dtype;
mod error;
pub mod ffi;
pub mod io;
mod kept;
mod quant;
mod smoothing;
mod weight;

pub use context::{save_weight, Backend, Context, DeviceData, Input, MatmulStats, Operation, Output, Request};
/// Where a CPU call's time goes (the benchmark's account; feature `phase-timing`).
#[cfg(feature = "phase-timing")]
pub use cpu::phases;
pub use cpu::CpuPath;
pub use cuda::report as cuda_report;
pub use dtype::{DType, Data, DataMut, Element};
pub use error::{Error, Result, Status};
pub use half::{bf16, f16};
pub use quant::{InputRounding, RowScale};
pub use smoothing::smoothquant_factors;
pub use weight::{Int8Extras, Location, Weight, WeightMemory, WeightOptions};

/// Version of the C ABI; the shared library's SONAME is `libllmint8.so.<this>`.
/// Written once, as `abi-version` in Cargo.toml (build.rs passes it on).
pub const ABI_VERSION: u32 = match u32::from_str_radix(env!("LLMINT8_ABI_VERSION"), 10) {
    Ok(version) => version,
    Err(_) => panic!("abi-version in Cargo.toml is not a whole number"),
};
