//! Which instructions the CPU kernels use, chosen at run time. The pipeline
//! around the int8 product (quantization, gathering the outliers, the
//! epilogue) is Rust compiled once per path with that path's instruction-set
//! extensions; hand-written intrinsics do the int8 product (`kernel.rs`:
//! portable, AVX2, AVX-512 VNNI; `amx.rs`: AMX tiles) and, on the AVX-512
//! paths, the row quantizers (`kernel::quantize_*_avx512`, both row rules, tested byte for
//! byte against the scalar rule of `quant`). Integer products are exact and
//! the float epilogue has one fixed order (Rust never fuses a multiply and an
//! add on its own), so every path gives bit-identical results.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// A compilation target of the CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuPath {
    /// The baseline of the target (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 with AVX2 (and F16C, which every AVX2 processor has).
    Avx2,
    /// x86-64 with AVX-512 F/BW and VNNI (and F16C).
    Avx512Vnni,
    /// Intel AMX int8 tiles for the int8 product of calls with many rows
    /// (prefill), AVX-512 VNNI for the rest (see `AMX_MIN_ROWS`).
    Amx,
    /// The AMX path's blocking and layouts with the six tile instructions in
    /// software (`amx::Model`): runs anywhere, slowly; for tests.
    AmxModel,
}

impl CpuPath {
    /// Every path, in the order of their discriminants (a context stores the index).
    pub const ALL: [CpuPath; 5] =
        [CpuPath::Portable, CpuPath::Avx2, CpuPath::Avx512Vnni, CpuPath::Amx, CpuPath::AmxModel];

    pub fn name(self) -> &'static str {
        match self {
            CpuPath::Portable => "portable",
            CpuPath::Avx2 => "avx2",
            CpuPath::Avx512Vnni => "avx512vnni",
            CpuPath::Amx => "amx",
            CpuPath::AmxModel => "amx-model",
        }
    }

    pub fn from_name(name: &str) -> Option<CpuPath> {
        CpuPath::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this processor can run the path.
    pub fn is_available(self) -> bool {
        match self {
            CpuPath::Portable | CpuPath::AmxModel => true,
            CpuPath::Amx => super::amx::is_available(),
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c"),
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Whether the path runs on this processor with AVX-512 F/BW/VNNI: the
    /// multiversioned code ([`multiversion`]) and the AVX-512 quantizers.
    pub fn has_avx512(self) -> bool {
        matches!(self, CpuPath::Avx512Vnni | CpuPath::Amx) && self.is_available()
    }

    /// The fastest path this processor runs (never the software model).
    pub fn best() -> CpuPath {
        let fastest_first = [CpuPath::Amx, CpuPath::Avx512Vnni, CpuPath::Avx2];
        fastest_first.into_iter().find(|p| p.is_available()).unwrap_or(CpuPath::Portable)
    }

    /// The path `LLMINT8_CPU_PATH` forces, read once per process: `None` when
    /// it is unset or empty; an `InvalidArgument` error when it names no path,
    /// `Unsupported` when it names one this processor cannot run.
    pub fn from_environment() -> Result<Option<CpuPath>> {
        static FORCED: OnceLock<Result<Option<CpuPath>>> = OnceLock::new();
        FORCED
            .get_or_init(|| {
                let Ok(value) = std::env::var("LLMINT8_CPU_PATH") else { return Ok(None) };
                if value.trim().is_empty() {
                    return Ok(None);
                }
                let names: Vec<&str> = CpuPath::ALL.iter().map(|p| p.name()).collect();
                let path = CpuPath::from_name(&value).ok_or_else(|| {
                    Error::invalid(format!(
                        "LLMINT8_CPU_PATH={value:?} names no CPU path (one of {}, or unset for the fastest)",
                        names.join(", ")
                    ))
                })?;
                if !path.is_available() {
                    let runs: Vec<&str> = CpuPath::ALL.iter().filter(|p| p.is_available()).map(|p| p.name()).collect();
                    return Err(Error::unsupported(format!(
                        "LLMINT8_CPU_PATH={}: this processor cannot run the {} CPU path (it runs {})",
                        value.trim(),
                        path.name(),
                        runs.join(", ")
                    )));
                }
                Ok(Some(path))
            })
            .clone()
    }

    /// The path new contexts use: the one `LLMINT8_CPU_PATH` forces, else the
    /// fastest. (A value [`Self::from_environment`] refuses is ignored here;
    /// `Context::new` reports it.)
    pub fn default_for_process() -> CpuPath {
        CpuPath::from_environment().ok().flatten().unwrap_or_else(CpuPath::best)
    }
}

/// Defines `$name`, which runs `$body` compiled for the chosen [`CpuPath`].
/// The body must be `#[inline(always)]` code so that it is compiled into each
/// path's function with that path's instructions.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$($g:ident: $bound:path),*>($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)] // the path, then the body's own arguments
        $vis fn $name<$($g: $bound),*>(path: $crate::cpu::isa::CpuPath, $($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body<$($g: $bound),*>($($arg: $ty),*) -> $ret $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,f16c")]
            unsafe fn avx2<$($g: $bound),*>($($arg: $ty),*) -> $ret { body($($arg),*) }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
            unsafe fn avx512vnni<$($g: $bound),*>($($arg: $ty),*) -> $ret { body($($arg),*) }

            // A path the processor lacks runs the portable code (the check is a cached load).
            match path {
                // SAFETY: the processor has AVX2 (checked in the guard).
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::isa::CpuPath::Avx2 if path.is_available() => unsafe { avx2($($arg),*) },
                // SAFETY: the processor has AVX-512 F/BW/VNNI (`has_avx512`, the guard;
                // AMX machines have it: `amx::is_available` checks it).
                #[cfg(target_arch = "x86_64")]
                _ if path.has_avx512() => unsafe { avx512vnni($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
