//! The CPU backend's weight: int8 values packed for the microkernels, with the
//! row scales and bias the epilogue reads.

use super::pack::PackedWeight;
use std::ops::Range;

use super::{quantize_weight_columns, quantize_weight_rows, Settings};
use crate::dtype::Element;
use crate::error::Result;
use crate::kept::KeptColumns;
use crate::smoothing::Smoothing;

/// A weight `[out_features, in_features]` in host memory. Shape, scales and
/// bias were validated by the caller (`crate::Weight`).
#[derive(Debug)]
pub(crate) struct Weight {
    packed: PackedWeight,
    /// Row absmax `[out_features]` (bitsandbytes' `SCB`).
    scb: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// Columns kept in their 16/32-bit source form for the outlier product.
    kept: Option<KeptColumns>,
    /// The smoothing multiplied into the int8 values, divided out of the
    /// activations by every matmul.
    smoothing: Option<Smoothing>,
}

impl Weight {
    /// Quantizes a row-major `[n, k]` weight row by row (`w.len() == n · k`),
    /// each row multiplied by `smoothing`'s factors first when given.
    pub(crate) fn quantize<T: Element>(
        settings: Settings,
        w: &[T],
        n: usize,
        k: usize,
        bias: Option<Vec<f32>>,
        smoothing: Option<Smoothing>,
    ) -> Result<Weight> {
        let (packed, scb) = quantize_weight_rows(settings, w, n, k, smoothing.as_ref().map(Smoothing::factors))?;
        Ok(Weight { packed, scb, bias, kept: None, smoothing })
    }

    /// The row-parallel shard `columns` of a row-major `[n, k]` weight (`w.len()
    /// == n · k`): those columns quantized with each whole row's absmax, so
    /// its int8 values and scales are the unsharded weight's — smoothed by
    /// `smoothing` (`[k]`) when given, the shard keeping its columns' factors.
    pub(crate) fn quantize_columns<T: Element>(
        settings: Settings,
        w: &[T],
        n: usize,
        k: usize,
        columns: Range<usize>,
        bias: Option<Vec<f32>>,
        smoothing: Option<&Smoothing>,
    ) -> Result<Weight> {
        let (cb, scb) = quantize_weight_columns(settings, w, n, k, columns.clone(), smoothing.map(Smoothing::factors))?;
        let shard_smoothing = smoothing.map(|s| s.columns(&columns));
        Ok(Weight::from_int8(&cb, scb, n, columns.len(), bias)?.with_smoothing(shard_smoothing))
    }

    /// Packs bitsandbytes' row-major `CB [n, k]` with its scales.
    pub(crate) fn from_int8(cb: &[i8], scb: Vec<f32>, n: usize, k: usize, bias: Option<Vec<f32>>) -> Result<Weight> {
        Ok(Weight { packed: PackedWeight::from_row_major(cb, n, k)?, scb, bias, kept: None, smoothing: None })
    }

    pub(crate) fn out_features(&self) -> usize {
        self.packed.rows()
    }
    pub(crate) fn in_features(&self) -> usize {
        self.packed.cols()
    }
    pub(crate) fn packed(&self) -> &PackedWeight {
        &self.packed
    }
    pub(crate) fn scb(&self) -> &[f32] {
        &self.scb
    }
    pub(crate) fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    pub(crate) fn kept(&self) -> Option<&KeptColumns> {
        self.kept.as_ref()
    }
    pub(crate) fn smoothing(&self) -> Option<&Smoothing> {
        self.smoothing.as_ref()
    }
    /// The same weight, its outlier product reading `kept` where it holds a column.
    pub(crate) fn with_kept(self, kept: Option<KeptColumns>) -> Weight {
        Weight { kept, ..self }
    }
    /// The same weight, its int8 values taken as smoothed by `smoothing`.
    pub(crate) fn with_smoothing(self, smoothing: Option<Smoothing>) -> Weight {
        Weight { smoothing, ..self }
    }
    /// Its parts by value (a move to another backend keeps scales, bias,
    /// kept columns and smoothing).
    pub(crate) fn into_parts(self) -> HostParts {
        HostParts { packed: self.packed, scb: self.scb, bias: self.bias, kept: self.kept, smoothing: self.smoothing }
    }
    /// Packed int8 values, scales, bias, kept columns and smoothing.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.packed.resident_bytes()
            + 4 * self.scb.len()
            + 4 * self.bias.as_ref().map_or(0, Vec::len)
            + self.kept.as_ref().map_or(0, KeptColumns::bytes)
            + self.smoothing.as_ref().map_or(0, Smoothing::bytes)
    }
}

/// A CPU weight's parts, for a move to another backend.
pub(crate) struct HostParts {
    pub packed: PackedWeight,
    pub scb: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub kept: Option<KeptColumns>,
    pub smoothing: Option<Smoothing>,
}
