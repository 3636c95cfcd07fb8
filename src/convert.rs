//! Converting a transformers model directory into the 8-bit form that
//! transformers + bitsandbytes load with no extra arguments.
//!
//! Streaming: the layout of every output file is planned first, then each
//! source tensor is read from its mapping, quantized or copied, written at its
//! place and released, so peak memory is a small multiple of the largest tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::context::Context;
use crate::dtype::Data;
use crate::error::{try_zeroed_vec, Error, Result};
use crate::io::format::{byte_count, element_count, TensorDtype, TensorSpec};
use crate::io::{
    as_u8, f32_bytes, i32_bytes, int8_layer_specs, io_error, kept_column_specs, pytorch_metadata, smoothing_spec,
    SMOOTHED_WEIGHT_FORMAT,
};
use crate::io::{pyjson, Checkpoint, Tensor, TensorKind, INDEX_FILE, MODEL_FILE};
use crate::io::{temp_path_beside, SafetensorsWriter};
use crate::quant::{self, InputRounding};
use crate::weight::WeightOptions;

/// transformers' default `max_shard_size` ("5GB", decimal).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// How to convert.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Written to `quantization_config.llm_int8_threshold` (the weights do not depend on it).
    pub threshold: f64,
    /// Modules kept as they are (see [`matches_module`]), like `llm_int8_skip_modules`.
    pub skip: Vec<String>,
    /// Output shards hold at most this many bytes of tensors (a larger tensor gets a shard alone).
    pub max_shard_bytes: u64,
    /// `Float16` (the default) rounds bfloat16/float32 weights to float16 before
    /// quantizing, as bitsandbytes does, so the output is bit for bit its
    /// conversion; `Exact` quantizes the stored values (no difference for float16).
    pub rounding: InputRounding,
    /// Weight columns to keep in 16/32-bit, by module name (an engine's
    /// calibration: the outlier columns each layer saw). Written beside the
    /// 8-bit layer as `llmint8_kept_columns` and `llmint8_kept_values`
    /// (`io::KeptColumnTensors`), in the source weight's dtype; transformers +
    /// bitsandbytes load the result as they would without them.
    pub keep_columns: BTreeMap<String, Vec<u32>>,
    /// Smoothing vectors `s` (SmoothQuant's, `[in_features]`, each value
    /// finite and > 0) by module name: the layer is written as the int8 values
    /// of `W·diag(s)` with `llmint8_smooth` beside it and weight_format
    /// [`io::SMOOTHED_WEIGHT_FORMAT`], which bitsandbytes' state-dict hook
    /// refuses, and the config gets [`SMOOTHED_CONFIG_MARKER`], which
    /// transformers refuses (either would multiply unsmoothed activations by
    /// the smoothed weight); its kept columns, if any, as float32 of `W·diag(s)`.
    pub smooth: BTreeMap<String, Vec<f32>>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            threshold: quant::DEFAULT_THRESHOLD as f64,
            skip: Vec::new(),
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            rounding: InputRounding::Float16,
            keep_columns: BTreeMap::new(),
            smooth: BTreeMap::new(),
        }
    }
}

/// Reads a list of weight columns to keep ([`ConvertOptions::keep_columns`])
/// from the JSON file `path`: an object mapping module names to arrays of
/// column indices, `{"model.layers.0.mlp.down_proj": [12, 300]}`.
pub fn read_keep_columns(path: impl AsRef<Path>) -> Result<BTreeMap<String, Vec<u32>>> {
    read_module_lists(path.as_ref(), "COLUMN", "columns must be integers from 0 to 2^31 - 1", |c| {
        c.as_u64().and_then(|c| u32::try_from(c).ok()).filter(|&c| c <= i32::MAX as u32)
    })
}

/// Reads smoothing vectors ([`ConvertOptions::smooth`]) from the JSON file
/// `path`: an object mapping module names to arrays of factors,
/// `{"model.layers.0.self_attn.q_proj": [1.25, 0.5, ...]}` (what the reference
/// engine's `--smoothing-out` writes). Each factor must be a finite number > 0.
pub fn read_smoothing(path: impl AsRef<Path>) -> Result<BTreeMap<String, Vec<f32>>> {
    read_module_lists(path.as_ref(), "FACTOR", "every factor must be a finite number > 0", |v| {
        v.as_f64().map(|v| v as f32).filter(|v| v.is_finite() && *v > 0.0 && (1.0 / v).is_finite())
    })
}

/// A JSON object `{"MODULE": [ITEM, ...]}` from `path`, each item read by
/// `item` (`None`: refused with `rule`).
fn read_module_lists<T>(
    path: &Path,
    item_name: &str,
    rule: &str,
    item: impl Fn(&Value) -> Option<T>,
) -> Result<BTreeMap<String, Vec<T>>> {
    let text = std::fs::read(path).map_err(|e| io_error(path, "cannot read", e))?;
    let bad = |what: String| Error::format(format!("{}: {what}", path.display()));
    let value: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad(format!("expected an object {{\"MODULE\": [{item_name}, ...]}}")));
    };
    let mut out = BTreeMap::new();
    for (module, list) in map {
        let list = list.as_array().ok_or_else(|| bad(format!("{module:?}: expected an array")))?;
        let items =
            list.iter().map(&item).collect::<Option<Vec<T>>>().ok_or_else(|| bad(format!("{module:?}: {rule}")))?;
        out.insert(module, items);
    }
    Ok(out)
}

/// Whether `pattern` names module `prefix` or a module above or inside it, on
/// whole dotted components: `mlp` and `layers.1.mlp` match
/// `model.layers.1.mlp.up_proj`, `layers.1` does not match `layers.10`.
pub fn matches_module(pattern: &str, prefix: &str) -> bool {
    let p = pattern.trim_matches('.');
    if p.is_empty() {
        return false;
    }
    let name = format!(".{prefix}.");
    name.contains(&format!(".{p}."))
}

/// One quantized layer in the report.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// Module name (`model.layers.0.mlp.up_proj`).
    pub name: String,
    pub dtype: TensorDtype,
    pub out_features: usize,
    pub in_features: usize,
    /// The source weight's bytes.
    pub bytes_before: usize,
    /// int8 weight + scales + format marker (+ kept columns and their values).
    pub bytes_after: usize,
    /// max |w − dequantized| over the layer.
    pub max_error: f64,
    /// ‖w − dequantized‖ / ‖w‖ (Frobenius); 0 for an all-zero weight.
    pub relative_error: f64,
}

/// What a conversion did.
#[derive(Clone, Debug, Default)]
pub struct ConvertReport {
    pub layers: Vec<LayerReport>,
    /// Tensors copied unchanged (embeddings, norms, biases, skipped modules).
    pub copied_tensors: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Output safetensors files, in order.
    pub shards: Vec<String>,
    /// Other files copied from the input directory (relative paths).
    pub copied_files: Vec<String>,
    /// Files left out: weights in other formats, which would be 16-bit copies.
    pub skipped_files: Vec<String>,
}

/// Progress of a conversion, reported after each source tensor.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub done_tensors: usize,
    pub total_tensors: usize,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub tensor: &'a str,
}

/// What happens to one source tensor.
enum Plan {
    Copy {
        out: usize,
    },
    /// `transposed`: the source is stored `[in, out]` (see [`stored_transposed`]).
    /// `kept`: the spec of the kept column list (its values the next one).
    /// `smoothing`: the spec of the layer's smoothing vector.
    Quantize {
        weight: usize,
        scb: usize,
        format: usize,
        transposed: bool,
        kept: Option<usize>,
        smoothing: Option<usize>,
    },
}

/// Model types whose `c_attn`, `c_proj`, `c_fc` and `q_attn` layers are
/// transformers' `Conv1D`, which stores its weight `[in, out]`; bitsandbytes
/// quantizes (and saves) them transposed, as `[out, in]` like every linear layer.
const CONV1D_MODEL_TYPES: [&str; 4] = ["gpt2", "openai-gpt", "imagegpt", "decision_transformer"];
const CONV1D_MODULES: [&str; 4] = ["c_attn", "c_proj", "c_fc", "q_attn"];

/// Whether the weight of module `prefix` is a `Conv1D` weight stored `[in, out]`.
pub fn stored_transposed(model_type: Option<&str>, prefix: &str) -> bool {
    let last = prefix.rsplit('.').next().unwrap_or("");
    model_type.is_some_and(|m| CONV1D_MODEL_TYPES.contains(&m)) && CONV1D_MODULES.contains(&last)
}

/// Converts the model directory `input` into `output` (which must not exist, or
/// be empty). On failure nothing is left at `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    check_options(options)?;
    let in_meta = std::fs::metadata(input).map_err(|e| io_error(input, "cannot open", e))?;
    if !in_meta.is_dir() {
        return Err(Error::invalid(format!("{}: the input must be a model directory", input.display())));
    }
    check_output(input, output)?;
    let checkpoint = Checkpoint::open(input)?;
    let config = read_config(input, options)?;
    let model_type = config.as_ref().and_then(|c| c.get("model_type")).and_then(Value::as_str);
    let (plans, specs) = plan(&checkpoint, model_type, options);
    check_plan(input, &checkpoint, &plans, &specs, options)?;
    let shards = Shards::assign(specs, options.max_shard_bytes);

    // Everything is written into a staging directory beside `output`, renamed
    // into place at the end: a failure leaves nothing at `output`.
    let staging = temp_path_beside(output);
    std::fs::create_dir(&staging).map_err(|e| io_error(&staging, "cannot create", e))?;
    let result = (|| {
        let mut report = write_model(&checkpoint, &plans, &shards, &staging, options, progress)?;
        write_index(&staging, &shards)?;
        if let Some(config) = &config {
            let text = pyjson::to_config_text(config);
            let path = staging.join("config.json");
            std::fs::write(&path, text).map_err(|e| io_error(&path, "cannot write", e))?;
        }
        copy_other_files(input, &staging, &checkpoint, &mut report)?;
        if output.exists() {
            std::fs::remove_dir(output).map_err(|e| io_error(output, "cannot replace the empty directory", e))?;
        }
        std::fs::rename(&staging, output).map_err(|e| io_error(output, "cannot create", e))?;
        Ok(report)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// The library's threshold rule, and one more: config.json (JSON) cannot hold
/// Infinity, which a matmul takes (only non-finite values are outliers).
fn check_options(options: &ConvertOptions) -> Result<()> {
    quant::check_threshold(options.threshold as f32)?;
    if options.threshold.is_infinite() {
        return Err(Error::invalid(
            "threshold +Inf cannot be written to config.json (JSON has no Infinity); give a finite value >= 0",
        ));
    }
    if options.max_shard_bytes == 0 {
        return Err(Error::invalid("the shard size limit must be > 0"));
    }
    Ok(())
}

/// What becomes of each tensor of the checkpoint, and every output tensor.
fn plan(checkpoint: &Checkpoint, model_type: Option<&str>, options: &ConvertOptions) -> (Vec<Plan>, Vec<TensorSpec>) {
    let mut specs: Vec<TensorSpec> = Vec::new();
    let mut plans = Vec::with_capacity(checkpoint.tensors().len());
    for t in checkpoint.tensors() {
        let quantize =
            t.kind == TensorKind::LinearWeight && !options.skip.iter().any(|p| matches_module(p, t.prefix()));
        if quantize {
            let p = t.prefix();
            let transposed = stored_transposed(model_type, p);
            let (out_features, in_features) = linear_shape(t, transposed);
            // int8_layer_specs gives weight, SCB, weight_format in that order.
            let weight = specs.len();
            specs.extend(int8_layer_specs(p, out_features, in_features, false));
            let smoothed = options.smooth.contains_key(p);
            // A smoothed layer's kept columns are float32 values of W·diag(s).
            let kept_dtype = if smoothed { TensorDtype::F32 } else { t.dtype };
            let kept = options.keep_columns.get(p).filter(|c| !c.is_empty()).map(|columns| {
                specs.extend(kept_column_specs(p, out_features, columns.len(), kept_dtype));
                weight + 3
            });
            let smoothing = smoothed.then(|| {
                specs.push(smoothing_spec(p, in_features));
                specs.len() - 1
            });
            plans.push(Plan::Quantize { weight, scb: weight + 1, format: weight + 2, transposed, kept, smoothing });
        } else {
            specs.push(TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() });
            plans.push(Plan::Copy { out: specs.len() - 1 });
        }
    }
    (plans, specs)
}

/// Refuses a plan that would not be what the caller meant, before anything
/// is written: a `--skip` or `--keep-columns` that names no module converted
/// here (a typo or a stale list), nothing to quantize, a name written twice.
fn check_plan(
    input: &Path,
    checkpoint: &Checkpoint,
    plans: &[Plan],
    specs: &[TensorSpec],
    options: &ConvertOptions,
) -> Result<()> {
    // A --skip that names nothing would otherwise land in llm_int8_skip_modules.
    for pattern in &options.skip {
        if !checkpoint.tensors().iter().any(|t| matches_module(pattern, t.prefix())) {
            let example = checkpoint.tensors().iter().find(|t| t.kind == TensorKind::LinearWeight).map(|t| t.prefix());
            return Err(Error::invalid(format!(
                "{}: --skip {pattern:?} matches no module of this model{}",
                input.display(),
                example.map_or(String::new(), |e| format!(" (a linear module is named {e:?})"))
            )));
        }
    }
    let quantized = |name: &str| {
        checkpoint.tensors().iter().zip(plans).find(|(t, p)| matches!(p, Plan::Quantize { .. }) && t.prefix() == name)
    };
    for name in options.keep_columns.keys() {
        if quantized(name).is_none() {
            return Err(Error::invalid(format!(
                "{}: --keep-columns names {name:?}, which is not a linear layer this conversion quantizes",
                input.display()
            )));
        }
    }
    for (name, factors) in &options.smooth {
        let Some((t, &Plan::Quantize { transposed, .. })) = quantized(name) else {
            return Err(Error::invalid(format!(
                "{}: --smooth names {name:?}, which is not a linear layer this conversion quantizes",
                input.display()
            )));
        };
        let (_, in_features) = linear_shape(t, transposed);
        if factors.len() != in_features {
            return Err(Error::invalid(format!(
                "{}: --smooth gives {name:?} {} factors; it has {in_features} in_features",
                input.display(),
                factors.len()
            )));
        }
    }
    if !plans.iter().any(|p| matches!(p, Plan::Quantize { .. })) {
        let int8 = checkpoint.tensors().iter().filter(|t| t.kind == TensorKind::Int8Weight).count();
        return Err(Error::invalid(if int8 > 0 {
            format!("{}: already an 8-bit checkpoint ({int8} int8 linear weights): nothing to convert", input.display())
        } else {
            format!(
                "{}: no 16/32-bit linear weight to quantize (none in the model, or every one skipped)",
                input.display()
            )
        }));
    }
    if let Some(clash) = duplicate_name(specs) {
        return Err(Error::format(format!(
            "{}: tensor {clash:?} would be written twice (an 8-bit layer and a 16-bit tensor share a name)",
            input.display()
        )));
    }
    Ok(())
}

impl Shards {
    /// `specs` cut into files by [`assign_shards`]: one `model.safetensors`,
    /// or numbered shards.
    fn assign(specs: Vec<TensorSpec>, max_bytes: u64) -> Shards {
        let shard_of = assign_shards(&specs, max_bytes);
        let count = shard_of.iter().max().map_or(1, |m| m + 1);
        let names: Vec<String> = if count == 1 {
            vec![MODEL_FILE.to_string()]
        } else {
            (1..=count).map(|i| format!("model-{i:05}-of-{count:05}.safetensors")).collect()
        };
        Shards { specs, shard_of, names }
    }
}

fn check_output(input: &Path, output: &Path) -> Result<()> {
    // The output may not exist yet: compare where its parent is.
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let (Ok(inside), Ok(input)) = (std::fs::canonicalize(parent), std::fs::canonicalize(input)) {
        if inside.starts_with(&input) {
            return Err(Error::invalid(format!(
                "{}: the output directory must not be inside the input directory {}",
                output.display(),
                input.display()
            )));
        }
    }
    match std::fs::read_dir(output) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::invalid(format!(
                    "{}: the output directory exists and is not empty; choose a new one",
                    output.display()
                )));
            }
            let same = std::fs::canonicalize(input).ok() == std::fs::canonicalize(output).ok();
            if same {
                return Err(Error::invalid("the output directory is the input directory"));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(output, "cannot use as the output directory", e)),
    }
}

/// `quantization_config.bnb_4bit_compute_dtype` of a folder holding smoothed
/// layers: transformers reads it as `getattr(torch, …)` and refuses the folder
/// ("module 'torch' has no attribute 'llmint8_smoothed_layers__load_with_llmint8'");
/// llmint8 does not read it.
pub const SMOOTHED_CONFIG_MARKER: &str = "llmint8_smoothed_layers__load_with_llmint8";

/// The input's `config.json` with the `quantization_config` transformers writes
/// for `load_in_8bit`, or `None` when there is no config.
fn read_config(input: &Path, options: &ConvertOptions) -> Result<Option<Value>> {
    let path = input.join("config.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, "cannot read", e)),
    };
    let mut config: Value =
        serde_json::from_slice(&text).map_err(|e| Error::format(format!("{}: not JSON: {e}", path.display())))?;
    let Value::Object(map) = &mut config else {
        return Err(Error::format(format!("{}: not a JSON object", path.display())));
    };
    if let Some(existing) = map.get("quantization_config") {
        let is_bnb_8bit = existing.get("quant_method") == Some(&json!("bitsandbytes"))
            && existing.get("load_in_8bit") == Some(&json!(true));
        if !is_bnb_8bit {
            return Err(Error::unsupported(format!(
                "{}: the model is already quantized ({}); convert a 16/32-bit model",
                path.display(),
                existing.get("quant_method").map_or("unknown method".to_string(), |m| m.to_string())
            )));
        }
    }
    // Smoothed layers need llmint8's division of their activations: a name
    // transformers resolves as `torch.<name>` when it reads the config, and
    // fails on (transformers 5 no longer runs bitsandbytes' weight_format check).
    let compute_dtype = if options.smooth.is_empty() { "float32" } else { SMOOTHED_CONFIG_MARKER };
    // A skip list replaces transformers' default one, which keeps the output layer.
    let skip = if options.skip.is_empty() {
        Value::Null
    } else {
        let mut s: Vec<Value> = options.skip.iter().map(|p| json!(p)).collect();
        if !options.skip.iter().any(|p| p == "lm_head") {
            s.push(json!("lm_head"));
        }
        Value::Array(s)
    };
    map.insert(
        "quantization_config".into(),
        json!({
            "_load_in_4bit": false,
            "_load_in_8bit": true,
            "bnb_4bit_compute_dtype": compute_dtype,
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_quant_type": "fp4",
            "bnb_4bit_use_double_quant": false,
            "llm_int8_enable_fp32_cpu_offload": false,
            "llm_int8_has_fp16_weight": false,
            "llm_int8_skip_modules": skip,
            "llm_int8_threshold": options.threshold,
            "load_in_4bit": false,
            "load_in_8bit": true,
            "quant_method": "bitsandbytes"
        }),
    );
    Ok(Some(config))
}

fn duplicate_name(specs: &[TensorSpec]) -> Option<String> {
    let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0].to_string())
}

/// Shard index of each spec: in name order, a new shard starts when the next
/// tensor would push the current one past `max_bytes`.
fn assign_shards(specs: &[TensorSpec], max_bytes: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|&a, &b| specs[a].name.cmp(&specs[b].name));
    let mut shard_of = vec![0; specs.len()];
    let (mut shard, mut used) = (0usize, 0u64);
    for i in order {
        let size = spec_bytes(&specs[i]) as u64;
        if used > 0 && used.saturating_add(size) > max_bytes {
            shard += 1;
            used = 0;
        }
        used = used.saturating_add(size);
        shard_of[i] = shard;
    }
    shard_of
}

fn spec_bytes(spec: &TensorSpec) -> usize {
    // Sizes come from validated source shapes: int8 and f32 [out] are no larger.
    byte_count(spec.dtype, &spec.shape).unwrap_or(usize::MAX)
}

/// The output's tensors and the file each goes to.
struct Shards {
    specs: Vec<TensorSpec>,
    /// The file (index into `names`) of each of `specs`.
    shard_of: Vec<usize>,
    names: Vec<String>,
}

fn write_model(
    checkpoint: &Checkpoint,
    plans: &[Plan],
    shards: &Shards,
    dir: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport> {
    let Shards { specs, shard_of, names: shard_names } = shards;
    let mut writers = Vec::with_capacity(shard_names.len());
    for (s, name) in shard_names.iter().enumerate() {
        let mine: Vec<TensorSpec> =
            specs.iter().zip(shard_of).filter(|(_, &o)| o == s).map(|(spec, _)| spec.clone()).collect();
        writers.push(SafetensorsWriter::create(dir.join(name), mine, &pytorch_metadata())?);
    }
    let ctx = Context::cpu();
    ctx.set_input_rounding(options.rounding);
    let mut report = ConvertReport { shards: shard_names.to_vec(), ..ConvertReport::default() };
    let total_bytes: u64 = checkpoint.tensors().iter().map(|t| t.num_bytes() as u64).sum();
    let total_tensors = checkpoint.tensors().len();
    let mut done_bytes = 0u64;
    for (i, (t, plan)) in checkpoint.tensors().iter().zip(plans).enumerate() {
        let write = |writers: &mut Vec<SafetensorsWriter>, spec: usize, data: &[u8]| {
            writers[shard_of[spec]].write(&specs[spec].name, data)
        };
        match *plan {
            Plan::Copy { out } => {
                write(&mut writers, out, checkpoint.bytes(t))?;
                report.copied_tensors += 1;
            }
            Plan::Quantize { weight, scb, format, transposed, kept, smoothing } => {
                let keep = options.keep_columns.get(t.prefix()).map_or(&[][..], Vec::as_slice);
                let factors = options.smooth.get(t.prefix()).map(Vec::as_slice);
                let layer_options = WeightOptions { keep, smoothing: factors, columns: None };
                let (layer, cb, scales, kept_bytes) = quantize_layer(checkpoint, &ctx, t, transposed, &layer_options)?;
                write(&mut writers, weight, as_u8(&cb))?;
                write(&mut writers, scb, &f32_bytes(&scales))?;
                write(&mut writers, format, &[if factors.is_some() { SMOOTHED_WEIGHT_FORMAT } else { 0 }])?;
                if let (Some(spec), Some((columns, values))) = (kept, kept_bytes) {
                    write(&mut writers, spec, &i32_bytes(&columns))?;
                    write(&mut writers, spec + 1, &values)?;
                }
                if let (Some(spec), Some(factors)) = (smoothing, factors) {
                    write(&mut writers, spec, &f32_bytes(factors))?;
                }
                report.layers.push(layer);
            }
        }
        checkpoint.release(t);
        done_bytes += t.num_bytes() as u64;
        progress(Progress { done_tensors: i + 1, total_tensors, done_bytes, total_bytes, tensor: &t.name });
    }
    for w in writers {
        w.finish()?;
    }
    report.bytes_before = total_bytes;
    report.bytes_after = specs.iter().map(|s| spec_bytes(s) as u64).sum();
    Ok(report)
}

/// The kept columns of a layer, ascending, and their values' bytes.
type KeptBytes = Option<(Vec<i32>, Vec<u8>)>;

/// Quantizes one linear weight (transposing a `[in, out]` one first) as
/// `options` say (kept columns, smoothing); returns its report line, `CB`,
/// `SCB` and the kept columns (none when `options.keep` is empty).
fn quantize_layer(
    checkpoint: &Checkpoint,
    ctx: &Context,
    t: &Tensor,
    transposed: bool,
    options: &WeightOptions<'_>,
) -> Result<(LayerReport, Vec<i8>, Vec<f32>, KeptBytes)> {
    let (out_features, in_features) = linear_shape(t, transposed);
    let mut cb = try_zeroed_vec::<i8>(out_features * in_features, "int8 weight")?;
    let mut scb = try_zeroed_vec::<f32>(out_features, "weight scales")?;
    let mut kept: KeptBytes = None;
    let mut quantize = |data: Data<'_>| {
        let weight = ctx.quantize_weight_with(data, out_features, in_features, None, options)?;
        weight.export(&mut cb, &mut scb)?;
        if !options.keep.is_empty() {
            let columns = weight.kept_columns().iter().map(|&c| c as i32).collect();
            kept = Some((columns, weight.kept_values_bytes()?));
        }
        drop(weight);
        Ok(quantization_error(data, &cb, &scb, in_features, options.smoothing))
    };
    let (max_error, relative_error) = checkpoint
        .with_floats(t, |data| {
            if !transposed {
                return quantize(data);
            }
            // One transposed copy of this tensor, in its own dtype.
            match data {
                Data::F32(v) => quantize(Data::F32(&transpose(v, t.shape[0], t.shape[1])?)),
                Data::F16(v) => quantize(Data::F16(&transpose(v, t.shape[0], t.shape[1])?)),
                Data::BF16(v) => quantize(Data::BF16(&transpose(v, t.shape[0], t.shape[1])?)),
            }
        })
        .map_err(|e| {
            Error::new(
                e.status(),
                format!("{}: tensor {:?}: {}", checkpoint.file_path(t).display(), t.name, e.message()),
            )
        })?;
    let layer = LayerReport {
        name: t.prefix().to_string(),
        dtype: t.dtype,
        out_features,
        in_features,
        bytes_before: t.num_bytes(),
        bytes_after: cb.len()
            + 4 * scb.len()
            + 1
            + kept.as_ref().map_or(0, |(c, v)| 4 * c.len() + v.len())
            + options.smoothing.map_or(0, |s| 4 * s.len()),
        max_error,
        relative_error,
    };
    Ok((layer, cb, scb, kept))
}

/// `(out_features, in_features)` of a 2-D linear weight stored `[out, in]`, or
/// `[in, out]` when `transposed`.
fn linear_shape(t: &Tensor, transposed: bool) -> (usize, usize) {
    if transposed {
        (t.shape[1], t.shape[0])
    } else {
        (t.shape[0], t.shape[1])
    }
}

/// `v` `[rows, cols]` transposed to `[cols, rows]`.
fn transpose<T: Copy + Default>(v: &[T], rows: usize, cols: usize) -> Result<Vec<T>> {
    let mut out = try_zeroed_vec::<T>(v.len(), "transposed weight")?;
    for (r, row) in v.chunks_exact(cols).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            out[c * rows + r] = x;
        }
    }
    Ok(out)
}

/// (max |w − deq|, ‖w − deq‖/‖w‖) of a quantized weight, in f64, with
/// `deq = cb · scb / 127`. Rows are widened to f32 a whole row at a time (the
/// `half` crate's slice conversion uses F16C where the processor has it).
fn quantization_error(w: Data<'_>, cb: &[i8], scb: &[f32], k: usize, smoothing: Option<&[f32]>) -> (f64, f64) {
    use half::slice::HalfFloatSliceExt;
    let (mut max, mut err2, mut norm2) = (0f64, 0f64, 0f64);
    let mut row = vec![0f32; k];
    for (r, (q, &s)) in cb.chunks_exact(k).zip(scb).enumerate() {
        let range = r * k..(r + 1) * k;
        match w {
            Data::F32(v) => row.copy_from_slice(&v[range]),
            Data::F16(v) => v[range].convert_to_f32_slice(&mut row),
            Data::BF16(v) => v[range].convert_to_f32_slice(&mut row),
        }
        let scale = s as f64 / 127.0;
        let (mut row_max, mut row_err2, mut row_norm2) = (0f64, 0f64, 0f64);
        for (c, (&v, &q)) in row.iter().zip(q).enumerate() {
            let v = v as f64;
            // A smoothed layer stores W·diag(s): its value of w is the dequantized one over s.
            let factor = smoothing.map_or(1.0, |s| s[c] as f64);
            let e = (v - q as f64 * scale / factor).abs();
            row_max = row_max.max(e);
            row_err2 += e * e;
            row_norm2 += v * v;
        }
        max = max.max(row_max);
        err2 += row_err2;
        norm2 += row_norm2;
    }
    (max, if norm2 > 0.0 { (err2 / norm2).sqrt() } else { 0.0 })
}

/// `model.safetensors.index.json` as transformers writes it, when there are shards.
fn write_index(dir: &Path, shards: &Shards) -> Result<()> {
    let Shards { specs, shard_of, names: shard_names } = shards;
    if shard_names.len() < 2 {
        return Ok(());
    }
    let weight_map: BTreeMap<&str, &str> =
        specs.iter().zip(shard_of).map(|(s, &o)| (s.name.as_str(), shard_names[o].as_str())).collect();
    let total: u64 = specs.iter().map(|s| spec_bytes(s) as u64).sum();
    // Parameters of the model, as transformers counts them: not the scales and markers.
    let parameters: u64 = specs
        .iter()
        .filter(|s| !s.name.ends_with(".SCB") && !s.name.ends_with(".weight_format"))
        .map(|s| element_count(&s.shape).unwrap_or(0) as u64)
        .sum();
    let index = json!({
        "metadata": { "total_parameters": parameters, "total_size": total },
        "weight_map": weight_map
    });
    let path = dir.join(INDEX_FILE);
    std::fs::write(&path, pyjson::to_config_text(&index)).map_err(|e| io_error(&path, "cannot write", e))
}

/// Weights in formats other than safetensors: copying them would carry a
/// 16/32-bit copy of the model into the 8-bit directory.
fn is_other_weight_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.starts_with("pytorch_model") && lower.ends_with(".bin"))
        || [".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf"].iter().any(|e| lower.ends_with(e))
}

/// Copies everything else (tokenizer, generation config, …), recursively.
fn copy_other_files(input: &Path, out: &Path, checkpoint: &Checkpoint, report: &mut ConvertReport) -> Result<()> {
    let sources: Vec<PathBuf> = checkpoint.files().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
    copy_dir(input, out, Path::new(""), &sources, report, 0)
}

fn copy_dir(
    from: &Path,
    to: &Path,
    rel: &Path,
    sources: &[PathBuf],
    report: &mut ConvertReport,
    depth: usize,
) -> Result<()> {
    const MAX_DEPTH: usize = 16;
    let dir = from.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| io_error(&dir, "cannot list", e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| io_error(&dir, "cannot list", e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let rel_path = rel.join(&name);
        let src = from.join(&rel_path);
        let name = name.to_string_lossy();
        let meta = std::fs::metadata(&src).map_err(|e| io_error(&src, "cannot stat", e))?;
        if meta.is_dir() {
            if depth >= MAX_DEPTH {
                return Err(Error::io(format!("{}: directories nested too deep", src.display())));
            }
            let dst = to.join(&rel_path);
            std::fs::create_dir_all(&dst).map_err(|e| io_error(&dst, "cannot create", e))?;
            copy_dir(from, to, &rel_path, sources, report, depth + 1)?;
            continue;
        }
        let at_top = rel.as_os_str().is_empty();
        let is_source = std::fs::canonicalize(&src).is_ok_and(|c| sources.contains(&c));
        if is_source || (at_top && (name == "config.json" || name == INDEX_FILE || name == MODEL_FILE)) {
            continue;
        }
        if is_other_weight_file(&name) {
            report.skipped_files.push(rel_path.display().to_string());
            continue;
        }
        let dst = to.join(&rel_path);
        std::fs::copy(&src, &dst).map_err(|e| io_error(&src, "cannot copy", e))?;
        report.copied_files.push(rel_path.display().to_string());
    }
    Ok(())
}
