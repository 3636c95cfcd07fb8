/* Walking a checkpoint from C: open a model directory, load every linear layer
 * llmint8 can take (16/32-bit ones are quantized on load, bitsandbytes' int8
 * ones taken as they are), and run one layer.
 *
 *   cc load_checkpoint.c -lllmint8 -o load_checkpoint
 *   ./load_checkpoint tests/data/tiny-llama-int8
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmint8.h"

#define CHECK(call)                                                             \
    do {                                                                        \
        if ((call) != LLMINT8_OK) {                                             \
            fprintf(stderr, "%s failed: %s\n", #call, llmint8_last_error());   \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "tests/data/tiny-llama-int8";
    llmint8_context *ctx = NULL;
    llmint8_checkpoint *ckpt = NULL;
    CHECK(llmint8_context_create(LLMINT8_BACKEND_AUTO, 0, &ctx));
    CHECK(llmint8_checkpoint_open(path, &ckpt));

    size_t count = 0, layers = 0, weight_bytes = 0;
    CHECK(llmint8_checkpoint_num_tensors(ckpt, &count));
    llmint8_weight *last = NULL;
    for (size_t i = 0; i < count; i++) {
        llmint8_tensor_info info;
        CHECK(llmint8_checkpoint_tensor_info(ckpt, i, &info));
        if (info.kind != LLMINT8_KIND_LINEAR_WEIGHT && info.kind != LLMINT8_KIND_INT8_WEIGHT) continue;
        /* The layer's name is the tensor's without ".weight". */
        char prefix[512];
        size_t len = strlen(info.name) - strlen(".weight");
        if (len >= sizeof prefix) continue;
        memcpy(prefix, info.name, len);
        prefix[len] = '\0';
        llmint8_weight *w = NULL;
        CHECK(llmint8_weight_load(ctx, ckpt, prefix, &w));
        layers++;
        weight_bytes += (size_t)(info.shape[0] * info.shape[1]);
        llmint8_weight_destroy(last); /* an engine would keep them all */
        last = w;
    }
    printf("%zu tensors, %zu linear layers loaded, %zu bytes of int8 weights\n", count, layers, weight_bytes);

    if (last != NULL) {
        size_t out_f = 0, in_f = 0;
        CHECK(llmint8_weight_shape(last, &out_f, &in_f));
        float *x = calloc(in_f, sizeof *x), *y = calloc(out_f, sizeof *y);
        for (size_t c = 0; c < in_f; c++) x[c] = (float)(c % 7) - 3.0f;
        x[1] = 9.0f; /* an outlier feature */
        llmint8_matmul_stats stats;
        /* Host arrays: the host entry point works on a CPU or a CUDA context alike. */
        CHECK(llmint8_matmul_host(ctx, last, x, LLMINT8_F32, 1, LLMINT8_DEFAULT_THRESHOLD, y, LLMINT8_F32, &stats));
        printf("last layer [%zu x %zu]: y[0] = %.4f, outlier columns: %llu\n", out_f, in_f, y[0],
               (unsigned long long)stats.outlier_columns);
        free(x);
        free(y);
    }
    llmint8_weight_destroy(last);
    llmint8_checkpoint_destroy(ckpt);
    llmint8_context_destroy(ctx);
    return 0;
}
