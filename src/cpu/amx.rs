//! AMX int8 tiles (Intel Xeon, 4th generation on): one `tdpbssd` multiplies a
//! 16 × 64 int8 tile of activations by a 64 × 16 int8 tile of the weight into a
//! 16 × 16 tile of i32 sums, signed × signed, so no +128 correction is needed.
//!
//! The weight's packed panels (see [`super::pack`]) are already the B operand:
//! a panel's 16 consecutive column groups are 16 rows of 64 bytes (4 bytes of
//! each of the 16 output rows), loaded with a stride of 64. The activations are
//! packed per call into the A tiles' own layout ([`pack_activations`]): a
//! row-major load with a stride of K would put the 16 rows of a tile 4 KiB
//! apart at K = 4096, in one L1 set (measured: the tile loads then dominated).
//!
//! The six instructions sit behind [`TileUnit`], implemented by the processor
//! ([`Hardware`], inline `asm!`: the AMX intrinsics are unstable in Rust) and by
//! a software model ([`Model`]), so the blocking and layout code is tested on
//! every machine and compared with the real tiles where they exist.

use super::pack::{BLOCK, GROUP, PANEL};
use super::phases::{Phase, Timer};

/// Bytes of K one tile product covers (a tile row of activations).
pub const TILE_K: usize = 64;
/// Activation rows per tile.
pub const TILE_ROWS: usize = 16;
/// Activation rows of one register block (two A tiles).
pub const BLOCK_ROWS: usize = 2 * TILE_ROWS;

/// A 16 × 16 tile of i32 sums: `[activation row][output lane]`, on a cache
/// line: `tilestored` of rows that straddle two lines is several times slower
/// (as tile loads, [`super::aligned`]).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Sums(pub [[i32; PANEL]; TILE_ROWS]);

impl Sums {
    pub const ZERO: Sums = Sums([[0; PANEL]; TILE_ROWS]);
}

impl std::ops::Index<usize> for Sums {
    type Output = [i32; PANEL];
    fn index(&self, row: usize) -> &[i32; PANEL] {
        &self.0[row]
    }
}

impl std::ops::IndexMut<usize> for Sums {
    fn index_mut(&mut self, row: usize) -> &mut [i32; PANEL] {
        &mut self.0[row]
    }
}

/// Tile registers: 0..4 accumulators (16 rows × 64 bytes of i32), 4..6 the
/// activation tiles (16 × 64 bytes), 6..8 the weight tiles (16 × 64 bytes).
/// One configuration serves every tile product, so it is loaded once per call.
#[cfg(target_arch = "x86_64")]
const TILE_CONFIG: [u8; 64] = {
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    let mut t = 0;
    while t < 8 {
        cfg[16 + 2 * t] = 64; // bytes per row
        cfg[48 + t] = 16; // rows
        t += 1;
    }
    cfg
};

/// The tile instructions the kernel uses, on the configuration above.
/// Loads check their operand's bounds, so the interface is safe.
pub trait TileUnit {
    /// `tilezero tmm{T}`.
    fn zero<const T: u8>(&mut self);
    /// `tileloadd tmm{T}`: 16 rows of 64 bytes from `src`, `stride` bytes apart.
    fn load<const T: u8>(&mut self, src: &[i8], stride: usize);
    /// `tdpbssd tmm{C}, tmm{A}, tmm{B}`: `C[m][n] += Σ_j A[m][j] · B[j / 4][4n + j % 4]`.
    fn dot<const C: u8, const A: u8, const B: u8>(&mut self);
    /// `tilestored`: the 16 × 16 i32 sums of `tmm{T}`.
    fn store<const T: u8>(&mut self, dst: &mut Sums);
    /// A hint that the 16 rows of 64 bytes at `src` (`stride` apart) are
    /// loaded soon: brings them into L1 (none of them need be in bounds).
    fn prefetch(&mut self, _src: *const i8, _stride: usize) {}
}

/// Whether this processor and kernel run AMX int8: CPUID leaf 7 (AMX-TILE,
/// AMX-INT8), the OS saving the tile state (XCR0 bits 17 and 18), AVX-512 for
/// the rest of the pipeline, and Linux granting this process the tile data
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once). Any
/// step failing means no.
pub fn is_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("xsave"))
    {
        return false;
    }
    // Leaf 7 exists when the maximum leaf (leaf 0's EAX) is at least 7.
    let leaf7 = __cpuid_count(0, 0).eax >= 7 && __cpuid_count(7, 0).edx & (3 << 24) == 3 << 24;
    if !leaf7 {
        return false;
    }
    // SAFETY: XGETBV is available: the OS enabled XSAVE (OSXSAVE, checked by
    // is_x86_feature_detected!("avx512f") above).
    let xcr0 = unsafe { _xgetbv(0) };
    if xcr0 & (3 << 17) != 3 << 17 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes the permission of
    // this process to use the tile state; it reads and writes no memory.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// The processor's tiles, configured for the kernel while this value lives
/// (tile configuration is per thread: each call's part configures its own
/// thread and releases the tiles when it ends, so no thread keeps the large
/// tile state between calls).
#[cfg(target_arch = "x86_64")]
pub struct Hardware {
    _not_send: std::marker::PhantomData<*const ()>,
}

#[cfg(target_arch = "x86_64")]
impl Hardware {
    /// Loads the tile configuration on this thread; `None` where AMX is unavailable.
    pub fn configure() -> Option<Hardware> {
        if !is_available() {
            return None;
        }
        // SAFETY: the processor has AMX and the process may use the tile state
        // (`is_available`); the configuration is 64 valid bytes (palette 1,
        // 8 tiles of 16 rows × 64 bytes).
        unsafe { std::arch::asm!("ldtilecfg [{0}]", in(reg) TILE_CONFIG.as_ptr(), options(nostack, readonly)) };
        Some(Hardware { _not_send: std::marker::PhantomData })
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Hardware {
    fn drop(&mut self) {
        // SAFETY: tiles were configured on this thread (the value is not Send).
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

#[cfg(target_arch = "x86_64")]
impl TileUnit for Hardware {
    #[inline(always)]
    fn zero<const T: u8>(&mut self) {
        // SAFETY: the tiles are configured while `self` lives.
        unsafe { std::arch::asm!("tilezero tmm{t}", t = const T, options(nostack, nomem)) };
    }
    #[inline(always)]
    fn load<const T: u8>(&mut self, src: &[i8], stride: usize) {
        assert!(src.len() >= (TILE_ROWS - 1) * stride + TILE_K);
        // SAFETY: the 16 rows of 64 bytes lie inside `src` (asserted).
        unsafe {
            std::arch::asm!("tileloadd tmm{t}, [{p} + {s}*1]", t = const T, p = in(reg) src.as_ptr(),
                s = in(reg) stride, options(nostack, readonly))
        };
    }
    #[inline(always)]
    fn dot<const C: u8, const A: u8, const B: u8>(&mut self) {
        // SAFETY: the tiles are configured while `self` lives.
        unsafe {
            std::arch::asm!("tdpbssd tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
                options(nostack, nomem))
        };
    }
    #[inline(always)]
    fn prefetch(&mut self, src: *const i8, stride: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for r in 0..TILE_ROWS {
            // SAFETY: a prefetch reads nothing and never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(src.wrapping_add(r * stride)) };
        }
    }
    #[inline(always)]
    fn store<const T: u8>(&mut self, dst: &mut Sums) {
        // SAFETY: `dst` is 16 rows of 64 bytes, stored with a stride of 64.
        unsafe {
            std::arch::asm!("tilestored [{p} + {s}*1], tmm{t}", t = const T, p = in(reg) dst.0.as_mut_ptr(),
                s = in(reg) 64usize, options(nostack))
        };
    }
}

/// The six instructions in software, on the same configuration: the tile
/// registers as arrays of bytes. Exact, slow; for tests and for machines
/// without AMX that want to run the AMX layout (`CpuPath::AmxModel`).
pub struct Model {
    tiles: [[u8; 1024]; 8],
}

impl Model {
    pub fn new() -> Model {
        Model { tiles: [[0; 1024]; 8] }
    }
    fn i32_at(&self, t: usize, m: usize, n: usize) -> i32 {
        i32::from_ne_bytes(self.tiles[t][m * 64 + 4 * n..][..4].try_into().unwrap())
    }
}

impl TileUnit for Model {
    fn zero<const T: u8>(&mut self) {
        self.tiles[T as usize] = [0; 1024];
    }
    fn load<const T: u8>(&mut self, src: &[i8], stride: usize) {
        assert!(src.len() >= (TILE_ROWS - 1) * stride + TILE_K);
        for r in 0..TILE_ROWS {
            for (d, &s) in self.tiles[T as usize][r * 64..][..64].iter_mut().zip(&src[r * stride..][..64]) {
                *d = s as u8;
            }
        }
    }
    fn dot<const C: u8, const A: u8, const B: u8>(&mut self) {
        let (a, b) = (self.tiles[A as usize], self.tiles[B as usize]);
        for m in 0..TILE_ROWS {
            for n in 0..PANEL {
                let mut sum = self.i32_at(C as usize, m, n);
                for j in 0..TILE_K {
                    // Wrapping, as the instruction does (the caller keeps K within exact range).
                    sum = sum.wrapping_add(a[m * 64 + j] as i8 as i32 * b[(j / 4) * 64 + 4 * n + j % 4] as i8 as i32);
                }
                self.tiles[C as usize][m * 64 + 4 * n..][..4].copy_from_slice(&sum.to_ne_bytes());
            }
        }
    }
    fn store<const T: u8>(&mut self, dst: &mut Sums) {
        for (m, row) in dst.0.iter_mut().enumerate() {
            for (n, v) in row.iter_mut().enumerate() {
                *v = self.i32_at(T as usize, m, n);
            }
        }
    }
}

impl Default for Model {
    fn default() -> Model {
        Model::new()
    }
}

/// How many steps of K (64 columns) ahead the products prefetch their tiles.
const PREFETCH_STEPS: usize = 2;

/// Bytes of one A tile (16 rows × 64 bytes).
const A_TILE: usize = TILE_ROWS * TILE_K;

/// Bytes of the packed activations of `rows` rows with `kp` columns
/// ([`pack_activations`]), with room for a block of 32 rows at any multiple of
/// 32 below `rows`.
pub fn packed_activation_len(rows: usize, kp: usize) -> usize {
    rows.div_ceil(BLOCK_ROWS) * BLOCK_ROWS * kp.div_ceil(TILE_K) * TILE_K
}

/// Packs quantized activations `q` `[rows, k]` as A tiles: for each 16 rows,
/// for each 64 columns, 16 × 64 bytes (row-major within the tile), columns
/// past `k` and rows past `rows` zero. Every byte of `x` (whole runs of 16
/// rows) is written, whatever it held.
pub fn pack_activations(q: &[i8], k: usize, x: &mut [i8]) {
    let kblocks = k.div_ceil(TILE_K);
    let run = kblocks * A_TILE;
    assert!(x.len().is_multiple_of(run) && q.len() <= x.len() / run * TILE_ROWS * k);
    // Every byte written, padding as zeros: `x` is scratch holding the last call's bytes.
    let mut rows = q.chunks_exact(k);
    for tiles in x.chunks_exact_mut(run) {
        for r in 0..TILE_ROWS {
            let row = rows.next().unwrap_or(&[]);
            for b in 0..kblocks {
                let dst = &mut tiles[b * A_TILE + r * TILE_K..][..TILE_K];
                let cols = &row[(b * TILE_K).min(row.len())..((b + 1) * TILE_K).min(row.len())];
                dst[..cols.len()].copy_from_slice(cols);
                dst[cols.len()..].fill(0);
            }
        }
    }
}

/// Exact products of `MT` × 16 activation rows with `NP` weight panels over
/// K = `0..kp`: `sums[mt][p]` is the tile of rows `16·mt..16·mt + 16`, panel
/// `p`. `x` starts at the first A tile of the rows ([`pack_activations`]); `w`
/// at the first panel (`panel_stride` apart). The first `kp` rounded down to
/// 64 columns run on the tiles in a 2 × 2 register block; the rest (under 64,
/// a multiple of 4) are added here. Exact when `kp <= 65536` (as every i32 path).
#[inline(always)]
pub fn products<U: TileUnit, const MT: usize, const NP: usize>(
    unit: &mut U,
    x: &[i8],
    w: &[i8],
    panel_stride: usize,
    kp: usize,
) -> [[Sums; NP]; MT] {
    let _timer = Timer::start(Phase::Products);
    let kblocks = kp.div_ceil(TILE_K);
    assert!((1..=2).contains(&MT) && (1..=2).contains(&NP) && kp.is_multiple_of(GROUP));
    assert!(x.len() >= MT * kblocks * A_TILE && w.len() >= (NP - 1) * panel_stride + PANEL * kp);
    let main = kp / TILE_K * TILE_K;
    unit.zero::<0>();
    unit.zero::<1>();
    unit.zero::<2>();
    unit.zero::<3>();
    for k0 in (0..main).step_by(TILE_K) {
        let a_at = (k0 / TILE_K) * A_TILE;
        // 16 column groups of a panel: 16 × 64 contiguous bytes.
        let b_at = (k0 / GROUP) * BLOCK;
        // The weight tiles PREFETCH_STEPS on, into L1: the hardware
        // prefetchers do not keep up with tile loads (measured, docs/PERF.md).
        // Not the activation tiles: in L2 already, their prefetches only took
        // line fill buffers from the weight's (the nest 10–15% faster without).
        let b_ahead = b_at + PREFETCH_STEPS * TILE_K / GROUP * BLOCK;
        unit.prefetch(w.as_ptr().wrapping_add(b_ahead), BLOCK);
        if NP == 2 {
            unit.prefetch(w.as_ptr().wrapping_add(panel_stride + b_ahead), BLOCK);
        }
        unit.load::<6>(&w[b_at..], BLOCK);
        unit.load::<4>(&x[a_at..], TILE_K);
        unit.dot::<0, 4, 6>();
        if NP == 2 {
            unit.load::<7>(&w[panel_stride + b_at..], BLOCK);
            unit.dot::<1, 4, 7>();
        }
        if MT == 2 {
            unit.load::<5>(&x[kblocks * A_TILE + a_at..], TILE_K);
            unit.dot::<2, 5, 6>();
            if NP == 2 {
                unit.dot::<3, 5, 7>();
            }
        }
    }
    let mut sums = [[Sums::ZERO; NP]; MT];
    unit.store::<0>(&mut sums[0][0]);
    if NP == 2 {
        unit.store::<1>(&mut sums[0][NP - 1]);
    }
    if MT == 2 {
        unit.store::<2>(&mut sums[MT - 1][0]);
        if NP == 2 {
            unit.store::<3>(&mut sums[MT - 1][NP - 1]);
        }
    }
    if main < kp {
        for (mt, sums_m) in sums.iter_mut().enumerate() {
            for (p, tile) in sums_m.iter_mut().enumerate() {
                let panel = &w[p * panel_stride..];
                for (m, row) in tile.0.iter_mut().enumerate() {
                    let xs = &x[(mt * kblocks + main / TILE_K) * A_TILE + m * TILE_K..][..kp - main];
                    for (lane, v) in row.iter_mut().enumerate() {
                        for (g, four) in xs.chunks_exact(GROUP).enumerate() {
                            let ws = &panel[(main / GROUP + g) * BLOCK + lane * GROUP..][..GROUP];
                            *v += (0..GROUP).map(|t| four[t] as i32 * ws[t] as i32).sum::<i32>();
                        }
                    }
                }
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::pack::{PackedWeight, PANEL};

    fn naive(x: &[i8], cb: &[i8], rows: usize, n: usize, k: usize) -> Vec<i32> {
        let mut y = vec![0i32; rows * n];
        for i in 0..rows {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|c| x[i * k + c] as i32 * cb[j * k + c] as i32).sum();
            }
        }
        y
    }

    fn check<U: TileUnit>(unit: &mut U) {
        let mut seed = 12345u64;
        let mut byte = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((seed >> 33) % 255) as i32 - 127) as i8 // -127..=127
        };
        for (rows, n, k) in [(32, 32, 64), (17, 20, 4), (32, 32, 130), (5, 16, 300), (32, 17, 1024), (9, 3, 4096)] {
            let mut cb: Vec<i8> = (0..n * k).map(|_| byte()).collect();
            let mut x: Vec<i8> = (0..rows * k).map(|_| byte()).collect();
            cb[0] = -127;
            x[0] = -127;
            let packed = PackedWeight::from_row_major(&cb, n, k).unwrap();
            let kp = packed.k_padded();
            let mut xp = vec![0i8; packed_activation_len(rows, kp)];
            pack_activations(&x, k, &mut xp);
            // Scratch holds the last call's bytes: the packing writes all of them.
            let mut over_old = vec![0x55i8; xp.len()];
            pack_activations(&x, k, &mut over_old);
            assert!(over_old == xp, "rows {rows} k {k}: bytes left from before the packing");
            let want = naive(&x, &cb, rows, n, k);
            for p in (0..packed.panels()).step_by(2) {
                let w = &packed.data()[p * packed.panel_stride()..];
                let two = packed.panels() - p >= 2;
                let got: Vec<Sums> = if two {
                    products::<U, 2, 2>(unit, &xp, w, packed.panel_stride(), kp).iter().flatten().copied().collect()
                } else {
                    products::<U, 2, 1>(unit, &xp, w, packed.panel_stride(), kp).iter().flatten().copied().collect()
                };
                let np = if two { 2 } else { 1 };
                for i in 0..rows {
                    for j in p * PANEL..((p + np) * PANEL).min(n) {
                        let (mt, pp) = (i / TILE_ROWS, j / PANEL - p);
                        let v = got[mt * np + pp][i % TILE_ROWS][j % PANEL];
                        assert_eq!(v, want[i * n + j], "rows {rows} n {n} k {k}: [{i}, {j}]");
                    }
                }
            }
            // One activation tile alone gives the same first 16 rows.
            let w = packed.data();
            let one = products::<U, 1, 1>(unit, &xp, w, packed.panel_stride(), kp);
            for i in 0..rows.min(TILE_ROWS) {
                for j in 0..n.min(PANEL) {
                    assert_eq!(one[0][0][i][j], want[i * n + j]);
                }
            }
        }
    }

    #[test]
    fn the_model_gives_the_exact_int8_product() {
        check(&mut Model::new());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_processor_tiles_give_the_exact_int8_product_where_present() {
        match Hardware::configure() {
            Some(mut hw) => check(&mut hw),
            None => eprintln!("no AMX int8 on this machine: only the model ran"),
        }
    }
}
