//! Each kernel's parameters as one `#[repr(C)]` struct, passed by value as
//! the launch's one argument. Each mirrors, field for field, the struct of the
//! same name in kernels/llmint8.cu (its `…_PARAMS` list); a mismatch would be
//! silent memory corruption on a GPU, so [`check_layout`] compares both
//! layouts whenever a device is opened (the kernel `llmint8_param_layout`
//! writes the device compiler's), and the emulated GPU and NVRTC build the
//! same source in the tests. Device pointers are `CUdeviceptr`s (8 bytes,
//! like a device pointer); `int` is `i32`, `i64` `long long`. `smooth` is a
//! smoothed weight's `1/s` `[cols]` on the device (0 for none): the kernels
//! that read X multiply each value by its column's entry.

use std::marker::PhantomData;

use super::sys::CUdeviceptr;
use crate::error::{Error, Result};

/// A kernel that takes `P`: launching it with anything else does not compile.
#[derive(Debug)]
pub(crate) struct Kernel<P> {
    pub name: &'static str,
    params: PhantomData<fn(P)>,
}

impl<P> Kernel<P> {
    pub(crate) const fn new(name: &'static str) -> Kernel<P> {
        Kernel { name, params: PhantomData }
    }
}

impl<P> Clone for Kernel<P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P> Copy for Kernel<P> {}

/// Declares the structs and [`layout`], which lists each struct's size, then
/// its fields' offsets, in the order `llmint8_param_layout` writes them.
macro_rules! kernel_params {
    ($($(#[$meta:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? })*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug)]
            pub(crate) struct $name {
                $(pub $field: $ty,)*
            }
        )*

        /// Every struct's size then its fields' offsets, in declaration order.
        pub(crate) fn layout() -> Vec<u64> {
            let mut out = Vec::new();
            $(
                out.push(std::mem::size_of::<$name>() as u64);
                $(out.push(std::mem::offset_of!($name, $field) as u64);)*
            )*
            out
        }

        /// The name of the struct that the `i`th entry of [`layout`] describes.
        fn struct_at(i: usize) -> &'static str {
            let mut at = 0;
            $(
                at += 1 + [$(stringify!($field)),*].len();
                if i < at {
                    return stringify!($name);
                }
            )*
            "(past the last struct)"
        }
    };
}

kernel_params! {
    /// `llmint8_quantize_rows_*`: X's rows (or a weight's, mode 1) to int8.
    QuantizeRowsParams {
        x: CUdeviceptr, rows: i64, cols: i32, ld_q: i32, threshold: f32, round_f16: i32, mode: i32,
        q: CUdeviceptr, absmax: CUdeviceptr, col_flags: CUdeviceptr, first_bad_row: CUdeviceptr, smooth: CUdeviceptr,
    }
    /// `llmint8_rescale_rows_*`: a row-parallel partial's rows requantized with the given absmax.
    RescaleRowsParams {
        x: CUdeviceptr, rows: i64, cols: i32, ld_q: i32, round_f16: i32, given: CUdeviceptr,
        absmax: CUdeviceptr, col_flags: CUdeviceptr, use_flags: i32, q: CUdeviceptr, bad_row: CUdeviceptr,
        smooth: CUdeviceptr,
    }
    /// `llmint8_prep_small_*`: everything before the GEMM in one block (few rows).
    PrepSmallParams {
        x: CUdeviceptr, rows: i64, cols: i32, ld_q: i32, rows_padded: i64, threshold: f32,
        round_f16: i32, int8_part: i32, q: CUdeviceptr, absmax: CUdeviceptr, col_flags: CUdeviceptr,
        list: CUdeviceptr, count: CUdeviceptr, max_gathered: i32, x_out: CUdeviceptr, smooth: CUdeviceptr,
    }
    /// `llmint8_gather_outliers_*`: X's outlier columns as float32, zeroed in q.
    GatherOutliersParams {
        x: CUdeviceptr, rows: i64, cols: i32, list: CUdeviceptr, count: CUdeviceptr, max_gathered: i32,
        q: CUdeviceptr, ld_q: i32, x_out: CUdeviceptr, smooth: CUdeviceptr,
    }
    /// `llmint8_epilogue_*_*`: dequantize, add the outlier product and the bias, convert.
    EpilogueParams {
        acc: CUdeviceptr, ld_acc: i32, rows: i64, nc: i32, j0: i32, n: i32, sa: CUdeviceptr,
        scb: CUdeviceptr, bias: CUdeviceptr, list: CUdeviceptr, count: CUdeviceptr, max_gathered: i32,
        w_gathered: i32, x_out: CUdeviceptr, w_out: CUdeviceptr, x: CUdeviceptr, cols: i32,
        cb: CUdeviceptr, ld_w: i32, kept_slot: CUdeviceptr, kept: CUdeviceptr, kept_dtype: i32, y: CUdeviceptr,
        smooth: CUdeviceptr,
    }
    /// `llmint8_outlier_list`: the flagged columns in ascending order, and their count.
    OutlierListParams { col_flags: CUdeviceptr, cols: i32, list: CUdeviceptr, count: CUdeviceptr }
    /// `llmint8_gather_weight_columns`: the weight's outlier columns, dequantized or kept.
    GatherWeightColumnsParams {
        cb: CUdeviceptr, ld_w: i32, scb: CUdeviceptr, n: i64, list: CUdeviceptr, count: CUdeviceptr,
        max_gathered: i32, kept_slot: CUdeviceptr, kept: CUdeviceptr, kept_dtype: i32, w_out: CUdeviceptr,
    }
    /// `llmint8_pad_rows`: int8 rows copied into a wider row stride, zero-padded.
    PadRowsParams { src: CUdeviceptr, rows: i64, cols: i32, ld: i32, dst: CUdeviceptr }
    /// `llmint8_row_statistics`: a row-parallel rank's row absmax for the MAX all-reduce.
    RowStatisticsParams { absmax: CUdeviceptr, rows: i64, out: CUdeviceptr }
}

/// Compares the device compiler's layout (what `llmint8_param_layout` wrote)
/// with this crate's: an error naming the first struct that differs.
pub(crate) fn check_layout(device: &[u64]) -> Result<()> {
    let ours = layout();
    if let Some(i) = (0..ours.len()).find(|&i| device.get(i) != Some(&ours[i])) {
        return Err(Error::internal(format!(
            "the kernels' {} is laid out differently from the library's (entry {i}: {:?} on the device, {} here): kernels/llmint8.cu and src/cuda/params.rs disagree",
            struct_at(i),
            device.get(i),
            ours[i]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_that_differs_is_refused_naming_the_struct() {
        let ours = layout();
        assert!(check_layout(&ours).is_ok());
        // EpilogueParams' `rows` one word later: what a reordered field would give.
        let at = (0..ours.len()).position(|i| struct_at(i) == "EpilogueParams").unwrap();
        assert_eq!(ours[at], std::mem::size_of::<EpilogueParams>() as u64);
        let mut moved = ours.clone();
        moved[at + 3] += 8;
        let e = check_layout(&moved).unwrap_err();
        assert!(e.message().contains("EpilogueParams"), "{e}");
        let e = check_layout(&ours[..ours.len() - 1]).unwrap_err();
        assert!(e.message().contains("RowStatisticsParams"), "{e}");
    }
}
