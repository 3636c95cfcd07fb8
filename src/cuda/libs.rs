//! Finding and opening the CUDA libraries at run time (`dlopen`), so that the
//! crate builds, links and runs on machines with no CUDA toolkit, driver or GPU.
//!
//! Each library is looked for, in order:
//! 1. the file (or directory) named by its override variable — `LLMINT8_LIBCUDA`,
//!    `LLMINT8_LIBCUBLASLT`, `LLMINT8_LIBNVRTC`; when set, nothing else is tried;
//! 2. its sonames through the dynamic loader (`LD_LIBRARY_PATH`, the `ld.so` cache);
//! 3. the toolkit folders: `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda` (and,
//!    for the driver, their `compat` folders and WSL's `/usr/lib/wsl/lib`);
//! 4. the `nvidia/*/lib` folders that PyTorch's wheels install (`nvidia-cublas`,
//!    `nvidia-cuda-nvrtc`, …) under `$VIRTUAL_ENV`, `$CONDA_PREFIX`, the prefix of
//!    each `python3` on `PATH`, `~/.local`, `/usr/local`, `/usr`, `/opt/conda`
//!    and `$PYTHONPATH`.
//!
//! cuBLASLt and NVRTC come in CUDA 12 (`.so.12`) and CUDA 13 (`.so.13`) builds;
//! the newest one the driver can run is taken (a CUDA 12 driver cannot run the
//! CUDA 13 libraries). Every failure lists what was tried and why it failed.
//!
//! (Why not the cudarc crate: it chooses one CUDA major version when it is
//! compiled, loads libraries by bare name only, and panics when one is missing;
//! these three needs are the point of this module, so the few entry points the
//! backend calls are bound here, with `dlsym`.)

use std::ffi::{c_void, CStr, CString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The libraries the CUDA backend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Library {
    /// The driver API (`libcuda`), installed with the NVIDIA driver.
    Driver,
    /// cuBLASLt, for the int8 GEMM.
    CublasLt,
    /// NVRTC, which compiles the kernels for the device at first use.
    Nvrtc,
}

impl Library {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Library::Driver => "libcuda",
            Library::CublasLt => "libcublasLt",
            Library::Nvrtc => "libnvrtc",
        }
    }

    /// The variable that names this library's file (or folder) explicitly.
    pub(crate) fn override_variable(self) -> &'static str {
        match self {
            Library::Driver => "LLMINT8_LIBCUDA",
            Library::CublasLt => "LLMINT8_LIBCUBLASLT",
            Library::Nvrtc => "LLMINT8_LIBNVRTC",
        }
    }

    /// File names to look for, preferred first, for a driver supporting CUDA
    /// `driver_major` (None: any).
    pub(crate) fn file_names(self, driver_major: Option<u32>) -> Vec<String> {
        match self {
            Library::Driver => vec!["libcuda.so.1".into(), "libcuda.so".into()],
            Library::CublasLt | Library::Nvrtc => [13u32, 12]
                .into_iter()
                .filter(|major| driver_major.is_none_or(|d| *major <= d))
                .map(|major| format!("{}.so.{major}", self.name()))
                .collect(),
        }
    }
}

/// An opened library. Never closed: its functions stay callable for the life
/// of the process (the driver and cuBLASLt keep threads and state of their own).
#[derive(Debug)]
pub(crate) struct OpenLibrary {
    handle: *mut c_void,
    /// Where it was found (the file, or the soname the loader resolved).
    pub(crate) path: String,
}

// SAFETY: a dlopen handle may be used from any thread (dlsym is thread-safe).
unsafe impl Send for OpenLibrary {}
// SAFETY: as above; the handle is never closed or mutated.
unsafe impl Sync for OpenLibrary {}

impl OpenLibrary {
    /// The address of `symbol`, or None.
    pub(crate) fn symbol(&self, symbol: &str) -> Option<*mut c_void> {
        let name = CString::new(symbol).ok()?;
        // SAFETY: `handle` came from dlopen and stays open; `name` is a C string.
        let address = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        (!address.is_null()).then_some(address)
    }
}

/// What was tried, for the error message: one line per attempt.
#[derive(Debug, Default)]
pub(crate) struct Attempts(Vec<String>);

impl Attempts {
    fn push(&mut self, what: impl Into<String>) {
        self.0.push(what.into());
    }

    /// "tried: a; b; c".
    pub(crate) fn describe(&self) -> String {
        let mut s = String::from("tried: ");
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            let _ = write!(s, "{a}");
        }
        s
    }
}

/// `dlopen(name)`; the loader's message on failure.
pub(crate) fn dlopen(name: &Path) -> Result<OpenLibrary, String> {
    let c_name = CString::new(name.as_os_str().as_bytes()).map_err(|_| "a NUL byte in the name".to_string())?;
    // SAFETY: `c_name` is a C string; RTLD_LOCAL keeps the library's symbols
    // out of the global namespace of the host process.
    let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a C string valid until the next dl call here.
        let message = unsafe { libc::dlerror() };
        let message = if message.is_null() {
            "dlopen failed".to_string()
        } else {
            // SAFETY: non-NULL, NUL-terminated (see above).
            unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
        };
        return Err(message);
    }
    Ok(OpenLibrary { handle, path: name.display().to_string() })
}

/// Opens `library`: the override, else the loader's search by soname, else the
/// usual folders, in that order, for each file name in order of preference.
pub(crate) fn open(library: Library, driver_major: Option<u32>) -> Result<OpenLibrary, Attempts> {
    let mut attempts = Attempts::default();
    let names = library.file_names(driver_major);
    let variable = library.override_variable();
    if let Some(value) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        let candidates: Vec<PathBuf> =
            if path.is_dir() { names.iter().map(|n| path.join(n)).collect() } else { vec![path] };
        for candidate in candidates {
            match dlopen(&candidate) {
                Ok(lib) => return Ok(lib),
                Err(e) => attempts.push(format!("{variable}={}: {e}", candidate.display())),
            }
        }
        return Err(attempts);
    }
    for name in &names {
        match dlopen(Path::new(name)) {
            Ok(lib) => return Ok(lib),
            Err(e) => attempts.push(format!("{name} through the dynamic loader: {e}")),
        }
    }
    let folders = search_folders(library);
    let mut absent = Vec::new();
    for folder in &folders {
        let present: Vec<PathBuf> = names.iter().map(|n| folder.join(n)).filter(|p| p.exists()).collect();
        if present.is_empty() {
            absent.push(folder.display().to_string());
            continue;
        }
        for candidate in present {
            match dlopen(&candidate) {
                Ok(lib) => return Ok(lib),
                Err(e) => attempts.push(format!("{}: {e}", candidate.display())),
            }
        }
    }
    if !absent.is_empty() {
        attempts.push(format!("{} in {} (absent)", names.join(" or "), absent.join(", ")));
    }
    attempts.push(format!("{variable} (unset; set it to the library's file or folder)"));
    Err(attempts)
}

/// The folders searched after the dynamic loader, existing ones only, in order.
pub(crate) fn search_folders(library: Library) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"]
        .iter()
        .filter_map(|v| std::env::var_os(v).filter(|v| !v.is_empty()).map(PathBuf::from))
        .collect();
    roots.push(PathBuf::from("/usr/local/cuda"));
    let mut folders = Vec::new();
    for root in &roots {
        for sub in ["lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"] {
            folders.push(root.join(sub));
        }
        if library == Library::Driver {
            folders.push(root.join("compat"));
        }
    }
    if library == Library::Driver {
        folders.push(PathBuf::from("/usr/lib/wsl/lib"));
        folders.push(PathBuf::from("/usr/lib/x86_64-linux-gnu"));
        folders.push(PathBuf::from("/usr/lib/aarch64-linux-gnu"));
        folders.push(PathBuf::from("/usr/lib64"));
    } else {
        folders.extend(python_nvidia_folders());
    }
    let mut seen = Vec::new();
    folders.retain(|f| {
        f.is_dir() && !seen.contains(f) && {
            seen.push(f.clone());
            true
        }
    });
    folders
}

/// `…/site-packages/nvidia/*/lib` under the usual Python prefixes.
fn python_nvidia_folders() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(|v| std::env::var_os(v).filter(|v| !v.is_empty()).map(PathBuf::from))
        .collect();
    // The Python on PATH (a virtual environment need not be activated).
    if let Some(path) = std::env::var_os("PATH") {
        prefixes.extend(python_prefixes(&path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        prefixes.push(PathBuf::from(home).join(".local"));
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    let mut packages = site_packages(&prefixes);
    packages.push(PathBuf::from("/usr/lib/python3/dist-packages"));
    if let Some(paths) = std::env::var_os("PYTHONPATH") {
        packages.extend(std::env::split_paths(&paths));
    }
    wheel_lib_folders(&packages)
}

/// The prefixes (`…/bin/..`) of the folders of a PATH-like list holding a `python3`.
fn python_prefixes(path: &std::ffi::OsStr) -> Vec<PathBuf> {
    std::env::split_paths(path)
        .filter(|d| d.join("python3").exists())
        .filter_map(|d| d.parent().map(Path::to_path_buf))
        .collect()
}

/// `PREFIX/lib*/python3*/{site,dist}-packages` for each prefix.
fn site_packages(prefixes: &[PathBuf]) -> Vec<PathBuf> {
    let mut packages = Vec::new();
    for prefix in prefixes {
        for lib in ["lib", "lib64"] {
            for python in subfolders(&prefix.join(lib)).filter(|p| file_name_starts(p, "python3")) {
                packages.push(python.join("site-packages"));
                packages.push(python.join("dist-packages"));
            }
        }
    }
    packages
}

/// `SITE/nvidia/*/lib` for each site-packages folder, in a stable order.
fn wheel_lib_folders(packages: &[PathBuf]) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    for site in packages {
        let mut libs: Vec<PathBuf> = subfolders(&site.join("nvidia")).map(|p| p.join("lib")).collect();
        libs.sort(); // a stable order: cu13 before cublas before cuda_nvrtc
        folders.extend(libs);
    }
    folders
}

fn subfolders(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir())
}

fn file_name_starts(path: &Path, prefix: &str) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_13_libraries_are_preferred_and_skipped_for_an_older_driver() {
        assert_eq!(Library::Nvrtc.file_names(None), ["libnvrtc.so.13", "libnvrtc.so.12"]);
        assert_eq!(Library::CublasLt.file_names(Some(12)), ["libcublasLt.so.12"]);
        assert_eq!(Library::Driver.file_names(Some(12))[0], "libcuda.so.1");
    }

    #[test]
    fn the_python_on_path_is_searched_for_wheels() {
        // A prefix with a python3 and an nvidia wheel folder, as PyTorch installs it.
        let root = std::env::temp_dir().join(format!("llmint8-libs-{}", std::process::id()));
        let lib = root.join("lib/python3.99/site-packages/nvidia/cuda_nvrtc/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/python3"), b"").unwrap();
        let path = std::env::join_paths([PathBuf::from("/nonexistent/bin"), root.join("bin")]).unwrap();
        let prefixes = python_prefixes(&path);
        assert_eq!(prefixes, std::slice::from_ref(&root));
        let found = wheel_lib_folders(&site_packages(&prefixes));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(found, [lib]);
    }

    #[test]
    fn a_missing_library_lists_every_attempt() {
        let attempts = Attempts(vec!["a: no".into(), "b: gone".into()]);
        assert_eq!(attempts.describe(), "tried: a: no; b: gone");
    }
}
