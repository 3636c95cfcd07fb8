// llama.cpp — a reference engine for llmint8: a Llama-architecture language
// model (Llama, SmolLM2, ...) whose every decoder linear layer is an
// llmint8::Weight, with a KV-cached decode loop. Written to be read and copied:
// one file for the model, json.hpp and tokenizer.hpp for the model folder.
//
//   llama MODEL_DIR [--prompt TEXT] [--tokens N] [--threshold T]
//                   [--row-scale bitsandbytes|int8-part] [--precision both|int8|float32]
//                   [--int8-head]
//       greedy generation from TEXT with float32 weights and with LLM.int8():
//       the text, decode tokens/s and the decoder weights' memory of each;
//       --int8-head: the LLM.int8() run's output head through llmint8 too
//       (a quarter of the bytes a decode step reads there).
//   llama MODEL_DIR --eval TEXT_FILE [--window N] [--max-tokens N]
//                   [--calibrate TEXT_FILE [--calibration-tokens N]]
//       perplexity, KL divergence and top-1 agreement against float32 of each
//       LLM.int8() variant on TEXT_FILE, cut into windows of N tokens; with
//       --calibrate, also the weights keeping in 16-bit the outlier columns
//       each layer saw on the first N (2048) tokens of another text; the
//       table includes LLM.int8() with the output head in int8 as well.
//       With --calibrate the table also has smoothing (SmoothQuant's s folded
//       into the weight, the activations divided by it inside llmint8): α 0.5
//       at threshold 0 (SmoothQuant W8A8) and 6, α chosen per group of layers
//       sharing an input, and that plus the columns still holding outliers.
//   llama MODEL_DIR --calibrate TEXT_FILE [--calibration-out FILE] [--smoothing-out FILE]
//                   [--calibration-tokens N]
//       calibration only: --calibration-out writes those columns as JSON
//       {"MODULE": [COLUMN, ...]} for `llmint8 convert MODEL_DIR OUT_DIR
//       --keep-columns FILE`, whose 8-bit folder then carries them (this
//       engine, like any llmint8 loader, reads them back with the weights);
//       --smoothing-out writes the per-layer smoothing vectors as JSON
//       {"MODULE": [FACTOR, ...]} for `llmint8 convert --smooth FILE` and --smooth.
//   llama MODEL_DIR --smooth FILE ...
//       the LLM.int8() runs with the layers FILE lists smoothed by its vectors.
//   llama MODEL_DIR --tokenize TEXT_FILE
//       the token ids of TEXT_FILE, one per line.
//   mpirun -np W llama-mpi MODEL_DIR --tensor-parallel [--prompt TEXT] [--tokens N] ...
//       LLM.int8() generation with the decoder split over W processes
//       (Megatron-LM's split): each rank loads only its shards from the same
//       folder — q/k/v by whole KV-head groups and gate/up by hidden features
//       (column-parallel), o_proj and down_proj over those columns
//       (row-parallel: an MPI_Allreduce MAX of the row statistics, then SUM of
//       the partials). Embeddings, norms and the output head are replicated.
//       Rank 0 prints; every rank prints its decoder bytes. Built with MPI:
//       mpicxx ... -DLLMINT8_ENGINE_MPI (scripts/smollm2.sh builds target/llama-mpi).
//
// Every generation also takes --prompt-file FILE (the prompt read from a file),
// --prompt-tokens N (the prompt cut to its first N tokens), --threads N (the
// engine's and llmint8's threads; default: the processor's, shared among the
// ranks on one machine) and --logits-out FILE (every step's logits, float32,
// as the run chose from them: rank 0 writes them).
//
// MODEL_DIR is a transformers folder: config.json, tokenizer.json (byte-level
// BPE) and model.safetensors or a shard index, in float16/bfloat16/float32 or
// bitsandbytes' 8-bit form (int8 + SCB, as `llmint8 convert` writes it).
//
// What llmint8 does here, and what the engine keeps: every q/k/v/o and
// gate/up/down projection is quantized once at load (llmint8::Context::load)
// and multiplied with ctx.matmul on float32 activations; embeddings, norms and
// attention stay float32 in this file, and so does the output head unless
// --int8-head (bitsandbytes too leaves the head in 16-bit).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#ifdef LLMINT8_ENGINE_MPI
#define OMPI_SKIP_MPICXX 1  // MPI's C interface only (not the deprecated C++ one)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

#include "json.hpp"
#include "llmint8.hpp"
#include "tokenizer.hpp"

namespace {

// ---- a small persistent thread pool for the float32 work -------------------

class Pool {
public:
    explicit Pool(size_t threads) {
        for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }
    size_t size() const { return workers_.size() + 1; }
    /// Runs task(0..n-1) on every thread, the caller's included; returns when all are done.
    void run(size_t n, const std::function<void(size_t)>& task) {
        if (n <= 1 || workers_.empty()) {
            for (size_t i = 0; i < n; ++i) task(i);
            return;
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = &task, n_ = n, next_ = 0, busy_ = workers_.size(), ++generation_;
        }
        wake_.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return busy_ == 0; });
    }

private:
    void drain() {
        for (size_t i; (i = next_.fetch_add(1)) < n_;) (*task_)(i);
    }
    void work() {
        size_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            drain();
            std::lock_guard<std::mutex> lock(mutex_);
            if (--busy_ == 0) done_.notify_one();
        }
    }
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(size_t)>* task_ = nullptr;
    std::atomic<size_t> next_{0};
    size_t n_ = 0, busy_ = 0, generation_ = 0;
    bool stop_ = false;
};

// ---- float32 kernels -------------------------------------------------------

typedef float v8 __attribute__((vector_size(32)));  // GCC/Clang vectors: AVX where the compiler may use it
inline v8 load8(const float* p) {
    v8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
inline float sum8(v8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

inline float dot(const float* a, const float* b, size_t k) {
    v8 acc = {};
    size_t i = 0;
    for (; i + 8 <= k; i += 8) acc += load8(a + i) * load8(b + i);
    float s = sum8(acc);
    for (; i < k; ++i) s += a[i] * b[i];
    return s;
}

/// y[i, j] = x[i, :k] · w[j, :k] (+ bias[j]) for rows i < m and columns j0 <= j < j1, on this thread;
/// ldx, ldw, ldy are the row strides.
void matmul_block(const float* x, size_t ldx, size_t m, size_t k, const float* w, size_t ldw, size_t j0, size_t j1,
                  const float* bias, float* y, size_t ldy) {
    size_t i = 0;
    for (; i + 2 <= m; i += 2) {  // two rows of x against four of w: 8 accumulators
        const float *x0 = x + i * ldx, *x1 = x0 + ldx;
        size_t j = j0;
        for (; j + 4 <= j1; j += 4) {
            const float *w0 = w + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
            v8 a00 = {}, a01 = {}, a02 = {}, a03 = {}, a10 = {}, a11 = {}, a12 = {}, a13 = {};
            size_t p = 0;
            for (; p + 8 <= k; p += 8) {
                v8 u = load8(x0 + p), v = load8(x1 + p);
                v8 b0 = load8(w0 + p), b1 = load8(w1 + p), b2 = load8(w2 + p), b3 = load8(w3 + p);
                a00 += u * b0, a01 += u * b1, a02 += u * b2, a03 += u * b3;
                a10 += v * b0, a11 += v * b1, a12 += v * b2, a13 += v * b3;
            }
            float s[2][4] = {{sum8(a00), sum8(a01), sum8(a02), sum8(a03)}, {sum8(a10), sum8(a11), sum8(a12), sum8(a13)}};
            for (; p < k; ++p)
                for (int q = 0; q < 4; ++q) s[0][q] += x0[p] * w[(j + q) * ldw + p], s[1][q] += x1[p] * w[(j + q) * ldw + p];
            for (int q = 0; q < 4; ++q) {
                const float b = bias ? bias[j + q] : 0.0f;
                y[i * ldy + j + q] = s[0][q] + b, y[(i + 1) * ldy + j + q] = s[1][q] + b;
            }
        }
        for (; j < j1; ++j)
            for (size_t r = i; r < i + 2; ++r) y[r * ldy + j] = dot(x + r * ldx, w + j * ldw, k) + (bias ? bias[j] : 0.0f);
    }
    for (; i < m; ++i)
        for (size_t j = j0; j < j1; ++j) y[i * ldy + j] = dot(x + i * ldx, w + j * ldw, k) + (bias ? bias[j] : 0.0f);
}

/// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias): the float32 engine's linear layer and the output head.
void matmul_f32(Pool& pool, const float* x, size_t m, size_t k, const float* w, size_t n, const float* bias, float* y) {
    const size_t block = 16;  // weight rows per task: 16 · k floats stay in L1/L2 while x streams past
    const size_t tasks = (n + block - 1) / block;
    auto task = [&](size_t t) { matmul_block(x, k, m, k, w, k, t * block, std::min(n, (t + 1) * block), bias, y, n); };
    if (m * n * k < (size_t(1) << 21)) {  // too small to be worth waking the pool
        for (size_t t = 0; t < tasks; ++t) task(t);
    } else {
        pool.run(tasks, task);
    }
}

void rms_norm(const float* x, size_t rows, size_t dim, const float* weight, float eps, float* y) {
    for (size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * dim;
        double ss = 0;
        for (size_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
        const float scale = float(1.0 / std::sqrt(ss / double(dim) + eps));
        for (size_t i = 0; i < dim; ++i) y[r * dim + i] = xr[i] * scale * weight[i];
    }
}

float half_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: normalize
        int e = -1;
        do ++e, mant <<= 1;
        while (!(mant & 0x400));
        bits = sign | uint32_t(112 - e) << 23 | ((mant & 0x3FF) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// ---- tensor parallelism: the two collectives --------------------------------

/// What tensor parallelism needs from a communication library: the world and
/// two in-place all-reduces of float32 buffers, MAX (the row-parallel layers'
/// row statistics) and SUM (their partial outputs). MPI here, across processes
/// and machines; on GPUs the same two calls are NCCL's ncclAllReduce with
/// ncclMax / ncclSum on device buffers (docs/TENSOR_PARALLEL.md).
class Collectives {
public:
    virtual ~Collectives() = default;
    virtual size_t rank() const = 0;
    virtual size_t world() const = 0;
    /// Ranks of this world on this machine (sharing its cores).
    virtual size_t local_world() const = 0;
    virtual void all_reduce_max(float* data, size_t count) = 0;
    virtual void all_reduce_sum(float* data, size_t count) = 0;
};

/// A world of one: every all-reduce leaves its buffer as it is.
class OneProcess final : public Collectives {
public:
    size_t rank() const override { return 0; }
    size_t world() const override { return 1; }
    size_t local_world() const override { return 1; }
    void all_reduce_max(float*, size_t) override {}
    void all_reduce_sum(float*, size_t) override {}
};

#ifdef LLMINT8_ENGINE_MPI
/// MPI_COMM_WORLD. Only the main thread calls MPI (the thread pools never do).
class Mpi final : public Collectives {
public:
    Mpi(int* argc, char*** argv) {
        MPI_Init(argc, argv);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        int r = 0, w = 1, l = 1;
        MPI_Comm_rank(MPI_COMM_WORLD, &r);
        MPI_Comm_size(MPI_COMM_WORLD, &w);
        MPI_Comm local;  // the ranks that share this machine's memory (and cores)
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &local);
        MPI_Comm_size(local, &l);
        MPI_Comm_free(&local);
        rank_ = size_t(r), world_ = size_t(w), local_ = size_t(l);
    }
    ~Mpi() override { MPI_Finalize(); }
    size_t rank() const override { return rank_; }
    size_t world() const override { return world_; }
    size_t local_world() const override { return local_; }
    void all_reduce_max(float* data, size_t count) override { reduce(data, count, MPI_MAX); }
    void all_reduce_sum(float* data, size_t count) override { reduce(data, count, MPI_SUM); }
    /// Ends every rank's process, for an error on one of them (the others
    /// would wait in their next collective).
    [[noreturn]] static void abort(int code) {
        MPI_Abort(MPI_COMM_WORLD, code);
        std::exit(code);
    }

private:
    void reduce(float* data, size_t count, MPI_Op op) {
        if (count > size_t(std::numeric_limits<int>::max())) throw std::runtime_error("an all-reduce of over 2^31 floats");
        const int rc = MPI_Allreduce(MPI_IN_PLACE, data, int(count), MPI_FLOAT, op, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) {
            char text[MPI_MAX_ERROR_STRING];
            int length = 0;
            MPI_Error_string(rc, text, &length);
            throw std::runtime_error("MPI_Allreduce: " + std::string(text, size_t(length)));
        }
    }
    size_t rank_ = 0, world_ = 1, local_ = 1;
};
#endif

// ---- the model -------------------------------------------------------------

struct Config {
    size_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
    float eps, rope_theta;
    bool tied;
    int64_t eos = -1;

    static Config read(const json::Value& c) {
        Config k{};
        auto need = [&](const char* key) {
            const json::Value* v = c.find(key);
            if (!v || v->kind != json::Value::Kind::Number)
                throw std::runtime_error(std::string("config.json: no number \"") + key + "\"");
            return size_t(v->number);
        };
        k.hidden = need("hidden_size");
        k.intermediate = need("intermediate_size");
        k.layers = need("num_hidden_layers");
        k.heads = need("num_attention_heads");
        k.kv_heads = size_t(c.num("num_key_value_heads", double(k.heads)));
        k.head_dim = size_t(c.num("head_dim", double(k.hidden / k.heads)));
        k.vocab = need("vocab_size");
        k.eps = float(c.num("rms_norm_eps", 1e-6));
        k.rope_theta = float(c.num("rope_theta", 10000.0));
        const json::Value* tied = c.find("tie_word_embeddings");
        k.tied = tied && tied->boolean;
        if (const json::Value* eos = c.find("eos_token_id"))
            k.eos = eos->kind == json::Value::Kind::Array ? int64_t(eos->array.at(0).number) : int64_t(eos->number);
        const json::Value* scaling = c.find("rope_scaling");
        if (scaling && scaling->kind == json::Value::Kind::Object)
            throw std::runtime_error("config.json: rope_scaling is not supported by this engine");
        if (k.heads % k.kv_heads != 0) throw std::runtime_error("config.json: heads not a multiple of kv heads");
        return k;
    }
};

/// One rank's part of the decoder under tensor parallelism (Megatron-LM's
/// split): whole groups of query heads with their KV head — q/k/v split by
/// output rows (column-parallel), o_proj by the same input columns
/// (row-parallel) — and a contiguous range of the MLP's hidden features —
/// gate/up by rows, down_proj by columns. The whole model is the shard of a
/// world of one.
struct Shard {
    bool parallel = false;  // row-parallel layers through the collectives (--tensor-parallel, any world)
    size_t rank = 0, world = 1;
    size_t kv_begin = 0, kv_end = 0, heads_begin = 0, heads_end = 0, hidden_begin = 0, hidden_end = 0;

    static Shard of(const Config& c, bool parallel, size_t rank, size_t world) {
        if (world > c.kv_heads || c.kv_heads % world != 0)
            throw std::runtime_error("tensor parallelism splits whole KV heads: " + std::to_string(c.kv_heads) +
                                     " KV heads do not divide among " + std::to_string(world) + " ranks");
        const size_t group = c.heads / c.kv_heads;
        Shard s;
        s.parallel = parallel, s.rank = rank, s.world = world;
        s.kv_begin = rank * c.kv_heads / world, s.kv_end = (rank + 1) * c.kv_heads / world;
        s.heads_begin = s.kv_begin * group, s.heads_end = s.kv_end * group;
        s.hidden_begin = rank * c.intermediate / world, s.hidden_end = (rank + 1) * c.intermediate / world;
        return s;
    }
    size_t heads() const { return heads_end - heads_begin; }
    size_t kv_heads() const { return kv_end - kv_begin; }
    size_t intermediate() const { return hidden_end - hidden_begin; }
};

/// Rows in llama.cpp's Q8_0 form: blocks of 32 along K, each `q` int8 and
/// one scale `d` = absmax / 127 stored as float16 (quantize_row_q8_0_ref).
struct Q8_0 {
    std::vector<int8_t> q;
    std::vector<float> d;  // [rows, K / 32], float16 values

    static Q8_0 of(const float* x, size_t rows, size_t k) {
        Q8_0 r;
        r.q.resize(rows * k);
        r.d.resize(rows * k / 32);
        for (size_t b = 0; b < r.d.size(); ++b) {
            float amax = 0;
            for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
            const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
            r.d[b] = float(_Float16(d));
            for (size_t i = 0; i < 32; ++i) r.q[b * 32 + i] = int8_t(std::round(x[b * 32 + i] * id));
        }
        return r;
    }
};

/// Which of a layer's smoothed weights a run uses (SmoothQuant's s folded into
/// the weight, the activations divided by it inside llmint8).
enum class Smoothing { None, Half, HalfAlone, Tuned, TunedAlone, TunedAloneKept };

/// How the decoder's linear layers compute.
struct Variant {
    std::string name;
    bool int8 = false;
    float threshold = 0.0f;
    llmint8::RowScale row_scale = llmint8::RowScale::BitsAndBytes;
    bool kept = false;    // the weights that keep calibrated 16-bit outlier columns
    bool record = false;  // calibration: note each layer's outlier columns (|x| >= threshold)
    bool int8_head = false;  // the output head through llmint8 too (Model::quantize_head)
    Smoothing smoothing = Smoothing::None;  // which smoothed weights (Model::smooth)
    bool q8_0 = false;  // llama.cpp's Q8_0 emulated in float64 (Model::quantize_q8_0), the finer-grained reference
};

struct Linear {
    std::string prefix;
    size_t out = 0, in = 0;  // this rank's shard's (the whole layer's in a world of one)
    bool row_parallel = false;  // a row-parallel shard: its partial outputs are summed across the ranks
    std::vector<float> w32, bias32;        // the float32 engine's copy (when loaded)
    std::optional<llmint8::Weight> int8;   // the LLM.int8() weight (when loaded)
    std::optional<llmint8::Weight> kept;   // the same keeping the calibrated columns in 16-bit
    std::vector<uint8_t> outlier_seen;     // calibration: [in] columns that held an outlier
    std::vector<float> x_absmax;           // calibration: [in] max |x_c| over the text
    std::vector<float> x_sample;           // calibration: some input rows [rows, in], for choosing α
    // Model::smooth: one vector per group sharing the input, α 0.5 and α chosen
    std::optional<llmint8::Weight> smooth_half, smooth_tuned;
    // ... and this layer's own vector (no shared input): α 0.5, α chosen, and the latter keeping columns
    std::optional<llmint8::Weight> smooth_alone, smooth_tuned_alone, smooth_tuned_alone_kept;
    std::vector<float> smoothing;          // the per-layer vector (smooth_tuned's), for --smoothing-out
    float alpha = -1;                      // the α chosen for it (-1: none)
    bool own_vector = false;               // --smooth gave int8 a vector its group does not share
    Q8_0 q8_0;                             // the weight in llama.cpp's Q8_0 blocks (Model::quantize_q8_0)
    /// The llmint8 weight a variant multiplies by.
    const llmint8::Weight& weight(const Variant& v) const {
        switch (v.smoothing) {
            case Smoothing::Half: return *smooth_half;
            case Smoothing::HalfAlone: return *smooth_alone;
            case Smoothing::Tuned: return *smooth_tuned;
            case Smoothing::TunedAlone: return *smooth_tuned_alone;
            case Smoothing::TunedAloneKept: return *smooth_tuned_alone_kept;
            case Smoothing::None: break;
        }
        return v.kept ? *kept : *int8;
    }
};

struct Layer {
    std::vector<float> attn_norm, mlp_norm;
    Linear q, k, v, o, gate, up, down;
    Linear* all() { return &q; }  // the seven, in declaration order
};

class Model {
public:
    /// The model in `dir`, this rank's shard of its decoder when
    /// `collectives` spans several processes or `tensor_parallel` is set
    /// (LLM.int8() only: the float32 engine runs whole models).
    Model(const std::string& dir, bool want_f32, bool want_int8, llmint8::Context& ctx, Pool& pool,
          Collectives& collectives, bool tensor_parallel)
        : cfg_(Config::read(json::parse(read_file(dir + "/config.json")))),
          ctx_(ctx),
          pool_(pool),
          collectives_(collectives),
          shard_(Shard::of(cfg_, tensor_parallel || collectives.world() > 1, collectives.rank(), collectives.world())) {
        if (shard_.parallel && want_f32) throw std::logic_error("tensor parallelism is for the LLM.int8() runs");
        llmint8::Checkpoint ck(dir);
        embed_ = read_f32(ck, "model.embed_tokens.weight", cfg_.vocab * cfg_.hidden);
        final_norm_ = read_f32(ck, "model.norm.weight", cfg_.hidden);
        if (!cfg_.tied) head_ = read_f32(ck, "lm_head.weight", cfg_.vocab * cfg_.hidden);
        layers_.resize(cfg_.layers);
        for (size_t l = 0; l < cfg_.layers; ++l) {
            Layer& L = layers_[l];
            const std::string p = "model.layers." + std::to_string(l) + ".";
            L.attn_norm = read_f32(ck, p + "input_layernorm.weight", cfg_.hidden);
            L.mlp_norm = read_f32(ck, p + "post_attention_layernorm.weight", cfg_.hidden);
            // Each layer's shard: the whole layer's rows or columns [begin, end).
            const size_t H = cfg_.hidden, hd = cfg_.head_dim;
            const std::pair<size_t, size_t> q{shard_.heads_begin * hd, shard_.heads_end * hd},
                kv{shard_.kv_begin * hd, shard_.kv_end * hd}, mlp{shard_.hidden_begin, shard_.hidden_end};
            struct Part {
                const char* name;
                size_t out, in;  // the whole layer's
                std::pair<size_t, size_t> range;
                bool row_parallel;  // range is of columns (else of rows)
            };
            const size_t qd = cfg_.heads * hd, kvd = cfg_.kv_heads * hd, I = cfg_.intermediate;
            const Part parts[7] = {{"self_attn.q_proj", qd, H, q, false},   {"self_attn.k_proj", kvd, H, kv, false},
                                   {"self_attn.v_proj", kvd, H, kv, false}, {"self_attn.o_proj", H, qd, q, true},
                                   {"mlp.gate_proj", I, H, mlp, false},     {"mlp.up_proj", I, H, mlp, false},
                                   {"mlp.down_proj", H, I, mlp, true}};
            for (int i = 0; i < 7; ++i) {
                Linear& lin = L.all()[i];
                const Part& part = parts[i];
                lin.prefix = p + part.name;
                lin.out = part.out, lin.in = part.in;
                if (!shard_.parallel) {
                    load_linear(ck, lin, want_f32, want_int8);
                    continue;
                }
                const auto [begin, end] = part.range;
                lin.row_parallel = part.row_parallel;
                (part.row_parallel ? lin.in : lin.out) = end - begin;
                llmint8::Weight w = part.row_parallel ? ctx_.load_columns(ck, lin.prefix, begin, end)
                                                      : ctx_.load_rows(ck, lin.prefix, begin, end);
                if (w.out_features() != lin.out || w.in_features() != lin.in)
                    throw std::runtime_error(lin.prefix + ": shape does not match config.json");
                lin.int8.emplace(std::move(w));
            }
        }
    }

    const Config& config() const { return cfg_; }
    const Shard& shard() const { return shard_; }
    Collectives& collectives() { return collectives_; }

    /// The output head as an llmint8 weight as well (tied embeddings: a
    /// quantized copy; the float32 one stays for the float32 runs). Returns
    /// its bytes beside the float32 head's.
    std::pair<uint64_t, uint64_t> quantize_head() {
        const std::vector<float>& head = cfg_.tied ? embed_ : head_;
        if (!head8_) head8_ = ctx_.quantize(head.data(), cfg_.vocab, cfg_.hidden);
        const auto m = head8_->memory();
        return {4 * uint64_t(head.size()), m.host_bytes + m.device_bytes};
    }

    /// Every decoder layer's weight in Q8_0 blocks too (from the float32
    /// weights), for the Q8_0 reference row; its K must be a multiple of 32.
    void quantize_q8_0() {
        for (auto& L : layers_)
            for (int i = 0; i < 7; ++i) {
                Linear& lin = L.all()[i];
                if (lin.in % 32 != 0 || lin.w32.empty()) throw std::runtime_error(lin.prefix + ": no Q8_0 form");
                lin.q8_0 = Q8_0::of(lin.w32.data(), lin.out, lin.in);
            }
    }

    /// Bytes the decoder's linear layers hold in the float32 engine and as llmint8 weights.
    std::pair<uint64_t, uint64_t> linear_bytes() {
        uint64_t f32 = 0, int8 = 0;
        for (auto& L : layers_)
            for (int i = 0; i < 7; ++i) {
                const Linear& lin = L.all()[i];
                f32 += 4 * uint64_t(lin.out) * (lin.in + (lin.bias32.empty() ? 0 : 1));
                if (lin.int8) {
                    auto m = lin.int8->memory();
                    int8 += m.host_bytes + m.device_bytes;
                }
            }
        return {f32, int8};
    }

    /// Calibration, the engine's part of the paper's 16-bit outlier columns:
    /// runs float32 over `ids` (windows of `window`), notes which input
    /// columns of each linear layer hold a value >= `threshold`, and builds
    /// each layer's weight again with llmint8_weight_quantize_keep, keeping
    /// those columns in the checkpoint's 16/32-bit values. Returns the kept
    /// columns' bytes. An 8-bit checkpoint has no 16-bit columns to keep.
    uint64_t calibrate(const std::string& dir, const std::vector<int32_t>& ids, size_t window, float threshold) {
        Variant record{"calibration", false, threshold};
        record.record = true;
        for (size_t at = 0; at < ids.size(); at += window) {
            std::vector<int32_t> chunk(ids.begin() + long(at), ids.begin() + long(std::min(ids.size(), at + window)));
            Cache cache = this->cache(chunk.size());
            std::vector<float> logits;
            forward(chunk, cache, record, false, logits);
        }
        llmint8::Checkpoint ck(dir);
        uint64_t before = 0, after = 0;
        for (auto& L : layers_)
            for (int i = 0; i < 7; ++i) {
                Linear& lin = L.all()[i];
                std::vector<uint32_t> keep;
                for (size_t c = 0; c < lin.outlier_seen.size(); ++c)
                    if (lin.outlier_seen[c]) keep.push_back(uint32_t(c));
                const size_t index = *ck.find(lin.prefix + ".weight");
                const llmint8::TensorInfo info = ck.tensor(index);
                if (info.dtype == LLMINT8_TENSOR_I8)
                    throw std::runtime_error(lin.prefix + ": an 8-bit checkpoint has no 16-bit columns to keep");
                const std::vector<uint8_t> raw = ck.read(index);
                std::vector<uint8_t> bias;
                if (auto b = ck.find(lin.prefix + ".bias")) {
                    if (ck.tensor(*b).dtype != info.dtype) throw std::runtime_error(lin.prefix + ": bias dtype differs");
                    bias = ck.read(*b);
                }
                auto keep_as = [&](auto tag) {
                    using T = decltype(tag);
                    const T* b = bias.empty() ? nullptr : reinterpret_cast<const T*>(bias.data());
                    return ctx_.quantize_keep(reinterpret_cast<const T*>(raw.data()), lin.out, lin.in, keep, b);
                };
                lin.kept.emplace(info.dtype == LLMINT8_TENSOR_F16    ? keep_as(llmint8::Half{})
                                 : info.dtype == LLMINT8_TENSOR_BF16 ? keep_as(llmint8::BFloat16{})
                                                                     : keep_as(float{}));
                auto m = lin.int8->memory(), k = lin.kept->memory();
                before += m.host_bytes + m.device_bytes, after += k.host_bytes + k.device_bytes;
            }
        return after - before;
    }

    /// The calibrated columns of every layer as JSON {"MODULE": [COLUMN, ...]},
    /// the list `llmint8 convert --keep-columns` reads.
    std::string calibration_json() {
        std::string out = "{";
        for (auto& L : layers_)
            for (int i = 0; i < 7; ++i) {
                const Linear& lin = L.all()[i];
                out += (out.size() > 1 ? ",\n \"" : "\n \"") + lin.prefix + "\": [";
                bool first = true;
                for (size_t c = 0; c < lin.outlier_seen.size(); ++c)
                    if (lin.outlier_seen[c]) out += (first ? "" : ", ") + std::to_string(c), first = false;
                out += "]";
            }
        return out + "\n}\n";
    }

    /// SmoothQuant inside LLM.int8(), from what `calibrate` recorded: vectors
    /// s_c = max|X_c|^α / max|W_c|^(1-α) (Xiao et al., 2023) and each layer's
    /// weight quantized as W·diag(s). Once for groups of layers sharing an
    /// input (q/k/v, o, gate/up, down), one vector from the group's weights
    /// together, so that one activation pass serves the group: α = 0.5
    /// (`smooth_half`) and the α among none, 0.2 … 0.8 (`kAlphas`) whose
    /// weights give the group the least output error (threshold 6, int8-part
    /// row scale) against float32 on the calibration rows (`smooth_tuned`,
    /// `smoothing`). Once more with every layer alone, its own vector (what
    /// sharing costs): `smooth_alone`, `smooth_tuned_alone` and the latter
    /// keeping in float32 the columns still holding an outlier after smoothing
    /// (`smooth_tuned_alone_kept`). Returns the α chosen per group (shared),
    /// in order, for the log. Needs the float32 weights.
    std::vector<float> smooth() {
        std::vector<float> chosen;
        ctx_.set_row_scale(llmint8::RowScale::Int8Part);
        for (auto& L : layers_) {
            for (std::vector<Linear*> group : {std::vector<Linear*>{&L.q, &L.k, &L.v}, {&L.o}, {&L.gate, &L.up}, {&L.down}})
                chosen.push_back(tune(group, true));
            for (int i = 0; i < 7; ++i) tune({&L.all()[i]}, false);
        }
        return chosen;
    }

    /// `smooth` for one group of layers sharing an input (`shared`), or one
    /// layer alone; returns the α chosen (-1: none).
    float tune(const std::vector<Linear*>& group, bool shared) {
        const Linear& first = *group[0];
        if (first.x_absmax.empty() || first.w32.empty())
            throw std::logic_error("Model::smooth needs a calibration and the float32 weights");
        std::vector<float> w_absmax(first.in);
        for (Linear* lin : group)
            for (size_t i = 0; i < lin->w32.size(); ++i)
                w_absmax[i % lin->in] = std::max(w_absmax[i % lin->in], std::fabs(lin->w32[i]));
        const size_t rows = first.x_sample.size() / first.in;
        auto quantize = [&](Linear& lin, const std::vector<float>& s, const std::vector<uint32_t>& keep = {}) {
            if (s.empty()) return quantize_plain(lin, keep);
            return ctx_.quantize_smoothed(lin.w32.data(), lin.out, lin.in, s,
                                          lin.bias32.empty() ? nullptr : lin.bias32.data(), keep);
        };
        // The group's error: Σ over its layers of ‖y - y32‖² / ‖y32‖² on the calibration rows.
        auto error = [&](const std::vector<const llmint8::Weight*>& weights) {
            double total = 0;
            for (size_t i = 0; i < group.size(); ++i) {
                const Linear& lin = *group[i];
                std::vector<float> ref(rows * lin.out), got(rows * lin.out);
                matmul_f32(pool_, first.x_sample.data(), rows, lin.in, lin.w32.data(), lin.out,
                           lin.bias32.empty() ? nullptr : lin.bias32.data(), ref.data());
                ctx_.matmul(*weights[i], first.x_sample.data(), rows, got.data(), 6.0f);
                double e = 0, norm = 0;
                for (size_t j = 0; j < ref.size(); ++j)
                    e += double(got[j] - ref[j]) * double(got[j] - ref[j]), norm += double(ref[j]) * ref[j];
                total += norm > 0 ? e / norm : 0;
            }
            return total;
        };
        std::vector<const llmint8::Weight*> plain;
        for (Linear* lin : group) plain.push_back(&*lin->int8);
        double best = error(plain);
        float best_alpha = -1;
        std::vector<float> best_s;
        for (float alpha : kAlphas) {
            const std::vector<float> s = smoothquant_factors(first.x_absmax, w_absmax, alpha);
            std::vector<llmint8::Weight> weights;
            for (Linear* lin : group) weights.push_back(quantize(*lin, s));
            std::vector<const llmint8::Weight*> ptrs;
            for (const auto& w : weights) ptrs.push_back(&w);
            const double e = error(ptrs);
            if (alpha == 0.5f)
                for (size_t i = 0; i < group.size(); ++i)
                    (shared ? group[i]->smooth_half : group[i]->smooth_alone).emplace(std::move(weights[i]));
            if (e < best) best = e, best_alpha = alpha, best_s = s;
        }
        for (Linear* lin : group) {
            if (shared) {
                lin->alpha = best_alpha;
                lin->smoothing = best_s;
                lin->smooth_tuned.emplace(quantize(*lin, best_s));
            } else {
                lin->smooth_tuned_alone.emplace(quantize(*lin, best_s));
                lin->smooth_tuned_alone_kept.emplace(quantize(*lin, best_s, seen(*lin, best_s)));
            }
        }
        return best_alpha;
    }

    /// The per-layer vectors as JSON {"MODULE": [FACTOR, ...]}, which
    /// `llmint8 convert --smooth` and `--smooth` read (layers whose best was
    /// no smoothing are left out).
    std::string smoothing_json() {
        std::string out = "{";
        char number[32];
        for (auto& L : layers_)
            for (int i = 0; i < 7; ++i) {
                const Linear& lin = L.all()[i];
                if (lin.smoothing.empty()) continue;
                out += (out.size() > 1 ? ",\n \"" : "\n \"") + lin.prefix + "\": [";
                for (size_t c = 0; c < lin.smoothing.size(); ++c) {
                    std::snprintf(number, sizeof number, "%.9g", double(lin.smoothing[c]));  // round-trips a float
                    out += (c ? ", " : "") + std::string(number);
                }
                out += "]";
            }
        return out + "\n}\n";
    }

    /// Replaces each listed layer's LLM.int8() weight by the one smoothed by
    /// its vector in `file` (JSON {"MODULE": [FACTOR, ...]}, as
    /// --smoothing-out writes it), quantized from the checkpoint's 16/32-bit
    /// values. Returns how many layers it smoothed.
    size_t smooth_from(const std::string& dir, const std::string& file) {
        const json::Value vectors = json::parse(read_file(file));
        if (vectors.kind != json::Value::Kind::Object) throw std::runtime_error(file + ": expected {\"MODULE\": [...]}");
        llmint8::Checkpoint ck(dir);
        size_t done = 0;
        for (const auto& [module, factors] : vectors.object) {
            Linear* lin = find_linear(module);
            if (!lin) throw std::runtime_error(file + ": " + module + " is not a decoder linear layer of this model");
            std::vector<float> s;
            for (const json::Value& v : factors.array) s.push_back(float(v.number));
            const size_t index = *ck.find(lin->prefix + ".weight");
            const llmint8::TensorInfo info = ck.tensor(index);
            if (info.dtype == LLMINT8_TENSOR_I8)
                throw std::runtime_error(lin->prefix + ": an 8-bit checkpoint is smoothed by `llmint8 convert --smooth`");
            const std::vector<uint8_t> raw = ck.read(index);
            auto smoothed_as = [&](auto tag) {
                using T = decltype(tag);
                return ctx_.quantize_smoothed(reinterpret_cast<const T*>(raw.data()), lin->out, lin->in, s);
            };
            lin->int8.emplace(info.dtype == LLMINT8_TENSOR_F16    ? smoothed_as(llmint8::Half{})
                              : info.dtype == LLMINT8_TENSOR_BF16 ? smoothed_as(llmint8::BFloat16{})
                                                                  : smoothed_as(float{}));
            ++done;
        }
        // Layers sharing an input whose weights now differ in smoothing are multiplied one by one.
        for (auto& L : layers_)
            for (std::vector<Linear*> group : {std::vector<Linear*>{&L.q, &L.k, &L.v}, {&L.gate, &L.up}}) {
                bool differ = false;
                for (Linear* lin : group) differ = differ || lin->int8->smoothing() != group[0]->int8->smoothing();
                for (Linear* lin : group) lin->own_vector = differ;
            }
        return done;
    }

    /// A KV cache for up to `positions` tokens (this rank's KV heads).
    struct Cache {
        std::vector<std::vector<float>> k, v;  // per layer [kv_heads, positions, head_dim]
        size_t positions = 0, used = 0;
    };
    Cache cache(size_t positions) const {
        Cache c;
        c.positions = positions;
        const size_t per = positions * shard_.kv_heads() * cfg_.head_dim;
        c.k.assign(cfg_.layers, std::vector<float>(per));
        c.v.assign(cfg_.layers, std::vector<float>(per));
        return c;
    }

    /// Runs `ids` (continuing the cache) and writes the logits of every row
    /// (`all_rows`) or of the last one to `logits` [rows, vocab].
    void forward(const std::vector<int32_t>& ids, Cache& cache, const Variant& variant, bool all_rows,
                 std::vector<float>& logits) {
        // This rank's heads and hidden features (all of them in a world of one).
        const size_t T = ids.size(), H = cfg_.hidden, hd = cfg_.head_dim, nh = shard_.heads(), nkv = shard_.kv_heads();
        const size_t I = shard_.intermediate(), pos0 = cache.used;
        if (pos0 + T > cache.positions) throw std::runtime_error("the KV cache is full");
        if (variant.int8) ctx_.set_row_scale(variant.row_scale);
        std::vector<float> x(T * H), h(T * H), q(T * nh * hd), k(T * nkv * hd), v(T * nkv * hd), att(T * nh * hd);
        std::vector<float> g(T * I), u(T * I);
        for (size_t t = 0; t < T; ++t) {
            if (ids[t] < 0 || size_t(ids[t]) >= cfg_.vocab) throw std::runtime_error("token id out of range");
            std::memcpy(&x[t * H], &embed_[size_t(ids[t]) * H], H * sizeof(float));
        }
        for (size_t l = 0; l < cfg_.layers; ++l) {
            Layer& L = layers_[l];
            rms_norm(x.data(), T, H, L.attn_norm.data(), cfg_.eps, h.data());
            linears({&L.q, &L.k, &L.v}, h.data(), T, {q.data(), k.data(), v.data()}, variant);
            for (size_t t = 0; t < T; ++t) {
                rope(&q[t * nh * hd], nh, pos0 + t);
                rope(&k[t * nkv * hd], nkv, pos0 + t);
            }
            for (size_t t = 0; t < T; ++t)  // each head's keys and values contiguous, for attention's products
                for (size_t kh = 0; kh < nkv; ++kh) {
                    const size_t at = (kh * cache.positions + pos0 + t) * hd;
                    std::memcpy(&cache.k[l][at], &k[(t * nkv + kh) * hd], hd * sizeof(float));
                    std::memcpy(&cache.v[l][at], &v[(t * nkv + kh) * hd], hd * sizeof(float));
                }
            attention(q.data(), T, pos0, cache.positions, cache.k[l].data(), cache.v[l].data(), att.data());
            linear(L.o, att.data(), T, h.data(), variant);
            for (size_t i = 0; i < T * H; ++i) x[i] += h[i];
            rms_norm(x.data(), T, H, L.mlp_norm.data(), cfg_.eps, h.data());
            linears({&L.gate, &L.up}, h.data(), T, {g.data(), u.data()}, variant);
            for (size_t i = 0; i < T * I; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];  // SiLU(gate) · up
            linear(L.down, g.data(), T, h.data(), variant);
            for (size_t i = 0; i < T * H; ++i) x[i] += h[i];
        }
        cache.used += T;
        const size_t first = all_rows ? 0 : T - 1, rows = T - first;
        rms_norm(&x[first * H], rows, H, final_norm_.data(), cfg_.eps, h.data());
        logits.resize(rows * cfg_.vocab);
        if (variant.int8_head) {
            if (!head8_) throw std::logic_error("an int8-head run without Model::quantize_head");
            ctx_.matmul(*head8_, h.data(), rows, logits.data(), variant.threshold);
        } else {
            const std::vector<float>& head = cfg_.tied ? embed_ : head_;
            matmul_f32(pool_, h.data(), rows, H, head.data(), cfg_.vocab, nullptr, logits.data());
        }
    }

private:
    std::vector<float> read_f32(const llmint8::Checkpoint& ck, const std::string& name, size_t count) {
        auto index = ck.find(name);
        if (!index) throw std::runtime_error("the checkpoint has no " + name);
        const llmint8::TensorInfo info = ck.tensor(*index);
        std::vector<uint8_t> bytes = ck.read(*index);
        std::vector<float> out(count);
        const size_t size = info.dtype == LLMINT8_TENSOR_F32 ? 4 : 2;
        if ((info.dtype != LLMINT8_TENSOR_F32 && info.dtype != LLMINT8_TENSOR_F16 && info.dtype != LLMINT8_TENSOR_BF16) ||
            bytes.size() != count * size)
            throw std::runtime_error(name + ": expected " + std::to_string(count) + " float16/bfloat16/float32 values, found " +
                                     info.dtype_name + " of " + std::to_string(bytes.size()) + " bytes");
        for (size_t i = 0; i < count; ++i) {
            if (size == 4) {
                std::memcpy(&out[i], &bytes[4 * i], 4);
            } else {
                uint16_t b;
                std::memcpy(&b, &bytes[2 * i], 2);
                if (info.dtype == LLMINT8_TENSOR_F16) {
                    out[i] = half_to_float(b);
                } else {
                    uint32_t bits = uint32_t(b) << 16;
                    std::memcpy(&out[i], &bits, 4);
                }
            }
        }
        return out;
    }

    void load_linear(const llmint8::Checkpoint& ck, Linear& lin, bool want_f32, bool want_int8) {
        // llmint8 quantizes 16/32-bit weights and takes bitsandbytes' int8 + SCB as they are.
        llmint8::Weight w = ctx_.load(ck, lin.prefix);
        if (w.out_features() != lin.out || w.in_features() != lin.in)
            throw std::runtime_error(lin.prefix + ": shape does not match config.json");
        auto index = ck.find(lin.prefix + ".weight");
        const bool stored_int8 = ck.tensor(*index).dtype == LLMINT8_TENSOR_I8;
        if (want_f32) {
            if (stored_int8) {  // an 8-bit checkpoint: the float32 engine runs on CB · SCB / 127
                std::vector<int8_t> cb;
                std::vector<float> scb;
                w.export_int8(cb, scb);
                lin.w32.resize(cb.size());
                for (size_t r = 0; r < lin.out; ++r)
                    for (size_t c = 0; c < lin.in; ++c) lin.w32[r * lin.in + c] = float(cb[r * lin.in + c]) * (scb[r] / 127.0f);
            } else {
                lin.w32 = read_f32(ck, lin.prefix + ".weight", lin.out * lin.in);
            }
            if (ck.find(lin.prefix + ".bias")) lin.bias32 = read_f32(ck, lin.prefix + ".bias", lin.out);
        }
        if (want_int8) lin.int8.emplace(std::move(w));
    }

    /// Layers that share their input x (q/k/v, gate/up): with LLM.int8(), one
    /// llmint8 call quantizes x once for all of them (the same bits as a call
    /// per layer); otherwise a call per layer.
    void linears(std::initializer_list<Linear*> layers, const float* x, size_t rows,
                 std::initializer_list<float*> ys, const Variant& variant) {
        // Weights smoothed each by its own vector cannot share one activation pass.
        if ((variant.int8 || variant.kept) && !variant.record && !variant.q8_0 && !alone(variant, layers)) {
            std::vector<const llmint8::Weight*> weights;
            for (Linear* lin : layers) weights.push_back(&lin->weight(variant));
            ctx_.matmul_shared_input(weights, x, rows, std::vector<float*>(ys), variant.threshold);
            return;
        }
        auto y = ys.begin();
        for (Linear* lin : layers) linear(*lin, x, rows, *y++, variant);
    }

    /// Whether a variant's weights of these layers carry different smoothing
    /// vectors, so that they cannot share one activation pass.
    static bool alone(const Variant& variant, std::initializer_list<Linear*> layers) {
        if (variant.smoothing == Smoothing::HalfAlone || variant.smoothing == Smoothing::TunedAlone ||
            variant.smoothing == Smoothing::TunedAloneKept)
            return true;
        return variant.smoothing == Smoothing::None && !variant.kept &&
               std::any_of(layers.begin(), layers.end(), [](const Linear* l) { return l->own_vector; });
    }

    void linear(Linear& lin, const float* x, size_t rows, float* y, const Variant& variant) {
        if (variant.record) {  // the columns llmint8 would decompose: |x| >= threshold, or not finite
            lin.outlier_seen.resize(lin.in);
            lin.x_absmax.resize(lin.in);
            for (size_t i = 0; i < rows * lin.in; ++i) {
                if (!(std::fabs(x[i]) < variant.threshold)) lin.outlier_seen[i % lin.in] = 1;
                lin.x_absmax[i % lin.in] = std::max(lin.x_absmax[i % lin.in], std::fabs(x[i]));
            }
            // Every 8th row (at most kSampleRows): the text α is chosen on.
            for (size_t r = 0; r < rows && lin.x_sample.size() < kSampleRows * lin.in; r += 8)
                lin.x_sample.insert(lin.x_sample.end(), x + r * lin.in, x + (r + 1) * lin.in);
        }
        if (variant.q8_0) {  // Σ over blocks of the exact int32 block sum · dx · dw, in float64
            const Q8_0 xq = Q8_0::of(x, rows, lin.in);
            const size_t blocks = lin.in / 32;
            pool_.run(lin.out, [&](size_t j) {
                const int8_t* wq = &lin.q8_0.q[j * lin.in];
                const float* wd = &lin.q8_0.d[j * blocks];
                for (size_t r = 0; r < rows; ++r) {
                    const int8_t* q = &xq.q[r * lin.in];
                    double sum = 0;
                    for (size_t b = 0; b < blocks; ++b) {
                        int32_t block = 0;
                        for (size_t i = 0; i < 32; ++i) block += int32_t(q[b * 32 + i]) * int32_t(wq[b * 32 + i]);
                        sum += double(block) * double(xq.d[r * blocks + b]) * double(wd[b]);
                    }
                    y[r * lin.out + j] = float(sum + (lin.bias32.empty() ? 0.0 : double(lin.bias32[j])));
                }
            });
        } else if (lin.row_parallel) {
            row_parallel(lin, x, rows, y, variant);
        } else if (variant.kept || variant.smoothing != Smoothing::None || variant.int8) {
            ctx_.matmul(lin.weight(variant), x, rows, y, variant.threshold);
        } else {
            matmul_f32(pool_, x, rows, lin.in, lin.w32.data(), lin.out, lin.bias32.empty() ? nullptr : lin.bias32.data(), y);
        }
    }

    /// A row-parallel shard's product: the ranks' row statistics all-reduced
    /// with MAX, so that every rank quantizes its slice of each row with the
    /// whole row's scale; then each rank's partial output, all-reduced with SUM
    /// — the whole layer's output within float32 rounding
    /// (llmint8_matmul_row_parallel states the bound).
    void row_parallel(const Linear& lin, const float* x, size_t rows, float* y, const Variant& variant) {
        if (!variant.int8 || variant.kept || variant.smoothing != Smoothing::None)
            throw std::logic_error("a row-parallel shard runs plain LLM.int8() only");
        std::vector<float> row_absmax(rows);
        ctx_.row_parallel_statistics(*lin.int8, x, rows, row_absmax.data(), variant.threshold);
        collectives_.all_reduce_max(row_absmax.data(), rows);
        ctx_.matmul_row_parallel(*lin.int8, x, rows, row_absmax.data(), y, variant.threshold);
        collectives_.all_reduce_sum(y, rows * lin.out);
    }

    /// Rotary position embedding in transformers' "rotate half" layout.
    void rope(float* x, size_t heads, size_t pos) const {
        const size_t hd = cfg_.head_dim, half = hd / 2;
        for (size_t i = 0; i < half; ++i) {
            const float inv_freq = 1.0f / std::pow(cfg_.rope_theta, float(2 * i) / float(hd));
            const float angle = float(pos) * inv_freq, c = std::cos(angle), s = std::sin(angle);
            for (size_t hh = 0; hh < heads; ++hh) {
                float *a = x + hh * hd + i, *b = a + half;
                const float x1 = *a, x2 = *b;
                *a = x1 * c - x2 * s, *b = x2 * c + x1 * s;
            }
        }
    }

    /// Causal grouped-query attention of T new rows over the cache's pos0 + T
    /// positions (`kc`, `vc`: [kv_heads, positions, head_dim]).
    void attention(const float* q, size_t T, size_t pos0, size_t positions, const float* kc, const float* vc,
                   float* out) {
        const size_t hd = cfg_.head_dim, nh = shard_.heads(), group = nh / shard_.kv_heads();
        const float scale = 1.0f / std::sqrt(float(hd));
        const size_t chunk = 16;  // query rows per task
        const size_t chunks = (T + chunk - 1) / chunk;
        pool_.run(nh * chunks, [&](size_t task) {
            const size_t head = task % nh, t0 = task / nh * chunk, rows = std::min(T, t0 + chunk) - t0;
            const float* keys = kc + head / group * positions * hd;
            const float* values = vc + head / group * positions * hd;
            const size_t n = pos0 + t0 + rows;  // keys the last row sees
            std::vector<float> qb(rows * hd), p(rows * n);
            for (size_t r = 0; r < rows; ++r) std::memcpy(&qb[r * hd], q + ((t0 + r) * nh + head) * hd, hd * sizeof(float));
            matmul_block(qb.data(), hd, rows, hd, keys, hd, 0, n, nullptr, p.data(), n);  // scores = Q · Kᵀ
            for (size_t r = 0; r < rows; ++r) {  // softmax over the keys row r may see; 0 beyond
                float* pr = &p[r * n];
                const size_t seen = pos0 + t0 + r + 1;
                float top = -INFINITY, sum = 0;
                for (size_t j = 0; j < seen; ++j) top = std::max(top, pr[j] *= scale);
                for (size_t j = 0; j < seen; ++j) sum += pr[j] = std::exp(pr[j] - top);
                for (size_t j = 0; j < seen; ++j) pr[j] /= sum;
                std::fill(pr + seen, pr + n, 0.0f);
            }
            size_t r = 0;
            if (hd % 64 == 0) {  // out = P · V two rows at a time, 64 dims in 16 vector registers
                for (; r + 2 <= rows; r += 2) {
                    const float *p0 = &p[r * n], *p1 = p0 + n;
                    const size_t seen = pos0 + t0 + r + 2;  // row r + 1's; row r's P is 0 at the last key
                    for (size_t d0 = 0; d0 < hd; d0 += 64) {
                        v8 a0[8] = {}, a1[8] = {};
                        for (size_t j = 0; j < seen; ++j) {
                            const float* vr = values + j * hd + d0;
                            for (int c = 0; c < 8; ++c) {
                                const v8 v = load8(vr + 8 * c);
                                a0[c] += p0[j] * v, a1[c] += p1[j] * v;
                            }
                        }
                        float *o0 = out + ((t0 + r) * nh + head) * hd + d0, *o1 = o0 + nh * hd;
                        std::memcpy(o0, a0, sizeof a0), std::memcpy(o1, a1, sizeof a1);
                    }
                }
            }
            for (; r < rows; ++r) {  // any other head size, and an odd last row
                float* o = out + ((t0 + r) * nh + head) * hd;
                std::fill(o, o + hd, 0.0f);
                const float* pr = &p[r * n];
                for (size_t j = 0, seen = pos0 + t0 + r + 1; j < seen; ++j) {
                    const float a = pr[j], *vr = values + j * hd;
                    for (size_t d = 0; d < hd; ++d) o[d] += a * vr[d];
                }
            }
        });
    }

    /// Rows of each layer's input kept by a calibration, to choose α on.
    static constexpr size_t kSampleRows = 256;

public:
    /// The α a calibration tries per group of layers (besides no smoothing).
    /// On SmolLM2 0.8 is chosen most (70 of 120 groups); going on to 0.9 and
    /// 1.0 was measured no better on the evaluation text (KLD 0.00583 against
    /// 0.00565): the calibration's choice overfits there.
    static constexpr float kAlphas[] = {0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};

private:

    /// SmoothQuant's factors (llmint8::smoothquant_factors in Rust): a column
    /// either side never uses gets 1.
    static std::vector<float> smoothquant_factors(const std::vector<float>& x_absmax, const std::vector<float>& w_absmax,
                                                  float alpha) {
        std::vector<float> s(x_absmax.size(), 1.0f);
        for (size_t c = 0; c < s.size(); ++c)
            if (x_absmax[c] > 0 && w_absmax[c] > 0 && std::isfinite(x_absmax[c]) && std::isfinite(w_absmax[c]))
                s[c] = float(std::clamp(std::pow(double(x_absmax[c]), double(alpha)) /
                                            std::pow(double(w_absmax[c]), 1.0 - double(alpha)),
                                        1e-30, 1e30));
        return s;
    }

    /// The columns of `lin` that held an outlier (|x / s| >= 6) on the calibration text.
    static std::vector<uint32_t> seen(const Linear& lin, const std::vector<float>& s) {
        std::vector<uint32_t> keep;
        for (size_t c = 0; c < lin.x_absmax.size(); ++c)
            if (!(lin.x_absmax[c] / (s.empty() ? 1.0f : s[c]) < 6.0f)) keep.push_back(uint32_t(c));
        return keep;
    }

    llmint8::Weight quantize_plain(const Linear& lin, const std::vector<uint32_t>& keep) {
        return ctx_.quantize_keep(lin.w32.data(), lin.out, lin.in, keep, lin.bias32.empty() ? nullptr : lin.bias32.data());
    }

    Linear* find_linear(const std::string& prefix) {
        for (auto& L : layers_)
            for (int i = 0; i < 7; ++i)
                if (L.all()[i].prefix == prefix) return &L.all()[i];
        return nullptr;
    }

    Config cfg_;
    llmint8::Context& ctx_;
    Pool& pool_;
    Collectives& collectives_;
    Shard shard_;
    std::vector<float> embed_, final_norm_, head_;
    std::optional<llmint8::Weight> head8_;  // the output head through llmint8 (--int8-head)
    std::vector<Layer> layers_;
};

// ---- generation ------------------------------------------------------------

struct Generation {
    std::string text;
    size_t prompt_tokens = 0;
    double prompt_seconds = 0;  // the prompt's forward pass (prefill)
    size_t decoded = 0;         // single-token forward passes after the prompt's
    double decode_seconds = 0;
    std::vector<float> logits;  // each step's [vocab], the token chosen from them (when kept)
};

/// Greedy generation of up to `steps` tokens after the prompt `ids` (whose
/// text is `prompt`). Under tensor parallelism every rank chooses the next
/// token from its own copy of the logits, and the ranks check at each step
/// that they chose the same one (an all-reduce MAX of the token and of its
/// negation: every rank sees the same pair, so all go on or all stop).
Generation generate(Model& model, Tokenizer& tok, const std::string& prompt, const std::vector<int32_t>& ids,
                    size_t steps, const Variant& variant, bool keep_logits) {
    if (ids.empty()) throw std::runtime_error("the prompt has no tokens");
    Model::Cache cache = model.cache(ids.size() + steps);
    std::vector<float> logits;
    Generation g;
    std::vector<int32_t> out;
    Collectives& collectives = model.collectives();
    auto choose = [&](size_t step) {
        if (keep_logits) g.logits.insert(g.logits.end(), logits.begin(), logits.end());
        const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (collectives.world() > 1) {
            float pair[2] = {float(next), -float(next)};  // token ids below 2^24 are exact
            collectives.all_reduce_max(pair, 2);
            if (pair[0] != -pair[1])
                throw std::runtime_error("the ranks chose different tokens at step " + std::to_string(step) + " (" +
                                         std::to_string(-pair[1]) + " to " + std::to_string(pair[0]) + ")");
        }
        return next;
    };
    auto start = std::chrono::steady_clock::now();
    model.forward(ids, cache, variant, false, logits);  // prefill
    auto decode_start = std::chrono::steady_clock::now();
    g.prompt_tokens = ids.size();
    g.prompt_seconds = std::chrono::duration<double>(decode_start - start).count();
    for (size_t s = 0; s < steps; ++s) {
        const int32_t next = choose(s);
        out.push_back(next);
        if (next == model.config().eos) break;
        if (s + 1 < steps) model.forward({next}, cache, variant, false, logits), ++g.decoded;
    }
    g.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - decode_start).count();
    g.text = prompt + tok.decode(out);
    return g;
}

// ---- evaluation against float32 --------------------------------------------

/// In place: logits → log-probabilities (one row of `vocab`).
void log_softmax(float* row, size_t vocab) {
    const float top = *std::max_element(row, row + vocab);
    double sum = 0;
    for (size_t i = 0; i < vocab; ++i) sum += std::exp(row[i] - top);
    const float log_sum = float(std::log(sum)) + top;
    for (size_t i = 0; i < vocab; ++i) row[i] -= log_sum;
}

struct Score {
    double nll = 0, kld = 0;
    size_t agree = 0, count = 0;
};

int evaluate(Model& model, Tokenizer& tok, const std::string& path, size_t window, size_t max_tokens,
             const std::vector<Variant>& variants) {
    std::vector<int32_t> ids = tok.encode(read_file(path));
    if (max_tokens && ids.size() > max_tokens) ids.resize(max_tokens);
    const size_t windows = ids.size() / window, vocab = model.config().vocab;
    if (windows == 0) throw std::runtime_error(path + ": fewer tokens than one window");
    std::printf("%s: %zu tokens, %zu windows of %zu (next-token predictions: %zu)\n", path.c_str(), ids.size(),
                windows, window, windows * (window - 1));
    std::vector<Score> scores(variants.size() + 1);  // [0]: float32
    std::vector<float> ref, got;
    const auto started = std::chrono::steady_clock::now();
    for (size_t w = 0; w < windows; ++w) {
        std::vector<int32_t> chunk(ids.begin() + long(w * window), ids.begin() + long((w + 1) * window));
        Model::Cache cache = model.cache(window);
        model.forward(chunk, cache, Variant{"float32"}, true, ref);
        std::vector<size_t> ref_top(window);
        std::vector<float> ref_p(ref.size());  // float32's probabilities, for the KL divergence
        for (size_t t = 0; t + 1 < window; ++t) {
            float* r = &ref[t * vocab];
            log_softmax(r, vocab);
            for (size_t j = 0; j < vocab; ++j) ref_p[t * vocab + j] = std::exp(r[j]);
            ref_top[t] = size_t(std::max_element(r, r + vocab) - r);
            scores[0].nll -= r[chunk[t + 1]];
            scores[0].count++;
        }
        for (size_t i = 0; i < variants.size(); ++i) {
            cache.used = 0;
            model.forward(chunk, cache, variants[i], true, got);
            Score& s = scores[i + 1];
            for (size_t t = 0; t + 1 < window; ++t) {
                const float *r = &ref[t * vocab], *pr = &ref_p[t * vocab], *g = &got[t * vocab];
                log_softmax(&got[t * vocab], vocab);
                double kld = 0;  // Σ p · (log p - log q), float32's p against the variant's q
                for (size_t j = 0; j < vocab; ++j) kld += double(pr[j]) * (double(r[j]) - double(g[j]));
                s.kld += kld;
                s.nll -= g[chunk[t + 1]];
                s.agree += size_t(std::max_element(g, g + vocab) - g) == ref_top[t];
                s.count++;
            }
        }
        std::fprintf(stderr, "window %zu/%zu done (%.1f s)\n", w + 1, windows,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    const double ppl32 = std::exp(scores[0].nll / double(scores[0].count));
    std::printf("| variant | perplexity | vs float32 | KLD | top-1 agreement |\n|---|---|---|---|---|\n");
    std::printf("| float32 | %.4f | — | — | — |\n", ppl32);
    for (size_t i = 0; i < variants.size(); ++i) {
        const Score& s = scores[i + 1];
        const double ppl = std::exp(s.nll / double(s.count));
        std::printf("| %s | %.4f | %+.2f%% | %.5f | %.4f |\n", variants[i].name.c_str(), ppl, 100.0 * (ppl / ppl32 - 1.0),
                    s.kld / double(s.count), double(s.agree) / double(s.count));
    }
    return 0;
}

// ---- command line ----------------------------------------------------------

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "%s\nusage: llama MODEL_DIR [--prompt TEXT] [--tokens N] [--threshold T]\n"
                 "             [--row-scale bitsandbytes|int8-part] [--precision both|int8|float32] [--int8-head]\n"
                 "       llama MODEL_DIR --eval TEXT_FILE [--window N] [--max-tokens N]\n"
                 "                       [--calibrate TEXT_FILE [--calibration-tokens N]]\n"
                 "       llama MODEL_DIR --calibrate TEXT_FILE [--calibration-out FILE] [--smoothing-out FILE]\n"
                 "                       [--calibration-tokens N]\n"
                 "       llama MODEL_DIR --smooth FILE [any run above but --calibrate]\n"
                 "       llama MODEL_DIR --tokenize TEXT_FILE\n"
                 "       mpirun -np W llama-mpi MODEL_DIR --tensor-parallel [--prompt TEXT] [--tokens N] ...\n"
                 "  generation also takes --prompt-file FILE, --prompt-tokens N, --threads N, --logits-out FILE\n",
                 why);
    std::exit(2);
}

size_t to_size(const std::string& s, const char* flag) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end || v == 0) usage((std::string(flag) + " takes a positive whole number").c_str());
    return size_t(v);
}

}  // namespace

int main(int argc, char** argv) {
#ifdef LLMINT8_ENGINE_MPI
    Mpi collectives(&argc, &argv);
#else
    OneProcess collectives;
#endif
    if (argc < 2 || argv[1][0] == '-') usage("no model folder given");
    const std::string dir = argv[1];
    std::string prompt = "The capital of France is", eval_path, tokenize_path, calibrate_path, calibration_out,
                smoothing_out, smooth_path, precision, prompt_file, logits_out;
    size_t steps = 24, window = 1024, max_tokens = 0, calibration_tokens = 2048, prompt_tokens = 0, threads = 0;
    float threshold = LLMINT8_DEFAULT_THRESHOLD;
    llmint8::RowScale row_scale = llmint8::RowScale::Int8Part;
    bool int8_head = false, tensor_parallel = false;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--int8-head" || a == "--tensor-parallel") {  // the options without a value
            (a == "--int8-head" ? int8_head : tensor_parallel) = true;
            continue;
        }
        if (i + 1 >= argc) usage(("missing the value of " + a).c_str());
        const std::string v = argv[++i];
        if (a == "--prompt") prompt = v;
        else if (a == "--prompt-file") prompt_file = v;
        else if (a == "--prompt-tokens") prompt_tokens = to_size(v, "--prompt-tokens");
        else if (a == "--threads") threads = to_size(v, "--threads");
        else if (a == "--logits-out") logits_out = v;
        else if (a == "--tokens") steps = to_size(v, "--tokens");
        else if (a == "--eval") eval_path = v;
        else if (a == "--tokenize") tokenize_path = v;
        else if (a == "--calibrate") calibrate_path = v;
        else if (a == "--calibration-out") calibration_out = v;
        else if (a == "--smoothing-out") smoothing_out = v;
        else if (a == "--smooth") smooth_path = v;
        else if (a == "--calibration-tokens") calibration_tokens = to_size(v, "--calibration-tokens");
        else if (a == "--window") window = to_size(v, "--window");
        else if (a == "--max-tokens") max_tokens = to_size(v, "--max-tokens");
        else if (a == "--threshold") threshold = std::stof(v);
        else if (a == "--precision" && (v == "both" || v == "int8" || v == "float32")) precision = v;
        else if (a == "--row-scale" && v == "bitsandbytes") row_scale = llmint8::RowScale::BitsAndBytes;
        else if (a == "--row-scale" && v == "int8-part") row_scale = llmint8::RowScale::Int8Part;
        else usage(("unknown option or value: " + a + " " + v).c_str());
    }
    const bool generation = eval_path.empty() && calibrate_path.empty() && tokenize_path.empty();
    if (!generation && (!prompt_file.empty() || prompt_tokens || !logits_out.empty()))
        usage("--prompt-file, --prompt-tokens and --logits-out are for generation");
    const bool parallel = tensor_parallel || collectives.world() > 1;
    if (collectives.world() > 1 && !tensor_parallel)
        usage(("an MPI world of " + std::to_string(collectives.world()) + " processes: give --tensor-parallel").c_str());
    if (parallel && (!generation || !smooth_path.empty() || (!precision.empty() && precision != "int8")))
        usage("--tensor-parallel runs LLM.int8() generation: no --eval, --calibrate, --tokenize, --smooth or float32");
    if (precision.empty()) precision = parallel ? "int8" : "both";
    try {
        llmint8::Context ctx(llmint8::Backend::Cpu);
        // The ranks on one machine share its cores.
        if (threads || collectives.local_world() > 1) {
            if (!threads) threads = std::max<size_t>(1, std::thread::hardware_concurrency() / collectives.local_world());
            ctx.set_num_threads(threads);
        }
        Pool pool(threads ? threads : std::max(1u, std::thread::hardware_concurrency()));
        Tokenizer tok(json::parse(read_file(dir + "/tokenizer.json")));
        if (!tokenize_path.empty()) {  // the token ids of a file, for checking the tokenizer
            for (int32_t id : tok.encode(read_file(tokenize_path))) std::printf("%d\n", id);
            return 0;
        }
        const bool eval = !eval_path.empty(), calibrate_only = !calibration_out.empty() || !smoothing_out.empty();
        if (calibrate_only && (eval || calibrate_path.empty()))
            usage("--calibration-out and --smoothing-out take --calibrate TEXT_FILE and no --eval");
        if (!smooth_path.empty() && !calibrate_path.empty())
            usage("--smooth runs with vectors already calibrated: give it without --calibrate");
        const bool full = eval || calibrate_only;
        const bool want_f32 = full || precision != "int8", want_int8 = full || precision != "float32";
        auto t0 = std::chrono::steady_clock::now();
        Model model(dir, want_f32, want_int8, ctx, pool, collectives, parallel);
        const Config& c = model.config();
        const bool root = collectives.rank() == 0;  // the rank that prints the text and writes files
        if (root)
            std::printf("%s: %zu layers, hidden %zu, %zu/%zu heads, vocabulary %zu; loaded in %.1f s\n", dir.c_str(),
                        c.layers, c.hidden, c.heads, c.kv_heads, c.vocab,
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        auto calibrate = [&] {
            std::vector<int32_t> ids = tok.encode(read_file(calibrate_path));
            if (ids.size() > calibration_tokens) ids.resize(calibration_tokens);
            const uint64_t bytes = model.calibrate(dir, ids, window, 6.0f);
            std::printf("calibration: %zu tokens of %s; the outlier columns seen kept in 16-bit, %.2f MiB\n",
                        ids.size(), calibrate_path.c_str(), double(bytes) / 1048576.0);
        };
        // SmoothQuant inside LLM.int8(): α per group of layers from the calibration.
        auto smooth = [&] {
            const std::vector<float> alphas = model.smooth();
            std::string histogram;
            for (size_t i = 0; i <= std::size(Model::kAlphas); ++i) {
                const float a = i == 0 ? -1.0f : Model::kAlphas[i - 1];
                const long n = std::count(alphas.begin(), alphas.end(), a);
                char part[48];
                std::snprintf(part, sizeof part, "%s%s %ld", histogram.empty() ? "" : ", ",
                              a < 0 ? "none" : std::to_string(a).substr(0, 3).c_str(), n);
                histogram += part;
            }
            std::printf("smoothing: α chosen per group of layers sharing an input (of %zu): %s\n", alphas.size(),
                        histogram.c_str());
        };
        auto write = [](const std::string& path, const std::string& text, const char* what) {
            std::ofstream file(path);
            file << text;
            if (!file.flush()) throw std::runtime_error("cannot write " + path);
            std::printf("wrote the %s to %s\n", what, path.c_str());
        };
        if (calibrate_only) {
            calibrate();
            if (!calibration_out.empty()) write(calibration_out, model.calibration_json(), "calibrated columns");
            if (!smoothing_out.empty()) {
                smooth();
                write(smoothing_out, model.smoothing_json(), "smoothing vectors");
            }
            return 0;
        }
        if (!smooth_path.empty())
            std::printf("smoothing: %zu layers smoothed by %s\n", model.smooth_from(dir, smooth_path), smooth_path.c_str());
        if (eval) {
            std::vector<Variant> variants = {
                {"LLM.int8() threshold 0", true, 0.0f, llmint8::RowScale::BitsAndBytes},
                {"LLM.int8() threshold 6, bitsandbytes' row scale", true, 6.0f, llmint8::RowScale::BitsAndBytes},
                {"LLM.int8() threshold 6, int8-part row scale", true, 6.0f, llmint8::RowScale::Int8Part}};
            Variant head{"LLM.int8() threshold 6, int8-part row scale, int8 output head", true, 6.0f,
                         llmint8::RowScale::Int8Part};
            head.int8_head = true;
            model.quantize_head();
            variants.push_back(head);
            if (!calibrate_path.empty()) {
                calibrate();
                Variant kept{"LLM.int8() threshold 6, int8-part row scale, calibrated 16-bit columns", true, 6.0f,
                             llmint8::RowScale::Int8Part};
                kept.kept = true;
                variants.push_back(kept);
                smooth();
                const auto part = llmint8::RowScale::Int8Part;
                const std::tuple<const char*, float, Smoothing> smoothed[] = {
                    {"SmoothQuant W8A8: smoothing α 0.5, threshold 0", 0.0f, Smoothing::Half},
                    {"smoothing α 0.5, LLM.int8() threshold 6, int8-part row scale", 6.0f, Smoothing::Half},
                    {"smoothing α 0.5, each layer its own vector, LLM.int8() threshold 6, int8-part row scale", 6.0f,
                     Smoothing::HalfAlone},
                    {"smoothing α per group, LLM.int8() threshold 6, int8-part row scale", 6.0f, Smoothing::Tuned},
                    {"smoothing α per layer, each layer its own vector, LLM.int8() threshold 6, int8-part row scale",
                     6.0f, Smoothing::TunedAlone},
                    {"smoothing α per layer, each layer its own vector, LLM.int8() threshold 6, int8-part row scale, "
                     "calibrated 16-bit columns",
                     6.0f, Smoothing::TunedAloneKept}};
                for (const auto& [name, t, which] : smoothed) {
                    Variant v{name, true, t, part};
                    v.smoothing = which;
                    variants.push_back(v);
                }
            }
            model.quantize_q8_0();
            Variant q8{"llama.cpp Q8_0 (blocks of 32 along K, weights and activations), float64 emulation"};
            q8.q8_0 = true;
            variants.push_back(q8);
            return evaluate(model, tok, eval_path, window, max_tokens, variants);
        }
        const auto [f32_bytes, int8_bytes] = model.linear_bytes();
        std::vector<std::pair<Variant, uint64_t>> runs;
        if (want_f32) runs.push_back({Variant{"float32"}, f32_bytes});
        uint64_t head_f32 = 0, head_int8 = 0;
        if (want_int8) {
            char name[112];
            std::snprintf(name, sizeof name, "LLM.int8() (threshold %g, %s row scale%s)", double(threshold),
                          row_scale == llmint8::RowScale::Int8Part ? "int8-part" : "bitsandbytes'",
                          int8_head ? ", int8 output head" : "");
            Variant variant{name, true, threshold, row_scale};
            variant.int8_head = int8_head;
            if (int8_head) std::tie(head_f32, head_int8) = model.quantize_head();
            runs.push_back({variant, int8_bytes});
        }
        if (parallel) {  // every rank: its decoder bytes (rank 0 prints the whole model's in a world of one)
            std::printf("tensor parallel rank %zu of %zu: decoder weights %.3f MiB, %zu of %zu heads, %zu of %zu "
                        "hidden features\n",
                        collectives.rank(), collectives.world(), double(int8_bytes) / 1048576.0, model.shard().heads(),
                        c.heads, model.shard().intermediate(), c.intermediate);
            std::fflush(stdout);
        }
        std::vector<int32_t> ids = tok.encode(prompt_file.empty() ? prompt : read_file(prompt_file));
        if (prompt_tokens) {
            if (ids.size() < prompt_tokens)
                throw std::runtime_error("the prompt has " + std::to_string(ids.size()) + " tokens, fewer than --prompt-tokens");
            ids.resize(prompt_tokens);
        }
        const std::string prompt_text = prompt_tokens || !prompt_file.empty() ? tok.decode(ids) : prompt;
        for (const auto& [variant, bytes] : runs) {
            Generation g = generate(model, tok, prompt_text, ids, steps, variant, !logits_out.empty());
            if (!root) continue;
            char decode[48] = "no decode step";  // --tokens 1: the prompt alone
            if (g.decoded) std::snprintf(decode, sizeof decode, "%.1f tokens/s", double(g.decoded) / g.decode_seconds);
            std::printf("%s: %s, prompt %zu tokens at %.1f tokens/s, decoder weights %.1f MiB", variant.name.c_str(),
                        decode, g.prompt_tokens, double(g.prompt_tokens) / g.prompt_seconds, double(bytes) / 1048576.0);
            if (variant.int8_head)
                std::printf(", output head %.1f MiB (float32: %.1f MiB)", double(head_int8) / 1048576.0,
                            double(head_f32) / 1048576.0);
            std::printf("\n");
            std::string indented = "| " + g.text;  // the text, each line marked
            for (size_t at = 0; (at = indented.find('\n', at)) != std::string::npos; at += 3) indented.replace(at, 1, "\n| ");
            std::printf("%s\n", indented.c_str());
            if (!logits_out.empty()) {  // the last run's (one run under --precision int8 or float32)
                std::ofstream file(logits_out, std::ios::binary);
                file.write(reinterpret_cast<const char*>(g.logits.data()), std::streamsize(g.logits.size() * sizeof(float)));
                if (!file.flush()) throw std::runtime_error("cannot write " + logits_out);
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "llama: %s\n", e.what());
#ifdef LLMINT8_ENGINE_MPI
        // The other ranks would wait for this one in their next collective.
        if (collectives.world() > 1) Mpi::abort(1);
#endif
        return 1;
    }
    return 0;
}
