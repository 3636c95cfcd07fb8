//! The entry points of the driver API, NVRTC and cuBLASLt that the backend
//! calls, resolved with `dlsym` from the libraries [`super::libs`] opened.
//! Types and constants follow the CUDA 12/13 headers (unchanged between them
//! for everything used here).
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_uint, c_void};

use super::libs::OpenLibrary;

pub type CUresult = c_int;
pub type CUdevice = c_int;
pub type CUdeviceptr = u64;
pub type CUcontext = *mut c_void;
pub type CUmodule = *mut c_void;
pub type CUfunction = *mut c_void;
pub type CUstream = *mut c_void;
pub type CUevent = *mut c_void;

pub const CUDA_SUCCESS: CUresult = 0;
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
pub const CU_POINTER_ATTRIBUTE_MEMORY_TYPE: c_int = 2;
pub const CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: c_int = 9;
pub const CU_MEMORYTYPE_DEVICE: c_uint = 2;
pub const CU_MEMORYTYPE_UNIFIED: c_uint = 4;
pub const CU_EVENT_DISABLE_TIMING: c_uint = 2;
/// `CUstreamCaptureStatus`: not capturing.
pub const CU_STREAM_CAPTURE_STATUS_NONE: c_int = 0;

pub type nvrtcResult = c_int;
pub type nvrtcProgram = *mut c_void;
pub const NVRTC_SUCCESS: nvrtcResult = 0;

pub type cublasStatus_t = c_int;
pub type cublasLtHandle_t = *mut c_void;
pub type cublasLtMatmulDesc_t = *mut c_void;
pub type cublasLtMatrixLayout_t = *mut c_void;
pub type cublasLtMatmulPreference_t = *mut c_void;
pub const CUBLAS_STATUS_SUCCESS: cublasStatus_t = 0;
pub const CUBLAS_COMPUTE_32I: c_int = 72;
pub const CUDA_R_8I: c_int = 3;
pub const CUDA_R_32I: c_int = 10;
pub const CUBLASLT_MATMUL_DESC_TRANSA: c_int = 3;
pub const CUBLASLT_MATMUL_DESC_TRANSB: c_int = 4;
pub const CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: c_int = 1;
pub const CUBLAS_OP_N: c_int = 0;
pub const CUBLAS_OP_T: c_int = 1;

/// `cublasLtMatmulAlgo_t`: opaque, 8 × 64 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cublasLtMatmulAlgo_t {
    pub data: [u64; 8],
}

/// `cublasLtMatmulHeuristicResult_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cublasLtMatmulHeuristicResult_t {
    pub algo: cublasLtMatmulAlgo_t,
    pub workspaceSize: usize,
    pub state: cublasStatus_t,
    pub wavesCount: f32,
    pub reserved: [c_int; 4],
}

/// Declares a table of entry points and its loader: every symbol must be
/// present, or the loader names the first missing one.
macro_rules! entry_points {
    ($table:ident { $( $field:ident = $symbol:literal : fn($($arg:ty),*) -> $ret:ty; )* }) => {
        #[derive(Debug)]
        pub struct $table {
            $( pub $field: unsafe extern "C" fn($($arg),*) -> $ret, )*
        }

        impl $table {
            pub fn load(lib: &OpenLibrary) -> Result<$table, String> {
                Ok($table {
                    $( $field: {
                        let address = lib.symbol($symbol)
                            .ok_or_else(|| format!("{} has no symbol {}", lib.path, $symbol))?;
                        // SAFETY: the symbol has this signature in every CUDA 12
                        // and 13 release of the library (see the headers).
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(address) }
                    }, )*
                })
            }
        }
    };
}

entry_points!(Driver {
    cuInit = "cuInit": fn(c_uint) -> CUresult;
    cuDriverGetVersion = "cuDriverGetVersion": fn(*mut c_int) -> CUresult;
    cuGetErrorString = "cuGetErrorString": fn(CUresult, *mut *const c_char) -> CUresult;
    cuDeviceGetCount = "cuDeviceGetCount": fn(*mut c_int) -> CUresult;
    cuDeviceGet = "cuDeviceGet": fn(*mut CUdevice, c_int) -> CUresult;
    cuDeviceGetName = "cuDeviceGetName": fn(*mut c_char, c_int, CUdevice) -> CUresult;
    cuDeviceGetAttribute = "cuDeviceGetAttribute": fn(*mut c_int, c_int, CUdevice) -> CUresult;
    cuDevicePrimaryCtxRetain = "cuDevicePrimaryCtxRetain": fn(*mut CUcontext, CUdevice) -> CUresult;
    cuDevicePrimaryCtxRelease = "cuDevicePrimaryCtxRelease_v2": fn(CUdevice) -> CUresult;
    cuCtxPushCurrent = "cuCtxPushCurrent_v2": fn(CUcontext) -> CUresult;
    cuCtxPopCurrent = "cuCtxPopCurrent_v2": fn(*mut CUcontext) -> CUresult;
    cuMemAlloc = "cuMemAlloc_v2": fn(*mut CUdeviceptr, usize) -> CUresult;
    cuMemFree = "cuMemFree_v2": fn(CUdeviceptr) -> CUresult;
    cuMemAllocAsync = "cuMemAllocAsync": fn(*mut CUdeviceptr, usize, CUstream) -> CUresult;
    cuMemFreeAsync = "cuMemFreeAsync": fn(CUdeviceptr, CUstream) -> CUresult;
    cuMemcpyHtoDAsync = "cuMemcpyHtoDAsync_v2": fn(CUdeviceptr, *const c_void, usize, CUstream) -> CUresult;
    cuMemcpyDtoHAsync = "cuMemcpyDtoHAsync_v2": fn(*mut c_void, CUdeviceptr, usize, CUstream) -> CUresult;
    cuMemsetD32Async = "cuMemsetD32Async": fn(CUdeviceptr, c_uint, usize, CUstream) -> CUresult;
    cuPointerGetAttribute = "cuPointerGetAttribute": fn(*mut c_void, c_int, CUdeviceptr) -> CUresult;
    cuStreamSynchronize = "cuStreamSynchronize": fn(CUstream) -> CUresult;
    cuStreamIsCapturing = "cuStreamIsCapturing": fn(CUstream, *mut c_int) -> CUresult;
    cuStreamWaitEvent = "cuStreamWaitEvent": fn(CUstream, CUevent, c_uint) -> CUresult;
    cuEventCreate = "cuEventCreate": fn(*mut CUevent, c_uint) -> CUresult;
    cuEventRecord = "cuEventRecord": fn(CUevent, CUstream) -> CUresult;
    cuEventDestroy = "cuEventDestroy_v2": fn(CUevent) -> CUresult;
    cuModuleLoadData = "cuModuleLoadData": fn(*mut CUmodule, *const c_void) -> CUresult;
    cuModuleUnload = "cuModuleUnload": fn(CUmodule) -> CUresult;
    cuModuleGetFunction = "cuModuleGetFunction": fn(*mut CUfunction, CUmodule, *const c_char) -> CUresult;
    cuLaunchKernel = "cuLaunchKernel": fn(
        CUfunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CUstream, *mut *mut c_void, *mut *mut c_void
    ) -> CUresult;
});

entry_points!(Nvrtc {
    nvrtcVersion = "nvrtcVersion": fn(*mut c_int, *mut c_int) -> nvrtcResult;
    nvrtcGetErrorString = "nvrtcGetErrorString": fn(nvrtcResult) -> *const c_char;
    nvrtcCreateProgram = "nvrtcCreateProgram": fn(
        *mut nvrtcProgram, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char
    ) -> nvrtcResult;
    nvrtcCompileProgram = "nvrtcCompileProgram": fn(nvrtcProgram, c_int, *const *const c_char) -> nvrtcResult;
    nvrtcGetProgramLogSize = "nvrtcGetProgramLogSize": fn(nvrtcProgram, *mut usize) -> nvrtcResult;
    nvrtcGetProgramLog = "nvrtcGetProgramLog": fn(nvrtcProgram, *mut c_char) -> nvrtcResult;
    nvrtcGetCUBINSize = "nvrtcGetCUBINSize": fn(nvrtcProgram, *mut usize) -> nvrtcResult;
    nvrtcGetCUBIN = "nvrtcGetCUBIN": fn(nvrtcProgram, *mut c_char) -> nvrtcResult;
    nvrtcDestroyProgram = "nvrtcDestroyProgram": fn(*mut nvrtcProgram) -> nvrtcResult;
});

entry_points!(CublasLt {
    cublasLtGetVersion = "cublasLtGetVersion": fn() -> usize;
    cublasLtCreate = "cublasLtCreate": fn(*mut cublasLtHandle_t) -> cublasStatus_t;
    cublasLtDestroy = "cublasLtDestroy": fn(cublasLtHandle_t) -> cublasStatus_t;
    cublasLtMatmulDescCreate = "cublasLtMatmulDescCreate": fn(*mut cublasLtMatmulDesc_t, c_int, c_int) -> cublasStatus_t;
    cublasLtMatmulDescSetAttribute = "cublasLtMatmulDescSetAttribute": fn(
        cublasLtMatmulDesc_t, c_int, *const c_void, usize
    ) -> cublasStatus_t;
    cublasLtMatmulDescDestroy = "cublasLtMatmulDescDestroy": fn(cublasLtMatmulDesc_t) -> cublasStatus_t;
    cublasLtMatrixLayoutCreate = "cublasLtMatrixLayoutCreate": fn(
        *mut cublasLtMatrixLayout_t, c_int, u64, u64, i64
    ) -> cublasStatus_t;
    cublasLtMatrixLayoutDestroy = "cublasLtMatrixLayoutDestroy": fn(cublasLtMatrixLayout_t) -> cublasStatus_t;
    cublasLtMatmulPreferenceCreate = "cublasLtMatmulPreferenceCreate": fn(*mut cublasLtMatmulPreference_t) -> cublasStatus_t;
    cublasLtMatmulPreferenceSetAttribute = "cublasLtMatmulPreferenceSetAttribute": fn(
        cublasLtMatmulPreference_t, c_int, *const c_void, usize
    ) -> cublasStatus_t;
    cublasLtMatmulPreferenceDestroy = "cublasLtMatmulPreferenceDestroy": fn(cublasLtMatmulPreference_t) -> cublasStatus_t;
    cublasLtMatmulAlgoGetHeuristic = "cublasLtMatmulAlgoGetHeuristic": fn(
        cublasLtHandle_t, cublasLtMatmulDesc_t,
        cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
        cublasLtMatmulPreference_t, c_int, *mut cublasLtMatmulHeuristicResult_t, *mut c_int
    ) -> cublasStatus_t;
    cublasLtMatmul = "cublasLtMatmul": fn(
        cublasLtHandle_t, cublasLtMatmulDesc_t, *const c_void,
        *const c_void, cublasLtMatrixLayout_t, *const c_void, cublasLtMatrixLayout_t,
        *const c_void, *const c_void, cublasLtMatrixLayout_t, *mut c_void, cublasLtMatrixLayout_t,
        *const cublasLtMatmulAlgo_t, *mut c_void, usize, CUstream
    ) -> cublasStatus_t;
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_result_has_the_header_layout() {
        assert_eq!(std::mem::size_of::<cublasLtMatmulAlgo_t>(), 64);
        assert_eq!(std::mem::size_of::<cublasLtMatmulHeuristicResult_t>(), 96);
    }
}
