/* The CUDA entry points of the C ABI used as an engine uses them — device
 * buffers, its own stream, weights quantized from device memory, a decode step
 * captured in a CUDA graph and replayed — on the emulated GPU of
 * tests/cuda_emu/fake_cuda.cpp (tests/c_abi.rs points LLMINT8_LIBCUDA,
 * _LIBNVRTC and _LIBCUBLASLT at it, with two devices), or on a real driver
 * (LLMINT8_LIBCUDA=libcuda.so.1): the checks of what the emulated driver
 * counts, of its lazy execution and of a second device are then skipped.
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
typedef int (*cuStreamBeginCapture_t)(void *, int);
typedef int (*cuStreamEndCapture_t)(void *, void **);
typedef int (*cuStreamIsCapturing_t)(void *, int *);
typedef int (*cuGraphInstantiateWithFlags_t)(void **, void *, unsigned long long);
typedef int (*cuGraphLaunch_t)(void *, void *);
typedef int (*cuGraphExecDestroy_t)(void *);
typedef int (*cuGraphDestroy_t)(void *);

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
    cuStreamBeginCapture_t begin_capture;
    cuStreamEndCapture_t end_capture;
    cuStreamIsCapturing_t is_capturing;
    cuGraphInstantiateWithFlags_t instantiate;
    cuGraphLaunch_t graph_launch;
    cuGraphExecDestroy_t exec_destroy;
    cuGraphDestroy_t graph_destroy;
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
    /* The emulated driver's own exports; absent from a real driver. */
    void (*counters)(uint64_t *) = NULL;
    *(void **)&counters = dlsym(lib, "llmint8_fake_cuda_counters");
    const int emulated = counters != NULL;
    if (!emulated) printf("a real driver: the emulated driver's counters and lazy execution are not checked\n");
#define COUNT(into) \
    if (counters) counters(into)
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
    bind(lib, (void **)&cu.begin_capture, "cuStreamBeginCapture_v2");
    bind(lib, (void **)&cu.end_capture, "cuStreamEndCapture");
    bind(lib, (void **)&cu.is_capturing, "cuStreamIsCapturing");
    bind(lib, (void **)&cu.instantiate, "cuGraphInstantiateWithFlags");
    bind(lib, (void **)&cu.graph_launch, "cuGraphLaunch");
    bind(lib, (void **)&cu.exec_destroy, "cuGraphExecDestroy");
    bind(lib, (void **)&cu.graph_destroy, "cuGraphDestroy");

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
    if (emulated) /* on a GPU the work may simply be done by now */
        CHECK(memcmp(y_seen, poison, sizeof poison) == 0,
              "llmint8_matmul waited for its work (no hidden synchronization)");
    CHECK(llmint8_context_synchronize(gpu) == LLMINT8_OK, "synchronize");
    must(cu.dtoh(y_seen, y_dev, sizeof y_seen, other_stream), "cuMemcpyDtoHAsync");
    CHECK(memcmp(y_seen, y_cpu, sizeof y_cpu) == 0, "device-pointer matmul differs from the CPU's");

    /* The work of one call, as the emulated driver counts it. Decode-sized (5
     * rows): two launches (prep, epilogue) and the GEMM; the scratch space
     * reused (no allocation), no synchronization, no host copy. */
    uint64_t before[6] = {0}, after[6] = {0};
    COUNT(before);
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev, LLMINT8_F16, ROWS, 6.0f, (void *)(uintptr_t)y_dev,
                         LLMINT8_BF16, NULL) == LLMINT8_OK,
          "matmul, counted");
    COUNT(after);
#define WORK(launches, gemms, memsets) \
    (!emulated || (after[0] - before[0] == (launches) && after[1] - before[1] == (gemms) && after[2] - before[2] == (memsets) && \
     after[3] == before[3] && after[4] == before[4] && after[5] == before[5]))
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
        COUNT(before);
        CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_big_dev, LLMINT8_F16, BIG, 6.0f,
                             (void *)(uintptr_t)y_big_dev, LLMINT8_BF16, NULL) == LLMINT8_OK,
              "prefill matmul");
        COUNT(after);
    }
    CHECK(WORK(6, 1, 1), "prefill call, threshold 6: " COUNTS);
    COUNT(before);
    CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_big_dev, LLMINT8_F16, BIG, 0.0f,
                         (void *)(uintptr_t)y_big_dev, LLMINT8_BF16, NULL) == LLMINT8_OK,
          "prefill matmul, threshold 0");
    COUNT(after);
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

    /* Memory of another device is refused (the emulated driver has two). */
    void *primary1 = NULL, *popped = NULL;
    uint64_t x_dev1 = 0;
    if (emulated) {
        must(cu.retain(&primary1, 1), "cuDevicePrimaryCtxRetain(1)");
        must(cu.push(primary1), "cuCtxPushCurrent(1)");
        x_dev1 = device_copy(NULL, sizeof x_host, NULL);
        must(cu.pop(&popped), "cuCtxPopCurrent");
        CHECK(llmint8_matmul(gpu, w_gpu, (const void *)(uintptr_t)x_dev1, LLMINT8_F16, ROWS, 6.0f,
                             (void *)(uintptr_t)y_dev, LLMINT8_BF16, NULL) == LLMINT8_ERR_INVALID_ARGUMENT,
              "x on device 1 taken by a context on device 0");
        CHECK(strstr(llmint8_last_error(), "device 1") != NULL, "the message names the device");
    }

    /* CUDA-graph capture of a decode step — a matmul, a shared-input pair and
     * a row-parallel stage (statistics, then the partial with them) — on the
     * engine's stream, by a fresh context whose scratch is reserved first;
     * replayed with new input bytes in the same buffer, every replay equal to
     * the same step run uncaptured, bit for bit. */
    {
        llmint8_context *g = NULL;
        CHECK(llmint8_context_create(LLMINT8_BACKEND_CUDA, 0, &g) == LLMINT8_OK, "capture context");
        if (!g) return 1;
        CHECK(llmint8_context_set_stream(g, stream) == LLMINT8_OK, "set_stream (capture context)");
        /* wa, wb: [K, N] (they take the first layer's output); wc: all K columns of W as a row-parallel shard. */
        static uint16_t wab_host[K * N];
        for (int i = 0; i < K * N; i++) wab_host[i] = f16_bits((float)((i * 4111 % 1999) - 999) * 2e-4f);
        llmint8_weight *wa = NULL, *wb = NULL, *wc = NULL;
        CHECK(llmint8_weight_quantize(g, wab_host, LLMINT8_F16, K, N, NULL, LLMINT8_F32, &wa) == LLMINT8_OK, "wa");
        CHECK(llmint8_weight_quantize(g, wab_host, LLMINT8_F16, K, N, bias, LLMINT8_F32, &wb) == LLMINT8_OK, "wb");
        CHECK(llmint8_weight_quantize_columns(g, w_host, LLMINT8_F16, N, K, 0, K, bias, LLMINT8_F32, NULL, 0, &wc) ==
                  LLMINT8_OK,
              "wc");
        if (!wa || !wb || !wc) return 1;
        uint64_t h = device_copy(NULL, ROWS * N * 2, stream), ya = device_copy(NULL, ROWS * K * 2, stream);
        uint64_t yb = device_copy(NULL, ROWS * K * 2, stream), yc = device_copy(NULL, ROWS * N * 2, stream);
        uint64_t absmax = device_copy(NULL, ROWS * 4, stream);
        const llmint8_weight *pair[2] = {wa, wb};
        void *pair_out[2] = {(void *)(uintptr_t)ya, (void *)(uintptr_t)yb};
#define DEV(p) ((void *)(uintptr_t)(p))
#define STEP()                                                                                                        \
    (llmint8_matmul(g, w_gpu, DEV(x_dev), LLMINT8_F16, ROWS, 6.0f, DEV(h), LLMINT8_F16, NULL) == LLMINT8_OK &&          \
     llmint8_matmul_shared_input(g, pair, 2, DEV(h), LLMINT8_F16, ROWS, 6.0f, pair_out, LLMINT8_F16, NULL) ==          \
         LLMINT8_OK &&                                                                                                \
     llmint8_row_parallel_statistics(g, wc, DEV(ya), LLMINT8_F16, ROWS, 6.0f, (float *)DEV(absmax), NULL) ==          \
         LLMINT8_OK &&                                                                                                \
     llmint8_matmul_row_parallel(g, wc, DEV(ya), LLMINT8_F16, ROWS, 6.0f, (const float *)DEV(absmax), DEV(yc),        \
                                 LLMINT8_F16, NULL) == LLMINT8_OK)

        /* Without a reservation the fresh context's scratch is too small: the
         * first call is refused before it queues anything; the capture stays valid. */
        void *graph = NULL, *exec = NULL;
        int status = -1;
        must(cu.begin_capture(stream, 0), "cuStreamBeginCapture (global mode)");
        CHECK(llmint8_matmul(g, w_gpu, DEV(x_dev), LLMINT8_F16, ROWS, 6.0f, DEV(h), LLMINT8_F16, NULL) ==
                  LLMINT8_ERR_UNSUPPORTED,
              "a call whose scratch was not reserved, while capturing");
        CHECK(strstr(llmint8_last_error(), "llmint8_context_reserve") != NULL, "the message names the reservation");
        CHECK(llmint8_context_reserve(g, ROWS, K, K) == LLMINT8_ERR_UNSUPPORTED, "reserving while capturing");
        must(cu.is_capturing(stream, &status), "cuStreamIsCapturing");
        CHECK(status == 1, "the refused calls left the capture active (status %d)", status);
        must(cu.end_capture(stream, &graph), "cuStreamEndCapture");
        must(cu.graph_destroy(graph), "cuGraphDestroy");

        /* Reserved for the step's largest shapes (in_features and out_features up to K). */
        CHECK(llmint8_context_reserve(g, ROWS, K, K) == LLMINT8_OK, "reserve");
        CHECK(llmint8_context_reserve(g, 0, K, K) == LLMINT8_ERR_SHAPE, "reserve 0 rows");
        static uint16_t x_a[ROWS * K], x_b[ROWS * K], yb_ref[ROWS * K], yc_ref[ROWS * N], yb_got[ROWS * K],
            yc_got[ROWS * N];
        for (int i = 0; i < ROWS * K; i++) {
            x_a[i] = x_host[i];
            x_b[i] = f16_bits((float)((i * 37 % 29) - 14) * 0.25f);
        }
        x_b[7] = f16_bits(12.0f); /* one outlier column */
        must(cu.begin_capture(stream, 0), "cuStreamBeginCapture (global mode)");
        COUNT(before);
        CHECK(STEP(), "the decode step, captured");
        COUNT(after);
        if (emulated) {
            printf("captured decode step: " COUNTS);
            printf("\n");
            CHECK(after[3] == before[3] && after[4] == before[4] && after[5] == before[5],
                  "the captured step allocated, synchronized or copied to the host");
        }
        /* What cannot be captured is refused without touching the capture. */
        llmint8_matmul_stats st;
        CHECK(llmint8_matmul(g, w_gpu, DEV(x_dev), LLMINT8_F16, ROWS, 6.0f, DEV(h), LLMINT8_F16, &st) ==
                  LLMINT8_ERR_UNSUPPORTED,
              "stats while capturing");
        CHECK(llmint8_matmul_host(g, w_gpu, x_host, LLMINT8_F16, ROWS, 6.0f, y_seen, LLMINT8_BF16, NULL) ==
                  LLMINT8_ERR_UNSUPPORTED,
              "a host-memory call while capturing");
        CHECK(llmint8_context_synchronize(g) == LLMINT8_ERR_UNSUPPORTED, "synchronize while capturing");
        llmint8_weight *late = (llmint8_weight *)1;
        CHECK(llmint8_weight_quantize(g, wab_host, LLMINT8_F16, K, N, NULL, LLMINT8_F32, &late) ==
                      LLMINT8_ERR_UNSUPPORTED &&
                  late == NULL,
              "making a weight while capturing");
        must(cu.end_capture(stream, &graph), "cuStreamEndCapture (the capture is intact)");
        must(cu.instantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags");
        void (*graph_counters)(uint64_t *) = NULL;
        *(void **)&graph_counters = dlsym(lib, "llmint8_fake_cuda_graph_counters");
        for (int replay = 0; replay < 4; replay++) {
            const uint16_t *x_in = replay % 2 ? x_b : x_a;
            /* Uncaptured: the same step on the same buffers. */
            must(cu.htod(x_dev, x_in, sizeof x_a, stream), "cuMemcpyHtoDAsync");
            CHECK(STEP(), "the decode step, uncaptured");
            must(cu.dtoh(yb_ref, yb, sizeof yb_ref, stream), "cuMemcpyDtoHAsync");
            must(cu.dtoh(yc_ref, yc, sizeof yc_ref, stream), "cuMemcpyDtoHAsync");
            /* Replayed: new bytes in x, the outputs poisoned first. */
            must(cu.htod(yb, poison, sizeof yb_got, stream), "cuMemcpyHtoDAsync");
            must(cu.htod(yc, poison, sizeof yc_got, stream), "cuMemcpyHtoDAsync");
            must(cu.htod(x_dev, x_in, sizeof x_a, stream), "cuMemcpyHtoDAsync");
            COUNT(before);
            must(cu.graph_launch(exec, stream), "cuGraphLaunch");
            COUNT(after);
            must(cu.stream_sync(stream), "cuStreamSynchronize");
            must(cu.dtoh(yb_got, yb, sizeof yb_got, stream), "cuMemcpyDtoHAsync");
            must(cu.dtoh(yc_got, yc, sizeof yc_got, stream), "cuMemcpyDtoHAsync");
            CHECK(memcmp(yb_got, yb_ref, sizeof yb_ref) == 0 && memcmp(yc_got, yc_ref, sizeof yc_ref) == 0,
                  "replay %d differs from the uncaptured step", replay);
            CHECK(memcmp(yc_got, poison, sizeof yc_got) != 0, "replay %d wrote nothing", replay);
            if (graph_counters)
                CHECK(WORK(0, 0, 0), "a replay is queued as recorded work, no new calls: " COUNTS);
        }
        /* The captured row-parallel stage of one rank is the plain matmul of that layer. */
        static uint16_t ya_host[ROWS * K], yc_plain[ROWS * N];
        must(cu.dtoh(ya_host, ya, sizeof ya_host, stream), "cuMemcpyDtoHAsync");
        CHECK(llmint8_matmul_host(cpu, w_cpu, ya_host, LLMINT8_F16, ROWS, 6.0f, yc_plain, LLMINT8_F16, NULL) ==
                  LLMINT8_OK,
              "CPU matmul of the last layer");
        CHECK(memcmp(yc_plain, yc_got, sizeof yc_plain) == 0, "one rank's row-parallel stage differs from the matmul");
        if (graph_counters) {
            uint64_t g_counts[2];
            graph_counters(g_counts);
            CHECK(g_counts[0] >= 4, "%d graph launches", (int)g_counts[0]);
            printf("capture: %d graph launches, %d operations refused on a capturing stream by the driver\n",
                   (int)g_counts[0], (int)g_counts[1]);
            CHECK(g_counts[1] == 0, "llmint8 made the driver refuse %d operations while capturing", (int)g_counts[1]);
        }
        must(cu.htod(x_dev, x_host, sizeof x_host, stream), "cuMemcpyHtoDAsync"); /* x as before, for the rest */
        must(cu.exec_destroy(exec), "cuGraphExecDestroy");
        must(cu.graph_destroy(graph), "cuGraphDestroy");
        llmint8_weight_destroy(wa);
        llmint8_weight_destroy(wb);
        llmint8_weight_destroy(wc);
        llmint8_context_destroy(g);
        must(cu.free(h), "cuMemFree");
        must(cu.free(ya), "cuMemFree");
        must(cu.free(yb), "cuMemFree");
        must(cu.free(yc), "cuMemFree");
        must(cu.free(absmax), "cuMemFree");
    }

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
    if (emulated) {
        must(cu.push(primary1), "cuCtxPushCurrent(1)");
        must(cu.free(x_dev1), "cuMemFree");
        must(cu.pop(&popped), "cuCtxPopCurrent");
    }

    /* Nothing of llmint8's is left on the device: no allocation, no cuBLASLt
     * object (the GEMM plans each context keeps), and the primary contexts
     * retained only by this program. */
    int (*live_allocations)(void) = NULL;
    int (*live_lt_objects)(void) = NULL;
    int (*retained)(int) = NULL;
    *(void **)&live_allocations = dlsym(lib, "llmint8_fake_cuda_live_allocations");
    *(void **)&live_lt_objects = dlsym(lib, "llmint8_fake_cuda_live_lt_objects");
    *(void **)&retained = dlsym(lib, "llmint8_fake_cuda_retained");
    if (!emulated) {
        /* a real driver has no such inspection */
    } else if (live_allocations && live_lt_objects && retained) {
        CHECK(live_allocations() == 0, "%d device allocations left", live_allocations());
        CHECK(live_lt_objects() == 0, "%d cuBLASLt objects left (handles, descriptors, layouts)", live_lt_objects());
        CHECK(retained(0) == 1 && retained(1) == 1, "primary contexts retained %d and %d times", retained(0),
              retained(1));
    } else {
        CHECK(0, "the emulated driver lacks its inspection functions");
    }
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
