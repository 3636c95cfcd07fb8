// The CUDA kernels (kernels/llmint8.cu), run on the CPU by tests/cuda_emu/emu.hpp,
// against the CPU backend (libllmint8.so through its C ABI), bit for bit: weight
// quantization (CB, SCB, the non-finite check), and the whole matmul pipeline
// as src/cuda/ops.rs orders it — row quantization with outlier flags, outlier
// list, gathers (and the ungathered path beyond MAX_GATHERED columns), an
// exact int32 GEMM standing in for cuBLASLt on the same padded layouts, and
// the epilogue, for every dtype pair, thresholds 6 and 0, with and without bias,
// and float16 input rounding. Prints one line per failing case and a summary;
// exits 1 on any failure.
#include "emu.hpp"

#include "../../kernels/llmint8.cu"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "llmint8.h"

namespace {

int failures = 0, cases = 0;

void fail(const std::string &what) {
    failures++;
    if (failures <= 20) std::printf("FAIL %s\n", what.c_str());
}

size_t pad(size_t v, size_t to) { return (v + to - 1) / to * to; }
// Element-wise kernels take any block size: one warp per block keeps the
// emulation cheap; at most 3 blocks, so grid-stride loops go round.
const unsigned EW_BLOCK = 32;
unsigned grid_for(size_t total) { return (unsigned)std::min<size_t>(std::max<size_t>((total + 31) / 32, 1), 3); }

u16 to_f16(float f) { return f32_to_f16(f); }
u16 to_bf16(float f) { return f32_to_bf16(f); }

// Values of one dtype, stored as the C ABI takes them.
struct Buffer {
    int dtype;
    std::vector<float> f32;
    std::vector<u16> h;
    Buffer(int dtype, const std::vector<float> &v) : dtype(dtype) {
        if (dtype == LLMINT8_F32) f32 = v;
        for (float x : v) h.push_back(dtype == LLMINT8_F16 ? to_f16(x) : to_bf16(x));
    }
    const void *data() const { return dtype == LLMINT8_F32 ? (const void *)f32.data() : (const void *)h.data(); }
};

void check(int status, const char *what) {
    if (status != LLMINT8_OK) {
        std::printf("llmint8 call %s failed: %s\n", what, llmint8_last_error());
        std::exit(2);
    }
}

const int MAX_G = 64;

// Quantizes W [n, k] on the "device": CB [pad16(n), pad16(k)], SCB [n].
template <class E>
int quantize_weight(const void *w, size_t n, size_t k, int round, std::vector<i8> &cb, std::vector<float> &scb) {
    const size_t kp = pad(k, 16);
    cb.assign(pad(n, 16) * kp, 0);
    scb.assign(n, 0.0f);
    int bad = 0x7fffffff;
    emu::launch(E::quantize(), (unsigned)std::min<size_t>(n, 5), 256u,
                QuantizeRowsParams{w, (i64)n, (int)k, (int)kp, 0.0f, round, 1, cb.data(), scb.data(), nullptr, &bad, nullptr});
    return bad;
}

}  // namespace

// Per-dtype kernel entry points.
#define KERNELS(E, SUFFIX)                                                                                   \
    struct E##K {                                                                                            \
        using T = E::T;                                                                                      \
        static auto quantize() { return &llmint8_quantize_rows_##SUFFIX; }                                  \
        static auto gather() { return &llmint8_gather_outliers_##SUFFIX; }                                  \
        static auto prep_small() { return &llmint8_prep_small_##SUFFIX; }                                   \
    };
KERNELS(F32, f32)
KERNELS(F16, f16)
KERNELS(BF16, bf16)

using Epilogue = void (*)(const EpilogueParams);

template <class XK>
static void run_case(llmint8_context *cpu, size_t rows, size_t k, size_t n, int outlier_cols, float threshold,
                     bool with_bias, int y_dtype, int round, std::mt19937 &rng, int x_dtype, Epilogue epilogue,
                     float x_scale = 1.0f, bool small = false) {
    cases++;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> wv(n * k), xv(rows * k), bv(n);
    for (auto &v : wv) v = normal(rng) * 0.05f;
    for (auto &v : xv) v = normal(rng) * 0.7f * x_scale;
    for (auto &v : bv) v = normal(rng) * 0.1f;
    for (int c = 0; c < outlier_cols; c++) {
        const size_t col = (size_t)(c * 7919 + 3) % k;
        for (size_t r = 0; r < rows; r++) xv[r * k + col] = (r % 3 == 0 ? -1.0f : 1.0f) * (8.0f + (float)(r % 5)) + normal(rng);
    }
    Buffer w(x_dtype, wv), x(x_dtype, xv), b(x_dtype, bv);
    char tag[200];
    std::snprintf(tag, sizeof tag, "[%zu x %zu]·[%zu x %zu]ᵀ x=%d y=%d t=%g bias=%d round=%d outliers=%d small=%d", rows,
                  k, n, k, x_dtype, y_dtype, threshold, with_bias, round, outlier_cols, small);

    // The CPU backend.
    check(llmint8_context_set_input_rounding(cpu, round), "set_input_rounding");
    llmint8_weight *weight = nullptr;
    check(llmint8_weight_quantize(cpu, w.data(), x_dtype, n, k, with_bias ? b.data() : nullptr, x_dtype, &weight),
          "weight_quantize");
    std::vector<int8_t> cb_cpu(n * k);
    std::vector<float> scb_cpu(n);
    check(llmint8_weight_export(weight, cb_cpu.data(), scb_cpu.data()), "weight_export");
    const size_t ysize = y_dtype == LLMINT8_F32 ? 4 : 2;
    std::vector<unsigned char> y_cpu(rows * n * ysize), y_dev(rows * n * ysize, 0xee);
    llmint8_matmul_stats stats{};
    check(llmint8_matmul_host(cpu, weight, x.data(), x_dtype, rows, threshold, y_cpu.data(), y_dtype, &stats),
          "matmul_host");
    llmint8_weight_destroy(weight);

    // The kernels, ordered as src/cuda/ops.rs orders them.
    const size_t kp = pad(k, 16), np = pad(n, 16), mp = pad(rows, 4);
    std::vector<i8> cb;
    std::vector<float> scb;
    if (quantize_weight<XK>(w.data(), n, k, round, cb, scb) != 0x7fffffff) return fail(std::string("weight refused ") + tag);
    for (size_t j = 0; j < n; j++)
        for (size_t c = 0; c < k; c++)
            if (cb[j * kp + c] != cb_cpu[j * k + c]) return fail(std::string("CB differs ") + tag);
    if (std::memcmp(scb.data(), scb_cpu.data(), 4 * n) != 0) return fail(std::string("SCB differs ") + tag);
    std::vector<float> bias32(n);
    for (size_t j = 0; j < n; j++)
        bias32[j] = x_dtype == LLMINT8_F32 ? bv[j] : (x_dtype == LLMINT8_F16 ? f16_to_f32(b.h[j]) : bf16_to_f32(b.h[j]));

    // Poisoned scratch: every part the kernels must write is written.
    std::vector<i8> q(mp * kp, 0x55);
    std::vector<float> sa(rows), x_out(rows * MAX_G), w_out(n * MAX_G);
    std::vector<u32> flags(k, 0x77);
    std::vector<int> list(k, 0);
    int count = -1;
    if (small) {
        // Few rows: the one-block prep kernel.
        emu::launch(XK::prep_small(), 1u, 1024u,
                    PrepSmallParams{x.data(), (i64)rows, (int)k, (int)kp, (i64)mp, threshold, round,
                                    0 /* bitsandbytes' row scale */, q.data(), sa.data(), flags.data(), list.data(),
                                    &count, MAX_G, x_out.data(), nullptr /* unsmoothed */});
    } else {
        std::fill(flags.begin(), flags.end(), 0u);
        std::fill(q.begin() + rows * kp, q.end(), 0);
        count = 0;
        emu::launch(XK::quantize(), (unsigned)std::min<size_t>(rows, 3), 256u,
                    QuantizeRowsParams{x.data(), (i64)rows, (int)k, (int)kp, threshold, round, 0, q.data(), sa.data(),
                                       flags.data(), nullptr, nullptr});
        if (threshold > 0) {
            emu::launch(&llmint8_outlier_list, 1u, 1024u, OutlierListParams{flags.data(), (int)k, list.data(), &count});
            emu::launch(XK::gather(), grid_for(rows * MAX_G), EW_BLOCK,
                        GatherOutliersParams{x.data(), (i64)rows, (int)k, list.data(), &count, MAX_G, q.data(), (int)kp,
                                             x_out.data(), nullptr});
        }
    }
    // Few rows: the epilogue reads the weight's outlier columns from CB.
    const int w_gathered = small ? 0 : 1;
    if (threshold > 0 && w_gathered)
        emu::launch(&llmint8_gather_weight_columns, grid_for(n * 8), EW_BLOCK,
                    GatherWeightColumnsParams{cb.data(), (int)kp, scb.data(), (i64)n, list.data(), &count, MAX_G,
                                              nullptr, nullptr, 0, w_out.data()});
    if (count != (int)stats.outlier_columns) return fail(std::string("outlier count differs ") + tag);
    // cuBLASLt's part, in chunks of weight rows as ops.rs takes them (here 32).
    const size_t chunk = 32;
    for (size_t j0 = 0; j0 < n; j0 += chunk) {
        const size_t nc_padded = std::min(chunk, np - j0), nc = std::min(nc_padded, n - j0);
        std::vector<int> acc(mp * nc_padded);
        for (size_t i = 0; i < mp; i++)
            for (size_t jj = 0; jj < nc_padded; jj++) {
                int s = 0;
                for (size_t c = 0; c < kp; c++) s += (int)q[i * kp + c] * (int)cb[(j0 + jj) * kp + c];
                acc[i * nc_padded + jj] = s;
            }
        emu::launch(epilogue, grid_for(rows * nc), EW_BLOCK,
                    EpilogueParams{acc.data(), (int)nc_padded, (i64)rows, (int)nc, (int)j0, (int)n, sa.data(),
                                   scb.data(), with_bias ? bias32.data() : nullptr, list.data(), &count, MAX_G,
                                   w_gathered, x_out.data(), w_out.data(), x.data(), (int)k, cb.data(), (int)kp,
                                   nullptr, nullptr, 0, y_dev.data(), nullptr});
    }
    if (y_cpu != y_dev) {
        size_t first = 0;
        while (first < y_cpu.size() && y_cpu[first] == y_dev[first]) first++;
        return fail(std::string("y differs (first byte ") + std::to_string(first) + ") " + tag);
    }
}

template <class XK>
static Epilogue epilogue_for(int y_dtype);

#define EPILOGUE_FOR(XK, SUFFIX)                                                                             \
    template <> Epilogue epilogue_for<XK>(int y_dtype) {                                                     \
        if (y_dtype == LLMINT8_F32) return (Epilogue)&llmint8_epilogue_##SUFFIX##_f32;                     \
        if (y_dtype == LLMINT8_F16) return (Epilogue)&llmint8_epilogue_##SUFFIX##_f16;                     \
        return (Epilogue)&llmint8_epilogue_##SUFFIX##_bf16;                                                 \
    }
EPILOGUE_FOR(F32K, f32)
EPILOGUE_FOR(F16K, f16)
EPILOGUE_FOR(BF16K, bf16)

template <class XK>
static void run_all(llmint8_context *cpu, int x_dtype, std::mt19937 &rng) {
    struct Shape {
        size_t rows, k, n;
        int outliers;
    };
    // 1500 columns: the outlier list takes two chunks of 1024.
    const Shape shapes[] = {{1, 64, 77, 2}, {3, 333, 45, 6}, {9, 70, 33, 0}, {5, 200, 20, 70}, {2, 1500, 20, 5}};
    const int ys[] = {LLMINT8_F32, LLMINT8_F16, LLMINT8_BF16};
    int i = 0;
    for (const Shape &s : shapes)
        for (float t : {6.0f, 0.0f}) {
            // Every output dtype, and float16 input rounding (which changes
            // nothing for float16 inputs), over the shapes in turn.
            const int y = ys[i % 3], round = x_dtype != LLMINT8_F16 && i % 2 == 1;
            i++;
            // Both ways before the GEMM: separate launches, and the one-block
            // prep kernel that src/cuda/ops.rs takes for few rows.
            for (bool small : {false, true})
                run_case<XK>(cpu, s.rows, s.k, s.n, s.outliers, t, (s.n % 2) == 1, y, round, rng, x_dtype,
                             epilogue_for<XK>(y), 1.0f, small);
        }
}

int main() {
    llmint8_context *cpu = nullptr;
    check(llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &cpu), "context_create");
    // These cases drive the kernels with bitsandbytes' row rule; the int8-part
    // rule (the default) goes through the whole backend in tests/cuda_backend.rs.
    check(llmint8_context_set_row_scale(cpu, LLMINT8_ROW_SCALE_BITSANDBYTES), "set_row_scale");
    std::mt19937 rng(42);
    run_all<F32K>(cpu, LLMINT8_F32, rng);
    run_all<F16K>(cpu, LLMINT8_F16, rng);
    run_all<BF16K>(cpu, LLMINT8_BF16, rng);

    // Rows whose absmax is subnormal: 1 / absmax overflows float32, so rows
    // are scaled in float64 (quant::row_scale's fallback).
    run_case<F32K>(cpu, 3, 48, 20, 0, 6.0f, false, LLMINT8_F32, 0, rng, LLMINT8_F32, epilogue_for<F32K>(LLMINT8_F32),
                   1e-39f);

    // Padding int8 rows to 16 bytes (a weight uploaded from the host).
    {
        cases++;
        const size_t r = 5, c = 37, ld = 48;
        std::vector<i8> src(r * c), dst(r * ld, 99);
        for (size_t i = 0; i < src.size(); i++) src[i] = (i8)(i * 37 % 255 - 127);
        emu::launch(&llmint8_pad_rows, 2u, EW_BLOCK, PadRowsParams{src.data(), (i64)r, (int)c, (int)ld, dst.data()});
        for (size_t i = 0; i < r; i++)
            for (size_t j = 0; j < ld; j++)
                if (dst[i * ld + j] != (j < c ? src[i * c + j] : 0)) {
                    fail("llmint8_pad_rows");
                    i = r;
                    break;
                }
    }

    // A non-finite weight value: the row is reported (the smallest of two).
    std::vector<float> w(6 * 40, 0.5f);
    w[4 * 40 + 3] = NAN;
    w[2 * 40 + 39] = INFINITY;
    std::vector<i8> cb;
    std::vector<float> scb;
    cases++;
    if (quantize_weight<F32K>(w.data(), 6, 40, 0, cb, scb) != 2) fail("the first non-finite weight row is not 2");
    llmint8_context_destroy(cpu);
    std::printf("%d cases, %d failures\n", cases, failures);
    return failures == 0 ? 0 : 1;
}
