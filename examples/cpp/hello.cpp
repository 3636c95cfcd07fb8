// Quantize a weight once, then run LLM.int8() matmuls with it, from C++.
// Built from the repository root (after `cargo build --release`):
//   g++ -std=c++17 examples/cpp/hello.cpp -I include -I bindings/cpp -L target/release
//       -Wl,-rpath,$PWD/target/release -lllmint8
#include <cstdio>
#include <vector>

#include "llmint8.hpp"

int main() {
    try {
        llmint8::Context ctx;  // a GPU when one is usable, else the CPU (Backend::Auto), all cores
        const size_t out = 3, in = 4;
        std::vector<float> w = {0.1f, -0.2f, 0.3f, 0.4f, 0.5f, 0.6f, -0.7f, 0.8f, -0.9f, 1.0f, 1.1f, 1.2f};
        std::vector<float> bias = {0.01f, 0.02f, 0.03f};
        llmint8::Weight weight = ctx.quantize(w, out, in, bias);

        std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f, 0.5f, 9.0f /* an outlier */, -1.0f, 0.0f};
        llmint8::MatmulStats stats;
        std::vector<float> y = ctx.matmul(weight, x, LLMINT8_DEFAULT_THRESHOLD, &stats);
        for (size_t i = 0; i < 2; ++i) std::printf("y[%zu] = %8.4f %8.4f %8.4f\n", i, y[i * 3], y[i * 3 + 1], y[i * 3 + 2]);
        std::printf("outlier columns: %llu\n", static_cast<unsigned long long>(stats.outlier_columns));
    } catch (const llmint8::Error& e) {
        std::fprintf(stderr, "llmint8: %s\n", e.what());
        return 1;
    }
    return 0;
}
