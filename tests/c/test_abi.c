/* Exercises every function of the llmint8 C ABI through the committed header
 * and the built shared library, including each error path and
 * llmint8_last_error(). Built by tests/c_abi.rs with
 *   cc -std=c11 -Wall -Wextra -Werror -pthread
 * Exit status 0 means every check passed. */
#include "llmint8.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        checks++;                                                                \
        if (!(cond)) {                                                           \
            failures++;                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

/* A call must fail with `want` and leave a non-empty message naming `needle`. */
#define EXPECT_ERR(call, want, needle)                                           \
    do {                                                                         \
        int32_t got_ = (call);                                                   \
        checks++;                                                                \
        const char *msg_ = llmint8_last_error();                                 \
        if (got_ != (want) || msg_ == NULL || msg_[0] == '\0' ||                 \
            strstr(msg_, (needle)) == NULL) {                                    \
            failures++;                                                          \
            fprintf(stderr, "%s:%d: %s\n  returned %s, wanted %s; message: \"%s\" (wanted \"%s\")\n", \
                    __FILE__, __LINE__, #call, llmint8_status_name(got_),        \
                    llmint8_status_name(want), msg_ ? msg_ : "(null)", (needle)); \
        }                                                                        \
    } while (0)

#define EXPECT_OK(call)                                                          \
    do {                                                                         \
        int32_t got_ = (call);                                                   \
        checks++;                                                                \
        if (got_ != LLMINT8_OK) {                                                \
            failures++;                                                          \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__,  \
                    #call, llmint8_status_name(got_), llmint8_last_error());     \
        }                                                                        \
    } while (0)

/* float -> bfloat16 bits, round to nearest even (finite inputs). */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* float -> float16 bits for values float16 represents exactly (normal range). */
static uint16_t to_f16_exact(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) == 0) return (uint16_t)(u >> 16);
    uint32_t sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xff, man = u & 0x7fffff;
    return (uint16_t)(sign | ((exp - 112) << 10) | (man >> 13));
}

static float from_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t u = exp == 0 ? sign : (sign | ((exp + 112) << 23) | (man << 13));
    float f;
    memcpy(&f, &u, 4);
    return f;
}

enum { N = 6, K = 10, M = 3, CANARY = 0x5A };

static void *failing_thread(void *arg) {
    (void)arg;
    llmint8_context *ctx = NULL;
    int32_t s = llmint8_context_create(99, 0, &ctx);
    return (void *)(intptr_t)(s == LLMINT8_ERR_INVALID_ARGUMENT && strstr(llmint8_last_error(), "99") != NULL);
}

/* Checkpoints, run from the repository root: tests/data holds bitsandbytes' files. */
static void test_checkpoints(llmint8_context *ctx) {
    const char *dir = "tests/data/tiny-llama-int8";
    llmint8_checkpoint *ck = (llmint8_checkpoint *)1, *io = NULL;
    EXPECT_ERR(llmint8_checkpoint_open("tests/data/no-such-model", &ck), LLMINT8_ERR_NOT_FOUND, "no-such-model");
    CHECK(ck == NULL);
    EXPECT_ERR(llmint8_checkpoint_open(NULL, &ck), LLMINT8_ERR_INVALID_ARGUMENT, "path");
    EXPECT_OK(llmint8_checkpoint_open(dir, &ck));
    EXPECT_OK(llmint8_checkpoint_open("tests/data/tiny-llama-int8/reference_io.safetensors", &io));
    size_t count = 0, int8_layers = 0;
    EXPECT_OK(llmint8_checkpoint_num_tensors(ck, &count));
    CHECK(count == 49);
    for (size_t i = 0; i < count; i++) {
        llmint8_tensor_info info;
        EXPECT_OK(llmint8_checkpoint_tensor_info(ck, i, &info));
        if (info.kind != LLMINT8_KIND_INT8_WEIGHT) continue;
        int8_layers++;
        CHECK(info.dtype == LLMINT8_TENSOR_I8 && strcmp(info.dtype_name, "I8") == 0 && info.ndim == 2);
        CHECK(info.num_bytes == info.shape[0] * info.shape[1]);
        /* Every int8 layer loads, with the shape the file gives. */
        char prefix[256];
        size_t len = strlen(info.name) - strlen(".weight");
        CHECK(len < sizeof prefix);
        memcpy(prefix, info.name, len);
        prefix[len] = '\0';
        llmint8_weight *w = NULL;
        EXPECT_OK(llmint8_weight_load(ctx, ck, prefix, &w));
        size_t out_f = 0, in_f = 0;
        EXPECT_OK(llmint8_weight_shape(w, &out_f, &in_f));
        CHECK(out_f == info.shape[0] && in_f == info.shape[1]);
        /* Two layers have bitsandbytes' output for an input: reproduce it. */
        char name[300];
        size_t xi, yi;
        snprintf(name, sizeof name, "%s.x", prefix);
        if (llmint8_checkpoint_find(io, name, &xi) == LLMINT8_OK) {
            snprintf(name, sizeof name, "%s.y", prefix);
            EXPECT_OK(llmint8_checkpoint_find(io, name, &yi));
            llmint8_tensor_info xinfo, yinfo;
            EXPECT_OK(llmint8_checkpoint_tensor_info(io, xi, &xinfo));
            EXPECT_OK(llmint8_checkpoint_tensor_info(io, yi, &yinfo));
            CHECK(xinfo.dtype == LLMINT8_TENSOR_F16 && xinfo.shape[1] == in_f);
            uint16_t *x = malloc(xinfo.num_bytes), *want = malloc(yinfo.num_bytes), *y = malloc(yinfo.num_bytes);
            EXPECT_OK(llmint8_checkpoint_read(io, xi, x, xinfo.num_bytes));
            EXPECT_OK(llmint8_checkpoint_read(io, yi, want, yinfo.num_bytes));
            size_t rows = xinfo.shape[0];
            EXPECT_OK(llmint8_matmul(ctx, w, x, LLMINT8_F16, rows, 6.0f, y, LLMINT8_F16, NULL));
            double diff = 0, norm = 0;
            for (size_t e = 0; e < rows * out_f; e++) {
                double d = from_f16(y[e]) - from_f16(want[e]);
                diff += d * d;
                norm += (double)from_f16(want[e]) * from_f16(want[e]);
            }
            CHECK(sqrt(diff / norm) <= 1e-3);
            free(x);
            free(want);
            free(y);
        }
        llmint8_weight_destroy(w);
    }
    CHECK(int8_layers == 14);
    /* Save a layer, read it back through a second path. */
    llmint8_weight *w = NULL, *back = NULL;
    const char *saved = "target/c-test-saved-layer.safetensors";
    EXPECT_OK(llmint8_weight_load_safetensors(ctx, dir, "model.layers.1.mlp.down_proj", &w));
    EXPECT_OK(llmint8_weight_save_safetensors(w, saved, "down"));
    EXPECT_OK(llmint8_weight_load_safetensors(ctx, saved, "down", &back));
    size_t n = 256, k = 688;
    int8_t *cb1 = malloc(n * k), *cb2 = malloc(n * k);
    float scb1[256], scb2[256];
    EXPECT_OK(llmint8_weight_export(w, cb1, scb1));
    EXPECT_OK(llmint8_weight_export(back, cb2, scb2));
    CHECK(memcmp(cb1, cb2, n * k) == 0 && memcmp(scb1, scb2, sizeof scb1) == 0);
    free(cb1);
    free(cb2);
    llmint8_weight_destroy(w);
    llmint8_weight_destroy(back);
    remove(saved);
    /* A truncated copy is refused with a message naming the file and tensor. */
    FILE *f = fopen("tests/data/tiny-llama-int8/model.safetensors", "rb");
    FILE *g = fopen("target/c-test-truncated.safetensors", "wb");
    CHECK(f != NULL && g != NULL);
    char buf[4096];
    for (int i = 0; i < 100; i++) {
        size_t got = fread(buf, 1, sizeof buf, f);
        fwrite(buf, 1, got, g);
    }
    fclose(f);
    fclose(g);
    llmint8_checkpoint *bad = (llmint8_checkpoint *)1;
    EXPECT_ERR(llmint8_checkpoint_open("target/c-test-truncated.safetensors", &bad), LLMINT8_ERR_FORMAT, "truncated");
    CHECK(bad == NULL && strstr(llmint8_last_error(), "c-test-truncated.safetensors") != NULL);
    remove("target/c-test-truncated.safetensors");
    w = (llmint8_weight *)1;
    EXPECT_ERR(llmint8_weight_load(ctx, ck, "model.layers.9.mlp.up_proj", &w), LLMINT8_ERR_NOT_FOUND, "model.layers.9");
    CHECK(w == NULL);
    llmint8_checkpoint_destroy(io);
    llmint8_checkpoint_destroy(ck);
    llmint8_checkpoint_destroy(NULL);
}

int main(void) {
    /* --- version, status names, last error before any failure --- */
    CHECK(strlen(llmint8_version()) > 0);
    CHECK(strcmp(llmint8_status_name(LLMINT8_OK), "LLMINT8_OK") == 0);
    CHECK(strcmp(llmint8_status_name(LLMINT8_ERR_SHAPE), "LLMINT8_ERR_SHAPE") == 0);
    CHECK(strcmp(llmint8_status_name(LLMINT8_ERR_INTERNAL), "LLMINT8_ERR_INTERNAL") == 0);
    CHECK(strcmp(llmint8_status_name(42), "LLMINT8_UNKNOWN_STATUS") == 0);
    CHECK(strcmp(llmint8_status_name(-1), "LLMINT8_UNKNOWN_STATUS") == 0);
    CHECK(strcmp(llmint8_last_error(), "") == 0);
    CHECK(sizeof(llmint8_matmul_stats) == 64);
    CHECK(LLMINT8_ABI_VERSION == 1);

    /* --- contexts --- */
    llmint8_context *ctx = (llmint8_context *)&failures; /* must be reset to NULL */
    EXPECT_ERR(llmint8_context_create(LLMINT8_BACKEND_CPU, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(llmint8_context_create(99, 0, &ctx), LLMINT8_ERR_INVALID_ARGUMENT, "backend");
    CHECK(ctx == NULL);
    EXPECT_ERR(llmint8_context_create(-1, 0, &ctx), LLMINT8_ERR_INVALID_ARGUMENT, "backend");
    EXPECT_ERR(llmint8_context_create(LLMINT8_BACKEND_CPU, 1, &ctx), LLMINT8_ERR_INVALID_ARGUMENT, "device");
    /* No GPU where the tests run: NO_DEVICE, naming the driver library looked for. */
    EXPECT_ERR(llmint8_context_create(LLMINT8_BACKEND_CUDA, 0, &ctx), LLMINT8_ERR_NO_DEVICE, "libcuda");
    CHECK(ctx == NULL);
    EXPECT_OK(llmint8_context_create(LLMINT8_BACKEND_AUTO, 0, &ctx));
    int32_t backend = -1;
    EXPECT_OK(llmint8_context_backend(ctx, &backend));
    CHECK(backend == LLMINT8_BACKEND_CPU);
    llmint8_context_destroy(ctx);
    EXPECT_OK(llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &ctx));
    EXPECT_ERR(llmint8_context_backend(NULL, &backend), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_context_backend(ctx, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "backend");
    size_t threads = 0;
    EXPECT_OK(llmint8_context_set_num_threads(ctx, 2));
    EXPECT_OK(llmint8_context_num_threads(ctx, &threads));
    CHECK(threads == 2);
    EXPECT_OK(llmint8_context_set_num_threads(ctx, 0));
    EXPECT_OK(llmint8_context_num_threads(ctx, &threads));
    CHECK(threads >= 1);
    EXPECT_ERR(llmint8_context_set_num_threads(NULL, 1), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_context_num_threads(NULL, &threads), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_context_num_threads(ctx, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "num_threads");
    int32_t rounding = -1;
    EXPECT_OK(llmint8_context_input_rounding(ctx, &rounding));
    CHECK(rounding == LLMINT8_INPUT_EXACT);
    EXPECT_ERR(llmint8_context_set_input_rounding(ctx, 2), LLMINT8_ERR_INVALID_ARGUMENT, "rounding");
    EXPECT_ERR(llmint8_context_set_input_rounding(NULL, LLMINT8_INPUT_EXACT), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_context_input_rounding(NULL, &rounding), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_context_input_rounding(ctx, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "rounding");
    llmint8_context_destroy(NULL);

    /* --- a weight in each dtype --- */
    float w32[N * K], bias32[N];
    uint16_t w16[N * K], wbf[N * K], bias16[N];
    for (int i = 0; i < N * K; i++) {
        w32[i] = (float)((i * 37) % 23 - 11) / 8.0f; /* exact in float16 and bfloat16 */
        w16[i] = to_f16_exact(w32[i]);
        wbf[i] = to_bf16(w32[i]);
    }
    for (int j = 0; j < N; j++) {
        bias32[j] = 0.25f * (float)j - 0.5f;
        bias16[j] = to_f16_exact(bias32[j]);
    }
    llmint8_weight *w = NULL, *wh = NULL, *wb = NULL;
    EXPECT_OK(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, N, K, bias32, LLMINT8_F32, &w));
    EXPECT_OK(llmint8_weight_quantize(ctx, w16, LLMINT8_F16, N, K, bias16, LLMINT8_F16, &wh));
    EXPECT_OK(llmint8_weight_quantize(ctx, wbf, LLMINT8_BF16, N, K, NULL, 12345 /* ignored */, &wb));
    size_t out_f = 0, in_f = 0;
    EXPECT_OK(llmint8_weight_shape(w, &out_f, &in_f));
    CHECK(out_f == N && in_f == K);

    /* Export: the three dtypes hold the same values, so the same CB/SCB. */
    int8_t cb[N * K + 8], cb2[N * K];
    float scb[N + 1], scb2[N];
    memset(cb, CANARY, sizeof cb);
    scb[N] = 1234.5f;
    EXPECT_OK(llmint8_weight_export(w, cb, scb));
    for (int i = 0; i < 8; i++) CHECK(cb[N * K + i] == CANARY);
    CHECK(scb[N] == 1234.5f);
    EXPECT_OK(llmint8_weight_export(wh, cb2, scb2));
    CHECK(memcmp(cb, cb2, N * K) == 0 && memcmp(scb, scb2, sizeof scb2) == 0);
    EXPECT_OK(llmint8_weight_export(wb, cb2, scb2));
    CHECK(memcmp(cb, cb2, N * K) == 0 && memcmp(scb, scb2, sizeof scb2) == 0);
    for (int j = 0; j < N; j++) {
        float absmax = 0;
        for (int c = 0; c < K; c++) absmax = fmaxf(absmax, fabsf(w32[j * K + c]));
        CHECK(scb[j] == absmax);
        for (int c = 0; c < K; c++) {
            float want = rintf(w32[j * K + c] * ((1.0f / absmax) * 127.0f));
            CHECK(cb[j * K + c] == (int8_t)want);
        }
    }

    /* from_int8 with the exported values gives the same weight. */
    llmint8_weight *wi = NULL;
    EXPECT_OK(llmint8_weight_from_int8(ctx, cb, scb, N, K, bias32, LLMINT8_F32, &wi));
    EXPECT_OK(llmint8_weight_export(wi, cb2, scb2));
    CHECK(memcmp(cb, cb2, N * K) == 0);

    /* --- weight errors --- */
    llmint8_weight *bad = (llmint8_weight *)&failures;
    EXPECT_ERR(llmint8_weight_quantize(NULL, w32, LLMINT8_F32, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    CHECK(bad == NULL);
    EXPECT_ERR(llmint8_weight_quantize(ctx, NULL, LLMINT8_F32, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "w is NULL");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, N, K, NULL, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, 3, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "dtype");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, -1, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "dtype");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, N, K, bias32, 7, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "dtype");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, 0, K, NULL, 0, &bad), LLMINT8_ERR_SHAPE, "out_features > 0");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, N, 0, NULL, 0, &bad), LLMINT8_ERR_SHAPE, "in_features > 0");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, SIZE_MAX, 2, NULL, 0, &bad), LLMINT8_ERR_SHAPE, "overflow");
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, SIZE_MAX / 4, 1, NULL, 0, &bad), LLMINT8_ERR_SHAPE, "memory");
    EXPECT_ERR(llmint8_weight_quantize(ctx, (const char *)w32 + 1, LLMINT8_F32, 2, 2, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "aligned");
    float wnan[N * K];
    memcpy(wnan, w32, sizeof wnan);
    wnan[4 * K + 3] = NAN;
    EXPECT_ERR(llmint8_weight_quantize(ctx, wnan, LLMINT8_F32, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "row 4");
    wnan[4 * K + 3] = -INFINITY;
    EXPECT_ERR(llmint8_weight_quantize(ctx, wnan, LLMINT8_F32, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "row 4");
    float bias_nan[N] = {0, 0, NAN, 0, 0, 0};
    EXPECT_ERR(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, N, K, bias_nan, LLMINT8_F32, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "bias[2]");
    CHECK(bad == NULL);
    EXPECT_ERR(llmint8_weight_from_int8(NULL, cb, scb, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_weight_from_int8(ctx, NULL, scb, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "cb");
    EXPECT_ERR(llmint8_weight_from_int8(ctx, cb, NULL, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "scb");
    EXPECT_ERR(llmint8_weight_from_int8(ctx, cb, scb, N, K, NULL, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(llmint8_weight_from_int8(ctx, cb, scb, 0, K, NULL, 0, &bad), LLMINT8_ERR_SHAPE, "out_features");
    float scb_bad[N];
    memcpy(scb_bad, scb, sizeof scb_bad);
    scb_bad[3] = -1.0f;
    EXPECT_ERR(llmint8_weight_from_int8(ctx, cb, scb_bad, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "SCB[3]");
    scb_bad[3] = INFINITY;
    EXPECT_ERR(llmint8_weight_from_int8(ctx, cb, scb_bad, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "SCB[3]");
    scb_bad[3] = NAN;
    EXPECT_ERR(llmint8_weight_from_int8(ctx, cb, scb_bad, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "SCB[3]");
    CHECK(bad == NULL);
    EXPECT_ERR(llmint8_weight_export(NULL, cb2, scb2), LLMINT8_ERR_INVALID_ARGUMENT, "w");
    EXPECT_ERR(llmint8_weight_export(w, NULL, scb2), LLMINT8_ERR_INVALID_ARGUMENT, "cb");
    EXPECT_ERR(llmint8_weight_export(w, cb2, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "scb");
    EXPECT_ERR(llmint8_weight_export(w, (int8_t *)scb2, scb2), LLMINT8_ERR_INVALID_ARGUMENT, "overlap");
    EXPECT_ERR(llmint8_weight_shape(NULL, &out_f, &in_f), LLMINT8_ERR_INVALID_ARGUMENT, "w");
    EXPECT_ERR(llmint8_weight_shape(w, NULL, &in_f), LLMINT8_ERR_INVALID_ARGUMENT, "out_features");
    EXPECT_ERR(llmint8_weight_shape(w, &out_f, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "in_features");
    llmint8_weight_destroy(NULL);

    /* --- matmul --- */
    float x[M * K];
    uint16_t x16[M * K];
    for (int i = 0; i < M * K; i++) x[i] = (float)((i * 13) % 17 - 8) / 4.0f;
    x[1 * K + 7] = 9.0f; /* an outlier in row 1, column 7 */
    for (int i = 0; i < M * K; i++) x16[i] = to_f16_exact(x[i]);
    float y[M * N + 4];
    for (int i = 0; i < M * N + 4; i++) y[i] = -777.0f;
    llmint8_matmul_stats stats;
    memset(&stats, 0xff, sizeof stats);
    EXPECT_OK(llmint8_matmul(ctx, w, x, LLMINT8_F32, M, LLMINT8_DEFAULT_THRESHOLD, y, LLMINT8_F32, &stats));
    CHECK(stats.outlier_columns == 1);
    for (int r = 0; r < 7; r++) CHECK(stats.reserved[r] == 0);
    for (int i = 0; i < 4; i++) CHECK(y[M * N + i] == -777.0f); /* nothing past the end */
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double dense = bias32[j], mag = fabs(bias32[j]);
            for (int c = 0; c < K; c++) {
                dense += (double)x[i * K + c] * w32[j * K + c];
                mag += fabs((double)x[i * K + c] * w32[j * K + c]);
            }
            CHECK(fabs(y[i * N + j] - dense) <= 0.02 * mag);
        }
    }
    /* The int8 weight from from_int8 and the float16 one compute the same thing. */
    float y2[M * N];
    EXPECT_OK(llmint8_matmul(ctx, wi, x, LLMINT8_F32, M, 6.0f, y2, LLMINT8_F32, NULL));
    CHECK(memcmp(y, y2, sizeof y2) == 0);
    uint16_t y16[M * N];
    EXPECT_OK(llmint8_matmul(ctx, wh, x16, LLMINT8_F16, M, 6.0f, y16, LLMINT8_F16, NULL));
    for (int i = 0; i < M * N; i++) CHECK(fabsf(from_f16(y16[i]) - y[i]) <= 1e-3f * fabsf(y[i]) + 1e-3f);
    uint16_t ybf[M * N];
    EXPECT_OK(llmint8_matmul(ctx, wb, x, LLMINT8_F32, M, 0.0f, ybf, LLMINT8_BF16, &stats));
    CHECK(stats.outlier_columns == 0);
    /* rows = 0: nothing to do, NULL buffers allowed. */
    EXPECT_OK(llmint8_matmul(ctx, w, NULL, LLMINT8_F32, 0, 6.0f, NULL, LLMINT8_F32, &stats));
    CHECK(stats.outlier_columns == 0);

    EXPECT_ERR(llmint8_matmul(NULL, w, x, LLMINT8_F32, M, 6.0f, y2, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_matmul(ctx, NULL, x, LLMINT8_F32, M, 6.0f, y2, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "w is NULL");
    EXPECT_ERR(llmint8_matmul(ctx, w, NULL, LLMINT8_F32, M, 6.0f, y2, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "x is NULL");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, LLMINT8_F32, M, 6.0f, NULL, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "y is NULL");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, 5, M, 6.0f, y2, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "dtype");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, LLMINT8_F32, M, 6.0f, y2, -3, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "dtype");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, LLMINT8_F32, M, -1.0f, y2, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "threshold");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, LLMINT8_F32, M, NAN, y2, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "threshold");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, LLMINT8_F32, SIZE_MAX, 6.0f, y2, LLMINT8_F32, NULL), LLMINT8_ERR_SHAPE, "overflow");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, LLMINT8_F32, M, 6.0f, (char *)y2 + 2, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "aligned");
    EXPECT_ERR(llmint8_matmul(ctx, w, x, LLMINT8_F32, 1, 6.0f, x, LLMINT8_F32, NULL), LLMINT8_ERR_INVALID_ARGUMENT, "overlap");
    /* A failed call leaves y alone when it fails before computing. */
    for (int i = 0; i < M * N; i++) CHECK(y2[i] == y[i]);

    /* NaN/Inf in x: propagate with decomposition, NaN rows without. */
    float xn[M * K];
    memcpy(xn, x, sizeof xn);
    xn[0 * K + 2] = NAN;
    EXPECT_OK(llmint8_matmul(ctx, w, xn, LLMINT8_F32, M, 6.0f, y2, LLMINT8_F32, &stats));
    CHECK(stats.outlier_columns == 2);
    for (int j = 0; j < N; j++) CHECK(isnan(y2[j]) && isfinite(y2[2 * N + j]));
    EXPECT_OK(llmint8_matmul(ctx, w, xn, LLMINT8_F32, M, 0.0f, y2, LLMINT8_F32, &stats));
    for (int j = 0; j < N; j++) CHECK(isnan(y2[j]) && isfinite(y2[N + j]));

    /* Rounding inputs to float16: a float32 weight that float16 cannot hold is refused;
     * values float16 holds exactly give the same weight as before. */
    EXPECT_OK(llmint8_context_set_input_rounding(ctx, LLMINT8_INPUT_ROUND_F16));
    EXPECT_OK(llmint8_context_input_rounding(ctx, &rounding));
    CHECK(rounding == LLMINT8_INPUT_ROUND_F16);
    float wbig[N * K];
    memcpy(wbig, w32, sizeof wbig);
    wbig[5 * K] = 1e6f;
    EXPECT_ERR(llmint8_weight_quantize(ctx, wbig, LLMINT8_F32, N, K, NULL, 0, &bad), LLMINT8_ERR_INVALID_ARGUMENT, "row 5");
    llmint8_weight *wr = NULL;
    EXPECT_OK(llmint8_weight_quantize(ctx, w32, LLMINT8_F32, N, K, bias32, LLMINT8_F32, &wr));
    EXPECT_OK(llmint8_weight_export(wr, cb2, scb2));
    CHECK(memcmp(cb, cb2, N * K) == 0);
    EXPECT_OK(llmint8_matmul(ctx, wr, x16, LLMINT8_F16, M, 6.0f, y2, LLMINT8_F32, NULL));
    CHECK(memcmp(y, y2, sizeof y2) == 0);
    llmint8_weight_destroy(wr);
    EXPECT_OK(llmint8_context_set_input_rounding(ctx, LLMINT8_INPUT_EXACT));

    /* --- quantize_rows --- */
    int8_t q[M * K + 4];
    float absmax[M + 1];
    uint32_t cols[K];
    size_t n_cols = 99;
    memset(q, CANARY, sizeof q);
    absmax[M] = 42.0f;
    EXPECT_OK(llmint8_quantize_rows(ctx, x, LLMINT8_F32, M, K, 6.0f, q, absmax, cols, &n_cols));
    CHECK(n_cols == 1 && cols[0] == 7);
    CHECK(absmax[M] == 42.0f);
    for (int i = 0; i < 4; i++) CHECK(q[M * K + i] == CANARY);
    for (int i = 0; i < M; i++) {
        CHECK(q[i * K + 7] == 0);
        float a = 0;
        for (int c = 0; c < K; c++)
            if (fabsf(x[i * K + c]) < 6.0f) a = fmaxf(a, fabsf(x[i * K + c]));
        CHECK(absmax[i] == a);
    }
    int8_t q16[M * K];
    float absmax16[M];
    EXPECT_OK(llmint8_quantize_rows(ctx, x16, LLMINT8_F16, M, K, 6.0f, q16, absmax16, NULL, NULL));
    CHECK(memcmp(q, q16, sizeof q16) == 0 && memcmp(absmax, absmax16, sizeof absmax16) == 0);
    EXPECT_OK(llmint8_quantize_rows(ctx, NULL, LLMINT8_F32, 0, K, 6.0f, NULL, NULL, NULL, &n_cols));
    CHECK(n_cols == 0);
    EXPECT_ERR(llmint8_quantize_rows(NULL, x, LLMINT8_F32, M, K, 6.0f, q, absmax, cols, &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(llmint8_quantize_rows(ctx, NULL, LLMINT8_F32, M, K, 6.0f, q, absmax, cols, &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "x is NULL");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, LLMINT8_F32, M, K, 6.0f, NULL, absmax, cols, &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "q is NULL");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, LLMINT8_F32, M, K, 6.0f, q, NULL, cols, &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "absmax is NULL");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, 9, M, K, 6.0f, q, absmax, cols, &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "dtype");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, LLMINT8_F32, M, 0, 6.0f, q, absmax, cols, &n_cols), LLMINT8_ERR_SHAPE, "cols");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, LLMINT8_F32, SIZE_MAX, 3, 6.0f, q, absmax, cols, &n_cols), LLMINT8_ERR_SHAPE, "overflow");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, LLMINT8_F32, M, K, -INFINITY, q, absmax, cols, &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "threshold");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, LLMINT8_F32, M, K, 6.0f, (int8_t *)absmax, absmax, cols, &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "overlap");
    EXPECT_ERR(llmint8_quantize_rows(ctx, x, LLMINT8_F32, M, K, 6.0f, q, absmax, (uint32_t *)((char *)cols + 1), &n_cols), LLMINT8_ERR_INVALID_ARGUMENT, "aligned");

    /* --- the last error is per thread --- */
    EXPECT_ERR(llmint8_weight_shape(NULL, &out_f, &in_f), LLMINT8_ERR_INVALID_ARGUMENT, "w is NULL");
    pthread_t t;
    void *thread_ok = NULL;
    CHECK(pthread_create(&t, NULL, failing_thread, NULL) == 0);
    CHECK(pthread_join(t, &thread_ok) == 0);
    CHECK(thread_ok == (void *)1);
    CHECK(strstr(llmint8_last_error(), "w is NULL") != NULL);
    /* A successful call leaves the message as it was. */
    EXPECT_OK(llmint8_weight_shape(w, &out_f, &in_f));
    CHECK(strstr(llmint8_last_error(), "w is NULL") != NULL);

    test_checkpoints(ctx);

    llmint8_weight_destroy(w);
    llmint8_weight_destroy(wh);
    llmint8_weight_destroy(wb);
    llmint8_weight_destroy(wi);
    llmint8_context_destroy(ctx);

    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
