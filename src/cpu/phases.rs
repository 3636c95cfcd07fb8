//! Where a CPU call's time goes, phase by phase and thread by thread — for the
//! benchmark's account of a call (`cargo run --release --features
//! phase-timing --example bench -- phases`). Without the `phase-timing`
//! feature a [`Timer`] is an empty value and nothing is recorded.

/// The phases of a call that the account separates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// X quantized: outlier columns, row scales, int8 rows (on the calling
    /// thread, its parts on the workers inside).
    Quantize,
    /// The int8 rows laid out for the microkernels (AMX tiles, VNNI groups).
    LayOut,
    /// Exact int8 products on the AMX and VNNI kernels: tile loads, `tdpbssd`
    /// / VNNI dot products, tile stores (the portable and AVX2 ones untimed).
    Products,
    /// The outlier columns of a block of weight panels dequantized.
    OutlierWeights,
    /// Sums scaled, the floating-point outlier product added, bias, output written.
    Epilogue,
    /// One thread's whole share of a product (its blocks), from which the
    /// caller's waiting for the others follows.
    Part,
    /// A whole product on the calling thread: its parts and the wait for them.
    Product,
}

impl Phase {
    /// Every phase, in declaration order (the recorder indexes by `phase as usize`).
    #[cfg_attr(not(feature = "phase-timing"), allow(dead_code))] // read by the benchmark
    pub const ALL: [Phase; 7] = [
        Phase::Quantize,
        Phase::LayOut,
        Phase::Products,
        Phase::OutlierWeights,
        Phase::Epilogue,
        Phase::Part,
        Phase::Product,
    ];
}

/// Times a phase from its creation to its drop, on this thread (with the
/// feature; without it, an empty value). A guard rather than a closure: a
/// closure inside the multiversioned kernels is compiled without their
/// target features (measured: the AMX call twice as slow).
pub(crate) struct Timer {
    #[cfg(feature = "phase-timing")]
    phase: Phase,
    #[cfg(feature = "phase-timing")]
    start: std::time::Instant,
}

impl Timer {
    #[inline(always)]
    pub(crate) fn start(phase: Phase) -> Timer {
        #[cfg(feature = "phase-timing")]
        return Timer { phase, start: std::time::Instant::now() };
        #[cfg(not(feature = "phase-timing"))]
        {
            let _ = phase;
            Timer {}
        }
    }

    /// Ends the phase here (rather than at the end of the scope).
    #[inline(always)]
    pub(crate) fn stop(self) {}
}

#[cfg(feature = "phase-timing")]
impl Drop for Timer {
    fn drop(&mut self) {
        record::add(self.phase, self.start.elapsed());
    }
}

#[cfg(feature = "phase-timing")]
pub use record::take;

#[cfg(feature = "phase-timing")]
mod record {
    use super::Phase;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    type Totals = Arc<Mutex<[Duration; 7]>>;

    /// Every thread's totals (its name and id), registered at its first phase.
    static THREADS: Mutex<Vec<(String, Totals)>> = Mutex::new(Vec::new());

    thread_local! {
        // This thread's totals: an uncontended lock per phase, no lookup.
        static MINE: Totals = {
            let totals = Totals::default();
            let thread = std::thread::current();
            let name = format!("{} {:?}", thread.name().unwrap_or("unnamed"), thread.id());
            THREADS.lock().unwrap_or_else(PoisonError::into_inner).push((name, totals.clone()));
            totals
        };
    }

    pub(super) fn add(phase: Phase, elapsed: Duration) {
        // The variants are declared in `Phase::ALL`'s order.
        MINE.with(|m| m.lock().unwrap_or_else(PoisonError::into_inner)[phase as usize] += elapsed);
    }

    /// The times recorded since the last call, per thread that recorded any,
    /// and clears them.
    pub fn take() -> Vec<(String, [Duration; 7])> {
        let threads = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
        threads
            .iter()
            .map(|(name, totals)| {
                (name.clone(), std::mem::take(&mut *totals.lock().unwrap_or_else(PoisonError::into_inner)))
            })
            .filter(|(_, times)| times.iter().any(|t| !t.is_zero()))
            .collect()
    }
}
