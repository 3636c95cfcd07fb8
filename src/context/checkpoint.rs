//! Checkpoints and the context: a linear layer of a checkpoint becomes a
//! weight of a context, and a weight goes back out in bitsandbytes' 8-bit form.
//! (`io` knows the files; this is the one place that joins them to the compute.)

use std::ops::Range;
use std::path::Path;

use super::Context;
use crate::dtype::Data;
use crate::error::{try_zeroed_vec, Error, Result};
use crate::io::{self, Checkpoint, SafetensorsWriter};
use crate::weight::{shard_kept_columns, Int8Extras, Weight, WeightOptions};

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
        let rows = 0..layer.out_features;
        self.load_layer_rows(checkpoint, &layer, rows)
    }

    /// The output rows `rows` of the linear layer `prefix`, as a weight of
    /// `rows.len()` output features: a column-parallel tensor-parallel shard
    /// (rank r of a world of W takes its part of `out_features`; q/k/v,
    /// gate/up). Only those rows of the weight, `SCB`, bias and kept column
    /// values are read from the file. Row scales are per output row, so the
    /// shards' outputs side by side are the whole layer's output bit for bit.
    /// `rows` must be a non-empty range inside `[0, out_features)`
    /// (`Status::Shape` otherwise).
    pub fn load_weight_rows(&self, checkpoint: &Checkpoint, prefix: &str, rows: Range<usize>) -> Result<Weight> {
        let layer = checkpoint.linear_layer(prefix)?;
        check_part(checkpoint, prefix, &rows, layer.out_features, ("output rows", "rows"))?;
        self.load_layer_rows(checkpoint, &layer, rows)
    }

    /// The input columns `columns` of the linear layer `prefix`, as a weight
    /// of `columns.len()` in_features: a row-parallel tensor-parallel shard
    /// (o_proj, down_proj; see [`Context::quantize_weight_columns`]). A
    /// 16/32-bit weight's rows are read whole, for each row's absmax, and
    /// only the shard's columns quantized; a bitsandbytes 8-bit weight's
    /// columns are taken with its whole `SCB`. The shard starting at column
    /// 0 carries the layer's bias (the engine's SUM adds it once); kept
    /// columns inside the shard are kept. `columns` must be a non-empty
    /// range inside `[0, in_features)` (`Status::Shape` otherwise).
    pub fn load_weight_columns(&self, checkpoint: &Checkpoint, prefix: &str, columns: Range<usize>) -> Result<Weight> {
        let layer = checkpoint.linear_layer(prefix)?;
        check_part(checkpoint, prefix, &columns, layer.in_features, ("in_features", "columns"))?;
        let (n, k, kc, w) = (layer.out_features, layer.in_features, columns.len(), layer.weight);
        let rows = 0..n;
        let with_bias = |f: &mut dyn FnMut(Option<Data<'_>>) -> Result<Weight>| match layer.bias {
            Some(b) if columns.start == 0 => checkpoint.with_floats(b, |d| f(Some(d))),
            _ => f(None),
        };
        let keep = layer.kept.as_ref().map_or(&[][..], |kept| &kept.columns);
        let smoothing = layer.smoothing.as_deref();
        let weight = match &layer.int8_scales {
            Some(scb) => {
                let mut cb = try_zeroed_vec::<i8>(n * kc, "the shard's CB")?;
                for (dst, src) in cb.chunks_exact_mut(kc).zip(checkpoint.int8_rows(w, &rows).chunks_exact(k)) {
                    dst.copy_from_slice(&src[columns.clone()]);
                }
                // The shard's columns' smoothing factors.
                let smoothing = smoothing.map(|s| &s[columns.clone()]);
                // The kept columns inside the shard, and their rows of the values.
                let (slots, local) = shard_kept_columns(keep, &columns);
                match &layer.kept {
                    Some(kept) if !local.is_empty() => checkpoint.with_floats(kept.values, |values| {
                        with_rows(values, n, &slots, |values| {
                            let extras = Int8Extras { kept: Some((&local, values)), smoothing };
                            with_bias(&mut |b| self.weight_from_int8_with(&cb, scb, n, kc, b, &extras))
                        })
                    }),
                    _ => {
                        let extras = Int8Extras { kept: None, smoothing };
                        with_bias(&mut |b| self.weight_from_int8_with(&cb, scb, n, kc, b, &extras))
                    }
                }
            }
            None => checkpoint.with_float_rows(w, &rows, |data| {
                let options = WeightOptions { keep, smoothing, columns: Some(columns.clone()) };
                with_bias(&mut |b| self.quantize_weight_with(data, n, k, b, &options))
            }),
        }
        .map_err(|e| checkpoint.locate(e, w))?;
        checkpoint.release_rows(w, &rows);
        Ok(weight)
    }

    fn load_layer_rows(
        &self,
        checkpoint: &Checkpoint,
        layer: &io::LinearLayer<'_>,
        rows: Range<usize>,
    ) -> Result<Weight> {
        let (n, k, w) = (rows.len(), layer.in_features, layer.weight);
        let with_bias = |f: &mut dyn FnMut(Option<Data<'_>>) -> Result<Weight>| match layer.bias {
            Some(b) => checkpoint.with_float_rows(b, &rows, |d| f(Some(d))),
            None => f(None),
        };
        let keep = layer.kept.as_ref().map_or(&[][..], |kept| &kept.columns);
        let smoothing = layer.smoothing.as_deref();
        let weight = match (&layer.int8_scales, &layer.kept) {
            (Some(scb), kept) => {
                let (cb, scb) = (checkpoint.int8_rows(w, &rows), &scb[rows.clone()]);
                match kept {
                    None => {
                        let extras = Int8Extras { kept: None, smoothing };
                        with_bias(&mut |b| self.weight_from_int8_with(cb, scb, n, k, b, &extras))
                    }
                    Some(kept) => checkpoint.with_floats(kept.values, |values| {
                        with_columns(values, layer.out_features, &rows, |values| {
                            let extras = Int8Extras { kept: Some((keep, values)), smoothing };
                            with_bias(&mut |b| self.weight_from_int8_with(cb, scb, n, k, b, &extras))
                        })
                    }),
                }
            }
            (None, _) => checkpoint.with_float_rows(w, &rows, |data| {
                let options = WeightOptions { keep, smoothing, columns: None };
                with_bias(&mut |b| self.quantize_weight_with(data, n, k, b, &options))
            }),
        }
        .map_err(|e| checkpoint.locate(e, w))?;
        checkpoint.release_rows(w, &rows);
        Ok(weight)
    }
}

/// Refuses a shard range `part` that is empty or reaches past the layer's
/// `total` (its output rows or in_features: `names`, the whole and the part),
/// naming the file and the layer.
fn check_part(
    checkpoint: &Checkpoint,
    prefix: &str,
    part: &Range<usize>,
    total: usize,
    (whole, parts): (&str, &str),
) -> Result<()> {
    if part.is_empty() || part.end > total {
        return Err(Error::shape(format!(
            "{}: layer {prefix:?} has {total} {whole}; {parts} {}..{} are not a non-empty part of them",
            checkpoint.path().display(),
            part.start,
            part.end
        )));
    }
    Ok(())
}

/// Runs `f` on columns `cols` of the row-major `values` `[_, width]` (the kept
/// column values `[n_keep, out]` of a shard's output rows); all of them as
/// they are, without a copy.
fn with_columns<R>(
    values: Data<'_>,
    width: usize,
    cols: &Range<usize>,
    f: impl FnOnce(Data<'_>) -> Result<R>,
) -> Result<R> {
    fn part<T: Copy>(v: &[T], width: usize, cols: &Range<usize>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        out.try_reserve_exact(v.len() / width.max(1) * cols.len())
            .map_err(|_| Error::out_of_memory("cannot allocate the shard's kept column values"))?;
        out.extend(v.chunks_exact(width).flat_map(|row| row[cols.clone()].iter().copied()));
        Ok(out)
    }
    if *cols == (0..width) {
        return f(values);
    }
    match values {
        Data::F32(v) => f(Data::F32(&part(v, width, cols)?)),
        Data::F16(v) => f(Data::F16(&part(v, width, cols)?)),
        Data::BF16(v) => f(Data::BF16(&part(v, width, cols)?)),
    }
}

/// Runs `f` on rows `rows` (ascending) of the row-major `values` `[_, width]`
/// (a shard's kept columns of `llmint8_kept_values`), copied together.
fn with_rows<R>(values: Data<'_>, width: usize, rows: &[usize], f: impl FnOnce(Data<'_>) -> Result<R>) -> Result<R> {
    fn pick<T: Copy>(v: &[T], width: usize, rows: &[usize]) -> Result<Vec<T>> {
        let mut out = Vec::new();
        out.try_reserve_exact(rows.len() * width)
            .map_err(|_| Error::out_of_memory("cannot allocate the shard's kept column values"))?;
        for &r in rows {
            out.extend_from_slice(&v[r * width..(r + 1) * width]);
        }
        Ok(out)
    }
    match values {
        Data::F32(v) => f(Data::F32(&pick(v, width, rows)?)),
        Data::F16(v) => f(Data::F16(&pick(v, width, rows)?)),
        Data::BF16(v) => f(Data::BF16(&pick(v, width, rows)?)),
    }
}

/// Writes `weight` to the safetensors file `path` as transformers + bitsandbytes
/// save a `Linear8bitLt`: `prefix.weight` (int8 `[out, in]`, row-major),
/// `prefix.SCB` (float32 `[out]`), `prefix.weight_format` (uint8 0) and, when
/// the weight has one, `prefix.bias` (float32 `[out]`); a weight that keeps
/// 16/32-bit columns adds `prefix.llmint8_kept_columns` and
/// `prefix.llmint8_kept_values` (`io::KeptColumnTensors`), which
/// transformers + bitsandbytes leave unused. A smoothed weight adds
/// `prefix.llmint8_smooth` and marks `prefix.weight_format`
/// [`io::SMOOTHED_WEIGHT_FORMAT`], which bitsandbytes refuses: its values
/// are those of `W·diag(s)` and need llmint8's division of the activations.
/// Replaces `path` atomically; a failure leaves nothing behind.
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
    if weight.smoothing().is_some() {
        specs.push(io::smoothing_spec(prefix, k));
    }
    let mut writer = SafetensorsWriter::create(path, specs, &io::pytorch_metadata())?;
    let mut cb = try_zeroed_vec::<i8>(n * k, "int8 weight")?;
    let mut scb = try_zeroed_vec::<f32>(n, "weight scales")?;
    weight.export(&mut cb, &mut scb)?;
    writer.write(&format!("{prefix}.weight"), io::as_u8(&cb))?;
    writer.write(&format!("{prefix}.SCB"), &io::f32_bytes(&scb))?;
    let format = if weight.smoothing().is_some() { io::SMOOTHED_WEIGHT_FORMAT } else { 0 };
    writer.write(&format!("{prefix}.weight_format"), &[format])?;
    if let Some(s) = weight.smoothing() {
        writer.write(&format!("{prefix}.{}", io::SMOOTHING), &io::f32_bytes(s))?;
    }
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
