//! How a CUDA context fails on a machine without a usable GPU: NO_DEVICE, with
//! a message listing what was looked for — for each way the driver, NVRTC or
//! cuBLASLt can be missing. A stand-in driver (tests/c/fake_libcuda.c, built
//! here with `cc`) gets the search past libcuda without a GPU.
//!
//! One test function: the cases change environment variables, which every
//! thread of the process shares.

use std::path::{Path, PathBuf};
use std::process::Command;

use llmint8::{Backend, Context, Location, Status};

const VARIABLES: [&str; 8] = [
    "LLMINT8_LIBCUDA",
    "LLMINT8_LIBNVRTC",
    "LLMINT8_LIBCUBLASLT",
    "FAKE_CUDA_INIT",
    "FAKE_CUDA_VERSION",
    "CUDA_HOME",
    "CUDA_PATH",
    "VIRTUAL_ENV",
];

/// The NO_DEVICE message of a CUDA context, checked to be NO_DEVICE.
fn no_device() -> String {
    let e = Context::new(Backend::Cuda, 0).expect_err("no GPU here, yet a CUDA context was made");
    assert_eq!(e.status(), Status::NoDevice, "{e}");
    // AUTO falls back to the CPU for the same reason.
    assert_eq!(Context::new(Backend::Auto, 0).unwrap().location(), Location::Cpu);
    e.to_string()
}

/// `cuda_report` fails the same way while a library is missing.
fn report_fails() {
    let report = llmint8::cuda_report().expect_err("cuda_report succeeded without the CUDA libraries");
    assert_eq!(report.status(), Status::NoDevice);
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "the message lacks {part:?}:\n{message}");
    }
}

fn fake_driver(dir: &Path) -> PathBuf {
    let lib = dir.join("libcuda.so.1");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/fake_libcuda.c");
    let status = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&source).status().expect("cc runs");
    assert!(status.success(), "building the stand-in driver failed");
    lib
}

/// NVRTC libraries named by `LLMINT8_TEST_NVRTC` (scripts/test.sh sets it).
fn test_nvrtc(major: u32) -> Option<PathBuf> {
    let list = std::env::var_os("LLMINT8_TEST_NVRTC")?;
    std::env::split_paths(&list).find(|p| p.to_string_lossy().ends_with(&format!("libnvrtc.so.{major}")))
}

#[test]
fn a_cuda_context_without_a_gpu_says_what_was_looked_for() {
    if ["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        eprintln!(
            "note: this machine has a CUDA driver; the no-GPU cases do not apply (scripts/gpu-check.sh tests the GPU)"
        );
        return;
    }
    for v in VARIABLES {
        std::env::remove_var(v);
    }
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_discovery");
    let empty = scratch.join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    // No driver anywhere: every place searched is listed, and the override.
    let m = no_device();
    assert_mentions(&m, &["libcuda.so.1 through the dynamic loader", "LLMINT8_LIBCUDA (unset", "tried:"]);
    report_fails();

    // An override naming a missing file: only it is tried.
    std::env::set_var("LLMINT8_LIBCUDA", "/nonexistent/libcuda.so.1");
    let m = no_device();
    assert_mentions(&m, &["LLMINT8_LIBCUDA=/nonexistent/libcuda.so.1"]);
    assert!(!m.contains("dynamic loader"), "{m}");

    // An override naming a folder: the library's file names in it.
    std::env::set_var("LLMINT8_LIBCUDA", &empty);
    assert_mentions(&no_device(), &[&format!("{}/libcuda.so.1", empty.display())]);

    // A library that is not a CUDA driver.
    std::env::set_var("LLMINT8_LIBCUDA", "libm.so.6");
    assert_mentions(&no_device(), &["not a usable CUDA driver", "cuInit"]);

    // A driver that finds no device.
    let fake = fake_driver(&scratch);
    std::env::set_var("LLMINT8_LIBCUDA", &fake);
    std::env::set_var("FAKE_CUDA_INIT", "100");
    assert_mentions(&no_device(), &["cuInit failed", "no CUDA-capable device", &fake.display().to_string()]);

    // A driver too old for CUDA 12.
    std::env::set_var("FAKE_CUDA_INIT", "0");
    std::env::set_var("FAKE_CUDA_VERSION", "11080");
    assert_mentions(&no_device(), &["supports CUDA 11.8", "needs CUDA 12"]);

    // A CUDA 12 driver: NVRTC 12 is looked for, never 13 (it would not run).
    std::env::set_var("FAKE_CUDA_VERSION", "12080");
    std::env::set_var("LLMINT8_LIBNVRTC", &empty);
    let m = no_device();
    assert_mentions(&m, &["libnvrtc for CUDA 12", &format!("{}/libnvrtc.so.12", empty.display())]);
    assert!(!m.contains("libnvrtc.so.13"), "{m}");
    std::env::remove_var("LLMINT8_LIBNVRTC");
    assert_mentions(&no_device(), &["libnvrtc.so.12 through the dynamic loader", "LLMINT8_LIBNVRTC (unset"]);

    // A CUDA 13 driver and NVRTC 13 (from PyPI, when the test command installed
    // it): cuBLASLt is looked for next, 13 before 12.
    let Some(nvrtc13) = test_nvrtc(13) else {
        eprintln!("note: LLMINT8_TEST_NVRTC names no libnvrtc.so.13; the cuBLASLt cases were not run");
        return;
    };
    std::env::set_var("FAKE_CUDA_VERSION", "13000");
    std::env::set_var("LLMINT8_LIBNVRTC", &nvrtc13);
    std::env::set_var("LLMINT8_LIBCUBLASLT", &empty);
    let m = no_device();
    assert_mentions(&m, &["libcublasLt for CUDA 13", "libcublasLt.so.13", "libcublasLt.so.12"]);
    report_fails();

    // With cuBLASLt too (only where it is installed: LLMINT8_TEST_CUBLASLT),
    // the runtime loads, and the stand-in driver reports no device.
    if let Some(lt) = std::env::var_os("LLMINT8_TEST_CUBLASLT") {
        std::env::set_var("LLMINT8_LIBCUBLASLT", lt);
        assert_mentions(&no_device(), &["sees no device"]);
        let report = llmint8::cuda_report().unwrap();
        assert_mentions(&report, &["(CUDA 13.0)", "NVRTC: ", "cuBLASLt: ", "devices: none"]);
    }
    for v in VARIABLES {
        std::env::remove_var(v);
    }
}
