//! Bytes that start on a cache line. A 64-byte row that straddles two cache
//! lines costs the processor two: an AMX `tileloadd` of 16 such rows ran 6.7×
//! slower than of aligned rows (docs/PERF.md), and the 64-byte vector loads of
//! the VNNI kernel split too. The allocator gives 16-byte alignment, so the
//! buffers are over-allocated by a line and used from their first aligned byte.

use crate::error::{try_resize_zeroed, try_zeroed_vec, Result};

/// Bytes per cache line.
pub const CACHE_LINE: usize = 64;

/// Where in `v` the first cache-line-aligned byte is.
fn aligned_start(v: &[i8]) -> usize {
    (CACHE_LINE - v.as_ptr() as usize % CACHE_LINE) % CACHE_LINE
}

/// `len` zero bytes on a cache line, owned (the packed weight).
#[derive(Debug)]
pub struct AlignedBytes {
    /// `len + CACHE_LINE - 1` bytes; never resized, so `start` stays valid.
    buf: Vec<i8>,
    start: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize, what: &str) -> Result<AlignedBytes> {
        let buf = try_zeroed_vec::<i8>(len.saturating_add(CACHE_LINE - 1), what)?;
        let start = aligned_start(&buf);
        Ok(AlignedBytes { buf, start })
    }
    pub fn len(&self) -> usize {
        self.buf.len() - (CACHE_LINE - 1)
    }
    pub fn as_slice(&self) -> &[i8] {
        &self.buf[self.start..][..self.len()]
    }
    pub fn as_mut_slice(&mut self) -> &mut [i8] {
        let len = self.len();
        &mut self.buf[self.start..][..len]
    }
}

/// `len` zero bytes of `v`'s allocation, starting on a cache line (scratch
/// kept between calls, as [`super::scratch::zeroed`]).
pub fn zeroed_in<'a>(v: &'a mut Vec<i8>, len: usize, what: &str) -> Result<&'a mut [i8]> {
    try_resize_zeroed(v, len.saturating_add(CACHE_LINE - 1), what)?;
    let start = aligned_start(v);
    Ok(&mut v[start..][..len])
}

/// `len` bytes of `v`'s allocation, starting on a cache line, holding
/// whatever the last user left there: for a writer of every byte (zeroing
/// 2 MiB of scratch that is written over anyway was ~2% of an M = 512 call).
pub fn reused_in<'a>(v: &'a mut Vec<i8>, len: usize, what: &str) -> Result<&'a mut [i8]> {
    super::scratch::reused(v, len.saturating_add(CACHE_LINE - 1), what)?;
    let start = aligned_start(v);
    Ok(&mut v[start..][..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_start_on_a_cache_line_and_are_zero() {
        for len in [0, 1, 63, 64, 65, 4096 + 3] {
            let mut a = AlignedBytes::zeroed(len, "test").unwrap();
            assert_eq!(a.as_slice().as_ptr() as usize % CACHE_LINE, 0);
            assert_eq!(a.len(), len);
            assert!(a.as_slice().iter().all(|&b| b == 0));
            a.as_mut_slice().fill(1);
            let mut v = vec![7i8; 5];
            let s = zeroed_in(&mut v, len, "test").unwrap();
            assert_eq!((s.as_ptr() as usize % CACHE_LINE, s.len()), (0, len));
            assert!(s.iter().all(|&b| b == 0));
        }
    }
}
