// LLM.int8() kernels of the CUDA backend. Embedded in libllmint8.so and
// compiled at first use with NVRTC to a CUBIN for the device.
//
// No headers: NVRTC does not find cuda_fp16.h on many machines, so 16-bit
// values are converted with inline PTX, and every floating-point step whose
// rounding matters is written as one PTX instruction with an explicit rounding
// mode (`.rn`), so that no contraction into FMA or fast-math approximation can
// change a result. The arithmetic is src/quant.rs's, step for step, so the GPU
// gives the CPU backend's results bit for bit.

typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define INF_BITS 0x7f800000u
#define QUANT_THREADS 256

// ---- kernel parameters ----
// Every kernel takes one struct by value. Each struct's fields are listed once
// (an X-macro: F(type, name)), which declares it here, writes its layout in
// llmint8_param_layout and lets tests/cuda_emu check its device pointers.
// src/cuda/params.rs mirrors each field for field (#[repr(C)]); the library
// runs llmint8_param_layout when it opens a device and refuses a device whose
// layouts differ from its own. Kernels take them `__grid_constant__`: read in
// place from the parameter space, not copied to a local (the copy made
// llmint8_prep_small spill registers at 1024 threads).
#define QUANTIZE_ROWS_PARAMS(F)                                                                                      \
    F(const void *, x) F(i64, rows) F(int, cols) F(int, ld_q) F(float, threshold) F(int, round_f16) F(int, mode)    \
    F(i8 *, q) F(float *, absmax) F(u32 *, col_flags) F(int *, first_bad_row) F(const float *, smooth)
#define RESCALE_ROWS_PARAMS(F)                                                                                       \
    F(const void *, x) F(i64, rows) F(int, cols) F(int, ld_q) F(int, round_f16) F(const float *, given)             \
    F(float *, absmax) F(const u32 *, col_flags) F(int, use_flags) F(i8 *, q) F(int *, bad_row) F(const float *, smooth)
#define PREP_SMALL_PARAMS(F)                                                                                         \
    F(const void *, x) F(i64, rows) F(int, cols) F(int, ld_q) F(i64, rows_padded) F(float, threshold)               \
    F(int, round_f16) F(int, int8_part) F(i8 *, q) F(float *, absmax) F(u32 *, col_flags) F(int *, list)            \
    F(int *, count) F(int, max_gathered) F(float *, x_out) F(const float *, smooth)
#define GATHER_OUTLIERS_PARAMS(F)                                                                                    \
    F(const void *, x) F(i64, rows) F(int, cols) F(const int *, list) F(const int *, count) F(int, max_gathered)    \
    F(i8 *, q) F(int, ld_q) F(float *, x_out) F(const float *, smooth)
#define EPILOGUE_PARAMS(F)                                                                                           \
    F(const int *, acc) F(int, ld_acc) F(i64, rows) F(int, nc) F(int, j0) F(int, n) F(const float *, sa)            \
    F(const float *, scb) F(const float *, bias) F(const int *, list) F(const int *, count) F(int, max_gathered)     \
    F(int, w_gathered) F(const float *, x_out) F(const float *, w_out) F(const void *, x) F(int, cols)              \
    F(const i8 *, cb) F(int, ld_w) F(const int *, kept_slot) F(const void *, kept) F(int, kept_dtype) F(void *, y)  \
    F(const float *, smooth)
#define OUTLIER_LIST_PARAMS(F) F(const u32 *, col_flags) F(int, cols) F(int *, list) F(int *, count)
#define GATHER_WEIGHT_COLUMNS_PARAMS(F)                                                                              \
    F(const i8 *, cb) F(int, ld_w) F(const float *, scb) F(i64, n) F(const int *, list) F(const int *, count)       \
    F(int, max_gathered) F(const int *, kept_slot) F(const void *, kept) F(int, kept_dtype) F(float *, w_out)
#define PAD_ROWS_PARAMS(F) F(const i8 *, src) F(i64, rows) F(int, cols) F(int, ld) F(i8 *, dst)
#define ROW_STATISTICS_PARAMS(F) F(const float *, absmax) F(i64, rows) F(float *, out)

// Every parameter struct, in the order of src/cuda/params.rs.
#define LLMINT8_PARAMS(S)                                                                                            \
    S(QuantizeRowsParams, QUANTIZE_ROWS_PARAMS)                                                                      \
    S(RescaleRowsParams, RESCALE_ROWS_PARAMS)                                                                        \
    S(PrepSmallParams, PREP_SMALL_PARAMS)                                                                            \
    S(GatherOutliersParams, GATHER_OUTLIERS_PARAMS)                                                                  \
    S(EpilogueParams, EPILOGUE_PARAMS)                                                                               \
    S(OutlierListParams, OUTLIER_LIST_PARAMS)                                                                        \
    S(GatherWeightColumnsParams, GATHER_WEIGHT_COLUMNS_PARAMS)                                                       \
    S(PadRowsParams, PAD_ROWS_PARAMS)                                                                                \
    S(RowStatisticsParams, ROW_STATISTICS_PARAMS)

#define LLMINT8_DECLARE_FIELD(type, name) type name;
#define LLMINT8_DECLARE_PARAMS(NAME, FIELDS) struct NAME { FIELDS(LLMINT8_DECLARE_FIELD) };
LLMINT8_PARAMS(LLMINT8_DECLARE_PARAMS)

// Writes each parameter struct's size, then each field's offset, in order.
#define LLMINT8_FIELD_OFFSET(type, name) out[i++] = (unsigned long long)((const char *)&p.name - (const char *)&p);
#define LLMINT8_LAYOUT(NAME, FIELDS) { NAME p; out[i++] = sizeof(NAME); FIELDS(LLMINT8_FIELD_OFFSET) }
extern "C" __global__ void llmint8_param_layout(unsigned long long *out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int i = 0;
    LLMINT8_PARAMS(LLMINT8_LAYOUT)
}


// ---- scalar helpers (inline PTX) ----
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
__device__ __forceinline__ float bits_to_f32(u32 b) { float f; asm("mov.b32 %0, %1;" : "=f"(f) : "r"(b)); return f; }
__device__ __forceinline__ u32 f32_to_bits(float f) { u32 b; asm("mov.b32 %0, %1;" : "=r"(b) : "f"(f)); return b; }
__device__ __forceinline__ float f16_to_f32(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f32_to_f16(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ u16 f32_to_bf16(float f) { u16 h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float mul_rn(float a, float b) { float r; asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float add_rn(float a, float b) { float r; asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float rcp_rn(float a) { float r; asm("rcp.rn.f32 %0, %1;" : "=f"(r) : "f"(a)); return r; }
__device__ __forceinline__ double dmul_rn(double a, double b) { double r; asm("mul.rn.f64 %0, %1, %2;" : "=d"(r) : "d"(a), "d"(b)); return r; }
__device__ __forceinline__ double ddiv_rn(double a, double b) { double r; asm("div.rn.f64 %0, %1, %2;" : "=d"(r) : "d"(a), "d"(b)); return r; }
__device__ __forceinline__ float d2f_rn(double a) { float r; asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(a)); return r; }
__device__ __forceinline__ int f2i_rni(float a) { int r; asm("cvt.rni.s32.f32 %0, %1;" : "=r"(r) : "f"(a)); return r; }
__device__ __forceinline__ int d2i_rni(double a) { int r; asm("cvt.rni.s32.f64 %0, %1;" : "=r"(r) : "d"(a)); return r; }
#else
// The same operations on the host, for tests/cuda_emu (the kernels' logic run
// on the CPU): IEEE float/double arithmetic rounds to nearest even there too
// (built with -ffp-contract=off), and conversions mirror PTX's (NaN → 0x7fff).
__device__ __forceinline__ float bits_to_f32(u32 b) { float f; __builtin_memcpy(&f, &b, 4); return f; }
__device__ __forceinline__ u32 f32_to_bits(float f) { u32 b; __builtin_memcpy(&b, &f, 4); return b; }
__device__ __forceinline__ float f16_to_f32(u16 h) { _Float16 v; __builtin_memcpy(&v, &h, 2); return (float)v; }
__device__ __forceinline__ u16 f32_to_f16(float f) {
    if (f != f) return 0x7fff;
    _Float16 v = (_Float16)f; u16 h; __builtin_memcpy(&h, &v, 2); return h;
}
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    if (f != f) return 0x7fff;
    u32 b = f32_to_bits(f);
    return (u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float mul_rn(float a, float b) { return a * b; }
__device__ __forceinline__ float add_rn(float a, float b) { return a + b; }
__device__ __forceinline__ float rcp_rn(float a) { return 1.0f / a; }
__device__ __forceinline__ double dmul_rn(double a, double b) { return a * b; }
__device__ __forceinline__ double ddiv_rn(double a, double b) { return a / b; }
__device__ __forceinline__ float d2f_rn(double a) { return (float)a; }
__device__ __forceinline__ int f2i_rni(float a) { return (int)__builtin_nearbyintf(a); }
__device__ __forceinline__ int d2i_rni(double a) { return (int)__builtin_nearbyint(a); }
#endif
__device__ __forceinline__ float bf16_to_f32(u16 h) { return bits_to_f32(((u32)h) << 16); }
__device__ __forceinline__ float abs_f32(float a) { return bits_to_f32(f32_to_bits(a) & 0x7fffffffu); }

// 1/127 and 1/127² in f64, as src/quant.rs multiplies by them.
#define INV_127 (1.0 / 127.0)
#define INV_127_SQ (1.0 / 16129.0)

// Element types: loads widen exactly; stores round to nearest even.
struct F32 { typedef float T; static __device__ __forceinline__ float load(const float *p, i64 i) { return p[i]; }
             static __device__ __forceinline__ void store(float *p, i64 i, float v) { p[i] = v; } };
struct F16 { typedef u16 T; static __device__ __forceinline__ float load(const u16 *p, i64 i) { return f16_to_f32(p[i]); }
             static __device__ __forceinline__ void store(u16 *p, i64 i, float v) { p[i] = f32_to_f16(v); } };
struct BF16 { typedef u16 T; static __device__ __forceinline__ float load(const u16 *p, i64 i) { return bf16_to_f32(p[i]); }
              static __device__ __forceinline__ void store(u16 *p, i64 i, float v) { p[i] = f32_to_bf16(v); } };

// InputRounding::Float16: the value rounded to float16 first.
__device__ __forceinline__ float load_rounded(float v, int round_f16) { return round_f16 ? f16_to_f32(f32_to_f16(v)) : v; }

// A smoothed weight's activation value: times the weight's 1/s of its column
// (`smooth`, NULL for an unsmoothed weight), as src/cpu/quantize.rs reads it.
__device__ __forceinline__ float smoothed(float v, const float *smooth, int c) { return smooth ? mul_rn(v, smooth[c]) : v; }

// quant::is_outlier: threshold > 0 and !(|v| < threshold) — NaN is an outlier.
__device__ __forceinline__ bool is_outlier(float v, float threshold) { return threshold > 0.0f && !(abs_f32(v) < threshold); }

// Maximum of a u32 over the block (blockDim.x a multiple of 32, at most 1024);
// every thread gets it.
__device__ __forceinline__ u32 block_max(u32 v) {
    __shared__ u32 warp_max[32];
    for (int offset = 16; offset > 0; offset >>= 1) {
        u32 other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = v;
    __syncthreads();
    u32 m = 0;
    for (unsigned w = 0; w < blockDim.x / 32; w++) m = warp_max[w] > m ? warp_max[w] : m;
    __syncthreads();
    return m;
}

// ---- row quantization (quant::quantize_activation_row / quantize_weight_row) ----
//
// One block per row. `mode` 0: activations, bitsandbytes' row scale — outlier
// elements are left out of the absmax and quantized to 0, their columns
// flagged in `col_flags`; a non-finite value that is not an outlier gives
// absmax NaN and a zero row. `mode` 1: weights — every value counts; a
// non-finite one sets `first_bad_row` (atomic minimum) and leaves the row
// zero. `mode` 2: only flags the outlier columns (the first pass of the
// int8-part row scale). `mode` 3: activations, int8-part row scale — the
// columns flagged in `col_flags` (every row's outliers) are left out of the
// absmax and quantized to 0. Columns `cols..ld_q` of `q` get 0.
template <class E>
__device__ void quantize_row(const typename E::T *x, i64 row, int cols, int ld_q, float threshold, int round_f16,
                             int mode, i8 *q, float *absmax, u32 *col_flags, int *first_bad_row, const float *smooth) {
    const i64 base = row * (i64)cols;
    if (mode == 2) {
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            if (is_outlier(smoothed(load_rounded(E::load(x, base + c), round_f16), smooth, c), threshold)) col_flags[c] = 1u;
        return;
    }
    u32 bits = 0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = smoothed(load_rounded(E::load(x, base + c), round_f16), smooth, c);
        float a = abs_f32(v);
        if (mode == 0 && is_outlier(v, threshold)) {
            col_flags[c] = 1u;  // the same value from every writer
            a = 0.0f;
        }
        if (mode == 3 && col_flags[c] != 0u) a = 0.0f;
        u32 b = f32_to_bits(a);
        bits = b > bits ? b : bits;
    }
    bits = block_max(bits);
    i8 *q_row = q + row * (i64)ld_q;
    if (bits >= INF_BITS) {
        for (int c = threadIdx.x; c < ld_q; c += blockDim.x) q_row[c] = 0;
        if (threadIdx.x == 0) {
            if (mode == 0) absmax[row] = bits_to_f32(0x7fc00000u);  // NaN
            else atomicMin(first_bad_row, (int)(row < 0x7fffffff ? row : 0x7fffffff));
        }
        return;
    }
    const float m = bits_to_f32(bits);
    if (threadIdx.x == 0) absmax[row] = m;
    // quant::row_scale: (1 / absmax) · 127 in f32; 0 for a zero row; f64
    // when 1 / absmax overflows (a subnormal absmax).
    float scale = m == 0.0f ? 0.0f : mul_rn(rcp_rn(m), 127.0f);
    const bool wide = f32_to_bits(abs_f32(scale)) >= INF_BITS;
    for (int c = threadIdx.x; c < ld_q; c += blockDim.x) {
        i8 value = 0;
        if (c < cols) {
            float v = smoothed(load_rounded(E::load(x, base + c), round_f16), smooth, c);
            const bool zero = mode == 0 ? is_outlier(v, threshold) : mode == 3 && col_flags[c] != 0u;
            if (!zero) {
                value = (i8)(wide ? d2i_rni(ddiv_rn(dmul_rn((double)v, 127.0), (double)m)) : f2i_rni(mul_rn(v, scale)));
            }
        }
        q_row[c] = value;
    }
}

template <class E>
__device__ void quantize_rows(const typename E::T *x, i64 rows, int cols, int ld_q, float threshold, int round_f16,
                              int mode, i8 *q, float *absmax, u32 *col_flags, int *first_bad_row, const float *smooth) {
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x)
        quantize_row<E>(x, row, cols, ld_q, threshold, round_f16, mode, q, absmax, col_flags, first_bad_row, smooth);
}

// ---- row-parallel (in_features split across ranks) ----
//
// quant::given_row_absmax and quant::quantize_activation_row_given_absmax:
// once `absmax` holds this slice's own row absmax (the quantization above),
// requantize row `row` with `given[row]`, the MAX over the ranks. +Inf gives
// absmax NaN and a zero row (an output row of NaN); an entry that is NaN,
// negative or below the slice's own does too, and sets `bad_row` (atomic
// minimum) — the host cannot be told otherwise without waiting. The columns
// flagged in `col_flags` (when `use_flags`) are quantized to 0; columns
// `cols..ld_q` get 0.
template <class E>
__device__ void rescale_row(const typename E::T *x, i64 row, int cols, int ld_q, int round_f16, const float *given,
                            float *absmax, const u32 *col_flags, int use_flags, i8 *q, int *bad_row,
                            const float *smooth) {
    const float g = given[row], own = absmax[row];
    __syncthreads();  // every thread has read `own` before thread 0 writes it
    const u32 g_bits = f32_to_bits(g);
    const bool bad = g != g || g < 0.0f || (g_bits != INF_BITS && (own != own || g < own));
    const float m = bad || g_bits == INF_BITS ? bits_to_f32(0x7fc00000u) : g;  // NaN: an output row of NaN
    if (bad && threadIdx.x == 0) atomicMin(bad_row, (int)(row < 0x7fffffff ? row : 0x7fffffff));
    if (f32_to_bits(m) == f32_to_bits(own)) return;  // this rank holds the row's MAX: q is right
    if (threadIdx.x == 0) absmax[row] = m;
    i8 *q_row = q + row * (i64)ld_q;
    if (m != m) {
        for (int c = threadIdx.x; c < ld_q; c += blockDim.x) q_row[c] = 0;
        return;
    }
    const i64 base = row * (i64)cols;
    float scale = m == 0.0f ? 0.0f : mul_rn(rcp_rn(m), 127.0f);
    const bool wide = f32_to_bits(abs_f32(scale)) >= INF_BITS;
    for (int c = threadIdx.x; c < ld_q; c += blockDim.x) {
        i8 value = 0;
        if (c < cols && !(use_flags && col_flags[c] != 0u)) {
            float v = smoothed(load_rounded(E::load(x, base + c), round_f16), smooth, c);
            value = (i8)(wide ? d2i_rni(ddiv_rn(dmul_rn((double)v, 127.0), (double)m)) : f2i_rni(mul_rn(v, scale)));
        }
        q_row[c] = value;
    }
}

// quant::row_statistic: a rank's statistics, NaN (a row the int8 part cannot
// quantize) reported as +Inf, which a MAX keeps.
__device__ void row_statistics(const float *absmax, i64 rows, float *out) {
    for (i64 r = blockIdx.x * (i64)blockDim.x + threadIdx.x; r < rows; r += (i64)gridDim.x * blockDim.x) {
        const float a = absmax[r];
        out[r] = a != a ? bits_to_f32(INF_BITS) : a;
    }
}
extern "C" __global__ void llmint8_row_statistics(const __grid_constant__ RowStatisticsParams p) { row_statistics(p.absmax, p.rows, p.out); }

// ---- the outlier columns, ascending (one block of 1024 threads) ----
__device__ void outlier_list(const u32 *col_flags, int cols, int *list, int *count) {
    __shared__ int warp_counts[32];
    __shared__ int base;
    if (threadIdx.x == 0) base = 0;
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int c0 = 0; c0 < cols; c0 += 1024) {
        const int c = c0 + (int)threadIdx.x;
        const bool flagged = c < cols && col_flags[c] != 0u;
        const u32 ballot = __ballot_sync(0xffffffffu, flagged);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        int before = base;
        for (int w = 0; w < warp; w++) before += warp_counts[w];
        if (flagged) list[before + __popc(ballot & ((1u << lane) - 1u))] = c;
        __syncthreads();
        if (threadIdx.x == 0) {
            int total = 0;
            for (int w = 0; w < 32; w++) total += warp_counts[w];
            base += total;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) *count = base;
}

extern "C" __global__ void __launch_bounds__(1024) llmint8_outlier_list(const __grid_constant__ OutlierListParams p) {
    outlier_list(p.col_flags, p.cols, p.list, p.count);
}

// ---- the outlier columns of X: zeroed in q, gathered as f32 `[rows, count]` ----
// Gathered only when count <= max_gathered; beyond that the epilogue reads x.
template <class E>
__device__ void gather_outliers(const typename E::T *x, i64 rows, int cols, const int *list, const int *count,
                                int max_gathered, i8 *q, int ld_q, float *x_out, const float *smooth) {
    const int n_out = *count;
    const i64 total = rows * (i64)n_out;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const i64 row = t / n_out;
        const int i = (int)(t % n_out);
        const int c = list[i];
        q[row * (i64)ld_q + c] = 0;
        if (n_out <= max_gathered) x_out[t] = smoothed(E::load(x, row * (i64)cols + c), smooth, c);
    }
}

// ---- few rows (decode): everything before the GEMM in one block ----
// One block of 1024 threads does, in order, what the separate launches do for
// many rows: zero the column flags, quantize every row (flagging outliers;
// with `int8_part`, flagging every row's first, then quantizing), list the
// outlier columns, zero them in q and gather them, and zero q's padding rows
// `rows .. rows_padded` — one launch instead of six.
template <class E>
__device__ void prep_small(const typename E::T *x, i64 rows, int cols, int ld_q, i64 rows_padded, float threshold,
                           int round_f16, int int8_part, i8 *q, float *absmax, u32 *col_flags, int *list,
                           int *count, int max_gathered, float *x_out, const float *smooth) {
    for (int c = threadIdx.x; c < cols; c += blockDim.x) col_flags[c] = 0u;
    for (i64 t = rows * (i64)ld_q + threadIdx.x; t < rows_padded * (i64)ld_q; t += blockDim.x) q[t] = 0;
    __syncthreads();
    // One call site for both passes (flag, then quantize): a second inlined
    // copy of quantize_row would spill registers at 1024 threads.
    for (int pass = int8_part ? 0 : 1; pass < 2; pass++) {
        const int mode = pass == 0 ? 2 : (int8_part ? 3 : 0);
        for (i64 row = 0; row < rows; row++)
            quantize_row<E>(x, row, cols, ld_q, threshold, round_f16, mode, q, absmax, col_flags, (int *)0, smooth);
        __syncthreads();
    }
    outlier_list(col_flags, cols, list, count);
    __syncthreads();
    gather_outliers<E>(x, rows, cols, list, count, max_gathered, q, ld_q, x_out, smooth);
}

// quant::dequantize_weight: cb · scb / 127 in f64, rounded once.
__device__ __forceinline__ float dequantize_weight(i8 cb, float scb) {
    return d2f_rn(dmul_rn(dmul_rn((double)cb, (double)scb), INV_127));
}

// Weight columns kept in their source dtype (the paper's 16-bit outlier
// weights): `slot[c]` is column c's place in `values` (`[slots, n]` of
// `dtype` 0 f32, 1 f16, 2 bf16) or -1; `slot` NULL when none is kept.
struct Kept {
    const int *slot;
    const void *values;
    int dtype;
};

// Weight element [j, c] of an outlier column: the kept value where the column
// is kept (widened exactly), else the dequantized int8 value.
__device__ __forceinline__ float outlier_weight(const i8 *cb, int ld_w, const float *scb, i64 n, i64 j, int c,
                                                Kept kept) {
    const int s = kept.slot ? kept.slot[c] : -1;
    if (s >= 0) {
        const i64 at = s * n + j;
        if (kept.dtype == 0) return F32::load((const float *)kept.values, at);
        if (kept.dtype == 1) return F16::load((const u16 *)kept.values, at);
        return BF16::load((const u16 *)kept.values, at);
    }
    return dequantize_weight(cb[j * (i64)ld_w + c], scb[j]);
}

// The weight's outlier columns (`outlier_weight`): `[n, count]` f32.
extern "C" __global__ void llmint8_gather_weight_columns(const __grid_constant__ GatherWeightColumnsParams p) {
    const i8 *cb = p.cb;
    const float *scb = p.scb;
    const int *list = p.list;
    float *w_out = p.w_out;
    const i64 n = p.n;
    const int ld_w = p.ld_w, max_gathered = p.max_gathered;
    const int n_out = *p.count;
    if (n_out > max_gathered) return;
    const Kept k = {p.kept_slot, p.kept, p.kept_dtype};
    const i64 total = n * (i64)n_out;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const i64 j = t / n_out;
        w_out[t] = outlier_weight(cb, ld_w, scb, n, j, list[t % n_out], k);
    }
}

// ---- the epilogue: y = (dequantized int8 product + outlier product) + bias ----
// quant::dequantize_product, add_outlier_product and output_value, in order.
// `acc` holds output columns j0 .. j0 + nc (a chunk of the weight's rows) as
// rows of `ld_acc` int32; `y` is the whole `[rows, n]` output.
template <class X, class Y>
__device__ void epilogue(const int *acc, int ld_acc, i64 rows, int nc, int j0, int n, const float *sa, const float *scb,
                         const float *bias, const int *list, const int *count, int max_gathered, int w_gathered,
                         const float *x_out, const float *w_out, const typename X::T *x, int cols, const i8 *cb,
                         int ld_w, Kept kept, typename Y::T *y, const float *smooth) {
    const int n_out = *count;
    const bool gathered = n_out <= max_gathered;
    // Few rows skip the weight-column gather (a launch): the epilogue reads CB.
    const bool w_from_gather = gathered && w_gathered;
    const i64 total = rows * (i64)nc;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const i64 i = t / nc;
        const int j = j0 + (int)(t % nc);
        float outlier = 0.0f;
        for (int k = 0; k < n_out; k++) {
            const int c = list[k];
            const float xv = gathered ? x_out[i * n_out + k] : smoothed(X::load(x, i * (i64)cols + c), smooth, c);
            const float wv = w_from_gather ? w_out[(i64)j * n_out + k] : outlier_weight(cb, ld_w, scb, n, j, c, kept);
            outlier = add_rn(outlier, mul_rn(xv, wv));
        }
        const double a =
            dmul_rn(dmul_rn(dmul_rn((double)acc[i * ld_acc + (j - j0)], (double)sa[i]), (double)scb[j]), INV_127_SQ);
        const float int8_part = d2f_rn(a);
        const float b = bias ? bias[j] : 0.0f;
        Y::store(y, i * (i64)n + j, add_rn(add_rn(int8_part, outlier), b));
    }
}

// Copies int8 rows `[rows, cols]` into rows of `ld` bytes, zero-padded.
extern "C" __global__ void llmint8_pad_rows(const __grid_constant__ PadRowsParams p) {
    const i8 *src = p.src;
    i8 *dst = p.dst;
    const i64 rows = p.rows;
    const int cols = p.cols, ld = p.ld;
    const i64 total = rows * (i64)ld;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        const i64 r = t / ld;
        const int c = (int)(t % ld);
        dst[t] = c < cols ? src[r * (i64)cols + c] : (i8)0;
    }
}

// ---- entry points, one per element type ----
#define QUANTIZE_ROWS(NAME, E)                                                                                        \
    extern "C" __global__ void __launch_bounds__(QUANT_THREADS) NAME(const __grid_constant__ QuantizeRowsParams p) {                \
        quantize_rows<E>((const E::T *)p.x, p.rows, p.cols, p.ld_q, p.threshold, p.round_f16, p.mode, p.q,           \
                         p.absmax, p.col_flags, p.first_bad_row, p.smooth);                                          \
    }
QUANTIZE_ROWS(llmint8_quantize_rows_f32, F32)
QUANTIZE_ROWS(llmint8_quantize_rows_f16, F16)
QUANTIZE_ROWS(llmint8_quantize_rows_bf16, BF16)

#define RESCALE_ROWS(NAME, E)                                                                                        \
    extern "C" __global__ void __launch_bounds__(QUANT_THREADS) NAME(const __grid_constant__ RescaleRowsParams p) {                 \
        for (i64 row = blockIdx.x; row < p.rows; row += gridDim.x)                                                  \
            rescale_row<E>((const E::T *)p.x, row, p.cols, p.ld_q, p.round_f16, p.given, p.absmax, p.col_flags,      \
                           p.use_flags, p.q, p.bad_row, p.smooth);                                                   \
    }
RESCALE_ROWS(llmint8_rescale_rows_f32, F32)
RESCALE_ROWS(llmint8_rescale_rows_f16, F16)
RESCALE_ROWS(llmint8_rescale_rows_bf16, BF16)

#define PREP_SMALL(NAME, E)                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024) NAME(const __grid_constant__ PrepSmallParams p) {                              \
        prep_small<E>((const E::T *)p.x, p.rows, p.cols, p.ld_q, p.rows_padded, p.threshold, p.round_f16,            \
                      p.int8_part, p.q, p.absmax, p.col_flags, p.list, p.count, p.max_gathered, p.x_out, p.smooth);  \
    }
PREP_SMALL(llmint8_prep_small_f32, F32)
PREP_SMALL(llmint8_prep_small_f16, F16)
PREP_SMALL(llmint8_prep_small_bf16, BF16)

#define GATHER_OUTLIERS(NAME, E)                                                                                     \
    extern "C" __global__ void NAME(const __grid_constant__ GatherOutliersParams p) {                                                 \
        gather_outliers<E>((const E::T *)p.x, p.rows, p.cols, p.list, p.count, p.max_gathered, p.q, p.ld_q, p.x_out,   \
                           p.smooth);                                                                                \
    }
GATHER_OUTLIERS(llmint8_gather_outliers_f32, F32)
GATHER_OUTLIERS(llmint8_gather_outliers_f16, F16)
GATHER_OUTLIERS(llmint8_gather_outliers_bf16, BF16)

#define EPILOGUE(NAME, X, Y)                                                                                         \
    extern "C" __global__ void NAME(const __grid_constant__ EpilogueParams p) {                                                       \
        epilogue<X, Y>(p.acc, p.ld_acc, p.rows, p.nc, p.j0, p.n, p.sa, p.scb, p.bias, p.list, p.count,               \
                       p.max_gathered, p.w_gathered, p.x_out, p.w_out, (const X::T *)p.x, p.cols, p.cb, p.ld_w,      \
                       Kept{p.kept_slot, p.kept, p.kept_dtype}, (Y::T *)p.y, p.smooth);                              \
    }
EPILOGUE(llmint8_epilogue_f32_f32, F32, F32)
EPILOGUE(llmint8_epilogue_f32_f16, F32, F16)
EPILOGUE(llmint8_epilogue_f32_bf16, F32, BF16)
EPILOGUE(llmint8_epilogue_f16_f32, F16, F32)
EPILOGUE(llmint8_epilogue_f16_f16, F16, F16)
EPILOGUE(llmint8_epilogue_f16_bf16, F16, BF16)
EPILOGUE(llmint8_epilogue_bf16_f32, BF16, F32)
EPILOGUE(llmint8_epilogue_bf16_f16, BF16, F16)
EPILOGUE(llmint8_epilogue_bf16_bf16, BF16, BF16)
