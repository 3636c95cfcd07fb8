//! The safetensors container: an 8-byte little-endian header length, a JSON
//! header naming each tensor's dtype, shape and byte range, then the data.
//!
//! The `safetensors` crate reads and writes it: its verdict is the one on
//! whether a file is valid (known dtypes, sizes that match dtype × shape
//! without overflow, ranges that tile the data section exactly), so every
//! later access is in bounds. What this file adds is what the crate lacks:
//! the dtype codes of the C ABI, byte ranges in file coordinates, names
//! without NUL (they cross the C ABI), and — for a file the crate refuses — a
//! message naming the tensor and the rule it breaks.

use std::collections::HashMap;
use std::ffi::CStr;
use std::ops::Range;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};

/// The crate refuses headers above 100 MB; the diagnosis says so.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The dtype list, once: each name is the crate's `Dtype` of the same name
/// (the build fails on a name it lacks) and the code its `LLMINT8_TENSOR_*`
/// constant in the C ABI (fixed by ABI version 1; ffi checks the constants).
macro_rules! tensor_dtypes {
    ($($name:ident = $code:literal,)*) => {
        /// Element types of a safetensors file; the discriminant is the C ABI code.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum TensorDtype {
            $($name = $code,)*
        }

        impl TensorDtype {
            /// Every dtype, by code.
            pub const ALL: [TensorDtype; [$($code),*].len()] = [$(TensorDtype::$name,)*];

            /// The crate's dtype.
            pub fn to_safetensors(self) -> Dtype {
                match self {
                    $(TensorDtype::$name => Dtype::$name,)*
                }
            }

            /// Ours for the crate's, `None` for one a later crate version added.
            pub fn from_safetensors(dtype: Dtype) -> Option<TensorDtype> {
                match dtype {
                    $(Dtype::$name => Some(TensorDtype::$name),)*
                    _ => None,
                }
            }

            /// The name in a safetensors header, e.g. `"F16"`, as a C string.
            pub fn c_name(self) -> &'static CStr {
                match self {
                    $(TensorDtype::$name => match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(name) => name,
                        Err(_) => c"",
                    },)*
                }
            }
        }
    };
}

tensor_dtypes! {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    I8 = 3,
    U8 = 4,
    BOOL = 5,
    I16 = 6,
    U16 = 7,
    I32 = 8,
    U32 = 9,
    I64 = 10,
    U64 = 11,
    F64 = 12,
    F8_E4M3 = 13,
    F8_E5M2 = 14,
    F8_E8M0 = 15,
    F8_E4M3FNUZ = 16,
    F8_E5M2FNUZ = 17,
    F4 = 18,
    F6_E2M3 = 19,
    F6_E3M2 = 20,
    C64 = 21,
}

impl From<crate::dtype::DType> for TensorDtype {
    fn from(d: crate::dtype::DType) -> TensorDtype {
        match d {
            crate::dtype::DType::F32 => TensorDtype::F32,
            crate::dtype::DType::F16 => TensorDtype::F16,
            crate::dtype::DType::BF16 => TensorDtype::BF16,
        }
    }
}

impl TensorDtype {
    /// The name in a safetensors header, e.g. `"F16"`.
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or_default()
    }

    pub fn from_name(name: &str) -> Option<TensorDtype> {
        TensorDtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bits per element.
    pub fn bits(self) -> usize {
        self.to_safetensors().bitsize()
    }

    /// The C ABI code (`LLMINT8_TENSOR_*`). The three float codes equal the
    /// `LLMINT8_F32/_F16/_BF16` element codes.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// One tensor of a parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
    /// Byte range within the whole file (header included), checked to lie inside it.
    pub bytes: Range<usize>,
}

/// A parsed, validated header.
#[derive(Clone, Debug, Default)]
pub struct Header {
    /// In file order.
    pub tensors: Vec<TensorEntry>,
    /// `__metadata__`, sorted by key.
    pub metadata: Vec<(String, String)>,
}

fn format_error(file: &str, message: impl std::fmt::Display) -> Error {
    Error::format(format!("{file}: {message}"))
}

/// Elements of `shape`, or `None` when the product overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Bytes of `shape` elements of `dtype`, or `None` when it overflows or is not
/// a whole number of bytes.
pub fn byte_count(dtype: TensorDtype, shape: &[usize]) -> Option<usize> {
    let bits = element_count(shape)?.checked_mul(dtype.bits())?;
    bits.is_multiple_of(8).then_some(bits / 8)
}

/// Parses and validates the header of the safetensors file `bytes` with the
/// crate; `file` names it in messages. Every tensor's byte range is then
/// inside `bytes`.
pub fn parse(bytes: &[u8], file: &str) -> Result<Header> {
    let (n, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| diagnose(bytes, file, &e))?;
    let data_start = 8 + n;
    let mut tensors = Vec::with_capacity(metadata.tensors().len());
    for (name, info) in metadata.tensors() {
        let bad = |what: &str| format_error(file, format!("tensor {name:?}: {what}"));
        if name.contains('\0') {
            return Err(bad("the name holds a NUL byte"));
        }
        let dtype = TensorDtype::from_safetensors(info.dtype)
            .ok_or_else(|| bad(&format!("dtype {} is not one this version of llmint8 knows", info.dtype)))?;
        let (begin, end) = info.data_offsets;
        tensors.push(TensorEntry {
            name,
            dtype,
            shape: info.shape.clone(),
            bytes: data_start + begin..data_start + end,
        });
    }
    tensors.sort_by(|a, b| (a.bytes.start, a.bytes.end, &a.name).cmp(&(b.bytes.start, b.bytes.end, &b.name)));
    let mut metadata: Vec<(String, String)> = metadata.metadata().clone().unwrap_or_default().into_iter().collect();
    metadata.sort();
    Ok(Header { tensors, metadata })
}

/// The error for a file the crate refused (`refusal`): the first rule it
/// breaks, found by reading the header again field by field, naming the
/// tensor; the crate's own words if none is found.
fn diagnose(bytes: &[u8], file: &str, refusal: &safetensors::SafeTensorError) -> Error {
    match explain(bytes, file) {
        Err(e) => e,
        Ok(()) => format_error(file, format!("not a valid safetensors file: {refusal}")),
    }
}

/// Reads the header field by field and returns the first rule it breaks, in
/// the order a reader meets them.
fn explain(bytes: &[u8], file: &str) -> Result<()> {
    let len = bytes.len();
    let Some(prefix) = bytes.first_chunk::<8>() else {
        return Err(format_error(
            file,
            format!("{len} bytes is too short for a safetensors file (it starts with an 8-byte header length)"),
        ));
    };
    let n = u64::from_le_bytes(*prefix);
    if n > MAX_HEADER_BYTES {
        // Any other kind of file lands here (its first 8 bytes as a length).
        return Err(format_error(
            file,
            format!("not a safetensors file: its first 8 bytes give a header length of {n}, which exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    let n = n as usize; // <= MAX_HEADER_BYTES, fits
    let data_start = 8 + n;
    if data_start > len {
        return Err(format_error(
            file,
            format!("not a safetensors file, or a truncated one: header length {n} runs past the end of the file ({len} bytes)"),
        ));
    }
    let text = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|e| format_error(file, format!("header is not UTF-8: {e}")))?;
    let json: Value = serde_json::from_str(text).map_err(|e| format_error(file, format!("header is not JSON: {e}")))?;
    let Value::Object(map) = json else {
        return Err(format_error(file, "header is not a JSON object"));
    };

    let mut tensors = Vec::new();
    for (name, value) in map {
        if name == "__metadata__" {
            parse_metadata(value, file)?;
            continue;
        }
        tensors.push(parse_tensor(name, value, data_start, file)?);
    }
    check_layout(&mut tensors, data_start, len, file)
}

fn parse_metadata(value: Value, file: &str) -> Result<()> {
    let Value::Object(map) = value else {
        return Err(format_error(file, "__metadata__ is not an object of strings"));
    };
    match map.into_iter().find(|(_, v)| !v.is_string()) {
        Some((k, _)) => Err(format_error(file, format!("__metadata__[{k:?}] is not a string"))),
        None => Ok(()),
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|u| usize::try_from(u).ok())
}

fn parse_tensor(name: String, value: Value, data_start: usize, file: &str) -> Result<TensorEntry> {
    let bad = |what: &str| format_error(file, format!("tensor {name:?}: {what}"));
    if name.contains('\0') {
        return Err(bad("the name holds a NUL byte"));
    }
    let Value::Object(fields) = value else { return Err(bad("entry is not a JSON object")) };
    let dtype = match fields.get("dtype") {
        Some(Value::String(s)) => TensorDtype::from_name(s).ok_or_else(|| bad(&format!("unknown dtype {s:?}")))?,
        _ => return Err(bad("missing or non-string \"dtype\"")),
    };
    let shape: Vec<usize> = match fields.get("shape") {
        Some(Value::Array(dims)) => {
            dims.iter().map(as_usize).collect::<Option<_>>().ok_or_else(|| bad("\"shape\" holds a non-integer"))?
        }
        _ => return Err(bad("missing or non-array \"shape\"")),
    };
    let offsets: Vec<usize> = match fields.get("data_offsets") {
        Some(Value::Array(o)) if o.len() == 2 => {
            o.iter().map(as_usize).collect::<Option<_>>().ok_or_else(|| bad("\"data_offsets\" holds a non-integer"))?
        }
        _ => return Err(bad("\"data_offsets\" is not [begin, end]")),
    };
    let (begin, end) = (offsets[0], offsets[1]);
    if end < begin {
        return Err(bad(&format!("data_offsets [{begin}, {end}] end before they begin")));
    }
    let want = byte_count(dtype, &shape)
        .ok_or_else(|| bad(&format!("shape {shape:?} of {} overflows or is not whole bytes", dtype.name())))?;
    if end - begin != want {
        return Err(bad(&format!(
            "dtype {} and shape {shape:?} need {want} bytes, data_offsets [{begin}, {end}] give {}",
            dtype.name(),
            end - begin
        )));
    }
    let abs = |o: usize| data_start.checked_add(o).ok_or_else(|| bad("data_offsets overflow"));
    Ok(TensorEntry { bytes: abs(begin)?..abs(end)?, name, dtype, shape })
}

/// Sorts tensors into file order and checks they tile `[data_start, len)`.
fn check_layout(tensors: &mut [TensorEntry], data_start: usize, len: usize, file: &str) -> Result<()> {
    tensors.sort_by_key(|t| (t.bytes.start, t.bytes.end));
    let mut at = data_start;
    let mut previous: Option<&TensorEntry> = None;
    for t in tensors.iter() {
        let rel = |r: &Range<usize>| format!("[{}, {})", r.start - data_start, r.end - data_start);
        if t.bytes.start < at {
            // Offsets count from the data, so `at` moves past it only after a tensor.
            let Some(p) = previous else {
                return Err(format_error(file, format!("tensor {:?} starts before the data", t.name)));
            };
            return Err(format_error(
                file,
                format!("tensor {:?} {} overlaps tensor {:?} {}", t.name, rel(&t.bytes), p.name, rel(&p.bytes)),
            ));
        }
        if t.bytes.start > at {
            return Err(format_error(
                file,
                format!("data bytes {} before tensor {:?} belong to no tensor", rel(&(at..t.bytes.start)), t.name),
            ));
        }
        if t.bytes.end > len {
            return Err(format_error(
                file,
                format!(
                    "tensor {:?} {} runs past the end of the file: the data section has {} bytes (truncated file?)",
                    t.name,
                    rel(&t.bytes),
                    len - data_start
                ),
            ));
        }
        at = t.bytes.end;
        previous = Some(t);
    }
    if at != len {
        return Err(format_error(file, format!("{} bytes after the last tensor belong to no tensor", len - at)));
    }
    Ok(())
}

/// A tensor to be written: its place in the file comes from [`layout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
}

/// The header bytes of a file holding `specs`, and each spec's byte range in
/// the file (indexed like `specs`). The layout and the header are the crate's
/// own (the writer of `safetensors.torch.save_file`): tensors sorted by dtype
/// (widest first) then name, packed from offset 0, the header JSON of its
/// `Metadata` padded with spaces to a multiple of 8 bytes — so a file written
/// here is byte for byte the one the reference writes for the same tensors.
pub fn layout(specs: &[TensorSpec], metadata: &[(String, String)]) -> Result<(Vec<u8>, Vec<Range<usize>>)> {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    let dtype = |i: usize| specs[i].dtype.to_safetensors();
    order.sort_by(|&a, &b| dtype(b).cmp(&dtype(a)).then(specs[a].name.cmp(&specs[b].name)));
    let mut offset = 0usize;
    let mut relative = vec![0..0; specs.len()];
    let mut infos = Vec::with_capacity(specs.len());
    for &s in &order {
        let spec = &specs[s];
        let size = byte_count(spec.dtype, &spec.shape)
            .ok_or_else(|| Error::shape(format!("tensor {:?}: shape {:?} overflows", spec.name, spec.shape)))?;
        let end = offset.checked_add(size).ok_or_else(|| Error::shape("file size overflows size_t".to_string()))?;
        let info =
            TensorInfo { dtype: spec.dtype.to_safetensors(), shape: spec.shape.clone(), data_offsets: (offset, end) };
        infos.push((spec.name.clone(), info));
        relative[s] = offset..end;
        offset = end;
    }
    let metadata: Option<HashMap<String, String>> = (!metadata.is_empty()).then(|| metadata.iter().cloned().collect());
    let refused = |e: &dyn std::fmt::Display| Error::internal(format!("the safetensors crate refused a header: {e}"));
    let header = Metadata::new(metadata, infos).map_err(|e| refused(&e))?;
    let mut header = serde_json::to_vec(&header).map_err(|e| refused(&e))?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let data_start = 8 + header.len();
    let mut bytes = Vec::with_capacity(data_start);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    let ranges = relative.into_iter().map(|r| data_start + r.start..data_start + r.end).collect();
    Ok((bytes, ranges))
}
