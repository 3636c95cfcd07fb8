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
    /// `prefix.SCB` when it is int8; `prefix.bias` when present. The source
    /// tensor's pages are released once it is read.
    pub fn load_weight(&self, checkpoint: &Checkpoint, prefix: &str) -> Result<Weight> {
        let layer = checkpoint.linear_layer(prefix)?;
        let (n, k, w) = (layer.out_features, layer.in_features, layer.weight);
        let with_bias = |f: &mut dyn FnMut(Option<Data<'_>>) -> Result<Weight>| match layer.bias {
            Some(b) => checkpoint.with_floats(b, |d| f(Some(d))),
            None => f(None),
        };
        let weight = match &layer.int8_scales {
            Some(scb) => with_bias(&mut |b| self.weight_from_int8(checkpoint.int8_values(w), scb, n, k, b)),
            None => checkpoint.with_floats(w, |data| with_bias(&mut |b| self.quantize_weight(data, n, k, b))),
        }
        .map_err(|e| checkpoint.locate(e, w))?;
        checkpoint.release(w);
        Ok(weight)
    }
}

/// Writes `weight` to the safetensors file `path` as transformers + bitsandbytes
/// save a `Linear8bitLt`: `prefix.weight` (int8 `[out, in]`, row-major),
/// `prefix.SCB` (float32 `[out]`), `prefix.weight_format` (uint8 0) and, when
/// the weight has one, `prefix.bias` (float32 `[out]`). Replaces `path`
/// atomically; a failure leaves nothing behind.
pub fn save_weight(weight: &Weight, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.contains('\0') {
        return Err(Error::invalid("the tensor name prefix must be non-empty text"));
    }
    let (n, k) = (weight.out_features(), weight.in_features());
    let specs = io::int8_layer_specs(prefix, n, k, weight.bias().is_some());
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
    writer.finish()
}
