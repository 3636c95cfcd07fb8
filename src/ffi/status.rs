//! Status codes, dtype and backend codes, the version, and the last-error message.

use std::ffi::c_char;

use crate::error::Status;

/// Major version of this C ABI: [`crate::ABI_VERSION`] (Cargo.toml's
/// `abi-version`); build.rs writes the header's `#define` from the same value.
/// cbindgen:ignore
pub const LLMINT8_ABI_VERSION: i32 = crate::ABI_VERSION as i32;

/// Success.
pub const LLMINT8_OK: i32 = 0;
/// A NULL pointer, an unknown enum value, a misaligned buffer, a bad threshold,
/// overlapping input and output buffers, or a value the call does not accept.
pub const LLMINT8_ERR_INVALID_ARGUMENT: i32 = 1;
/// A zero, mismatched or overflowing size.
pub const LLMINT8_ERR_SHAPE: i32 = 2;
/// A valid request this build or this machine cannot serve.
pub const LLMINT8_ERR_UNSUPPORTED: i32 = 3;
/// No usable device for the requested backend.
pub const LLMINT8_ERR_NO_DEVICE: i32 = 4;
/// The device reported a failure.
pub const LLMINT8_ERR_DEVICE: i32 = 5;
/// An allocation failed; nothing was changed.
pub const LLMINT8_ERR_OUT_OF_MEMORY: i32 = 6;
/// A file could not be read or written.
pub const LLMINT8_ERR_IO: i32 = 7;
/// A file is not in the expected format.
pub const LLMINT8_ERR_FORMAT: i32 = 8;
/// A named tensor or file does not exist.
pub const LLMINT8_ERR_NOT_FOUND: i32 = 9;
/// A bug in llmint8 (including a caught panic); please report it with the message.
pub const LLMINT8_ERR_INTERNAL: i32 = 10;

/// float32 elements.
pub const LLMINT8_F32: i32 = 0;
/// IEEE float16 elements (raw 16-bit storage).
pub const LLMINT8_F16: i32 = 1;
/// bfloat16 elements (raw 16-bit storage).
pub const LLMINT8_BF16: i32 = 2;

/// The GPU when one is usable, else the CPU.
pub const LLMINT8_BACKEND_AUTO: i32 = 0;
/// The CPU.
pub const LLMINT8_BACKEND_CPU: i32 = 1;
/// An NVIDIA GPU through CUDA.
pub const LLMINT8_BACKEND_CUDA: i32 = 2;

/// Quantize inputs from their own values (the default).
pub const LLMINT8_INPUT_EXACT: i32 = 0;
/// Round inputs to float16 before quantizing them, as bitsandbytes' Linear8bitLt
/// does: float32 inputs then reproduce its `CB`, `SCB` and outputs.
pub const LLMINT8_INPUT_ROUND_F16: i32 = 1;

/// Row scale rule (`llmint8_context_set_row_scale`): bitsandbytes' — an
/// activation row's absmax over its values below the threshold.
pub const LLMINT8_ROW_SCALE_BITSANDBYTES: i32 = 0;
/// Row scale rule: the absmax over the columns the int8 product uses (every
/// outlier column of the call left out). The default.
pub const LLMINT8_ROW_SCALE_INT8_PART: i32 = 1;

/// The outlier threshold of the paper and of bitsandbytes; 0 turns the
/// mixed-precision decomposition off.
pub const LLMINT8_DEFAULT_THRESHOLD: f32 = 6.0;

static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version, e.g. "0.1.0".
///
/// Returns a static NUL-terminated string the caller must not free.
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn llmint8_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// The name of a status code, e.g. "LLMINT8_ERR_SHAPE"; "LLMINT8_UNKNOWN_STATUS"
/// for a code that is not one.
///
/// Returns a static NUL-terminated string the caller must not free; never NULL.
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn llmint8_status_name(status: i32) -> *const c_char {
    Status::from_code(status).map_or(c"LLMINT8_UNKNOWN_STATUS", Status::c_name).as_ptr()
}

/// The message of the last call that failed on the calling thread, "" if none
/// has. Successful calls leave it unchanged.
///
/// Returns a NUL-terminated string owned by the library, valid until the next
/// failing llmint8 call on the same thread; copy it to keep it. Never NULL.
/// Thread safety: each thread has its own message.
#[no_mangle]
pub extern "C" fn llmint8_last_error() -> *const c_char {
    super::last_error_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn codes_match_the_safe_api() {
        let codes = [
            LLMINT8_OK,
            LLMINT8_ERR_INVALID_ARGUMENT,
            LLMINT8_ERR_SHAPE,
            LLMINT8_ERR_UNSUPPORTED,
            LLMINT8_ERR_NO_DEVICE,
            LLMINT8_ERR_DEVICE,
            LLMINT8_ERR_OUT_OF_MEMORY,
            LLMINT8_ERR_IO,
            LLMINT8_ERR_FORMAT,
            LLMINT8_ERR_NOT_FOUND,
            LLMINT8_ERR_INTERNAL,
        ];
        for (code, status) in codes.iter().zip(Status::ALL) {
            assert_eq!(*code, status as i32);
            // SAFETY: llmint8_status_name returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(llmint8_status_name(*code)) };
            assert_eq!(name.to_str().unwrap(), status.name());
        }
        assert_eq!(LLMINT8_F32, crate::DType::F32 as i32);
        assert_eq!(LLMINT8_F16, crate::DType::F16 as i32);
        assert_eq!(LLMINT8_BF16, crate::DType::BF16 as i32);
        assert_eq!(LLMINT8_BACKEND_AUTO, crate::Backend::Auto as i32);
        assert_eq!(LLMINT8_BACKEND_CPU, crate::Backend::Cpu as i32);
        assert_eq!(LLMINT8_BACKEND_CUDA, crate::Backend::Cuda as i32);
        assert_eq!(LLMINT8_INPUT_EXACT, crate::quant::InputRounding::Exact as i32);
        assert_eq!(LLMINT8_INPUT_ROUND_F16, crate::quant::InputRounding::Float16 as i32);
        assert_eq!(LLMINT8_ROW_SCALE_BITSANDBYTES, crate::quant::RowScale::BitsAndBytes as i32);
        assert_eq!(LLMINT8_ROW_SCALE_INT8_PART, crate::quant::RowScale::Int8Part as i32);
        assert_eq!(LLMINT8_DEFAULT_THRESHOLD, crate::quant::DEFAULT_THRESHOLD);
    }
}
