/* The hostile-input table: every exported function of llmint8.h driven with
 * misuse — NULL for each pointer, unknown enum values, zero, huge and
 * overflowing sizes, misaligned and overlapping buffers, bad thresholds,
 * NaN/Inf inputs, missing and malformed files — checking for each row the
 * documented status, a non-empty message that starts with the status name,
 * NULL written to a constructor's out-pointer on failure, and intact canary
 * bytes around every buffer the library may write.
 *
 * Prints the table as Markdown (docs/RELIABILITY.md carries it; tests/c_abi.rs checks
 * the two agree) and "N rows, M failures" last. Run from the repository root
 * (it reads tests/data). tests/c_abi.rs runs it natively, scripts/test.sh under
 * valgrind and AddressSanitizer. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include "llmint8.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int rows = 0, failures = 0;

/* ---- canary-guarded buffers ---- */
#define GUARD 64
#define CANARY 0xA5
#define MAX_BUFFERS 48
static unsigned char *buffers[MAX_BUFFERS];
static size_t buffer_sizes[MAX_BUFFERS];
static int n_buffers = 0;

/* `size` writable bytes with GUARD canary bytes on each side; the library must
 * never touch the canaries. Aligned to 16 bytes. */
static void *guarded(size_t size) {
    unsigned char *raw = malloc(size + 2 * GUARD);
    if (!raw) abort();
    memset(raw, CANARY, size + 2 * GUARD);
    buffers[n_buffers] = raw;
    buffer_sizes[n_buffers] = size;
    n_buffers++;
    return raw + GUARD;
}

static int canaries_intact(void) {
    for (int b = 0; b < n_buffers; b++) {
        const unsigned char *raw = buffers[b];
        for (size_t i = 0; i < GUARD; i++)
            if (raw[i] != CANARY || raw[GUARD + buffer_sizes[b] + i] != CANARY) return 0;
    }
    return 1;
}

static void report(const char *fn, const char *misuse, int32_t got, int32_t want, int extra_ok) {
    rows++;
    const char *msg = llmint8_last_error();
    const char *want_name = llmint8_status_name(want);
    int ok = got == want && extra_ok && canaries_intact();
    if (want != LLMINT8_OK)
        ok = ok && msg != NULL && msg[0] != '\0' && strncmp(msg, want_name, strlen(want_name)) == 0;
    if (!ok) {
        failures++;
        fprintf(stderr, "FAILED %s — %s: returned %s, wanted %s; canaries %s; message \"%s\"\n", fn, misuse,
                llmint8_status_name(got), want_name, canaries_intact() ? "intact" : "OVERWRITTEN", msg ? msg : "(null)");
    }
    printf("| `%s` | %s | %s |\n", fn, misuse, want == LLMINT8_OK ? "`LLMINT8_OK`" : want_name);
}

/* A status-returning call. */
#define ROW(fn, misuse, call, want) report(#fn, misuse, (call), (want), 1)
/* A constructor: on failure *out must be NULL; on success non-NULL (and is freed). */
#define ROW_NEW(fn, misuse, outvar, call, want, destroy)                 \
    do {                                                                 \
        outvar = (void *)1;                                              \
        int32_t got_ = (call);                                           \
        int out_ok_ = got_ == LLMINT8_OK ? outvar != NULL && outvar != (void *)1 : outvar == NULL; \
        report(#fn, misuse, got_, (want), out_ok_);                      \
        if (got_ == LLMINT8_OK && outvar != (void *)1) destroy(outvar);  \
        outvar = NULL;                                                   \
    } while (0)
/* A void function that must accept its argument. */
#define ROW_VOID(fn, misuse, call)                                       \
    do {                                                                 \
        call;                                                            \
        report(#fn, misuse, LLMINT8_OK, LLMINT8_OK, 1);                  \
    } while (0)

int main(void) {
    printf("| entry point | misuse | result |\n|---|---|---|\n");
    enum { N = 6, K = 10, M = 3 };
    const float nan = NAN, inf = INFINITY;

    /* ---- status and version ---- */
    report("llmint8_status_name", "unknown code 99 or -1", LLMINT8_OK, LLMINT8_OK,
           strcmp(llmint8_status_name(99), "LLMINT8_UNKNOWN_STATUS") == 0 &&
               strcmp(llmint8_status_name(-1), "LLMINT8_UNKNOWN_STATUS") == 0);
    report("llmint8_last_error", "before any failure: \"\", never NULL", LLMINT8_OK, LLMINT8_OK,
           llmint8_last_error() != NULL && llmint8_last_error()[0] == '\0');

    /* ---- contexts ---- */
    llmint8_context *c = NULL;
    ROW_NEW(llmint8_context_create, "backend 99", c, llmint8_context_create(99, 0, &c), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_context_destroy);
    ROW_NEW(llmint8_context_create, "backend -1", c, llmint8_context_create(-1, 0, &c), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_context_destroy);
    ROW_NEW(llmint8_context_create, "CPU device 1 or -1", c, llmint8_context_create(LLMINT8_BACKEND_CPU, -1, &c), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_context_destroy);
    ROW_NEW(llmint8_context_create, "CUDA on a machine without a GPU", c, llmint8_context_create(LLMINT8_BACKEND_CUDA, 0, &c), LLMINT8_ERR_NO_DEVICE, llmint8_context_destroy);
    ROW_NEW(llmint8_context_create, "CUDA device -1", c, llmint8_context_create(LLMINT8_BACKEND_CUDA, -1, &c), LLMINT8_ERR_NO_DEVICE, llmint8_context_destroy);
    ROW(llmint8_context_create, "`out` NULL", llmint8_context_create(LLMINT8_BACKEND_CPU, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_VOID(llmint8_context_destroy, "NULL (does nothing)", llmint8_context_destroy(NULL));

    llmint8_context *ctx = NULL;
    if (llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &ctx) != LLMINT8_OK) return 2;
    size_t *threads = guarded(sizeof(size_t));
    int32_t *code = guarded(sizeof(int32_t));
    ROW(llmint8_context_set_num_threads, "`ctx` NULL", llmint8_context_set_num_threads(NULL, 2), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_num_threads, "`SIZE_MAX` threads (counts as 1024)", llmint8_context_set_num_threads(ctx, SIZE_MAX), LLMINT8_OK);
    ROW(llmint8_context_num_threads, "`ctx` NULL", llmint8_context_num_threads(NULL, threads), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_num_threads, "`num_threads` NULL", llmint8_context_num_threads(ctx, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    int32_t status = llmint8_context_num_threads(ctx, threads);
    report("llmint8_context_num_threads", "after `SIZE_MAX`", status, LLMINT8_OK, *threads == 1024);
    llmint8_context_set_num_threads(ctx, 2);
    ROW(llmint8_context_backend, "`ctx` NULL", llmint8_context_backend(NULL, code), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_backend, "`backend` NULL", llmint8_context_backend(ctx, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_input_rounding, "`ctx` NULL", llmint8_context_set_input_rounding(NULL, LLMINT8_INPUT_EXACT), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_input_rounding, "rounding 99", llmint8_context_set_input_rounding(ctx, 99), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_input_rounding, "rounding -1", llmint8_context_set_input_rounding(ctx, -1), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_input_rounding, "`ctx` NULL", llmint8_context_input_rounding(NULL, code), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_input_rounding, "`rounding` NULL", llmint8_context_input_rounding(ctx, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_row_scale, "`ctx` NULL", llmint8_context_set_row_scale(NULL, LLMINT8_ROW_SCALE_INT8_PART), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_row_scale, "rule 2", llmint8_context_set_row_scale(ctx, 2), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_row_scale, "rule -1", llmint8_context_set_row_scale(ctx, -1), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_row_scale, "`ctx` NULL", llmint8_context_row_scale(NULL, code), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_row_scale, "`rule` NULL", llmint8_context_row_scale(ctx, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_match_bitsandbytes, "`ctx` NULL", llmint8_context_match_bitsandbytes(NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_stream, "`ctx` NULL", llmint8_context_set_stream(NULL, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_set_stream, "a CPU context", llmint8_context_set_stream(ctx, (void *)threads), LLMINT8_ERR_UNSUPPORTED);
    ROW(llmint8_context_reserve, "a CPU context (nothing to reserve; reference row)", llmint8_context_reserve(ctx, 16, 4096, 11008), LLMINT8_OK);
    ROW(llmint8_context_reserve, "`ctx` NULL", llmint8_context_reserve(NULL, 16, 4096, 4096), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_reserve, "`rows` 0", llmint8_context_reserve(ctx, 0, 4096, 4096), LLMINT8_ERR_SHAPE);
    ROW(llmint8_context_reserve, "`in_features` 0", llmint8_context_reserve(ctx, 16, 0, 4096), LLMINT8_ERR_SHAPE);
    ROW(llmint8_context_reserve, "`rows · out_features` overflows", llmint8_context_reserve(ctx, SIZE_MAX / 2, 1, 4), LLMINT8_ERR_SHAPE);
    ROW(llmint8_context_synchronize, "`ctx` NULL", llmint8_context_synchronize(NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_context_synchronize, "a CPU context (nothing to wait for)", llmint8_context_synchronize(ctx), LLMINT8_OK);

    /* ---- weights ---- */
    float *w = guarded(N * K * sizeof(float)), *bias = guarded(N * sizeof(float));
    uint16_t *w16 = guarded(N * K * 2 + 2);
    for (int i = 0; i < N * K; i++) w[i] = (float)((i * 7) % 11 - 5) / 4.0f;
    for (int i = 0; i < N; i++) bias[i] = 0.5f * (float)i;
    for (int i = 0; i < N * K + 1; i++) w16[i] = 0x3c00; /* 1.0 */
    llmint8_weight *wout = NULL;
#define QUANT(wp, dt, n, k, bp, bdt) llmint8_weight_quantize(ctx, wp, dt, n, k, bp, bdt, &wout)
    ROW_NEW(llmint8_weight_quantize, "valid (reference row)", wout, QUANT(w, LLMINT8_F32, N, K, bias, LLMINT8_F32), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`ctx` NULL", wout, llmint8_weight_quantize(NULL, w, LLMINT8_F32, N, K, NULL, 0, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`w` NULL", wout, QUANT(NULL, LLMINT8_F32, N, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_quantize, "`out` NULL", llmint8_weight_quantize(ctx, w, LLMINT8_F32, N, K, NULL, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_quantize, "`w_dtype` 99", wout, QUANT(w, 99, N, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`w_dtype` -1", wout, QUANT(w, -1, N, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`bias_dtype` 99 with a bias", wout, QUANT(w, LLMINT8_F32, N, K, bias, 99), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`bias_dtype` 99, `bias` NULL (ignored)", wout, QUANT(w, LLMINT8_F32, N, K, NULL, 99), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`out_features` 0", wout, QUANT(w, LLMINT8_F32, 0, K, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`in_features` 0", wout, QUANT(w, LLMINT8_F32, N, 0, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`out · in` overflows `size_t`", wout, QUANT(w, LLMINT8_F32, SIZE_MAX / 2, 3, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "`out · in · 4` bytes overflows", wout, QUANT(w, LLMINT8_F32, SIZE_MAX / 8, 3, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "f32 `w` misaligned", wout, QUANT((char *)w + 2, LLMINT8_F32, N, K - 1, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "f16 `w` misaligned", wout, QUANT((char *)w16 + 1, LLMINT8_F16, N, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize, "f32 `bias` misaligned", wout, QUANT(w, LLMINT8_F32, N, K, (char *)bias + 1, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    w[13] = nan;
    ROW_NEW(llmint8_weight_quantize, "a NaN in `w`", wout, QUANT(w, LLMINT8_F32, N, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    w[13] = -inf;
    ROW_NEW(llmint8_weight_quantize, "an Inf in `w`", wout, QUANT(w, LLMINT8_F32, N, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    w[13] = 1.0f;
    bias[2] = nan;
    ROW_NEW(llmint8_weight_quantize, "a NaN in `bias`", wout, QUANT(w, LLMINT8_F32, N, K, bias, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    bias[2] = 1.0f;

    uint32_t *keep = guarded(4 * sizeof(uint32_t));
    keep[0] = 3, keep[1] = 0, keep[2] = 3, keep[3] = (uint32_t)K;
#define KEEP(cols, n) llmint8_weight_quantize_keep(ctx, w, LLMINT8_F32, N, K, bias, LLMINT8_F32, cols, n, &wout)
    ROW_NEW(llmint8_weight_quantize_keep, "valid (columns 3 and 0)", wout, KEEP(keep, 2), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_keep, "`keep_columns` NULL, `n_keep` 0", wout, KEEP(NULL, 0), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_keep, "`keep_columns` NULL, `n_keep` 1", wout, KEEP(NULL, 1), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_keep, "`keep_columns` misaligned", wout, KEEP((uint32_t *)((char *)keep + 1), 1), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_keep, "a column listed twice", wout, KEEP(keep, 3), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_keep, "a column >= `in_features`", wout, KEEP(keep + 3, 1), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_keep, "`ctx` NULL", wout, llmint8_weight_quantize_keep(NULL, w, LLMINT8_F32, N, K, NULL, 0, keep, 1, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_keep, "`w` NULL", wout, llmint8_weight_quantize_keep(ctx, NULL, LLMINT8_F32, N, K, NULL, 0, keep, 1, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_quantize_keep, "`out` NULL", llmint8_weight_quantize_keep(ctx, w, LLMINT8_F32, N, K, NULL, 0, keep, 1, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
#undef KEEP
    /* An absurd size backed by real (reserved, never touched) memory: the int8
     * copy cannot be allocated. Skipped where 1 TiB of address space cannot be
     * reserved (valgrind); tests/c_abi.rs runs it natively. */
    size_t huge_out = (size_t)1 << 20, huge_in = (size_t)1 << 19; /* 2^39 float16 = 1 TiB */
    void *huge = mmap(NULL, huge_out * huge_in * 2, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (huge != MAP_FAILED) {
        ROW_NEW(llmint8_weight_quantize, "absurd size (1 TiB of float16)", wout, QUANT(huge, LLMINT8_F16, huge_out, huge_in, NULL, 0), LLMINT8_ERR_OUT_OF_MEMORY, llmint8_weight_destroy);
        munmap(huge, huge_out * huge_in * 2);
    } else {
        fprintf(stderr, "note: cannot reserve 1 TiB of address space here; the out-of-memory row is not checked\n");
        printf("| `llmint8_weight_quantize` | absurd size (1 TiB of float16) | LLMINT8_ERR_OUT_OF_MEMORY |\n");
    }

    int8_t *cb = guarded(N * K);
    float *scb = guarded(N * sizeof(float) + 4);
    memset(cb, 1, N * K);
    for (int i = 0; i < N; i++) scb[i] = 2.0f;
#define FROM(cbp, scbp, n, k) llmint8_weight_from_int8(ctx, cbp, scbp, n, k, NULL, 0, &wout)
    ROW_NEW(llmint8_weight_quantize_device, "a CPU context", wout, llmint8_weight_quantize_device(ctx, w, LLMINT8_F32, N, K, NULL, 0, &wout), LLMINT8_ERR_UNSUPPORTED, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_device, "`ctx` NULL", wout, llmint8_weight_quantize_device(NULL, w, LLMINT8_F32, N, K, NULL, 0, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_device, "`w_dtype` 99", wout, llmint8_weight_quantize_device(ctx, w, 99, N, K, NULL, 0, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_device, "`out · in` overflows `size_t`", wout, llmint8_weight_quantize_device(ctx, w, LLMINT8_F32, SIZE_MAX / 2, 3, NULL, 0, &wout), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW(llmint8_weight_quantize_device, "`out` NULL", llmint8_weight_quantize_device(ctx, w, LLMINT8_F32, N, K, NULL, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_from_int8, "valid (reference row)", wout, FROM(cb, scb, N, K), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8, "`ctx` NULL", wout, llmint8_weight_from_int8(NULL, cb, scb, N, K, NULL, 0, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8, "`cb` NULL", wout, FROM(NULL, scb, N, K), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8, "`scb` NULL", wout, FROM(cb, NULL, N, K), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_from_int8, "`out` NULL", llmint8_weight_from_int8(ctx, cb, scb, N, K, NULL, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_from_int8, "`scb` misaligned", wout, FROM(cb, (float *)((char *)scb + 2), N, K), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8, "zero size", wout, FROM(cb, scb, 0, K), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8, "`out · in` overflows", wout, FROM(cb, scb, SIZE_MAX / 2, 3), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    scb[1] = -1.0f;
    ROW_NEW(llmint8_weight_from_int8, "a negative scale", wout, FROM(cb, scb, N, K), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    scb[1] = nan;
    ROW_NEW(llmint8_weight_from_int8, "a NaN scale", wout, FROM(cb, scb, N, K), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    scb[1] = inf;
    ROW_NEW(llmint8_weight_from_int8, "an Inf scale", wout, FROM(cb, scb, N, K), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    scb[1] = 2.0f;

    llmint8_weight *weight = NULL;
    if (QUANT(w, LLMINT8_F32, N, K, bias, LLMINT8_F32) != LLMINT8_OK) return 2;
    weight = wout;
    wout = NULL;
    int8_t *cb_out = guarded(N * K);
    float *scb_out = guarded(N * sizeof(float) + 4);
    size_t *dims = guarded(2 * sizeof(size_t));
    ROW(llmint8_weight_export, "`w` NULL", llmint8_weight_export(NULL, cb_out, scb_out), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_export, "`cb` NULL", llmint8_weight_export(weight, NULL, scb_out), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_export, "`scb` NULL", llmint8_weight_export(weight, cb_out, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_export, "`scb` misaligned", llmint8_weight_export(weight, cb_out, (float *)((char *)scb_out + 1)), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_export, "`cb` overlapping `scb`", llmint8_weight_export(weight, (int8_t *)scb_out, scb_out), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_shape, "`w` NULL", llmint8_weight_shape(NULL, &dims[0], &dims[1]), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_shape, "`out_features` NULL", llmint8_weight_shape(weight, NULL, &dims[1]), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_shape, "`in_features` NULL", llmint8_weight_shape(weight, &dims[0], NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    uint64_t *bytes = guarded(2 * sizeof(uint64_t));
    ROW(llmint8_weight_memory, "`w` NULL", llmint8_weight_memory(NULL, &bytes[0], &bytes[1]), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_memory, "`host_bytes` NULL", llmint8_weight_memory(weight, NULL, &bytes[1]), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_memory, "`device_bytes` NULL", llmint8_weight_memory(weight, &bytes[0], NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    status = llmint8_weight_memory(weight, &bytes[0], &bytes[1]);
    report("llmint8_weight_memory", "a CPU weight: its values, scales and bias on the host", status, LLMINT8_OK,
           bytes[0] >= (uint64_t)N * K + 8 * N && bytes[1] == 0);
    ROW_VOID(llmint8_weight_destroy, "NULL (does nothing)", llmint8_weight_destroy(NULL));

    /* ---- matmul ---- */
    float *x = guarded(M * K * sizeof(float) + 4), *y = guarded(M * N * sizeof(float) + 4);
    uint16_t *y16 = guarded(M * N * 2 + 2);
    llmint8_matmul_stats *stats = guarded(sizeof *stats);
    for (int i = 0; i < M * K; i++) x[i] = (float)(i % 5) - 2.0f;
#define MM(xp, xdt, r, t, yp, ydt) llmint8_matmul(ctx, weight, xp, xdt, r, t, yp, ydt, stats)
    ROW(llmint8_matmul, "valid (reference row)", MM(x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32), LLMINT8_OK);
    ROW(llmint8_matmul, "`ctx` NULL", llmint8_matmul(NULL, weight, x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`w` NULL", llmint8_matmul(ctx, NULL, x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`x` NULL", MM(NULL, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`y` NULL", MM(x, LLMINT8_F32, M, 6.0f, NULL, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`stats` NULL (optional)", llmint8_matmul(ctx, weight, x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32, NULL), LLMINT8_OK);
    ROW(llmint8_matmul, "`x_dtype` 99", MM(x, 99, M, 6.0f, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`y_dtype` -1", MM(x, LLMINT8_F32, M, 6.0f, y, -1), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`rows` 0 with `x`, `y` NULL", MM(NULL, LLMINT8_F32, 0, 6.0f, NULL, LLMINT8_F32), LLMINT8_OK);
    ROW(llmint8_matmul, "`rows` `SIZE_MAX` (overflows)", MM(x, LLMINT8_F32, SIZE_MAX, 6.0f, y, LLMINT8_F32), LLMINT8_ERR_SHAPE);
    ROW(llmint8_matmul, "`rows · in · 4` bytes overflows", MM(x, LLMINT8_F32, SIZE_MAX / 16, 6.0f, y, LLMINT8_F32), LLMINT8_ERR_SHAPE);
    ROW(llmint8_matmul, "threshold NaN", MM(x, LLMINT8_F32, M, nan, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "threshold -1", MM(x, LLMINT8_F32, M, -1.0f, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "threshold -Inf", MM(x, LLMINT8_F32, M, -inf, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "threshold +Inf (no outliers)", MM(x, LLMINT8_F32, M, inf, y, LLMINT8_F32), LLMINT8_OK);
    ROW(llmint8_matmul, "f32 `x` misaligned", MM((char *)x + 2, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "f16 `y` misaligned", MM(x, LLMINT8_F32, M, 6.0f, (char *)y16 + 1, LLMINT8_F16), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`y` overlapping `x`", MM(x, LLMINT8_F32, M, 6.0f, x + 4, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul, "`stats` overlapping `y`", llmint8_matmul(ctx, weight, x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32, (llmint8_matmul_stats *)y), LLMINT8_ERR_INVALID_ARGUMENT);
#define MMH(xp, xdt, r, t, yp, ydt) llmint8_matmul_host(ctx, weight, xp, xdt, r, t, yp, ydt, stats)
    ROW(llmint8_matmul_host, "valid (reference row)", MMH(x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32), LLMINT8_OK);
    ROW(llmint8_matmul_host, "`ctx` NULL", llmint8_matmul_host(NULL, weight, x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_host, "`w` NULL", llmint8_matmul_host(ctx, NULL, x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_host, "`x` NULL", MMH(NULL, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_host, "`y_dtype` 99", MMH(x, LLMINT8_F32, M, 6.0f, y, 99), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_host, "`rows` `SIZE_MAX` (overflows)", MMH(x, LLMINT8_F32, SIZE_MAX, 6.0f, y, LLMINT8_F32), LLMINT8_ERR_SHAPE);
    ROW(llmint8_matmul_host, "threshold NaN", MMH(x, LLMINT8_F32, M, nan, y, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_host, "`y` overlapping `x`", MMH(x, LLMINT8_F32, M, 6.0f, x + 4, LLMINT8_F32), LLMINT8_ERR_INVALID_ARGUMENT);
    /* ---- matmul_shared_input: weights that share x ---- */
    llmint8_weight *narrow = NULL, *other_in = NULL; /* [N - 2, K], and [2, K - 1]: another in_features */
    if (QUANT(w, LLMINT8_F32, N - 2, K, bias, LLMINT8_F32) != LLMINT8_OK) return 2;
    narrow = wout;
    if (QUANT(w, LLMINT8_F32, 2, K - 1, bias, LLMINT8_F32) != LLMINT8_OK) return 2;
    other_in = wout;
    wout = NULL;
    float *y2 = guarded(M * (N - 2) * sizeof(float));
    const llmint8_weight **ws = guarded(2 * sizeof *ws);
    void **ys = guarded(2 * sizeof *ys);
    ws[0] = weight, ws[1] = narrow, ys[0] = y, ys[1] = y2;
#define MS(wp, nw, xp, r, t, yp) llmint8_matmul_shared_input(ctx, wp, nw, xp, LLMINT8_F32, r, t, yp, LLMINT8_F32, stats)
    ROW(llmint8_matmul_shared_input, "valid (reference row): two weights", MS(ws, 2, x, M, 6.0f, ys), LLMINT8_OK);
    ROW(llmint8_matmul_shared_input, "`ctx` NULL", llmint8_matmul_shared_input(NULL, ws, 2, x, LLMINT8_F32, M, 6.0f, ys, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_shared_input, "`w` NULL", MS(NULL, 2, x, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_shared_input, "`y` NULL", MS(ws, 2, x, M, 6.0f, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_shared_input, "`n_weights` 0", MS(ws, 0, x, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ws[1] = NULL;
    ROW(llmint8_matmul_shared_input, "`w[1]` NULL", MS(ws, 2, x, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ws[1] = narrow, ys[1] = NULL;
    ROW(llmint8_matmul_shared_input, "`y[1]` NULL", MS(ws, 2, x, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ys[1] = y2;
    ROW(llmint8_matmul_shared_input, "`x` NULL", MS(ws, 2, NULL, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_shared_input, "`rows` 0 with `x` NULL", MS(ws, 2, NULL, 0, 6.0f, ys), LLMINT8_OK);
    ROW(llmint8_matmul_shared_input, "`rows` `SIZE_MAX` (overflows)", MS(ws, 2, x, SIZE_MAX, 6.0f, ys), LLMINT8_ERR_SHAPE);
    ROW(llmint8_matmul_shared_input, "threshold NaN", MS(ws, 2, x, M, nan, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_shared_input, "`x_dtype` 99", llmint8_matmul_shared_input(ctx, ws, 2, x, 99, M, 6.0f, ys, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ws[1] = other_in;
    ROW(llmint8_matmul_shared_input, "weights of different `in_features`", MS(ws, 2, x, M, 6.0f, ys), LLMINT8_ERR_SHAPE);
    ws[1] = narrow, ys[1] = y + 2;
    ROW(llmint8_matmul_shared_input, "`y[1]` overlapping `y[0]`", MS(ws, 2, x, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ys[1] = (char *)y2 + 1;
    ROW(llmint8_matmul_shared_input, "`y[1]` misaligned", MS(ws, 2, x, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ys[1] = y2;
    ROW(llmint8_matmul_shared_input_host, "valid (reference row)", llmint8_matmul_shared_input_host(ctx, ws, 2, x, LLMINT8_F32, M, 6.0f, ys, LLMINT8_F32, stats), LLMINT8_OK);
    ROW(llmint8_matmul_shared_input_host, "`n_weights` 0", llmint8_matmul_shared_input_host(ctx, ws, 0, x, LLMINT8_F32, M, 6.0f, ys, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);

    /* ---- smoothing: weights made with SmoothQuant's vector s ---- */
    float *sm = guarded(K * sizeof(float) + 4);
    for (int c = 0; c < K; c++) sm[c] = 0.5f + (float)c / K;
#define QSM(c, wp, sp, b, e, keep, nk) llmint8_weight_quantize_smoothed(c, wp, LLMINT8_F32, N, K, sp, b, e, NULL, LLMINT8_F32, keep, nk, &wout)
    uint32_t *keep1 = guarded(sizeof(uint32_t));
    keep1[0] = 1;
    ROW_NEW(llmint8_weight_quantize_smoothed, "valid: the whole weight (reference row)", wout, QSM(ctx, w, sm, 0, K, NULL, 0), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_smoothed, "valid: a shard 0..K/2 keeping column 1", wout, QSM(ctx, w, sm, 0, K / 2, keep1, 1), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_smoothed, "`ctx` NULL", wout, QSM(NULL, w, sm, 0, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_smoothed, "`w` NULL", wout, QSM(ctx, NULL, sm, 0, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_smoothed, "`smoothing` NULL", wout, QSM(ctx, w, NULL, 0, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_smoothed, "`smoothing` misaligned", wout, QSM(ctx, w, (float *)((char *)sm + 1), 0, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_quantize_smoothed, "`out` NULL", llmint8_weight_quantize_smoothed(ctx, w, LLMINT8_F32, N, K, sm, 0, K, NULL, LLMINT8_F32, NULL, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_quantize_smoothed, "`col_end` past `in_features`", wout, QSM(ctx, w, sm, 0, K + 1, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    const float bad_factors[4] = {0.0f, -1.0f, NAN, INFINITY};
    const char *bad_names[4] = {"a factor 0", "a factor -1", "a factor NaN", "a factor +Inf"};
    for (int b = 0; b < 4; b++) {
        sm[3] = bad_factors[b];
        ROW_NEW(llmint8_weight_quantize_smoothed, bad_names[b], wout, QSM(ctx, w, sm, 0, K, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    }
    sm[3] = 1.0f;
#define FROMSM(c, cbp, scbp, sp) llmint8_weight_from_int8_smoothed(c, cbp, scbp, N, K, sp, NULL, 0, &wout)
    ROW_NEW(llmint8_weight_from_int8_smoothed, "valid (reference row)", wout, FROMSM(ctx, cb, scb, sm), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8_smoothed, "`ctx` NULL", wout, FROMSM(NULL, cb, scb, sm), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8_smoothed, "`cb` NULL", wout, FROMSM(ctx, NULL, scb, sm), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_from_int8_smoothed, "`smoothing` NULL", wout, FROMSM(ctx, cb, scb, NULL), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    sm[0] = -2.0f;
    ROW_NEW(llmint8_weight_from_int8_smoothed, "a factor -2", wout, FROMSM(ctx, cb, scb, sm), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    sm[0] = 0.5f;
    if (QSM(ctx, w, sm, 0, K, NULL, 0) != LLMINT8_OK) return 2;
    llmint8_weight *smoothed = wout; /* [N, K] */
    wout = NULL;
    float *sm_out = guarded(K * sizeof(float) + 4);
    int32_t *is_smoothed = guarded(sizeof(int32_t));
    status = llmint8_weight_smoothing(smoothed, sm_out, K, is_smoothed);
    report("llmint8_weight_smoothing", "a smoothed weight: 1 and its vector", status, LLMINT8_OK,
           *is_smoothed == 1 && memcmp(sm_out, sm, K * sizeof(float)) == 0);
    status = llmint8_weight_smoothing(weight, NULL, 0, is_smoothed);
    report("llmint8_weight_smoothing", "an unsmoothed weight, `smoothing` NULL: 0", status, LLMINT8_OK, *is_smoothed == 0);
    ROW(llmint8_weight_smoothing, "`w` NULL", llmint8_weight_smoothing(NULL, sm_out, K, is_smoothed), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_smoothing, "`smoothed` NULL", llmint8_weight_smoothing(smoothed, sm_out, K, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_smoothing, "`len` not `in_features`", llmint8_weight_smoothing(smoothed, sm_out, K - 1, is_smoothed), LLMINT8_ERR_SHAPE);
    ROW(llmint8_weight_smoothing, "`smoothing` misaligned", llmint8_weight_smoothing(smoothed, (float *)((char *)sm_out + 1), K, is_smoothed), LLMINT8_ERR_INVALID_ARGUMENT);
    ws[0] = smoothed, ws[1] = narrow;
    ROW(llmint8_matmul_shared_input, "a smoothed weight beside an unsmoothed one", MS(ws, 2, x, M, 6.0f, ys), LLMINT8_ERR_INVALID_ARGUMENT);
    ws[0] = weight;
    llmint8_weight_destroy(smoothed);
    llmint8_weight_destroy(narrow);
    llmint8_weight_destroy(other_in);

    /* ---- row-parallel: a shard of in_features, its statistics and its partial ---- */
#define QCOLS(c, wp, b, e, keep, nk) llmint8_weight_quantize_columns(c, wp, LLMINT8_F32, N, K, b, e, NULL, LLMINT8_F32, keep, nk, &wout)
    ROW_NEW(llmint8_weight_quantize_columns, "valid: columns 0..K/2 (reference row)", wout, QCOLS(ctx, w, 0, K / 2, NULL, 0), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_columns, "`ctx` NULL", wout, QCOLS(NULL, w, 0, K / 2, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_columns, "`w` NULL", wout, QCOLS(ctx, NULL, 0, K / 2, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_quantize_columns, "`out` NULL", llmint8_weight_quantize_columns(ctx, w, LLMINT8_F32, N, K, 0, 2, NULL, LLMINT8_F32, NULL, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_quantize_columns, "`col_begin` = `col_end` (no columns)", wout, QCOLS(ctx, w, 3, 3, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_columns, "`col_begin` > `col_end`", wout, QCOLS(ctx, w, 3, 2, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_columns, "`col_end` past `in_features`", wout, QCOLS(ctx, w, 0, K + 1, NULL, 0), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_quantize_columns, "`keep_columns` NULL with `n_keep` 1", wout, QCOLS(ctx, w, 0, K / 2, NULL, 1), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    w[K - 1] = nan;
    ROW_NEW(llmint8_weight_quantize_columns, "a NaN in `w` outside the shard (rows are read whole)", wout, QCOLS(ctx, w, 0, K / 2, NULL, 0), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    w[K - 1] = 1.0f;
    if (QCOLS(ctx, w, 0, K / 2, NULL, 0) != LLMINT8_OK) return 2;
    llmint8_weight *shard = wout; /* [N, K/2]; x is read as its slice [M, K/2] */
    wout = NULL;
    float *row_absmax = guarded(M * sizeof(float) + 4), *given = guarded(M * sizeof(float));
#define RPS(c, xp, r, t, ap) llmint8_row_parallel_statistics(c, shard, xp, LLMINT8_F32, r, t, ap, stats)
    ROW(llmint8_row_parallel_statistics, "valid (reference row)", RPS(ctx, x, M, 6.0f, row_absmax), LLMINT8_OK);
    ROW(llmint8_row_parallel_statistics, "`ctx` NULL", RPS(NULL, x, M, 6.0f, row_absmax), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "`w` NULL", llmint8_row_parallel_statistics(ctx, NULL, x, LLMINT8_F32, M, 6.0f, row_absmax, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "`x` NULL", RPS(ctx, NULL, M, 6.0f, row_absmax), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "`row_absmax` NULL", RPS(ctx, x, M, 6.0f, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "`row_absmax` misaligned", RPS(ctx, x, M, 6.0f, (float *)((char *)row_absmax + 1)), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "`row_absmax` overlapping `x`", RPS(ctx, x, M, 6.0f, x + 1), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "`x_dtype` 99", llmint8_row_parallel_statistics(ctx, shard, x, 99, M, 6.0f, row_absmax, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "threshold NaN", RPS(ctx, x, M, nan, row_absmax), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_row_parallel_statistics, "`rows` `SIZE_MAX` (overflows)", RPS(ctx, x, SIZE_MAX, 6.0f, row_absmax), LLMINT8_ERR_SHAPE);
    ROW(llmint8_row_parallel_statistics, "`rows` 0 with `x`, `row_absmax` NULL", RPS(ctx, NULL, 0, 6.0f, NULL), LLMINT8_OK);
    ROW(llmint8_row_parallel_statistics_host, "valid (reference row)", llmint8_row_parallel_statistics_host(ctx, shard, x, LLMINT8_F32, M, 6.0f, row_absmax, stats), LLMINT8_OK);
    ROW(llmint8_row_parallel_statistics_host, "`row_absmax` NULL", llmint8_row_parallel_statistics_host(ctx, shard, x, LLMINT8_F32, M, 6.0f, NULL, stats), LLMINT8_ERR_INVALID_ARGUMENT);
#define RPM(c, xp, r, t, ap, yp) llmint8_matmul_row_parallel(c, shard, xp, LLMINT8_F32, r, t, ap, yp, LLMINT8_F32, stats)
    ROW(llmint8_matmul_row_parallel, "valid: the slice's own statistics (reference row)", RPM(ctx, x, M, 6.0f, row_absmax, y), LLMINT8_OK);
    ROW(llmint8_matmul_row_parallel, "`ctx` NULL", RPM(NULL, x, M, 6.0f, row_absmax, y), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_row_parallel, "`w` NULL", llmint8_matmul_row_parallel(ctx, NULL, x, LLMINT8_F32, M, 6.0f, row_absmax, y, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_row_parallel, "`x` NULL", RPM(ctx, NULL, M, 6.0f, row_absmax, y), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_row_parallel, "`row_absmax` NULL", RPM(ctx, x, M, 6.0f, NULL, y), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_row_parallel, "`y` NULL", RPM(ctx, x, M, 6.0f, row_absmax, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_row_parallel, "`y` overlapping `row_absmax`", RPM(ctx, x, M, 6.0f, row_absmax, row_absmax), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_matmul_row_parallel, "`rows` 0 with every buffer NULL", RPM(ctx, NULL, 0, 6.0f, NULL, NULL), LLMINT8_OK);
    for (int r = 0; r < M; r++) given[r] = row_absmax[r];
    given[M - 1] = 0.5f * row_absmax[M - 1];
    ROW(llmint8_matmul_row_parallel, "`row_absmax` below the slice's own (not a MAX)", RPM(ctx, x, M, 6.0f, given, y), LLMINT8_ERR_INVALID_ARGUMENT);
    given[M - 1] = nan;
    ROW(llmint8_matmul_row_parallel, "`row_absmax` NaN", RPM(ctx, x, M, 6.0f, given, y), LLMINT8_ERR_INVALID_ARGUMENT);
    given[M - 1] = -1.0f;
    ROW(llmint8_matmul_row_parallel, "`row_absmax` negative", RPM(ctx, x, M, 6.0f, given, y), LLMINT8_ERR_INVALID_ARGUMENT);
    given[M - 1] = 4.0f * row_absmax[M - 1];
    ROW(llmint8_matmul_row_parallel, "`row_absmax` above the slice's own (another rank's MAX)", RPM(ctx, x, M, 6.0f, given, y), LLMINT8_OK);
    given[0] = inf;
    status = RPM(ctx, x, M, 6.0f, given, y);
    report("llmint8_matmul_row_parallel", "`row_absmax` +Inf (a row of NaN out)", status, LLMINT8_OK, isnan(y[0]) && isnan(y[N - 1]) && !isnan(y[N]));
    ROW(llmint8_matmul_row_parallel_host, "valid (reference row)", llmint8_matmul_row_parallel_host(ctx, shard, x, LLMINT8_F32, M, 6.0f, row_absmax, y, LLMINT8_F32, stats), LLMINT8_OK);
    ROW(llmint8_matmul_row_parallel_host, "`row_absmax` NULL", llmint8_matmul_row_parallel_host(ctx, shard, x, LLMINT8_F32, M, 6.0f, NULL, y, LLMINT8_F32, stats), LLMINT8_ERR_INVALID_ARGUMENT);
    llmint8_weight_destroy(shard);

    for (int i = 0; i < M * K; i++) x[i] = nan;
    status = MM(x, LLMINT8_F32, M, 6.0f, y, LLMINT8_F32);
    report("llmint8_matmul", "`x` all NaN (rows of NaN out)", status, LLMINT8_OK, isnan(y[0]) && isnan(y[M * N - 1]));
    for (int i = 0; i < M * K; i++) x[i] = inf;
    status = MM(x, LLMINT8_F32, M, 0.0f, y, LLMINT8_F32);
    report("llmint8_matmul", "`x` all Inf, threshold 0 (NaN out)", status, LLMINT8_OK, isnan(y[0]));
    for (int i = 0; i < M * K; i++) x[i] = 1.0f;

    /* ---- quantize_rows ---- */
    int8_t *q = guarded(M * K);
    float *absmax = guarded(M * sizeof(float) + 4);
    uint32_t *ocols = guarded(K * sizeof(uint32_t) + 4);
    size_t *n_ocols = guarded(sizeof(size_t));
#define QR(xp, dt, r, cols, t, qp, ap, op, np) llmint8_quantize_rows(ctx, xp, dt, r, cols, t, qp, ap, op, np)
    ROW(llmint8_quantize_rows, "valid (reference row)", QR(x, LLMINT8_F32, M, K, 6.0f, q, absmax, ocols, n_ocols), LLMINT8_OK);
    ROW(llmint8_quantize_rows, "`ctx` NULL", llmint8_quantize_rows(NULL, x, LLMINT8_F32, M, K, 6.0f, q, absmax, ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_quantize_rows, "`x` NULL", QR(NULL, LLMINT8_F32, M, K, 6.0f, q, absmax, ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_quantize_rows, "`q` NULL", QR(x, LLMINT8_F32, M, K, 6.0f, NULL, absmax, ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_quantize_rows, "`absmax` NULL", QR(x, LLMINT8_F32, M, K, 6.0f, q, NULL, ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_quantize_rows, "`n_outlier_cols` NULL (optional)", QR(x, LLMINT8_F32, M, K, 6.0f, q, absmax, ocols, NULL), LLMINT8_OK);
    ROW(llmint8_quantize_rows, "`outlier_cols` NULL (optional)", QR(x, LLMINT8_F32, M, K, 6.0f, q, absmax, NULL, n_ocols), LLMINT8_OK);
    ROW(llmint8_quantize_rows, "`dtype` 99", QR(x, 99, M, K, 6.0f, q, absmax, ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_quantize_rows, "`cols` 0", QR(x, LLMINT8_F32, M, 0, 6.0f, q, absmax, ocols, n_ocols), LLMINT8_ERR_SHAPE);
    ROW(llmint8_quantize_rows, "`rows · cols` overflows", QR(x, LLMINT8_F32, SIZE_MAX, 3, 6.0f, q, absmax, ocols, n_ocols), LLMINT8_ERR_SHAPE);
    ROW(llmint8_quantize_rows, "threshold NaN", QR(x, LLMINT8_F32, M, K, nan, q, absmax, ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_quantize_rows, "`absmax` misaligned", QR(x, LLMINT8_F32, M, K, 6.0f, q, (float *)((char *)absmax + 1), ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_quantize_rows, "`q` overlapping `absmax`", QR(x, LLMINT8_F32, M, K, 6.0f, (int8_t *)absmax, absmax, ocols, n_ocols), LLMINT8_ERR_INVALID_ARGUMENT);
    for (int i = 0; i < M * K; i++) x[i] = nan;
    status = QR(x, LLMINT8_F32, M, K, 0.0f, q, absmax, ocols, n_ocols);
    report("llmint8_quantize_rows", "`x` all NaN, threshold 0 (absmax NaN)", status, LLMINT8_OK, isnan(absmax[0]));

    /* ---- checkpoints ---- */
    const char *model = "tests/data/tiny-llama-int8";
    llmint8_checkpoint *ck = NULL, *ckout = NULL;
    ROW_NEW(llmint8_checkpoint_open, "`path` NULL", ckout, llmint8_checkpoint_open(NULL, &ckout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_checkpoint_destroy);
    ROW_NEW(llmint8_checkpoint_open, "`path` \"\"", ckout, llmint8_checkpoint_open("", &ckout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_checkpoint_destroy);
    ROW(llmint8_checkpoint_open, "`out` NULL", llmint8_checkpoint_open(model, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_checkpoint_open, "a path that does not exist", ckout, llmint8_checkpoint_open("tests/data/absent.safetensors", &ckout), LLMINT8_ERR_NOT_FOUND, llmint8_checkpoint_destroy);
    ROW_NEW(llmint8_checkpoint_open, "a directory without a model", ckout, llmint8_checkpoint_open("tests/c", &ckout), LLMINT8_ERR_NOT_FOUND, llmint8_checkpoint_destroy);
    ROW_NEW(llmint8_checkpoint_open, "not a safetensors file (C source)", ckout, llmint8_checkpoint_open("tests/c/hostile.c", &ckout), LLMINT8_ERR_FORMAT, llmint8_checkpoint_destroy);
    ROW_NEW(llmint8_checkpoint_open, "not a regular file (`/dev/null`)", ckout, llmint8_checkpoint_open("/dev/null", &ckout), LLMINT8_ERR_IO, llmint8_checkpoint_destroy);
    ROW_VOID(llmint8_checkpoint_destroy, "NULL (does nothing)", llmint8_checkpoint_destroy(NULL));
    if (llmint8_checkpoint_open(model, &ck) != LLMINT8_OK) return 2;
    size_t *count = guarded(sizeof(size_t));
    llmint8_tensor_info *info = guarded(sizeof *info);
    unsigned char *dst = guarded(1024);
    ROW(llmint8_checkpoint_num_tensors, "`ckpt` NULL", llmint8_checkpoint_num_tensors(NULL, count), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_num_tensors, "`count` NULL", llmint8_checkpoint_num_tensors(ck, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_tensor_info, "`ckpt` NULL", llmint8_checkpoint_tensor_info(NULL, 0, info), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_tensor_info, "`info` NULL", llmint8_checkpoint_tensor_info(ck, 0, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_tensor_info, "`index` past the end, `SIZE_MAX`", llmint8_checkpoint_tensor_info(ck, SIZE_MAX, info), LLMINT8_ERR_NOT_FOUND);
    ROW(llmint8_checkpoint_find, "`ckpt` NULL", llmint8_checkpoint_find(NULL, "lm_head.weight", count), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_find, "`name` NULL", llmint8_checkpoint_find(ck, NULL, count), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_find, "`index` NULL", llmint8_checkpoint_find(ck, "lm_head.weight", NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_find, "a name not in the file", llmint8_checkpoint_find(ck, "lm_tail.weight", count), LLMINT8_ERR_NOT_FOUND);
    size_t norm = 0;
    llmint8_checkpoint_find(ck, "model.norm.weight", &norm); /* 256 float16 = 512 bytes */
    ROW(llmint8_checkpoint_read, "valid (reference row)", llmint8_checkpoint_read(ck, norm, dst, 512), LLMINT8_OK);
    ROW(llmint8_checkpoint_read, "`ckpt` NULL", llmint8_checkpoint_read(NULL, norm, dst, 512), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_read, "`dst` NULL", llmint8_checkpoint_read(ck, norm, NULL, 512), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_checkpoint_read, "`dst_bytes` not the tensor's size", llmint8_checkpoint_read(ck, norm, dst, 1024), LLMINT8_ERR_SHAPE);
    ROW(llmint8_checkpoint_read, "`index` past the end", llmint8_checkpoint_read(ck, 4096, dst, 512), LLMINT8_ERR_NOT_FOUND);
    const char *layer = "model.layers.0.mlp.up_proj";
    ROW_NEW(llmint8_weight_load, "valid (reference row)", wout, llmint8_weight_load(ctx, ck, layer, &wout), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load, "`ctx` NULL", wout, llmint8_weight_load(NULL, ck, layer, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load, "`ckpt` NULL", wout, llmint8_weight_load(ctx, NULL, layer, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load, "`prefix` NULL", wout, llmint8_weight_load(ctx, ck, NULL, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_load, "`out` NULL", llmint8_weight_load(ctx, ck, layer, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_load, "`prefix` not UTF-8", wout, llmint8_weight_load(ctx, ck, "model.\xff", &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load, "a layer not in the file", wout, llmint8_weight_load(ctx, ck, "model.layers.7.mlp.up_proj", &wout), LLMINT8_ERR_NOT_FOUND, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load, "a 1-D `PREFIX.weight` (a norm)", wout, llmint8_weight_load(ctx, ck, "model.norm", &wout), LLMINT8_ERR_FORMAT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_rows, "valid: rows 0..2 (reference row)", wout, llmint8_weight_load_rows(ctx, ck, layer, 0, 2, &wout), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_rows, "`ctx` NULL", wout, llmint8_weight_load_rows(NULL, ck, layer, 0, 2, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_rows, "`ckpt` NULL", wout, llmint8_weight_load_rows(ctx, NULL, layer, 0, 2, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_rows, "`prefix` NULL", wout, llmint8_weight_load_rows(ctx, ck, NULL, 0, 2, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_load_rows, "`out` NULL", llmint8_weight_load_rows(ctx, ck, layer, 0, 2, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_load_rows, "a layer not in the file", wout, llmint8_weight_load_rows(ctx, ck, "model.layers.7.mlp.up_proj", 0, 2, &wout), LLMINT8_ERR_NOT_FOUND, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_rows, "`row_begin` = `row_end` (no rows)", wout, llmint8_weight_load_rows(ctx, ck, layer, 1, 1, &wout), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_rows, "`row_begin` > `row_end`", wout, llmint8_weight_load_rows(ctx, ck, layer, 2, 1, &wout), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_rows, "`row_end` past `out_features` (SIZE_MAX)", wout, llmint8_weight_load_rows(ctx, ck, layer, 0, SIZE_MAX, &wout), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_columns, "valid: columns 0..8 (reference row)", wout, llmint8_weight_load_columns(ctx, ck, layer, 0, 8, &wout), LLMINT8_OK, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_columns, "`ctx` NULL", wout, llmint8_weight_load_columns(NULL, ck, layer, 0, 8, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_columns, "`ckpt` NULL", wout, llmint8_weight_load_columns(ctx, NULL, layer, 0, 8, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_columns, "`prefix` NULL", wout, llmint8_weight_load_columns(ctx, ck, NULL, 0, 8, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_load_columns, "`out` NULL", llmint8_weight_load_columns(ctx, ck, layer, 0, 8, NULL), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW_NEW(llmint8_weight_load_columns, "a layer not in the file", wout, llmint8_weight_load_columns(ctx, ck, "model.layers.7.mlp.up_proj", 0, 8, &wout), LLMINT8_ERR_NOT_FOUND, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_columns, "`col_begin` = `col_end` (no columns)", wout, llmint8_weight_load_columns(ctx, ck, layer, 4, 4, &wout), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_columns, "`col_end` past `in_features` (SIZE_MAX)", wout, llmint8_weight_load_columns(ctx, ck, layer, 0, SIZE_MAX, &wout), LLMINT8_ERR_SHAPE, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_safetensors, "`path` NULL", wout, llmint8_weight_load_safetensors(ctx, NULL, layer, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_safetensors, "a path that does not exist", wout, llmint8_weight_load_safetensors(ctx, "tests/data/absent", layer, &wout), LLMINT8_ERR_NOT_FOUND, llmint8_weight_destroy);
    ROW_NEW(llmint8_weight_load_safetensors, "`prefix` NULL", wout, llmint8_weight_load_safetensors(ctx, model, NULL, &wout), LLMINT8_ERR_INVALID_ARGUMENT, llmint8_weight_destroy);
    ROW(llmint8_weight_save_safetensors, "`w` NULL", llmint8_weight_save_safetensors(NULL, "target/hostile.safetensors", "l"), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_save_safetensors, "`path` NULL", llmint8_weight_save_safetensors(weight, NULL, "l"), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_save_safetensors, "`prefix` NULL or \"\"", llmint8_weight_save_safetensors(weight, "target/hostile.safetensors", ""), LLMINT8_ERR_INVALID_ARGUMENT);
    ROW(llmint8_weight_save_safetensors, "a directory that does not exist", llmint8_weight_save_safetensors(weight, "target/no/such/dir/l.safetensors", "l"), LLMINT8_ERR_NOT_FOUND);
    ROW(llmint8_weight_save_safetensors, "`path` an existing directory", llmint8_weight_save_safetensors(weight, "tests", "l"), LLMINT8_ERR_IO);

    llmint8_checkpoint_destroy(ck);
    llmint8_weight_destroy(weight);
    llmint8_context_destroy(ctx);
    for (int b = 0; b < n_buffers; b++) free(buffers[b]);
    printf("%d rows, %d failures\n", rows, failures);
    return failures == 0 ? 0 : 1;
}
