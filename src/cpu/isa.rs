//! Which instructions the CPU kernels use, chosen at run time. The kernels are
//! written once, in safe Rust; each path compiles the same code with more
//! instruction-set extensions enabled, so the compiler vectorizes the int8 dot
//! products with them (on AVX-512 VNNI, `vpdpwssd`). Integer products are exact
//! and the float epilogue has one fixed order (Rust never fuses a multiply and an
//! add on its own), so every path gives bit-identical results.

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
}

impl CpuPath {
    pub const ALL: [CpuPath; 3] = [CpuPath::Portable, CpuPath::Avx2, CpuPath::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            CpuPath::Portable => "portable",
            CpuPath::Avx2 => "avx2",
            CpuPath::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn from_name(name: &str) -> Option<CpuPath> {
        CpuPath::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this processor can run the path.
    pub fn is_available(self) -> bool {
        match self {
            CpuPath::Portable => true,
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

    /// The fastest path this processor runs.
    pub fn best() -> CpuPath {
        CpuPath::ALL.into_iter().rev().find(|p| p.is_available()).unwrap_or(CpuPath::Portable)
    }

    /// The path new contexts use: `LLMINT8_CPU_PATH` (`portable`, `avx2` or
    /// `avx512vnni`) when it names one this processor runs, else the fastest.
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
                $crate::cpu::isa::CpuPath::Avx512Vnni if path.is_available() => unsafe { avx512vnni($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
