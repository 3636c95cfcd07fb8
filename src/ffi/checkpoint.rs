//! Checkpoint handles: open safetensors files, shard indexes and model
//! directories; enumerate their tensors; load and save weights.

use std::ffi::{c_char, c_void, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{Checkpoint, TensorKind};

use super::weight::hand_out;
use super::{clear_out, guard, guard_void, llmint8_context, llmint8_weight, non_null, slice_out, write_out};

/// float32 tensor (same code as `LLMINT8_F32`).
pub const LLMINT8_TENSOR_F32: i32 = 0;
/// float16 tensor (same code as `LLMINT8_F16`).
pub const LLMINT8_TENSOR_F16: i32 = 1;
/// bfloat16 tensor (same code as `LLMINT8_BF16`).
pub const LLMINT8_TENSOR_BF16: i32 = 2;
/// int8 tensor.
pub const LLMINT8_TENSOR_I8: i32 = 3;
/// uint8 tensor.
pub const LLMINT8_TENSOR_U8: i32 = 4;
/// bool tensor (one byte each).
pub const LLMINT8_TENSOR_BOOL: i32 = 5;
/// int16 tensor.
pub const LLMINT8_TENSOR_I16: i32 = 6;
/// uint16 tensor.
pub const LLMINT8_TENSOR_U16: i32 = 7;
/// int32 tensor.
pub const LLMINT8_TENSOR_I32: i32 = 8;
/// uint32 tensor.
pub const LLMINT8_TENSOR_U32: i32 = 9;
/// int64 tensor.
pub const LLMINT8_TENSOR_I64: i32 = 10;
/// uint64 tensor.
pub const LLMINT8_TENSOR_U64: i32 = 11;
/// float64 tensor.
pub const LLMINT8_TENSOR_F64: i32 = 12;
/// float8 e4m3 tensor.
pub const LLMINT8_TENSOR_F8_E4M3: i32 = 13;
/// float8 e5m2 tensor.
pub const LLMINT8_TENSOR_F8_E5M2: i32 = 14;
/// float8 e8m0 (scales) tensor.
pub const LLMINT8_TENSOR_F8_E8M0: i32 = 15;
/// float8 e4m3 fnuz tensor.
pub const LLMINT8_TENSOR_F8_E4M3FNUZ: i32 = 16;
/// float8 e5m2 fnuz tensor.
pub const LLMINT8_TENSOR_F8_E5M2FNUZ: i32 = 17;
/// float4 (e2m1, two per byte) tensor.
pub const LLMINT8_TENSOR_F4: i32 = 18;
/// float6 e2m3 tensor.
pub const LLMINT8_TENSOR_F6_E2M3: i32 = 19;
/// float6 e3m2 tensor.
pub const LLMINT8_TENSOR_F6_E3M2: i32 = 20;
/// complex64 tensor.
pub const LLMINT8_TENSOR_C64: i32 = 21;

/// Anything else (norms, embeddings, `lm_head`, buffers): use it as it is.
pub const LLMINT8_KIND_OTHER: i32 = 0;
/// A 2-D float16/bfloat16/float32 `PREFIX.weight` of a linear layer, which
/// `llmint8_weight_load(ctx, ckpt, PREFIX, …)` quantizes, read as `[out, in]`
/// (`torch.nn.Linear`; GPT-2's `Conv1D` weights are stored `[in, out]` and must
/// be transposed first — `llmint8 convert` does it). Embeddings and the output
/// projection (`lm_head`, `embed_out`, names with `embed`, `wte`, `wpe`) are not
/// counted as linear layers, as transformers + bitsandbytes keep them 16-bit.
pub const LLMINT8_KIND_LINEAR_WEIGHT: i32 = 1;
/// A 2-D int8 `PREFIX.weight` with float32 `PREFIX.SCB`: a bitsandbytes 8-bit
/// weight, which `llmint8_weight_load` takes as it is.
pub const LLMINT8_KIND_INT8_WEIGHT: i32 = 2;
/// The `PREFIX.SCB` row scales of an int8 weight (loaded with it).
pub const LLMINT8_KIND_INT8_SCALES: i32 = 3;
/// The `PREFIX.weight_format` marker of an int8 weight (loaded with it).
pub const LLMINT8_KIND_WEIGHT_FORMAT: i32 = 4;
/// The `PREFIX.bias` of a linear or int8 weight (loaded with it).
pub const LLMINT8_KIND_BIAS: i32 = 5;
/// `PREFIX.llmint8_kept_columns` (int32 `[n_keep]`): the weight columns the
/// layer keeps in 16/32-bit, which `llmint8_weight_load` reads with
/// `PREFIX.llmint8_kept_values` (`llmint8 convert --keep-columns` and
/// `llmint8_weight_save` write them; transformers + bitsandbytes leave both
/// unused).
pub const LLMINT8_KIND_KEPT_COLUMNS: i32 = 6;
/// `PREFIX.llmint8_kept_values` (float16/bfloat16/float32 `[n_keep, out]`,
/// row `s` the weight's column `kept_columns[s]`; loaded with the weight).
pub const LLMINT8_KIND_KEPT_VALUES: i32 = 7;
/// `PREFIX.llmint8_smooth` (float32 `[in_features]`): the layer's smoothing
/// vector `s` (SmoothQuant's), which `llmint8_weight_load` applies (beside a
/// 16/32-bit weight) or takes as the one the int8 values were made with
/// (beside an int8 weight, whose `weight_format` is then 83, a value
/// bitsandbytes refuses).
pub const LLMINT8_KIND_SMOOTHING: i32 = 8;

/// Dimensions `llmint8_tensor_info.shape` holds.
pub const LLMINT8_MAX_DIMS: usize = 8;

/// An opened checkpoint: a safetensors file, or every shard of a shard index.
///
/// Opaque and immutable. Created by `llmint8_checkpoint_open`, owned by the
/// caller, freed with `llmint8_checkpoint_destroy`. The files are memory-mapped
/// read-only while it lives and must not be truncated meanwhile. A
/// `const llmint8_checkpoint *` may be used by many threads at once.
pub struct llmint8_checkpoint {
    inner: Checkpoint,
    /// NUL-terminated copies of the tensor names, indexed like the tensors.
    names: Vec<CString>,
    /// NUL-terminated file paths, indexed like `Checkpoint::files`.
    files: Vec<CString>,
}

/// What one tensor of a checkpoint is. Strings are owned by the checkpoint and
/// valid until it is destroyed.
#[repr(C)]
pub struct llmint8_tensor_info {
    /// The tensor name, e.g. "model.layers.0.mlp.up_proj.weight".
    pub name: *const c_char,
    /// The dtype as the file spells it, e.g. "F16" (static storage).
    pub dtype_name: *const c_char,
    /// Path of the file holding the tensor.
    pub file: *const c_char,
    /// `LLMINT8_TENSOR_*`.
    pub dtype: i32,
    /// `LLMINT8_KIND_*`.
    pub kind: i32,
    /// Number of dimensions (0 for a scalar). When above `LLMINT8_MAX_DIMS`,
    /// `shape` holds the first `LLMINT8_MAX_DIMS`.
    pub ndim: u32,
    /// Zero.
    pub reserved0: u32,
    /// Dimensions, outermost first; unused entries are 0.
    pub shape: [u64; LLMINT8_MAX_DIMS],
    /// Size of the tensor's data in bytes.
    pub num_bytes: u64,
    /// Zero; room for fields added in later minor versions.
    pub reserved: [u64; 4],
}

/// Reads a NUL-terminated C string argument.
///
/// # Safety
/// A non-NULL `p` must point to a NUL-terminated string.
unsafe fn c_string<'a>(p: *const c_char, name: &str) -> Result<&'a CStr> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated as the caller promises.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// # Safety
/// As for [`c_string`].
unsafe fn c_path<'a>(p: *const c_char, name: &str) -> Result<&'a Path> {
    // SAFETY: forwarded to the caller.
    let s = unsafe { c_string(p, name) }?;
    if s.is_empty() {
        return Err(Error::invalid(format!("{name} is empty")));
    }
    Ok(Path::new(OsStr::from_bytes(s.to_bytes())))
}

/// # Safety
/// As for [`c_string`].
unsafe fn c_text<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    // SAFETY: forwarded to the caller.
    let s = unsafe { c_string(p, name) }?;
    s.to_str().map_err(|_| Error::invalid(format!("{name} is not UTF-8")))
}

fn new_checkpoint(inner: Checkpoint) -> Result<llmint8_checkpoint> {
    // Names were checked free of NUL bytes when parsed; paths come from C strings
    // or directory listings and cannot hold one either.
    let to_c = |s: &[u8]| CString::new(s).map_err(|_| Error::format("a name holds a NUL byte"));
    let names = inner.tensors().iter().map(|t| to_c(t.name.as_bytes())).collect::<Result<_>>()?;
    let files = inner.files().map(|p| to_c(p.as_os_str().as_bytes())).collect::<Result<_>>()?;
    Ok(llmint8_checkpoint { inner, names, files })
}

/// Opens a checkpoint: `path` is a `.safetensors` file, a shard index
/// (`model.safetensors.index.json`, or any `*.json` in that format), or a model
/// directory holding `model.safetensors` or `model.safetensors.index.json`.
/// Every header is read and checked now (dtypes, sizes, byte ranges inside the
/// file, no overlaps), so later calls cannot read out of bounds; tensor data is
/// memory-mapped, not read.
///
/// On success writes a new checkpoint to `*out`; the caller owns it and must
/// eventually pass it to `llmint8_checkpoint_destroy`. On failure writes NULL to
/// `*out` (when not NULL) and returns, with a message naming the file and tensor:
/// - LLMINT8_ERR_INVALID_ARGUMENT: `path` or `out` NULL, or `path` empty;
/// - LLMINT8_ERR_NOT_FOUND: the path, or a shard the index names, does not exist;
///   a directory holds no model file;
/// - LLMINT8_ERR_IO: a file cannot be read or mapped;
/// - LLMINT8_ERR_FORMAT: a truncated file, a header length past the end, a header
///   that is not JSON, unknown dtypes, sizes that do not match dtype × shape,
///   offsets out of range, overlapping or leaving gaps, an index that names
///   tensors its shards do not hold, a tensor in two shards.
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `path` NULL or a NUL-terminated string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_checkpoint_open(path: *const c_char, out: *mut *mut llmint8_checkpoint) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let path = c_path(path, "path")?;
            let handle = new_checkpoint(Checkpoint::open(path)?)?;
            out.write_unaligned(Box::into_raw(Box::new(handle)));
        }
        Ok(())
    })
}

/// Destroys a checkpoint and unmaps its files. NULL is fine (does nothing).
/// Weights loaded from it stay valid (they hold their own copy). No other call
/// may use `ckpt` during or after this one; destroying twice is not allowed.
///
/// # Safety
/// `ckpt` must be NULL or a checkpoint from this library not yet destroyed.
#[no_mangle]
pub unsafe extern "C" fn llmint8_checkpoint_destroy(ckpt: *mut llmint8_checkpoint) {
    if ckpt.is_null() {
        return;
    }
    // SAFETY: ckpt came from Box::into_raw in llmint8_checkpoint_open and the
    // caller gives up every use of it.
    guard_void(|| drop(unsafe { Box::from_raw(ckpt) }));
}

/// Writes the number of tensors to `*count`.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL (nothing written).
/// Thread safety: may be called concurrently.
///
/// # Safety
/// `ckpt` NULL or live; `count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_checkpoint_num_tensors(ckpt: *const llmint8_checkpoint, count: *mut usize) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let ckpt = non_null(ckpt, "ckpt")?;
            write_out(count, ckpt.inner.tensors().len(), "count")
        }
    })
}

/// Describes tensor `index` (0 ≤ index < count; tensors are sorted by name) in
/// `*info`. The strings in it belong to the checkpoint.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT when a pointer is NULL, LLMINT8_ERR_NOT_FOUND
/// when `index` is out of range; `*info` is untouched then.
/// Thread safety: may be called concurrently.
///
/// # Safety
/// `ckpt` NULL or live; `info` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_checkpoint_tensor_info(
    ckpt: *const llmint8_checkpoint,
    index: usize,
    info: *mut llmint8_tensor_info,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let ckpt = non_null(ckpt, "ckpt")?;
            if info.is_null() {
                return Err(Error::invalid("info is NULL"));
            }
            let t = ckpt.inner.tensors().get(index).ok_or_else(|| {
                Error::not_found(format!(
                    "tensor index {index} is out of range: the checkpoint has {}",
                    ckpt.inner.tensors().len()
                ))
            })?;
            let mut shape = [0u64; LLMINT8_MAX_DIMS];
            for (s, &d) in shape.iter_mut().zip(&t.shape) {
                *s = d as u64;
            }
            let value = llmint8_tensor_info {
                name: ckpt.names[index].as_ptr(),
                dtype_name: t.dtype.c_name().as_ptr(),
                file: ckpt.files[t.file].as_ptr(),
                dtype: t.dtype.code(),
                kind: t.kind as i32,
                ndim: u32::try_from(t.shape.len()).unwrap_or(u32::MAX),
                reserved0: 0,
                shape,
                num_bytes: t.num_bytes() as u64,
                reserved: [0; 4],
            };
            write_out(info, value, "info")
        }
    })
}

/// Finds the tensor called `name` and writes its index to `*index`.
///
/// Returns LLMINT8_ERR_NOT_FOUND when there is none, LLMINT8_ERR_INVALID_ARGUMENT
/// when a pointer is NULL; `*index` is untouched then.
/// Thread safety: may be called concurrently.
///
/// # Safety
/// `ckpt` NULL or live; `name` NULL or NUL-terminated; `index` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_checkpoint_find(
    ckpt: *const llmint8_checkpoint,
    name: *const c_char,
    index: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let ckpt = non_null(ckpt, "ckpt")?;
            let name = c_text(name, "name")?;
            if index.is_null() {
                return Err(Error::invalid("index is NULL"));
            }
            let found = ckpt
                .inner
                .index_of(name)
                .ok_or_else(|| Error::not_found(format!("{}: no tensor {name:?}", ckpt.inner.path().display())))?;
            write_out(index, found, "index")
        }
    })
}

/// Copies the raw data of tensor `index` into `dst`: `num_bytes` bytes (see
/// `llmint8_tensor_info`), little-endian, row-major, exactly as stored — for the
/// tensors an engine uses as they are (embeddings, norms, biases).
///
/// `dst` is host memory of exactly `dst_bytes` bytes, any alignment.
/// Returns LLMINT8_ERR_INVALID_ARGUMENT for a NULL pointer, LLMINT8_ERR_NOT_FOUND
/// for an index out of range, LLMINT8_ERR_SHAPE when `dst_bytes` differs from the
/// tensor's size; nothing is written then.
/// Thread safety: may be called concurrently.
///
/// # Safety
/// `ckpt` NULL or live; `dst` NULL or writable for `dst_bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn llmint8_checkpoint_read(
    ckpt: *const llmint8_checkpoint,
    index: usize,
    dst: *mut c_void,
    dst_bytes: usize,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let ckpt = non_null(ckpt, "ckpt")?;
            let t = ckpt
                .inner
                .tensors()
                .get(index)
                .ok_or_else(|| Error::not_found(format!("tensor index {index} is out of range")))?;
            if dst_bytes != t.num_bytes() {
                return Err(Error::shape(format!(
                    "tensor {:?} has {} bytes, dst_bytes is {dst_bytes}",
                    t.name,
                    t.num_bytes()
                )));
            }
            let dst = slice_out(dst.cast::<u8>(), dst_bytes, "dst")?;
            dst.copy_from_slice(ckpt.inner.bytes(t));
            Ok(())
        }
    })
}

/// Loads the linear layer `prefix` (e.g. "model.layers.0.mlp.up_proj") from an
/// open checkpoint: `prefix.weight` `[out, in]` is quantized on `ctx` when it is
/// float16/bfloat16/float32 (as `llmint8_weight_quantize` would), or taken as it
/// is with `prefix.SCB` when it is int8 (bitsandbytes' 8-bit form; a
/// `prefix.weight_format` other than 0 is refused); `prefix.bias` is added when
/// present. When the checkpoint holds `prefix.llmint8_kept_columns` and
/// `prefix.llmint8_kept_values` (`LLMINT8_KIND_KEPT_COLUMNS`), the weight keeps
/// those columns in 16/32-bit as `llmint8_weight_quantize_keep` would: beside
/// an int8 weight their values are read, beside a 16/32-bit one the columns
/// are kept from the weight itself. The weight is read straight from the mapped file — no 16-bit copy is
/// made unless the tensor is misaligned in the file — and its pages are released
/// afterwards, so loading a model layer by layer does not grow resident memory.
///
/// On success writes a new weight to `*out` (free with `llmint8_weight_destroy`;
/// it does not depend on the checkpoint). On failure writes NULL to `*out` (when
/// not NULL) and returns:
/// - LLMINT8_ERR_INVALID_ARGUMENT: a NULL pointer, `prefix` not UTF-8, a NaN/Inf
///   in the weight, bias or kept column values, a negative or non-finite scale;
/// - LLMINT8_ERR_NOT_FOUND: no `prefix.weight`;
/// - LLMINT8_ERR_FORMAT: the weight is not 2-D or of another dtype; `SCB`
///   missing, not F32 or not `[out]`; a bias not `[out]` floats; one of the two
///   kept-column tensors without the other, the columns not int32 `[n_keep]`,
///   one outside `[0, in)` or listed twice, the values not
///   float16/bfloat16/float32 `[n_keep, out]`;
/// - LLMINT8_ERR_UNSUPPORTED: a `weight_format` other than row-major;
/// - LLMINT8_ERR_SHAPE, LLMINT8_ERR_OUT_OF_MEMORY: as for `llmint8_weight_quantize`.
///
/// Thread safety: may be called concurrently, on the same checkpoint and context.
///
/// # Safety
/// `ctx`, `ckpt` NULL or live; `prefix` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_load(
    ctx: *mut llmint8_context,
    ckpt: *const llmint8_checkpoint,
    prefix: *const c_char,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let ckpt = non_null(ckpt, "ckpt")?;
            let prefix = c_text(prefix, "prefix")?;
            hand_out(out, ctx.inner.load_weight(&ckpt.inner, prefix)?);
        }
        Ok(())
    })
}

/// Loads output rows `[row_begin, row_end)` of the linear layer `prefix` of
/// `ckpt` as a weight of `row_end - row_begin` output features: one rank's
/// shard of a column-parallel layer (out_features split across the ranks of a
/// tensor-parallel world; q/k/v, gate/up). As `llmint8_weight_load` in every
/// other respect (16/32-bit quantized here, or bitsandbytes' 8-bit form taken
/// as it is; bias and kept columns), but only those rows of the weight, `SCB`,
/// bias and kept column values are read from the file, and only their pages
/// are released after. Row scales are per output row, so the outputs of all
/// ranks' shards side by side are the unsharded layer's output bit for bit.
///
/// On success writes a new weight to `*out` (free with `llmint8_weight_destroy`;
/// it does not depend on the checkpoint). On failure writes NULL to `*out` (when
/// not NULL) and returns what `llmint8_weight_load` returns, and
/// LLMINT8_ERR_SHAPE when `row_begin >= row_end` or `row_end > out_features`.
///
/// Thread safety: may be called concurrently, on the same checkpoint and context.
///
/// # Safety
/// `ctx`, `ckpt` NULL or live; `prefix` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_load_rows(
    ctx: *mut llmint8_context,
    ckpt: *const llmint8_checkpoint,
    prefix: *const c_char,
    row_begin: usize,
    row_end: usize,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let ckpt = non_null(ckpt, "ckpt")?;
            let prefix = c_text(prefix, "prefix")?;
            hand_out(out, ctx.inner.load_weight_rows(&ckpt.inner, prefix, row_begin..row_end)?);
        }
        Ok(())
    })
}

/// Loads input columns `[col_begin, col_end)` of the linear layer `prefix` of
/// `ckpt` as a weight of `col_end - col_begin` in_features: one rank's shard
/// of a row-parallel layer (in_features split across the ranks; o_proj,
/// down_proj), for `llmint8_row_parallel_statistics` and
/// `llmint8_matmul_row_parallel`. A 16/32-bit weight is read row by row whole
/// (each row's absmax sets its scale, as `llmint8_weight_quantize_columns`)
/// and only the shard's columns quantized; a bitsandbytes 8-bit weight's
/// columns are taken with its whole `SCB`. The shard that starts at column 0
/// carries the layer's bias (the engine's SUM adds it once); kept columns
/// inside the shard are kept.
///
/// Ownership, `*out` and thread safety as for `llmint8_weight_load_rows`.
/// Returns what `llmint8_weight_load` returns, and LLMINT8_ERR_SHAPE when
/// `col_begin >= col_end` or `col_end > in_features`.
///
/// # Safety
/// `ctx`, `ckpt` NULL or live; `prefix` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_load_columns(
    ctx: *mut llmint8_context,
    ckpt: *const llmint8_checkpoint,
    prefix: *const c_char,
    col_begin: usize,
    col_end: usize,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let ckpt = non_null(ckpt, "ckpt")?;
            let prefix = c_text(prefix, "prefix")?;
            hand_out(out, ctx.inner.load_weight_columns(&ckpt.inner, prefix, col_begin..col_end)?);
        }
        Ok(())
    })
}

/// Opens `path` (as `llmint8_checkpoint_open`), loads the layer `prefix` (as
/// `llmint8_weight_load`) and closes it again. For one layer; to load many, open
/// the checkpoint once and call `llmint8_weight_load` for each.
///
/// Ownership, errors and thread safety as for those two functions.
///
/// # Safety
/// `ctx` NULL or live; `path` and `prefix` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_load_safetensors(
    ctx: *mut llmint8_context,
    path: *const c_char,
    prefix: *const c_char,
    out: *mut *mut llmint8_weight,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            clear_out(out)?;
            let ctx = non_null(ctx, "ctx")?;
            let path = c_path(path, "path")?;
            let prefix = c_text(prefix, "prefix")?;
            hand_out(out, ctx.inner.load_weight(&Checkpoint::open(path)?, prefix)?);
        }
        Ok(())
    })
}

/// Saves `w` to the safetensors file `path` in the form transformers +
/// bitsandbytes save a `Linear8bitLt`: `prefix.weight` (int8 `[out, in]`,
/// row-major), `prefix.SCB` (float32 `[out]`), `prefix.weight_format` (uint8 0)
/// and, when the weight has a bias, `prefix.bias` (float32 `[out]`); a weight
/// that keeps 16/32-bit columns (`llmint8_weight_quantize_keep`) adds
/// `prefix.llmint8_kept_columns` and `prefix.llmint8_kept_values`
/// (`LLMINT8_KIND_KEPT_COLUMNS`), which `llmint8_weight_load` reads back and
/// transformers + bitsandbytes leave unused. A weight on a CUDA device is
/// copied down first. The file is
/// written beside `path` under a temporary name and renamed when complete, so
/// `path` is either replaced whole or left as it was.
///
/// Returns LLMINT8_ERR_INVALID_ARGUMENT for a NULL pointer or an empty or
/// non-UTF-8 `prefix`, LLMINT8_ERR_IO (or _NOT_FOUND for a missing directory)
/// when the file cannot be written.
/// Thread safety: may be called concurrently (on different paths).
///
/// # Safety
/// `w` NULL or live; `path` and `prefix` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn llmint8_weight_save_safetensors(
    w: *const llmint8_weight,
    path: *const c_char,
    prefix: *const c_char,
) -> i32 {
    guard(|| {
        // SAFETY (this block): pointers are as the caller promises in `# Safety`.
        unsafe {
            let w = &non_null(w, "w")?.inner;
            let path = c_path(path, "path")?;
            let prefix = c_text(prefix, "prefix")?;
            crate::save_weight(w, path, prefix)
        }
    })
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<llmint8_tensor_info>() == 3 * 8 + 4 * 4 + 8 * 8 + 8 + 4 * 8);
const _: () = assert!(TensorKind::Bias as i32 == LLMINT8_KIND_BIAS);
const _: () = assert!(TensorKind::KeptColumns as i32 == LLMINT8_KIND_KEPT_COLUMNS);
const _: () = assert!(TensorKind::KeptValues as i32 == LLMINT8_KIND_KEPT_VALUES);
const _: () = assert!(TensorKind::Smoothing as i32 == LLMINT8_KIND_SMOOTHING);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TensorDtype;

    /// The header's constants (literals, for cbindgen) against the one dtype
    /// list (`io::format`), and that list against the safetensors crate's names.
    #[test]
    fn tensor_dtype_constants_match_the_dtype_list_and_the_crate() {
        let constants = [
            (LLMINT8_TENSOR_F32, "F32"),
            (LLMINT8_TENSOR_F16, "F16"),
            (LLMINT8_TENSOR_BF16, "BF16"),
            (LLMINT8_TENSOR_I8, "I8"),
            (LLMINT8_TENSOR_U8, "U8"),
            (LLMINT8_TENSOR_BOOL, "BOOL"),
            (LLMINT8_TENSOR_I16, "I16"),
            (LLMINT8_TENSOR_U16, "U16"),
            (LLMINT8_TENSOR_I32, "I32"),
            (LLMINT8_TENSOR_U32, "U32"),
            (LLMINT8_TENSOR_I64, "I64"),
            (LLMINT8_TENSOR_U64, "U64"),
            (LLMINT8_TENSOR_F64, "F64"),
            (LLMINT8_TENSOR_F8_E4M3, "F8_E4M3"),
            (LLMINT8_TENSOR_F8_E5M2, "F8_E5M2"),
            (LLMINT8_TENSOR_F8_E8M0, "F8_E8M0"),
            (LLMINT8_TENSOR_F8_E4M3FNUZ, "F8_E4M3FNUZ"),
            (LLMINT8_TENSOR_F8_E5M2FNUZ, "F8_E5M2FNUZ"),
            (LLMINT8_TENSOR_F4, "F4"),
            (LLMINT8_TENSOR_F6_E2M3, "F6_E2M3"),
            (LLMINT8_TENSOR_F6_E3M2, "F6_E3M2"),
            (LLMINT8_TENSOR_C64, "C64"),
        ];
        assert_eq!(constants.len(), TensorDtype::ALL.len());
        for (dtype, (code, name)) in TensorDtype::ALL.into_iter().zip(constants) {
            assert_eq!((dtype.code(), dtype.name()), (code, name));
            // The crate writes and reads the same name, and agrees on the size.
            let st = dtype.to_safetensors();
            assert_eq!(st.to_string(), name);
            assert_eq!(TensorDtype::from_safetensors(st), Some(dtype));
            assert_eq!(dtype.bits(), st.bitsize());
        }
        assert_eq!(LLMINT8_TENSOR_F32, crate::DType::F32 as i32);
        assert_eq!(LLMINT8_TENSOR_F16, crate::DType::F16 as i32);
        assert_eq!(LLMINT8_TENSOR_BF16, crate::DType::BF16 as i32);
    }
}
