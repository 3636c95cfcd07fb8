//! Checkpoints: safetensors files, shard indexes and model directories as
//! transformers writes them, in 16/32-bit or in bitsandbytes' 8-bit form
//! (`PREFIX.weight` int8 `[out, in]`, `PREFIX.SCB` float32 `[out]`,
//! `PREFIX.weight_format` uint8 0).
//!
//! Files are memory-mapped and never copied whole: a weight is quantized
//! straight from the mapping, whose pages are then released.

mod bytes;
pub(crate) mod format;
pub(crate) mod pyjson;
mod write;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use half::{bf16, f16};
use serde_json::Value;

pub use bytes::FileBytes;
pub use format::{TensorDtype, TensorSpec};
pub use write::SafetensorsWriter;

use crate::dtype::Data;
use crate::error::{Error, Result};

pub(crate) use bytes::io_error;
pub(crate) use write::{
    f32_bytes, i32_bytes, int8_layer_specs, kept_column_specs, pytorch_metadata, smoothing_spec, temp_path_beside,
};

/// The tensors of one linear layer (see [`Checkpoint::linear_layer`]).
#[derive(Debug)]
pub struct LinearLayer<'a> {
    /// `PREFIX.weight`, `[out_features, in_features]`.
    pub weight: &'a Tensor,
    pub out_features: usize,
    pub in_features: usize,
    /// `PREFIX.bias`, `[out_features]`, a float tensor (read with [`Checkpoint::with_floats`]).
    pub bias: Option<&'a Tensor>,
    /// bitsandbytes' `PREFIX.SCB` when the weight is int8; `None` for a 16/32-bit one.
    pub int8_scales: Option<Vec<f32>>,
    /// The weight columns the layer keeps in 16/32-bit, when the checkpoint
    /// holds them (see [`KEPT_COLUMNS`]).
    pub kept: Option<KeptColumnTensors<'a>>,
    /// `PREFIX.llmint8_smooth` (float32 `[in_features]`) when present: the
    /// smoothing vector `s` of the layer ([`SMOOTHING`]).
    pub smoothing: Option<Vec<f32>>,
}

/// A layer's kept weight columns in a checkpoint: `PREFIX.llmint8_kept_columns`
/// (int32 `[n_keep]`, the columns of `PREFIX.weight`) and
/// `PREFIX.llmint8_kept_values` (float16/bfloat16/float32 `[n_keep, out]`:
/// row `s` is weight column `columns[s]`). llmint8 writes them beside an
/// 8-bit weight (`llmint8 convert --keep-columns`, `save_weight` of a weight
/// that keeps columns); transformers + bitsandbytes load such a checkpoint,
/// reporting the two as unused.
#[derive(Debug)]
pub struct KeptColumnTensors<'a> {
    /// The values of `list`.
    pub columns: Vec<u32>,
    /// `PREFIX.llmint8_kept_columns`.
    pub list: &'a Tensor,
    /// `PREFIX.llmint8_kept_values` (read with [`Checkpoint::with_floats`]).
    pub values: &'a Tensor,
}

/// The last name component of a layer's kept column list ([`KeptColumnTensors`]).
pub const KEPT_COLUMNS: &str = "llmint8_kept_columns";
/// The last name component of a layer's kept column values ([`KeptColumnTensors`]).
pub const KEPT_VALUES: &str = "llmint8_kept_values";

/// The last name component of a layer's smoothing vector `s` (float32
/// `[in_features]`, SmoothQuant's): beside a 16/32-bit weight, `load_weight`
/// quantizes `W·diag(s)` and the weight divides its activations by `s`;
/// beside an int8 one, `PREFIX.weight` and `PREFIX.SCB` are those of
/// `W·diag(s)` and its `PREFIX.weight_format` is [`SMOOTHED_WEIGHT_FORMAT`].
pub const SMOOTHING: &str = "llmint8_smooth";

/// `PREFIX.weight_format` of a smoothed int8 layer (`"S"`): bitsandbytes'
/// `Linear8bitLt` state-dict hook refuses a weight format it does not know
/// ("Expected supported weight format - got 83") instead of multiplying
/// unsmoothed activations by the smoothed weight. transformers 5 no longer
/// runs that hook; a converted folder's config refuses it there
/// (`convert::SMOOTHED_CONFIG_MARKER`).
pub const SMOOTHED_WEIGHT_FORMAT: u8 = 83;

/// The single-file model name transformers writes.
pub const MODEL_FILE: &str = "model.safetensors";
/// The shard index transformers writes for a sharded model.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Index files above this size are refused rather than read into memory.
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// What a tensor is for, as far as a loader can tell from names, dtypes and shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum TensorKind {
    /// Anything else (norms, embeddings, `lm_head`, buffers): used as it is.
    Other = 0,
    /// A 2-D float16/bfloat16/float32 `PREFIX.weight` of a linear layer, which
    /// `load_weight(PREFIX)` quantizes, read as `[out, in]` (GPT-2's `Conv1D`
    /// stores `[in, out]`: see `convert::stored_transposed`). Embeddings and the
    /// output projection are not (see [`kept_in_16_bit`]).
    LinearWeight = 1,
    /// A 2-D int8 `PREFIX.weight` with its `PREFIX.SCB`: bitsandbytes' 8-bit form,
    /// which `load_weight(PREFIX)` takes as it is.
    Int8Weight = 2,
    /// The `PREFIX.SCB` row scales of an [`TensorKind::Int8Weight`].
    Int8Scales = 3,
    /// The `PREFIX.weight_format` marker of an [`TensorKind::Int8Weight`].
    WeightFormat = 4,
    /// The `PREFIX.bias` of a linear or int8 weight: `load_weight(PREFIX)` takes it.
    Bias = 5,
    /// The `PREFIX.llmint8_kept_columns` of a linear or int8 weight
    /// ([`KeptColumnTensors`]): `load_weight(PREFIX)` takes it.
    KeptColumns = 6,
    /// The `PREFIX.llmint8_kept_values` of a linear or int8 weight
    /// ([`KeptColumnTensors`]): `load_weight(PREFIX)` takes it.
    KeptValues = 7,
    /// The `PREFIX.llmint8_smooth` of a linear or int8 weight ([`SMOOTHING`]):
    /// `load_weight(PREFIX)` takes it.
    Smoothing = 8,
}

/// Whether the module `prefix` stays 16-bit when a model is quantized, as
/// transformers + bitsandbytes keep it: the output projection (`lm_head`, or
/// `embed_out`) and embeddings (any name component containing `embed`, and GPT-2's
/// `wte`/`wpe`) are not linear layers to quantize.
pub fn kept_in_16_bit(prefix: &str) -> bool {
    prefix.split('.').any(|c| c.contains("embed") || c == "lm_head" || c == "wte" || c == "wpe")
}

/// One tensor of a checkpoint.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    /// Index into [`Checkpoint::files`].
    pub file: usize,
    /// Byte range in that file, checked to be in bounds.
    bytes: std::ops::Range<usize>,
}

impl Tensor {
    pub fn num_bytes(&self) -> usize {
        self.bytes.len()
    }
    /// The byte range, within the tensor, of rows `rows` of its first dimension.
    fn row_bytes(&self, rows: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        let per_row = self.bytes.len() / self.shape.first().copied().unwrap_or(1).max(1);
        rows.start * per_row..rows.end * per_row
    }
    /// The module name: the tensor name without its last component
    /// (`model.layers.0.mlp.up_proj` for `model.layers.0.mlp.up_proj.weight`).
    pub fn prefix(&self) -> &str {
        self.name.rsplit_once('.').map_or("", |(p, _)| p)
    }
}

struct File {
    path: PathBuf,
    bytes: FileBytes,
    metadata: Vec<(String, String)>,
}

/// An opened checkpoint: one safetensors file, or every shard of an index.
/// Immutable, so it can be shared by threads.
pub struct Checkpoint {
    path: PathBuf,
    files: Vec<File>,
    /// Sorted by name.
    tensors: Vec<Tensor>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpoint({}, {} files, {} tensors)", self.path.display(), self.files.len(), self.tensors.len())
    }
}

fn format_error(message: impl Into<String>) -> Error {
    Error::format(message)
}

impl Checkpoint {
    /// Opens `path`: a `.safetensors` file, a shard index (`*.json`), or a model
    /// directory holding `model.safetensors` or `model.safetensors.index.json`.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| io_error(path, "cannot open", e))?;
        if meta.is_dir() {
            let single = path.join(MODEL_FILE);
            let index = path.join(INDEX_FILE);
            if single.is_file() {
                return Checkpoint::open_files(path, vec![single], None);
            }
            if index.is_file() {
                return Checkpoint::open_index(&index);
            }
            return Err(Error::not_found(format!(
                "{}: a model directory needs {MODEL_FILE} or {INDEX_FILE}; found neither",
                path.display()
            )));
        }
        if path.extension().is_some_and(|e| e == "json") {
            return Checkpoint::open_index(path);
        }
        Checkpoint::open_files(path, vec![path.to_path_buf()], None)
    }

    /// A checkpoint of one safetensors file already in memory (tests, fuzzing);
    /// `name` stands for its path in messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Checkpoint> {
        let file = Checkpoint::parse_file(PathBuf::from(name), FileBytes::owned(bytes))?;
        Checkpoint::assemble(PathBuf::from(name), vec![file], None)
    }

    fn parse_file(path: PathBuf, bytes: FileBytes) -> Result<(File, Vec<format::TensorEntry>)> {
        let header = format::parse(bytes.as_slice(), &path.display().to_string())?;
        Ok((File { path, bytes, metadata: header.metadata }, header.tensors))
    }

    fn open_files(
        path: &Path,
        files: Vec<PathBuf>,
        index: Option<(&Path, HashMap<String, String>)>,
    ) -> Result<Checkpoint> {
        let mut parsed = Vec::with_capacity(files.len());
        for f in files {
            let bytes = FileBytes::map(&f).map_err(|e| match &index {
                Some((index_path, _)) => Error::new(
                    e.status(),
                    format!("shard index {} names a shard that cannot be read: {}", index_path.display(), e.message()),
                ),
                None => e,
            })?;
            parsed.push(Checkpoint::parse_file(f, bytes)?);
        }
        Checkpoint::assemble(path.to_path_buf(), parsed, index)
    }

    fn open_index(index_path: &Path) -> Result<Checkpoint> {
        let meta = std::fs::metadata(index_path).map_err(|e| io_error(index_path, "cannot open", e))?;
        if meta.len() > MAX_INDEX_BYTES {
            return Err(format_error(format!(
                "{}: {} bytes is too large for a shard index",
                index_path.display(),
                meta.len()
            )));
        }
        let text = std::fs::read(index_path).map_err(|e| io_error(index_path, "cannot read", e))?;
        let bad = |what: String| format_error(format!("{}: {what}", index_path.display()));
        let json: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not a JSON shard index: {e}")))?;
        let Some(Value::Object(map)) = json.get("weight_map") else {
            return Err(bad("no \"weight_map\" object".into()));
        };
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut weight_map = HashMap::new();
        let mut shard_names: Vec<String> = Vec::new();
        for (tensor, shard) in map {
            let Value::String(shard) = shard else {
                return Err(bad(format!("weight_map[{tensor:?}] is not a file name")));
            };
            let p = Path::new(shard);
            let plain = !shard.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return Err(bad(format!(
                    "weight_map[{tensor:?}] = {shard:?}: a shard must be a relative path inside the model directory"
                )));
            }
            if !shard_names.contains(shard) {
                shard_names.push(shard.clone());
            }
            weight_map.insert(tensor.clone(), shard.clone());
        }
        shard_names.sort();
        let files = shard_names.iter().map(|s| dir.join(s)).collect();
        Checkpoint::open_files(index_path, files, Some((index_path, weight_map)))
    }

    fn assemble(
        path: PathBuf,
        parsed: Vec<(File, Vec<format::TensorEntry>)>,
        index: Option<(&Path, HashMap<String, String>)>,
    ) -> Result<Checkpoint> {
        let mut files = Vec::with_capacity(parsed.len());
        let mut tensors = Vec::new();
        for (i, (file, entries)) in parsed.into_iter().enumerate() {
            for e in entries {
                tensors.push(Tensor {
                    name: e.name,
                    dtype: e.dtype,
                    shape: e.shape,
                    kind: TensorKind::Other,
                    file: i,
                    bytes: e.bytes,
                });
            }
            files.push(file);
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(format_error(format!(
                "tensor {:?} is in both {} and {}",
                pair[0].name,
                files[pair[0].file].path.display(),
                files[pair[1].file].path.display()
            )));
        }
        let by_name: HashMap<String, usize> = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        if let Some((index_path, weight_map)) = index {
            // Every tensor the index names must be in the shard it names.
            let mut names: Vec<_> = weight_map.iter().collect();
            names.sort();
            for (tensor, shard) in names {
                let found = by_name.get(tensor).map(|&i| &files[tensors[i].file].path);
                if found.is_none_or(|p| !p.ends_with(shard)) {
                    return Err(Error::format(format!(
                        "{}: the index puts tensor {tensor:?} in {shard}, which does not hold it",
                        index_path.display()
                    )));
                }
            }
        }
        let mut checkpoint = Checkpoint { path, files, tensors, by_name };
        checkpoint.classify();
        Ok(checkpoint)
    }

    /// Sets each tensor's [`TensorKind`] from the names around it.
    fn classify(&mut self) {
        let kinds: Vec<TensorKind> = self.tensors.iter().map(|t| self.kind_of(t)).collect();
        for (t, k) in self.tensors.iter_mut().zip(kinds) {
            t.kind = k;
        }
    }

    fn kind_of(&self, t: &Tensor) -> TensorKind {
        let Some((prefix, last)) = t.name.rsplit_once('.') else { return TensorKind::Other };
        let weight = self.tensor(&format!("{prefix}.weight"));
        let is_int8 = |w: &Tensor| {
            w.dtype == TensorDtype::I8
                && w.shape.len() == 2
                && self.tensor(&format!("{prefix}.SCB")).is_some_and(|s| s.dtype == TensorDtype::F32)
        };
        let is_linear = |w: &Tensor| {
            matches!(w.dtype, TensorDtype::F16 | TensorDtype::BF16 | TensorDtype::F32)
                && w.shape.len() == 2
                && !kept_in_16_bit(prefix)
        };
        match last {
            "weight" if is_int8(t) => TensorKind::Int8Weight,
            "weight" if is_linear(t) => TensorKind::LinearWeight,
            "SCB" if weight.is_some_and(is_int8) => TensorKind::Int8Scales,
            "weight_format" if weight.is_some_and(is_int8) => TensorKind::WeightFormat,
            "bias" if weight.is_some_and(|w| is_int8(w) || is_linear(w)) => TensorKind::Bias,
            KEPT_COLUMNS if weight.is_some_and(|w| is_int8(w) || is_linear(w)) => TensorKind::KeptColumns,
            KEPT_VALUES if weight.is_some_and(|w| is_int8(w) || is_linear(w)) => TensorKind::KeptValues,
            SMOOTHING if weight.is_some_and(|w| is_int8(w) || is_linear(w)) => TensorKind::Smoothing,
            _ => TensorKind::Other,
        }
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// All tensors, sorted by name.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    /// Paths of the safetensors files, in the order [`Tensor::file`] indexes.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }
    pub fn file_path(&self, t: &Tensor) -> &Path {
        &self.files[t.file].path
    }
    /// `__metadata__` of the file holding `t`.
    pub fn metadata(&self, t: &Tensor) -> &[(String, String)] {
        &self.files[t.file].metadata
    }

    /// The raw little-endian bytes of `t`.
    pub fn bytes(&self, t: &Tensor) -> &[u8] {
        &self.files[t.file].bytes.as_slice()[t.bytes.clone()]
    }

    /// Lets the pages of `t` leave resident memory (see [`FileBytes::release`]).
    pub fn release(&self, t: &Tensor) {
        self.files[t.file].bytes.release(t.bytes.clone());
    }

    /// A tensor by name, or `NotFound` naming the checkpoint.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.tensor(name).ok_or_else(|| Error::not_found(format!("{}: no tensor {name:?}", self.path.display())))
    }

    fn tensor_error(&self, t: &Tensor, what: impl std::fmt::Display) -> Error {
        format_error(format!("{}: tensor {:?}: {what}", self.file_path(t).display(), t.name))
    }

    /// Runs `f` on the elements of a float16/bfloat16/float32 tensor: borrowed
    /// from the mapping when aligned, else from a copy of this one tensor.
    pub fn with_floats<R>(&self, t: &Tensor, f: impl FnOnce(Data<'_>) -> Result<R>) -> Result<R> {
        self.with_float_bytes(t, self.bytes(t), f)
    }

    /// [`Self::with_floats`] on rows `rows` of `t` (its first dimension) only:
    /// the other rows' bytes are not read (a tensor-parallel shard's part).
    /// `rows` must lie inside `t`'s first dimension (the caller checks).
    pub fn with_float_rows<R>(
        &self,
        t: &Tensor,
        rows: &std::ops::Range<usize>,
        f: impl FnOnce(Data<'_>) -> Result<R>,
    ) -> Result<R> {
        let range = t.row_bytes(rows);
        self.with_float_bytes(t, &self.bytes(t)[range], f)
    }

    /// The int8 values of rows `rows` of `t` (as [`Self::with_float_rows`]).
    pub fn int8_rows(&self, t: &Tensor, rows: &std::ops::Range<usize>) -> &[i8] {
        as_i8(&self.bytes(t)[t.row_bytes(rows)])
    }

    /// [`Self::release`] for rows `rows` of `t` only.
    pub fn release_rows(&self, t: &Tensor, rows: &std::ops::Range<usize>) {
        let range = t.row_bytes(rows);
        self.files[t.file].bytes.release(t.bytes.start + range.start..t.bytes.start + range.end);
    }

    fn with_float_bytes<R>(&self, t: &Tensor, bytes: &[u8], f: impl FnOnce(Data<'_>) -> Result<R>) -> Result<R> {
        match t.dtype {
            TensorDtype::F32 => with_elements(bytes, f32::from_le_bytes, |s| f(Data::F32(s))),
            TensorDtype::F16 => with_elements(bytes, |b| f16::from_bits(u16::from_le_bytes(b)), |s| f(Data::F16(s))),
            TensorDtype::BF16 => with_elements(bytes, |b| bf16::from_bits(u16::from_le_bytes(b)), |s| f(Data::BF16(s))),
            other => Err(self.tensor_error(t, format!("dtype {} is not float16, bfloat16 or float32", other.name()))),
        }
    }

    /// The tensors of the linear layer `prefix`, checked against each other:
    /// `prefix.weight` 2-D `[out, in]` of int8 (then with `prefix.SCB` and
    /// a row-major `prefix.weight_format`) or float16/bfloat16/float32,
    /// `prefix.bias` `[out]` when present, and the kept columns when present
    /// (both tensors of [`KeptColumnTensors`], or neither), `prefix.llmint8_smooth`
    /// float32 `[in_features]` when present (an int8 weight's
    /// `weight_format` says whether it is smoothed).
    pub fn linear_layer(&self, prefix: &str) -> Result<LinearLayer<'_>> {
        let w = self.require(&format!("{prefix}.weight")).map_err(|e| {
            let hint =
                if prefix.ends_with(".weight") { " (the prefix names the layer, without \".weight\")" } else { "" };
            Error::new(e.status(), format!("{}{hint}", e.message()))
        })?;
        let &[out_features, in_features] = w.shape.as_slice() else {
            return Err(
                self.tensor_error(w, format!("a linear weight is 2-D [out, in], this one has shape {:?}", w.shape))
            );
        };
        let bias = self.tensor(&format!("{prefix}.bias"));
        if let Some(b) = bias {
            if b.shape != [out_features] {
                return Err(self.tensor_error(b, format!("shape {:?}, expected [{out_features}]", b.shape)));
            }
        }
        let smoothing = self.smoothing(prefix, in_features)?;
        let int8_scales = match w.dtype {
            TensorDtype::I8 => {
                let scb = self.int8_scales(prefix, w, out_features)?;
                self.check_weight_format(prefix, w, smoothing.is_some())?;
                Some(scb)
            }
            TensorDtype::F16 | TensorDtype::BF16 | TensorDtype::F32 => None,
            other => {
                return Err(self.tensor_error(
                    w,
                    format!("dtype {} cannot be a linear weight (int8, float16, bfloat16 or float32)", other.name()),
                ))
            }
        };
        let kept = self.kept_columns(prefix, out_features, in_features)?;
        Ok(LinearLayer { weight: w, out_features, in_features, bias, int8_scales, kept, smoothing })
    }

    /// A layer's smoothing vector `prefix.llmint8_smooth`, checked for dtype
    /// and shape (its values are checked when the weight is made).
    fn smoothing(&self, prefix: &str, in_features: usize) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.tensor(&format!("{prefix}.{SMOOTHING}")) else { return Ok(None) };
        if t.dtype != TensorDtype::F32 || t.shape != [in_features] {
            return Err(self.tensor_error(
                t,
                format!("a smoothing vector is F32 [{in_features}], this one is {} {:?}", t.dtype.name(), t.shape),
            ));
        }
        let bytes = self.bytes(t).as_chunks::<4>().0;
        Ok(Some(bytes.iter().map(|b| f32::from_le_bytes(*b)).collect()))
    }

    /// A layer's [`KeptColumnTensors`], checked for dtype and shape, the
    /// columns for range and repeats.
    fn kept_columns(
        &self,
        prefix: &str,
        out_features: usize,
        in_features: usize,
    ) -> Result<Option<KeptColumnTensors<'_>>> {
        let columns = self.tensor(&format!("{prefix}.{KEPT_COLUMNS}"));
        let values = self.tensor(&format!("{prefix}.{KEPT_VALUES}"));
        let (columns, values) = match (columns, values) {
            (None, None) => return Ok(None),
            (Some(c), Some(v)) => (c, v),
            (Some(t), None) | (None, Some(t)) => {
                return Err(self.tensor_error(
                    t,
                    format!("kept weight columns need both {prefix}.{KEPT_COLUMNS} and {prefix}.{KEPT_VALUES}"),
                ))
            }
        };
        let &[n_keep] = columns.shape.as_slice() else {
            return Err(self.tensor_error(columns, format!("shape {:?}, expected [n_keep]", columns.shape)));
        };
        if columns.dtype != TensorDtype::I32 {
            return Err(self.tensor_error(columns, format!("dtype {}, expected I32", columns.dtype.name())));
        }
        if values.shape != [n_keep, out_features] {
            return Err(
                self.tensor_error(values, format!("shape {:?}, expected [{n_keep}, {out_features}]", values.shape))
            );
        }
        if !matches!(values.dtype, TensorDtype::F16 | TensorDtype::BF16 | TensorDtype::F32) {
            return Err(self.tensor_error(values, format!("dtype {}, expected F16, BF16 or F32", values.dtype.name())));
        }
        let mut list = Vec::with_capacity(n_keep);
        for b in self.bytes(columns).as_chunks::<4>().0 {
            let c = i32::from_le_bytes(*b);
            let c = u32::try_from(c).ok().filter(|&c| (c as usize) < in_features).ok_or_else(|| {
                self.tensor_error(columns, format!("column {c} is outside the {in_features} in_features"))
            })?;
            list.push(c);
        }
        let mut sorted = list.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
            return Err(self.tensor_error(columns, format!("column {} is listed twice", pair[0])));
        }
        Ok(Some(KeptColumnTensors { columns: list, list: columns, values }))
    }

    /// Adds the file and tensor to an error from the core that does not know them.
    pub fn locate(&self, e: Error, t: &Tensor) -> Error {
        let path = self.file_path(t).display().to_string();
        if e.message().starts_with(&path) {
            return e;
        }
        Error::new(e.status(), format!("{path}: tensor {:?}: {}", t.name, e.message()))
    }

    /// `prefix.SCB` of an int8 weight: float32 `[out_features]`.
    fn int8_scales(&self, prefix: &str, w: &Tensor, out_features: usize) -> Result<Vec<f32>> {
        let name = format!("{prefix}.SCB");
        let Some(scb) = self.tensor(&name) else {
            return Err(
                self.tensor_error(w, format!("an int8 weight needs its row scales {name:?}, which are missing"))
            );
        };
        if scb.dtype != TensorDtype::F32 {
            return Err(self.tensor_error(scb, format!("row scales must be F32, not {}", scb.dtype.name())));
        }
        if scb.shape != [out_features] {
            return Err(self.tensor_error(scb, format!("shape {:?}, expected [{out_features}]", scb.shape)));
        }
        Ok(self.bytes(scb).as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect())
    }

    /// `prefix.weight_format`, when present, must say row-major (0): the only
    /// layout transformers + bitsandbytes save.
    fn check_weight_format(&self, prefix: &str, w: &Tensor, smoothed: bool) -> Result<()> {
        let Some(f) = self.tensor(&format!("{prefix}.weight_format")) else {
            if smoothed {
                return Err(self.tensor_error(
                    w,
                    format!("a smoothed int8 weight needs {prefix}.weight_format = {SMOOTHED_WEIGHT_FORMAT}, which is missing"),
                ));
            }
            return Ok(());
        };
        let value = match (f.dtype, self.bytes(f)) {
            (TensorDtype::U8 | TensorDtype::I8, [v]) => *v,
            (TensorDtype::I64, &[b0, b1, b2, b3, b4, b5, b6, b7]) => {
                u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]) as u8
            }
            _ => return Err(self.tensor_error(f, format!("expected one uint8, got {} {:?}", f.dtype.name(), f.shape))),
        };
        match (value, smoothed) {
            (0, false) | (SMOOTHED_WEIGHT_FORMAT, true) => return Ok(()),
            (SMOOTHED_WEIGHT_FORMAT, false) => {
                return Err(self.tensor_error(
                    f,
                    format!("weight_format {value} marks a smoothed weight, but {prefix}.{SMOOTHING} is missing"),
                ))
            }
            (0, true) => {
                return Err(self.tensor_error(
                    f,
                    format!(
                        "{prefix}.{SMOOTHING} is present but weight_format is 0: a smoothed int8 weight is marked {SMOOTHED_WEIGHT_FORMAT}"
                    ),
                ))
            }
            _ => {}
        }
        Err(Error::unsupported(format!(
            "{}: tensor {:?}: weight_format {value} is a GPU-specific tiled layout of old bitsandbytes; only 0 (row-major) is read",
            self.file_path(w).display(),
            f.name
        )))
    }
}

/// Views int8 values as bytes (same size, every pattern valid).
pub(crate) fn as_u8(values: &[i8]) -> &[u8] {
    // SAFETY: u8 and i8 have identical size and alignment and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, values.len()) }
}

/// Views bytes as `i8` (same size, every pattern valid).
fn as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have identical size and alignment and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const i8, bytes.len()) }
}

/// Runs `f` on `bytes` as a slice of `T`: reinterpreted in place when aligned on
/// a little-endian machine, else decoded into a copy.
fn with_elements<T: Copy, const N: usize, R>(
    bytes: &[u8],
    decode: impl Fn([u8; N]) -> T,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    debug_assert_eq!(std::mem::size_of::<T>(), N);
    if cfg!(target_endian = "little") {
        // SAFETY: T is f32, f16 or bf16 here: plain bit patterns, all valid.
        let (head, body, tail) = unsafe { bytes.align_to::<T>() };
        if head.is_empty() && tail.is_empty() {
            return f(body);
        }
    }
    let mut copy = Vec::new();
    copy.try_reserve_exact(bytes.len() / N)
        .map_err(|_| Error::out_of_memory(format!("cannot copy an unaligned tensor of {} bytes", bytes.len())))?;
    copy.extend(bytes.as_chunks::<N>().0.iter().map(|c| decode(*c)));
    f(&copy)
}
