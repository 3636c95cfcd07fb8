/* The CUDA entry points of the C ABI used as an engine uses them — device
 * buffers, its own stream, weights quantized from device memory — on the
 * emulated GPU of tests/cuda_emu/fake_cuda.cpp (tests/c_abi.rs points
 * LLMINT8_LIBCUDA, _LIBNVRTC and _LIBCUBLASLT at it, with two devices).
 *
 * The emulated device runs queued work only when something waits for its
 * stream, so this program can see what a GPU makes a race: that
 * llmint8_matmul only queues its work (the output is untouched until the
 * stream is synchronized), and that the results then equal the CPU backend's
 * bit for bit. Prints one line per failed check and "N checks, M failures". */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmint8.h"

static int checks = 0, failures = 0;

#define CHECK(cond, ...)                                     \
    do {                                                     \
        checks++;                                            \
        if (!(cond)) {                                       \
            failures++;                                      \
            printf("FAIL line %d: ", __LINE__);              \
            printf(__VA_ARGS__);                             \
            printf(" (last error: %s)\n", llmint8_last_error()); \
        }                                                    \
    } while (0)

/* The driver entry points an engine would call itself. */
typedef int (*cuInit_t)(unsigned);
typedef int (*cuDevicePrimaryCtxRetain_t)(void **, int);
typedef int (*cuCtxPushCurrent_t)(void *);
typedef int (*cuCtxPopCurrent_t)(void **);
typedef int (*cuMemAlloc_t)(uint64_t *, size_t);
typedef int (*cuMemFree_t)(uint64_t);
typedef int (*cuMemcpyHtoDAsync_t)(uint64_t, const void *, size_t, void *);
typedef int (*cuMemcpyDtoHAsync_t)(void *, uint64_t, size_t, void *);
typedef int (*cuStreamCreate_t)(void **, unsigned);
typedef int (*cuStreamDestroy_t)(void *);
typedef int (*cuStreamSynchronize_t)(void *);

static struct {
    cuInit_t init;
    cuDevicePrimaryCtxRetain_t retain;
    cuCtxPushCurrent_t push;
    cuCtxPopCurrent_t pop;
    cuMemAlloc_t alloc;
    cuMemFree_t free;
    cuMemcpyHtoDAsync_t htod;
    cuMemcpyDtoHAsync_t dtoh;
    cuStreamCreate_t stream_create;
    cuStreamDestroy_t stream_destroy;
    cuStreamSynchronize_t stream_sync;
} cu;

static void bind(void *lib, void **slot, const char *name) {
    *slot = dlsym(lib, name);
    if (!*slot) {
        printf("the driver has no %s\n", name);
        exit(2);
    }
}

static void must(int result, const char *what) {
    if (result != 0) {
        printf("%s failed: CUDA error %d\n", what, result);
        exit(2);
    }
}

/* Device memory holding a copy of `bytes` bytes of `host` (NULL: garbage). */
static uint64_t device_copy(const void *host, size_t bytes, void *stream) {
    uint64_t p = 0;
    must(cu.alloc(&p, bytes), "cuMemAlloc");
    if (host) {
        must(cu.htod(p, host, bytes, stream), "cuMemcpyHtoDAsync");
        must(cu.stream_sync(stream), "cuStreamSynchronize");
    }
    return p;
}

static uint16_t f16_bits(float f) {
    /* Round to nearest even, normal range only (the test's values are). */
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u, exp = (b >> 23) & 0xffu, mant = b & 0x7fffffu;
    if (exp == 0) return (uint16_t)sign;
    int e = (int)exp - 127 + 15;
    uint32_t m = mant >> 13, rest = mant & 0x1fffu;
    uint32_t h = sign | ((uint32_t)e << 10) | m;
    if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) h++;
    return (uint16_t)h;
}

int main(void) {
    const char *driver_path = getenv("LLMINT8_LIBCUDA");
    if (!driver_path) {
        printf("LLMINT8_LIBCUDA is not set (tests/c_abi.rs sets it)\n");
        return 2;
    }
    void *lib = dlopen(driver_path, RTLD_NOW);
    if (!lib) {
        printf("dlopen %s: %s\n", driver_path, dlerror());
        return 2;
    }
    bind(lib, (void **)&cu.init, "cuInit");
    bind(lib, (void **)&cu.retain, "cuDevicePrimaryCtxRetain");
    bind(lib, (void **)&cu.push, "cuCtxPushCurrent_v2");
    bind(lib, (void **)&cu.pop, "cuCtxPopCurrent_v2");
    bind(lib, (void **)&cu.alloc, "cuMemAlloc_v2");
    bind(lib, (void **)&cu.free, "cuMemFree_v2");
    bind(lib, (void **)&cu.htod, "cuMemcpyHtoDAsync_v2");
    bind(lib, (void **)&cu.dtoh, "cuMemcpyDtoHAsync_v2");
    bind(lib, (void **)&cu.stream_create, "cuStreamCreate");
    bind(lib, (void **)&cu.stream_destroy, "cuStreamDestroy_v2");
    bind(lib, (void **)&cu.stream_sync, "cuStreamSynchronize");

    /* The engine's side: device 0's primary context current, its own stream. */
    void *primary = NULL, *stream = NULL, *other_stream = NULL;
    must(cu.init(0), "cuInit");
    must(cu.retain(&primary, 0), "cuDevicePrimaryCtxRetain");
    must(cu.push(primary), "cuCtxPushCurrent");
    must(cu.stream_create(&stream, 1), "cuStreamCreate");
    must(cu.stream_create(&other_stream, 1), "cuStreamCreate");

    llmint8_context *gpu = NULL, *cpu = NULL;
    CHECK(llmint8_context_create(LLMINT8_BACKEND_CUDA, 0, &gpu) == LLMINT8_OK, "CUDA context");
    CHECK(llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &cpu) == LLMINT8_OK, "CPU context");
    if (!gpu || !cpu) return 1;
    int32_t backend = -1;
    CHECK(llmint8_context_backend(gpu, &backend) == LLMINT8_OK && backend == LLMINT8_BACKEND_CUDA, "backend");

    /* A float16 weight [n, k] with a bias, and activations [rows, k] with two
     * outlier columns. */
    enum { N = 37, K = 70, ROWS = 5 };
    static uint16_t w_host[N * K], x_host[ROWS * K];
    static float bias[N];
    for (int i = 0; i < N * K; i++) w_host[i] = f16_bits((float)((i * 7919 % 2001) - 1000) * 1e-4f);
    for (int j = 0; j < N; j++) bias[j] = 0.01f * (float)(j % 9);
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < K; c++)
            x_host[r * K + c] = f16_bits(c == 3 || c == 41 ? 9.5f - (float)r : (float)((r * 31 + c * 17) % 23 - 11) * 0.1f);

    /* The weight quantized on the device from device memory equals the CPU's. */
    uint64_t w_dev = device_copy(w_host, sizeof w_host, stream);
    llmint8_weight *w_gpu = NULL, *w_cpu = NULL;
    CHECK(llmint8_weight_quantize_device(gpu, (const void *)(uintptr_t)w_dev, LLMINT8_F16, N, K, bias, LLMINT8_F32,
                                         &w_gpu) == LLMINT8_OK,
          "weight_quantize_device");
    CHECK(llmint8_weight_quantize(cpu, w_host, LLMINT8_F16, N, K, bias, LLMINT8_F32, &w_cpu) == LLMINT8_OK,
          "weight_quantize (CPU)");
    if (!w_gpu || !w_cpu) return 1;
    static int8_t cb_gpu[N * K], cb_cpu[N * K];
    static float scb_gpu[N], scb_cpu[N];
    CHECK(llmint8_weight_export(w_gpu, cb_gpu, scb_gpu) == LLMINT8_OK, "export (CUDA)");
    CHECK(llmint8_weight_export(w_cpu, cb_cpu, scb_cpu) == LLMINT8_OK, "export (CPU)");
    CHECK(memcmp(cb_gpu, cb_cpu, sizeof cb_gpu) == 0 && memcmp(scb_gpu, scb_cpu, sizeof scb_gpu) == 0,
          "the weight quantized on the device differs from the CPU's");
    /* Host memory is not a device pointer. */
    llmint8_weight *refused = (llmint8_weight *)1;
    CHECK(llmint8_weight_quantize_device(gpu, w_host, LLMINT8_F16, N, K, NULL, LLMINT8_F32, &refused) ==
                  LLMINT8_ERR_INVALID_ARGUMENT &&
              refused == NULL,
          "host memory taken as the device weight");
    CHECK(llmint8_weight_quantize_device(cpu, (const void *)(uintptr_t)w_dev, LLMINT8_F16, N, K, NULL, LLMINT8_F32,
                                         &refused) == LLMINT8_ERR_UNSUPPORTED,
          "a CPU context quantizing device memory");

    /* The CPU's answer. */
    static uint16_t y_cpu[ROWS * N], y_seen[ROWS * N];
    llmint8_matmul_stats stats_cpu = {0};
    CHECK(llmint8_matmul_host(cpu, w_cpu, x_host, LLMINT8_F16, ROWS, 6.0f, y_cpu, LLMINT8_BF16, &stats_cpu) ==
              LLMINT8_OK,
          "CPU matmul");
    CHECK(stats_cpu.outlier_columns == 2, "CPU outlier count %zu", (size_t)stats_cpu.outlier_columns);

    /* On the engine's stream, asynchronously: queued, not done. */
    uint64_t x_dev = device_copy(x_host, sizeof x_host, stream);
    static uint16_t poison[ROWS * N];
    memset(poison, 0xee, sizeof poison);
    uint64_t y_dev = device_copy(poison, sizeof poison, stream);
    CHECK(llmint8_context_set_stream(gpu, stream) == LLMINT8_OK, "set_stream");
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul on device pointers");
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, other_stream), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, poison, sizeof poison) == 0, "llmint8_matmul waited for its work (no hidden synchronization)");
    CHECK(llmint8_context_synchronize(gpu) == LLMINT8_OK, "synchronize");
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, other_stream), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0, "device-pointer matmul differs from the CPU's");

    /* The work of one call, as the emulated driver counts it. Decode-sized (5
     * rows): two launches (prep, epilogue) and the GEMM; the scratch space
     * reused (no allocation), no synchronization, no host copy. */
    void (*counters)(uint64_t *) = NULL;
    *(void **)&counters = dlsym(lib, "llmint8_fake_cuda_counters");
    if (!counters) {
        printf("the emulated driver lacks llmint8_fake_cuda_counters\n");
        return 2;
    }
    uint64_t before[6], after[6];
    counters(before);
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul, counted");
    counters(after);
#define WORK(launches, gemms, memsets) \
    (after[0] - before[0] == (launches) && after[1] - before[1] == (gemms) && after[2] - before[2] == (memsets) && \
     after[3] == before[3] && after[4] == before[4] && after[5] == before[5])
#define COUNTS                                                                                                        \
    "%d launches, %d GEMMs, %d memsets, %d allocations, %d synchronizations, %d host copies", (int)(after[0] - before[0]), \
        (int)(after[1] - before[1]), (int)(after[2] - before[2]), (int)(after[3] - before[3]),                           \
        (int)(after[4] - before[4]), (int)(after[5] - before[5])
    CHECK(WORK(2, 1, 0), "decode call: " COUNTS);
    /* Prefill-sized (64 rows), once the scratch has grown: threshold 6 is six
     * launches (column flags, outlier list, quantize over the int8 part — the
     * default row rule —, gather X's and W's outlier columns, epilogue), a
     * memset of the column flags and the GEMM; threshold 0 skips the outlier
     * launches. */
    enum { BIG = 64 };
    static uint16_t x_big[BIG * K];
    for (int r = 0; r < BIG; r++) memcpy(x_big + r * K, x_host + (r % ROWS) * K, K * sizeof(uint16_t));
    uint64_t x_big_dev = device_copy(x_big, sizeof x_big, stream);
    uint64_t y_big_dev = device_copy(NULL, BIG * N * sizeof(uint16_t), stream);
    for (int pass = 0; pass < 2; pass++) {
        counters(before);
        CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_big_dev, LLMINT8_F16, BIG, 6.0f,
                             (void *)(uintptr_t)y_big_dev, LLMINT8_BF16, NULL) == LLMINT8_OK,
              "prefill matmul");
        counters(after);
    }
    CHECK(WORK(6, 1, 1), "prefill call, threshold 6: " COUNTS);
    counters(before);
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_big_dev, LLMINT8_F16, BIG, 0.0f,
                         (void *)(uintptr_t)y_big_dev, LLMINT8_BF16, NULL) == LLMINT8_OK,
          "prefill matmul, threshold 0");
    counters(after);
    CHECK(WORK(2, 1, 1), "prefill call, threshold 0: " COUNTS);
    CHECK(llmint8_context_synchronize(gpu) == LLMINT8_OK, "synchronize");
    static uint16_t y_big[BIG * N], y_big_cpu[BIG * N];
    must(cu.dtoh(y_big, y_big_dev, sizeof y_big, stream), "cuMemcpyDtoHAsync");
    CHECK(llmint8_matmul_host(cpu, w_cpu, x_big, LLMINT8_F16, BIG, 0.0f, y_big_cpu, LLMINT8_BF16, NULL) == LLMINT8_OK,
          "CPU prefill");
    CHECK(memcmp(y_big, y_big_cpu, sizeof y_big) == 0, "prefill differs from the CPU's");
    must(cu.free(x_big_dev), "cuMemFree");
    must(cu.free(y_big_dev), "cuMemFree");

    /* Waiting on the engine's stream is as good as llmint8_context_synchronize. */
    must(cu.htod(y_dev, poison, sizeof poison, stream), "cuMemcpyHtoDAsync");
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul on device pointers");
    must(cu.stream_sync(stream), "cuStreamSynchronize");
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, other_stream), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0, "the result is not on the engine's stream");

    /* Stats wait for the count; the output is then ready too. */
    must(cu.htod(y_dev, poison, sizeof poison, stream), "cuMemcpyHtoDAsync");
    llmint8_matmul_stats stats = {0};
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, &stats) == LLMINT8_OK,
          "matmul with stats");
    CHECK(stats.outlier_columns == 2, "outlier count %zu", (size_t)stats.outlier_columns);
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, other_stream), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0, "matmul with stats differs from the CPU's");

    /* A second context on the same device, on another stream, shares the
     * weight: both calls queued, then both streams waited for. */
    llmint8_context *gpu2 = NULL;
    CHECK(llmint8_context_create(LLMINT8_BACKEND_CUDA, 0, &gpu2) == LLMINT8_OK, "second CUDA context");
    if (!gpu2) return 1;
    CHECK(llmint8_context_set_stream(gpu2, other_stream) == LLMINT8_OK, "set_stream (second context)");
    uint64_t y_dev2 = device_copy(poison, sizeof poison, stream);
    must(cu.htod(y_dev, poison, sizeof poison, stream), "cuMemcpyHtoDAsync");
    CHECK(llmint8_matmul(gpu2, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f,
                         (void *)(uintptr_t)y_dev2, LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul on the second context");
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul on the first context");
    CHECK(llmint8_context_synchronize(gpu2) == LLMINT8_OK && llmint8_context_synchronize(gpu) == LLMINT8_OK,
          "synchronize both");
    must(cu.dtoh(y_seen, y_dev2, sizeof y_seen, NULL), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0, "the second context's result differs from the CPU's");
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, NULL), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0, "the first context's result differs from the CPU's");
    llmint8_context_destroy(gpu2);
    must(cu.free(y_dev2), "cuMemFree");

    /* Host arrays: refused by llmint8_matmul, taken by llmint8_matmul_host. */
    CHECK(llmint8_matmul(gpu, w_gpu, x_host, LLMINT8_F16, ROWS, 6.0f, y_seen, LLMINT8_BF16, NULL) ==
              LLMINT8_ERR_INVALID_ARGUMENT,
          "host x taken as device memory");
    CHECK(strstr(llmint8_last_error(), "llmint8_matmul_host") != NULL, "the message names the host call");
    memset(y_seen, 0, sizeof y_seen);
    CHECK(llmint8_matmul_host(gpu, w_gpu, x_host, LLMINT8_F16, ROWS, 6.0f, y_seen, LLMINT8_BF16, &stats) == LLMINT8_OK,
          "matmul_host on CUDA");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0 && stats.outlier_columns == 2, "matmul_host differs from the CPU's");

    /* Back to the default stream. */
    CHECK(llmint8_context_set_stream(gpu, NULL) == LLMINT8_OK, "set_stream(NULL)");
    must(cu.htod(y_dev, poison, sizeof poison, NULL), "cuMemcpyHtoDAsync");
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 0.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul on the default stream");
    CHECK(llmint8_context_synchronize(gpu) == LLMINT8_OK, "synchronize");
    static uint16_t y_cpu_t0[ROWS * N];
    CHECK(llmint8_matmul_host(cpu, w_cpu, x_host, LLMINT8_F16, ROWS, 0.0f, y_cpu_t0, LLMINT8_BF16, NULL) == LLMINT8_OK,
          "CPU matmul, threshold 0");
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, NULL), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu_t0, sizeof y_cpu_t0) == 0, "threshold 0 differs from the CPU's");

    /* Memory of another device is refused. */
    void *primary1 = NULL;
    must(cu.retain(&primary1, 1), "cuDevicePrimaryCtxRetain(1)");
    must(cu.push(primary1), "cuCtxPushCurrent(1)");
    uint64_t x_dev1 = device_copy(NULL, sizeof x_host, NULL);
    void *popped = NULL;
    must(cu.pop(&popped), "cuCtxPopCurrent");
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev1, LLMINT8_F16, ROWS, 6.0f,
                         (void *)(uintptr_t)y_dev, LLMINT8_BF16, NULL) == LLMINT8_ERR_INVALID_ARGUMENT,
          "x on device 1 taken by a context on device 0");
    CHECK(strstr(llmint8_last_error(), "device 1") != NULL, "the message names the device");

    /* Teardown: the context first, with work still queued on the engine's
     * stream and its weight alive — destroying it waits for that work and
     * lets go of the stream, which the engine then destroys; the weight
     * outlives both. */
    CHECK(llmint8_context_set_stream(gpu, stream) == LLMINT8_OK, "set_stream");
    must(cu.htod(y_dev, poison, sizeof poison, stream), "cuMemcpyHtoDAsync");
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul before destroying the context");
    llmint8_context_destroy(gpu);
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, other_stream), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0, "destroying the context did not wait for its work");
    must(cu.stream_destroy(stream), "cuStreamDestroy");
    must(cu.stream_destroy(other_stream), "cuStreamDestroy");
    llmint8_weight_destroy(w_gpu);
    llmint8_weight_destroy(w_cpu);
    llmint8_context_destroy(cpu);
    must(cu.free(x_dev), "cuMemFree");
    must(cu.free(y_dev), "cuMemFree");
    must(cu.free(w_dev), "cuMemFree");
    must(cu.push(primary1), "cuCtxPushCurrent(1)");
    must(cu.free(x_dev1), "cuMemFree");
    must(cu.pop(&popped), "cuCtxPopCurrent");

    /* Nothing of llmint8's is left on the device: no allocation, and the
     * primary contexts retained only by this program. */
    int (*live_allocations)(void) = NULL;
    int (*retained)(int) = NULL;
    *(void **)&live_allocations = dlsym(lib, "llmint8_fake_cuda_live_allocations");
    *(void **)&retained = dlsym(lib, "llmint8_fake_cuda_retained");
    if (live_allocations && retained) {
        CHECK(live_allocations() == 0, "%d device allocations left", live_allocations());
        CHECK(retained(0) == 1 && retained(1) == 1, "primary contexts retained %d and %d times", retained(0),
              retained(1));
    } else {
        CHECK(0, "the emulated driver lacks its inspection functions");
    }
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
