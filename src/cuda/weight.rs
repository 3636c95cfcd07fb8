//! The CUDA backend's weight: int8 values, scales and bias in device memory,
//! and a host copy of the scales and bias (for `SCB` accessors and export).

use std::sync::Arc;

use super::device::{DeviceBuffer, Gpu};
use super::nvrtc;
use super::ops::{cb_row_stride, check_in_features, grid_for, padded_n};
use super::params::{PadRowsParams, QuantizeRowsParams};
use super::sys::CUdeviceptr;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kept::KeptColumns;
use crate::quant::InputRounding;
use crate::smoothing::Smoothing;

/// A weight `[n, k]` on a device: `CB` `[padded_n(n), cb_row_stride(k)]` int8
/// (zero-padded), `SCB` `[n]` float32 and the bias `[n]` float32, with host
/// copies of `SCB` and the bias. Shape and bias were validated by the caller
/// (`crate::Weight`).
#[derive(Debug)]
pub(crate) struct Weight {
    /// The device that holds the buffers (kept open while the weight lives).
    pub gpu: Arc<Gpu>,
    pub cb: DeviceBuffer,
    pub scb: DeviceBuffer,
    pub bias: Option<DeviceBuffer>,
    /// Bytes per row of `cb`.
    pub row_stride: usize,
    pub out_features: usize,
    pub in_features: usize,
    host_scb: Vec<f32>,
    host_bias: Option<Vec<f32>>,
    /// Columns kept in their source dtype for the outlier product.
    pub kept: Option<DeviceKept>,
    /// The smoothing the int8 values were made with.
    pub smoothing: Option<DeviceSmoothing>,
}

/// A weight's smoothing: `1/s` on the device, which the kernels that read X
/// multiply each value by, with the host copy (accessors and export read it).
#[derive(Debug)]
pub(crate) struct DeviceSmoothing {
    pub inverse: DeviceBuffer,
    pub host: Smoothing,
}

/// Weight columns kept in their 16/32-bit source dtype, on the device as
/// the kernels' `Kept` reads them — `slot [k]` int32, each column's index
/// into `values` or -1, and `values [columns, n]` column-major — with the
/// host copy they were made from (accessors and export read it).
#[derive(Debug)]
pub(crate) struct DeviceKept {
    pub slot: DeviceBuffer,
    pub values: DeviceBuffer,
    pub host: KeptColumns,
}

impl Weight {
    /// Checks the shape and allocates a weight's device buffers, bias copied
    /// up and `CB` zeroed (its padding must hold 0), queued on the stream.
    fn allocate(gpu: &Arc<Gpu>, n: usize, k: usize, bias: Option<Vec<f32>>) -> Result<Weight> {
        check_in_features(k)?;
        let row_stride = cb_row_stride(k);
        let cb_bytes =
            padded_n(n).checked_mul(row_stride).ok_or_else(|| Error::shape("the padded weight overflows size_t"))?;
        let cb = gpu.alloc(cb_bytes, "cuMemAlloc (int8 weight)")?;
        let scb = gpu.alloc(4 * n, "cuMemAlloc (weight scales)")?;
        let bias_dev = bias.as_ref().map(|_| gpu.alloc(4 * n, "cuMemAlloc (bias)")).transpose()?;
        let _current = gpu.make_current()?;
        let d = &gpu.rt.driver;
        let stream = gpu.state().stream;
        // SAFETY: the buffers were allocated above with these sizes; the bias
        // holds n values (checked by the caller).
        unsafe {
            gpu.check((d.cuMemsetD32Async)(cb.ptr, 0, cb_bytes / 4, stream), "cuMemsetD32Async")?;
            if let (Some(b), Some(dev)) = (&bias, &bias_dev) {
                gpu.check((d.cuMemcpyHtoDAsync)(dev.ptr, b.as_ptr().cast(), 4 * n, stream), "copying the bias")?;
            }
        }
        Ok(Weight {
            gpu: gpu.clone(),
            cb,
            scb,
            bias: bias_dev,
            row_stride,
            out_features: n,
            in_features: k,
            host_scb: Vec::new(),
            host_bias: bias,
            kept: None,
            smoothing: None,
        })
    }

    /// The weight also keeping `kept` (columns < k, values `[columns, n]`
    /// column-major): copied up. Synchronous.
    pub(crate) fn with_kept(mut self, kept: KeptColumns) -> Result<Weight> {
        let (gpu, k) = (&self.gpu, self.in_features);
        let mut slot = crate::error::try_zeroed_vec::<i32>(k, "kept column slots")?;
        slot.fill(-1);
        for (s, &c) in kept.columns().iter().enumerate() {
            slot[c] = s as i32;
        }
        let values = kept.values();
        let (host, bytes) =
            crate::with_data!(values, v => (v.as_ptr().cast::<std::ffi::c_void>(), std::mem::size_of_val(v)));
        let slot_dev = gpu.alloc(4 * k, "cuMemAlloc (kept column slots)")?;
        let values_dev = gpu.alloc(bytes, "cuMemAlloc (kept weight columns)")?;
        let _current = gpu.make_current()?;
        let d = &gpu.rt.driver;
        let stream = gpu.state().stream;
        // SAFETY: both device buffers were allocated above with the bytes
        // copied; the host buffers outlive the wait (here, or on a failure).
        gpu.waiting_on_error(stream, || unsafe {
            gpu.check((d.cuMemcpyHtoDAsync)(slot_dev.ptr, slot.as_ptr().cast(), 4 * k, stream), "copying kept slots")?;
            gpu.check((d.cuMemcpyHtoDAsync)(values_dev.ptr, host, bytes, stream), "copying kept columns")?;
            gpu.check((d.cuStreamSynchronize)(stream), "cuStreamSynchronize")
        })?;
        self.kept = Some(DeviceKept { slot: slot_dev, values: values_dev, host: kept });
        Ok(self)
    }

    /// The weight taking `smoothing` as the one its int8 values were made
    /// with: `1/s` copied up. Synchronous.
    pub(crate) fn with_smoothing(mut self, smoothing: Smoothing) -> Result<Weight> {
        let gpu = &self.gpu;
        let inverse = smoothing.inverse();
        let bytes = std::mem::size_of_val(inverse);
        let device = gpu.alloc(bytes, "cuMemAlloc (smoothing)")?;
        let _current = gpu.make_current()?;
        let d = &gpu.rt.driver;
        let stream = gpu.state().stream;
        // SAFETY: the device buffer was allocated above with the bytes copied;
        // the host vector outlives the wait (here, or on a failure).
        gpu.waiting_on_error(stream, || unsafe {
            gpu.check((d.cuMemcpyHtoDAsync)(device.ptr, inverse.as_ptr().cast(), bytes, stream), "copying smoothing")?;
            gpu.check((d.cuStreamSynchronize)(stream), "cuStreamSynchronize")
        })?;
        self.smoothing = Some(DeviceSmoothing { inverse: device, host: smoothing });
        Ok(self)
    }

    /// The smoothing (the host copy).
    pub(crate) fn smoothing(&self) -> Option<&Smoothing> {
        self.smoothing.as_ref().map(|s| &s.host)
    }

    /// The kernels' `smooth` argument: `1/s` on the device, 0 when unsmoothed.
    pub(crate) fn smoothing_ptr(&self) -> CUdeviceptr {
        self.smoothing.as_ref().map_or(0, |s| s.inverse.ptr)
    }

    /// The kept columns (the host copy).
    pub(crate) fn kept(&self) -> Option<&KeptColumns> {
        self.kept.as_ref().map(|k| &k.host)
    }

    /// The kernels' `Kept` arguments: slot table, values, dtype (NULL, NULL, 0
    /// when no column is kept).
    pub(crate) fn kept_args(&self) -> (CUdeviceptr, CUdeviceptr, i32) {
        self.kept.as_ref().map_or((0, 0, 0), |k| (k.slot.ptr, k.values.ptr, k.host.values().dtype() as i32))
    }

    /// Uploads a row-major int8 weight `cb [n, k]` with its scales and bias.
    /// Synchronous: the host buffers may be reused when it returns.
    pub(crate) fn upload(
        gpu: &Arc<Gpu>,
        cb: &[i8],
        scb: Vec<f32>,
        bias: Option<Vec<f32>>,
        n: usize,
        k: usize,
    ) -> Result<Weight> {
        {
            let _current = gpu.make_current()?;
            gpu.refuse_while_capturing(&gpu.state(), "making a weight")?;
        }
        let mut weight = Weight::allocate(gpu, n, k, bias)?;
        let (kp, cb_dev, scb_dev) = (weight.row_stride, &weight.cb, &weight.scb);
        let _current = gpu.make_current()?;
        let d = &gpu.rt.driver;
        let stream = gpu.state().stream;
        // Rows of k bytes go into rows of kp: straight when equal, else through a
        // staging buffer padded on the device (kept until the stream is waited on).
        let staging = if kp == k { None } else { Some(gpu.alloc(n * k, "cuMemAlloc (staging)")?) };
        // SAFETY (this block): every copy's device side was allocated with at
        // least the bytes copied; the host slices hold them and outlive the
        // wait (here, or on a failure).
        gpu.waiting_on_error(stream, || unsafe {
            let target = staging.as_ref().map_or(cb_dev.ptr, |s| s.ptr);
            gpu.check((d.cuMemcpyHtoDAsync)(target, cb.as_ptr().cast(), n * k, stream), "copying CB")?;
            if let Some(staging) = &staging {
                let params =
                    PadRowsParams { src: staging.ptr, rows: n as i64, cols: k as i32, ld: kp as i32, dst: cb_dev.ptr };
                gpu.launch(nvrtc::PAD_ROWS, grid_for(n * kp), stream, &params)?;
            }
            gpu.check((d.cuMemcpyHtoDAsync)(scb_dev.ptr, scb.as_ptr().cast(), 4 * n, stream), "copying SCB")?;
            gpu.check((d.cuStreamSynchronize)(stream), "cuStreamSynchronize")
        })?;
        weight.host_scb = scb;
        Ok(weight)
    }

    /// Quantizes a row-major weight `[n, k]` of `dtype` that is already in
    /// device memory at `w`, and copies the scales to the host. A non-finite
    /// value is refused, naming the first row that holds one. Synchronous.
    ///
    /// # Safety
    /// `w` must be device memory of this context's device holding `n · k`
    /// elements of `dtype`.
    pub(crate) unsafe fn quantize_on_device(
        gpu: &Arc<Gpu>,
        w: CUdeviceptr,
        dtype: DType,
        n: usize,
        k: usize,
        rounding: InputRounding,
        bias: Option<Vec<f32>>,
    ) -> Result<Weight> {
        {
            let _current = gpu.make_current()?;
            gpu.refuse_while_capturing(&gpu.state(), "making a weight")?;
        }
        let mut weight = Weight::allocate(gpu, n, k, bias)?;
        let (kp, cb_dev, scb_dev) = (weight.row_stride, &weight.cb, &weight.scb);
        let first_bad = gpu.alloc(4, "cuMemAlloc")?;
        let _current = gpu.make_current()?;
        let d = &gpu.rt.driver;
        let stream = gpu.state().stream;
        let mut scb = vec![0f32; n];
        let mut bad_row: i32 = 0;
        // SAFETY (this block): the buffers were allocated above with the sizes
        // the kernel and copies use; `w` is as the caller promises; `scb` and
        // `bad_row` outlive the wait (here, or on a failure).
        gpu.waiting_on_error(stream, || unsafe {
            gpu.check((d.cuMemsetD32Async)(first_bad.ptr, i32::MAX as u32, 1, stream), "cuMemsetD32Async")?;
            // Mode 1: weight rows (no outliers, the first non-finite row reported).
            let params = QuantizeRowsParams {
                x: w,
                rows: n as i64,
                cols: k as i32,
                ld_q: kp as i32,
                threshold: 0.0,
                round_f16: i32::from(rounding == InputRounding::Float16),
                mode: 1,
                q: cb_dev.ptr,
                absmax: scb_dev.ptr,
                col_flags: 0,
                first_bad_row: first_bad.ptr,
                smooth: 0, // weights in device memory are quantized unsmoothed
            };
            gpu.launch(nvrtc::QUANTIZE_ROWS[dtype as usize], n.clamp(1, 65535) as u32, stream, &params)?;
            gpu.check((d.cuMemcpyDtoHAsync)(scb.as_mut_ptr().cast(), scb_dev.ptr, 4 * n, stream), "copying SCB")?;
            gpu.check(
                (d.cuMemcpyDtoHAsync)((&mut bad_row as *mut i32).cast(), first_bad.ptr, 4, stream),
                "copying the check",
            )?;
            gpu.check((d.cuStreamSynchronize)(stream), "cuStreamSynchronize")
        })?;
        if bad_row != i32::MAX {
            return Err(crate::quant::non_finite_weight(bad_row as usize, None, rounding));
        }
        weight.host_scb = scb;
        Ok(weight)
    }

    /// Copies `CB` back to the host, row-major `[n, k]` (bitsandbytes' layout;
    /// `cb` holds `n · k` bytes). Synchronous.
    pub(crate) fn download_cb(&self, cb: &mut [i8]) -> Result<()> {
        let (gpu, n, k, kp) = (&self.gpu, self.out_features, self.in_features, self.row_stride);
        let _current = gpu.make_current()?;
        let d = &gpu.rt.driver;
        let stream = gpu.state().stream;
        let mut padded = crate::error::try_zeroed_vec::<i8>(n * kp, "CB staging")?;
        // SAFETY: `padded` holds the first n rows of the device buffer.
        unsafe {
            gpu.check((d.cuMemcpyDtoHAsync)(padded.as_mut_ptr().cast(), self.cb.ptr, n * kp, stream), "copying CB")?;
            gpu.check((d.cuStreamSynchronize)(stream), "cuStreamSynchronize")?;
        }
        for (dst, src) in cb.chunks_exact_mut(k).zip(padded.chunks_exact(kp)) {
            dst.copy_from_slice(&src[..k]);
        }
        Ok(())
    }

    /// The host copy of the row scales `[n]`.
    pub(crate) fn scb(&self) -> &[f32] {
        &self.host_scb
    }
    /// The host copy of the bias `[n]`.
    pub(crate) fn bias(&self) -> Option<&[f32]> {
        self.host_bias.as_deref()
    }
    /// Device memory: CB, SCB, bias and kept columns (with their slot table).
    pub(crate) fn device_bytes(&self) -> usize {
        self.cb.bytes
            + self.scb.bytes
            + self.bias.as_ref().map_or(0, |b| b.bytes)
            + self.kept.as_ref().map_or(0, |k| k.slot.bytes + k.values.bytes)
            + self.smoothing.as_ref().map_or(0, |s| s.inverse.bytes)
    }
    /// Host memory: the copies of SCB, bias and kept columns (export and save read them).
    pub(crate) fn host_bytes(&self) -> usize {
        4 * self.host_scb.len()
            + 4 * self.host_bias.as_ref().map_or(0, Vec::len)
            + self.kept().map_or(0, KeptColumns::bytes)
            + self.smoothing().map_or(0, Smoothing::bytes)
    }
}
