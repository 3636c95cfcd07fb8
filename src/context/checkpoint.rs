//! Checkpoints and the context: a linear layer of a checkpoint becomes a
//! weight of a context, and a weight goes back out in bitsandbytes' 8-bit form.
//! (`io` knows the files; this is the one place that joins them to the compute.)

use std::path::Path;

use super::Context;
use crate::dtype::Data;
use crate::error::{try_zeroed_vec, Error, Result};
use crate::io::{self, Checkpoint, SafetensorsWriter};
use crate::weight::Weight;

impl Context {
    /// Loads the linear layer `prefix` of `checkpoint`: `prefix.weight`
    /// quantized on this context when it is 16/32-bit, or taken as it is with
    /// `prefix.SCB` when it is int8; `prefix.bias` when present; the kept
    /// 16/32-bit columns when the checkpoint holds them (`io::KeptColumnTensors`:
    /// beside an int8 weight their values are read; beside a 16/32-bit one the
    /// columns are kept from the weight itself). The source tensor's pages are
    /// released once it is read.
    pub fn load_weight(&self, checkpoint: &Checkpoint, prefix: &str) -> Result<Weight> {
        let layer = checkpoint.linear_layer(prefix)?;
        let (n, k, w) = (layer.out_features, layer.in_features, layer.weight);
        let with_bias = |f: &mut dyn FnMut(Option<Data<'_>>) -> Result<Weight>| match layer.bias {
            Some(b) => checkpoint.with_floats(b, |d| f(Some(d))),
            None => f(None),
        };
        let keep = layer.kept.as_ref().map_or(&[][..], |kept| &kept.columns);
        let weight = match (&layer.int8_scales, &layer.kept) {
            (Some(scb), None) => with_bias(&mut |b| self.weight_from_int8(checkpoint.int8_values(w), scb, n, k, b)),
            (Some(scb), Some(kept)) => checkpoint.with_floats(kept.values, |values| {
                let cb = checkpoint.int8_values(w);
                with_bias(&mut |b| self.weight_from_int8_keep(cb, scb, n, k, b, keep, values))
            }),
            (None, _) => {
                checkpoint.with_floats(w, |data| with_bias(&mut |b| self.quantize_weight_keep(data, n, k, b, keep)))
            }
        }
        .map_err(|e| checkpoint.locate(e, w))?;
        checkpoint.release(w);
        Ok(weight)
    }
}

/// Writes `weight` to the safetensors file `path` as transformers + bitsandbytes
/// save a `Linear8bitLt`: `prefix.weight` (int8 `[out, in]`, row-major),
/// `prefix.SCB` (float32 `[out]`), `prefix.weight_format` (uint8 0) and, when
/// the weight has one, `prefix.bias` (float32 `[out]`); a weight that keeps
/// 16/32-bit columns adds `prefix.llmint8_kept_columns` and
/// `prefix.llmint8_kept_values` (`io::KeptColumnTensors`), which
/// transformers + bitsandbytes leave unused. Replaces `path` atomically; a
/// failure leaves nothing behind.
pub fn save_weight(weight: &Weight, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.contains('\0') {
        return Err(Error::invalid("the tensor name prefix must be non-empty text"));
    }
    let (n, k) = (weight.out_features(), weight.in_features());
    let mut specs = io::int8_layer_specs(prefix, n, k, weight.bias().is_some());
    let kept = weight.kept_columns();
    if let Some(dtype) = weight.kept_dtype() {
        specs.extend(io::kept_column_specs(prefix, n, kept.len(), io::TensorDtype::from(dtype)));
    }
    let mut writer = SafetensorsWriter::create(path, specs, &io::pytorch_metadata())?;
    let mut cb = try_zeroed_vec::<i8>(n * k, "int8 weight")?;
    let mut scb = try_zeroed_vec::<f32>(n, "weight scales")?;
    weight.export(&mut cb, &mut scb)?;
    writer.write(&format!("{prefix}.weight"), io::as_u8(&cb))?;
    writer.write(&format!("{prefix}.SCB"), &io::f32_bytes(&scb))?;
    writer.write(&format!("{prefix}.weight_format"), &[0])?;
    if let Some(bias) = weight.bias() {
        writer.write(&format!("{prefix}.bias"), &io::f32_bytes(bias))?;
    }
    if weight.kept_dtype().is_some() {
        let columns: Vec<i32> = kept.iter().map(|&c| c as i32).collect();
        writer.write(&format!("{prefix}.{}", io::KEPT_COLUMNS), &io::i32_bytes(&columns))?;
        writer.write(&format!("{prefix}.{}", io::KEPT_VALUES), &weight.kept_values_bytes()?)?;
    }
    writer.finish()
}
