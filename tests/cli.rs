//! The `llmint8` command-line tool, run as a user runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{data_dir, Rng};
use llmint8::io::{Checkpoint, SafetensorsWriter, TensorDtype, TensorSpec};

fn llmint8(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmint8")).args(args).output().expect("run llmint8")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llmint8-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn help_is_there_for_every_command() {
    for args in [&["--help"][..], &["help"], &["help", "convert"], &["convert", "--help"], &["inspect", "-h"]] {
        let out = llmint8(args);
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("llmint8"), "{args:?}");
    }
    assert!(text(&llmint8(&["convert", "--help"]).stdout).contains("--max-shard-size"));
    assert!(text(&llmint8(&["--version"]).stdout).starts_with("llmint8 "));
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["convert", "only-one"],
        &["convert", "a", "b", "c"],
        &["convert", "a", "b", "--threshold", "x"],
        &["convert", "a", "b", "--threshold", "-1"],
        &["convert", "a", "b", "--threshold"],
        &["convert", "a", "b", "--max-shard-size", "5XB"],
        &["convert", "a", "b", "--bogus"],
        &["inspect"],
        &["cuda-info", "extra"],
        &["help", "nothing"],
    ] {
        let out = llmint8(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with("llmint8: ") && err.contains("\nUsage: llmint8 ") && err.contains("--help` for more"),
            "{args:?}: {err}"
        );
        assert!(err.lines().count() <= 4, "{args:?}: the error and the synopsis, not the whole help: {err}");
        // The hint names a command that runs: the program, then the subcommand when there is one.
        let hint = match args.first() {
            Some(&command) if ["convert", "inspect"].contains(&command) => {
                format!("Run `llmint8 {command} --help`")
            }
            _ => "Run `llmint8 --help`".to_string(),
        };
        assert!(err.contains(&hint), "{args:?}: {err}");
    }
}

#[test]
fn failures_exit_1_naming_what_failed() {
    let dir = scratch("failures");
    let missing = dir.join("no-such-model");
    let out = llmint8(&["convert", s(&missing), s(&dir.join("out"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("LLMINT8_ERR_NOT_FOUND") && err.contains("no-such-model"), "{err}");
    assert!(!dir.join("out").exists());

    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"\x10\0\0\0\0\0\0\0{\"a\": oops}    ").unwrap();
    let out = llmint8(&["inspect", s(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("LLMINT8_ERR_FORMAT") && err.contains("bad.safetensors"), "{err}");

    // Another kind of file is named as such (not as a huge header length).
    let text_file = dir.join("notes.txt");
    std::fs::write(&text_file, "these are not tensors, just some words\n").unwrap();
    let err = text(&llmint8(&["inspect", s(&text_file)]).stderr);
    assert!(err.contains("LLMINT8_ERR_FORMAT") && err.contains("not a safetensors file"), "{err}");

    // No GPU where the tests run: cuda-info says what it looked for.
    let out = Command::new(env!("CARGO_BIN_EXE_llmint8"))
        .arg("cuda-info")
        .env("LLMINT8_LIBCUDA", "/nonexistent/libcuda.so.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("LLMINT8_ERR_NO_DEVICE") && err.contains("/nonexistent/libcuda.so.1"), "{err}");
}

#[test]
fn convert_prints_a_table_and_inspect_lists_the_result() {
    let dir = scratch("convert");
    let out_dir = dir.join("int8");
    let out = llmint8(&["convert", s(&data_dir().join("tiny-llama-fp16")), s(&out_dir)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("14 layers quantized"), "{report}");
    assert!(report.contains("model.layers.1.mlp.down_proj") && report.contains("256x688"), "{report}");
    assert!(report.contains("peak resident memory"), "{report}");
    assert!(text(&out.stderr).is_empty(), "no progress bar when stderr is not a terminal");
    assert_eq!(
        std::fs::read(out_dir.join("model.safetensors")).unwrap(),
        std::fs::read(data_dir().join("tiny-llama-int8/model.safetensors")).unwrap()
    );

    let out = llmint8(&["inspect", s(&out_dir)]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    assert!(listing.contains("model.layers.0.mlp.down_proj.SCB"), "{listing}");
    assert!(listing.contains("14 8-bit linear weights"), "{listing}");
    let out = llmint8(&["inspect", s(&data_dir().join("tiny-llama-fp16/model.safetensors"))]);
    assert!(text(&out.stdout).contains("14 16/32-bit linear weights llmint8 would quantize"));

    // A second conversion into the now non-empty directory is refused.
    let out = llmint8(&["convert", "-q", s(&data_dir().join("tiny-llama-fp16")), s(&out_dir)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not empty"));
}

/// Peak memory of a conversion is a small multiple of the largest tensor, not
/// of the model: 8 float16 layers of 16 MB (128 MB) convert in well under 64 MB.
#[test]
fn conversion_streams_one_tensor_at_a_time() {
    let dir = scratch("streaming");
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    let (n, k, layers) = (2048usize, 4096usize, 8);
    let specs: Vec<TensorSpec> = (0..layers)
        .map(|i| TensorSpec { name: format!("layers.{i}.proj.weight"), dtype: TensorDtype::F16, shape: vec![n, k] })
        .collect();
    let mut writer = SafetensorsWriter::create(model.join("model.safetensors"), specs, &[]).unwrap();
    let mut rng = Rng::new(3);
    for i in 0..layers {
        let bytes: Vec<u8> =
            rng.normals(n * k, 0.05).into_iter().flat_map(|v| llmint8::f16::from_f32(v).to_le_bytes()).collect();
        writer.write(&format!("layers.{i}.proj.weight"), &bytes).unwrap();
    }
    writer.finish().unwrap();
    let out = llmint8(&["convert", s(&model), s(&dir.join("int8"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let peak_line = report.lines().find(|l| l.starts_with("peak resident memory: ")).expect("peak line");
    let mb: f64 = peak_line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(peak_line.ends_with(" MB"), "{peak_line}");
    let tensor_mb = (2 * n * k) as f64 / 1e6;
    eprintln!("{peak_line} for {layers} tensors of {tensor_mb} MB");
    assert!(mb < 4.0 * tensor_mb, "{peak_line}: more than 4 tensors' worth");
    let ckpt = Checkpoint::open(dir.join("int8")).unwrap();
    assert_eq!(ckpt.tensors().len(), 3 * layers);
}

/// On a terminal, `convert` draws a progress bar on stderr (run under `script`,
/// which gives it a pseudo-terminal).
#[test]
fn convert_shows_progress_on_a_terminal() {
    let dir = scratch("progress");
    let cmd = format!(
        "{} convert {} {}",
        env!("CARGO_BIN_EXE_llmint8"),
        s(&data_dir().join("tiny-llama-fp16")),
        s(&dir.join("out"))
    );
    let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().expect("run script (util-linux)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert!(screen.contains("] 100% 21/21 tensors"), "no finished progress bar in:\n{screen}");
    assert!(screen.contains('\r'), "the bar redraws in place");
    assert!(screen.contains("14 layers quantized"), "{screen}");
}

/// Mistakes that used to convert anyway: a --skip that names no module (a
/// typo would have quantized everything and been written into the config),
/// and a model with nothing to quantize (an 8-bit one). Each is refused with
/// a message and leaves nothing behind.
#[test]
fn convert_refuses_a_skip_that_matches_nothing_and_a_model_already_8_bit() {
    let dir = scratch("mistakes");
    let cases = [
        (vec!["--skip", "self_atn"], "tiny-llama-fp16", "--skip \"self_atn\" matches no module"),
        (vec!["--skip", "mlp", "--skip", "layers.9"], "tiny-llama-fp16", "--skip \"layers.9\" matches no module"),
        (vec![], "tiny-llama-int8", "already an 8-bit checkpoint (14 int8 linear weights)"),
        (vec!["--skip", "model"], "tiny-llama-fp16", "no 16/32-bit linear weight to quantize"),
    ];
    for (i, (options, model, words)) in cases.into_iter().enumerate() {
        let out_dir = dir.join(format!("out{i}"));
        let (input, output) = (data_dir().join(model), out_dir.clone());
        let mut args = vec!["convert", "-q", s(&input), s(&output)];
        args.extend(options);
        let out = llmint8(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("LLMINT8_ERR_INVALID_ARGUMENT") && err.contains(words), "{args:?}: {err}");
        assert!(!out_dir.exists(), "{args:?} left {}", out_dir.display());
    }
    // A --skip that matches converts, and says what the error columns measure.
    let out = llmint8(&["convert", s(&data_dir().join("tiny-llama-fp16")), s(&dir.join("ok")), "--skip", "mlp"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("8 layers quantized") && report.contains("rel error = ||w - dequantized w|| / ||w||"),
        "{report}"
    );
}
