//! Checkpoints: reading what transformers + bitsandbytes write, writing what
//! they read, the converter, and every malformed file we can think of.

mod common;

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use common::{data_dir, rel_err, Owned, Tensors};
use llmint8::convert::{convert, matches_module, ConvertOptions};
use llmint8::ffi::*;
use llmint8::io::{Checkpoint, SafetensorsWriter, TensorDtype, TensorKind, TensorSpec};
use llmint8::InputRounding;
use llmint8::{Context, DType, Status};

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llmint8-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bnb_models() -> PathBuf {
    data_dir().join("bnb-models")
}

/// (16/32-bit source directory, bitsandbytes' 8-bit directory) pairs.
fn model_pairs() -> Vec<(PathBuf, PathBuf)> {
    let mut pairs = vec![(data_dir().join("tiny-llama-fp16"), data_dir().join("tiny-llama-int8"))];
    for name in ["opt-f32", "gpt-neox-bf16", "gpt2-f16", "llama-sharded-f16"] {
        pairs.push((bnb_models().join(format!("{name}-src")), bnb_models().join(format!("{name}-int8"))));
    }
    pairs
}

fn tensor_bytes(c: &Checkpoint, name: &str) -> Vec<u8> {
    c.bytes(c.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"))).to_vec()
}

/// Asserts two checkpoints hold the same tensors: names, dtypes, shapes, bytes.
fn assert_same_tensors(ours: &Checkpoint, theirs: &Checkpoint) {
    let names = |c: &Checkpoint| c.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(ours), names(theirs), "{} vs {}", ours.path().display(), theirs.path().display());
    for (a, b) in ours.tensors().iter().zip(theirs.tensors()) {
        assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{}", a.name);
        assert!(ours.bytes(a) == theirs.bytes(b), "{}: bytes differ", a.name);
    }
}

#[test]
fn converting_tiny_llama_writes_bitsandbytes_files_byte_for_byte() {
    let out = scratch("tiny-llama").join("int8");
    let report = convert(&data_dir().join("tiny-llama-fp16"), &out, &ConvertOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(report.layers.len(), 14);
    assert_eq!(report.copied_tensors, 7);
    let golden = data_dir().join("tiny-llama-int8");
    for file in ["model.safetensors", "config.json"] {
        let (a, b) = (std::fs::read(out.join(file)).unwrap(), std::fs::read(golden.join(file)).unwrap());
        assert!(a == b, "{file} differs from the one transformers + bitsandbytes wrote");
    }
    // And through an independent reader, tensor by tensor.
    let (ours, theirs) =
        (Tensors::open(out.join("model.safetensors")), Tensors::open(golden.join("model.safetensors")));
    let layer = "model.layers.1.mlp.down_proj";
    assert_eq!(ours.i8s(&format!("{layer}.weight")), theirs.i8s(&format!("{layer}.weight")));
    assert_eq!(ours.f32s(&format!("{layer}.SCB")), theirs.f32s(&format!("{layer}.SCB")));
    for l in &report.layers {
        assert!(l.relative_error > 0.0 && l.relative_error < 0.02, "{}: {}", l.name, l.relative_error);
        assert!(l.max_error > 0.0, "{}", l.name);
        assert_eq!(l.bytes_before, 2 * l.out_features * l.in_features);
        assert_eq!(l.bytes_after, l.out_features * l.in_features + 4 * l.out_features + 1);
    }
}

#[test]
fn converting_each_model_gives_the_checkpoint_bitsandbytes_writes() {
    for (src, int8) in model_pairs() {
        let out = scratch("each-model").join("out");
        let report = convert(&src, &out, &ConvertOptions::default(), &mut |_| {}).unwrap();
        let (ours, theirs) = (Checkpoint::open(&out).unwrap(), Checkpoint::open(&int8).unwrap());
        assert_same_tensors(&ours, &theirs);
        // The config differs only by the quantization_config, which is bitsandbytes'.
        let json = |p: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
        assert_eq!(json(&out.join("config.json")), json(&int8.join("config.json")), "{}", src.display());
        if src.join("generation_config.json").exists() {
            assert_eq!(report.copied_files, vec!["generation_config.json".to_string()]);
            assert_eq!(
                std::fs::read(out.join("generation_config.json")).unwrap(),
                std::fs::read(src.join("generation_config.json")).unwrap()
            );
        }
    }
}

#[test]
fn exact_conversion_of_float32_differs_from_bitsandbytes_by_at_most_one_step() {
    let (src, int8) = (bnb_models().join("opt-f32-src"), bnb_models().join("opt-f32-int8"));
    let out = scratch("exact").join("out");
    let options = ConvertOptions { rounding: InputRounding::Exact, ..ConvertOptions::default() };
    convert(&src, &out, &options, &mut |_| {}).unwrap();
    let (ours, theirs) = (Checkpoint::open(&out).unwrap(), Checkpoint::open(&int8).unwrap());
    let mut differing = 0;
    for t in theirs.tensors().iter().filter(|t| t.kind == TensorKind::Int8Weight) {
        let (a, b) = (tensor_bytes(&ours, &t.name), tensor_bytes(&theirs, &t.name));
        for (&x, &y) in a.iter().zip(&b) {
            assert!(((x as i8) as i32 - (y as i8) as i32).abs() <= 1, "{}", t.name);
            differing += (x != y) as usize;
        }
    }
    assert!(differing > 0, "float32 quantized exactly should differ somewhere from float16-rounded");
}

/// Loads `prefix` from `path` through `llmint8_weight_load_safetensors` and runs
/// `llmint8_matmul` on `x`, both through the C ABI; returns y as f32.
fn c_load_and_matmul(path: &Path, prefix: &str, rounding: InputRounding, x: &Owned) -> Vec<f32> {
    let ctx = Ctx::new();
    let code = if rounding == InputRounding::Float16 { LLMINT8_INPUT_ROUND_F16 } else { LLMINT8_INPUT_EXACT };
    let mut w = std::ptr::null_mut();
    let (mut out_f, mut in_f) = (0usize, 0usize);
    let dtype = |o: &Owned| match o.dtype() {
        DType::F32 => LLMINT8_F32,
        DType::F16 => LLMINT8_F16,
        DType::BF16 => LLMINT8_BF16,
    };
    // SAFETY (this block): every pointer is valid for the call it is passed to.
    unsafe {
        assert_eq!(llmint8_context_set_input_rounding(ctx.0, code), LLMINT8_OK);
        let status = llmint8_weight_load_safetensors(ctx.0, c_path(path).as_ptr(), c(prefix).as_ptr(), &mut w);
        assert_eq!(status, LLMINT8_OK, "{}", last_error());
        assert_eq!(llmint8_weight_shape(w, &mut out_f, &mut in_f), LLMINT8_OK);
        let rows = x.len() / in_f;
        let mut y = Owned::zeros(x.dtype(), rows * out_f);
        let x_ptr = match x {
            Owned::F32(v) => v.as_ptr().cast(),
            Owned::F16(v) => v.as_ptr().cast(),
            Owned::BF16(v) => v.as_ptr().cast(),
        };
        let y_ptr = match &mut y {
            Owned::F32(v) => v.as_mut_ptr().cast(),
            Owned::F16(v) => v.as_mut_ptr().cast(),
            Owned::BF16(v) => v.as_mut_ptr().cast(),
        };
        let status = llmint8_matmul(ctx.0, w, x_ptr, dtype(x), rows, 6.0, y_ptr, dtype(&y), std::ptr::null_mut());
        assert_eq!(status, LLMINT8_OK, "{}", last_error());
        llmint8_weight_destroy(w);
        y.to_f32()
    }
}

/// Checkpoints transformers + bitsandbytes wrote (tiny-llama from ../shared and
/// three more of ours) load through `llmint8_weight_load_safetensors` and
/// reproduce bitsandbytes' layer outputs within the golden tolerances.
#[test]
fn bitsandbytes_checkpoints_reproduce_its_layer_outputs() {
    let mut dirs = vec![data_dir().join("tiny-llama-int8")];
    dirs.extend(
        ["opt-f32", "gpt-neox-bf16", "gpt2-f16", "llama-sharded-f16"].map(|n| bnb_models().join(format!("{n}-int8"))),
    );
    for dir in dirs {
        let io = Tensors::open(dir.join("reference_io.safetensors"));
        let io_ckpt = Checkpoint::open(dir.join("reference_io.safetensors")).unwrap();
        let layers: Vec<String> =
            io_ckpt.tensors().iter().filter_map(|t| t.name.strip_suffix(".x").map(str::to_string)).collect();
        assert_eq!(layers.len(), 2, "{}", dir.display());
        for rounding in [InputRounding::Exact, InputRounding::Float16] {
            for layer in &layers {
                let x = io.float(&format!("{layer}.x"));
                let want = io.float(&format!("{layer}.y"));
                let y = c_load_and_matmul(&dir, layer, rounding, &x);
                let err = rel_err(&y, &want.to_f32());
                // The golden tolerances (bfloat16 outputs round to 2⁻⁸); reading
                // float32 as bitsandbytes does (rounded to float16) is much closer.
                let tol = match (x.dtype(), rounding) {
                    (DType::F16, _) => 1e-3,
                    (DType::F32, InputRounding::Float16) => 1e-4,
                    _ => 5e-3,
                };
                eprintln!("{} {layer} {rounding:?}: relative error {err:.2e}", dir.display());
                assert!(err <= tol, "{} {layer} {rounding:?}: relative error {err:.2e}", dir.display());
            }
        }
    }
}

#[test]
fn loading_a_16_bit_checkpoint_quantizes_as_bitsandbytes_does() {
    let ctx = Context::cpu();
    ctx.set_input_rounding(InputRounding::Float16);
    for (src, int8) in model_pairs() {
        let (s, q) = (Checkpoint::open(&src).unwrap(), Checkpoint::open(&int8).unwrap());
        // GPT-2's Conv1D weights are stored [in, out]: the converter transposes
        // them, the loader takes every 2-D weight as [out, in] (documented).
        let model_type = std::fs::read_to_string(src.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|c| c["model_type"].as_str().map(str::to_string));
        let linear: Vec<_> = s
            .tensors()
            .iter()
            .filter(|t| t.kind == TensorKind::LinearWeight)
            .filter(|t| !llmint8::convert::stored_transposed(model_type.as_deref(), t.prefix()))
            .collect();
        assert!(!linear.is_empty() || model_type.as_deref() == Some("gpt2"), "{}", src.display());
        for t in linear {
            let prefix = t.prefix();
            let (a, b) = (ctx.load_weight(&s, prefix).unwrap(), ctx.load_weight(&q, prefix).unwrap());
            assert_eq!(a.cb().unwrap(), b.cb().unwrap(), "{prefix}");
            assert_eq!(a.scb(), b.scb(), "{prefix}");
            assert_eq!(a.bias(), b.bias(), "{prefix}");
            assert_eq!(a.bias().is_some(), s.tensor(&format!("{prefix}.bias")).is_some(), "{prefix}");
        }
    }
}

#[test]
fn tensor_kinds_tell_an_engine_what_to_load() {
    let q = Checkpoint::open(bnb_models().join("opt-f32-int8")).unwrap();
    let kind = |c: &Checkpoint, n: &str| c.tensor(n).unwrap_or_else(|| panic!("{n}")).kind;
    let p = "model.decoder.layers.0.fc1";
    assert_eq!(kind(&q, &format!("{p}.weight")), TensorKind::Int8Weight);
    assert_eq!(kind(&q, &format!("{p}.SCB")), TensorKind::Int8Scales);
    assert_eq!(kind(&q, &format!("{p}.weight_format")), TensorKind::WeightFormat);
    assert_eq!(kind(&q, &format!("{p}.bias")), TensorKind::Bias);
    assert_eq!(kind(&q, "model.decoder.embed_tokens.weight"), TensorKind::Other);
    assert_eq!(kind(&q, "model.decoder.layers.0.final_layer_norm.weight"), TensorKind::Other);
    let s = Checkpoint::open(bnb_models().join("gpt-neox-bf16-src")).unwrap();
    assert_eq!(kind(&s, "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"), TensorKind::LinearWeight);
    assert_eq!(kind(&s, "gpt_neox.layers.0.mlp.dense_h_to_4h.bias"), TensorKind::Bias);
    assert_eq!(kind(&s, "embed_out.weight"), TensorKind::Other);
    assert_eq!(kind(&s, "gpt_neox.embed_in.weight"), TensorKind::Other);
}

#[test]
fn sharded_output_splits_under_the_limit_and_reads_back_the_same() {
    let dir = scratch("sharded");
    let src = data_dir().join("tiny-llama-fp16");
    let whole = dir.join("whole");
    convert(&src, &whole, &ConvertOptions::default(), &mut |_| {}).unwrap();
    let limit = 300_000u64;
    let sharded = dir.join("sharded");
    let options = ConvertOptions { max_shard_bytes: limit, ..ConvertOptions::default() };
    let report = convert(&src, &sharded, &options, &mut |_| {}).unwrap();
    assert!(report.shards.len() > 3, "{:?}", report.shards);
    assert!(!sharded.join("model.safetensors").exists());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sharded.join("model.safetensors.index.json")).unwrap()).unwrap();
    let ckpt = Checkpoint::open(&sharded).unwrap();
    assert_same_tensors(&ckpt, &Checkpoint::open(&whole).unwrap());
    let total: u64 = ckpt.tensors().iter().map(|t| t.num_bytes() as u64).sum();
    assert_eq!(index["metadata"]["total_size"], total);
    assert_eq!(index["weight_map"].as_object().unwrap().len(), ckpt.tensors().len());
    for shard in &report.shards {
        let c = Checkpoint::open(sharded.join(shard)).unwrap();
        let bytes: u64 = c.tensors().iter().map(|t| t.num_bytes() as u64).sum();
        assert!(bytes <= limit || c.tensors().len() == 1, "{shard}: {bytes} bytes");
    }
    // Read back as a sharded input, it is recognized as 8-bit already: nothing
    // to convert (sharded 16-bit inputs convert: `model_pairs`' llama-sharded-f16).
    let again = dir.join("again");
    let err = convert(&sharded, &again, &ConvertOptions::default(), &mut |_| {}).unwrap_err();
    assert!(err.message().contains("already an 8-bit checkpoint (14 int8 linear weights)"), "{err:?}");
    assert!(!again.exists());
}

#[test]
fn skipped_modules_stay_16_bit_and_the_config_says_so() {
    let out = scratch("skip").join("out");
    let options = ConvertOptions { skip: vec!["mlp".into(), "layers.1.self_attn.q_proj".into()], ..Default::default() };
    let report = convert(&data_dir().join("tiny-llama-fp16"), &out, &options, &mut |_| {}).unwrap();
    assert_eq!(report.layers.len(), 14 - 6 - 1);
    let c = Checkpoint::open(&out).unwrap();
    assert_eq!(c.tensor("model.layers.0.mlp.up_proj.weight").unwrap().dtype, TensorDtype::F16);
    assert_eq!(c.tensor("model.layers.1.self_attn.q_proj.weight").unwrap().dtype, TensorDtype::F16);
    assert_eq!(c.tensor("model.layers.0.self_attn.q_proj.weight").unwrap().dtype, TensorDtype::I8);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["quantization_config"]["llm_int8_skip_modules"],
        serde_json::json!(["mlp", "layers.1.self_attn.q_proj", "lm_head"])
    );
}

#[test]
fn module_patterns_match_whole_components() {
    assert!(matches_module("mlp", "model.layers.1.mlp.up_proj"));
    assert!(matches_module("layers.1.mlp", "model.layers.1.mlp.up_proj"));
    assert!(matches_module("model.layers.1.mlp.up_proj", "model.layers.1.mlp.up_proj"));
    assert!(!matches_module("layers.1", "model.layers.10.mlp.up_proj"));
    assert!(!matches_module("up", "model.layers.1.mlp.up_proj"));
    assert!(!matches_module("", "model.layers.1.mlp.up_proj"));
}

#[test]
fn a_failed_conversion_leaves_nothing_behind() {
    let dir = scratch("failed");
    // A float16 model whose second layer holds an Inf.
    let w = vec![0x3c00u16; 32]; // 1.0
    let mut bad = w.clone();
    bad[5] = 0x7c00; // +Inf
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    let specs = vec![
        TensorSpec { name: "a.weight".into(), dtype: TensorDtype::F16, shape: vec![4, 8] },
        TensorSpec { name: "b.weight".into(), dtype: TensorDtype::F16, shape: vec![4, 8] },
    ];
    let mut writer = SafetensorsWriter::create(model.join("model.safetensors"), specs, &[]).unwrap();
    let bytes = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    writer.write("a.weight", &bytes(&w)).unwrap();
    writer.write("b.weight", &bytes(&bad)).unwrap();
    writer.finish().unwrap();
    let out = dir.join("out");
    let err = convert(&model, &out, &ConvertOptions::default(), &mut |_| {}).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    assert!(err.message().contains("b.weight") && err.message().contains("model.safetensors"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("model")], "temporary files left behind");
    // A non-empty output directory is refused and left alone.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = convert(&data_dir().join("tiny-llama-fp16"), &out, &ConvertOptions::default(), &mut |_| {}).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    // An output inside the input directory is refused (copying the input would copy the output).
    let err = convert(&model, &model.join("int8"), &ConvertOptions::default(), &mut |_| {}).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    assert!(err.message().contains("inside the input directory"), "{err}");
    assert!(!model.join("int8").exists());
    // An already-quantized model of another kind is refused.
    let other = dir.join("gptq");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(model.join("model.safetensors"), other.join("model.safetensors")).unwrap();
    std::fs::write(other.join("config.json"), r#"{"quantization_config": {"quant_method": "gptq"}}"#).unwrap();
    let err = convert(&other, &dir.join("out2"), &ConvertOptions::default(), &mut |_| {}).unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");
}

#[test]
fn the_writer_lays_files_out_as_the_reference_library_does() {
    use safetensors::tensor::TensorView;
    let mut rng = common::Rng::new(7);
    let dtypes =
        [TensorDtype::F32, TensorDtype::F16, TensorDtype::BF16, TensorDtype::I8, TensorDtype::U8, TensorDtype::I64];
    let st_dtype = |d: TensorDtype| match d {
        TensorDtype::F32 => safetensors::Dtype::F32,
        TensorDtype::F16 => safetensors::Dtype::F16,
        TensorDtype::BF16 => safetensors::Dtype::BF16,
        TensorDtype::I8 => safetensors::Dtype::I8,
        TensorDtype::U8 => safetensors::Dtype::U8,
        _ => safetensors::Dtype::I64,
    };
    let dir = scratch("writer");
    for round in 0..20 {
        let count = 1 + rng.below(12);
        let mut specs = Vec::new();
        let mut data = Vec::new();
        for i in 0..count {
            let dtype = dtypes[rng.below(dtypes.len())];
            let shape: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(5)).collect();
            let bytes = shape.iter().product::<usize>() * dtype.bits() / 8;
            data.push((0..bytes).map(|_| rng.below(256) as u8).collect::<Vec<u8>>());
            specs.push(TensorSpec { name: format!("t{}.{}", rng.below(1000), i), dtype, shape });
        }
        let metadata = vec![("format".to_string(), "pt".to_string())];
        let path = dir.join(format!("{round}.safetensors"));
        let mut w = SafetensorsWriter::create(&path, specs.clone(), &metadata).unwrap();
        for (s, d) in specs.iter().zip(&data).rev() {
            w.write(&s.name, d).unwrap();
        }
        w.finish().unwrap();
        let views: Vec<(String, TensorView<'_>)> = specs
            .iter()
            .zip(&data)
            .map(|(s, d)| (s.name.clone(), TensorView::new(st_dtype(s.dtype), s.shape.clone(), d).unwrap()))
            .collect();
        let reference = safetensors::serialize(views, Some([("format".to_string(), "pt".to_string())].into())).unwrap();
        assert!(std::fs::read(&path).unwrap() == reference, "round {round}: bytes differ from safetensors::serialize");
    }
}

#[test]
fn a_saved_weight_loads_back_identically_and_in_the_reference_reader() {
    let ctx = Context::cpu();
    let mut rng = common::Rng::new(11);
    let (n, k) = (37, 53);
    let w = rng.normals(n * k, 0.5);
    let bias = rng.normals(n, 1.0);
    let weight = ctx.quantize_weight(llmint8::Data::F32(&w), n, k, Some(llmint8::Data::F32(&bias))).unwrap();
    let path = scratch("save").join("layer.safetensors");
    llmint8::save_weight(&weight, &path, "encoder.fc").unwrap();
    let t = Tensors::open(&path);
    assert_eq!(t.i8s("encoder.fc.weight"), weight.cb().unwrap());
    assert_eq!(t.f32s("encoder.fc.SCB"), weight.scb());
    assert_eq!(t.f32s("encoder.fc.bias"), bias);
    assert_eq!(t.shape("encoder.fc.weight_format"), Vec::<usize>::new());
    let back = ctx.load_weight(&Checkpoint::open(&path).unwrap(), "encoder.fc").unwrap();
    assert_eq!((back.cb().unwrap(), back.scb(), back.bias()), (weight.cb().unwrap(), weight.scb(), weight.bias()));
    // A path that cannot take the file (an existing directory) fails and leaves no temporary file.
    let dir = path.parent().unwrap();
    let occupied = dir.join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    let err = llmint8::save_weight(&weight, &occupied, "encoder.fc").unwrap_err();
    assert_eq!(err.status(), Status::Io, "{err}");
    let names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains(".partial-")), "temporary file left behind: {names:?}");
    // Saving again replaces the file whole.
    let w2 = ctx.quantize_weight(llmint8::Data::F32(&w[..k]), 1, k, None).unwrap();
    llmint8::save_weight(&w2, &path, "encoder.fc").unwrap();
    assert_eq!(Checkpoint::open(&path).unwrap().tensors().len(), 3);
}

/// A weight that keeps 16/32-bit columns goes out with them
/// (`llmint8_kept_columns`, `llmint8_kept_values`) and comes back keeping the
/// same columns and values, on the test backend (the emulated GPU too): same
/// int8 values, same matmul bits.
#[test]
fn a_weight_keeping_columns_saves_and_loads_back_with_them() {
    let ctx = common::test_context();
    let mut rng = common::Rng::new(12);
    let (n, k, rows) = (37, 53, 5);
    for dtype in [DType::F16, DType::BF16, DType::F32] {
        let w = Owned::from_f32(dtype, &rng.normals(n * k, 0.5));
        let bias = rng.normals(n, 1.0);
        let keep = [40u32, 2, 5];
        let weight = ctx.quantize_weight_keep(w.data(), n, k, Some(llmint8::Data::F32(&bias)), &keep).unwrap();
        let path = scratch(&format!("save-kept-{dtype:?}")).join("layer.safetensors");
        llmint8::save_weight(&weight, &path, "enc.fc").unwrap();
        let ckpt = Checkpoint::open(&path).unwrap();
        let kind = |name: &str| ckpt.tensor(name).unwrap_or_else(|| panic!("{name}")).kind;
        assert_eq!(kind("enc.fc.llmint8_kept_columns"), TensorKind::KeptColumns);
        assert_eq!(kind("enc.fc.llmint8_kept_values"), TensorKind::KeptValues);
        let columns: Vec<i32> = tensor_bytes(&ckpt, "enc.fc.llmint8_kept_columns")
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(columns, [2, 5, 40]);
        let values = ckpt.tensor("enc.fc.llmint8_kept_values").unwrap();
        assert_eq!((values.dtype, values.shape.clone()), (TensorDtype::from(dtype), vec![3, n]));
        // Row s holds the weight's column columns[s], in the source's bytes.
        let src = w.bytes();
        let size = dtype.size();
        let want: Vec<u8> = [2usize, 5, 40]
            .iter()
            .flat_map(|&c| (0..n).flat_map(move |j| (j * k + c) * size..(j * k + c + 1) * size))
            .map(|i| src[i])
            .collect();
        assert!(ckpt.bytes(values) == want, "{dtype:?}: kept values");
        let back = ctx.load_weight(&ckpt, "enc.fc").unwrap();
        assert_eq!(back.kept_columns(), [2, 5, 40]);
        assert_eq!(back.kept_dtype(), Some(dtype));
        assert_eq!(back.kept_values_bytes().unwrap(), want);
        assert_eq!((back.cb().unwrap(), back.scb(), back.bias()), (weight.cb().unwrap(), weight.scb(), weight.bias()));
        assert_eq!(back.memory(), weight.memory());
        let x = common::activations_with_outliers(&mut rng, rows, k, 3);
        let (mut y, mut y_back) = (vec![0f32; rows * n], vec![0f32; rows * n]);
        ctx.matmul(&weight, llmint8::Data::F32(&x), rows, 6.0, llmint8::DataMut::F32(&mut y)).unwrap();
        ctx.matmul(&back, llmint8::Data::F32(&x), rows, 6.0, llmint8::DataMut::F32(&mut y_back)).unwrap();
        assert_eq!(common::bits(&y), common::bits(&y_back), "{dtype:?}");
    }
}

/// `convert` with `keep_columns` writes the listed columns beside their 8-bit
/// layers — in the source dtype, from `[in, out]` Conv1D weights too — and
/// nothing else changes; the layers load keeping them. Lists that name no
/// quantized layer, or columns outside it, are refused with nothing written.
#[test]
fn converting_with_kept_columns_writes_them_beside_the_8_bit_layers() {
    let dir = scratch("convert-kept");
    let ctx = Context::cpu();
    ctx.set_input_rounding(InputRounding::Float16);
    for (model, layer, transposed) in
        [("opt-f32", "model.decoder.layers.0.fc2", false), ("gpt2-f16", "transformer.h.0.attn.c_attn", true)]
    {
        let src = bnb_models().join(format!("{model}-src"));
        let (plain, kept) = (dir.join(format!("{model}-plain")), dir.join(format!("{model}-kept")));
        convert(&src, &plain, &ConvertOptions::default(), &mut |_| {}).unwrap();
        let mut options = ConvertOptions::default();
        options.keep_columns.insert(layer.to_string(), vec![9, 1, 30]);
        let report = convert(&src, &kept, &options, &mut |_| {}).unwrap();
        let (p, q, s) =
            (Checkpoint::open(&plain).unwrap(), Checkpoint::open(&kept).unwrap(), Checkpoint::open(&src).unwrap());
        let extra = [format!("{layer}.llmint8_kept_columns"), format!("{layer}.llmint8_kept_values")];
        let names = |c: &Checkpoint| c.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let mut want_names = names(&p);
        want_names.extend(extra.iter().cloned());
        want_names.sort();
        assert_eq!(names(&q), want_names, "{model}");
        for t in p.tensors() {
            assert!(p.bytes(t) == tensor_bytes(&q, &t.name), "{model}: {} changed", t.name);
        }
        // The values: the source's own bytes, column by column.
        let w = s.tensor(&format!("{layer}.weight")).unwrap();
        let (out, inn) = if transposed { (w.shape[1], w.shape[0]) } else { (w.shape[0], w.shape[1]) };
        let size = w.dtype.bits() / 8;
        let at = |c: usize, j: usize| if transposed { c * out + j } else { j * inn + c };
        let want: Vec<u8> = [1usize, 9, 30]
            .iter()
            .flat_map(|&c| (0..out).flat_map(move |j| at(c, j) * size..(at(c, j) + 1) * size))
            .map(|i| s.bytes(w)[i])
            .collect();
        let values = q.tensor(&extra[1]).unwrap();
        assert_eq!((values.dtype, values.shape.clone()), (w.dtype, vec![3, out]), "{model}");
        assert!(q.bytes(values) == want, "{model}: kept values");
        let loaded = ctx.load_weight(&q, layer).unwrap();
        assert_eq!(loaded.kept_columns(), [1, 9, 30], "{model}");
        assert_eq!(loaded.kept_values_bytes().unwrap(), want, "{model}");
        let line = report.layers.iter().find(|l| l.name == layer).unwrap();
        assert_eq!(line.bytes_after, out * inn + 4 * out + 1 + 4 * 3 + want.len(), "{model}");
        // Every other layer keeps nothing.
        let other = q.tensors().iter().find(|t| t.kind == TensorKind::Int8Weight && t.prefix() != layer).unwrap();
        assert!(ctx.load_weight(&q, other.prefix()).unwrap().kept_columns().is_empty());
    }
    let src = bnb_models().join("opt-f32-src");
    for (module, columns, says) in [
        ("model.decoder.layers.0.fc9", vec![1], "fc9"),
        ("model.decoder.embed_tokens", vec![1], "embed_tokens"),
        ("model.decoder.layers.0.fc2", vec![128], "column 128"),
        ("model.decoder.layers.0.fc2", vec![3, 3], "column 3 twice"),
    ] {
        let out = dir.join("refused");
        let mut options = ConvertOptions::default();
        options.keep_columns.insert(module.to_string(), columns);
        let e = convert(&src, &out, &options, &mut |_| {}).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(!out.exists(), "{module}: a refused conversion left {}", out.display());
    }
    // The list's file format.
    let list = dir.join("keep.json");
    std::fs::write(&list, r#"{"a.b": [3, 1], "c": []}"#).unwrap();
    let read = llmint8::convert::read_keep_columns(&list).unwrap();
    assert_eq!(read.into_iter().collect::<Vec<_>>(), [("a.b".to_string(), vec![3, 1]), ("c".to_string(), vec![])]);
    for bad in [r#"[1]"#, r#"{"a": 3}"#, r#"{"a": [-1]}"#, r#"{"a": [1.5]}"#, r#"{"a": [4294967296]}"#, "{"] {
        std::fs::write(&list, bad).unwrap();
        let e = llmint8::convert::read_keep_columns(&list).unwrap_err();
        assert_eq!(e.status(), Status::Format, "{bad}: {e}");
        assert!(e.to_string().contains("keep.json"), "{e}");
    }
}

/// A smoothed weight saves as the int8 values of `W·diag(s)` with
/// `PREFIX.llmint8_smooth` and weight_format 83 (which bitsandbytes refuses),
/// and loads back the same — whole, and as row- and column-parallel shards.
/// A 16/32-bit layer with a vector beside it is smoothed when loaded. Files
/// whose marker and vector disagree are refused.
#[test]
fn a_smoothed_weight_saves_and_loads_back_with_its_vector() {
    let ctx = common::test_context();
    let mut rng = common::Rng::new(13);
    let (n, k, rows) = (29, 61, 4);
    let w = Owned::from_f32(DType::BF16, &rng.normals(n * k, 0.5));
    let s: Vec<f32> = (0..k).map(|c| 0.25 + (c % 7) as f32 * 0.5).collect();
    let keep = [3u32, 50];
    let options = llmint8::WeightOptions { keep: &keep, smoothing: Some(&s), ..Default::default() };
    let weight = ctx.quantize_weight_with(w.data(), n, k, None, &options).unwrap();
    let dir = scratch("save-smoothed");
    let path = dir.join("layer.safetensors");
    llmint8::save_weight(&weight, &path, "enc.fc").unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(ckpt.tensor("enc.fc.llmint8_smooth").unwrap().kind, TensorKind::Smoothing);
    assert_eq!(tensor_bytes(&ckpt, "enc.fc.weight_format"), [83]);
    assert_eq!(
        tensor_bytes(&ckpt, "enc.fc.llmint8_smooth"),
        s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
    );
    let x = common::activations_with_outliers(&mut rng, rows, k, 2);
    let product = |w: &llmint8::Weight, x: &[f32]| {
        let mut y = vec![0f32; rows * w.out_features()];
        ctx.matmul(w, llmint8::Data::F32(x), rows, 6.0, llmint8::DataMut::F32(&mut y)).unwrap();
        common::bits(&y)
    };
    let back = ctx.load_weight(&ckpt, "enc.fc").unwrap();
    assert_eq!(back.smoothing(), Some(&s[..]));
    assert_eq!((back.cb().unwrap(), back.scb()), (weight.cb().unwrap(), weight.scb()));
    assert_eq!(back.kept_values_bytes().unwrap(), weight.kept_values_bytes().unwrap());
    assert_eq!(product(&back, &x), product(&weight, &x));
    // Shards of the loaded file are the in-memory shards.
    let rows_shard = ctx.load_weight_rows(&ckpt, "enc.fc", 10..29).unwrap();
    assert_eq!(rows_shard.smoothing(), Some(&s[..]));
    let whole = product(&weight, &x);
    let part = product(&rows_shard, &x);
    for r in 0..rows {
        assert_eq!(part[r * 19..(r + 1) * 19], whole[r * n + 10..(r + 1) * n]);
    }
    let col_shard = ctx.load_weight_columns(&ckpt, "enc.fc", 20..61).unwrap();
    let options = llmint8::WeightOptions { keep: &keep, smoothing: Some(&s), columns: Some(20..61) };
    let in_memory = ctx.quantize_weight_with(w.data(), n, k, None, &options).unwrap();
    assert_eq!(col_shard.smoothing(), Some(&s[20..]));
    assert_eq!(col_shard.cb().unwrap(), in_memory.cb().unwrap());
    assert_eq!(col_shard.kept_columns(), [30]);
    let x_slice: Vec<f32> = x.chunks_exact(k).flat_map(|r| r[20..].to_vec()).collect();
    let mut stats = vec![0f32; rows];
    ctx.row_parallel_statistics(&in_memory, llmint8::Data::F32(&x_slice), rows, 6.0, &mut stats).unwrap();
    let partial = |w: &llmint8::Weight| {
        let mut y = vec![0f32; rows * n];
        ctx.matmul_row_parallel(w, llmint8::Data::F32(&x_slice), rows, 6.0, &stats, llmint8::DataMut::F32(&mut y))
            .unwrap();
        common::bits(&y)
    };
    assert_eq!(partial(&col_shard), partial(&in_memory));

    // A 16-bit layer with the vector beside it: smoothed when quantized.
    let path16 = dir.join("fp.safetensors");
    let specs = vec![
        TensorSpec { name: "enc.fc.weight".into(), dtype: TensorDtype::BF16, shape: vec![n, k] },
        TensorSpec { name: "enc.fc.llmint8_smooth".into(), dtype: TensorDtype::F32, shape: vec![k] },
    ];
    let mut writer = SafetensorsWriter::create(&path16, specs, &[]).unwrap();
    writer.write("enc.fc.weight", &w.bytes()).unwrap();
    writer.write("enc.fc.llmint8_smooth", &s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).unwrap();
    writer.finish().unwrap();
    let fp = Checkpoint::open(&path16).unwrap();
    let loaded = ctx.load_weight(&fp, "enc.fc").unwrap();
    assert_eq!(loaded.smoothing(), Some(&s[..]));
    assert_eq!((loaded.cb().unwrap(), loaded.scb()), (weight.cb().unwrap(), weight.scb()));

    // A vector of the wrong shape or dtype, or with a factor <= 0 or NaN.
    let write16 = |name: &str, spec: TensorSpec, bytes: Vec<u8>| {
        let p = dir.join(name);
        let w_spec = TensorSpec { name: "enc.fc.weight".into(), dtype: TensorDtype::BF16, shape: vec![n, k] };
        let mut writer = SafetensorsWriter::create(&p, vec![w_spec, spec.clone()], &[]).unwrap();
        writer.write("enc.fc.weight", &w.bytes()).unwrap();
        writer.write(&spec.name, &bytes).unwrap();
        writer.finish().unwrap();
        ctx.load_weight(&Checkpoint::open(&p).unwrap(), "enc.fc").unwrap_err()
    };
    let vector = |dtype, len| TensorSpec { name: "enc.fc.llmint8_smooth".into(), dtype, shape: vec![len] };
    let e = write16("short.safetensors", vector(TensorDtype::F32, k - 1), vec![0; 4 * (k - 1)]);
    assert_eq!(e.status(), Status::Format, "{e}");
    let e = write16("f16.safetensors", vector(TensorDtype::F16, k), vec![0; 2 * k]);
    assert_eq!(e.status(), Status::Format, "{e}");
    for (bad, says) in [(f32::NAN, "= NaN"), (-1.0, "= -1"), (0.0, "= 0")] {
        let mut v = s.clone();
        v[9] = bad;
        let e =
            write16("bad.safetensors", vector(TensorDtype::F32, k), v.iter().flat_map(|x| x.to_le_bytes()).collect());
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        assert!(
            e.to_string().contains(&format!("smoothing[9] {says}")) && e.to_string().contains("bad.safetensors"),
            "{e}"
        );
    }

    // The marker and the vector must agree; the vector must be usable.
    let bytes = std::fs::read(&path).unwrap();
    // Same-length edits of the header, bytes otherwise untouched.
    let edit = |from: &str, to: &str, name: &str| {
        let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
        let mut edited = bytes.clone();
        edited[at..at + to.len()].copy_from_slice(to.as_bytes());
        let p = dir.join(name);
        std::fs::write(&p, edited).unwrap();
        p
    };
    // (The header names the vector "enc.fc.llmint8_smooth"; renaming it leaves a
    // smoothed weight without its vector.)
    let renamed = edit("enc.fc.llmint8_smooth", "enc.fc.llmint8_smoots", "no-vector.safetensors");
    let e = ctx.load_weight(&Checkpoint::open(&renamed).unwrap(), "enc.fc").unwrap_err();
    assert!(e.to_string().contains("marks a smoothed weight"), "{e}");
    // weight_format 0 beside the vector: its one byte, found through the header.
    let mut zero_format = bytes.clone();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + header_len]).into_owned();
    let entry = &header[header.find("\"enc.fc.weight_format\"").unwrap()..];
    let offsets = &entry[entry.find("data_offsets").unwrap()..];
    let start: usize = offsets[offsets.find('[').unwrap() + 1..offsets.find(',').unwrap()].trim().parse().unwrap();
    let at = 8 + header_len + start;
    assert_eq!(zero_format[at], 83);
    zero_format[at] = 0;
    let p = dir.join("zero-format.safetensors");
    std::fs::write(&p, &zero_format).unwrap();
    let e = ctx.load_weight(&Checkpoint::open(&p).unwrap(), "enc.fc").unwrap_err();
    assert!(e.to_string().contains("weight_format is 0"), "{e}");
}

/// `convert --smooth`: each listed layer becomes the int8 values of
/// `W·diag(s)` with its vector and weight_format 83, and loads as the
/// in-memory smoothed weight; lists naming no quantized layer, or of the
/// wrong length, are refused with nothing written.
#[test]
fn converting_with_smoothing_writes_llmint8_only_layers() {
    let dir = scratch("convert-smooth");
    let src = data_dir().join("tiny-llama-fp16");
    let layer = "model.layers.0.self_attn.q_proj";
    let k = 256;
    let s: Vec<f32> = (0..k).map(|c| 0.5 + (c % 5) as f32 * 0.25).collect();
    let mut options = ConvertOptions::default();
    options.smooth.insert(layer.to_string(), s.clone());
    let out = dir.join("smoothed");
    let report = convert(&src, &out, &options, &mut |_| {}).unwrap();
    let q = Checkpoint::open(&out).unwrap();
    assert_eq!(tensor_bytes(&q, &format!("{layer}.weight_format")), [83]);
    assert_eq!(q.tensor(&format!("{layer}.llmint8_smooth")).unwrap().kind, TensorKind::Smoothing);
    let other = "model.layers.0.self_attn.k_proj";
    assert_eq!(tensor_bytes(&q, &format!("{other}.weight_format")), [0]);
    // The config transformers reads refuses the folder (scripts/bnb_smoothed_check.py shows it).
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let marker = &config["quantization_config"]["bnb_4bit_compute_dtype"];
    assert_eq!(marker, llmint8::convert::SMOOTHED_CONFIG_MARKER);
    let plain_out = dir.join("plain");
    convert(&src, &plain_out, &ConvertOptions::default(), &mut |_| {}).unwrap();
    let plain: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain_out.join("config.json")).unwrap()).unwrap();
    assert_eq!(plain["quantization_config"]["bnb_4bit_compute_dtype"], "float32");
    let ctx = Context::cpu();
    ctx.set_input_rounding(InputRounding::Float16);
    let source = Checkpoint::open(&src).unwrap();
    let w = source.tensor(&format!("{layer}.weight")).unwrap();
    let loaded = ctx.load_weight(&q, layer).unwrap();
    let expected = source
        .with_floats(w, |data| {
            let options = llmint8::WeightOptions { smoothing: Some(&s), ..Default::default() };
            ctx.quantize_weight_with(data, w.shape[0], w.shape[1], None, &options)
        })
        .unwrap();
    assert_eq!(loaded.smoothing(), Some(&s[..]));
    assert_eq!((loaded.cb().unwrap(), loaded.scb()), (expected.cb().unwrap(), expected.scb()));
    let line = report.layers.iter().find(|l| l.name == layer).unwrap();
    assert!(line.relative_error < 0.02, "{}", line.relative_error);
    for (module, factors, says) in
        [("model.layers.0.self_attn.q_prog", s.clone(), "q_prog"), (layer, s[..10].to_vec(), "10 factors")]
    {
        let out = dir.join("refused");
        let mut options = ConvertOptions::default();
        options.smooth.insert(module.to_string(), factors);
        let e = convert(&src, &out, &options, &mut |_| {}).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(!out.exists());
    }
    let file = dir.join("smooth.json");
    std::fs::write(&file, r#"{"a.b": [0.5, 2]}"#).unwrap();
    let read = llmint8::convert::read_smoothing(&file).unwrap();
    assert_eq!(read.into_iter().collect::<Vec<_>>(), [("a.b".to_string(), vec![0.5, 2.0])]);
    for bad in [r#"{"a": [0]}"#, r#"{"a": [-1]}"#, r#"{"a": ["x"]}"#, r#"{"a": 1}"#, "["] {
        std::fs::write(&file, bad).unwrap();
        assert_eq!(llmint8::convert::read_smoothing(&file).unwrap_err().status(), Status::Format, "{bad}");
    }
}

// ---- Through the C ABI -------------------------------------------------------

fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(llmint8_last_error()) }.to_string_lossy().into_owned()
}

fn c(s: impl AsRef<str>) -> CString {
    CString::new(s.as_ref()).unwrap()
}

fn c_path(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

struct Ctx(*mut llmint8_context);
impl Ctx {
    fn new() -> Ctx {
        let mut p = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &mut p) }, LLMINT8_OK);
        Ctx(p)
    }
}
impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: created above, destroyed once.
        unsafe { llmint8_context_destroy(self.0) }
    }
}

/// Loads `prefix` from `path` through the C ABI; the status and message.
fn load_through_c(path: &Path, prefix: &str) -> (i32, String) {
    let ctx = Ctx::new();
    let mut w = std::ptr::dangling_mut::<llmint8_weight>();
    // SAFETY: valid strings and out-pointer.
    let status = unsafe { llmint8_weight_load_safetensors(ctx.0, c_path(path).as_ptr(), c(prefix).as_ptr(), &mut w) };
    if status == LLMINT8_OK {
        assert!(!w.is_null());
        // SAFETY: a weight we own.
        unsafe { llmint8_weight_destroy(w) };
        return (status, String::new());
    }
    assert!(w.is_null(), "a failed load must write NULL to *out");
    (status, last_error())
}

/// A safetensors file from a raw header text and data section.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

/// A valid 8-bit layer "l": weight [2, 3] int8, SCB [2] f32, then `extra` entries.
fn int8_layer(scb_entry: &str, scb_bytes: usize, extra: &str, extra_bytes: usize) -> Vec<u8> {
    let header =
        format!(r#"{{"l.weight":{{"dtype":"I8","shape":[2,3],"data_offsets":[0,6]}},"l.SCB":{scb_entry}{extra}}}"#);
    let mut data = vec![1u8, 2, 3, 0xff, 0xfe, 0xfd];
    data.extend(std::iter::repeat_n(0u8, scb_bytes + extra_bytes));
    raw_file(&header, &data)
}

/// The header entries of a layer's kept columns after an `int8_layer`'s SCB
/// (data from offset 14): the column list, `list_bytes` long, then the values.
fn kept_entries(
    list_dtype: &str,
    list_shape: &str,
    list_bytes: usize,
    dtype: &str,
    shape: &str,
    bytes: usize,
) -> String {
    let (a, b, c) = (14, 14 + list_bytes, 14 + list_bytes + bytes);
    format!(
        r#","l.llmint8_kept_columns":{{"dtype":"{list_dtype}","shape":{list_shape},"data_offsets":[{a},{b}]}},"l.llmint8_kept_values":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{b},{c}]}}"#
    )
}

/// A valid int8 layer with one kept column whose index is `column` (4 bytes).
fn with_kept_column_bytes(column: &[u8]) -> Vec<u8> {
    let ok_scb = r#"{"dtype":"F32","shape":[2],"data_offsets":[6,14]}"#;
    let mut file = int8_layer(ok_scb, 8, &kept_entries("I32", "[1]", 4, "F16", "[1,2]", 4), 8);
    let at = file.len() - 8; // the list, then 4 bytes of values
    file[at..at + 4].copy_from_slice(column);
    file
}

#[test]
fn hostile_files_give_clear_errors_through_the_c_abi() {
    let dir = scratch("hostile");
    let ok_scb = r#"{"dtype":"F32","shape":[2],"data_offsets":[6,14]}"#;
    let valid = int8_layer(ok_scb, 8, "", 0);
    let f16_weight =
        raw_file(r#"{"l.weight":{"dtype":"F16","shape":[1,2],"data_offsets":[0,4]}}"#, &[0, 0x3c, 0, 0x7e]);
    let mut huge_len = valid.clone();
    huge_len[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut past_end = valid.clone();
    past_end[..8].copy_from_slice(&((valid.len() as u64) - 4).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, i32, &[&str])> = vec![
        ("empty file", vec![], LLMINT8_ERR_FORMAT, &["too short"]),
        ("7 bytes", vec![1, 0, 0, 0, 0, 0, 0], LLMINT8_ERR_FORMAT, &["too short"]),
        ("truncated file", valid[..valid.len() - 3].to_vec(), LLMINT8_ERR_FORMAT, &["\"l.SCB\"", "truncated"]),
        ("header length past the end", past_end, LLMINT8_ERR_FORMAT, &["runs past the end"]),
        ("absurd header length", huge_len, LLMINT8_ERR_FORMAT, &["exceeds"]),
        ("header not JSON", raw_file("{not json at all", &[]), LLMINT8_ERR_FORMAT, &["not JSON"]),
        ("header not an object", raw_file("[1, 2]", &[]), LLMINT8_ERR_FORMAT, &["not a JSON object"]),
        (
            "header not UTF-8",
            raw_file("{\"\u{0}\"", &[]).into_iter().map(|b| if b == 0 { 0xff } else { b }).collect(),
            LLMINT8_ERR_FORMAT,
            &["UTF-8"],
        ),
        (
            "offsets out of range",
            int8_layer(r#"{"dtype":"F32","shape":[2],"data_offsets":[6,14]}"#, 4, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "past the end"],
        ),
        (
            "overlapping offsets",
            int8_layer(r#"{"dtype":"F32","shape":[2],"data_offsets":[4,12]}"#, 6, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "overlaps", "\"l.weight\""],
        ),
        (
            "a gap between tensors",
            int8_layer(r#"{"dtype":"F32","shape":[2],"data_offsets":[8,16]}"#, 10, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "belong to no tensor"],
        ),
        (
            "trailing bytes",
            [valid.clone(), vec![0; 5]].concat(),
            LLMINT8_ERR_FORMAT,
            &["5 bytes after the last tensor"],
        ),
        (
            "dtype does not match the byte length",
            int8_layer(r#"{"dtype":"F16","shape":[2],"data_offsets":[6,14]}"#, 8, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "need 4 bytes"],
        ),
        (
            "unknown dtype",
            int8_layer(r#"{"dtype":"F17","shape":[2],"data_offsets":[6,14]}"#, 8, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "unknown dtype"],
        ),
        (
            "shape that overflows",
            int8_layer(r#"{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[6,14]}"#, 8, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "overflows"],
        ),
        (
            "negative dimension",
            int8_layer(r#"{"dtype":"F32","shape":[-2],"data_offsets":[6,14]}"#, 8, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "non-integer"],
        ),
        (
            "offsets that end before they begin",
            int8_layer(r#"{"dtype":"F32","shape":[2],"data_offsets":[14,6]}"#, 8, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "end before"],
        ),
        (
            "SCB of the wrong dtype",
            int8_layer(r#"{"dtype":"F16","shape":[2],"data_offsets":[6,10]}"#, 4, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "F32"],
        ),
        (
            "SCB of the wrong length",
            int8_layer(r#"{"dtype":"F32","shape":[3],"data_offsets":[6,18]}"#, 12, "", 0),
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "expected [2]"],
        ),
        (
            "int8 weight without SCB",
            raw_file(r#"{"l.weight":{"dtype":"I8","shape":[2,3],"data_offsets":[0,6]}}"#, &[0; 6]),
            LLMINT8_ERR_FORMAT,
            &["\"l.weight\"", "l.SCB", "missing"],
        ),
        (
            "weight of another dtype",
            raw_file(r#"{"l.weight":{"dtype":"I32","shape":[1,2],"data_offsets":[0,8]}}"#, &[0; 8]),
            LLMINT8_ERR_FORMAT,
            &["\"l.weight\"", "I32"],
        ),
        (
            "3-D weight",
            raw_file(r#"{"l.weight":{"dtype":"F16","shape":[1,1,2],"data_offsets":[0,4]}}"#, &[0; 4]),
            LLMINT8_ERR_FORMAT,
            &["\"l.weight\"", "2-D"],
        ),
        (
            "bias of the wrong length",
            int8_layer(ok_scb, 8, r#","l.bias":{"dtype":"F16","shape":[3],"data_offsets":[14,20]}"#, 6),
            LLMINT8_ERR_FORMAT,
            &["\"l.bias\"", "expected [2]"],
        ),
        (
            "a tiled weight_format",
            [
                int8_layer(ok_scb, 8, r#","l.weight_format":{"dtype":"U8","shape":[],"data_offsets":[14,15]}"#, 0),
                vec![2],
            ]
            .concat(),
            LLMINT8_ERR_UNSUPPORTED,
            &["\"l.weight_format\"", "row-major"],
        ),
        ("a NaN in a 16-bit weight", f16_weight, LLMINT8_ERR_INVALID_ARGUMENT, &["\"l.weight\"", "non-finite"]),
        (
            "kept columns without their values",
            int8_layer(ok_scb, 8, r#","l.llmint8_kept_columns":{"dtype":"I32","shape":[1],"data_offsets":[14,18]}"#, 4),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_columns\"", "l.llmint8_kept_values"],
        ),
        (
            "kept values without their columns",
            int8_layer(
                ok_scb,
                8,
                r#","l.llmint8_kept_values":{"dtype":"F16","shape":[1,2],"data_offsets":[14,18]}"#,
                4,
            ),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_values\"", "l.llmint8_kept_columns"],
        ),
        (
            "kept columns of the wrong dtype",
            int8_layer(ok_scb, 8, &kept_entries("I64", "[1]", 8, "F16", "[1,2]", 4), 12),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_columns\"", "I32"],
        ),
        (
            "kept values of the wrong shape",
            int8_layer(ok_scb, 8, &kept_entries("I32", "[1]", 4, "F16", "[2,2]", 8), 12),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_values\"", "expected [1, 2]"],
        ),
        (
            "kept values of an integer dtype",
            int8_layer(ok_scb, 8, &kept_entries("I32", "[1]", 4, "I16", "[1,2]", 4), 8),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_values\"", "F16, BF16 or F32"],
        ),
        (
            "a kept column outside the weight",
            with_kept_column_bytes(&(3i32).to_le_bytes()),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_columns\"", "column 3 is outside the 3 in_features"],
        ),
        (
            "a negative kept column",
            with_kept_column_bytes(&(-1i32).to_le_bytes()),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_columns\"", "column -1"],
        ),
        (
            "a kept column listed twice",
            int8_layer(ok_scb, 8, &kept_entries("I32", "[2]", 8, "F16", "[2,2]", 8), 16),
            LLMINT8_ERR_FORMAT,
            &["\"l.llmint8_kept_columns\"", "column 0 is listed twice"],
        ),
        (
            "a NaN among the kept values",
            {
                // Value [0, 1], the file's last two bytes: float16 NaN 0x7e00.
                let mut file = with_kept_column_bytes(&0i32.to_le_bytes());
                *file.last_mut().unwrap() = 0x7e;
                file
            },
            LLMINT8_ERR_INVALID_ARGUMENT,
            &["\"l.weight\"", "kept column value [0, 1] is not finite"],
        ),
    ];
    for (what, bytes, status, needles) in &cases {
        let path = dir.join(format!("{}.safetensors", what.replace(' ', "_")));
        std::fs::write(&path, bytes).unwrap();
        let (got, message) = load_through_c(&path, "l");
        assert_eq!(got, *status, "{what}: {message}");
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(message.contains(file), "{what}: the message does not name the file: {message}");
        for n in *needles {
            assert!(message.contains(n), "{what}: {message:?} lacks {n:?}");
        }
        // The same bytes in memory fail the same way, without a panic.
        let parsed = Checkpoint::from_bytes(file, bytes.clone()).and_then(|c| Context::cpu().load_weight(&c, "l"));
        assert_eq!(parsed.unwrap_err().status() as i32, *status, "{what} (from bytes)");
    }
    // The valid file loads, with kept columns too, and a missing tensor is NOT_FOUND.
    let path = dir.join("valid-kept.safetensors");
    std::fs::write(&path, with_kept_column_bytes(&2i32.to_le_bytes())).unwrap();
    assert_eq!(load_through_c(&path, "l").0, LLMINT8_OK);
    let path = dir.join("valid.safetensors");
    std::fs::write(&path, &valid).unwrap();
    assert_eq!(load_through_c(&path, "l").0, LLMINT8_OK);
    let (status, message) = load_through_c(&path, "m");
    assert_eq!(status, LLMINT8_ERR_NOT_FOUND);
    assert!(message.contains("\"m.weight\"") && message.contains("valid.safetensors"), "{message}");
    let (status, message) = load_through_c(&path, "l.weight");
    assert_eq!(status, LLMINT8_ERR_NOT_FOUND);
    assert!(message.contains("without \".weight\""), "{message}");
    // Files and directories that are not there.
    let (status, message) = load_through_c(&dir.join("absent.safetensors"), "l");
    assert_eq!(status, LLMINT8_ERR_NOT_FOUND, "{message}");
    assert!(message.contains("absent.safetensors"), "{message}");
    let empty_dir = dir.join("empty-model");
    std::fs::create_dir(&empty_dir).unwrap();
    let (status, message) = load_through_c(&empty_dir, "l");
    assert_eq!(status, LLMINT8_ERR_NOT_FOUND, "{message}");
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn hostile_shard_indexes_give_clear_errors() {
    let dir = scratch("index");
    let shard = int8_layer(r#"{"dtype":"F32","shape":[2],"data_offsets":[6,14]}"#, 8, "", 0);
    std::fs::write(dir.join("a.safetensors"), &shard).unwrap();
    std::fs::write(dir.join("b.safetensors"), &shard).unwrap();
    let cases: Vec<(&str, &str, i32, &[&str])> = vec![
        ("good", r#"{"weight_map": {"l.weight": "a.safetensors", "l.SCB": "a.safetensors"}}"#, LLMINT8_OK, &[]),
        (
            "missing shard",
            r#"{"weight_map": {"l.weight": "gone.safetensors"}}"#,
            LLMINT8_ERR_NOT_FOUND,
            &["gone.safetensors", "shard index"],
        ),
        ("not JSON", "weight_map: a", LLMINT8_ERR_FORMAT, &["not a JSON shard index"]),
        ("no weight_map", r#"{"metadata": {}}"#, LLMINT8_ERR_FORMAT, &["weight_map"]),
        (
            "escaping path",
            r#"{"weight_map": {"l.weight": "../a.safetensors"}}"#,
            LLMINT8_ERR_FORMAT,
            &["inside the model directory"],
        ),
        ("absolute path", r#"{"weight_map": {"l.weight": "/etc/passwd"}}"#, LLMINT8_ERR_FORMAT, &["inside"]),
        ("not a string", r#"{"weight_map": {"l.weight": 3}}"#, LLMINT8_ERR_FORMAT, &["\"l.weight\""]),
        (
            "tensor not in its shard",
            r#"{"weight_map": {"l.weight": "a.safetensors", "q.weight": "a.safetensors"}}"#,
            LLMINT8_ERR_FORMAT,
            &["\"q.weight\"", "a.safetensors"],
        ),
        (
            "tensor in two shards",
            r#"{"weight_map": {"l.weight": "a.safetensors", "l.SCB": "b.safetensors"}}"#,
            LLMINT8_ERR_FORMAT,
            &["\"l.SCB\"", "both"],
        ),
    ];
    for (what, text, status, needles) in cases {
        let path = dir.join(format!("{}.json", what.replace(' ', "_")));
        std::fs::write(&path, text).unwrap();
        let (got, message) = load_through_c(&path, "l");
        assert_eq!(got, status, "{what}: {message}");
        for n in needles {
            assert!(message.contains(n), "{what}: {message:?} lacks {n:?}");
        }
    }
}

#[test]
fn enumerating_a_checkpoint_through_the_c_abi() {
    let dir = bnb_models().join("llama-sharded-f16-int8");
    let mut ckpt = std::ptr::null_mut();
    // SAFETY (this test): every pointer is valid for the call it is passed to.
    unsafe {
        assert_eq!(llmint8_checkpoint_open(c_path(&dir).as_ptr(), &mut ckpt), LLMINT8_OK, "{}", last_error());
        let mut count = 0usize;
        assert_eq!(llmint8_checkpoint_num_tensors(ckpt, &mut count), LLMINT8_OK);
        let rust = Checkpoint::open(&dir).unwrap();
        assert_eq!(count, rust.tensors().len());
        let mut kinds = [0usize; 6];
        for i in 0..count {
            let mut info: llmint8_tensor_info = std::mem::zeroed();
            assert_eq!(llmint8_checkpoint_tensor_info(ckpt, i, &mut info), LLMINT8_OK);
            let t = &rust.tensors()[i];
            assert_eq!(CStr::from_ptr(info.name).to_str().unwrap(), t.name);
            assert_eq!(CStr::from_ptr(info.dtype_name).to_str().unwrap(), t.dtype.name());
            assert!(CStr::from_ptr(info.file).to_str().unwrap().ends_with(".safetensors"));
            assert_eq!(info.dtype, t.dtype.code());
            assert_eq!(info.ndim as usize, t.shape.len());
            assert_eq!(&info.shape[..t.shape.len()], t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>());
            assert_eq!(info.num_bytes as usize, t.num_bytes());
            kinds[info.kind as usize] += 1;
            let mut index = usize::MAX;
            assert_eq!(llmint8_checkpoint_find(ckpt, info.name, &mut index), LLMINT8_OK);
            assert_eq!(index, i);
            let mut data = vec![0u8; t.num_bytes()];
            assert_eq!(llmint8_checkpoint_read(ckpt, i, data.as_mut_ptr().cast(), data.len()), LLMINT8_OK);
            assert!(data == rust.bytes(t));
        }
        assert_eq!(kinds[LLMINT8_KIND_INT8_WEIGHT as usize], 14);
        assert_eq!(kinds[LLMINT8_KIND_INT8_SCALES as usize], 14);
        assert_eq!(kinds[LLMINT8_KIND_WEIGHT_FORMAT as usize], 14);
        // Misuse.
        let mut info: llmint8_tensor_info = std::mem::zeroed();
        assert_eq!(llmint8_checkpoint_tensor_info(ckpt, count, &mut info), LLMINT8_ERR_NOT_FOUND);
        assert!(info.name.is_null(), "nothing written on failure");
        assert_eq!(llmint8_checkpoint_tensor_info(ckpt, 0, std::ptr::null_mut()), LLMINT8_ERR_INVALID_ARGUMENT);
        assert_eq!(llmint8_checkpoint_num_tensors(std::ptr::null(), &mut 0), LLMINT8_ERR_INVALID_ARGUMENT);
        let mut index = 0usize;
        assert_eq!(llmint8_checkpoint_find(ckpt, c("nope").as_ptr(), &mut index), LLMINT8_ERR_NOT_FOUND);
        assert!(last_error().contains("\"nope\""));
        let mut small = [0u8; 3];
        assert_eq!(llmint8_checkpoint_read(ckpt, 0, small.as_mut_ptr().cast(), 3), LLMINT8_ERR_SHAPE);
        assert_eq!(llmint8_checkpoint_read(ckpt, 0, std::ptr::null_mut(), 0), LLMINT8_ERR_SHAPE);
        // Loading many layers from one open checkpoint, then saving one.
        let ctx = Ctx::new();
        let mut w = std::ptr::null_mut();
        let prefix = c("model.layers.1.mlp.down_proj");
        assert_eq!(llmint8_weight_load(ctx.0, ckpt, prefix.as_ptr(), &mut w), LLMINT8_OK, "{}", last_error());
        let saved = scratch("enumerate").join("down.safetensors");
        assert_eq!(llmint8_weight_save_safetensors(w, c_path(&saved).as_ptr(), prefix.as_ptr()), LLMINT8_OK);
        assert_eq!(
            llmint8_weight_save_safetensors(w, c_path(&saved).as_ptr(), c("").as_ptr()),
            LLMINT8_ERR_INVALID_ARGUMENT
        );
        let missing_dir = saved.parent().unwrap().join("no/such/dir/x.safetensors");
        assert_eq!(
            llmint8_weight_save_safetensors(w, c_path(&missing_dir).as_ptr(), prefix.as_ptr()),
            LLMINT8_ERR_NOT_FOUND
        );
        let name = "model.layers.1.mlp.down_proj.weight";
        let t = Tensors::open(&saved);
        assert!(common::bits_i8(&t.i8s(name)) == tensor_bytes(&rust, name));
        llmint8_weight_destroy(w);
        let mut w = std::ptr::dangling_mut::<llmint8_weight>();
        assert_eq!(llmint8_weight_load(ctx.0, ckpt, std::ptr::null(), &mut w), LLMINT8_ERR_INVALID_ARGUMENT);
        assert!(w.is_null());
        llmint8_checkpoint_destroy(ckpt);
        llmint8_checkpoint_destroy(std::ptr::null_mut());
        let mut ckpt = std::ptr::dangling_mut::<llmint8_checkpoint>();
        assert_eq!(llmint8_checkpoint_open(std::ptr::null(), &mut ckpt), LLMINT8_ERR_INVALID_ARGUMENT);
        assert!(ckpt.is_null());
        assert_eq!(llmint8_checkpoint_open(c("").as_ptr(), &mut ckpt), LLMINT8_ERR_INVALID_ARGUMENT);
    }
}

/// The contiguous parts of `n` output rows for a world of `ranks`, as engines
/// split them (sizes differing by at most one).
fn rank_rows(n: usize, ranks: usize) -> Vec<std::ops::Range<usize>> {
    (0..ranks).map(|r| r * n / ranks..(r + 1) * n / ranks).collect()
}

/// Column-parallel tensor parallelism: each rank loads only its output rows
/// of a layer (`load_weight_rows`, `llmint8_weight_load_rows`) from a
/// 16/32-bit checkpoint or a bitsandbytes 8-bit one (with kept columns), and
/// the ranks' outputs side by side are the whole layer's output bit for bit,
/// for world sizes 1–4, thresholds 6 and 0, on the test backend. A NaN in
/// rows outside a shard does not stop it loading: those rows are not read.
#[test]
fn column_parallel_shards_side_by_side_are_the_whole_layer_bit_for_bit() {
    let ctx = common::test_context();
    let mut rng = common::Rng::new(21);
    let (n, k, rows) = (45, 70, 6);
    let dir = scratch("column-parallel");
    let x = common::activations_with_outliers(&mut rng, rows, k, 3);
    let mut checkpoints = Vec::new();
    for dtype in [DType::F16, DType::BF16, DType::F32] {
        let w = Owned::from_f32(dtype, &rng.normals(n * k, 0.5));
        let bias = Owned::from_f32(dtype, &rng.normals(n, 1.0));
        let path = dir.join(format!("{dtype:?}.safetensors"));
        let specs = vec![
            TensorSpec { name: "fc.weight".into(), dtype: TensorDtype::from(dtype), shape: vec![n, k] },
            TensorSpec { name: "fc.bias".into(), dtype: TensorDtype::from(dtype), shape: vec![n] },
        ];
        let mut writer = SafetensorsWriter::create(&path, specs, &[]).unwrap();
        writer.write("fc.weight", &w.bytes()).unwrap();
        writer.write("fc.bias", &bias.bytes()).unwrap();
        writer.finish().unwrap();
        // bitsandbytes' 8-bit form of the same layer, keeping three columns.
        let kept = ctx.quantize_weight_keep(w.data(), n, k, Some(bias.data()), &[3, 40, 69]).unwrap();
        let int8 = dir.join(format!("{dtype:?}-int8.safetensors"));
        llmint8::save_weight(&kept, &int8, "fc").unwrap();
        checkpoints.push(path);
        checkpoints.push(int8);
    }
    for path in &checkpoints {
        let ckpt = Checkpoint::open(path).unwrap();
        let whole = ctx.load_weight(&ckpt, "fc").unwrap();
        for ranks in 1..=4 {
            let shards: Vec<_> = rank_rows(n, ranks)
                .into_iter()
                .map(|r| (r.clone(), ctx.load_weight_rows(&ckpt, "fc", r).unwrap()))
                .collect();
            for threshold in [6.0, 0.0] {
                let mut y = vec![0f32; rows * n];
                ctx.matmul(&whole, llmint8::Data::F32(&x), rows, threshold, llmint8::DataMut::F32(&mut y)).unwrap();
                for (part, shard) in &shards {
                    assert_eq!((shard.out_features(), shard.in_features()), (part.len(), k));
                    assert_eq!(shard.kept_columns(), whole.kept_columns());
                    let mut ys = vec![0f32; rows * part.len()];
                    ctx.matmul(shard, llmint8::Data::F32(&x), rows, threshold, llmint8::DataMut::F32(&mut ys)).unwrap();
                    for r in 0..rows {
                        assert_eq!(
                            common::bits(&ys[r * part.len()..(r + 1) * part.len()]),
                            common::bits(&y[r * n + part.start..r * n + part.end]),
                            "{}: {ranks} ranks, rows {part:?}, threshold {threshold}, x row {r}",
                            path.display()
                        );
                    }
                }
            }
        }
        // Out of range or empty: refused, naming the layer's rows.
        for bad in [0..0, 5..5, 40..46, 46..47] {
            let err = ctx.load_weight_rows(&ckpt, "fc", bad.clone()).unwrap_err();
            assert_eq!(err.status(), Status::Shape, "{bad:?}: {err}");
            assert!(err.message().contains("45 output rows"), "{err}");
        }
    }
    // A NaN in row 0 refuses the whole layer but not a shard without row 0.
    let mut w = rng.normals(n * k, 0.5);
    w[3] = f32::NAN;
    let path = dir.join("nan-row-0.safetensors");
    let specs = vec![TensorSpec { name: "fc.weight".into(), dtype: TensorDtype::F32, shape: vec![n, k] }];
    let mut writer = SafetensorsWriter::create(&path, specs, &[]).unwrap();
    writer.write("fc.weight", &w.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    writer.finish().unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(ctx.load_weight(&ckpt, "fc").unwrap_err().status(), Status::InvalidArgument);
    let shard = ctx.load_weight_rows(&ckpt, "fc", 1..n).unwrap();
    assert_eq!(shard.out_features(), n - 1);
    assert_eq!(ctx.load_weight_rows(&ckpt, "fc", 0..1).unwrap_err().status(), Status::InvalidArgument);
}

/// `llmint8_weight_load_rows` through the C ABI: a shard's int8 values are
/// the whole layer's rows; bad ranges and NULLs refused, `*out` set to NULL.
#[test]
fn loading_a_shard_through_the_c_abi() {
    let mut rng = common::Rng::new(22);
    let (n, k) = (20, 12);
    let ctx = Context::cpu();
    let w = ctx.quantize_weight(llmint8::Data::F32(&rng.normals(n * k, 0.5)), n, k, None).unwrap();
    let path = scratch("c-shard").join("layer.safetensors");
    llmint8::save_weight(&w, &path, "fc").unwrap();
    let whole_cb = w.cb().unwrap();
    // SAFETY: every pointer is live or NULL as each call documents.
    unsafe {
        let mut cctx = std::ptr::null_mut();
        assert_eq!(llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &mut cctx), LLMINT8_OK);
        let mut ckpt = std::ptr::null_mut();
        assert_eq!(llmint8_checkpoint_open(c_path(&path).as_ptr(), &mut ckpt), LLMINT8_OK);
        let prefix = c("fc");
        let mut shard = std::ptr::null_mut();
        assert_eq!(llmint8_weight_load_rows(cctx, ckpt, prefix.as_ptr(), 5, 15, &mut shard), LLMINT8_OK);
        let mut cb = vec![0i8; 10 * k];
        let mut scb = vec![0f32; 10];
        assert_eq!(llmint8_weight_export(shard, cb.as_mut_ptr(), scb.as_mut_ptr()), LLMINT8_OK);
        assert_eq!(cb, whole_cb[5 * k..15 * k]);
        assert_eq!(scb, w.scb()[5..15]);
        llmint8_weight_destroy(shard);
        for (begin, end) in [(3, 3), (7, 2), (0, 21), (usize::MAX, 0)] {
            let mut out = std::ptr::dangling_mut::<llmint8_weight>();
            assert_eq!(llmint8_weight_load_rows(cctx, ckpt, prefix.as_ptr(), begin, end, &mut out), LLMINT8_ERR_SHAPE);
            assert!(out.is_null());
            assert!(last_error().contains("20 output rows"), "{}", last_error());
        }
        let mut out = std::ptr::null_mut();
        assert_eq!(
            llmint8_weight_load_rows(cctx, std::ptr::null(), prefix.as_ptr(), 0, 1, &mut out),
            LLMINT8_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            llmint8_weight_load_rows(cctx, ckpt, prefix.as_ptr(), 0, 1, std::ptr::null_mut()),
            LLMINT8_ERR_INVALID_ARGUMENT
        );
        llmint8_checkpoint_destroy(ckpt);
        llmint8_context_destroy(cctx);
    }
}
