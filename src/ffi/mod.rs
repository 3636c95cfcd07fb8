//! The C ABI, version 1: a thin shell over the safe API. Each exported function
//! checks its pointers and sizes, runs the safe call inside [`guard`] (which
//! catches panics and records the error message), and returns a status code.
//! No arithmetic lives here.

// The C names of the opaque types are the ABI's, not Rust style.
#![allow(non_camel_case_types)]

mod checkpoint;
mod context;
mod matmul;
mod status;
mod weight;

pub use checkpoint::*;
pub use context::*;
pub use matmul::*;
pub use status::*;
pub use weight::*;

use std::cell::RefCell;
use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::dtype::{DType, Data, DataMut};
use crate::error::{Error, Result, Status};

thread_local! {
    /// Message of this thread's last failed call; "" before any failure.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(e: &Error) {
    // A message cannot hold NUL bytes; replace any rather than lose the message.
    let text = e.to_string().replace('\0', "\\0");
    let c = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|m| *m.borrow_mut() = c);
}

/// Pointer to this thread's last error message; valid until the next failing
/// call on this thread.
fn last_error_ptr() -> *const std::ffi::c_char {
    LAST_ERROR.with(|m| m.borrow().as_ptr())
}

/// Runs the body of an exported function: maps its error to a status code and
/// the thread's last-error message, and turns a panic into
/// `LLMINT8_ERR_INTERNAL` so that no unwinding crosses the C boundary.
fn guard(body: impl FnOnce() -> Result<()>) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Error::internal(format!("internal error (caught panic): {what}")))
    });
    match result {
        Ok(()) => Status::Ok as i32,
        Err(e) => {
            set_last_error(&e);
            e.status() as i32
        }
    }
}

/// Like [`guard`] for functions that return nothing (the destroy functions).
fn guard_void(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}

/// `&T` from a pointer the caller promises is valid, or an error naming it when NULL.
///
/// # Safety
/// A non-NULL `p` must point to a live `T` for `'a`.
unsafe fn non_null<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: the caller guarantees a non-NULL p points to a live T.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid(format!("{name} is NULL")))
}

/// Checks that `len` elements of `T` at `p` can form a slice: non-NULL unless
/// `len` is 0, aligned, and no larger than `isize::MAX` bytes.
fn check_region<T>(p: *const T, len: usize, name: &str) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    let align = std::mem::align_of::<T>();
    if !(p as usize).is_multiple_of(align) {
        return Err(Error::invalid(format!("{name} is not aligned to {align} bytes")));
    }
    match len.checked_mul(std::mem::size_of::<T>()) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(Error::shape(format!("{name}: {len} elements is more memory than can exist"))),
    }
}

/// [`check_region`] for untyped elements of `dtype`.
fn check_data_region(p: *const c_void, dtype: DType, len: usize, name: &str) -> Result<()> {
    match dtype {
        DType::F32 => check_region(p.cast::<f32>(), len, name),
        DType::F16 | DType::BF16 => check_region(p.cast::<u16>(), len, name),
    }
}

/// A slice of `len` elements at `p` (any pointer when `len` is 0).
///
/// # Safety
/// When `len > 0`, `p` must point to `len` initialised elements that stay
/// valid and unmodified for `'a`.
unsafe fn slice_in<'a, T>(p: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    check_region(p, len, name)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: non-NULL, aligned, size checked above; validity is the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A mutable slice of `len` elements at `p` (any pointer when `len` is 0).
///
/// # Safety
/// When `len > 0`, `p` must point to `len` elements writable for `'a` and not
/// reachable through any other slice alive at the same time.
unsafe fn slice_out<'a, T>(p: *mut T, len: usize, name: &str) -> Result<&'a mut [T]> {
    check_region(p, len, name)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: non-NULL, aligned, size checked above; exclusivity is the caller's promise
    // and overlaps between our own arguments are refused by `check_disjoint`.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Typed read-only elements from an untyped pointer.
///
/// # Safety
/// As for [`slice_in`], with elements of `dtype`.
unsafe fn data_in<'a>(p: *const c_void, dtype: DType, len: usize, name: &str) -> Result<Data<'a>> {
    // SAFETY: forwarded to the caller.
    unsafe {
        Ok(match dtype {
            DType::F32 => Data::F32(slice_in(p.cast(), len, name)?),
            DType::F16 => Data::F16(slice_in(p.cast(), len, name)?),
            DType::BF16 => Data::BF16(slice_in(p.cast(), len, name)?),
        })
    }
}

/// Typed writable elements from an untyped pointer.
///
/// # Safety
/// As for [`slice_out`], with elements of `dtype`.
unsafe fn data_out<'a>(p: *mut c_void, dtype: DType, len: usize, name: &str) -> Result<DataMut<'a>> {
    // SAFETY: forwarded to the caller.
    unsafe {
        Ok(match dtype {
            DType::F32 => DataMut::F32(slice_out(p.cast(), len, name)?),
            DType::F16 => DataMut::F16(slice_out(p.cast(), len, name)?),
            DType::BF16 => DataMut::BF16(slice_out(p.cast(), len, name)?),
        })
    }
}

/// Refuses buffers that overlap, where at least one is written: an in-place
/// call would otherwise read what it has already overwritten. Each region is
/// a caller buffer: its name, start and size in bytes.
fn check_disjoint<S: AsRef<str>>(regions: &[(S, *const c_void, usize)]) -> Result<()> {
    for (i, (a, pa, la)) in regions.iter().enumerate() {
        for (b, pb, lb) in &regions[i + 1..] {
            if *la == 0 || *lb == 0 || pa.is_null() || pb.is_null() {
                continue;
            }
            let (sa, sb) = (*pa as usize, *pb as usize);
            if sa < sb.saturating_add(*lb) && sb < sa.saturating_add(*la) {
                let (a, b) = (a.as_ref(), b.as_ref());
                return Err(Error::invalid(format!("{a} and {b} overlap; they must be separate buffers")));
            }
        }
    }
    Ok(())
}

/// Writes `value` through an optional out-pointer.
///
/// # Safety
/// A non-NULL `p` must be valid for a write of `T`.
unsafe fn write_out<T>(p: *mut T, value: T, name: &str) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL; validity is the caller's promise. write_unaligned avoids
    // assuming the caller aligned a plain out-parameter.
    unsafe { p.write_unaligned(value) };
    Ok(())
}

/// Refuses a NULL out-pointer of a constructor and sets `*out` to NULL, so that
/// the caller sees NULL whenever the call fails.
///
/// # Safety
/// A non-NULL `out` must be valid for writing a pointer.
unsafe fn clear_out<T>(out: *mut *mut T) -> Result<()> {
    // SAFETY: forwarded to the caller.
    unsafe { write_out(out, std::ptr::null_mut(), "out") }
}
