//! Errors of the safe API and their status codes at the C boundary.

use std::ffi::CStr;
use std::fmt;

/// What went wrong, as one of the fixed status codes of the C ABI.
///
/// The numeric values are part of ABI version 1 and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    InvalidArgument = 1,
    Shape = 2,
    Unsupported = 3,
    NoDevice = 4,
    Device = 5,
    OutOfMemory = 6,
    Io = 7,
    Format = 8,
    NotFound = 9,
    Internal = 10,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::InvalidArgument,
        Status::Shape,
        Status::Unsupported,
        Status::NoDevice,
        Status::Device,
        Status::OutOfMemory,
        Status::Io,
        Status::Format,
        Status::NotFound,
        Status::Internal,
    ];

    /// The status for a raw code, if it is one.
    pub fn from_code(code: i32) -> Option<Status> {
        Status::ALL.into_iter().find(|s| *s as i32 == code)
    }

    /// The C name of the status, e.g. `"LLMINT8_ERR_SHAPE"`.
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or_default()
    }

    /// [`Status::name`] as a C string, for the C ABI.
    pub fn c_name(self) -> &'static CStr {
        match self {
            Status::Ok => c"LLMINT8_OK",
            Status::InvalidArgument => c"LLMINT8_ERR_INVALID_ARGUMENT",
            Status::Shape => c"LLMINT8_ERR_SHAPE",
            Status::Unsupported => c"LLMINT8_ERR_UNSUPPORTED",
            Status::NoDevice => c"LLMINT8_ERR_NO_DEVICE",
            Status::Device => c"LLMINT8_ERR_DEVICE",
            Status::OutOfMemory => c"LLMINT8_ERR_OUT_OF_MEMORY",
            Status::Io => c"LLMINT8_ERR_IO",
            Status::Format => c"LLMINT8_ERR_FORMAT",
            Status::NotFound => c"LLMINT8_ERR_NOT_FOUND",
            Status::Internal => c"LLMINT8_ERR_INTERNAL",
        }
    }
}

/// An error: a status code and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

/// One constructor per status (`Error::shape`, `Error::io`, …); `new` for a
/// status chosen at run time.
impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        debug_assert!(status != Status::Ok);
        Error { status, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }
    pub fn shape(message: impl Into<String>) -> Error {
        Error::new(Status::Shape, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(Status::Unsupported, message)
    }
    pub fn out_of_memory(message: impl Into<String>) -> Error {
        Error::new(Status::OutOfMemory, message)
    }
    pub fn no_device(message: impl Into<String>) -> Error {
        Error::new(Status::NoDevice, message)
    }
    pub fn device(message: impl Into<String>) -> Error {
        Error::new(Status::Device, message)
    }
    pub fn io(message: impl Into<String>) -> Error {
        Error::new(Status::Io, message)
    }
    pub fn format(message: impl Into<String>) -> Error {
        Error::new(Status::Format, message)
    }
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(Status::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Status::Internal, message)
    }

    pub fn status(&self) -> Status {
        self.status
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

/// Allocates a zero-filled vector of `len` elements, returning
/// `LLMINT8_ERR_OUT_OF_MEMORY` instead of aborting when the allocator refuses.
/// Every buffer whose size the caller controls goes through here.
pub fn try_zeroed_vec<T: Copy + Default>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_resize_zeroed(&mut v, len, what)?;
    Ok(v)
}

/// Makes `v` hold `len` zeros, reusing its allocation when it is large enough;
/// fails like [`try_zeroed_vec`].
pub fn try_resize_zeroed<T: Copy + Default>(v: &mut Vec<T>, len: usize, what: &str) -> Result<()> {
    v.clear();
    v.try_reserve_exact(len).map_err(|_| {
        Error::out_of_memory(format!("cannot allocate {what}: {len} elements of {} bytes", std::mem::size_of::<T>()))
    })?;
    v.resize(len, T::default());
    Ok(())
}

/// A fallible copy of `src` (see [`try_zeroed_vec`]), written once.
pub fn try_copied_vec<T: Copy>(src: &[T], what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len()).map_err(|_| {
        Error::out_of_memory(format!(
            "cannot allocate {what}: {} elements of {} bytes",
            src.len(),
            std::mem::size_of::<T>()
        ))
    })?;
    v.extend_from_slice(src);
    Ok(v)
}

/// `rows · cols`, or a shape error naming the operand when it overflows.
pub(crate) fn checked_len(rows: usize, cols: usize, what: &str) -> Result<usize> {
    rows.checked_mul(cols).ok_or_else(|| Error::shape(format!("{what}: {rows} × {cols} elements overflows size_t")))
}

/// A shape error unless `what` holds exactly `want` elements.
pub(crate) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::shape(format!("{what} has {got} elements, expected {want}")));
    }
    Ok(())
}
