//! Which instructions the CPU kernels use, chosen at run time. The pipeline
//! around the int8 product is written once in safe Rust and compiled per path
//! with that path's instruction-set extensions; the int8 product itself has a
//! hand-written microkernel per path (`kernel.rs`: portable, AVX2, AVX-512
//! VNNI; `amx.rs`: AMX tiles). Integer products are exact and the float
//! epilogue has one fixed order (Rust never fuses a multiply and an add on its
//! own), so every path gives bit-identical results.

use std::sync::OnceLock;

/// A compilation target of the CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuPath {
    /// The baseline of the target (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 with AVX2.
    Avx2,
    /// x86-64 with AVX-512 F/BW and VNNI.
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
            CpuPath::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Whether the path runs on this processor with AVX-512 F/BW/VNNI (the
    /// multiversioned code is compiled with them; see [`multiversion`]).
    pub fn has_avx512(self) -> bool {
        matches!(self, CpuPath::Avx512Vnni | CpuPath::Amx) && self.is_available()
    }

    /// The fastest path this processor runs (never the software model).
    pub fn best() -> CpuPath {
        let fastest_first = [CpuPath::Amx, CpuPath::Avx512Vnni, CpuPath::Avx2];
        fastest_first.into_iter().find(|p| p.is_available()).unwrap_or(CpuPath::Portable)
    }

    /// The path new contexts use: `LLMINT8_CPU_PATH` (`portable`, `avx2`,
    /// `avx512vnni`, `amx` or `amx-model`) when it names one this processor runs, else the fastest.
    pub fn default_for_process() -> CpuPath {
        static DEFAULT: OnceLock<CpuPath> = OnceLock::new();
        *DEFAULT.get_or_init(|| {
            std::env::var("LLMINT8_CPU_PATH")
                .ok()
                .and_then(|v| CpuPath::from_name(&v))
                .filter(|p| p.is_available())
                .unwrap_or_else(CpuPath::best)
        })
    }
}

/// Defines `$name`, which runs `$body` compiled for the chosen [`CpuPath`].
/// The body must be `#[inline(always)]` code so that it is compiled into each
/// path's function with that path's instructions.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident<$($g:ident: $bound:path),*>($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name<$($g: $bound),*>(path: $crate::cpu::isa::CpuPath, $($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body<$($g: $bound),*>($($arg: $ty),*) -> $ret $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<$($g: $bound),*>($($arg: $ty),*) -> $ret { body($($arg),*) }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
            unsafe fn avx512vnni<$($g: $bound),*>($($arg: $ty),*) -> $ret { body($($arg),*) }

            // A path the processor lacks runs the portable code (the check is a cached load).
            match path {
                // SAFETY: the processor has AVX2 (checked in the guard).
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::isa::CpuPath::Avx2 if path.is_available() => unsafe { avx2($($arg),*) },
                // SAFETY: the processor has AVX-512 F/BW/VNNI (checked in the guard).
                #[cfg(target_arch = "x86_64")]
                // (AMX machines have AVX-512: `amx::is_available` checks it.)
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::isa::CpuPath::Avx512Vnni | $crate::cpu::isa::CpuPath::Amx if path.is_available() => unsafe { avx512vnni($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
