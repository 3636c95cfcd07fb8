//! How a CUDA context fails on a machine without a usable GPU: NO_DEVICE, with
//! a message listing what was looked for — for each way the driver, NVRTC or
//! cuBLASLt can be missing. A stand-in driver (tests/c/fake_libcuda.c, built
//! here with `cc`) gets the search past libcuda without a GPU.
//!
//! Each case runs in a child process of this test binary started with the
//! case's environment (the environment is never changed from a running test:
//! other threads read it); the child prints what a CUDA context says.

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

/// Set in a child: it prints what the CUDA backend says, for the parent to check.
const CHILD: &str = "LLMINT8_TEST_DISCOVERY_CHILD";

/// Run by [`a_cuda_context_without_a_gpu_says_what_was_looked_for`] in a child
/// process with one case's environment: prints the NO_DEVICE message of a CUDA
/// context (checked to be NO_DEVICE, with AUTO falling back to the CPU) and
/// what `cuda_report` says.
#[test]
#[ignore = "run by a_cuda_context_without_a_gpu_says_what_was_looked_for, in a child process"]
fn child_prints_what_cuda_discovery_says() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "run only as a child of a_cuda_context_without_a_gpu_says_what_was_looked_for"
    );
    let e = Context::new(Backend::Cuda, 0).expect_err("no GPU here, yet a CUDA context was made");
    assert_eq!(e.status(), Status::NoDevice, "{e}");
    assert_eq!(Context::new(Backend::Auto, 0).unwrap().location(), Location::Cpu);
    println!("<message>{e}</message>");
    match llmint8::cuda_report() {
        Ok(report) => println!("<report>ok: {report}</report>"),
        Err(r) => println!("<report>{:?}: {r}</report>", r.status()),
    }
}

/// What a CUDA context says (its NO_DEVICE message) and what `cuda_report`
/// says, in a child process started with `env` (the variables of
/// [`VARIABLES`] it does not set are removed).
fn discover(env: &[(&str, &std::ffi::OsStr)]) -> (String, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["child_prints_what_cuda_discovery_says", "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for v in VARIABLES {
        command.env_remove(v);
    }
    command.envs(env.iter().copied()).env(CHILD, "1");
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "the child failed with {env:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let between = |open: &str, close: &str| {
        let start = stdout.find(open).unwrap() + open.len();
        stdout[start..start + stdout[start..].find(close).unwrap()].to_string()
    };
    (between("<message>", "</message>"), between("<report>", "</report>"))
}

/// The NO_DEVICE message with `env`.
fn no_device(env: &[(&str, &std::ffi::OsStr)]) -> String {
    discover(env).0
}

/// With `env`, `cuda_report` fails with NO_DEVICE too.
fn report_fails(env: &[(&str, &std::ffi::OsStr)]) {
    let report = discover(env).1;
    assert!(report.starts_with("NoDevice: "), "cuda_report with {env:?}: {report}");
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
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_discovery");
    let empty = scratch.join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    let os = |s: &'static str| std::ffi::OsStr::new(s);
    // No driver anywhere: every place searched is listed, and the override.
    let m = no_device(&[]);
    assert_mentions(&m, &["libcuda.so.1 through the dynamic loader", "LLMINT8_LIBCUDA (unset", "tried:"]);
    report_fails(&[]);

    // An override naming a missing file: only it is tried.
    let m = no_device(&[("LLMINT8_LIBCUDA", os("/nonexistent/libcuda.so.1"))]);
    assert_mentions(&m, &["LLMINT8_LIBCUDA=/nonexistent/libcuda.so.1"]);
    assert!(!m.contains("dynamic loader"), "{m}");

    // An override naming a folder: the library's file names in it.
    let m = no_device(&[("LLMINT8_LIBCUDA", empty.as_os_str())]);
    assert_mentions(&m, &[&format!("{}/libcuda.so.1", empty.display())]);

    // A library that is not a CUDA driver.
    assert_mentions(&no_device(&[("LLMINT8_LIBCUDA", os("libm.so.6"))]), &["not a usable CUDA driver", "cuInit"]);

    // A driver that finds no device.
    let fake = fake_driver(&scratch);
    let driver = ("LLMINT8_LIBCUDA", fake.as_os_str());
    let m = no_device(&[driver, ("FAKE_CUDA_INIT", os("100"))]);
    assert_mentions(&m, &["cuInit failed", "no CUDA-capable device", &fake.display().to_string()]);

    // A driver too old for CUDA 12.
    let m = no_device(&[driver, ("FAKE_CUDA_INIT", os("0")), ("FAKE_CUDA_VERSION", os("11080"))]);
    assert_mentions(&m, &["supports CUDA 11.8", "needs CUDA 12"]);

    // A CUDA 12 driver: NVRTC 12 is looked for, never 13 (it would not run).
    let cuda12 = [driver, ("FAKE_CUDA_INIT", os("0")), ("FAKE_CUDA_VERSION", os("12080"))];
    let m = no_device(&[&cuda12[..], &[("LLMINT8_LIBNVRTC", empty.as_os_str())]].concat());
    assert_mentions(&m, &["libnvrtc for CUDA 12", &format!("{}/libnvrtc.so.12", empty.display())]);
    assert!(!m.contains("libnvrtc.so.13"), "{m}");
    assert_mentions(&no_device(&cuda12), &["libnvrtc.so.12 through the dynamic loader", "LLMINT8_LIBNVRTC (unset"]);

    // A CUDA 13 driver and NVRTC 13 (from PyPI, when the test command installed
    // it): cuBLASLt is looked for next, 13 before 12.
    let Some(nvrtc13) = test_nvrtc(13) else {
        eprintln!("note: LLMINT8_TEST_NVRTC names no libnvrtc.so.13; the cuBLASLt cases were not run");
        return;
    };
    let cuda13 = [
        driver,
        ("FAKE_CUDA_INIT", os("0")),
        ("FAKE_CUDA_VERSION", os("13000")),
        ("LLMINT8_LIBNVRTC", nvrtc13.as_os_str()),
    ];
    let no_lt = [&cuda13[..], &[("LLMINT8_LIBCUBLASLT", empty.as_os_str())]].concat();
    assert_mentions(&no_device(&no_lt), &["libcublasLt for CUDA 13", "libcublasLt.so.13", "libcublasLt.so.12"]);
    report_fails(&no_lt);

    // With cuBLASLt too (only where it is installed: LLMINT8_TEST_CUBLASLT),
    // the runtime loads, and the stand-in driver reports no device.
    if let Some(lt) = std::env::var_os("LLMINT8_TEST_CUBLASLT") {
        let with_lt = [&cuda13[..], &[("LLMINT8_LIBCUBLASLT", lt.as_os_str())]].concat();
        let (message, report) = discover(&with_lt);
        assert_mentions(&message, &["sees no device"]);
        assert_mentions(&report, &["ok: ", "(CUDA 13.0)", "NVRTC: ", "cuBLASLt: ", "devices: none"]);
    }
}
