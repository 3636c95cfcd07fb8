// Package cudadriver is the few CUDA driver calls the binding's tests make
// themselves, as an engine would (device buffers for QuantizeDevice and
// MatmulDevice), through the driver library named by LLMINT8_LIBCUDA — in the
// test command, the emulated GPU of tests/cuda_emu/fake_cuda.cpp. Tests only.
package cudadriver

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

typedef int (*init_t)(unsigned);
typedef int (*retain_t)(void **, int);
typedef int (*push_t)(void *);
typedef int (*alloc_t)(uint64_t *, size_t);
typedef int (*free_t)(uint64_t);
typedef int (*htod_t)(uint64_t, const void *, size_t, void *);
typedef int (*dtoh_t)(void *, uint64_t, size_t, void *);
typedef int (*sync_t)(void *);

static struct {
    init_t init; retain_t retain; push_t push; alloc_t alloc; free_t free; htod_t htod; dtoh_t dtoh; sync_t sync;
} cu;

// Opens the driver, makes device 0's primary context current on this thread.
static int cu_open(const char *path) {
    void *lib = dlopen(path, RTLD_NOW);
    if (!lib) return -1;
    *(void **)&cu.init = dlsym(lib, "cuInit");
    *(void **)&cu.retain = dlsym(lib, "cuDevicePrimaryCtxRetain");
    *(void **)&cu.push = dlsym(lib, "cuCtxPushCurrent_v2");
    *(void **)&cu.alloc = dlsym(lib, "cuMemAlloc_v2");
    *(void **)&cu.free = dlsym(lib, "cuMemFree_v2");
    *(void **)&cu.htod = dlsym(lib, "cuMemcpyHtoDAsync_v2");
    *(void **)&cu.dtoh = dlsym(lib, "cuMemcpyDtoHAsync_v2");
    *(void **)&cu.sync = dlsym(lib, "cuStreamSynchronize");
    if (!cu.init || !cu.retain || !cu.push || !cu.alloc || !cu.free || !cu.htod || !cu.dtoh || !cu.sync) return -2;
    void *ctx = NULL;
    int r = cu.init(0);
    if (r == 0) r = cu.retain(&ctx, 0);
    if (r == 0) r = cu.push(ctx);
    return r;
}
static int cu_alloc(uint64_t *p, size_t n) { return cu.alloc(p, n); }
static int cu_free(uint64_t p) { return cu.free(p); }
static int cu_copy_in(uint64_t dst, const void *src, size_t n) {
    int r = cu.htod(dst, src, n, NULL);
    return r ? r : cu.sync(NULL);
}
static int cu_copy_out(void *dst, uint64_t src, size_t n) {
    int r = cu.sync(NULL);
    return r ? r : cu.dtoh(dst, src, n, NULL);
}
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"
)

// Driver calls on device 0, all from one locked OS thread (the driver's
// current context is per thread).
type Driver struct{}

// Open opens the driver named by LLMINT8_LIBCUDA; the calling goroutine is
// locked to its OS thread until Close.
func Open() (*Driver, error) {
	path := os.Getenv("LLMINT8_LIBCUDA")
	if path == "" {
		return nil, fmt.Errorf("LLMINT8_LIBCUDA is not set")
	}
	runtime.LockOSThread()
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	if r := C.cu_open(p); r != 0 {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("opening the CUDA driver %s: %d", path, r)
	}
	return &Driver{}, nil
}

// Close unlocks the goroutine from its thread.
func (d *Driver) Close() { runtime.UnlockOSThread() }

// Upload copies the bytes of src into a new device buffer and returns its address.
func Upload[T any](d *Driver, src []T) (uintptr, error) {
	n := C.size_t(len(src)) * C.size_t(unsafe.Sizeof(src[0]))
	var p C.uint64_t
	if r := C.cu_alloc(&p, n); r != 0 {
		return 0, fmt.Errorf("cuMemAlloc: %d", r)
	}
	if r := C.cu_copy_in(p, unsafe.Pointer(&src[0]), n); r != 0 {
		return 0, fmt.Errorf("cuMemcpyHtoDAsync: %d", r)
	}
	return uintptr(p), nil
}

// Download waits for the device and copies len(dst) elements from address src.
func Download[T any](d *Driver, dst []T, src uintptr) error {
	n := C.size_t(len(dst)) * C.size_t(unsafe.Sizeof(dst[0]))
	if r := C.cu_copy_out(unsafe.Pointer(&dst[0]), C.uint64_t(src), n); r != 0 {
		return fmt.Errorf("cuMemcpyDtoHAsync: %d", r)
	}
	return nil
}

// Free releases a device buffer.
func (d *Driver) Free(p uintptr) error {
	if r := C.cu_free(C.uint64_t(p)); r != 0 {
		return fmt.Errorf("cuMemFree: %d", r)
	}
	return nil
}
