//! Writing safetensors files: the layout is fixed up front (so tensors can be
//! written in any order, one at a time), the file appears under its name only
//! once complete, and a failure leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::format::{self, TensorDtype, TensorSpec};
use super::io_error;
use crate::error::{Error, Result};

/// The `__metadata__` transformers writes (`{"format": "pt"}`), which its loader expects.
pub fn pytorch_metadata() -> Vec<(String, String)> {
    vec![("format".to_string(), "pt".to_string())]
}

/// A safetensors file being written. Dropping it before [`SafetensorsWriter::finish`]
/// deletes the partial file.
pub struct SafetensorsWriter {
    path: PathBuf,
    temp: PathBuf,
    file: File,
    /// Set by `finish` once the temporary file is the caller's (renamed, or
    /// removed there); until then, dropping the writer removes it.
    finished: bool,
    specs: Vec<TensorSpec>,
    ranges: Vec<Range<usize>>,
    written: Vec<bool>,
}

/// A fresh name for a temporary file beside `path`.
pub(crate) fn temp_path_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.partial-{}-{n}", std::process::id()))
}

impl SafetensorsWriter {
    /// Starts the file `path` holding `specs` (names must be distinct).
    pub fn create(path: impl AsRef<Path>, specs: Vec<TensorSpec>, metadata: &[(String, String)]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(d) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid(format!("tensor {:?} is listed twice", d[0])));
        }
        let (header, ranges) = format::layout(&specs, metadata)?;
        let total = ranges.iter().map(|r| r.end).max().unwrap_or(header.len());
        let temp = temp_path_beside(&path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_error(&temp, "cannot create", e))?;
        // From here a failure drops the writer, which removes the file.
        let written = vec![false; specs.len()];
        let mut writer = SafetensorsWriter { path, temp, file, finished: false, written, specs, ranges };
        writer.file.set_len(total as u64).map_err(|e| io_error(&writer.temp, "cannot size", e))?;
        writer.file.write_all(&header).map_err(|e| io_error(&writer.temp, "cannot write", e))?;
        Ok(writer)
    }

    /// Writes the little-endian bytes of tensor `name`, exactly its size.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let Some(i) = self.specs.iter().position(|s| s.name == name) else {
            return Err(Error::invalid(format!("tensor {name:?} is not in the layout of {}", self.path.display())));
        };
        let range = self.ranges[i].clone();
        if data.len() != range.len() {
            return Err(Error::shape(format!("tensor {name:?} needs {} bytes, got {}", range.len(), data.len())));
        }
        if self.written[i] {
            return Err(Error::invalid(format!("tensor {name:?} was already written")));
        }
        self.file.write_all_at(data, range.start as u64).map_err(|e| io_error(&self.temp, "cannot write", e))?;
        self.written[i] = true;
        Ok(())
    }

    /// Checks every tensor was written, flushes, and moves the file to its name.
    pub fn finish(mut self) -> Result<()> {
        if let Some(i) = self.written.iter().position(|w| !w) {
            return Err(Error::invalid(format!(
                "tensor {:?} was never written: write every tensor of the layout before finish",
                self.specs[i].name
            )));
        }
        self.file.sync_all().map_err(|e| io_error(&self.temp, "cannot flush", e))?;
        self.finished = true;
        std::fs::rename(&self.temp, &self.path).map_err(|e| {
            // Nothing may be left behind: the complete file never got its name.
            let _ = std::fs::remove_file(&self.temp);
            io_error(&self.path, "cannot create", e)
        })
    }
}

impl Drop for SafetensorsWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The tensors of one linear layer in bitsandbytes' 8-bit form under `prefix`:
/// `prefix.weight` int8 `[out, in]`, `prefix.SCB` float32 `[out]`,
/// `prefix.weight_format` uint8 (0: row-major) and, `with_bias`, `prefix.bias`
/// float32 `[out]` — in that order, which callers index by.
pub(crate) fn int8_layer_specs(prefix: &str, out: usize, inn: usize, with_bias: bool) -> Vec<TensorSpec> {
    let mut specs = vec![
        TensorSpec { name: format!("{prefix}.weight"), dtype: TensorDtype::I8, shape: vec![out, inn] },
        TensorSpec { name: format!("{prefix}.SCB"), dtype: TensorDtype::F32, shape: vec![out] },
        TensorSpec { name: format!("{prefix}.weight_format"), dtype: TensorDtype::U8, shape: vec![] },
    ];
    if with_bias {
        specs.push(TensorSpec { name: format!("{prefix}.bias"), dtype: TensorDtype::F32, shape: vec![out] });
    }
    specs
}

/// A layer's smoothing vector tensor (see [`super::SMOOTHING`]): float32 `[in]`.
pub(crate) fn smoothing_spec(prefix: &str, inn: usize) -> TensorSpec {
    TensorSpec { name: format!("{prefix}.{}", super::SMOOTHING), dtype: TensorDtype::F32, shape: vec![inn] }
}

/// The tensors of a layer's kept weight columns (see
/// [`super::KEPT_COLUMNS`]): the column list, int32 `[n_keep]`, and their
/// values `[n_keep, out]` in `dtype`.
pub(crate) fn kept_column_specs(prefix: &str, out: usize, n_keep: usize, dtype: TensorDtype) -> [TensorSpec; 2] {
    [
        TensorSpec { name: format!("{prefix}.{}", super::KEPT_COLUMNS), dtype: TensorDtype::I32, shape: vec![n_keep] },
        TensorSpec { name: format!("{prefix}.{}", super::KEPT_VALUES), dtype, shape: vec![n_keep, out] },
    ]
}

/// Little-endian bytes of int32 values.
pub(crate) fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of f32 values.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
