//! The floors of the AMX int8 path, measured on this machine (docs/PERF.md):
//! `tdpbssd` alone, and the 2 × 2 register block of `src/cpu/amx.rs` (4 tile
//! loads per 4 products) with its operands in L1 or L2, from addresses on a
//! cache line and 16 bytes past one (where the allocator puts large blocks);
//! then the library's nest for one thread at M = 512 with one block of the
//! weight reused or the whole weight streamed from L3, as a call reads it.
//! One thread; run one per core with `taskset` to see the cores together.
//!
//!     cargo run --release --example amx_floors
//!
//! Prints nothing but a note where the processor or kernel has no AMX int8.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod tiles {
    use std::arch::asm;
    use std::time::Instant;

    /// Palette 1, 8 tiles of 16 rows × 64 bytes, as the library configures them.
    static CONFIG: [u8; 64] = {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        let mut t = 0;
        while t < 8 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = 16;
            t += 1;
        }
        cfg
    };

    /// Whether this process may use the tiles (the CPUID flag Linux reports
    /// and its permission for the tile state).
    pub fn available() -> bool {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) changes only this process's permission.
        flags.contains(" amx_int8") && unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) == 0 }
    }

    /// One step of the library's inner loop: B0, A0, C00, B1, C01, A1, C10, C11
    /// (two activation row groups `a0`, `a1`, two weight panels `b0`, `b1`).
    ///
    /// # Safety
    /// Tiles configured; each pointer readable for 1 KiB.
    #[inline(always)]
    unsafe fn block_step(a0: *const i8, a1: *const i8, b0: *const i8, b1: *const i8) {
        let s = 64usize;
        asm!("tileloadd tmm6, [{b0} + {s}*1]", "tileloadd tmm4, [{a0} + {s}*1]", "tdpbssd tmm0, tmm4, tmm6",
             "tileloadd tmm7, [{b1} + {s}*1]", "tdpbssd tmm1, tmm4, tmm7",
             "tileloadd tmm5, [{a1} + {s}*1]", "tdpbssd tmm2, tmm5, tmm6", "tdpbssd tmm3, tmm5, tmm7",
             a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1, s = in(reg) s,
             options(nostack, readonly));
    }

    /// Best of 5 runs of `steps` steps of 4 products, in TOPS.
    fn tops(steps: usize, f: impl Fn()) -> f64 {
        f();
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min);
        (steps * 4 * 16 * 16 * 64 * 2) as f64 / best / 1e12
    }

    pub fn run() {
        // SAFETY: the tiles are available (checked by the caller); CONFIG is 64 valid bytes.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) CONFIG.as_ptr(), options(nostack, readonly)) };
        let steps = 200_000;
        let buf = vec![1i8; 4 << 20];
        let base = buf.as_ptr().wrapping_add(buf.as_ptr().align_offset(4096));
        println!(
            "tdpbssd into 4 accumulators, no loads: {:.2} TOPS",
            tops(steps, || {
                // SAFETY: the tiles are configured.
                for _ in 0..steps {
                    unsafe {
                        asm!(
                            "tdpbssd tmm0, tmm4, tmm6",
                            "tdpbssd tmm1, tmm4, tmm7",
                            "tdpbssd tmm2, tmm5, tmm6",
                            "tdpbssd tmm3, tmm5, tmm7",
                            options(nostack, nomem)
                        )
                    };
                }
            })
        );
        // A and B each cycle over `span` bytes: 16 KiB stays in L1 (48 KiB), 256 KiB in L2.
        for (span, level) in [(16usize << 10, "L1"), (256 << 10, "L2")] {
            for offset in [0usize, 16] {
                let (a0, b0) = (base.wrapping_add(offset), base.wrapping_add((1 << 20) + offset));
                let t = tops(steps, || {
                    for i in 0..steps {
                        let at = (i * 2048) % span;
                        // SAFETY: at + 2 KiB + 16 <= span + 16 < 1 MiB: inside `buf` after `base`.
                        unsafe { block_step(a0.add(at), a0.add(at + 1024), b0.add(at), b0.add(at + 1024)) };
                    }
                });
                println!("2 x 2 block, operands in {level}, rows {offset:2} bytes past a cache line: {t:.2} TOPS");
            }
        }
        for (panels, streamed, prefetch_rows) in [(8, false, true), (8, true, true), (2, true, true), (2, true, false)]
        {
            let weight = if streamed { "the 16 MiB weight streamed" } else { "one 512 KiB block reused" };
            let rows = if prefetch_rows { "all tiles prefetched" } else { "weight tiles prefetched" };
            println!(
                "nest of one thread at M = 512 (tiles only), blocks of {panels} panels, {weight}, {rows}: {:.2} TOPS",
                nest(panels, streamed, prefetch_rows)
            );
        }
        // SAFETY: the tiles were configured on this thread.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// 16 rows of 64 bytes into L1 ahead of a tile load.
    #[inline(always)]
    fn prefetch_tile(p: *const i8) {
        for r in 0..16 {
            // SAFETY: a prefetch reads nothing and never faults.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(r * 64)) };
        }
    }

    /// The tile loop of one thread's part of an M = 512, K = N = 4096 call
    /// (256 rows, 1 MiB of activation tiles; the weight's 256 panels of 64 KiB),
    /// tiles only: blocks of `panels` panels, each over all 8 row blocks of 32
    /// rows, each row block over the block's pairs of panels, full K. `streamed`:
    /// each block is the next part of the 16 MiB weight, as a call reads it;
    /// otherwise one block is reused (operands from L2 alone). `prefetch_rows`:
    /// the activation tiles are prefetched as well as the weight's.
    fn nest(panels: usize, streamed: bool, prefetch_rows: bool) -> f64 {
        const KIB64: usize = 64 << 10;
        let buf = vec![1i8; 20 << 20];
        let base = buf.as_ptr().wrapping_add(buf.as_ptr().align_offset(4096));
        let (a, w) = (base, base.wrapping_add(2 << 20));
        let blocks = 256 / panels;
        let steps = blocks * 8 * (panels / 2) * 64;
        tops(steps, || {
            for block in 0..blocks {
                let b = w.wrapping_add(if streamed { block * panels * KIB64 } else { 0 });
                for rows in 0..8 {
                    for pair in 0..panels / 2 {
                        let (a0, b0) = (a.wrapping_add(2 * rows * KIB64), b.wrapping_add(2 * pair * KIB64));
                        let (a1, b1) = (a0.wrapping_add(KIB64), b0.wrapping_add(KIB64));
                        // SAFETY: the tiles are configured.
                        unsafe {
                            asm!(
                                "tilezero tmm0",
                                "tilezero tmm1",
                                "tilezero tmm2",
                                "tilezero tmm3",
                                options(nostack, nomem)
                            )
                        };
                        for k in 0..64 {
                            let (at, ahead) = (k * 1024, (k + 2) * 1024);
                            prefetch_tile(b0.wrapping_add(ahead));
                            prefetch_tile(b1.wrapping_add(ahead));
                            if prefetch_rows {
                                prefetch_tile(a0.wrapping_add(ahead));
                                prefetch_tile(a1.wrapping_add(ahead));
                            }
                            // SAFETY: every tile lies inside `buf` (2 MiB + 16 MiB + 1 KiB past `base`).
                            unsafe { block_step(a0.add(at), a1.add(at), b0.add(at), b1.add(at)) };
                        }
                    }
                }
            }
        })
    }
}

fn main() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if tiles::available() {
        return tiles::run();
    }
    println!("no AMX int8 on this machine (or Linux refused the tile state): nothing to measure");
}
