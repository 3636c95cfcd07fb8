//! Compiling the embedded kernels with NVRTC, to a CUBIN for one architecture.
//!
//! CUBIN, not PTX: a driver refuses PTX written by an NVRTC newer than itself,
//! while a CUBIN loads on any driver of the same CUDA major version.

use std::ffi::{c_char, CStr, CString};

use super::params::*;
use super::sys::{self, CUdeviceptr, Nvrtc};

/// The kernels' source (kernels/llmint8.cu), embedded in the library.
pub(crate) const KERNELS: &str = include_str!("../../kernels/llmint8.cu");

/// The kernels, by name and parameter struct. Those per element type are
/// indexed by `DType as usize` (f32, f16, bf16); the epilogue by X's type,
/// then Y's.
pub(crate) const QUANTIZE_ROWS: [Kernel<QuantizeRowsParams>; 3] = [
    Kernel::new("llmint8_quantize_rows_f32"),
    Kernel::new("llmint8_quantize_rows_f16"),
    Kernel::new("llmint8_quantize_rows_bf16"),
];
pub(crate) const RESCALE_ROWS: [Kernel<RescaleRowsParams>; 3] = [
    Kernel::new("llmint8_rescale_rows_f32"),
    Kernel::new("llmint8_rescale_rows_f16"),
    Kernel::new("llmint8_rescale_rows_bf16"),
];
pub(crate) const PREP_SMALL: [Kernel<PrepSmallParams>; 3] = [
    Kernel::new("llmint8_prep_small_f32"),
    Kernel::new("llmint8_prep_small_f16"),
    Kernel::new("llmint8_prep_small_bf16"),
];
pub(crate) const GATHER_OUTLIERS: [Kernel<GatherOutliersParams>; 3] = [
    Kernel::new("llmint8_gather_outliers_f32"),
    Kernel::new("llmint8_gather_outliers_f16"),
    Kernel::new("llmint8_gather_outliers_bf16"),
];
pub(crate) const EPILOGUE: [[Kernel<EpilogueParams>; 3]; 3] = [
    [
        Kernel::new("llmint8_epilogue_f32_f32"),
        Kernel::new("llmint8_epilogue_f32_f16"),
        Kernel::new("llmint8_epilogue_f32_bf16"),
    ],
    [
        Kernel::new("llmint8_epilogue_f16_f32"),
        Kernel::new("llmint8_epilogue_f16_f16"),
        Kernel::new("llmint8_epilogue_f16_bf16"),
    ],
    [
        Kernel::new("llmint8_epilogue_bf16_f32"),
        Kernel::new("llmint8_epilogue_bf16_f16"),
        Kernel::new("llmint8_epilogue_bf16_bf16"),
    ],
];
pub(crate) const OUTLIER_LIST: Kernel<OutlierListParams> = Kernel::new("llmint8_outlier_list");
pub(crate) const GATHER_WEIGHT_COLUMNS: Kernel<GatherWeightColumnsParams> =
    Kernel::new("llmint8_gather_weight_columns");
pub(crate) const PAD_ROWS: Kernel<PadRowsParams> = Kernel::new("llmint8_pad_rows");
pub(crate) const ROW_STATISTICS: Kernel<RowStatisticsParams> = Kernel::new("llmint8_row_statistics");
/// Writes the device compiler's layout of the parameter structs ([`super::params::check_layout`]).
pub(crate) const PARAM_LAYOUT: Kernel<CUdeviceptr> = Kernel::new("llmint8_param_layout");

/// Every kernel the library launches.
pub(crate) fn kernel_names() -> impl Iterator<Item = &'static str> {
    QUANTIZE_ROWS
        .map(|k| k.name)
        .into_iter()
        .chain(RESCALE_ROWS.map(|k| k.name))
        .chain(PREP_SMALL.map(|k| k.name))
        .chain(GATHER_OUTLIERS.map(|k| k.name))
        .chain(EPILOGUE.into_iter().flatten().map(|k| k.name))
        .chain([OUTLIER_LIST.name, GATHER_WEIGHT_COLUMNS.name, PAD_ROWS.name, ROW_STATISTICS.name, PARAM_LAYOUT.name])
}

/// Threads per block of every kernel but the one-block ones (the row
/// quantizer's `QUANT_THREADS`; grid-stride element-wise kernels otherwise).
pub(crate) const BLOCK_THREADS: u32 = 256;

/// Threads per block a kernel is launched with: the one-block kernels take
/// 1024 (their `__launch_bounds__`), every other kernel [`BLOCK_THREADS`].
pub(crate) fn threads_per_block(kernel: &str) -> u32 {
    if kernel == OUTLIER_LIST.name || PREP_SMALL.iter().any(|k| k.name == kernel) {
        1024
    } else {
        BLOCK_THREADS
    }
}

/// NVRTC's version, `(major, minor)`.
pub(crate) fn version(nvrtc: &Nvrtc) -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    check(nvrtc, unsafe { (nvrtc.nvrtcVersion)(&mut major, &mut minor) }, "nvrtcVersion")?;
    Ok((major, minor))
}

fn check(nvrtc: &Nvrtc, result: sys::nvrtcResult, what: &str) -> Result<(), String> {
    if result == sys::NVRTC_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvrtcGetErrorString returns a static C string (or NULL).
    let message = unsafe { (nvrtc.nvrtcGetErrorString)(result) };
    let message = if message.is_null() {
        format!("error {result}")
    } else {
        // SAFETY: non-NULL and NUL-terminated, static.
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    };
    Err(format!("{what} failed: {message}"))
}

/// Compiles `source` for `sm_{arch}` (e.g. 90) and returns the CUBIN, or
/// NVRTC's error with its log.
pub(crate) fn compile(nvrtc: &Nvrtc, source: &str, name: &str, arch: u32) -> Result<Vec<u8>, String> {
    compile_with(nvrtc, source, name, arch, &[]).map(|(cubin, _log)| cubin)
}

/// [`compile`] with extra NVRTC options; returns the CUBIN and the log.
fn compile_with(
    nvrtc: &Nvrtc,
    source: &str,
    name: &str,
    arch: u32,
    extra: &[&str],
) -> Result<(Vec<u8>, String), String> {
    let source = CString::new(source).map_err(|_| "a NUL byte in the kernel source".to_string())?;
    let name = CString::new(name).map_err(|_| "a NUL byte in the program name".to_string())?;
    let mut program: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid C strings; no headers are passed (count 0, NULL arrays).
    let created = unsafe {
        (nvrtc.nvrtcCreateProgram)(&mut program, source.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null())
    };
    check(nvrtc, created, "nvrtcCreateProgram")?;
    let result = compile_program(nvrtc, program, arch, extra).map(|cubin| (cubin, log(nvrtc, program)));
    // SAFETY: `program` was created above and is destroyed once.
    unsafe { (nvrtc.nvrtcDestroyProgram)(&mut program) };
    result
}

fn compile_program(nvrtc: &Nvrtc, program: sys::nvrtcProgram, arch: u32, extra: &[&str]) -> Result<Vec<u8>, String> {
    // --fmad=false: no contraction of a·b + c (the kernels also spell out each
    // rounding step in PTX); the rest is NVRTC's default (IEEE division,
    // square root and denormals).
    let options: Vec<CString> = [format!("--gpu-architecture=sm_{arch}"), "--fmad=false".into(), "--std=c++17".into()]
        .into_iter()
        .chain(extra.iter().map(|o| o.to_string()))
        .map(|o| CString::new(o).map_err(|e| format!("an NVRTC option holds a NUL byte: {e}")))
        .collect::<Result<_, _>>()?;
    let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `program` is live; `pointers` holds `options.len()` C strings.
    let compiled = unsafe { (nvrtc.nvrtcCompileProgram)(program, pointers.len() as i32, pointers.as_ptr()) };
    if let Err(e) = check(nvrtc, compiled, "nvrtcCompileProgram") {
        return Err(format!("{e} for sm_{arch}:\n{}", log(nvrtc, program)));
    }
    let mut size = 0usize;
    // SAFETY: `program` compiled; `size` is a valid out-pointer.
    check(nvrtc, unsafe { (nvrtc.nvrtcGetCUBINSize)(program, &mut size) }, "nvrtcGetCUBINSize")?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has the size NVRTC reported.
    check(nvrtc, unsafe { (nvrtc.nvrtcGetCUBIN)(program, cubin.as_mut_ptr().cast()) }, "nvrtcGetCUBIN")?;
    Ok(cubin)
}

/// The compile log (warnings and errors).
fn log(nvrtc: &Nvrtc, program: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: `program` is live; `size` is a valid out-pointer.
    if unsafe { (nvrtc.nvrtcGetProgramLogSize)(program, &mut size) } != sys::NVRTC_SUCCESS || size == 0 {
        return String::new();
    }
    let mut text = vec![0u8; size];
    // SAFETY: `text` has the size NVRTC reported, terminating NUL included.
    if unsafe { (nvrtc.nvrtcGetProgramLog)(program, text.as_mut_ptr().cast()) } != sys::NVRTC_SUCCESS {
        return String::new();
    }
    String::from_utf8_lossy(&text).trim_end_matches('\0').trim_end().to_string()
}

/// Checks that `cubin` is a CUDA ELF for `sm_{arch}` defining every kernel
/// (the loader would otherwise fail only on the device).
pub(crate) fn check_cubin(cubin: &[u8], arch: u32) -> Result<(), String> {
    const EM_CUDA: u16 = 190;
    if cubin.len() < 64 || &cubin[..4] != b"\x7fELF" || cubin[4] != 2 {
        return Err("not a 64-bit ELF file".into());
    }
    let machine = u16::from_le_bytes([cubin[18], cubin[19]]);
    if machine != EM_CUDA {
        return Err(format!("ELF machine {machine}, not EM_CUDA ({EM_CUDA})"));
    }
    // e_flags holds the SM version in its low bits (0x5a = 90 for sm_90).
    let flags = u32::from_le_bytes([cubin[48], cubin[49], cubin[50], cubin[51]]);
    let has_arch = |a: u32| (flags & 0xff) == a || ((flags >> 8) & 0xff) == a;
    if !has_arch(arch) {
        return Err(format!("ELF flags {flags:#x} do not name sm_{arch}"));
    }
    for name in kernel_names() {
        let needle = format!("\0{name}\0");
        if !cubin.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            return Err(format!("the CUBIN lacks the kernel {name}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::libs::{self, Library};

    /// The NVRTC libraries to compile with: `LLMINT8_TEST_NVRTC` (files,
    /// `:`-separated; scripts/test.sh installs NVRTC 12 and 13 from PyPI and
    /// names both), else whatever discovery finds. `LLMINT8_REQUIRE_NVRTC=1`
    /// turns "none found" into a failure (set by scripts/test.sh).
    fn nvrtc_libraries() -> Vec<Nvrtc> {
        let mut found = Vec::new();
        if let Some(list) = std::env::var_os("LLMINT8_TEST_NVRTC").filter(|v| !v.is_empty()) {
            for path in std::env::split_paths(&list) {
                let lib =
                    libs::dlopen(&path).unwrap_or_else(|e| panic!("LLMINT8_TEST_NVRTC names {}: {e}", path.display()));
                found.push(Nvrtc::load(&lib).expect("NVRTC entry points"));
            }
        } else if let Ok(lib) = libs::open(Library::Nvrtc, None) {
            found.push(Nvrtc::load(&lib).expect("NVRTC entry points"));
        }
        if found.is_empty() {
            assert!(
                std::env::var("LLMINT8_REQUIRE_NVRTC").as_deref() != Ok("1"),
                "LLMINT8_REQUIRE_NVRTC=1 but no NVRTC library was found"
            );
            eprintln!("note: no NVRTC library here; the kernels were not compiled");
        }
        found
    }

    #[test]
    fn every_kernel_compiles_to_a_cubin_for_sm80_and_sm90() {
        for nvrtc in nvrtc_libraries() {
            let (major, minor) = version(&nvrtc).unwrap();
            for arch in [80, 90] {
                let cubin = compile(&nvrtc, KERNELS, "llmint8.cu", arch)
                    .unwrap_or_else(|e| panic!("NVRTC {major}.{minor}, sm_{arch}: {e}"));
                check_cubin(&cubin, arch).unwrap_or_else(|e| panic!("NVRTC {major}.{minor}, sm_{arch}: {e}"));
                eprintln!(
                    "NVRTC {major}.{minor}: sm_{arch} CUBIN of {} bytes, {} kernels",
                    cubin.len(),
                    kernel_names().count()
                );
            }
        }
    }

    /// ptxas' resource report for every kernel: no register spills, and the
    /// registers of a block within an SM's 65 536 at the launch size
    /// (else the launch fails with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES).
    #[test]
    fn every_kernel_fits_its_launch_without_spilling() {
        for nvrtc in nvrtc_libraries() {
            let (major, minor) = version(&nvrtc).unwrap();
            for arch in [80, 90] {
                let (_, log) = compile_with(&nvrtc, KERNELS, "llmint8.cu", arch, &["--ptxas-options=-v"])
                    .unwrap_or_else(|e| panic!("NVRTC {major}.{minor}, sm_{arch}: {e}"));
                for name in kernel_names() {
                    let what = format!("NVRTC {major}.{minor}, sm_{arch}, {name}");
                    let start = log
                        .find(&format!("Compiling entry function '{name}'"))
                        .unwrap_or_else(|| panic!("{what}: not in the ptxas report:\n{log}"));
                    // This kernel's lines, up to the next kernel's.
                    let rest = &log[start + 1..];
                    let report = &rest[..rest.find("Compiling entry function").unwrap_or(rest.len())];
                    assert!(report.contains(" 0 bytes spill stores, 0 bytes spill loads"), "{what}: {report}");
                    let registers: u32 = report
                        .split("Used ")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .and_then(|r| r.parse().ok())
                        .unwrap_or_else(|| panic!("{what}: no register count in {report}"));
                    assert!(registers * threads_per_block(name) <= 65536, "{what}: {registers} registers");
                }
            }
        }
    }

    #[test]
    fn a_kernel_that_does_not_compile_reports_the_log() {
        for nvrtc in nvrtc_libraries() {
            let e =
                compile(&nvrtc, "extern \"C\" __global__ void k() { undefined_thing(); }", "bad.cu", 90).unwrap_err();
            assert!(e.contains("nvrtcCompileProgram failed") && e.contains("undefined_thing"), "{e}");
        }
    }

    #[test]
    fn a_cubin_check_refuses_other_files() {
        assert!(check_cubin(b"not an elf file at all, long enough to have a header.................", 90).is_err());
    }
}
