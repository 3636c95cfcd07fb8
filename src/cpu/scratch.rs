//! Scratch space of the matmul, kept per calling thread between calls so that
//! a steady stream of calls allocates (and page-faults) nothing.

use std::cell::Cell;

use crate::error::{try_resize_zeroed, Result};

/// Buffers larger than this are freed after the call instead of kept.
const KEEP_BYTES: usize = 64 << 20;

#[derive(Default)]
pub(crate) struct Scratch {
    /// Quantized activations `[rows, k]`.
    pub qx: Vec<i8>,
    /// Activation row scales `[rows]`.
    pub sa: Vec<f32>,
    /// The outlier columns of x `[rows, n_outliers]`.
    pub x_outliers: Vec<f32>,
    /// The activations as the microkernel reads them.
    pub tile_i8: Vec<i8>,
    pub tile_i16: Vec<i16>,
    pub tile_sums: Vec<i32>,
    /// One outlier column mask `[k]` per thread, and their union.
    pub masks: Vec<bool>,
    /// The outlier columns, ascending.
    pub outliers: Vec<usize>,
    /// Few-row calls: each thread's `[rows, its columns]` block of the output,
    /// in float32 (the epilogue's value before the output conversion).
    pub blocks: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch. The buffers are taken out for the call
/// (so nothing can observe them twice) and put back after it.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH.with(Cell::take);
    let result = f(&mut scratch);
    scratch.trim();
    SCRATCH.with(|s| s.set(scratch));
    result
}

/// `len` zeros in `v`'s allocation, as a slice.
pub(crate) fn zeroed<'a, T: Copy + Default>(v: &'a mut Vec<T>, len: usize, what: &str) -> Result<&'a mut [T]> {
    try_resize_zeroed(v, len, what)?;
    Ok(v.as_mut_slice())
}

/// `len` values of `v`'s allocation holding whatever the last call left
/// there, as a slice: for a writer of every value (zeroing the 2 MiB of an
/// M = 512 call's quantized activations first was ~1% of the call).
pub(crate) fn reused<'a, T: Copy + Default>(v: &'a mut Vec<T>, len: usize, what: &str) -> Result<&'a mut [T]> {
    if v.capacity() < len {
        try_resize_zeroed(v, len, what)?;
    } else {
        v.resize(len, T::default()); // within the capacity: no new allocation
    }
    Ok(v.as_mut_slice())
}

impl Scratch {
    fn trim(&mut self) {
        fn keep<T>(v: &mut Vec<T>) {
            if v.capacity() * std::mem::size_of::<T>() > KEEP_BYTES {
                *v = Vec::new();
            }
        }
        keep(&mut self.qx);
        keep(&mut self.sa);
        keep(&mut self.x_outliers);
        keep(&mut self.tile_i8);
        keep(&mut self.tile_i16);
        keep(&mut self.tile_sums);
        keep(&mut self.masks);
        keep(&mut self.outliers);
        keep(&mut self.blocks);
    }
}
