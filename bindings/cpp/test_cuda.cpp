// The C++ binding's CUDA calls (quantize_device, the pointer matmul,
// set_stream, synchronize) on the emulated GPU of tests/cuda_emu/fake_cuda.cpp,
// as an engine holding device buffers uses them; run by tests/c_abi.rs with
// LLMINT8_LIBCUDA (and _LIBNVRTC, _LIBCUBLASLT) naming the emulated driver.
#include "llmint8.hpp"
#include "test_support.hpp"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// The driver calls the engine makes itself, on device 0's primary context.
struct Driver {
    int (*init)(unsigned);
    int (*retain)(void**, int);
    int (*push)(void*);
    int (*alloc)(uint64_t*, size_t);
    int (*free)(uint64_t);
    int (*htod)(uint64_t, const void*, size_t, void*);
    int (*dtoh)(void*, uint64_t, size_t, void*);
    int (*stream_create)(void**, unsigned);
    int (*stream_destroy)(void*);

    explicit Driver(const char* path) {
        void* lib = dlopen(path, RTLD_NOW);
        if (!lib) fail(dlerror());
        bind(lib, init, "cuInit");
        bind(lib, retain, "cuDevicePrimaryCtxRetain");
        bind(lib, push, "cuCtxPushCurrent_v2");
        bind(lib, alloc, "cuMemAlloc_v2");
        bind(lib, free, "cuMemFree_v2");
        bind(lib, htod, "cuMemcpyHtoDAsync_v2");
        bind(lib, dtoh, "cuMemcpyDtoHAsync_v2");
        bind(lib, stream_create, "cuStreamCreate");
        bind(lib, stream_destroy, "cuStreamDestroy_v2");
        void* ctx = nullptr;
        if (init(0) || retain(&ctx, 0) || push(ctx)) fail("making device 0's primary context current");
    }
    template <typename F>
    static void bind(void* lib, F& f, const char* name) {
        void* p = dlsym(lib, name);
        if (!p) fail(name);
        std::memcpy(&f, &p, sizeof p);
    }
    [[noreturn]] static void fail(const char* what) {
        std::printf("driver: %s\n", what);
        std::exit(2);
    }
    template <typename T>
    T* upload(const std::vector<T>& v) {
        uint64_t p = 0;
        if (alloc(&p, v.size() * sizeof(T)) || htod(p, v.data(), v.size() * sizeof(T), nullptr)) fail("upload");
        return reinterpret_cast<T*>(p);
    }
    template <typename T>
    std::vector<T> download(const T* p, size_t n) {
        std::vector<T> v(n);
        if (dtoh(v.data(), reinterpret_cast<uint64_t>(p), n * sizeof(T), nullptr)) fail("download");
        return v;
    }
    void release(const void* p) {
        if (free(reinterpret_cast<uint64_t>(p))) fail("cuMemFree");
    }
};

int main() {
    const char* path = std::getenv("LLMINT8_LIBCUDA");
    if (!path) {
        std::printf("LLMINT8_LIBCUDA is not set (tests/c_abi.rs sets it)\n");
        return 2;
    }
    Driver cu(path);
    void* stream = nullptr;
    if (cu.stream_create(&stream, 1)) Driver::fail("cuStreamCreate");

    const size_t out = 21, in = 40, rows = 6;
    std::vector<float> w(out * in), bias(out), x(rows * in);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(static_cast<int>(i * 37 % 23) - 11) / 64.0f;
    for (size_t j = 0; j < out; ++j) bias[j] = 0.25f * static_cast<float>(j);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i * 13 % 17) - 8) / 4.0f;
    for (size_t r = 0; r < rows; ++r) x[r * in + 6] = 9.0f;  // one outlier feature

    {
        llmint8::Context gpu(llmint8::Backend::Cuda);
        llmint8::Context cpu(llmint8::Backend::Cpu);
        CHECK(gpu.backend() == llmint8::Backend::Cuda);
        float* w_dev = cu.upload(w);
        llmint8::Weight wg = gpu.quantize_device(static_cast<const float*>(w_dev), out, in, bias.data());
        llmint8::Weight wc = cpu.quantize(w, out, in, bias);
        std::vector<int8_t> cb_g, cb_c;
        std::vector<float> scb_g, scb_c;
        wg.export_int8(cb_g, scb_g);
        wc.export_int8(cb_c, scb_c);
        CHECK(cb_g == cb_c && scb_g == scb_c);

        const std::vector<float> want = cpu.matmul(wc, x);
        float* x_dev = cu.upload(x);
        std::vector<float> y_init(rows * out, -1.0f);
        float* y_dev = cu.upload(y_init);
        gpu.set_stream(stream);
        llmint8::MatmulStats stats{};
        gpu.matmul(wg, static_cast<const float*>(x_dev), rows, y_dev, LLMINT8_DEFAULT_THRESHOLD, &stats);
        CHECK(stats.outlier_columns == 1);
        gpu.matmul(wg, static_cast<const float*>(x_dev), rows, y_dev);  // asynchronous
        gpu.synchronize();
        std::vector<float> got = cu.download(y_dev, rows * out);
        CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
        // Vectors are host memory: the binding sends them through matmul_host.
        CHECK(gpu.matmul(wg, x) == want);
        // A host pointer is not device memory.
        bool refused = false;
        try {
            gpu.matmul(wg, x.data(), rows, got.data());
        } catch (const llmint8::Error& e) {
            refused = e.status() == LLMINT8_ERR_INVALID_ARGUMENT;
        }
        CHECK(refused);
        gpu.set_stream(nullptr);
        cu.release(w_dev);
        cu.release(x_dev);
        cu.release(y_dev);
    }
    if (cu.stream_destroy(stream)) Driver::fail("cuStreamDestroy");
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
