//! One CUDA device as a llmint8 context sees it: the device's primary context
//! (shared with the engine's runtime API), the kernels loaded from a CUBIN,
//! a cuBLASLt handle, and the stream all work of the context goes to.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Arc, Mutex, MutexGuard};

use super::nvrtc;
use super::ops::GemmPlan;
use super::params::{self, Kernel};
use super::runtime::{describe_driver_error, runtime, Runtime};
use super::sys::{self, CUcontext, CUdevice, CUdeviceptr, CUfunction, CUmodule, CUstream};
use crate::error::{Error, Result};

/// cuBLASLt's workspace, per context: what NVIDIA recommends for Hopper.
pub(crate) const WORKSPACE_BYTES: usize = 32 << 20;

/// A device allocation, freed (synchronously) when dropped.
#[derive(Debug)]
pub(crate) struct DeviceBuffer {
    gpu: Arc<Gpu>,
    pub ptr: CUdeviceptr,
    pub bytes: usize,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ptr != 0 {
            let _current = self.gpu.make_current();
            // SAFETY: `ptr` came from cuMemAlloc in this context and is freed once.
            unsafe { (self.gpu.rt.driver.cuMemFree)(self.ptr) };
        }
    }
}

/// What a context's calls share: its stream and its scratch space, used by one
/// call at a time (the lock is held while a call enqueues its work).
#[derive(Debug)]
pub(crate) struct StreamState {
    pub stream: CUstream,
    /// Stream-ordered scratch (cuMemAllocAsync on `stream`), grown as needed.
    pub scratch: CUdeviceptr,
    pub scratch_bytes: usize,
    /// The int8 GEMM shapes met so far, each with its descriptors and algorithm.
    pub gemm_plans: Vec<GemmPlan>,
}

pub(crate) struct Gpu {
    pub rt: &'static Runtime,
    pub ordinal: i32,
    device: CUdevice,
    ctx: CUcontext,
    /// Compute capability as one number (90 for sm_90).
    pub arch: u32,
    pub name: String,
    module: CUmodule,
    kernels: Vec<(&'static str, CUfunction)>,
    pub lt: sys::cublasLtHandle_t,
    pub workspace: CUdeviceptr,
    state: Mutex<StreamState>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

// SAFETY: the driver's handles (context, module, functions, streams, device
// pointers) and a cuBLASLt handle may be used from any thread once the context
// is current there (`make_current`); mutable state sits behind the mutex.
unsafe impl Send for Gpu {}
// SAFETY: as above.
unsafe impl Sync for Gpu {}

/// Makes a context current on this thread for its lifetime, restoring the
/// engine's own current context after.
pub(crate) struct Current {
    rt: &'static Runtime,
}

impl Drop for Current {
    fn drop(&mut self) {
        let mut previous: CUcontext = std::ptr::null_mut();
        // SAFETY: pops the context `make_current` pushed on this thread.
        unsafe { (self.rt.driver.cuCtxPopCurrent)(&mut previous) };
    }
}

/// The compiled kernels, per architecture, for the whole process: NVRTC runs
/// once per architecture, not once per context.
fn cubin_for(rt: &Runtime, arch: u32) -> Result<Arc<Vec<u8>>> {
    static CUBINS: Mutex<Vec<(u32, Arc<Vec<u8>>)>> = Mutex::new(Vec::new());
    let mut cubins = CUBINS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = cubins.iter().find(|(a, _)| *a == arch) {
        return Ok(c.clone());
    }
    let cubin = nvrtc::compile(&rt.nvrtc, nvrtc::KERNELS, "llmint8.cu", arch).map_err(|e| {
        Error::device(format!("compiling the llmint8 kernels for sm_{arch} with {} failed: {e}", rt.paths[1]))
    })?;
    nvrtc::check_cubin(&cubin, arch)
        .map_err(|e| Error::device(format!("NVRTC ({}) made a broken CUBIN for sm_{arch}: {e}", rt.paths[1])))?;
    let cubin = Arc::new(cubin);
    cubins.push((arch, cubin.clone()));
    Ok(cubin)
}

impl Gpu {
    /// Opens device `ordinal`: retains its primary context, compiles (once per
    /// process and architecture) and loads the kernels, creates the cuBLASLt
    /// handle and workspace. Work goes to the legacy default stream until
    /// [`Gpu::set_stream`].
    pub(crate) fn open(ordinal: i32) -> Result<Arc<Gpu>> {
        let rt = runtime()?;
        let d = &rt.driver;
        let mut count: c_int = 0;
        // SAFETY: a valid out-pointer; the driver is initialized.
        let r = unsafe { (d.cuDeviceGetCount)(&mut count) };
        if r != sys::CUDA_SUCCESS || count == 0 {
            return Err(Error::no_device(format!(
                "the CUDA driver ({}) sees no device: {}",
                rt.paths[0],
                if r == sys::CUDA_SUCCESS { "0 devices".to_string() } else { describe_driver_error(d, r) }
            )));
        }
        if ordinal < 0 || ordinal >= count {
            return Err(Error::no_device(format!("CUDA device {ordinal} does not exist ({count} visible)")));
        }
        let mut device: CUdevice = 0;
        // SAFETY: valid out-pointer, ordinal in range.
        check(rt, unsafe { (d.cuDeviceGet)(&mut device, ordinal) }, "cuDeviceGet")?;
        let attribute = |attr: c_int| -> Result<i32> {
            let mut v: c_int = 0;
            // SAFETY: valid out-pointer and device.
            check(rt, unsafe { (d.cuDeviceGetAttribute)(&mut v, attr, device) }, "cuDeviceGetAttribute")?;
            Ok(v)
        };
        let major = attribute(sys::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attribute(sys::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let arch = (major * 10 + minor) as u32;
        let mut name_bytes = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes.
        check(rt, unsafe { (d.cuDeviceGetName)(name_bytes.as_mut_ptr(), 256, device) }, "cuDeviceGetName")?;
        // SAFETY: the driver NUL-terminates within the buffer.
        let name = unsafe { std::ffi::CStr::from_ptr(name_bytes.as_ptr()) }.to_string_lossy().into_owned();
        if arch < 75 {
            return Err(Error::no_device(format!(
                "CUDA device {ordinal} ({name}) is sm_{arch}; llmint8's int8 tensor-core path needs sm_75 or newer"
            )));
        }
        let mut ctx: CUcontext = std::ptr::null_mut();
        // SAFETY: valid out-pointer and device; released in Drop.
        check(rt, unsafe { (d.cuDevicePrimaryCtxRetain)(&mut ctx, device) }, "cuDevicePrimaryCtxRetain")?;
        let mut gpu = Gpu {
            rt,
            ordinal,
            device,
            ctx,
            arch,
            name,
            module: std::ptr::null_mut(),
            kernels: Vec::new(),
            lt: std::ptr::null_mut(),
            workspace: 0,
            state: Mutex::new(StreamState {
                stream: std::ptr::null_mut(),
                scratch: 0,
                scratch_bytes: 0,
                gemm_plans: Vec::new(),
            }),
        };
        // From here on, Drop releases whatever was made.
        let cubin = cubin_for(rt, arch)?;
        {
            let _current = gpu.make_current()?;
            // SAFETY: `cubin` is a complete CUBIN image; out-pointer valid.
            let loaded = unsafe { (d.cuModuleLoadData)(&mut gpu.module, cubin.as_ptr().cast()) };
            gpu.check(loaded, "cuModuleLoadData")?;
            for name in nvrtc::kernel_names() {
                let c_name =
                    CString::new(name).map_err(|_| Error::internal(format!("kernel name {name:?} holds NUL")))?;
                let mut f: CUfunction = std::ptr::null_mut();
                // SAFETY: module loaded above; valid out-pointer and C string.
                gpu.check(unsafe { (d.cuModuleGetFunction)(&mut f, gpu.module, c_name.as_ptr()) }, name)?;
                gpu.kernels.push((name, f));
            }
            // SAFETY: valid out-pointer; destroyed in Drop.
            let created = unsafe { (rt.lt.cublasLtCreate)(&mut gpu.lt) };
            gpu.check_lt(created, "cublasLtCreate")?;
            // SAFETY: valid out-pointer; freed in Drop.
            let allocated = unsafe { (d.cuMemAlloc)(&mut gpu.workspace, WORKSPACE_BYTES) };
            gpu.check(allocated, "cuMemAlloc (cuBLASLt workspace)")?;
            gpu.check_param_layout()?;
        }
        Ok(Arc::new(gpu))
    }

    /// Runs `llmint8_param_layout` (into the still unused cuBLASLt workspace,
    /// on the legacy default stream, waiting) and refuses the device when the
    /// device compiler laid out a kernel's parameter struct differently from
    /// src/cuda/params.rs — what would otherwise corrupt memory silently.
    fn check_param_layout(&self) -> Result<()> {
        let ours = params::layout();
        let bytes = 8 * ours.len();
        debug_assert!(bytes <= WORKSPACE_BYTES);
        let d = &self.rt.driver;
        let mut device = vec![0u64; ours.len()];
        let stream: CUstream = std::ptr::null_mut();
        // SAFETY (this block): the workspace holds WORKSPACE_BYTES >= `bytes`;
        // the kernel writes `ours.len()` u64s; `device` receives them and
        // outlives the wait.
        unsafe {
            self.launch(nvrtc::PARAM_LAYOUT, 1, stream, &self.workspace)?;
            self.check(
                (d.cuMemcpyDtoHAsync)(device.as_mut_ptr().cast(), self.workspace, bytes, stream),
                "copying the layout",
            )?;
            self.check((d.cuStreamSynchronize)(stream), "cuStreamSynchronize")?;
        }
        params::check_layout(&device)
    }

    /// Makes this device's context current on the calling thread until the
    /// guard drops.
    pub(crate) fn make_current(&self) -> Result<Current> {
        // SAFETY: `ctx` is retained for the life of `self`.
        self.check(unsafe { (self.rt.driver.cuCtxPushCurrent)(self.ctx) }, "cuCtxPushCurrent")?;
        Ok(Current { rt: self.rt })
    }

    /// Maps a driver result to an error naming the call.
    pub(crate) fn check(&self, result: sys::CUresult, what: &str) -> Result<()> {
        check(self.rt, result, what)
    }

    pub(crate) fn check_lt(&self, status: sys::cublasStatus_t, what: &str) -> Result<()> {
        if status == sys::CUBLAS_STATUS_SUCCESS {
            return Ok(());
        }
        Err(Error::device(format!("{what} failed: cuBLAS status {status}")))
    }

    /// The stream state, locked for one call.
    pub(crate) fn state(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends this context's later work to `stream` (NULL: the legacy default
    /// stream). Work already queued on the previous stream that uses the
    /// scratch space is ordered before the new stream's first use of it with
    /// an event; no host synchronization.
    pub(crate) fn set_stream(&self, stream: *mut c_void) -> Result<()> {
        let mut state = self.state();
        if state.stream == stream {
            return Ok(());
        }
        let _current = self.make_current()?;
        let d = &self.rt.driver;
        let mut event: sys::CUevent = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the event is destroyed below (the driver
        // keeps it alive until the wait it is used by completes).
        self.check(unsafe { (d.cuEventCreate)(&mut event, sys::CU_EVENT_DISABLE_TIMING) }, "cuEventCreate")?;
        // SAFETY: `event` was just created; the streams belong to this context
        // (or are the default stream).
        let result = unsafe {
            let r = (d.cuEventRecord)(event, state.stream);
            if r == sys::CUDA_SUCCESS {
                (d.cuStreamWaitEvent)(stream, event, 0)
            } else {
                r
            }
        };
        // SAFETY: created above, destroyed once.
        unsafe { (d.cuEventDestroy)(event) };
        self.check(result, "ordering the new stream after the old one (cuEventRecord / cuStreamWaitEvent)")?;
        state.stream = stream;
        Ok(())
    }

    /// Waits for all work queued on this context's stream (refused while it
    /// is capturing: a wait would break the capture).
    pub(crate) fn synchronize(&self) -> Result<()> {
        let _current = self.make_current()?;
        let stream = {
            let state = self.state();
            self.refuse_while_capturing(&state, "llmint8_context_synchronize")?;
            state.stream
        };
        // SAFETY: the stream belongs to this context (or is the default stream).
        self.check(unsafe { (self.rt.driver.cuStreamSynchronize)(stream) }, "cuStreamSynchronize")
    }

    /// Runs `queue` — work that copies between the device and host memory the
    /// caller owns — and, when it fails, waits for `stream` before returning
    /// the error: copies queued before the failure must not read or write the
    /// caller's buffers after it has them back (page-locked memory makes them
    /// truly asynchronous). The wait's own status is dropped: the first error
    /// is the one to report.
    pub(crate) fn waiting_on_error<T>(&self, stream: CUstream, queue: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = queue();
        if result.is_err() {
            // SAFETY: the stream belongs to this context (or is the default stream).
            unsafe { (self.rt.driver.cuStreamSynchronize)(stream) };
        }
        result
    }

    /// Waits for the work queued on the stream, frees the scratch space and
    /// returns to the default stream: what the context's end does (errors
    /// have nowhere to go then and are ignored).
    pub(crate) fn release_stream(&self) {
        let Ok(_current) = self.make_current() else { return };
        let mut state = self.state();
        let d = &self.rt.driver;
        // SAFETY: the stream belongs to this context (or is the default
        // stream); the scratch was allocated on it and is freed once.
        unsafe {
            if state.scratch != 0 {
                (d.cuMemFreeAsync)(state.scratch, state.stream);
            }
            (d.cuStreamSynchronize)(state.stream);
        }
        state.scratch = 0;
        state.scratch_bytes = 0;
        state.stream = std::ptr::null_mut();
    }

    /// Whether the context's stream is being captured into a CUDA graph (an
    /// invalidated capture counts: nothing may be queued on it either).
    pub(crate) fn is_capturing(&self, state: &StreamState) -> Result<bool> {
        let mut status: std::ffi::c_int = sys::CU_STREAM_CAPTURE_STATUS_NONE;
        // SAFETY: valid out-pointer; the stream belongs to this context (or is the default stream).
        self.check(unsafe { (self.rt.driver.cuStreamIsCapturing)(state.stream, &mut status) }, "cuStreamIsCapturing")?;
        Ok(status != sys::CU_STREAM_CAPTURE_STATUS_NONE)
    }

    /// Refuses `what` — a call that allocates, waits or copies to the host —
    /// while the context's stream is being captured, before it queues
    /// anything, so that the engine's capture stays intact.
    pub(crate) fn refuse_while_capturing(&self, state: &StreamState, what: &str) -> Result<()> {
        if self.is_capturing(state)? {
            return Err(Error::unsupported(format!(
                "{what} cannot be captured in a CUDA graph (it allocates, waits for the stream or copies to the host), \
                 and the context's stream is capturing"
            )));
        }
        Ok(())
    }

    /// Grows the scratch space to `bytes` (stream-ordered: the old space is
    /// freed after the work queued before on the stream) — not while the
    /// stream is capturing, where a call must fit what
    /// [`Gpu::reserve_scratch`] reserved.
    pub(crate) fn ensure_scratch(&self, state: &mut StreamState, bytes: usize) -> Result<CUdeviceptr> {
        if state.scratch_bytes >= bytes {
            return Ok(state.scratch);
        }
        if self.is_capturing(state)? {
            return Err(Error::unsupported(format!(
                "this call needs {bytes} bytes of scratch and the context has {}, and its stream is capturing \
                 (a CUDA graph cannot allocate): call llmint8_context_reserve with this call's shapes before capturing",
                state.scratch_bytes
            )));
        }
        self.grow_scratch(state, bytes)
    }

    /// Grows the scratch space to at least `bytes` now, so that later calls
    /// that fit allocate nothing (what CUDA-graph capture needs).
    pub(crate) fn reserve_scratch(&self, bytes: usize) -> Result<()> {
        let _current = self.make_current()?;
        let mut state = self.state();
        if state.scratch_bytes >= bytes {
            return Ok(());
        }
        self.refuse_while_capturing(&state, "reserving scratch space")?;
        self.grow_scratch(&mut state, bytes).map(|_| ())
    }

    fn grow_scratch(&self, state: &mut StreamState, bytes: usize) -> Result<CUdeviceptr> {
        let d = &self.rt.driver;
        if state.scratch != 0 {
            // SAFETY: allocated on this stream below; freed once, in stream order.
            self.check(unsafe { (d.cuMemFreeAsync)(state.scratch, state.stream) }, "cuMemFreeAsync")?;
            state.scratch = 0;
            state.scratch_bytes = 0;
        }
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: valid out-pointer; the stream belongs to this context.
        self.check(unsafe { (d.cuMemAllocAsync)(&mut ptr, bytes, state.stream) }, "cuMemAllocAsync (scratch)")?;
        state.scratch = ptr;
        state.scratch_bytes = bytes;
        Ok(ptr)
    }

    /// A device allocation of `bytes`.
    pub(crate) fn alloc(self: &Arc<Self>, bytes: usize, what: &str) -> Result<DeviceBuffer> {
        let mut ptr: CUdeviceptr = 0;
        let _current = self.make_current()?;
        // SAFETY: valid out-pointer.
        self.check(unsafe { (self.rt.driver.cuMemAlloc)(&mut ptr, bytes.max(1)) }, what)?;
        Ok(DeviceBuffer { gpu: self.clone(), ptr, bytes })
    }

    /// The kernel called `name` (`open` loaded every name of
    /// `nvrtc::kernel_names`; another name is llmint8's bug, reported as such).
    pub(crate) fn kernel(&self, name: &str) -> Result<CUfunction> {
        let found = self.kernels.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
        found.ok_or_else(|| Error::internal(format!("no kernel {name:?} in the loaded module")))
    }

    /// Launches `kernel` on `stream` with `grid` blocks of its
    /// [`nvrtc::threads_per_block`], its parameter struct `params` as the one
    /// argument (the driver copies it at the launch).
    ///
    /// # Safety
    /// Each device address in `params` is valid for what the kernel touches.
    pub(crate) unsafe fn launch<P: Copy>(
        &self,
        kernel: Kernel<P>,
        grid: u32,
        stream: CUstream,
        params: &P,
    ) -> Result<()> {
        let name = kernel.name;
        let f = self.kernel(name)?;
        let mut args = [(params as *const P).cast_mut().cast::<c_void>()];
        let block = nvrtc::threads_per_block(name);
        // SAFETY: as the caller promises; grid and block are within limits.
        let r = unsafe {
            (self.rt.driver.cuLaunchKernel)(
                f,
                grid.max(1),
                1,
                1,
                block,
                1,
                1,
                0,
                stream,
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.check(r, name)
    }

    /// Which device a pointer lives on, or an error saying it is host memory.
    pub(crate) fn check_device_pointer(&self, ptr: *const c_void, what: &str) -> Result<()> {
        let d = &self.rt.driver;
        let mut memory_type: u32 = 0;
        // SAFETY: valid out-pointer of the attribute's type (unsigned int).
        let r = unsafe {
            (d.cuPointerGetAttribute)(
                (&mut memory_type as *mut u32).cast(),
                sys::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                ptr as CUdeviceptr,
            )
        };
        if r != sys::CUDA_SUCCESS
            || !(memory_type == sys::CU_MEMORYTYPE_DEVICE || memory_type == sys::CU_MEMORYTYPE_UNIFIED)
        {
            return Err(Error::invalid(format!(
                "{what} is not device memory: a CUDA context's matmul takes device pointers \
                 (use llmint8_matmul_host for host arrays)"
            )));
        }
        let mut ordinal: c_int = -1;
        // SAFETY: valid out-pointer of the attribute's type (int).
        let r = unsafe {
            (d.cuPointerGetAttribute)(
                (&mut ordinal as *mut c_int).cast(),
                sys::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr as CUdeviceptr,
            )
        };
        if r == sys::CUDA_SUCCESS && ordinal != self.ordinal && memory_type == sys::CU_MEMORYTYPE_DEVICE {
            return Err(Error::invalid(format!(
                "{what} lives on CUDA device {ordinal}, the context on device {}",
                self.ordinal
            )));
        }
        Ok(())
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Normally done already by the context's end (weights, which may
        // outlive it, queue no work on its stream).
        self.release_stream();
        let d = &self.rt.driver;
        // SAFETY: each handle was made by `open` (or is null/0) and is released once.
        unsafe {
            if (d.cuCtxPushCurrent)(self.ctx) == sys::CUDA_SUCCESS {
                if self.workspace != 0 {
                    (d.cuMemFree)(self.workspace);
                }
                if !self.lt.is_null() {
                    (self.rt.lt.cublasLtDestroy)(self.lt);
                }
                if !self.module.is_null() {
                    (d.cuModuleUnload)(self.module);
                }
                let mut previous: CUcontext = std::ptr::null_mut();
                (d.cuCtxPopCurrent)(&mut previous);
            }
            (d.cuDevicePrimaryCtxRelease)(self.device);
        }
    }
}

fn check(rt: &Runtime, result: sys::CUresult, what: &str) -> Result<()> {
    match result {
        sys::CUDA_SUCCESS => Ok(()),
        sys::CUDA_ERROR_OUT_OF_MEMORY => {
            Err(Error::out_of_memory(format!("{what}: {}", describe_driver_error(&rt.driver, result))))
        }
        _ => Err(Error::device(format!("{what} failed: {}", describe_driver_error(&rt.driver, result)))),
    }
}
