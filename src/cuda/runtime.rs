//! The process-wide CUDA runtime: the three libraries opened, their entry
//! points bound, the driver initialized. Loaded on the first CUDA context and
//! kept for the life of the process; a failure is not kept, so a later call
//! (after, say, `LLMINT8_LIBCUDA` was set) tries again.

use std::ffi::{c_char, c_int, CStr};
use std::sync::{Mutex, OnceLock};

use super::libs::{self, Library};
use super::sys::{self, CublasLt, Driver, Nvrtc};
use crate::error::{Error, Result};

pub(crate) struct Runtime {
    pub driver: Driver,
    pub nvrtc: Nvrtc,
    pub lt: CublasLt,
    /// The CUDA version the driver supports, e.g. 12080 for 12.8.
    pub driver_version: i32,
    /// Where each library was found, for messages and `llmint8 cuda-info`.
    pub paths: [String; 3],
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("driver_version", &self.driver_version).field("paths", &self.paths).finish()
    }
}

/// The runtime, loading it on first use.
pub(crate) fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    static LOADING: Mutex<()> = Mutex::new(());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = load()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

fn load() -> Result<Runtime> {
    let driver_lib = libs::open(Library::Driver, None).map_err(|tried| {
        Error::no_device(format!("no CUDA driver library (libcuda.so.1) was found; {}", tried.describe()))
    })?;
    let driver = Driver::load(&driver_lib)
        .map_err(|e| Error::no_device(format!("not a usable CUDA driver (llmint8 needs CUDA 12 or later): {e}")))?;
    // SAFETY: cuInit with flags 0 is valid at any time, from any thread.
    let init = unsafe { (driver.cuInit)(0) };
    if init != sys::CUDA_SUCCESS {
        return Err(Error::no_device(format!(
            "cuInit failed in {}: {}",
            driver_lib.path,
            describe_driver_error(&driver, init)
        )));
    }
    let mut version: c_int = 0;
    // SAFETY: a valid out-pointer.
    let got = unsafe { (driver.cuDriverGetVersion)(&mut version) };
    if got != sys::CUDA_SUCCESS || version < 12000 {
        return Err(Error::no_device(format!(
            "the CUDA driver in {} supports CUDA {}.{}; llmint8 needs CUDA 12 or later",
            driver_lib.path,
            version / 1000,
            version % 1000 / 10
        )));
    }
    let major = (version / 1000) as u32;
    let open = |library: Library| {
        libs::open(library, Some(major)).map_err(|tried| {
            Error::no_device(format!(
                "{} for CUDA {major} (or older) was not found; {}",
                library.name(),
                tried.describe()
            ))
        })
    };
    let (nvrtc_lib, lt_lib) = (open(Library::Nvrtc)?, open(Library::CublasLt)?);
    let nvrtc = Nvrtc::load(&nvrtc_lib).map_err(Error::no_device)?;
    let lt = CublasLt::load(&lt_lib).map_err(Error::no_device)?;
    Ok(Runtime { driver, nvrtc, lt, driver_version: version, paths: [driver_lib.path, nvrtc_lib.path, lt_lib.path] })
}

/// "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected" for a driver result.
pub(crate) fn describe_driver_error(driver: &Driver, result: sys::CUresult) -> String {
    let mut text: *const c_char = std::ptr::null();
    // SAFETY: a valid out-pointer; the driver returns a static string or fails.
    let ok = unsafe { (driver.cuGetErrorString)(result, &mut text) } == sys::CUDA_SUCCESS;
    if ok && !text.is_null() {
        // SAFETY: non-NULL, NUL-terminated, static.
        format!("{} (CUDA error {result})", unsafe { CStr::from_ptr(text) }.to_string_lossy())
    } else {
        format!("CUDA error {result}")
    }
}
