//! A quantized weight: what stays resident after a 16/32-bit weight is handed over.

use crate::context::Backend;
use crate::cpu::{self, pack::PackedWeight};
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
#[derive(Debug)]
pub struct Weight {
    out_features: usize,
    in_features: usize,
    backend: Backend,
    /// The int8 values, packed for the CPU kernels (bitsandbytes' row-major
    /// `CB` comes back out through [`Weight::export`]).
    packed: PackedWeight,
    /// Row absmax `[out_features]` (bitsandbytes' `SCB`).
    scb: Vec<f32>,
    bias: Option<Vec<f32>>,
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
        backend: Backend,
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
        Ok(Weight { out_features, in_features, backend, packed, scb, bias })
    }

    /// Takes an already-quantized weight (bitsandbytes' `CB` and `SCB`) as it is.
    /// Scales must be finite and non-negative.
    pub(crate) fn from_int8(
        backend: Backend,
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
        Ok(Weight { out_features, in_features, backend, packed, scb, bias })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    pub fn backend(&self) -> Backend {
        self.backend
    }
    /// A row-major copy of the int8 values `[out_features, in_features]`
    /// (bitsandbytes' `CB`).
    pub fn cb(&self) -> Vec<i8> {
        let mut cb = vec![0i8; self.out_features * self.in_features];
        self.packed.unpack_into(&mut cb);
        cb
    }

    pub(crate) fn packed(&self) -> &PackedWeight {
        &self.packed
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
        self.packed.resident_bytes() + 4 * self.scb.len() + 4 * self.bias.as_ref().map_or(0, |b| b.len())
    }

    /// Writes bitsandbytes' layout: row-major `CB [out, in]` and `SCB [out]`.
    pub fn export(&self, cb: &mut [i8], scb: &mut [f32]) -> Result<()> {
        check_len("CB buffer", cb.len(), self.out_features * self.in_features)?;
        check_len("SCB buffer", scb.len(), self.scb.len())?;
        self.packed.unpack_into(cb);
        scb.copy_from_slice(&self.scb);
        Ok(())
    }

    /// The dequantized weight element `[row, col]`: `cb · scb / 127`.
    #[inline]
    pub fn dequantized(&self, row: usize, col: usize) -> f32 {
        quant::dequantize_weight(self.packed.get(row, col), self.scb[row])
    }
}
