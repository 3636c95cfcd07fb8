//! Element types of weights, activations and outputs, and typed views of caller memory.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// A floating-point element type. Codes are part of ABI version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
}

impl DType {
    pub fn from_code(code: i32) -> Result<DType> {
        match code {
            0 => Ok(DType::F32),
            1 => Ok(DType::F16),
            2 => Ok(DType::BF16),
            _ => Err(Error::invalid(format!(
                "unknown dtype {code} (expected LLMINT8_F32=0, LLMINT8_F16=1 or LLMINT8_BF16=2)"
            ))),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }
}

/// A floating-point element the library reads and writes. Reading is exact
/// (every f16 and bf16 value is an f32 value); writing rounds to nearest even.
pub trait Element: Copy + Default + Send + Sync + 'static {
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// The elements of `d` when they are of this type.
    fn slice_mut<'b>(d: &'b mut DataMut<'_>) -> Option<&'b mut [Self]>;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn slice_mut<'b>(d: &'b mut DataMut<'_>) -> Option<&'b mut [f32]> {
        match d {
            DataMut::F32(s) => Some(s),
            _ => None,
        }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> f32 {
        v
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn slice_mut<'b>(d: &'b mut DataMut<'_>) -> Option<&'b mut [f16]> {
        match d {
            DataMut::F16(s) => Some(s),
            _ => None,
        }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> f16 {
        f16::from_f32(v)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn slice_mut<'b>(d: &'b mut DataMut<'_>) -> Option<&'b mut [bf16]> {
        match d {
            DataMut::BF16(s) => Some(s),
            _ => None,
        }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
}

/// Read-only elements of one of the supported dtypes.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

/// Writable elements of one of the supported dtypes.
#[derive(Debug)]
pub enum DataMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    BF16(&'a mut [bf16]),
}

/// Runs `$body` with `$s` bound to the typed slice inside a `Data` or `DataMut`,
/// monomorphising the body once per dtype.
#[macro_export]
#[doc(hidden)]
macro_rules! with_data {
    ($data:expr, $s:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($s) => $body,
            $crate::Data::F16($s) => $body,
            $crate::Data::BF16($s) => $body,
        }
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! with_data_mut {
    ($data:expr, $s:ident => $body:expr) => {
        match $data {
            $crate::DataMut::F32($s) => $body,
            $crate::DataMut::F16($s) => $body,
            $crate::DataMut::BF16($s) => $body,
        }
    };
}

impl<'a> Data<'a> {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
        }
    }
    pub fn len(&self) -> usize {
        with_data!(self, s => s.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> DataMut<'a> {
    /// The same elements, borrowed for a shorter time.
    pub fn reborrow(&mut self) -> DataMut<'_> {
        match self {
            DataMut::F32(s) => DataMut::F32(s),
            DataMut::F16(s) => DataMut::F16(s),
            DataMut::BF16(s) => DataMut::BF16(s),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            DataMut::F32(_) => DType::F32,
            DataMut::F16(_) => DType::F16,
            DataMut::BF16(_) => DType::BF16,
        }
    }
    pub fn len(&self) -> usize {
        with_data_mut!(self, s => s.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<&'a [f32]> for Data<'a> {
    fn from(s: &'a [f32]) -> Self {
        Data::F32(s)
    }
}
impl<'a> From<&'a [f16]> for Data<'a> {
    fn from(s: &'a [f16]) -> Self {
        Data::F16(s)
    }
}
impl<'a> From<&'a [bf16]> for Data<'a> {
    fn from(s: &'a [bf16]) -> Self {
        Data::BF16(s)
    }
}
impl<'a> From<&'a mut [f32]> for DataMut<'a> {
    fn from(s: &'a mut [f32]) -> Self {
        DataMut::F32(s)
    }
}
impl<'a> From<&'a mut [f16]> for DataMut<'a> {
    fn from(s: &'a mut [f16]) -> Self {
        DataMut::F16(s)
    }
}
impl<'a> From<&'a mut [bf16]> for DataMut<'a> {
    fn from(s: &'a mut [bf16]) -> Self {
        DataMut::BF16(s)
    }
}
