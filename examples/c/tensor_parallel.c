/* Tensor parallelism with llmint8: one rank's calls for a Llama MLP, Megatron
 * style — gate/up column-parallel (each rank loads its rows of out_features),
 * down row-parallel (each rank loads the matching columns of in_features) —
 * with comments where the engine's NCCL collectives go. To run anywhere, main()
 * plays every rank of a world in one process and does the collectives itself;
 * it checks the result against the unsharded MLP.
 *
 *   cc tensor_parallel.c -lllmint8 -lm -o tensor_parallel
 *   ./tensor_parallel tests/data/tiny-llama-fp16 2
 *
 * On a CPU context every buffer is host memory. On a CUDA context the same
 * calls take device pointers on the engine's stream (llmint8_context_set_stream),
 * and row_absmax and the partial y are the buffers NCCL reduces in place. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmint8.h"

#define CHECK(call)                                                           \
    do {                                                                      \
        if ((call) != LLMINT8_OK) {                                           \
            fprintf(stderr, "%s failed: %s\n", #call, llmint8_last_error()); \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define MAX_WORLD 8
enum { ROWS = 4 };

static const char *GATE = "model.layers.0.mlp.gate_proj", *UP = "model.layers.0.mlp.up_proj",
                  *DOWN = "model.layers.0.mlp.down_proj";

/* One rank's part of the MLP's hidden features. */
typedef struct {
    size_t begin, end;            /* its hidden features [begin, end) */
    llmint8_weight *gate, *up;    /* rows [begin, end) of gate_proj, up_proj */
    llmint8_weight *down;         /* columns [begin, end) of down_proj */
    float *h;                     /* [ROWS, end - begin]: its slice of silu(gate) * up */
    float *row_absmax;            /* [ROWS]: its statistics, then the world's MAX */
    float *y;                     /* [ROWS, d_model]: its partial, then the world's SUM */
} rank_state;

static float silu(float v) { return v / (1.0f + expf(-v)); }

static void *alloc(size_t bytes) {
    void *p = calloc(1, bytes);
    if (!p) exit(1);
    return p;
}

/* Rank r of `world`: load its shards. Each rank reads only its rows of gate/up
 * and, of down, whole rows for their scale but keeps only its columns. */
static void rank_load(llmint8_context *ctx, const llmint8_checkpoint *ckpt, rank_state *s, size_t r, size_t world,
                      size_t hidden) {
    s->begin = r * hidden / world, s->end = (r + 1) * hidden / world;
    CHECK(llmint8_weight_load_rows(ctx, ckpt, GATE, s->begin, s->end, &s->gate));
    CHECK(llmint8_weight_load_rows(ctx, ckpt, UP, s->begin, s->end, &s->up));
    CHECK(llmint8_weight_load_columns(ctx, ckpt, DOWN, s->begin, s->end, &s->down));
}

/* Step 1: the column-parallel half (no collective needed: x is replicated)
 * and the row statistics of the rank's slice of h. */
static void rank_step_1(llmint8_context *ctx, rank_state *s, const float *x, size_t d_model) {
    size_t width = s->end - s->begin;
    float *g = alloc(ROWS * width * sizeof(float));
    s->h = alloc(ROWS * width * sizeof(float));
    s->row_absmax = alloc(ROWS * sizeof(float));
    s->y = alloc(ROWS * d_model * sizeof(float));
    /* gate and up share x: one activation pass for both. */
    const llmint8_weight *ws[2] = {s->gate, s->up};
    void *ys[2] = {g, s->h};
    CHECK(llmint8_matmul_shared_input(ctx, ws, 2, x, LLMINT8_F32, ROWS, LLMINT8_DEFAULT_THRESHOLD, ys, LLMINT8_F32,
                                      NULL));
    for (size_t i = 0; i < ROWS * width; i++) s->h[i] = silu(g[i]) * s->h[i];
    free(g);
    CHECK(llmint8_row_parallel_statistics(ctx, s->down, s->h, LLMINT8_F32, ROWS, LLMINT8_DEFAULT_THRESHOLD,
                                          s->row_absmax, NULL));
    /* NCCL: ncclAllReduce(s->row_absmax, s->row_absmax, ROWS, ncclFloat32, ncclMax, comm, stream); */
}

/* Step 2, once row_absmax holds the world's MAX: the rank's partial product. */
static void rank_step_2(llmint8_context *ctx, rank_state *s) {
    CHECK(llmint8_matmul_row_parallel(ctx, s->down, s->h, LLMINT8_F32, ROWS, LLMINT8_DEFAULT_THRESHOLD,
                                      s->row_absmax, s->y, LLMINT8_F32, NULL));
    /* NCCL: ncclAllReduce(s->y, s->y, ROWS * d_model, ncclFloat32, ncclSum, comm, stream);
     * every rank then holds the MLP's output (the first rank's shard added the bias, if any). */
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "tests/data/tiny-llama-fp16";
    size_t world = argc > 2 ? (size_t)atoi(argv[2]) : 2;
    if (world < 1 || world > MAX_WORLD) {
        fprintf(stderr, "world size 1..%d\n", MAX_WORLD);
        return 2;
    }
    llmint8_context *ctx = NULL;
    llmint8_checkpoint *ckpt = NULL;
    CHECK(llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &ctx));
    CHECK(llmint8_checkpoint_open(path, &ckpt));
    llmint8_weight *gate = NULL, *up = NULL, *down = NULL;
    CHECK(llmint8_weight_load(ctx, ckpt, GATE, &gate));
    CHECK(llmint8_weight_load(ctx, ckpt, UP, &up));
    CHECK(llmint8_weight_load(ctx, ckpt, DOWN, &down));
    size_t hidden = 0, d_model = 0;
    CHECK(llmint8_weight_shape(down, &d_model, &hidden));

    float *x = alloc(ROWS * d_model * sizeof(float));
    for (size_t i = 0; i < ROWS * d_model; i++) x[i] = sinf(0.37f * (float)i);
    x[5] = 9.0f; /* an outlier feature in row 0 */

    /* The unsharded MLP, for comparison. */
    float *g = alloc(ROWS * hidden * sizeof(float)), *h = alloc(ROWS * hidden * sizeof(float));
    float *y = alloc(ROWS * d_model * sizeof(float));
    CHECK(llmint8_matmul(ctx, gate, x, LLMINT8_F32, ROWS, LLMINT8_DEFAULT_THRESHOLD, g, LLMINT8_F32, NULL));
    CHECK(llmint8_matmul(ctx, up, x, LLMINT8_F32, ROWS, LLMINT8_DEFAULT_THRESHOLD, h, LLMINT8_F32, NULL));
    for (size_t i = 0; i < ROWS * hidden; i++) h[i] = silu(g[i]) * h[i];
    CHECK(llmint8_matmul(ctx, down, h, LLMINT8_F32, ROWS, LLMINT8_DEFAULT_THRESHOLD, y, LLMINT8_F32, NULL));

    /* The world, each rank's calls in turn; the loops between are the collectives. */
    rank_state ranks[MAX_WORLD];
    memset(ranks, 0, sizeof ranks);
    for (size_t r = 0; r < world; r++) rank_load(ctx, ckpt, &ranks[r], r, world, hidden);
    for (size_t r = 0; r < world; r++) rank_step_1(ctx, &ranks[r], x, d_model);
    for (size_t i = 0; i < ROWS; i++) { /* the MAX all-reduce */
        float m = 0.0f;
        for (size_t r = 0; r < world; r++) m = fmaxf(m, ranks[r].row_absmax[i]);
        for (size_t r = 0; r < world; r++) ranks[r].row_absmax[i] = m;
    }
    for (size_t r = 0; r < world; r++) rank_step_2(ctx, &ranks[r]);
    double max_diff = 0.0, max_y = 0.0;
    for (size_t i = 0; i < ROWS * d_model; i++) { /* the SUM all-reduce, compared */
        float sum = 0.0f;
        for (size_t r = 0; r < world; r++) sum += ranks[r].y[i];
        max_diff = fmax(max_diff, fabs((double)sum - (double)y[i]));
        max_y = fmax(max_y, fabs((double)y[i]));
    }
    printf("world of %zu ranks: max |tensor-parallel - unsharded| = %.3g (outputs up to %.3g)\n", world, max_diff,
           max_y);

    for (size_t r = 0; r < world; r++) {
        llmint8_weight_destroy(ranks[r].gate);
        llmint8_weight_destroy(ranks[r].up);
        llmint8_weight_destroy(ranks[r].down);
        free(ranks[r].h), free(ranks[r].row_absmax), free(ranks[r].y);
    }
    free(x), free(g), free(h), free(y);
    llmint8_weight_destroy(gate), llmint8_weight_destroy(up), llmint8_weight_destroy(down);
    llmint8_checkpoint_destroy(ckpt);
    llmint8_context_destroy(ctx);
    return max_diff <= 1e-4 * max_y ? 0 : 1;
}
