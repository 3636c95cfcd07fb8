//! CUDA backend: library discovery, the driver context and streams, kernels
//! compiled with NVRTC, and the cuBLASLt int8 GEMM.

pub(crate) mod libs;
pub(crate) mod nvrtc;
pub(crate) mod sys;
