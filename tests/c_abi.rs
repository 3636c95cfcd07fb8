//! Builds tests/c/test_abi.c against the committed header and the built shared
//! library, and runs it. The library must be built first (`cargo build
//! --release`; the README's test command does it): `cargo test` does not build
//! the cdylib by itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

mod common;

/// target/<profile>, the directory holding this test's `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let t = if path.is_dir() { newest_source(&path) } else { path.metadata().unwrap().modified().unwrap() };
        newest = newest.max(t);
    }
    newest
}

/// The built library, refusing one older than the sources it should come from.
fn built_library() -> PathBuf {
    let dir = profile_dir();
    let lib = dir.join("libllmint8.so");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = lib.metadata().and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!("{} is missing: run `cargo build --release` (or scripts/test.sh) first", lib.display())
    });
    assert!(
        built >= newest_source(&root.join("src")),
        "{} is older than src/: run `cargo build --release` (or scripts/test.sh) first",
        lib.display()
    );
    assert!(dir.join("libllmint8.so.1").exists(), "the SONAME link libllmint8.so.1 is missing in {}", dir.display());
    lib
}

/// Compiles a C (`.c`, C11) or C++ (`.cpp`, C++17, with bindings/cpp) file of
/// the repository with strict warnings against the committed header and the
/// built library, runs it, and returns its stdout.
fn compile_and_run(source: &str) -> String {
    compile_and_run_with(source, if source.ends_with(".cpp") { "-std=c++17" } else { "-std=c11" }, &[])
}

/// [`compile_and_run`] with another language standard and extra flags.
fn compile_and_run_with(source: &str, standard: &str, extra: &[&str]) -> String {
    run(source, &compile(source, standard, extra), &[])
}

/// Compiles `source` (see [`compile_and_run`]) and returns the executable.
fn compile(source: &str, standard: &str, extra: &[&str]) -> PathBuf {
    let lib = built_library();
    let dir = lib.parent().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("c-tests");
    std::fs::create_dir_all(&out).unwrap();
    // One executable per source path (examples/c/hello.c and examples/cpp/hello.cpp
    // build in parallel).
    let exe = out.join(source.replace(['/', '.'], "_"));
    let cpp = source.ends_with(".cpp");
    let cc = if cpp {
        std::env::var("CXX").unwrap_or_else(|_| "c++".into())
    } else {
        std::env::var("CC").unwrap_or_else(|_| "cc".into())
    };
    let status = Command::new(&cc)
        .arg(standard)
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-pthread"])
        .args(extra)
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("bindings/cpp"))
        .arg(root.join(source))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .args(["-lllmint8", "-lm"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "compiling {source} failed");
    exe
}

/// Runs a compiled test program with extra environment variables; returns its
/// stdout, failing on a non-zero exit.
fn run(source: &str, exe: &Path, env: &[(&str, &std::ffi::OsStr)]) -> String {
    run_command(source, Command::new(exe).envs(env.iter().copied()))
}

/// Runs `cmd` (a compiled `source`), asserting success; returns its stdout.
fn run_command(source: &str, cmd: &mut Command) -> String {
    // The program finds the library through its SONAME, libllmint8.so.1.
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{source} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn c_program_exercises_the_whole_abi() {
    let stdout = compile_and_run("tests/c/test_abi.c");
    assert!(stdout.contains(" 0 failures"), "{stdout}");
}

/// The CUDA kernels' logic, run on the CPU by a small emulator of the CUDA
/// programming model (tests/cuda_emu), against the CPU backend bit for bit —
/// what can be checked of kernels/llmint8.cu without a GPU. (The PTX
/// arithmetic helpers are the only part replaced: by their host equivalents.)
#[test]
fn cuda_kernels_emulated_on_the_cpu_match_the_cpu_backend() {
    let stdout = compile_and_run_with("tests/cuda_emu/check_kernels.cpp", "-std=c++20", &["-ffp-contract=off"]);
    assert!(stdout.contains("63 cases, 0 failures"), "{stdout}");
}

/// The CUDA entry points of the C ABI as an engine calls them (device
/// pointers, its own stream, weights quantized from device memory) on the
/// emulated GPU of tests/cuda_emu/fake_cuda.cpp, against the CPU backend;
/// then the C++ binding's device calls.
#[test]
fn c_program_drives_the_cuda_backend_on_the_emulated_gpu() {
    let fake = common::fake_cuda_library();
    let exe = compile("tests/c/cuda_device.c", "-std=c11", &[]);
    let env: Vec<(&str, &std::ffi::OsStr)> = ["LLMINT8_LIBCUDA", "LLMINT8_LIBNVRTC", "LLMINT8_LIBCUBLASLT"]
        .into_iter()
        .map(|v| (v, fake.as_os_str()))
        .chain([("LLMINT8_FAKE_CUDA_DEVICES", std::ffi::OsStr::new("2"))])
        .collect();
    let stdout = run("tests/c/cuda_device.c", &exe, &env);
    assert!(stdout.contains(" checks, 0 failures"), "{stdout}");
    // The C++ binding's device calls, the same way.
    let exe = compile("bindings/cpp/test_cuda.cpp", "-std=c++17", &[]);
    let stdout = run("bindings/cpp/test_cuda.cpp", &exe, &env);
    assert!(stdout.contains(" checks, 0 failures"), "{stdout}");
}

#[test]
fn c_example_runs_under_strict_warnings() {
    let stdout = compile_and_run("examples/c/hello.c");
    // x row 0 · W row 0 + bias = 0.1 - 0.4 + 0.9 + 1.6 + 0.01 = 2.21; column 1 of x holds 9.0.
    assert!(stdout.contains("y[0] =   2.2"), "{stdout}");
    assert!(stdout.contains("outlier columns: 1"), "{stdout}");
}

#[test]
fn shared_library_soname_carries_the_abi_version() {
    let lib = built_library();
    let bytes = std::fs::read(&lib).unwrap();
    let soname = format!("libllmint8.so.{}\0", llmint8::ABI_VERSION);
    assert!(
        bytes.windows(soname.len()).any(|w| w == soname.as_bytes()),
        "{} does not carry the SONAME {soname}",
        lib.display()
    );
}

#[test]
fn cpp_binding_tests_pass() {
    let stdout = compile_and_run("bindings/cpp/test_llmint8.cpp");
    assert!(stdout.contains(" 0 failures"), "{stdout}");
}

/// A C++ caller with another element type gets a message naming the types
/// the binding takes, not an incomplete-type error from its internals.
#[test]
fn cpp_binding_names_the_element_types_it_takes() {
    let dir = std::env::temp_dir().join(format!("llmint8-cpp-element-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("double.cpp");
    let program = "#include \"llmint8.hpp\"\n#include <vector>\n\
                   int main() { llmint8::Context *ctx = nullptr; std::vector<double> w(4); ctx->quantize(w, 2, 2); }\n";
    std::fs::write(&source, program).unwrap();
    let out = Command::new("c++")
        .args(["-std=c++17", "-fsyntax-only", "-Iinclude", "-Ibindings/cpp"])
        .arg(&source)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a double weight compiled");
    assert!(err.contains("the element type must be float, llmint8::Half or llmint8::BFloat16"), "{err}");
}

#[test]
fn cpp_example_runs_under_strict_warnings() {
    let stdout = compile_and_run("examples/cpp/hello.cpp");
    assert!(stdout.contains("y[0] =   2.2"), "{stdout}");
    assert!(stdout.contains("outlier columns: 1"), "{stdout}");
}

/// The hostile-input table: every exported function under misuse, with canaries
/// around every output. docs/RELIABILITY.md carries the table the program prints.
#[test]
fn hostile_input_table_holds_and_matches_the_docs() {
    let stdout = compile_and_run("tests/c/hostile.c");
    assert!(stdout.contains(" rows, 0 failures"), "{stdout}");
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with('|')).collect();
    assert!(table.len() > 100, "only {} rows", table.len());
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/RELIABILITY.md")).unwrap();
    assert!(
        docs.contains(&table.join("\n")),
        "docs/RELIABILITY.md does not carry the hostile-input table tests/c/hostile.c prints; paste its output:\n{}",
        table.join("\n")
    );
}

#[test]
fn checkpoint_c_example_runs() {
    let stdout = compile_and_run("examples/c/load_checkpoint.c");
    assert!(stdout.contains("49 tensors, 14 linear layers loaded, 1581056 bytes of int8 weights"), "{stdout}");
    assert!(stdout.contains("outlier columns: 1"), "{stdout}");
}

/// examples/c/tensor_parallel.c: one rank's calls (gate/up column-parallel,
/// down row-parallel, the NCCL places marked), the world played in one
/// process, from the 16-bit checkpoint and bitsandbytes' 8-bit one: world 1
/// is the unsharded MLP exactly, larger worlds within 1e-4 of its largest
/// output (the program exits 1 otherwise).
#[test]
fn tensor_parallel_c_example_runs() {
    let exe = compile("examples/c/tensor_parallel.c", "-std=c11", &["-lm"]);
    for checkpoint in ["tests/data/tiny-llama-fp16", "tests/data/tiny-llama-int8"] {
        for world in ["1", "2", "3", "4"] {
            let stdout = run_command("examples/c/tensor_parallel.c", Command::new(&exe).args([checkpoint, world]));
            assert!(
                stdout.contains(&format!("world of {world} ranks: max |tensor-parallel - unsharded| = ")),
                "{stdout}"
            );
            if world == "1" {
                assert!(stdout.contains("unsharded| = 0 "), "{stdout}");
            }
        }
    }
    // docs/TENSOR_PARALLEL.md quotes it: every line it shows is in the file.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("examples/c/tensor_parallel.c")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/TENSOR_PARALLEL.md")).unwrap();
    let quoted: Vec<(String, String)> = code_blocks(&doc).into_iter().filter(|(lang, _)| lang == "c").collect();
    assert_eq!(quoted.len(), 1);
    let normalize = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat = normalize(&source);
    // Its statements, comments left out (they name the NCCL calls the file only comments too).
    let mut code = String::new();
    for (i, part) in quoted[0].1.split("/*").enumerate() {
        code.push_str(if i == 0 { part } else { part.split_once("*/").map_or("", |(_, rest)| rest) });
    }
    for statement in code.split(';').map(normalize).filter(|s| !s.is_empty()) {
        assert!(
            flat.contains(&statement),
            "docs/TENSOR_PARALLEL.md quotes what examples/c/tensor_parallel.c lacks: {statement}"
        );
    }
}

/// The fenced code blocks of a Markdown text: (language, text).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The README's C, C++, Go and Julia sections show the example files whole, and
/// the lines it gives to build and run the C, C++ and Go ones work as written,
/// from the repository root (Julia cannot be installed on these machines:
/// tests/julia_signatures.rs checks its binding against the header).
#[test]
fn the_readme_shows_the_examples_whole_and_its_lines_build_and_run_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = built_library();
    if lib.parent() != Some(&root.join("target/release")) {
        eprintln!("the library is not in target/release (CARGO_TARGET_DIR?): the README's lines name that folder");
        return;
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = code_blocks(&readme);
    for (lang, file) in [
        ("c", "examples/c/hello.c"),
        ("cpp", "examples/cpp/hello.cpp"),
        ("go", "examples/go/main.go"),
        ("julia", "examples/julia/hello.jl"),
    ] {
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            blocks.iter().any(|(l, text)| l == lang && text.trim_end() == source.trim_end()),
            "README.md does not show {file} whole in a ```{lang} block"
        );
    }
    let sh: Vec<&str> = blocks.iter().filter(|(l, _)| l == "sh").map(|(_, t)| t.as_str()).collect();
    assert!(
        sh.iter().any(|t| t.lines().any(|l| l.trim() == "cargo build --release")),
        "README.md: no `cargo build --release`"
    );
    for (compiler, exe) in [("cc ", "target/hello-c"), ("c++ ", "target/hello-cpp")] {
        let block = sh
            .iter()
            .find(|t| t.lines().any(|l| l.starts_with(compiler) && l.ends_with(exe)))
            .unwrap_or_else(|| panic!("README.md: no `{compiler}… -o {exe}` line"));
        let script: Vec<&str> = block.lines().filter(|l| l.starts_with(compiler) || l.trim() == exe).collect();
        assert_eq!(script.len(), 2, "README.md: the build and the run line of {exe}: {script:?}");
        let _ = std::fs::remove_file(root.join(exe));
        let out =
            Command::new("sh").arg("-ec").arg(script.join("\n")).current_dir(root).env("PWD", root).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("outlier columns: 1"),
            "{script:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Go: the README's run line, and its go.mod lines are the file's.
    let go_mod = std::fs::read_to_string(root.join("examples/go/go.mod")).unwrap();
    for line in ["require llmint8.dev/llmint8 v0.0.0", "replace llmint8.dev/llmint8 => ../../bindings/go"] {
        assert!(go_mod.lines().any(|l| l == line) && readme.contains(&format!("`{line}`")), "go.mod: {line}");
    }
    let go_line = "(cd examples/go && go run .)";
    assert!(sh.iter().any(|t| t.lines().any(|l| l == go_line)), "README.md: no `{go_line}` line");
    if Command::new("go").arg("version").output().is_err() {
        eprintln!("note: no Go toolchain here; the README's Go line was not run (scripts/test.sh installs Go)");
        return;
    }
    let out = Command::new("sh").arg("-ec").arg(go_line).current_dir(root).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("outlier columns: 1"),
        "{go_line} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
