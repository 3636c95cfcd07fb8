//! `llmint8`: convert transformers checkpoints to bitsandbytes' 8-bit form, and
//! look inside checkpoints.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use llmint8::convert::{self, ConvertOptions, ConvertReport, Progress};
use llmint8::io::{Checkpoint, TensorKind};
use llmint8::InputRounding;

const USAGE: &str = "\
llmint8 — LLM.int8() checkpoints

Usage:
  llmint8 convert IN_DIR OUT_DIR [options]   quantize a transformers model to 8-bit
  llmint8 inspect PATH                       list the tensors of a checkpoint
  llmint8 cuda-info                          what the CUDA backend finds here
  llmint8 help [COMMAND]                     this text, or a command's
  llmint8 --version

Run `llmint8 COMMAND --help` for a command's options.";

const CONVERT_USAGE: &str = "\
llmint8 convert IN_DIR OUT_DIR [options]

Converts a transformers model directory (model.safetensors, or shards listed in
model.safetensors.index.json; float16, bfloat16 or float32) into an 8-bit model
directory that transformers + bitsandbytes load with no extra arguments: each
2-D weight of a linear layer becomes PREFIX.weight (int8), PREFIX.SCB (float32
row scales) and PREFIX.weight_format (uint8 0). Embeddings, lm_head, norms,
biases and skipped modules are kept as they are; other files (tokenizer,
generation config, ...) are copied; config.json gets the quantization_config
transformers writes. OUT_DIR must not exist or be empty; on failure nothing is
left there. A model with no 16/32-bit linear weight (an 8-bit one) is refused.

Options:
  --threshold T         llm_int8_threshold written to config.json (default 6.0;
                        0 turns the outlier decomposition off)
  --skip PATTERN        keep module PATTERN and the modules inside it unquantized;
                        matches whole dotted components (`mlp`, `layers.0.self_attn`,
                        `model.layers.3.mlp.down_proj`); repeat for more; a
                        PATTERN that matches no module is refused
  --max-shard-size S    largest output shard, e.g. 5GB (default), 500MB, 2GiB
  --keep-columns FILE   also write, beside each listed layer, the weight columns
                        FILE names in the source dtype (PREFIX.llmint8_kept_columns,
                        PREFIX.llmint8_kept_values), which llmint8 multiplies
                        the outlier columns by; FILE is JSON {\"MODULE\": [COLUMN, ...]},
                        as examples/cpp/llama --calibration-out writes it.
                        transformers + bitsandbytes load the result as before
  --smooth FILE         smooth each listed layer (SmoothQuant): write the int8
                        values of W·diag(s) with PREFIX.llmint8_smooth (s), which
                        llmint8 divides the activations by; FILE is JSON
                        {\"MODULE\": [FACTOR, ...]} (in_features factors, each > 0),
                        as examples/cpp/llama --calibrate writes it. Such layers
                        carry weight_format 83 and the config a marker, which
                        bitsandbytes and transformers refuse: only llmint8
                        loads the result correctly
  --exact               quantize bfloat16/float32 weights from their stored
                        values; by default they are rounded to float16 first,
                        as bitsandbytes does, so the output is bit for bit the
                        one load_in_8bit + save_pretrained writes (float16
                        weights are the same either way)
  -q, --quiet           no progress bar and no table
  -h, --help            this text";

const INSPECT_USAGE: &str = "\
llmint8 inspect PATH

Lists the tensors of a checkpoint: a .safetensors file, a shard index
(model.safetensors.index.json) or a model directory. For each tensor: name,
dtype, shape, bytes and role (linear = a 16/32-bit linear weight llmint8
quantizes, int8 = a bitsandbytes 8-bit weight with its SCB), then totals.

Options:
  -h, --help            this text";

/// A failure: message and exit code (2 for usage errors, 1 otherwise).
struct Failure(String, u8);

/// A usage error: the message, the command's synopsis and where its help is
/// (not the whole help text).
fn usage(msg: impl Into<String>, help: &str) -> Failure {
    let synopsis = if help == USAGE { "llmint8 COMMAND [ARGS]" } else { help.lines().next().unwrap_or("llmint8") };
    // "llmint8 convert IN_DIR …" → "llmint8 convert"
    let command: Vec<&str> = synopsis
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .collect();
    Failure(format!("{}\nUsage: {synopsis}\nRun `{} --help` for more.", msg.into(), command.join(" ")), 2)
}

impl From<llmint8::Error> for Failure {
    fn from(e: llmint8::Error) -> Self {
        Failure(e.to_string(), 1)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("llmint8: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some(command) = args.first() else { return Err(usage("no command given", USAGE)) };
    let rest = &args[1..];
    match command.as_str() {
        "convert" => run_convert(rest),
        "inspect" => run_inspect(rest),
        "cuda-info" => {
            if let Some(extra) = rest.first() {
                return Err(usage(format!("cuda-info takes no arguments, got {extra:?}"), USAGE));
            }
            // The libraries found (and their versions), the driver, and each
            // device with its kernels compiled; or why there is no usable GPU.
            print!("{}", llmint8::cuda_report()?);
            Ok(())
        }
        "help" | "-h" | "--help" => {
            let text = match rest.first().map(String::as_str) {
                Some("convert") => CONVERT_USAGE,
                Some("inspect") => INSPECT_USAGE,
                None => USAGE,
                Some(other) => return Err(usage(format!("unknown command {other:?}"), USAGE)),
            };
            println!("{text}");
            Ok(())
        }
        "-V" | "--version" => {
            println!("llmint8 {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        other => Err(usage(format!("unknown command {other:?}"), USAGE)),
    }
}

/// Parses "5GB", "500MB", "2GiB", "123" (bytes) as transformers' `max_shard_size` does.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        "TIB" => 1024.0f64.powi(4),
        _ => return None,
    };
    let bytes = number * scale;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn run_convert(args: &[String]) -> Result<(), Failure> {
    let mut options = ConvertOptions::default();
    let mut paths = Vec::new();
    let mut quiet = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value =
            |name: &str| it.next().cloned().ok_or_else(|| usage(format!("{name} needs a value"), CONVERT_USAGE));
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{CONVERT_USAGE}");
                return Ok(());
            }
            "--threshold" => {
                let v = value("--threshold")?;
                options.threshold = v
                    .parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite() && *t >= 0.0)
                    .ok_or_else(|| usage(format!("--threshold {v:?}: expected a number >= 0"), CONVERT_USAGE))?;
            }
            "--skip" => options.skip.push(value("--skip")?),
            "--max-shard-size" => {
                let v = value("--max-shard-size")?;
                options.max_shard_bytes = parse_size(&v)
                    .ok_or_else(|| usage(format!("--max-shard-size {v:?}: expected e.g. 5GB, 500MB"), CONVERT_USAGE))?;
            }
            "--exact" => options.rounding = InputRounding::Exact,
            "--keep-columns" => options.keep_columns = convert::read_keep_columns(value("--keep-columns")?)?,
            "--smooth" => options.smooth = convert::read_smoothing(value("--smooth")?)?,
            "-q" | "--quiet" => quiet = true,
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(usage(format!("unknown option {s:?}"), CONVERT_USAGE));
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let [input, output] = paths.as_slice() else {
        return Err(usage(format!("convert takes IN_DIR and OUT_DIR, got {} paths", paths.len()), CONVERT_USAGE));
    };
    let show_bar = !quiet && std::io::stderr().is_terminal();
    let mut bar = |p: Progress<'_>| {
        if show_bar {
            draw_bar(&p);
        }
    };
    let report = convert::convert(input, output, &options, &mut bar)?;
    if show_bar {
        eprintln!();
    }
    if !options.smooth.is_empty() {
        // Even with -q: the output is not what transformers + bitsandbytes can load.
        eprintln!(
            "llmint8: warning: {} smoothed layer(s) written with weight_format 83 and PREFIX.llmint8_smooth, \
             and quantization_config.bnb_4bit_compute_dtype {:?}: load this model with llmint8; transformers \
             and bitsandbytes refuse it (their results would be wrong)",
            options.smooth.len(),
            convert::SMOOTHED_CONFIG_MARKER
        );
    }
    if !quiet {
        print_report(&report, output);
    }
    Ok(())
}

fn draw_bar(p: &Progress<'_>) {
    const WIDTH: usize = 30;
    let frac = if p.total_bytes > 0 { p.done_bytes as f64 / p.total_bytes as f64 } else { 1.0 };
    let filled = (frac * WIDTH as f64).round() as usize;
    let mut name = p.tensor.to_string();
    if name.len() > 40 {
        name = format!("…{}", &name[name.len() - 39..]);
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{}{}] {:>3.0}% {}/{} tensors {:>9}  {:<41}",
        "#".repeat(filled.min(WIDTH)),
        " ".repeat(WIDTH - filled.min(WIDTH)),
        frac * 100.0,
        p.done_tensors,
        p.total_tensors,
        human_bytes(p.done_bytes),
        name
    );
    let _ = err.flush();
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

/// Peak resident memory of this process (`VmHWM`), when the system reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn print_report(r: &ConvertReport, output: &std::path::Path) {
    let name_w = r.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).max(5);
    println!(
        "{:<name_w$}  {:>5}  {:>13}  {:>11}  {:>11}  {:>10}  {:>10}",
        "layer", "dtype", "shape", "bytes", "8-bit bytes", "max error", "rel error"
    );
    for l in &r.layers {
        println!(
            "{:<name_w$}  {:>5}  {:>13}  {:>11}  {:>11}  {:>10.3e}  {:>10.3e}",
            l.name,
            l.dtype.name(),
            format!("{}x{}", l.out_features, l.in_features),
            l.bytes_before,
            l.bytes_after,
            l.max_error,
            l.relative_error
        );
    }
    let (before, after): (usize, usize) =
        r.layers.iter().fold((0, 0), |(b, a), l| (b + l.bytes_before, a + l.bytes_after));
    let worst = r.layers.iter().map(|l| l.relative_error).fold(0.0, f64::max);
    println!(
        "(weight quantization error: max error = max |w - dequantized w|, rel error = ||w - dequantized w|| / ||w||)"
    );
    println!(
        "\n{} layers quantized: {} -> {} ({:.1}%), worst relative error {worst:.3e}",
        r.layers.len(),
        human_bytes(before as u64),
        human_bytes(after as u64),
        if before > 0 { 100.0 * after as f64 / before as f64 } else { 0.0 }
    );
    println!("{} tensors copied unchanged", r.copied_tensors);
    println!(
        "model: {} -> {} ({:.1}%) in {} file(s) under {}",
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after),
        if r.bytes_before > 0 { 100.0 * r.bytes_after as f64 / r.bytes_before as f64 } else { 0.0 },
        r.shards.len(),
        output.display()
    );
    if !r.copied_files.is_empty() {
        println!("copied: {}", r.copied_files.join(", "));
    }
    if !r.skipped_files.is_empty() {
        println!("not copied (weights in another format): {}", r.skipped_files.join(", "));
    }
    if let Some(peak) = peak_rss_bytes() {
        println!("peak resident memory: {}", human_bytes(peak));
    }
}

fn run_inspect(args: &[String]) -> Result<(), Failure> {
    let mut paths = Vec::new();
    for arg in args {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{INSPECT_USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(usage(format!("unknown option {s:?}"), INSPECT_USAGE))
            }
            _ => paths.push(arg),
        }
    }
    let [path] = paths.as_slice() else {
        return Err(usage(format!("inspect takes one PATH, got {}", paths.len()), INSPECT_USAGE));
    };
    let ckpt = Checkpoint::open(path)?;
    let name_w = ckpt.tensors().iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<name_w$}  {:>11}  {:>16}  {:>12}  role", "name", "dtype", "shape", "bytes");
    let (mut total, mut int8, mut linear, mut int8_bytes) = (0u64, 0, 0, 0u64);
    for t in ckpt.tensors() {
        let role = match t.kind {
            TensorKind::Other => "",
            TensorKind::LinearWeight => "linear",
            TensorKind::Int8Weight => "int8",
            TensorKind::Int8Scales => "int8 scales",
            TensorKind::WeightFormat => "int8 format",
            TensorKind::Bias => "bias",
            TensorKind::KeptColumns => "kept columns",
            TensorKind::KeptValues => "kept column values",
            TensorKind::Smoothing => "smoothing",
        };
        match t.kind {
            TensorKind::LinearWeight => linear += 1,
            TensorKind::Int8Weight => int8 += 1,
            _ => {}
        }
        if matches!(t.kind, TensorKind::Int8Weight | TensorKind::Int8Scales | TensorKind::WeightFormat) {
            int8_bytes += t.num_bytes() as u64;
        }
        total += t.num_bytes() as u64;
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            out,
            "{:<name_w$}  {:>11}  {:>16}  {:>12}  {role}",
            t.name,
            t.dtype.name(),
            format!("[{}]", shape.join(", ")),
            t.num_bytes()
        );
    }
    let files: Vec<String> = ckpt.files().map(|p| p.display().to_string()).collect();
    let _ = writeln!(
        out,
        "\n{} tensors, {} in {} file(s): {}",
        ckpt.tensors().len(),
        human_bytes(total),
        files.len(),
        files.join(", ")
    );
    let _ = writeln!(
        out,
        "{int8} 8-bit linear weights ({} with their scales), {linear} 16/32-bit linear weights llmint8 would quantize",
        human_bytes(int8_bytes)
    );
    Ok(())
}
