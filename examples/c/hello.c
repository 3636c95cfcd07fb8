/* Quantize a weight once, then run LLM.int8() matmuls with it. Built from the
 * repository root (after `cargo build --release`):
 *   cc -std=c11 examples/c/hello.c -I include -L target/release -Wl,-rpath,$PWD/target/release -lllmint8 */
#include <stdio.h>
#include "llmint8.h"

int main(void) {
    enum { OUT = 3, IN = 4, ROWS = 2 };
    const float w[OUT * IN] = {0.1f, -0.2f, 0.3f, 0.4f,  0.5f, 0.6f, -0.7f, 0.8f,  -0.9f, 1.0f, 1.1f, 1.2f};
    const float bias[OUT] = {0.01f, 0.02f, 0.03f};
    const float x[ROWS * IN] = {1.0f, 2.0f, 3.0f, 4.0f,  0.5f, 9.0f /* an outlier */, -1.0f, 0.0f};
    float y[ROWS * OUT];

    llmint8_context *ctx = NULL;
    llmint8_weight *weight = NULL;
    llmint8_matmul_stats stats;
    if (llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &ctx) != LLMINT8_OK ||
        llmint8_weight_quantize(ctx, w, LLMINT8_F32, OUT, IN, bias, LLMINT8_F32, &weight) != LLMINT8_OK ||
        llmint8_matmul(ctx, weight, x, LLMINT8_F32, ROWS, LLMINT8_DEFAULT_THRESHOLD, y, LLMINT8_F32,
                       &stats) != LLMINT8_OK) {
        fprintf(stderr, "llmint8: %s\n", llmint8_last_error());
        llmint8_weight_destroy(weight);
        llmint8_context_destroy(ctx);
        return 1;
    }
    for (int i = 0; i < ROWS; i++)
        printf("y[%d] = %8.4f %8.4f %8.4f\n", i, y[i * OUT], y[i * OUT + 1], y[i * OUT + 2]);
    printf("outlier columns: %llu\n", (unsigned long long)stats.outlier_columns);
    llmint8_weight_destroy(weight);
    llmint8_context_destroy(ctx);
    return 0;
}
