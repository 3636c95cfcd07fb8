//! A quantized weight: what stays resident after a 16/32-bit weight is handed
//! over. The checks every backend shares live here; what a backend's kernels
//! read is its own type (`cpu::Weight`, `cuda::Weight`).

use std::ops::Range;
use std::sync::Arc;

use crate::cpu;
use crate::cuda::{self, device::Gpu};
use crate::dtype::{DType, Data, Element};
use crate::error::{check_len, try_copied_vec, try_zeroed_vec, Error, Result};
use crate::kept::KeptColumns;
use crate::quant;
use crate::smoothing::Smoothing;
use crate::with_data;

/// An int8 weight `[out_features, in_features]` with one f32 scale per output row
/// (bitsandbytes' `CB` and `SCB`) and an optional f32 bias. Immutable once built,
/// so it can be shared by any number of threads.
///
/// On the CPU it holds `out·in` bytes of int8 (plus at most 15 rows and 3
/// columns of padding), packed for the microkernels, and `4·out` bytes of
/// scales (and `4·out` of bias): no copy of the 16/32-bit weight survives
/// quantization. bitsandbytes' row-major `CB` comes back out through
/// [`Weight::export`] and [`Weight::cb`].
///
/// A weight of a CUDA context keeps its int8 values, scales and bias in the
/// device's memory (`CB` rows padded to 16 bytes, as cuBLASLt wants), and a
/// host copy of the scales and bias (8 bytes per output row).
#[derive(Debug)]
pub struct Weight {
    storage: Storage,
}

/// The backend's own weight.
#[derive(Debug)]
pub(crate) enum Storage {
    Cpu(cpu::Weight),
    Cuda(cuda::Weight),
}

/// Where a weight (or a context's work) lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Host memory, computed by the CPU backend.
    Cpu,
    /// The memory of CUDA device `device`.
    Cuda { device: i32 },
}

/// Checks `out_features, in_features` and returns their product.
pub(crate) fn check_weight_shape(out_features: usize, in_features: usize) -> Result<usize> {
    if out_features == 0 || in_features == 0 {
        return Err(Error::shape(format!(
            "a weight needs out_features > 0 and in_features > 0, got [{out_features}, {in_features}]"
        )));
    }
    out_features
        .checked_mul(in_features)
        .ok_or_else(|| Error::shape(format!("weight shape [{out_features}, {in_features}] overflows size_t")))
}

/// Checks the in_features range of a row-parallel shard: non-empty, inside
/// `[0, in_features)`.
pub(crate) fn check_shard_columns(columns: &Range<usize>, in_features: usize) -> Result<()> {
    if columns.is_empty() || columns.end > in_features {
        return Err(Error::shape(format!(
            "the weight has {in_features} in_features; columns {}..{} are not a non-empty part of them",
            columns.start, columns.end
        )));
    }
    Ok(())
}

/// The kept columns `keep` (full coordinates) that fall in the row-parallel
/// shard `columns`: each one's place in `keep` and its column in the shard.
pub(crate) fn shard_kept_columns(keep: &[u32], columns: &Range<usize>) -> (Vec<usize>, Vec<u32>) {
    keep.iter()
        .enumerate()
        .filter(|(_, &c)| columns.contains(&(c as usize)))
        .map(|(s, &c)| (s, c - columns.start as u32))
        .unzip()
}

/// Validates a bias of `out_features` finite values and widens it to f32.
fn convert_bias(bias: Option<Data<'_>>, out_features: usize) -> Result<Option<Vec<f32>>> {
    let Some(bias) = bias else { return Ok(None) };
    check_len("bias", bias.len(), out_features)?;
    let mut out = try_zeroed_vec::<f32>(out_features, "bias")?;
    with_data!(bias, s => {
        for (i, (o, v)) in out.iter_mut().zip(s.iter()).enumerate() {
            let v = v.to_f32();
            if !v.is_finite() {
                return Err(Error::invalid(format!("bias[{i}] is not finite ({v})")));
            }
            *o = v;
        }
    });
    Ok(Some(out))
}

/// How a 16/32-bit weight is made into a [`Weight`] beyond its values and
/// bias; the default is a plain weight.
#[derive(Clone, Debug, Default)]
pub struct WeightOptions<'a> {
    /// Columns of `w` kept in its dtype for the outlier product (the paper's
    /// 16-bit outlier weights), any order, each < in_features, distinct.
    pub keep: &'a [u32],
    /// A smoothing vector `s` `[in_features]` (SmoothQuant; every value
    /// finite and > 0): the weight quantized is `W·diag(s)`, and every matmul
    /// on it multiplies each activation column by `1/s_c` before the outlier
    /// test, the row scale and the rounding. Kept columns are kept as the
    /// float32 values of `W·diag(s)`.
    pub smoothing: Option<&'a [f32]>,
    /// A row-parallel shard: only these in_features (a non-empty range),
    /// each row quantized with the absmax of the whole (smoothed) row so its
    /// int8 values and `SCB` are the unsharded weight's; `keep` and
    /// `smoothing` still in the whole weight's coordinates.
    pub columns: Option<Range<usize>>,
}

/// What an 8-bit weight may carry beyond bitsandbytes' `CB` and `SCB`.
#[derive(Clone, Debug, Default)]
pub struct Int8Extras<'a> {
    /// Columns kept in 16/32-bit with their values `[columns, out_features]`
    /// (row `s` is column `columns[s]`; see [`WeightOptions::keep`]).
    pub kept: Option<(&'a [u32], Data<'a>)>,
    /// The smoothing vector `s` `[in_features]` the int8 values (and kept
    /// values) were made with: they are those of `W·diag(s)`.
    pub smoothing: Option<&'a [f32]>,
}

/// What [`Weight::memory`] reports, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightMemory {
    pub host_bytes: usize,
    pub device_bytes: usize,
}

impl Weight {
    /// Quantizes a row-major `[out_features, in_features]` weight row by row
    /// on the CPU, as `options` say (kept columns, smoothing, a row-parallel
    /// shard; see [`WeightOptions`]). A non-finite weight value is refused
    /// with a message naming its row (anywhere in the weight, for a shard:
    /// the shard refuses what the layer refuses).
    pub(crate) fn quantize(
        settings: cpu::Settings,
        w: Data<'_>,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
        options: &WeightOptions<'_>,
    ) -> Result<Weight> {
        let (n, k) = (out_features, in_features);
        let len = check_weight_shape(n, k)?;
        check_len("weight", w.len(), len)?;
        let smoothing = options.smoothing.map(|s| Smoothing::new(s, k)).transpose()?;
        let keep = options.keep;
        let weight = match options.columns.clone() {
            None => {
                let kept = if keep.is_empty() { None } else { Some(KeptColumns::gather(w, n, k, keep)?) };
                let bias = convert_bias(bias, n)?;
                (with_data!(w, w => cpu::Weight::quantize(settings, w, n, k, bias, smoothing))?, kept)
            }
            Some(columns) => {
                check_shard_columns(&columns, k)?;
                // The whole list is checked as the unsharded weight checks it.
                KeptColumns::check_columns(keep, k)?;
                let (_, kept) = shard_kept_columns(keep, &columns);
                let kept =
                    if kept.is_empty() { None } else { Some(KeptColumns::gather_shard(w, n, k, &columns, &kept)?) };
                let bias = convert_bias(bias, n)?;
                let smoothing = smoothing.as_ref();
                (with_data!(w, w => cpu::Weight::quantize_columns(settings, w, n, k, columns, bias, smoothing))?, kept)
            }
        };
        // Kept columns of W·diag(s), by the factors the weight (or shard) holds.
        let (weight, kept) = weight;
        let kept = kept.map(|kept| kept.smoothed(weight.smoothing().map(Smoothing::factors))).transpose()?;
        Ok(Weight { storage: Storage::Cpu(weight.with_kept(kept)) })
    }

    /// The smoothing vector `s` the weight was made with (its int8 values are
    /// those of `W·diag(s)`; every matmul divides the activations by `s`), or
    /// `None`.
    pub fn smoothing(&self) -> Option<&[f32]> {
        self.smoothing_of().map(Smoothing::factors)
    }

    /// The smoothing, whichever backend holds the weight.
    pub(crate) fn smoothing_of(&self) -> Option<&Smoothing> {
        match &self.storage {
            Storage::Cpu(w) => w.smoothing(),
            Storage::Cuda(w) => w.smoothing(),
        }
    }

    /// The columns the weight keeps in their source dtype, ascending (none
    /// unless made by [`Context::quantize_weight_keep`](crate::Context::quantize_weight_keep)).
    pub fn kept_columns(&self) -> &[usize] {
        self.kept().map_or(&[], |k| k.columns())
    }

    /// The kept columns, whichever backend holds the weight.
    fn kept(&self) -> Option<&KeptColumns> {
        match &self.storage {
            Storage::Cpu(w) => w.kept(),
            Storage::Cuda(w) => w.kept(),
        }
    }

    /// The dtype of the kept columns' values, when the weight keeps any.
    pub fn kept_dtype(&self) -> Option<DType> {
        self.kept().map(|k| k.values().dtype())
    }

    /// The kept columns' values as little-endian bytes of [`Weight::kept_dtype`],
    /// `[kept_columns().len(), out_features]` (row `s` is column
    /// `kept_columns()[s]`); empty when none is kept.
    pub fn kept_values_bytes(&self) -> Result<Vec<u8>> {
        Ok(self
            .kept()
            .map_or_else(Vec::new, |k| with_data!(k.values(), v => v.iter().flat_map(|x| x.to_le_bytes()).collect())))
    }

    /// Takes an already-quantized weight (bitsandbytes' `CB` and `SCB`) as it
    /// is, on the CPU. Scales must be finite and non-negative. `kept`: columns
    /// kept in 16/32-bit with their values `[columns, out_features]` (see
    /// `KeptColumns::from_columns`) and the smoothing, as `extras` say.
    pub(crate) fn from_int8(
        cb: &[i8],
        scb: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
        extras: &Int8Extras<'_>,
    ) -> Result<Weight> {
        let Int8Extras { kept, smoothing } = extras.clone();
        let len = check_weight_shape(out_features, in_features)?;
        check_len("CB", cb.len(), len)?;
        check_len("SCB", scb.len(), out_features)?;
        if let Some((row, s)) = scb.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::invalid(format!("SCB[{row}] = {s}: a row scale must be finite and >= 0")));
        }
        let kept = kept
            .map(|(columns, values)| KeptColumns::from_columns(values, out_features, in_features, columns))
            .transpose()?;
        let smoothing = smoothing.map(|s| Smoothing::new(s, in_features)).transpose()?;
        let bias = convert_bias(bias, out_features)?;
        let scb = try_copied_vec(scb, "weight scales")?;
        let weight = cpu::Weight::from_int8(cb, scb, out_features, in_features, bias)?;
        Ok(Weight { storage: Storage::Cpu(weight.with_kept(kept).with_smoothing(smoothing)) })
    }

    /// Moves a weight built on the host to a CUDA device: the int8 values go
    /// up row-major (padded), the host's packed copy is dropped. A weight
    /// already on a device stays where it is.
    pub(crate) fn into_device(self, gpu: &Arc<Gpu>) -> Result<Weight> {
        let Storage::Cpu(host) = self.storage else { return Ok(self) };
        let (n, k) = (host.out_features(), host.in_features());
        cuda::check_in_features(k)?;
        let mut cb = try_zeroed_vec::<i8>(n * k, "row-major CB")?;
        let cpu::HostParts { packed, scb, bias, kept, smoothing } = host.into_parts();
        packed.unpack_into(&mut cb);
        drop(packed);
        let mut device = cuda::Weight::upload(gpu, &cb, scb, bias, n, k)?;
        if let Some(kept) = kept {
            device = device.with_kept(kept)?;
        }
        if let Some(smoothing) = smoothing {
            device = device.with_smoothing(smoothing)?;
        }
        Ok(Weight { storage: Storage::Cuda(device) })
    }

    /// A weight quantized on the device from device memory (see
    /// [`cuda::Weight::quantize_on_device`]).
    ///
    /// # Safety
    /// `w` must be device memory of `gpu` holding `out_features · in_features`
    /// elements of `dtype`.
    pub(crate) unsafe fn quantize_on_device(
        gpu: &Arc<Gpu>,
        rounding: quant::InputRounding,
        w: u64,
        dtype: DType,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        check_weight_shape(out_features, in_features)?;
        let bias = convert_bias(bias, out_features)?;
        // SAFETY: as the caller promises.
        let device =
            unsafe { cuda::Weight::quantize_on_device(gpu, w, dtype, out_features, in_features, rounding, bias)? };
        Ok(Weight { storage: Storage::Cuda(device) })
    }

    /// The backend's weight, for the context to dispatch on.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn out_features(&self) -> usize {
        match &self.storage {
            Storage::Cpu(w) => w.out_features(),
            Storage::Cuda(w) => w.out_features,
        }
    }
    pub fn in_features(&self) -> usize {
        match &self.storage {
            Storage::Cpu(w) => w.in_features(),
            Storage::Cuda(w) => w.in_features,
        }
    }
    /// Where the int8 values live.
    pub fn location(&self) -> Location {
        match &self.storage {
            Storage::Cpu(_) => Location::Cpu,
            Storage::Cuda(w) => Location::Cuda { device: w.gpu.ordinal },
        }
    }

    /// A row-major copy of the int8 values `[out_features, in_features]`
    /// (bitsandbytes' `CB`); for a weight on a CUDA device, copied down.
    pub fn cb(&self) -> Result<Vec<i8>> {
        let mut cb = try_zeroed_vec::<i8>(self.out_features() * self.in_features(), "CB")?;
        self.copy_cb(&mut cb)?;
        Ok(cb)
    }

    fn copy_cb(&self, cb: &mut [i8]) -> Result<()> {
        match &self.storage {
            Storage::Cpu(w) => {
                w.packed().unpack_into(cb);
                Ok(())
            }
            Storage::Cuda(w) => w.download_cb(cb),
        }
    }

    /// Row absmax `[out_features]`.
    pub fn scb(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(w) => w.scb(),
            Storage::Cuda(w) => w.scb(),
        }
    }
    pub fn bias(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::Cpu(w) => w.bias(),
            Storage::Cuda(w) => w.bias(),
        }
    }
    /// Bytes this weight keeps resident, host and device memory together.
    pub fn resident_bytes(&self) -> usize {
        let m = self.memory();
        m.host_bytes + m.device_bytes
    }
    /// Bytes this weight keeps in host and in device memory (a CUDA weight
    /// keeps its values on the device and a host copy of scales, bias and
    /// kept columns).
    pub fn memory(&self) -> WeightMemory {
        match &self.storage {
            Storage::Cpu(w) => WeightMemory { host_bytes: w.resident_bytes(), device_bytes: 0 },
            Storage::Cuda(w) => WeightMemory { host_bytes: w.host_bytes(), device_bytes: w.device_bytes() },
        }
    }

    /// Writes bitsandbytes' layout: row-major `CB [out, in]` and `SCB [out]`.
    pub fn export(&self, cb: &mut [i8], scb: &mut [f32]) -> Result<()> {
        check_len("CB buffer", cb.len(), self.out_features() * self.in_features())?;
        check_len("SCB buffer", scb.len(), self.out_features())?;
        self.copy_cb(cb)?;
        scb.copy_from_slice(self.scb());
        Ok(())
    }

    /// The dequantized weight element `[row, col]`: `cb · scb / 127`. Refuses
    /// an index outside the shape (`InvalidArgument`) and a weight on a CUDA
    /// device (`Unsupported`: [`Weight::export`] copies it down).
    pub fn dequantized(&self, row: usize, col: usize) -> Result<f32> {
        let (n, k) = (self.out_features(), self.in_features());
        if row >= n || col >= k {
            return Err(Error::invalid(format!("element [{row}, {col}] is outside the weight's shape [{n}, {k}]")));
        }
        match &self.storage {
            Storage::Cpu(w) => Ok(quant::dequantize_weight(w.packed().get(row, col), w.scb()[row])),
            Storage::Cuda(_) => {
                Err(Error::unsupported("dequantized reads a CPU weight; export copies a CUDA one down"))
            }
        }
    }
}
