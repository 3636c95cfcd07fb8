// Tests of the C++ binding (bindings/cpp/llmint8.hpp); run by tests/c_abi.rs.
#include "llmint8.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

static uint16_t f16_exact(float f) {  // float16 bits of a value float16 holds exactly
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) == 0) return static_cast<uint16_t>(u >> 16);
    return static_cast<uint16_t>(((u >> 16) & 0x8000) | ((((u >> 23) & 0xff) - 112) << 10) | ((u & 0x7fffff) >> 13));
}

int main() {
    using llmint8::Error;
    CHECK(!llmint8::version().empty());
    llmint8::Context ctx;
    CHECK(ctx.backend() == llmint8::Backend::Cpu);
    ctx.set_num_threads(2);
    CHECK(ctx.num_threads() == 2);
    CHECK_THROWS(llmint8::Context(llmint8::Backend::Cuda), LLMINT8_ERR_NO_DEVICE, "libcuda");
    CHECK_THROWS(llmint8::Context(static_cast<llmint8::Backend>(7)), LLMINT8_ERR_INVALID_ARGUMENT, "backend");

    const size_t out = 5, in = 8, rows = 3;
    std::vector<float> w(out * in), bias(out), x(rows * in);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(static_cast<int>(i * 37 % 23) - 11) / 8.0f;
    for (size_t j = 0; j < out; ++j) bias[j] = 0.25f * static_cast<float>(j);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i * 13 % 17) - 8) / 4.0f;
    x[1 * in + 6] = 9.0f;  // one outlier feature
    x[0 * in + 6] = 5.0f;  // below the threshold in another row: row 0's largest value

    llmint8::Weight weight = ctx.quantize(w, out, in, bias);
    CHECK(weight.out_features() == out && weight.in_features() == in);
    const llmint8::Weight::Memory memory = weight.memory();
    CHECK(memory.host_bytes + memory.device_bytes >= out * in + 8 * out);
    if (ctx.backend() == llmint8::Backend::Cpu) {  // kept columns: the outlier column 6 multiplied by its float32 values
        llmint8::Weight kept = ctx.quantize_keep(w.data(), out, in, {6}, bias.data());
        CHECK(kept.memory().host_bytes == memory.host_bytes + 4 * out);
        std::vector<float> y_kept = ctx.matmul(kept, x), y_plain = ctx.matmul(weight, x);
        CHECK(y_kept != y_plain);
        CHECK_THROWS(ctx.quantize_keep(w.data(), out, in, {6, 6}), LLMINT8_ERR_INVALID_ARGUMENT, "twice");
    }
    llmint8::MatmulStats stats;
    std::vector<float> y = ctx.matmul(weight, x, LLMINT8_DEFAULT_THRESHOLD, &stats);
    CHECK(y.size() == rows * out);
    CHECK(stats.outlier_columns == 1);
    if (ctx.backend() == llmint8::Backend::Cpu) {  // weights sharing x: the bits of separate calls
        llmint8::Weight narrow = ctx.quantize(std::vector<float>(w.begin(), w.begin() + 2 * in), 2, in);
        std::vector<float> y0(rows * out), y1(rows * 2);
        llmint8::MatmulStats shared;
        ctx.matmul_shared_input({&weight, &narrow}, x.data(), rows, std::vector<float*>{y0.data(), y1.data()},
                                LLMINT8_DEFAULT_THRESHOLD, &shared);
        CHECK(y0 == y && y1 == ctx.matmul(narrow, x) && shared.outlier_columns == 1);
        CHECK_THROWS(ctx.matmul_shared_input({&weight}, x.data(), rows, std::vector<float*>{}), LLMINT8_ERR_INVALID_ARGUMENT,
                     "1 weights but 0 outputs");
    }
    for (size_t i = 0; i < rows; ++i) {
        for (size_t j = 0; j < out; ++j) {
            double dense = bias[j], mag = std::fabs(bias[j]);
            for (size_t c = 0; c < in; ++c) {
                dense += static_cast<double>(x[i * in + c]) * w[j * in + c];
                mag += std::fabs(static_cast<double>(x[i * in + c]) * w[j * in + c]);
            }
            CHECK(std::fabs(y[i * out + j] - dense) <= 0.02 * mag);
        }
    }

    // Raw 16-bit storage gives the same weight (the values are exact in float16).
    std::vector<llmint8::Half> wh(w.size()), xh(x.size()), biash(bias.size());
    for (size_t i = 0; i < w.size(); ++i) wh[i].bits = f16_exact(w[i]);
    for (size_t i = 0; i < x.size(); ++i) xh[i].bits = f16_exact(x[i]);
    for (size_t i = 0; i < bias.size(); ++i) biash[i].bits = f16_exact(bias[i]);
    llmint8::Weight weight16 = ctx.quantize(wh, out, in, biash);
    std::vector<int8_t> cb, cb16;
    std::vector<float> scb, scb16;
    weight.export_int8(cb, scb);
    weight16.export_int8(cb16, scb16);
    CHECK(cb == cb16 && scb == scb16);
    std::vector<float> y16 = ctx.matmul(weight16, xh);
    CHECK(y16 == y);
    std::vector<llmint8::BFloat16> ybf(rows * out);
    CHECK(ctx.matmul_host(weight, x.data(), rows, ybf.data()).outlier_columns == 1);
    llmint8::MatmulStats raw{};
    ctx.matmul(weight, x.data(), rows, ybf.data(), LLMINT8_DEFAULT_THRESHOLD, &raw);  // the context's memory: host here
    CHECK(raw.outlier_columns == 1);
    ctx.synchronize();
    ctx.reserve(16, 4096, 11008);  // nothing to reserve on the CPU
    CHECK_THROWS(ctx.reserve(0, 4096, 4096), LLMINT8_ERR_SHAPE, "rows");
    CHECK_THROWS(ctx.set_stream(nullptr), LLMINT8_ERR_UNSUPPORTED, "CUDA");
    CHECK_THROWS(ctx.quantize_device(w.data(), out, in), LLMINT8_ERR_UNSUPPORTED, "CUDA");

    // bitsandbytes' CB/SCB in, the same results out.
    llmint8::Weight again = ctx.from_int8(cb, scb, in, bias);
    CHECK(ctx.matmul(again, x) == y);
    ctx.set_round_inputs_to_f16(true);
    CHECK(ctx.matmul(again, x) == y);  // x holds float16-exact values
    ctx.set_round_inputs_to_f16(false);
    // The row scale rule: set, read back, and matched to bitsandbytes in one call.
    CHECK(ctx.row_scale() == llmint8::RowScale::Int8Part);  // the default
    ctx.match_bitsandbytes();
    CHECK(ctx.row_scale() == llmint8::RowScale::BitsAndBytes);
    CHECK(ctx.matmul(again, x) != y);  // x's outlier column holds values below the threshold too
    ctx.set_round_inputs_to_f16(false);
    ctx.set_row_scale(llmint8::RowScale::Int8Part);
    CHECK(ctx.row_scale() == llmint8::RowScale::Int8Part);
    CHECK(ctx.matmul(again, x) == y);
    CHECK_THROWS(ctx.set_row_scale(static_cast<llmint8::RowScale>(7)), LLMINT8_ERR_INVALID_ARGUMENT, "row scale");

    // Bad input is an exception, never a crash.
    CHECK_THROWS(ctx.quantize(w, out + 1, in), LLMINT8_ERR_SHAPE, "out_features");
    CHECK_THROWS(ctx.quantize(w, out, in, std::vector<float>(2)), LLMINT8_ERR_SHAPE, "bias");
    std::vector<float> wnan = w;
    wnan[3 * in + 2] = NAN;
    CHECK_THROWS(ctx.quantize(wnan, out, in), LLMINT8_ERR_INVALID_ARGUMENT, "row 3");
    CHECK_THROWS(ctx.matmul(weight, std::vector<float>(in + 1)), LLMINT8_ERR_SHAPE,
                 ("x holds " + std::to_string(in + 1) + " values, not a multiple of in_features = " + std::to_string(in)).c_str());
    CHECK_THROWS(ctx.matmul(weight, x, -1.0f), LLMINT8_ERR_INVALID_ARGUMENT, "threshold");
    CHECK_THROWS(ctx.from_int8(cb, scb, in + 1), LLMINT8_ERR_SHAPE, "CB size");
    std::vector<float> scb_bad = scb;
    scb_bad[0] = -1.0f;
    CHECK_THROWS(ctx.from_int8(cb, scb_bad, in), LLMINT8_ERR_INVALID_ARGUMENT, "SCB[0]");
    llmint8::Weight moved = std::move(weight);
    CHECK(moved.out_features() == out);
    CHECK_THROWS(weight.out_features(), LLMINT8_ERR_INVALID_ARGUMENT,  // NOLINT(bugprone-use-after-move)
                 "this llmint8::Weight was moved from");
    CHECK_THROWS(ctx.matmul(weight, x), LLMINT8_ERR_INVALID_ARGUMENT, "this llmint8::Weight was moved from");
    llmint8::Context gone = std::move(ctx);
    CHECK_THROWS(ctx.num_threads(), LLMINT8_ERR_INVALID_ARGUMENT, "this llmint8::Context was moved from");
    CHECK(gone.num_threads() >= 1);

    // Checkpoints (run from the repository root).
    {
        llmint8::Context ctx;
        llmint8::Checkpoint ck("tests/data/bnb-models/opt-f32-int8");
        size_t int8 = 0, biases = 0;
        for (const auto& t : ck.tensors()) {
            if (t.kind == llmint8::TensorKind::Int8Weight) {
                ++int8;
                llmint8::Weight lw = ctx.load(ck, t.prefix());
                CHECK(lw.out_features() == t.shape[0] && lw.in_features() == t.shape[1]);
            }
            biases += t.kind == llmint8::TensorKind::Bias;
        }
        CHECK(int8 == 12 && biases == 12);
        auto norm = ck.find("model.decoder.final_layer_norm.weight");
        CHECK(norm.has_value() && ck.read(*norm).size() == 64 * 4);
        CHECK(!ck.find("nope").has_value());
        llmint8::Weight fc = ctx.load_safetensors("tests/data/bnb-models/opt-f32-src", "model.decoder.layers.0.fc1");
        fc.save_safetensors("target/cpp-test-fc1.safetensors", "fc1");
        llmint8::Weight back = ctx.load_safetensors("target/cpp-test-fc1.safetensors", "fc1");
        std::vector<int8_t> cb1, cb2;
        std::vector<float> s1, s2;
        fc.export_int8(cb1, s1);
        back.export_int8(cb2, s2);
        CHECK(cb1 == cb2 && s1 == s2);
        std::remove("target/cpp-test-fc1.safetensors");
        CHECK_THROWS(llmint8::Checkpoint("tests/data/none"), LLMINT8_ERR_NOT_FOUND, "tests/data/none");
        CHECK_THROWS(ctx.load(ck, "model.decoder.layers.7.fc1"), LLMINT8_ERR_NOT_FOUND, "layers.7");
        // A column-parallel shard: rows 3..10 of fc1 are the whole layer's rows.
        llmint8::Weight whole = ctx.load(ck, "model.decoder.layers.0.fc1");
        llmint8::Weight shard = ctx.load_rows(ck, "model.decoder.layers.0.fc1", 3, 10);
        CHECK(shard.out_features() == 7 && shard.in_features() == whole.in_features());
        std::vector<int8_t> cbw, cbs;
        std::vector<float> sw, ss;
        whole.export_int8(cbw, sw);
        shard.export_int8(cbs, ss);
        const size_t k = whole.in_features();
        CHECK(std::equal(cbs.begin(), cbs.end(), cbw.begin() + 3 * k) && std::equal(ss.begin(), ss.end(), sw.begin() + 3));
        CHECK_THROWS(ctx.load_rows(ck, "model.decoder.layers.0.fc1", 4, 4), LLMINT8_ERR_SHAPE, "output rows");
        // A row-parallel world of two: columns [0, k/2) and [k/2, k) of fc1,
        // statistics MAX'd, partials summed: the whole layer's output within 1e-5.
        llmint8::Weight left = ctx.load_columns(ck, "model.decoder.layers.0.fc1", 0, k / 2);
        llmint8::Weight right = ctx.load_columns(ck, "model.decoder.layers.0.fc1", k / 2, k);
        CHECK(left.in_features() == k / 2 && right.in_features() == k - k / 2 && left.out_features() == whole.out_features());
        const size_t rows = 3, n = whole.out_features();
        std::vector<float> x(rows * k), xl(rows * (k / 2)), xr(rows * (k - k / 2));
        for (size_t i = 0; i < x.size(); i++) x[i] = static_cast<float>((i * 13) % 17) / 8.0f - 1.0f;
        x[7] = 11.0f;  // an outlier in the left half
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < k; c++) (c < k / 2 ? xl[r * (k / 2) + c] : xr[r * (k - k / 2) + c - k / 2]) = x[r * k + c];
        std::vector<float> y(rows * n), yl(rows * n), yr(rows * n), al(rows), ar(rows);
        ctx.matmul(whole, x.data(), rows, y.data());
        ctx.row_parallel_statistics(left, xl.data(), rows, al.data());
        ctx.row_parallel_statistics(right, xr.data(), rows, ar.data());
        for (size_t r = 0; r < rows; r++) al[r] = ar[r] = std::max(al[r], ar[r]);  // the engine's MAX
        ctx.matmul_row_parallel(left, xl.data(), rows, al.data(), yl.data());
        ctx.matmul_row_parallel(right, xr.data(), rows, ar.data(), yr.data());
        double worst = 0.0, top = 0.0;
        for (size_t i = 0; i < y.size(); i++) {
            worst = std::max(worst, std::fabs(static_cast<double>(yl[i] + yr[i]) - y[i]));
            top = std::max(top, std::fabs(static_cast<double>(y[i])));
        }
        CHECK(worst <= 1e-5 * top);
        al[0] = 0.0f;  // not a MAX: below the left slice's own
        CHECK_THROWS(ctx.matmul_row_parallel(left, xl.data(), rows, al.data(), yl.data()), LLMINT8_ERR_INVALID_ARGUMENT,
                     "row_absmax[0]");
        CHECK_THROWS(ctx.load_columns(ck, "model.decoder.layers.0.fc1", 0, k + 1), LLMINT8_ERR_SHAPE, "in_features");
    }

    std::printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
