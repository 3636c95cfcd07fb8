# Quantize a weight once, then run LLM.int8() matmuls with it, from Julia.
#   cargo build --release
#   LLMINT8_LIB=$PWD/target/release/libllmint8.so julia --project=bindings/julia/LLMInt8 examples/julia/hello.jl
using LLMInt8

ctx = Context()
W = Float32[0.1 -0.2 0.3 0.4; 0.5 0.6 -0.7 0.8; -0.9 1.0 1.1 1.2]  # out × in
W8 = Int8Weight(ctx, W; bias = Float32[0.01, 0.02, 0.03])
X = Float32[1 0.5; 2 9; 3 -1; 4 0]                                # in × batch; 9 is an outlier
Y = W8 * X                                                         # out × batch
println("Y = ", Y)
println("outlier columns: ", outlier_columns(W8, X))
close(W8); close(ctx)
