// llmint8.hpp — header-only C++17 binding of libllmint8 (include/llmint8.h).
//
// RAII handles (std::unique_ptr with the matching destroy function), errors as
// llmint8::Error exceptions carrying the status and the library's message,
// typed overloads for float and raw 16-bit storage (llmint8::Half for IEEE
// float16 bits, llmint8::BFloat16 for bfloat16 bits), and pointer-and-size or
// std::vector inputs. Matrices are row-major, as in the C API.
//
// Thread safety follows the C API: a Context and a Weight may be used from many
// threads at once; moving from or destroying one while another thread uses it
// is not allowed. Using a moved-from handle throws llmint8::Error
// (LLMINT8_ERR_INVALID_ARGUMENT), it never crashes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmint8.h"

namespace llmint8 {

/// Raw IEEE float16 bits.
struct Half {
    uint16_t bits;
};
/// Raw bfloat16 bits.
struct BFloat16 {
    uint16_t bits;
};
static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2, "16-bit element types must be 2 bytes");

enum class Backend : int32_t { Auto = LLMINT8_BACKEND_AUTO, Cpu = LLMINT8_BACKEND_CPU, Cuda = LLMINT8_BACKEND_CUDA };
/// Which values set an activation row's scale when outliers are decomposed (llmint8_context_set_row_scale;
/// default Int8Part, match_bitsandbytes() sets BitsAndBytes).
enum class RowScale : int32_t { BitsAndBytes = LLMINT8_ROW_SCALE_BITSANDBYTES, Int8Part = LLMINT8_ROW_SCALE_INT8_PART };

/// A failed llmint8 call: the status code and the library's message.
class Error : public std::runtime_error {
public:
    Error(int32_t status, const std::string& message) : std::runtime_error(describe(status, message)), status_(status) {}
    int32_t status() const noexcept { return status_; }
    const char* status_name() const noexcept { return llmint8_status_name(status_); }

private:
    // The library's messages already start with the status name; the binding's own do not.
    static std::string describe(int32_t status, const std::string& message) {
        std::string name = llmint8_status_name(status);
        return message.compare(0, name.size(), name) == 0 ? message : name + ": " + message;
    }
    int32_t status_;
};

/// What a matmul reports besides its output.
struct MatmulStats {
    uint64_t outlier_columns = 0;
};

namespace detail {
inline void check(int32_t status) {
    if (status != LLMINT8_OK) throw Error(status, llmint8_last_error());
}
inline void require(bool ok, int32_t status, const char* message) {
    if (!ok) throw Error(status, message);
}
struct ContextDelete {
    void operator()(llmint8_context* c) const noexcept { llmint8_context_destroy(c); }
};
struct WeightDelete {
    void operator()(llmint8_weight* w) const noexcept { llmint8_weight_destroy(w); }
};
struct CheckpointDelete {
    void operator()(llmint8_checkpoint* c) const noexcept { llmint8_checkpoint_destroy(c); }
};
template <typename T>
inline constexpr bool unsupported_element = false;
template <typename T>
struct DTypeOf {
    static_assert(unsupported_element<T>,
                  "llmint8: the element type must be float, llmint8::Half or llmint8::BFloat16 (convert other types first)");
};
template <>
struct DTypeOf<float> {
    static constexpr int32_t value = LLMINT8_F32;
};
template <>
struct DTypeOf<Half> {
    static constexpr int32_t value = LLMINT8_F16;
};
template <>
struct DTypeOf<BFloat16> {
    static constexpr int32_t value = LLMINT8_BF16;
};
}  // namespace detail

class Context;

/// A quantized weight [out_features, in_features] (int8 + one scale per row + bias).
/// Immutable; copy-free to move; freed when the last owner goes away.
class Weight {
public:
    size_t out_features() const { return shape().first; }
    size_t in_features() const { return shape().second; }
    /// Bytes this weight holds in host and in device memory (what an engine
    /// budgets for the layer; a CPU weight's device bytes are 0).
    struct Memory {
        uint64_t host_bytes = 0, device_bytes = 0;
    };
    Memory memory() const {
        Memory m;
        detail::check(llmint8_weight_memory(live(), &m.host_bytes, &m.device_bytes));
        return m;
    }

    /// bitsandbytes' layout: row-major CB [out, in] and SCB [out].
    void export_int8(std::vector<int8_t>& cb, std::vector<float>& scb) const {
        auto [out, in] = shape();
        cb.resize(out * in);
        scb.resize(out);
        detail::check(llmint8_weight_export(live(), cb.data(), scb.data()));
    }

    /// The smoothing vector s the weight was made with (SmoothQuant's; its int8
    /// values are those of W·diag(s) and every matmul divides the activations
    /// by s), or an empty vector for an unsmoothed weight.
    std::vector<float> smoothing() const {
        int32_t smoothed = 0;
        std::vector<float> s(in_features());
        detail::check(llmint8_weight_smoothing(live(), s.data(), s.size(), &smoothed));
        if (!smoothed) s.clear();
        return s;
    }

    /// Writes this weight to a safetensors file as transformers + bitsandbytes save
    /// a Linear8bitLt: PREFIX.weight (int8), PREFIX.SCB, PREFIX.weight_format (+ PREFIX.bias).
    void save_safetensors(const std::string& path, const std::string& prefix) const {
        detail::check(llmint8_weight_save_safetensors(live(), path.c_str(), prefix.c_str()));
    }

    const llmint8_weight* get() const noexcept { return handle_.get(); }
    /// The handle; throws llmint8::Error (LLMINT8_ERR_INVALID_ARGUMENT) when this
    /// weight was moved from.
    llmint8_weight* live() const {
        detail::require(handle_ != nullptr, LLMINT8_ERR_INVALID_ARGUMENT, "this llmint8::Weight was moved from");
        return handle_.get();
    }

private:
    friend class Context;
    explicit Weight(llmint8_weight* w) : handle_(w) {}
    std::pair<size_t, size_t> shape() const {
        size_t out = 0, in = 0;
        detail::check(llmint8_weight_shape(live(), &out, &in));
        return {out, in};
    }
    std::unique_ptr<llmint8_weight, detail::WeightDelete> handle_;
};

/// What a checkpoint tensor is for (LLMINT8_KIND_*).
enum class TensorKind : int32_t {
    Other = LLMINT8_KIND_OTHER,
    LinearWeight = LLMINT8_KIND_LINEAR_WEIGHT,
    Int8Weight = LLMINT8_KIND_INT8_WEIGHT,
    Int8Scales = LLMINT8_KIND_INT8_SCALES,
    WeightFormat = LLMINT8_KIND_WEIGHT_FORMAT,
    Bias = LLMINT8_KIND_BIAS,
    KeptColumns = LLMINT8_KIND_KEPT_COLUMNS,
    KeptValues = LLMINT8_KIND_KEPT_VALUES,
};

/// One tensor of a checkpoint (copied out of the C struct).
struct TensorInfo {
    std::string name;
    std::string dtype_name;  // as the file spells it: "F16", "I8", ...
    std::string file;
    int32_t dtype = 0;  // LLMINT8_TENSOR_*
    TensorKind kind = TensorKind::Other;
    std::vector<uint64_t> shape;
    uint64_t num_bytes = 0;
    /// The layer name llmint8::Context::load takes: the name without ".weight".
    std::string prefix() const { return name.substr(0, name.rfind('.')); }
};

/// An open safetensors file, shard index or model directory (memory-mapped,
/// read-only). May be used from many threads at once.
class Checkpoint {
public:
    explicit Checkpoint(const std::string& path) {
        llmint8_checkpoint* c = nullptr;
        detail::check(llmint8_checkpoint_open(path.c_str(), &c));
        handle_.reset(c);
    }
    size_t size() const {
        size_t n = 0;
        detail::check(llmint8_checkpoint_num_tensors(live(), &n));
        return n;
    }
    TensorInfo tensor(size_t index) const {
        llmint8_tensor_info info{};
        detail::check(llmint8_checkpoint_tensor_info(live(), index, &info));
        TensorInfo t;
        t.name = info.name;
        t.dtype_name = info.dtype_name;
        t.file = info.file;
        t.dtype = info.dtype;
        t.kind = static_cast<TensorKind>(info.kind);
        t.shape.assign(info.shape, info.shape + (info.ndim < LLMINT8_MAX_DIMS ? info.ndim : LLMINT8_MAX_DIMS));
        t.num_bytes = info.num_bytes;
        return t;
    }
    /// Every tensor, sorted by name.
    std::vector<TensorInfo> tensors() const {
        std::vector<TensorInfo> all;
        for (size_t i = 0, n = size(); i < n; ++i) all.push_back(tensor(i));
        return all;
    }
    /// The index of the tensor called `name`, or nothing.
    std::optional<size_t> find(const std::string& name) const {
        size_t index = 0;
        int32_t status = llmint8_checkpoint_find(live(), name.c_str(), &index);
        if (status == LLMINT8_ERR_NOT_FOUND) return std::nullopt;
        detail::check(status);
        return index;
    }
    /// The raw little-endian bytes of tensor `index`, as stored.
    std::vector<uint8_t> read(size_t index) const {
        std::vector<uint8_t> bytes(tensor(index).num_bytes);
        detail::check(llmint8_checkpoint_read(live(), index, bytes.data(), bytes.size()));
        return bytes;
    }

    const llmint8_checkpoint* get() const noexcept { return handle_.get(); }
    /// The handle; throws llmint8::Error (LLMINT8_ERR_INVALID_ARGUMENT) when this
    /// checkpoint was moved from.
    llmint8_checkpoint* live() const {
        detail::require(handle_ != nullptr, LLMINT8_ERR_INVALID_ARGUMENT, "this llmint8::Checkpoint was moved from");
        return handle_.get();
    }

private:
    std::unique_ptr<llmint8_checkpoint, detail::CheckpointDelete> handle_;
};

/// A backend instance (CPU in this version; Auto picks it).
class Context {
public:
    explicit Context(Backend backend = Backend::Auto, int32_t device = 0) {
        llmint8_context* c = nullptr;
        detail::check(llmint8_context_create(static_cast<int32_t>(backend), device, &c));
        handle_.reset(c);
    }

    Backend backend() const {
        int32_t b = 0;
        detail::check(llmint8_context_backend(live(), &b));
        return static_cast<Backend>(b);
    }
    void set_num_threads(size_t n) { detail::check(llmint8_context_set_num_threads(live(), n)); }
    size_t num_threads() const {
        size_t n = 0;
        detail::check(llmint8_context_num_threads(live(), &n));
        return n;
    }
    /// true: round inputs to float16 before quantizing, as bitsandbytes' Linear8bitLt does.
    void set_round_inputs_to_f16(bool on) {
        detail::check(llmint8_context_set_input_rounding(live(), on ? LLMINT8_INPUT_ROUND_F16 : LLMINT8_INPUT_EXACT));
    }
    void set_row_scale(RowScale rule) { detail::check(llmint8_context_set_row_scale(live(), static_cast<int32_t>(rule))); }
    RowScale row_scale() const {
        int32_t r = 0;
        detail::check(llmint8_context_row_scale(live(), &r));
        return static_cast<RowScale>(r);
    }
    /// bitsandbytes' input rounding and row scale together (llmint8_context_match_bitsandbytes).
    void match_bitsandbytes() { detail::check(llmint8_context_match_bitsandbytes(live())); }

    /// Quantizes a row-major [out_features, in_features] weight; bias is nullptr or [out_features].
    template <typename T>
    Weight quantize(const T* w, size_t out_features, size_t in_features, const T* bias = nullptr) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_quantize(live(), w, detail::DTypeOf<T>::value, out_features, in_features, bias,
                                              detail::DTypeOf<T>::value, &h));
        return Weight(h);
    }
    template <typename T>
    Weight quantize(const std::vector<T>& w, size_t out_features, size_t in_features, const std::vector<T>& bias = {}) {
        detail::require(w.size() == out_features * in_features, LLMINT8_ERR_SHAPE,
                        "weight vector size differs from out_features * in_features");
        detail::require(bias.empty() || bias.size() == out_features, LLMINT8_ERR_SHAPE,
                        "bias vector size differs from out_features");
        return quantize(w.data(), out_features, in_features, bias.empty() ? nullptr : bias.data());
    }

    /// quantize(), the weight also keeping the columns `keep` of `w` in T for the
    /// outlier product (the paper's 16-bit outlier weights; on a CUDA context
    /// they go to the device with the int8 values).
    template <typename T>
    Weight quantize_keep(const T* w, size_t out_features, size_t in_features, const std::vector<uint32_t>& keep,
                         const T* bias = nullptr) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_quantize_keep(live(), w, detail::DTypeOf<T>::value, out_features, in_features,
                                                   bias, detail::DTypeOf<T>::value, keep.data(), keep.size(), &h));
        return Weight(h);
    }

    /// CUDA: quantizes a row-major [out_features, in_features] weight already in
    /// the context's device memory (`w_device` a device pointer), on the device;
    /// `bias` nullptr or *host* memory of out_features elements. Waits for it.
    template <typename T>
    Weight quantize_device(const T* w_device, size_t out_features, size_t in_features, const T* bias = nullptr) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_quantize_device(live(), w_device, detail::DTypeOf<T>::value, out_features,
                                                     in_features, bias, detail::DTypeOf<T>::value, &h));
        return Weight(h);
    }

    /// Takes bitsandbytes' CB (row-major int8) and SCB as they are (copied).
    Weight from_int8(const std::vector<int8_t>& cb, const std::vector<float>& scb, size_t in_features,
                     const std::vector<float>& bias = {}) {
        detail::require(in_features > 0 && cb.size() == scb.size() * in_features, LLMINT8_ERR_SHAPE,
                        "CB size differs from SCB size * in_features");
        detail::require(bias.empty() || bias.size() == scb.size(), LLMINT8_ERR_SHAPE, "bias size differs from SCB size");
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_from_int8(live(), cb.data(), scb.data(), scb.size(), in_features,
                                               bias.empty() ? nullptr : bias.data(), LLMINT8_F32, &h));
        return Weight(h);
    }

    /// Loads the linear layer `prefix` of an open checkpoint: quantized when
    /// 16/32-bit, taken as it is when bitsandbytes' int8 (+ SCB); with its bias.
    Weight load(const Checkpoint& checkpoint, const std::string& prefix) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_load(live(), checkpoint.live(), prefix.c_str(), &h));
        return Weight(h);
    }
    /// Output rows [row_begin, row_end) of the layer `prefix`: one rank's shard
    /// of a column-parallel layer, reading only those rows; the ranks' outputs
    /// side by side are the whole layer's bit for bit. Throws Error(SHAPE) for
    /// an empty range or one past out_features.
    Weight load_rows(const Checkpoint& checkpoint, const std::string& prefix, std::size_t row_begin,
                     std::size_t row_end) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_load_rows(live(), checkpoint.live(), prefix.c_str(), row_begin, row_end, &h));
        return Weight(h);
    }
    /// Input columns [col_begin, col_end) of the layer `prefix`: one rank's shard
    /// of a row-parallel layer (o_proj, down_proj), each row's scale from the
    /// whole row; the shard starting at column 0 carries the bias. For
    /// row_parallel_statistics and matmul_row_parallel. Throws Error(SHAPE)
    /// for an empty range or one past in_features.
    Weight load_columns(const Checkpoint& checkpoint, const std::string& prefix, std::size_t col_begin,
                        std::size_t col_end) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_load_columns(live(), checkpoint.live(), prefix.c_str(), col_begin, col_end, &h));
        return Weight(h);
    }
    /// Columns [col_begin, col_end) of the whole row-major [out_features,
    /// in_features] weight `w` as a row-parallel shard (each row's scale from
    /// the whole row); `keep` are columns of the whole weight; give `bias` to one rank only.
    template <typename T>
    Weight quantize_columns(const T* w, size_t out_features, size_t in_features, size_t col_begin, size_t col_end,
                            const T* bias = nullptr, const std::vector<uint32_t>& keep = {}) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_quantize_columns(live(), w, detail::DTypeOf<T>::value, out_features, in_features,
                                                      col_begin, col_end, bias, detail::DTypeOf<T>::value,
                                                      keep.data(), keep.size(), &h));
        return Weight(h);
    }
    /// The row-major [out_features, in_features] weight `w` smoothed by
    /// `smoothing` (SmoothQuant's s, in_features factors, each finite and > 0):
    /// the int8 values of W·diag(s), every matmul dividing the activations by s
    /// before quantizing them. Weights sharing an input (matmul_shared_input)
    /// must share one vector. `keep`: columns kept as float32 of W·diag(s);
    /// `col_begin`/`col_end` other than 0/in_features give a row-parallel shard.
    /// Throws Error(INVALID_ARGUMENT) for a bad vector.
    template <typename T>
    Weight quantize_smoothed(const T* w, size_t out_features, size_t in_features, const std::vector<float>& smoothing,
                             const T* bias = nullptr, const std::vector<uint32_t>& keep = {}, size_t col_begin = 0,
                             size_t col_end = SIZE_MAX) {
        if (smoothing.size() != in_features)
            throw Error(LLMINT8_ERR_INVALID_ARGUMENT, "the smoothing vector needs in_features values");
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_quantize_smoothed(
            live(), w, detail::DTypeOf<T>::value, out_features, in_features, smoothing.data(), col_begin,
            col_end == SIZE_MAX ? in_features : col_end, bias, detail::DTypeOf<T>::value, keep.data(), keep.size(), &h));
        return Weight(h);
    }
    /// The same from a path (file, shard index or model directory), for one layer.
    Weight load_safetensors(const std::string& path, const std::string& prefix) {
        llmint8_weight* h = nullptr;
        detail::check(llmint8_weight_load_safetensors(live(), path.c_str(), prefix.c_str(), &h));
        return Weight(h);
    }

    /// y [rows, out] = x [rows, in] · Wᵀ + b with LLM.int8(); threshold 0 turns the
    /// outlier decomposition off. `x` and `y` are in the context's memory: host
    /// memory on the CPU, device memory on CUDA (the work is queued on the
    /// context's stream; with `stats` non-null the call waits for the count).
    template <typename X, typename Y>
    void matmul(const Weight& w, const X* x, size_t rows, Y* y, float threshold = LLMINT8_DEFAULT_THRESHOLD,
                MatmulStats* stats = nullptr) {
        llmint8_matmul_stats s{};
        detail::check(llmint8_matmul(live(), w.live(), x, detail::DTypeOf<X>::value, rows, threshold, y,
                                     detail::DTypeOf<Y>::value, stats ? &s : nullptr));
        if (stats) *stats = MatmulStats{s.outlier_columns};
    }

    /// The same on host memory whatever the backend (a CUDA context copies x up
    /// and y back, and waits).
    template <typename X, typename Y>
    MatmulStats matmul_host(const Weight& w, const X* x, size_t rows, Y* y,
                            float threshold = LLMINT8_DEFAULT_THRESHOLD) {
        llmint8_matmul_stats stats{};
        detail::check(llmint8_matmul_host(live(), w.live(), x, detail::DTypeOf<X>::value, rows, threshold, y,
                                          detail::DTypeOf<Y>::value, &stats));
        return MatmulStats{stats.outlier_columns};
    }

    /// y[i] [rows, out_i] = x [rows, in] · W[i]ᵀ + b[i] for weights that share
    /// their input (q/k/v, gate/up): x is quantized and its outlier columns
    /// found once; each y[i] is bit for bit what matmul(*w[i], x, rows, y[i])
    /// writes. Every weight has the same in_features. Memory as matmul.
    template <typename X, typename Y>
    void matmul_shared_input(const std::vector<const Weight*>& w, const X* x, size_t rows, const std::vector<Y*>& y,
                             float threshold = LLMINT8_DEFAULT_THRESHOLD, MatmulStats* stats = nullptr) {
        if (w.size() != y.size())
            throw Error(LLMINT8_ERR_INVALID_ARGUMENT,
                        std::to_string(w.size()) + " weights but " + std::to_string(y.size()) + " outputs");
        std::vector<const llmint8_weight*> handles;
        for (const Weight* p : w) handles.push_back(p ? p->live() : nullptr);
        std::vector<void*> outs(y.begin(), y.end());
        llmint8_matmul_stats s{};
        detail::check(llmint8_matmul_shared_input(live(), handles.data(), handles.size(), x, detail::DTypeOf<X>::value,
                                                  rows, threshold, outs.data(), detail::DTypeOf<Y>::value,
                                                  stats ? &s : nullptr));
        if (stats) *stats = MatmulStats{s.outlier_columns};
    }

    /// Row-parallel stage 1: row_absmax [rows] (float) gets this rank's
    /// statistics of its slice x [rows, in_features of w]; all-reduce them with
    /// MAX (ncclMax) across the ranks, then call matmul_row_parallel. Memory as
    /// matmul (device pointers on CUDA, queued; `stats` non-null waits).
    template <typename X>
    void row_parallel_statistics(const Weight& w, const X* x, size_t rows, float* row_absmax,
                                 float threshold = LLMINT8_DEFAULT_THRESHOLD, MatmulStats* stats = nullptr) {
        llmint8_matmul_stats s{};
        detail::check(llmint8_row_parallel_statistics(live(), w.live(), x, detail::DTypeOf<X>::value, rows, threshold,
                                                      row_absmax, stats ? &s : nullptr));
        if (stats) *stats = MatmulStats{s.outlier_columns};
    }
    /// Row-parallel stage 2: this rank's partial y [rows, out_features] with the
    /// MAX'd row_absmax; all-reduce the partials with SUM (ncclSum). Float
    /// partials keep the stated bound (llmint8.h). Memory as matmul.
    template <typename X, typename Y>
    void matmul_row_parallel(const Weight& w, const X* x, size_t rows, const float* row_absmax, Y* y,
                             float threshold = LLMINT8_DEFAULT_THRESHOLD, MatmulStats* stats = nullptr) {
        llmint8_matmul_stats s{};
        detail::check(llmint8_matmul_row_parallel(live(), w.live(), x, detail::DTypeOf<X>::value, rows, threshold,
                                                  row_absmax, y, detail::DTypeOf<Y>::value, stats ? &s : nullptr));
        if (stats) *stats = MatmulStats{s.outlier_columns};
    }

    /// CUDA: later work goes to `stream` (a cudaStream_t of the context's device).
    void set_stream(void* stream) { detail::check(llmint8_context_set_stream(live(), stream)); }
    /// CUDA: reserves scratch for every matmul of up to `rows` rows, in_features
    /// up to `in_features` and out_features up to `out_features`, so that such
    /// calls on device memory can be captured in a CUDA graph (nothing to do on the CPU).
    void reserve(size_t rows, size_t in_features, size_t out_features) {
        detail::check(llmint8_context_reserve(live(), rows, in_features, out_features));
    }
    /// Waits for the work this context queued (nothing to do on the CPU).
    void synchronize() { detail::check(llmint8_context_synchronize(live())); }

    /// The same with vectors: rows = x.size() / in_features; returns float y [rows, out].
    template <typename X>
    std::vector<float> matmul(const Weight& w, const std::vector<X>& x, float threshold = LLMINT8_DEFAULT_THRESHOLD,
                              MatmulStats* stats = nullptr) {
        const size_t in = w.in_features(), out = w.out_features();
        if (x.size() % in != 0)
            throw Error(LLMINT8_ERR_SHAPE, "x holds " + std::to_string(x.size()) +
                                               " values, not a multiple of in_features = " + std::to_string(in));
        const size_t rows = x.size() / in;
        std::vector<float> y(rows * out);
        MatmulStats s = matmul_host(w, x.data(), rows, y.data(), threshold);
        if (stats) *stats = s;
        return y;
    }

    const llmint8_context* get() const noexcept { return handle_.get(); }
    /// The handle; throws llmint8::Error (LLMINT8_ERR_INVALID_ARGUMENT) when this
    /// context was moved from.
    llmint8_context* live() const {
        detail::require(handle_ != nullptr, LLMINT8_ERR_INVALID_ARGUMENT, "this llmint8::Context was moved from");
        return handle_.get();
    }

private:
    std::unique_ptr<llmint8_context, detail::ContextDelete> handle_;
};

inline std::string version() { return llmint8_version(); }

}  // namespace llmint8
