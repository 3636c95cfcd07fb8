// An emulated GPU for machines without one: a shared library that stands in
// for libcuda.so.1, libnvrtc.so and libcublasLt.so at once (point
// LLMINT8_LIBCUDA, LLMINT8_LIBNVRTC and LLMINT8_LIBCUBLASLT at it), so that
// llmint8's real CUDA backend (src/cuda) runs end to end on the CPU: device
// discovery, contexts, allocations, copies, streams and events, NVRTC,
// module loading, every kernel launch (kernels/llmint8.cu executed by
// emu.hpp, its parameters unpacked by their C++ types) and the cuBLASLt int8
// GEMM. What it checks, as a GPU would or stricter:
//
// - a context must be current for every call that needs one;
// - device memory is not host memory: each allocation sits between two
//   inaccessible pages (an overrun by more than its 256-byte alignment
//   faults), starts filled with garbage (0xCD, as nothing promises zeros),
//   and every pointer a copy, memset, kernel or GEMM gets must lie in a live
//   allocation of the current device, with room for what it touches (kernel
//   pointers: the start only);
// - work is asynchronous: kernels, memsets, GEMMs, stream-ordered frees and
//   host-to-device copies (snapshotted at the call, as from pageable memory)
//   wait in their stream's queue until something synchronizes with it
//   (cuStreamSynchronize, a device-to-host copy on it, an event waited on,
//   cuMemFree, or work on the legacy default stream, which waits for the
//   others and they for it) — so a result read before its stream is waited on
//   is still the garbage, and a host buffer freed too early is caught;
// - streams, events, modules and functions are checked handles;
// - cuBLASLt's int8 requirements (TN, CUBLAS_COMPUTE_32I with int32 scales,
//   leading dimensions and m, k multiples of 4, 4-byte aligned pointers), and
//   int32 overflow of an accumulator aborts;
// - page-locked host memory (cuMemHostAlloc) is truly asynchronous: a copy
//   from or into it reads or writes the host bytes when its stream runs, not
//   at the call — so a caller's buffer touched after the call returned is
//   caught (pageable memory is snapshotted, or copied synchronously);
// - on request, a given call fails (llmint8_fake_cuda_fail_call), for tests of
//   the error paths after work was queued;
// - and it counts what it was asked to do (launches, GEMMs, memsets,
//   allocations, synchronizations, host copies) for tests of the work per call.
//
// A violation of device memory rules aborts with a message ("fake CUDA: ...")
// — on a GPU it would be an illegal address, or silent corruption. Not
// emulated: timing, concurrency between streams (queues run one at a time,
// in order), peer access. Environment: LLMINT8_FAKE_CUDA_DEVICES (default 1),
// LLMINT8_FAKE_CUDA_VERSION (default 12080), LLMINT8_FAKE_CUDA_ARCH (90).
#include "emu.hpp"

#include "../../kernels/llmint8.cu"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace fake {

// Result codes used here (cuda.h, nvrtc.h, cublas_api.h).
enum : int {
    SUCCESS = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    NOT_INITIALIZED = 3,
    INVALID_DEVICE = 101,
    INVALID_IMAGE = 200,
    INVALID_CONTEXT = 201,
    INVALID_HANDLE = 400,
    ILLEGAL_STATE = 401,
    NOT_FOUND = 500,
    LAUNCH_OUT_OF_RESOURCES = 701,
    STREAM_CAPTURE_UNSUPPORTED = 900,
    STREAM_CAPTURE_INVALIDATED = 901,
};
enum : int { LT_SUCCESS = 0, LT_NOT_INITIALIZED = 1, LT_INVALID_VALUE = 7, LT_NOT_SUPPORTED = 15 };

std::recursive_mutex lock;  // the whole fake is one device queue at a time
using Guard = std::lock_guard<std::recursive_mutex>;

int env_int(const char *name, int fallback) {
    const char *v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}
int device_count() { return env_int("LLMINT8_FAKE_CUDA_DEVICES", 1); }

[[noreturn]] __attribute__((format(printf, 1, 2))) void violation(const char *format, ...) {
    std::va_list args;
    va_start(args, format);
    std::fprintf(stderr, "fake CUDA: ");
    std::vfprintf(stderr, format, args);
    std::fprintf(stderr, "\n");
    va_end(args);
    std::abort();
}

bool initialized = false;

// What the library asked of the device, for tests of its work per call.
struct Counters {
    uint64_t launches, gemms, memsets, allocations, synchronizations, host_copies;
    uint64_t graph_launches, capture_violations;
} counters;

// Objects handed out as opaque handles by a create call, checked on every use
// and valid until destroyed.
template <class T>
struct Handles {
    std::set<T *> live;
    void *make(T *object) {
        live.insert(object);
        return object;
    }
    T *get(const void *handle) const {
        T *object = static_cast<T *>(const_cast<void *>(handle));
        return live.count(object) ? object : nullptr;
    }
    bool destroy(const void *handle) {
        T *object = get(handle);
        if (!object) return false;
        live.erase(object);
        delete object;
        return true;
    }
};

// ---- contexts: each device's primary context, a per-thread stack ----
struct Context {
    int device;
    int retained = 0;
};
Context contexts[16];
thread_local std::vector<Context *> current_stack;

Context *current() { return current_stack.empty() ? nullptr : current_stack.back(); }

// ---- device memory ----
struct Allocation {
    uintptr_t start;
    size_t bytes;
    int device;
    void *mapping;
    size_t mapping_bytes;
};
std::map<uintptr_t, Allocation> allocations;  // by start
const size_t PAGE = 4096;

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

int allocate(uintptr_t *out, size_t bytes, int device) {
    if (bytes == 0) return INVALID_VALUE;
    if (bytes > (size_t(1) << 40)) return OUT_OF_MEMORY;
    const size_t body = round_up(bytes, PAGE), total = body + 2 * PAGE;
    void *m = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return OUT_OF_MEMORY;
    char *first = static_cast<char *>(m) + PAGE;
    mprotect(first, body, PROT_READ | PROT_WRITE);
    // The end of the (256-byte aligned) allocation meets the guard page.
    char *start = first + body - round_up(bytes, 256);
    std::memset(start, 0xCD, round_up(bytes, 256));
    allocations[(uintptr_t)start] = Allocation{(uintptr_t)start, bytes, device, m, total};
    *out = (uintptr_t)start;
    return SUCCESS;
}

// The live allocation holding [p, p + bytes), or null.
const Allocation *find(uintptr_t p, size_t bytes = 1) {
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin()) return nullptr;
    --it;
    const Allocation &a = it->second;
    if (p < a.start || p - a.start > a.bytes || bytes > a.bytes - (p - a.start)) return nullptr;
    return &a;
}

void require_device_range(uintptr_t p, size_t bytes, int device, const char *what) {
    const Allocation *a = find(p, bytes);
    if (!a) violation("%s: [%#lx, +%zu) is not inside a live device allocation", what, (unsigned long)p, bytes);
    if (a->device != device) violation("%s: %#lx is memory of device %d, used on device %d", what, (unsigned long)p, a->device, device);
}

void release(uintptr_t p) {
    auto it = allocations.find(p);
    if (it == allocations.end()) violation("freeing %#lx, which is not the start of a live allocation", (unsigned long)p);
    munmap(it->second.mapping, it->second.mapping_bytes);
    allocations.erase(it);
}

// ---- streams and events ----
// Stream capture (cuStreamBeginCapture … cuStreamEndCapture): while a stream
// captures, the work queued on it is recorded into its graph instead of run;
// an instantiated graph's launch queues the recorded work again, in order.
// What a CUDA graph cannot hold — allocation, freeing, synchronization, copies
// from or to pageable host memory — is refused while capturing
// (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED) and invalidates the capture, whose
// end then fails (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED), as on a GPU in the
// global capture mode.
struct Graph {
    std::vector<std::function<void()>> work;
};
Handles<Graph> graphs;
struct GraphExec {
    int device;
    std::vector<std::function<void()>> work;
};
Handles<GraphExec> graph_execs;

struct Stream {
    int device;
    bool legacy;
    std::deque<std::function<void()>> queue;
    Graph *capture = nullptr;  // while capturing
    bool invalidated = false;  // the capture met something it cannot hold
};
Stream legacy_streams[16];
Handles<Stream> streams;  // created by cuStreamCreate

struct Event {
    Stream *stream = nullptr;  // where it was last recorded
};
Handles<Event> events;

const uintptr_t CU_STREAM_LEGACY = 1, CU_STREAM_PER_THREAD = 2;

// The stream a handle names on the current context's device, or null.
Stream *stream_of(void *handle) {
    Context *c = current();
    if (!c) return nullptr;
    const uintptr_t h = (uintptr_t)handle;
    if (h == 0 || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        Stream &s = legacy_streams[c->device];
        s.device = c->device;
        s.legacy = true;
        return &s;
    }
    Stream *s = streams.get(handle);
    if (!s || s->device != c->device) return nullptr;
    return s;
}

void run(Stream *s) {
    while (!s->queue.empty()) {
        auto work = std::move(s->queue.front());
        s->queue.pop_front();
        work();
    }
}

void run_all_of_device(int device) {
    run(&legacy_streams[device]);
    for (Stream *s : streams.live)
        if (s->device == device) run(s);
}

void run_everything() {
    for (int d = 0; d < 16; d++) run_all_of_device(d);
}

// Everything a host wait on `s` waits for: the legacy default stream also
// waits for every other stream of its device.
void wait_for(Stream *s) {
    if (s->legacy) run_all_of_device(s->device);
    else run(s);
}

// Queues work on a stream. The legacy default stream waits for every other
// stream of its device, and they wait for it: running the others' queues
// first keeps that order (running work early is always allowed).
void enqueue(Stream *s, std::function<void()> work) {
    if (s->capture) {
        if (!s->invalidated) s->capture->work.push_back(std::move(work));
        return;
    }
    if (s->legacy) {
        for (Stream *other : streams.live)
            if (other->device == s->device) run(other);
    } else {
        run(&legacy_streams[s->device]);
    }
    s->queue.push_back(std::move(work));
}

// Refuses an operation a CUDA graph cannot hold on a capturing stream `s`
// (true: refused, the capture invalidated).
bool refused_in_capture(Stream *s) {
    if (!s || !s->capture) return false;
    s->invalidated = true;
    counters.capture_violations++;
    return true;
}

// The same for a call that is not on a stream (cuMemAlloc, cuMemFree,
// cuCtxSynchronize): refused while any stream of the device captures.
bool refused_while_device_captures(int device) {
    bool refused = false;
    for (Stream *s : streams.live)
        if (s->device == device && s->capture) refused = refused_in_capture(s) || refused;
    return refused;
}

// ---- kernels ----
struct Module;
struct Function {
    std::string name;
    Module *module;
    // Unpacks the launch's parameters (copied now, as cuLaunchKernel does)
    // into the work that runs the kernel later.
    std::function<std::function<void()>(unsigned grid, unsigned block, void **params, int device)> bind;
};
struct Module {
    int device;
    std::vector<std::unique_ptr<Function>> functions;
};
Handles<Module> modules;
std::set<Function *> functions;

template <class P>
void check_parameter(const P &value, int device, const std::string &kernel, size_t index);

// A parameter struct's device pointers, each checked as a pointer parameter.
#define FAKE_CHECK_FIELD(type, name) check_parameter(p.name, device, kernel + "." #name, index);
#define FAKE_CHECK_PARAMS(NAME, FIELDS)                                                     \
    void check_struct(const NAME &p, int device, const std::string &kernel, size_t index) { \
        FIELDS(FAKE_CHECK_FIELD)                                                            \
    }
LLMINT8_PARAMS(FAKE_CHECK_PARAMS)

template <class P>
void check_parameter(const P &value, int device, const std::string &kernel, size_t index) {
    if constexpr (std::is_class_v<P>) {
        check_struct(value, device, kernel, index);
    } else if constexpr (std::is_pointer_v<P>) {
        if (value == nullptr) return;
        const Allocation *a = find((uintptr_t)value, 0);
        if (!a) violation("kernel %s, parameter %zu: %p is not device memory", kernel.c_str(), index, (const void *)value);
        if (a->device != device)
            violation("kernel %s, parameter %zu: %p is memory of device %d, launched on %d", kernel.c_str(), index,
                      (const void *)value, a->device, device);
    }
}

template <class... P, size_t... I>
std::function<void()> bind_kernel(const std::string &name, void (*kernel)(P...), unsigned grid, unsigned block,
                                  void **params, int device, std::index_sequence<I...>) {
    std::tuple<std::decay_t<P>...> values{*static_cast<std::decay_t<P> *>(params[I])...};
    return [=] {
        (check_parameter(std::get<I>(values), device, name, I), ...);
        emu::launch(kernel, grid, block, std::get<I>(values)...);
    };
}

template <class... P>
std::pair<std::string, std::function<std::function<void()>(unsigned, unsigned, void **, int)>> kernel(
    const char *name, void (*k)(P...)) {
    std::string n = name;
    return {n, [n, k](unsigned grid, unsigned block, void **params, int device) {
                return bind_kernel(n, k, grid, block, params, device, std::index_sequence_for<P...>{});
            }};
}

#define KERNEL(NAME) kernel(#NAME, &NAME)
const std::vector<std::pair<std::string, std::function<std::function<void()>(unsigned, unsigned, void **, int)>>> &
kernel_table() {
    static const std::vector<std::pair<std::string, std::function<std::function<void()>(unsigned, unsigned, void **, int)>>>
        table = {
            KERNEL(llmint8_pad_rows),
            KERNEL(llmint8_outlier_list),
            KERNEL(llmint8_gather_weight_columns),
            KERNEL(llmint8_quantize_rows_f32),
            KERNEL(llmint8_quantize_rows_f16),
            KERNEL(llmint8_quantize_rows_bf16),
            KERNEL(llmint8_rescale_rows_f32),
            KERNEL(llmint8_rescale_rows_f16),
            KERNEL(llmint8_rescale_rows_bf16),
            KERNEL(llmint8_row_statistics),
            KERNEL(llmint8_param_layout),
            KERNEL(llmint8_prep_small_f32),
            KERNEL(llmint8_prep_small_f16),
            KERNEL(llmint8_prep_small_bf16),
            KERNEL(llmint8_gather_outliers_f32),
            KERNEL(llmint8_gather_outliers_f16),
            KERNEL(llmint8_gather_outliers_bf16),
            KERNEL(llmint8_epilogue_f32_f32),
            KERNEL(llmint8_epilogue_f32_f16),
            KERNEL(llmint8_epilogue_f32_bf16),
            KERNEL(llmint8_epilogue_f16_f32),
            KERNEL(llmint8_epilogue_f16_f16),
            KERNEL(llmint8_epilogue_f16_bf16),
            KERNEL(llmint8_epilogue_bf16_f32),
            KERNEL(llmint8_epilogue_bf16_f16),
            KERNEL(llmint8_epilogue_bf16_bf16),
        };
    return table;
}

// ---- the CUBIN that the fake NVRTC makes and the fake loader takes ----
// A 64-bit ELF header for EM_CUDA with the architecture in e_flags, then the
// kernel names (what src/cuda/nvrtc.rs checks), then a marker.
const char CUBIN_MARKER[] = "llmint8-fake-cubin";

std::string make_cubin(int arch) {
    std::string image(64, '\0');
    image[0] = 0x7f, image[1] = 'E', image[2] = 'L', image[3] = 'F', image[4] = 2, image[5] = 1, image[6] = 1;
    image[18] = (char)(190 & 0xff), image[19] = (char)(190 >> 8);
    image[48] = (char)arch;
    image += '\0';
    for (auto &k : kernel_table()) image += k.first + '\0';
    image += CUBIN_MARKER;
    image += '\0';
    return image;
}

}  // namespace fake

using namespace fake;

// ==== the driver API ====

#define NEED_INIT \
    if (!initialized) return NOT_INITIALIZED
#define NEED_CONTEXT \
    NEED_INIT;       \
    if (!current()) return INVALID_CONTEXT

EXPORT int cuInit(unsigned flags) {
    Guard g(lock);
    if (flags != 0) return INVALID_VALUE;
    initialized = true;
    return SUCCESS;
}

EXPORT int cuDriverGetVersion(int *version) {
    if (!version) return INVALID_VALUE;
    *version = env_int("LLMINT8_FAKE_CUDA_VERSION", 12080);
    return SUCCESS;
}

EXPORT int cuGetErrorString(int error, const char **text) {
    if (!text) return INVALID_VALUE;
    switch (error) {
        case SUCCESS: *text = "no error"; break;
        case INVALID_VALUE: *text = "invalid argument"; break;
        case OUT_OF_MEMORY: *text = "out of memory"; break;
        case NOT_INITIALIZED: *text = "initialization error"; break;
        case INVALID_DEVICE: *text = "invalid device ordinal"; break;
        case INVALID_IMAGE: *text = "device kernel image is invalid"; break;
        case INVALID_CONTEXT: *text = "invalid device context"; break;
        case INVALID_HANDLE: *text = "invalid resource handle"; break;
        case NOT_FOUND: *text = "named symbol not found"; break;
        case LAUNCH_OUT_OF_RESOURCES: *text = "too many resources requested for launch"; break;
        case ILLEGAL_STATE: *text = "the operation cannot be performed in the present state"; break;
        case STREAM_CAPTURE_UNSUPPORTED: *text = "operation not permitted when stream is capturing"; break;
        case STREAM_CAPTURE_INVALIDATED: *text = "operation failed due to a previous error during capture"; break;
        default: *text = nullptr; return INVALID_VALUE;
    }
    return SUCCESS;
}

EXPORT int cuDeviceGetCount(int *count) {
    NEED_INIT;
    if (!count) return INVALID_VALUE;
    *count = device_count();
    return SUCCESS;
}

EXPORT int cuDeviceGet(int *device, int ordinal) {
    NEED_INIT;
    if (!device) return INVALID_VALUE;
    if (ordinal < 0 || ordinal >= device_count()) return INVALID_DEVICE;
    *device = ordinal;
    return SUCCESS;
}

EXPORT int cuDeviceGetName(char *name, int length, int device) {
    NEED_INIT;
    if (!name || length <= 0) return INVALID_VALUE;
    if (device < 0 || device >= device_count()) return INVALID_DEVICE;
    std::snprintf(name, (size_t)length, "llmint8 emulated GPU %d (tests/cuda_emu/fake_cuda.cpp)", device);
    return SUCCESS;
}

EXPORT int cuDeviceGetAttribute(int *value, int attribute, int device) {
    NEED_INIT;
    if (!value) return INVALID_VALUE;
    if (device < 0 || device >= device_count()) return INVALID_DEVICE;
    const int arch = env_int("LLMINT8_FAKE_CUDA_ARCH", 90);
    switch (attribute) {
        case 75: *value = arch / 10; return SUCCESS;  // compute capability major
        case 76: *value = arch % 10; return SUCCESS;  // minor
        default: return INVALID_VALUE;
    }
}

EXPORT int cuDevicePrimaryCtxRetain(void **ctx, int device) {
    Guard g(lock);
    NEED_INIT;
    if (!ctx) return INVALID_VALUE;
    if (device < 0 || device >= device_count()) return INVALID_DEVICE;
    contexts[device].device = device;
    contexts[device].retained++;
    *ctx = &contexts[device];
    return SUCCESS;
}

EXPORT int cuDevicePrimaryCtxRelease_v2(int device) {
    Guard g(lock);
    NEED_INIT;
    if (device < 0 || device >= device_count()) return INVALID_DEVICE;
    if (contexts[device].retained <= 0) violation("cuDevicePrimaryCtxRelease on device %d, never retained", device);
    contexts[device].retained--;
    return SUCCESS;
}

EXPORT int cuCtxPushCurrent_v2(void *ctx) {
    Guard g(lock);
    NEED_INIT;
    Context *c = static_cast<Context *>(ctx);
    if (c < contexts || c >= contexts + 16 || c->retained <= 0) return INVALID_CONTEXT;
    current_stack.push_back(c);
    return SUCCESS;
}

EXPORT int cuCtxPopCurrent_v2(void **ctx) {
    Guard g(lock);
    NEED_INIT;
    if (current_stack.empty()) return INVALID_CONTEXT;
    if (ctx) *ctx = current_stack.back();
    current_stack.pop_back();
    return SUCCESS;
}

namespace fake {
// Page-locked host allocations (cuMemHostAlloc): start -> bytes.
std::map<uintptr_t, size_t> pinned;

bool is_pinned(const void *p, size_t bytes) {
    auto it = pinned.upper_bound((uintptr_t)p);
    if (it == pinned.begin()) return false;
    --it;
    return (uintptr_t)p + bytes <= it->first + it->second;
}

// An armed failure: the call named `function` after `skip` more of them returns `result`.
struct Failure {
    std::string function;
    int skip = 0;
    int result = SUCCESS;
    bool armed = false;
} failure;

// Whether this call of `function` is the one to fail (then it does nothing).
int injected(const char *function) {
    if (!failure.armed || failure.function != function) return SUCCESS;
    if (failure.skip-- > 0) return SUCCESS;
    failure.armed = false;
    return failure.result;
}
}  // namespace fake

EXPORT int cuMemHostAlloc(void **pp, size_t bytes, unsigned /*flags*/) {
    Guard g(lock);
    if (!pp || bytes == 0) return INVALID_VALUE;
    void *p = std::malloc(bytes);
    if (!p) return OUT_OF_MEMORY;
    pinned[(uintptr_t)p] = bytes;
    *pp = p;
    return SUCCESS;
}

EXPORT int cuMemFreeHost(void *p) {
    Guard g(lock);
    auto it = pinned.find((uintptr_t)p);
    if (it == pinned.end()) return INVALID_VALUE;
    pinned.erase(it);
    std::free(p);
    return SUCCESS;
}

EXPORT int cuMemAlloc_v2(uint64_t *ptr, size_t bytes) {
    Guard g(lock);
    NEED_CONTEXT;
    if (!ptr) return INVALID_VALUE;
    if (refused_while_device_captures(current()->device)) return STREAM_CAPTURE_UNSUPPORTED;
    counters.allocations++;
    uintptr_t p = 0;
    int r = allocate(&p, bytes, current()->device);
    if (r == SUCCESS) *ptr = p;
    return r;
}

EXPORT int cuMemFree_v2(uint64_t ptr) {
    Guard g(lock);
    NEED_CONTEXT;
    if (ptr == 0) return SUCCESS;
    if (refused_while_device_captures(current()->device)) return STREAM_CAPTURE_UNSUPPORTED;
    run_everything();  // cuMemFree synchronizes
    release((uintptr_t)ptr);
    return SUCCESS;
}

EXPORT int cuMemAllocAsync(uint64_t *ptr, size_t bytes, void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    if (!ptr) return INVALID_VALUE;
    if (!stream_of(stream)) return INVALID_HANDLE;
    if (refused_in_capture(stream_of(stream))) return STREAM_CAPTURE_UNSUPPORTED;
    counters.allocations++;
    uintptr_t p = 0;
    int r = allocate(&p, bytes, current()->device);
    if (r == SUCCESS) *ptr = p;
    return r;
}

EXPORT int cuMemFreeAsync(uint64_t ptr, void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (refused_in_capture(s)) return STREAM_CAPTURE_UNSUPPORTED;
    if (!find(ptr, 0) || find(ptr, 0)->start != ptr) return INVALID_VALUE;
    enqueue(s, [ptr] { release((uintptr_t)ptr); });
    return SUCCESS;
}

EXPORT int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (refused_in_capture(s)) return STREAM_CAPTURE_UNSUPPORTED;
    if (int r = injected("cuMemcpyHtoDAsync")) return r;
    counters.host_copies++;
    if (bytes == 0) return SUCCESS;
    if (!src) return INVALID_VALUE;
    const int device = current()->device;
    if (is_pinned(src, bytes)) {
        // Page-locked: read when the stream gets there.
        enqueue(s, [=] {
            require_device_range(dst, bytes, device, "cuMemcpyHtoDAsync");
            if (!is_pinned(src, bytes)) violation("cuMemcpyHtoDAsync: page-locked source freed before the copy ran");
            std::memcpy((void *)dst, src, bytes);
        });
        return SUCCESS;
    }
    // Pageable host memory: the data is taken now, written in stream order.
    auto data = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + bytes);
    enqueue(s, [=] {
        require_device_range(dst, bytes, device, "cuMemcpyHtoDAsync");
        std::memcpy((void *)dst, data->data(), bytes);
    });
    return SUCCESS;
}

EXPORT int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (refused_in_capture(s)) return STREAM_CAPTURE_UNSUPPORTED;
    if (int r = injected("cuMemcpyDtoHAsync")) return r;
    counters.host_copies++;
    if (bytes == 0) return SUCCESS;
    if (!dst) return INVALID_VALUE;
    if (is_pinned(dst, bytes)) {
        // Page-locked: written when the stream gets there.
        const int device = current()->device;
        enqueue(s, [=] {
            require_device_range(src, bytes, device, "cuMemcpyDtoHAsync");
            if (!is_pinned(dst, bytes)) violation("cuMemcpyDtoHAsync: page-locked destination freed before the copy ran");
            std::memcpy(dst, (const void *)src, bytes);
        });
        return SUCCESS;
    }
    // Pageable host memory: returns once the copy is done.
    wait_for(s);
    require_device_range(src, bytes, current()->device, "cuMemcpyDtoHAsync");
    std::memcpy(dst, (const void *)src, bytes);
    return SUCCESS;
}

EXPORT int cuMemsetD32Async(uint64_t dst, unsigned value, size_t count, void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    counters.memsets++;
    if (dst % 4 != 0) return INVALID_VALUE;
    const int device = current()->device;
    enqueue(s, [=] {
        if (count == 0) return;
        require_device_range(dst, count * 4, device, "cuMemsetD32Async");
        for (size_t i = 0; i < count; i++) std::memcpy((char *)dst + 4 * i, &value, 4);
    });
    return SUCCESS;
}

EXPORT int cuPointerGetAttribute(void *data, int attribute, uint64_t ptr) {
    Guard g(lock);
    NEED_INIT;
    if (!data) return INVALID_VALUE;
    const Allocation *a = find(ptr, 0);
    if (!a) return INVALID_VALUE;  // as for unregistered host memory
    switch (attribute) {
        case 2: *(unsigned *)data = 2; return SUCCESS;  // CU_MEMORYTYPE_DEVICE
        case 9: *(int *)data = a->device; return SUCCESS;
        default: return INVALID_VALUE;
    }
}

EXPORT int cuStreamCreate(void **stream, unsigned flags) {
    Guard g(lock);
    NEED_CONTEXT;
    if (!stream || flags > 1) return INVALID_VALUE;
    *stream = streams.make(new Stream{current()->device, false, {}});
    return SUCCESS;
}

EXPORT int cuStreamDestroy_v2(void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = streams.get(stream);
    if (!s) return INVALID_HANDLE;
    run(s);  // queued work still completes
    streams.destroy(s);
    return SUCCESS;
}

EXPORT int cuStreamSynchronize(void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (refused_in_capture(s)) return STREAM_CAPTURE_UNSUPPORTED;
    counters.synchronizations++;
    wait_for(s);
    return SUCCESS;
}

EXPORT int cuCtxSynchronize() {
    Guard g(lock);
    NEED_CONTEXT;
    if (refused_while_device_captures(current()->device)) return STREAM_CAPTURE_UNSUPPORTED;
    counters.synchronizations++;
    run_all_of_device(current()->device);
    return SUCCESS;
}

EXPORT int cuStreamBeginCapture_v2(void *stream, int mode) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (mode < 0 || mode > 2) return INVALID_VALUE;
    if (s->legacy) return STREAM_CAPTURE_UNSUPPORTED;  // the legacy default stream cannot capture
    if (s->capture) return ILLEGAL_STATE;
    s->capture = static_cast<Graph *>(graphs.make(new Graph));
    s->invalidated = false;
    return SUCCESS;
}

EXPORT int cuStreamEndCapture(void *stream, void **graph) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (!graph) return INVALID_VALUE;
    if (!s->capture) return ILLEGAL_STATE;
    Graph *captured = s->capture;
    s->capture = nullptr;
    if (s->invalidated) {
        graphs.destroy(captured);
        *graph = nullptr;
        return STREAM_CAPTURE_INVALIDATED;
    }
    *graph = captured;
    return SUCCESS;
}

EXPORT int cuStreamIsCapturing(void *stream, int *status) {
    Guard g(lock);
    NEED_CONTEXT;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (!status) return INVALID_VALUE;
    *status = !s->capture ? 0 : s->invalidated ? 2 : 1;  // NONE, ACTIVE, INVALIDATED
    return SUCCESS;
}

EXPORT int cuGraphInstantiateWithFlags(void **exec, void *graph, unsigned long long flags) {
    Guard g(lock);
    NEED_CONTEXT;
    Graph *gr = graphs.get(graph);
    if (!exec || flags != 0) return INVALID_VALUE;
    if (!gr) return INVALID_HANDLE;
    *exec = graph_execs.make(new GraphExec{current()->device, gr->work});
    return SUCCESS;
}

EXPORT int cuGraphLaunch(void *exec, void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    GraphExec *e = graph_execs.get(exec);
    Stream *s = stream_of(stream);
    if (!e || !s) return INVALID_HANDLE;
    if (e->device != s->device) return INVALID_VALUE;
    counters.graph_launches++;
    for (const auto &work : e->work) enqueue(s, work);
    return SUCCESS;
}

EXPORT int cuGraphExecDestroy(void *exec) {
    Guard g(lock);
    NEED_INIT;
    run_everything();  // launches in flight complete first
    return graph_execs.destroy(exec) ? SUCCESS : INVALID_HANDLE;
}

EXPORT int cuGraphDestroy(void *graph) {
    Guard g(lock);
    NEED_INIT;
    return graphs.destroy(graph) ? SUCCESS : INVALID_HANDLE;
}

EXPORT int cuEventCreate(void **event, unsigned flags) {
    Guard g(lock);
    NEED_CONTEXT;
    if (!event) return INVALID_VALUE;
    (void)flags;
    *event = events.make(new Event);
    return SUCCESS;
}

EXPORT int cuEventRecord(void *event, void *stream) {
    Guard g(lock);
    NEED_CONTEXT;
    Event *e = events.get(event);
    Stream *s = stream_of(stream);
    if (!e || !s) return INVALID_HANDLE;
    e->stream = s;
    return SUCCESS;
}

EXPORT int cuStreamWaitEvent(void *stream, void *event, unsigned flags) {
    Guard g(lock);
    NEED_CONTEXT;
    Event *e = events.get(event);
    Stream *s = stream_of(stream);
    if (!e || !s || flags != 0) return INVALID_HANDLE;
    // Everything recorded before the event completes before the stream's later
    // work: done by running the recording stream's queue now.
    if (e->stream && (e->stream->legacy || streams.get(e->stream))) run(e->stream);
    return SUCCESS;
}

EXPORT int cuEventDestroy_v2(void *event) {
    Guard g(lock);
    NEED_INIT;
    return events.destroy(event) ? SUCCESS : INVALID_HANDLE;
}

EXPORT int cuModuleLoadData(void **module, const void *image) {
    Guard g(lock);
    NEED_CONTEXT;
    if (!module || !image) return INVALID_VALUE;
    const std::string expected = make_cubin(env_int("LLMINT8_FAKE_CUDA_ARCH", 90));
    if (std::memcmp(image, expected.data(), expected.size()) != 0) return INVALID_IMAGE;
    *module = modules.make(new Module{current()->device, {}});
    return SUCCESS;
}

EXPORT int cuModuleUnload(void *module) {
    Guard g(lock);
    NEED_CONTEXT;
    Module *m = modules.get(module);
    if (!m) return INVALID_HANDLE;
    run_all_of_device(m->device);
    for (auto &f : m->functions) functions.erase(f.get());
    modules.destroy(m);
    return SUCCESS;
}

EXPORT int cuModuleGetFunction(void **function, void *module, const char *name) {
    Guard g(lock);
    NEED_CONTEXT;
    Module *m = modules.get(module);
    if (!function || !name) return INVALID_VALUE;
    if (!m) return INVALID_HANDLE;
    for (auto &[n, bind] : kernel_table()) {
        if (n == name) {
            m->functions.push_back(std::make_unique<Function>(Function{n, m, bind}));
            functions.insert(m->functions.back().get());
            *function = m->functions.back().get();
            return SUCCESS;
        }
    }
    return NOT_FOUND;
}

EXPORT int cuLaunchKernel(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, unsigned shared_bytes, void *stream, void **params, void **extra) {
    Guard g(lock);
    NEED_CONTEXT;
    Function *f = static_cast<Function *>(function);
    if (!functions.count(f)) return INVALID_HANDLE;
    if (f->module->device != current()->device) return INVALID_HANDLE;
    Stream *s = stream_of(stream);
    if (!s) return INVALID_HANDLE;
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return INVALID_VALUE;
    if (gy != 1 || gz != 1 || by != 1 || bz != 1)
        violation("kernel %s launched with a 2- or 3-dimensional grid or block; its code indexes x only", f->name.c_str());
    if (bx > 1024 || gx > 0x7fffffffu) return INVALID_VALUE;
    if (bx % 32 != 0) violation("kernel %s launched with %u threads per block, not whole warps", f->name.c_str(), bx);
    if (shared_bytes != 0 || extra != nullptr) return INVALID_VALUE;
    if (!params) return INVALID_VALUE;
    counters.launches++;
    enqueue(s, f->bind(gx, bx, params, current()->device));
    return SUCCESS;
}

// ==== for tests: what is still held ====

// Live device allocations, all devices (after everything is released: 0).
EXPORT int llmint8_fake_cuda_live_allocations() {
    Guard g(lock);
    return (int)allocations.size();
}

// The counters so far: launches, GEMMs, memsets, allocations (cuMemAlloc
// and cuMemAllocAsync), synchronizations (of a stream or the context) and
// copies between host and device, in that order.
EXPORT void llmint8_fake_cuda_counters(uint64_t out[6]) {
    Guard g(lock);
    const Counters c = counters;
    const uint64_t values[6] = {c.launches, c.gemms, c.memsets, c.allocations, c.synchronizations, c.host_copies};
    std::memcpy(out, values, sizeof values);
}

// Arms a failure: the call of `function` ("cuMemcpyHtoDAsync" or
// "cuMemcpyDtoHAsync") after `skip` more of them returns `result` and does nothing.
EXPORT void llmint8_fake_cuda_fail_call(const char *function, int skip, int result) {
    Guard g(lock);
    failure = Failure{function, skip, result, true};
}

// How many times device's primary context is retained.
// Graph launches so far, and operations refused on a capturing stream.
EXPORT void llmint8_fake_cuda_graph_counters(uint64_t out[2]) {
    Guard g(lock);
    out[0] = counters.graph_launches;
    out[1] = counters.capture_violations;
}

EXPORT int llmint8_fake_cuda_retained(int device) {
    Guard g(lock);
    return device >= 0 && device < 16 ? contexts[device].retained : -1;
}

// ==== NVRTC ====

namespace fake {
struct Program {
    std::string source;
    int arch = 0;
    std::string log;
    std::string cubin;
};
Handles<Program> programs;
}  // namespace fake

EXPORT int nvrtcVersion(int *major, int *minor) {
    if (!major || !minor) return 3;  // NVRTC_ERROR_INVALID_INPUT
    const int v = env_int("LLMINT8_FAKE_CUDA_VERSION", 12080);
    *major = v / 1000;
    *minor = v % 1000 / 10;
    return 0;
}

EXPORT const char *nvrtcGetErrorString(int result) {
    switch (result) {
        case 0: return "NVRTC_SUCCESS";
        case 3: return "NVRTC_ERROR_INVALID_INPUT";
        case 4: return "NVRTC_ERROR_INVALID_PROGRAM";
        case 5: return "NVRTC_ERROR_INVALID_OPTION";
        case 6: return "NVRTC_ERROR_COMPILATION";
        default: return "NVRTC_ERROR (fake)";
    }
}

EXPORT int nvrtcCreateProgram(void **program, const char *source, const char *name, int headers,
                              const char *const *header_sources, const char *const *include_names) {
    Guard g(lock);
    (void)name, (void)header_sources, (void)include_names;
    if (!program || !source || headers != 0) return 3;
    Program *p = new Program;
    p->source = source;
    *program = programs.make(p);
    return 0;
}

// "Compiles": checks the options name one architecture and that the source
// defines every kernel of the table; the CUBIN carries the names.
EXPORT int nvrtcCompileProgram(void *program, int count, const char *const *options) {
    Guard g(lock);
    Program *p = programs.get(program);
    if (!p) return 4;
    for (int i = 0; i < count; i++) {
        const std::string o = options[i];
        const std::string arch_option = "--gpu-architecture=sm_";
        if (o.rfind(arch_option, 0) == 0) p->arch = std::atoi(o.c_str() + arch_option.size());
    }
    if (p->arch == 0) {
        p->log = "fake NVRTC: no --gpu-architecture=sm_XX option (a CUBIN needs a real architecture)";
        return 5;
    }
    for (auto &k : kernel_table()) {
        if (p->source.find(k.first + "(") == std::string::npos && p->source.find(k.first + ",") == std::string::npos) {
            p->log = "fake NVRTC: the source does not define " + k.first;
            return 6;
        }
    }
    p->cubin = make_cubin(p->arch);
    return 0;
}

EXPORT int nvrtcGetProgramLogSize(void *program, size_t *size) {
    Guard g(lock);
    Program *p = programs.get(program);
    if (!p || !size) return 4;
    *size = p->log.size() + 1;
    return 0;
}

EXPORT int nvrtcGetProgramLog(void *program, char *log) {
    Guard g(lock);
    Program *p = programs.get(program);
    if (!p || !log) return 4;
    std::memcpy(log, p->log.c_str(), p->log.size() + 1);
    return 0;
}

EXPORT int nvrtcGetCUBINSize(void *program, size_t *size) {
    Guard g(lock);
    Program *p = programs.get(program);
    if (!p || !size || p->cubin.empty()) return 4;
    *size = p->cubin.size();
    return 0;
}

EXPORT int nvrtcGetCUBIN(void *program, char *cubin) {
    Guard g(lock);
    Program *p = programs.get(program);
    if (!p || !cubin || p->cubin.empty()) return 4;
    std::memcpy(cubin, p->cubin.data(), p->cubin.size());
    return 0;
}

EXPORT int nvrtcDestroyProgram(void **program) {
    Guard g(lock);
    if (!program) return 4;
    if (!programs.destroy(*program)) return 4;
    *program = nullptr;
    return 0;
}

// ==== cuBLASLt: the int8 GEMM ====

namespace fake {
struct LtHandle {};
struct MatmulDesc {
    int compute, scale;
    int transa = 0, transb = 0;  // CUBLAS_OP_N
};
struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Preference {
    uint64_t max_workspace = 0;
};
Handles<LtHandle> lt_handles;
Handles<MatmulDesc> descs;
Handles<Layout> layouts;
Handles<Preference> preferences;

// cuBLASLt objects alive (handles, matmul descriptors, layouts, preferences):
// none once every llmint8 context and weight is gone.
EXPORT int llmint8_fake_cuda_live_lt_objects() {
    Guard g(lock);
    return (int)(lt_handles.live.size() + descs.live.size() + layouts.live.size() + preferences.live.size());
}
const uint64_t ALGO_MAGIC = 0x6c6c6d696e7438ull;  // "llmint8"

// cuBLASLt's requirements for its int8 (IMMA) kernels on ordinary column-major
// layouts, and our one supported combination: int32 results from int8 inputs.
int check_int8_problem(const void *desc, const void *la, const void *lb, const void *lc, const void *ld) {
    MatmulDesc *d = descs.get(desc);
    Layout *a = layouts.get(la), *b = layouts.get(lb), *c = layouts.get(lc), *dd = layouts.get(ld);
    if (!d || !a || !b || !c || !dd) return LT_INVALID_VALUE;
    if (d->compute != 72 || d->scale != 10) return LT_NOT_SUPPORTED;  // CUBLAS_COMPUTE_32I, CUDA_R_32I
    if (a->type != 3 || b->type != 3 || c->type != 10 || dd->type != 10) return LT_NOT_SUPPORTED;
    if (d->transa != 1 || d->transb != 0) return LT_NOT_SUPPORTED;  // "TN" only
    // op(A) = Aᵀ is m × k (A stored k × m), B is k × n, C and D m × n.
    const uint64_t m = a->cols, k = a->rows, n = b->cols;
    if (b->rows != k || c->rows != m || c->cols != n || dd->rows != m || dd->cols != n) return LT_INVALID_VALUE;
    if (c->ld != dd->ld) return LT_NOT_SUPPORTED;
    if (m % 4 || k % 4 || a->ld % 4 || b->ld % 4 || c->ld % 4) return LT_NOT_SUPPORTED;
    if (m == 0 || n == 0 || k == 0) return LT_INVALID_VALUE;
    return LT_SUCCESS;
}
}  // namespace fake

EXPORT size_t cublasLtGetVersion() { return 120805; }

EXPORT int cublasLtCreate(void **handle) {
    Guard g(lock);
    if (!handle) return LT_INVALID_VALUE;
    *handle = lt_handles.make(new LtHandle);
    return LT_SUCCESS;
}

EXPORT int cublasLtDestroy(void *handle) {
    Guard g(lock);
    return lt_handles.destroy(handle) ? LT_SUCCESS : LT_NOT_INITIALIZED;
}

EXPORT int cublasLtMatmulDescCreate(void **desc, int compute, int scale) {
    Guard g(lock);
    if (!desc) return LT_INVALID_VALUE;
    *desc = descs.make(new MatmulDesc{compute, scale});
    return LT_SUCCESS;
}

EXPORT int cublasLtMatmulDescSetAttribute(void *desc, int attribute, const void *buffer, size_t bytes) {
    Guard g(lock);
    MatmulDesc *d = descs.get(desc);
    if (!d || !buffer) return LT_INVALID_VALUE;
    switch (attribute) {
        case 3:  // CUBLASLT_MATMUL_DESC_TRANSA (int32)
        case 4:  // TRANSB
        {
            if (bytes != 4) return LT_INVALID_VALUE;
            int op;
            std::memcpy(&op, buffer, 4);
            if (op < 0 || op > 2) return LT_INVALID_VALUE;
            (attribute == 3 ? d->transa : d->transb) = op;
            return LT_SUCCESS;
        }
        default: return LT_INVALID_VALUE;  // nothing else is used by llmint8
    }
}

EXPORT int cublasLtMatmulDescDestroy(void *desc) {
    Guard g(lock);
    return descs.destroy(desc) ? LT_SUCCESS : LT_INVALID_VALUE;
}

EXPORT int cublasLtMatrixLayoutCreate(void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    Guard g(lock);
    if (!layout || ld <= 0 || ld < (int64_t)rows) return LT_INVALID_VALUE;
    *layout = layouts.make(new Layout{type, rows, cols, ld});
    return LT_SUCCESS;
}

EXPORT int cublasLtMatrixLayoutDestroy(void *layout) {
    Guard g(lock);
    return layouts.destroy(layout) ? LT_SUCCESS : LT_INVALID_VALUE;
}

EXPORT int cublasLtMatmulPreferenceCreate(void **pref) {
    Guard g(lock);
    if (!pref) return LT_INVALID_VALUE;
    *pref = preferences.make(new Preference);
    return LT_SUCCESS;
}

EXPORT int cublasLtMatmulPreferenceSetAttribute(void *pref, int attribute, const void *buffer, size_t bytes) {
    Guard g(lock);
    Preference *p = preferences.get(pref);
    if (!p || !buffer) return LT_INVALID_VALUE;
    if (attribute != 1 || bytes != 8) return LT_INVALID_VALUE;  // MAX_WORKSPACE_BYTES (uint64)
    std::memcpy(&p->max_workspace, buffer, 8);
    return LT_SUCCESS;
}

EXPORT int cublasLtMatmulPreferenceDestroy(void *pref) {
    Guard g(lock);
    return preferences.destroy(pref) ? LT_SUCCESS : LT_INVALID_VALUE;
}

// cublasLtMatmulHeuristicResult_t: algo (8 × u64), workspaceSize, state,
// wavesCount, reserved[4].
struct HeuristicResult {
    uint64_t algo[8];
    size_t workspace;
    int state;
    float waves;
    int reserved[4];
};

EXPORT int cublasLtMatmulAlgoGetHeuristic(void *handle, void *desc, void *a, void *b, void *c, void *d, void *pref,
                                          int requested, HeuristicResult *results, int *found) {
    Guard g(lock);
    if (!lt_handles.get(handle)) return LT_NOT_INITIALIZED;
    Preference *preference = preferences.get(pref);
    if (!preference || requested < 1 || !results || !found) return LT_INVALID_VALUE;
    const int r = check_int8_problem(desc, a, b, c, d);
    if (r != LT_SUCCESS) return r;
    std::memset(results, 0, sizeof(HeuristicResult));
    results->algo[0] = ALGO_MAGIC;
    // Ask for some workspace, within what the preference allows.
    results->workspace = std::min<uint64_t>(preference->max_workspace, 1 << 20);
    results->algo[1] = results->workspace;
    results->waves = 1.0f;
    *found = 1;
    return LT_SUCCESS;
}

EXPORT int cublasLtMatmul(void *handle, void *desc, const void *alpha, const void *a, void *la, const void *b,
                          void *lb, const void *beta, const void *c, void *lc, void *d, void *ld,
                          const uint64_t *algo, void *workspace, size_t workspace_bytes, void *stream) {
    Guard g(lock);
    if (!lt_handles.get(handle)) return LT_NOT_INITIALIZED;
    const int r = check_int8_problem(desc, la, lb, lc, ld);
    if (r != LT_SUCCESS) return r;
    const Layout *A = layouts.get(la), *B = layouts.get(lb), *C = layouts.get(lc);
    if (!alpha || !beta || !algo || algo[0] != ALGO_MAGIC) return LT_INVALID_VALUE;
    if (workspace_bytes < algo[1]) return LT_INVALID_VALUE;
    if (!current()) return LT_NOT_INITIALIZED;
    Stream *s = stream_of(stream);
    if (!s) return LT_INVALID_VALUE;
    for (const void *p : {a, b, c, (const void *)d})
        if ((uintptr_t)p % 4 != 0) return LT_NOT_SUPPORTED;
    int32_t al, be;
    std::memcpy(&al, alpha, 4);  // CUBLASLT_POINTER_MODE_HOST: read now
    std::memcpy(&be, beta, 4);
    const uint64_t m = A->cols, k = A->rows, n = B->cols;
    const int64_t lda = A->ld, ldb = B->ld, ldc = C->ld;
    const int device = current()->device;
    counters.gemms++;
    enqueue(s, [=] {
        require_device_range((uintptr_t)a, lda * (m - 1) + k, device, "cublasLtMatmul A");
        require_device_range((uintptr_t)b, ldb * (n - 1) + k, device, "cublasLtMatmul B");
        require_device_range((uintptr_t)d, 4 * (ldc * (n - 1) + m), device, "cublasLtMatmul D");
        if (be != 0) require_device_range((uintptr_t)c, 4 * (ldc * (n - 1) + m), device, "cublasLtMatmul C");
        if (workspace_bytes) require_device_range((uintptr_t)workspace, workspace_bytes, device, "cublasLtMatmul workspace");
        const int8_t *pa = (const int8_t *)a, *pb = (const int8_t *)b;
        const int32_t *pc = (const int32_t *)c;
        int32_t *pd = (int32_t *)d;
        for (uint64_t j = 0; j < n; j++) {
            for (uint64_t i = 0; i < m; i++) {
                int64_t sum = 0;
                const int8_t *ca = pa + i * lda, *cb = pb + j * ldb;
                for (uint64_t p = 0; p < k; p++) sum += (int32_t)ca[p] * (int32_t)cb[p];
                sum = sum * al + (be != 0 ? (int64_t)be * pc[i + j * ldc] : 0);
                if (sum > INT32_MAX || sum < INT32_MIN)
                    violation("cublasLtMatmul: an int32 accumulator overflows (%lld), k = %llu", (long long)sum,
                              (unsigned long long)k);
                pd[i + j * ldc] = (int32_t)sum;
            }
        }
    });
    return LT_SUCCESS;
}
