/* A stand-in for libcuda.so.1 on machines without a GPU, for
 * tests/cuda_discovery.rs: it exports every driver entry point llmint8 binds
 * (src/cuda/sys.rs). cuInit returns $FAKE_CUDA_INIT (default 0),
 * cuDriverGetVersion $FAKE_CUDA_VERSION (default 12080), cuDeviceGetCount 0
 * devices; every other entry point fails with error 999, and must never be
 * reached by the tests. */
#include <stdlib.h>

static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return v ? atoi(v) : fallback;
}

int cuInit(unsigned flags) { (void)flags; return env_int("FAKE_CUDA_INIT", 0); }
int cuDriverGetVersion(int *version) { *version = env_int("FAKE_CUDA_VERSION", 12080); return 0; }
int cuGetErrorString(int error, const char **text) {
    *text = error == 100 ? "fake: no CUDA-capable device is detected" : "fake: unknown error";
    return 0;
}
int cuDeviceGetCount(int *count) { *count = 0; return 0; }

/* Never called by the tests. */
int cuDeviceGet(void) { return 999; }
int cuDeviceGetName(void) { return 999; }
int cuDeviceGetAttribute(void) { return 999; }
int cuDevicePrimaryCtxRetain(void) { return 999; }
int cuDevicePrimaryCtxRelease_v2(void) { return 999; }
int cuCtxPushCurrent_v2(void) { return 999; }
int cuCtxPopCurrent_v2(void) { return 999; }
int cuMemAlloc_v2(void) { return 999; }
int cuMemFree_v2(void) { return 999; }
int cuMemAllocAsync(void) { return 999; }
int cuMemFreeAsync(void) { return 999; }
int cuMemcpyHtoDAsync_v2(void) { return 999; }
int cuMemcpyDtoHAsync_v2(void) { return 999; }
int cuMemsetD32Async(void) { return 999; }
int cuPointerGetAttribute(void) { return 999; }
int cuStreamSynchronize(void) { return 999; }
int cuStreamIsCapturing(void) { return 999; }
int cuStreamWaitEvent(void) { return 999; }
int cuEventCreate(void) { return 999; }
int cuEventRecord(void) { return 999; }
int cuEventDestroy_v2(void) { return 999; }
int cuModuleLoadData(void) { return 999; }
int cuModuleUnload(void) { return 999; }
int cuModuleGetFunction(void) { return 999; }
int cuLaunchKernel(void) { return 999; }
