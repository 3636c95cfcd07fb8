# Run with LLMINT8_LIB=/path/to/libllmint8.so julia --project -e 'using Pkg; Pkg.test()'.
# Not run on the development machines (no Julia there); see the README.
using LLMInt8
using LinearAlgebra
using Test

@testset "LLMInt8" begin
    ctx = Context()
    out, in, batch = 5, 8, 3
    W = Float32[(((i - 1) * in + (j - 1)) * 37 % 23 - 11) / 8 for i in 1:out, j in 1:in]
    X = Float32[(((b - 1) * in + (c - 1)) * 13 % 17 - 8) / 4 for c in 1:in, b in 1:batch]
    X[7, 2] = 9.0f0  # one outlier feature
    bias = Float32[0.25 * (j - 1) for j in 1:out]
    W8 = Int8Weight(ctx, W; bias = bias)
    @test size(W8) == (out, in)
    @test memory(W8).host + memory(W8).device >= out * in + 4 * out
    @test memory(Int8Weight(ctx, W; bias = bias, keep = [7])).host == memory(W8).host + 4 * out
    # Smoothing: the plain weight of W·diag(s) times X·diag(1/s), bit for bit.
    s = Float32[0.5 + (c % 3) for c in 1:size(W, 2)]
    Ws = Int8Weight(ctx, W; bias = bias, smoothing = s)
    @test smoothing(Ws) == s && smoothing(W8) === nothing
    Xs = Float32.(X) .* (1 ./ s)
    @test Ws * X == Int8Weight(ctx, W .* s'; bias = bias) * Xs
    @test_throws LLMInt8Error Int8Weight(ctx, W; smoothing = zeros(Float32, size(W, 2)))
    Y = W8 * X
    @test size(Y) == (out, batch)
    dense = Float64.(W) * Float64.(X) .+ bias
    mag = abs.(Float64.(W)) * abs.(Float64.(X)) .+ abs.(bias)
    @test all(abs.(Y .- dense) .<= 0.02 .* mag)
    @test outlier_columns(W8, X) == 1
    @test outlier_columns(W8, X; threshold = 0) == 0

    Y2 = similar(Y)
    mul!(Y2, W8, X)
    @test Y2 == Y
    W16 = Int8Weight(ctx, Float16.(W); bias = Float16.(bias))
    @test Float32.(W16 * Float16.(X)) ≈ Y rtol = 1e-2

    # Weights sharing X: one call, the bits of separate ones.
    Wnarrow = Int8Weight(ctx, W[1:2, :])
    Ya, Yb = similar(Y), zeros(Float32, 2, batch)
    mul_shared_input!([Ya, Yb], [W8, Wnarrow], X)
    @test Ya == Y && Yb == Wnarrow * X
    @test_throws DimensionMismatch mul_shared_input!([Ya], [W8, Wnarrow], X)

    @test_throws DimensionMismatch W8 * zeros(Float32, in + 1, 2)
    @test_throws DimensionMismatch mul!(zeros(Float32, out + 1, batch), W8, X)
    @test_throws LLMInt8Error mul!(Y2, W8, X; threshold = -1)
    Wnan = copy(W); Wnan[3, 2] = NaN32
    err = try Int8Weight(ctx, Wnan); nothing catch e; e end
    @test err isa LLMInt8Error && occursin("row 2", err.message)
    @test_throws ArgumentError Int8Weight(ctx, rand(Float64, 2, 2))
    close(W8); close(W8)  # idempotent
    @test_throws ArgumentError W8 * X
    close(ctx)
    @test_throws ArgumentError Int8Weight(ctx, W)

    @testset "checkpoints" begin
        data = joinpath(@__DIR__, "..", "..", "..", "..", "tests", "data")
        ck = Checkpoint(joinpath(data, "bnb-models", "opt-f32-int8"))
        ts = tensors(ck)
        int8 = filter(t -> t.kind == :int8_weight, ts)
        @test length(int8) == 12
        ctx2 = Context()
        @test LLMInt8.reserve!(ctx2, 16, 4096, 11008) === ctx2  # nothing to reserve on the CPU
        @test_throws LLMInt8Error LLMInt8.reserve!(ctx2, 0, 4096, 4096)
        for t in int8
            W8 = Int8Weight(ctx2, ck, LLMInt8.prefix(t))
            @test size(W8) == (t.shape[1], t.shape[2])
        end
        # A column-parallel shard: its rows of the layer, nothing else.
        fc1 = LLMInt8.prefix(first(int8))
        whole = Int8Weight(ctx2, ck, fc1)
        shard = Int8Weight(ctx2, ck, fc1, 3:10)
        @test size(shard) == (8, size(whole, 2))
        err = try Int8Weight(ctx2, ck, fc1, 5:4); nothing catch e; e end
        @test err isa LLMInt8Error && err.name == "LLMINT8_ERR_SHAPE"
        # A row-parallel world of two: statistics MAX'd, partials summed.
        k = size(whole, 2)
        halves = (1:k ÷ 2, k ÷ 2 + 1:k)
        shards = [Int8Weight(ctx2, ck, fc1, :, h) for h in halves]
        @test size(shards[2]) == (size(whole, 1), k - k ÷ 2)
        X = Float32.(reshape(sin.(0.3 .* (1:k * 3)), k, 3))
        X[2, 1] = 11
        Y = mul!(zeros(Float32, size(whole, 1), 3), whole, X)
        stats = [row_parallel_statistics!(zeros(Float32, 3), s, X[h, :]) for (s, h) in zip(shards, halves)]
        global_absmax = max.(stats...)
        parts = [mul_row_parallel!(zeros(Float32, size(whole, 1), 3), s, X[h, :], global_absmax)
                 for (s, h) in zip(shards, halves)]
        @test maximum(abs.(parts[1] .+ parts[2] .- Y)) <= 1e-5 * maximum(abs.(Y))
        err = try mul_row_parallel!(parts[1], shards[1], X[halves[1], :], fill(-1f0, 3)); nothing catch e; e end
        @test err isa LLMInt8Error && err.name == "LLMINT8_ERR_INVALID_ARGUMENT"
        @test length(read_tensor(ck, "model.decoder.final_layer_norm.weight")) == 64 * 4
        @test_throws LLMInt8Error read_tensor(ck, "nope")
        W8 = Int8Weight(ctx2, joinpath(data, "tiny-llama-fp16"), "model.layers.0.mlp.up_proj")
        @test size(W8) == (688, 256)
        path = joinpath(mktempdir(), "up.safetensors")
        save_safetensors(W8, path, "up")
        @test size(Int8Weight(ctx2, path, "up")) == (688, 256)
        err = try Checkpoint(joinpath(data, "none")); nothing catch e; e end
        @test err isa LLMInt8Error && err.name == "LLMINT8_ERR_NOT_FOUND"
        close(ck); close(ck)
        @test_throws ArgumentError tensors(ck)
    end
end
