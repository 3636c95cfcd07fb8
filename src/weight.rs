//! A quantized weight: what stays resident after a 16/32-bit weight is handed over.

use std::sync::Arc;

use crate::context::Backend;
use crate::cpu::{self, pack::PackedWeight};
use crate::cuda::{device::Gpu, ops::DeviceWeight};
use crate::dtype::{Data, Element};
use crate::error::{check_len, try_copied_vec, try_zeroed_vec, Error, Result};
use crate::quant;
use crate::with_data;

/// An int8 weight `[out_features, in_features]` with one f32 scale per output row
/// (bitsandbytes' `CB` and `SCB`) and an optional f32 bias. Immutable once built,
/// so it can be shared by any number of threads.
///
/// It holds `out·in` bytes of int8 (plus at most 15 rows and 3 columns of
/// padding) and `4·out` bytes of scales (and `4·out` of bias): no copy of the
/// 16/32-bit weight survives quantization. The int8 data is kept packed for the
/// CPU microkernels (`cpu::pack`); bitsandbytes' row-major `CB` comes back out
/// through [`Weight::export`] and [`Weight::cb`].
///
/// A weight of a CUDA context keeps its int8 values, scales and bias in the
/// device's memory (`CB` rows padded to 16 bytes, as cuBLASLt wants), and a
/// host copy of the scales and bias (8 bytes per output row).
#[derive(Debug)]
pub struct Weight {
    out_features: usize,
    in_features: usize,
    int8: Int8Storage,
    /// Row absmax `[out_features]` (bitsandbytes' `SCB`).
    scb: Vec<f32>,
    bias: Option<Vec<f32>>,
}

/// Where the int8 values live.
#[derive(Debug)]
enum Int8Storage {
    /// Packed for the CPU microkernels (`cpu::pack`).
    Cpu(PackedWeight),
    /// On a CUDA device.
    Cuda(DeviceWeight),
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

impl Weight {
    /// Quantizes a row-major `[out_features, in_features]` weight row by row.
    /// A non-finite weight value is refused with a message naming its row.
    pub(crate) fn quantize(
        settings: cpu::Settings,
        w: Data<'_>,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        let len = check_weight_shape(out_features, in_features)?;
        check_len("weight", w.len(), len)?;
        let bias = convert_bias(bias, out_features)?;
        let (packed, scb) = with_data!(w, w => cpu::quantize_weight_rows(settings, w, out_features, in_features))?;
        Ok(Weight { out_features, in_features, int8: Int8Storage::Cpu(packed), scb, bias })
    }

    /// Takes an already-quantized weight (bitsandbytes' `CB` and `SCB`) as it is.
    /// Scales must be finite and non-negative.
    pub(crate) fn from_int8(
        cb: &[i8],
        scb: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        let len = check_weight_shape(out_features, in_features)?;
        check_len("CB", cb.len(), len)?;
        check_len("SCB", scb.len(), out_features)?;
        if let Some((row, s)) = scb.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::invalid(format!("SCB[{row}] = {s}: a row scale must be finite and >= 0")));
        }
        let bias = convert_bias(bias, out_features)?;
        let packed = PackedWeight::from_row_major(cb, out_features, in_features)?;
        let scb = try_copied_vec(scb, "weight scales")?;
        Ok(Weight { out_features, in_features, int8: Int8Storage::Cpu(packed), scb, bias })
    }

    /// Moves a weight built on the host to a CUDA device: the int8 values go
    /// up row-major (padded), the host's packed copy is dropped.
    pub(crate) fn into_device(self, gpu: &Arc<Gpu>) -> Result<Weight> {
        let Int8Storage::Cpu(packed) = &self.int8 else { return Ok(self) };
        let (n, k) = (self.out_features, self.in_features);
        crate::cuda::ops::check_in_features(k)?;
        let mut cb = try_zeroed_vec::<i8>(n * k, "row-major CB")?;
        packed.unpack_into(&mut cb);
        let device = DeviceWeight::upload(gpu, &cb, &self.scb, self.bias.as_deref(), n, k)?;
        Ok(Weight { int8: Int8Storage::Cuda(device), ..self })
    }

    /// A weight quantized on the device from device memory (see
    /// [`DeviceWeight::quantize_on_device`]).
    ///
    /// # Safety
    /// `w` must be device memory of `gpu` holding `out_features · in_features`
    /// elements of `dtype`.
    pub(crate) unsafe fn quantize_on_device(
        gpu: &Arc<Gpu>,
        rounding: quant::InputRounding,
        w: u64,
        dtype: crate::DType,
        out_features: usize,
        in_features: usize,
        bias: Option<Data<'_>>,
    ) -> Result<Weight> {
        check_weight_shape(out_features, in_features)?;
        let bias = convert_bias(bias, out_features)?;
        // SAFETY: as the caller promises.
        let (device, scb) = unsafe {
            DeviceWeight::quantize_on_device(gpu, w, dtype, out_features, in_features, rounding, bias.as_deref())?
        };
        Ok(Weight { out_features, in_features, int8: Int8Storage::Cuda(device), scb, bias })
    }

    /// The device copy of a CUDA context's weight.
    pub(crate) fn on_device(&self) -> Option<&DeviceWeight> {
        match &self.int8 {
            Int8Storage::Cuda(d) => Some(d),
            Int8Storage::Cpu(_) => None,
        }
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    pub fn backend(&self) -> Backend {
        match self.int8 {
            Int8Storage::Cpu(_) => Backend::Cpu,
            Int8Storage::Cuda(_) => Backend::Cuda,
        }
    }
    /// A row-major copy of the int8 values `[out_features, in_features]`
    /// (bitsandbytes' `CB`). For a weight on a CUDA device this copies it down
    /// and panics if the device fails; [`Weight::export`] reports that instead.
    pub fn cb(&self) -> Vec<i8> {
        let mut cb = vec![0i8; self.out_features * self.in_features];
        self.copy_cb(&mut cb).unwrap_or_else(|e| panic!("copying CB from the device: {e}"));
        cb
    }

    fn copy_cb(&self, cb: &mut [i8]) -> Result<()> {
        match &self.int8 {
            Int8Storage::Cpu(packed) => {
                packed.unpack_into(cb);
                Ok(())
            }
            Int8Storage::Cuda(device) => device.download_cb(self.out_features, self.in_features, cb),
        }
    }

    /// The packed int8 values of a CPU weight. The CPU kernels only ever get
    /// CPU weights: [`crate::Context::matmul`] checks the backend first.
    pub(crate) fn packed(&self) -> &PackedWeight {
        match &self.int8 {
            Int8Storage::Cpu(packed) => packed,
            Int8Storage::Cuda(_) => unreachable!("a CUDA weight reached the CPU kernels"),
        }
    }
    /// Row absmax `[out_features]`.
    pub fn scb(&self) -> &[f32] {
        &self.scb
    }
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    /// Bytes this weight keeps resident.
    pub fn resident_bytes(&self) -> usize {
        let host_extras = 4 * self.scb.len() + 4 * self.bias.as_ref().map_or(0, |b| b.len());
        match &self.int8 {
            Int8Storage::Cpu(packed) => packed.resident_bytes() + host_extras,
            // Device memory (CB, SCB, bias) and the host copy of SCB and bias.
            Int8Storage::Cuda(d) => d.cb.bytes + d.scb.bytes + d.bias.as_ref().map_or(0, |b| b.bytes) + host_extras,
        }
    }

    /// Writes bitsandbytes' layout: row-major `CB [out, in]` and `SCB [out]`.
    pub fn export(&self, cb: &mut [i8], scb: &mut [f32]) -> Result<()> {
        check_len("CB buffer", cb.len(), self.out_features * self.in_features)?;
        check_len("SCB buffer", scb.len(), self.scb.len())?;
        self.copy_cb(cb)?;
        scb.copy_from_slice(&self.scb);
        Ok(())
    }

    /// The dequantized weight element `[row, col]`: `cb · scb / 127` (a CPU
    /// weight; for a CUDA one, use [`Weight::export`]).
    #[inline]
    pub fn dequantized(&self, row: usize, col: usize) -> f32 {
        quant::dequantize_weight(self.packed().get(row, col), self.scb[row])
    }
}
