"""
    LLMInt8

Julia binding of libllmint8: LLM.int8() (Dettmers et al., 2022) — an `out × in`
weight held in int8 with one scale per row, multiplied with the mixed-precision
decomposition of outlier features.

The library is found through the environment variable `LLMINT8_LIB` (a path to
`libllmint8.so`) when it is set before the package is first loaded, else through
the system search path (`libllmint8`).

Julia's column-major `in × batch` activations are exactly the C API's row-major
`[batch, in]`, so `W8 * X` passes `X` without a copy; only the weight is
transposed, once, when it is quantized.
"""
module LLMInt8

using LinearAlgebra

export Context, Int8Weight, LLMInt8Error, smoothing, outlier_columns, mul_shared_input!, row_parallel_statistics!, mul_row_parallel!, memory, Checkpoint, tensors, read_tensor, save_safetensors

const libllmint8 = get(ENV, "LLMINT8_LIB", "libllmint8")

const LLMINT8_OK = Int32(0)
const LLMINT8_F32 = Int32(0)
const LLMINT8_F16 = Int32(1)
const LLMINT8_BF16 = Int32(2)
const LLMINT8_BACKEND_AUTO = Int32(0)
const DEFAULT_THRESHOLD = 6.0f0

"""A failed llmint8 call: the status code, its name and the library's message."""
struct LLMInt8Error <: Exception
    status::Int32
    name::String
    message::String
end
Base.showerror(io::IO, e::LLMInt8Error) = print(io, "llmint8: ", e.name, ": ", e.message)

# Mirrors `llmint8_matmul_stats` (64 bytes).
struct MatmulStats
    outlier_columns::UInt64
    reserved::NTuple{7,UInt64}
end
MatmulStats() = MatmulStats(0, ntuple(_ -> UInt64(0), 7))

status_name(s::Int32) = unsafe_string(ccall((:llmint8_status_name, libllmint8), Cstring, (Int32,), s))
last_error() = unsafe_string(ccall((:llmint8_last_error, libllmint8), Cstring, ()))

# The message is per OS thread: read it right after the failing call, on the same task.
check(s::Int32) = s == LLMINT8_OK ? nothing : throw(LLMInt8Error(s, status_name(s), last_error()))

"""The library version."""
version() = unsafe_string(ccall((:llmint8_version, libllmint8), Cstring, ()))

dtype_code(::Type{Float32}) = LLMINT8_F32
dtype_code(::Type{Float16}) = LLMINT8_F16
dtype_code(::Type{T}) where {T} = throw(ArgumentError("llmint8 supports Float32, Float16 and BFloat16 (with BFloat16s loaded), not $T"))

"""
    Context(; backend = 0, device = 0)

A backend instance (the CPU in this version). Freed by a finalizer or `close`.
"""
mutable struct Context
    ptr::Ptr{Cvoid}
    function Context(; backend::Integer = LLMINT8_BACKEND_AUTO, device::Integer = 0)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check(ccall((:llmint8_context_create, libllmint8), Int32, (Int32, Int32, Ptr{Ptr{Cvoid}}), backend, device, out))
        ctx = new(out[])
        finalizer(close, ctx)
        return ctx
    end
end

function Base.close(ctx::Context)
    p, ctx.ptr = ctx.ptr, C_NULL  # swap first: a second close does nothing
    p == C_NULL || ccall((:llmint8_context_destroy, libllmint8), Cvoid, (Ptr{Cvoid},), p)
    return nothing
end

function Base.unsafe_convert(::Type{Ptr{Cvoid}}, ctx::Context)
    ctx.ptr == C_NULL && throw(ArgumentError("the llmint8 Context is closed"))
    return ctx.ptr
end

function set_num_threads!(ctx::Context, n::Integer)
    check(ccall((:llmint8_context_set_num_threads, libllmint8), Int32, (Ptr{Cvoid}, Csize_t), ctx, n))
    return ctx
end

# Which values set an activation row's scale when outliers are decomposed:
# `:int8_part` (the default: the columns the int8 product uses) or
# `:bitsandbytes` (the row's values below the threshold, as bitsandbytes).
const ROW_SCALES = (bitsandbytes = Int32(0), int8_part = Int32(1))

function set_row_scale!(ctx::Context, rule::Symbol)
    haskey(ROW_SCALES, rule) || throw(ArgumentError("row scale rule must be :bitsandbytes or :int8_part, got :$rule"))
    check(ccall((:llmint8_context_set_row_scale, libllmint8), Int32, (Ptr{Cvoid}, Int32), ctx, ROW_SCALES[rule]))
    return ctx
end

function row_scale(ctx::Context)
    r = Ref{Int32}(0)
    check(ccall((:llmint8_context_row_scale, libllmint8), Int32, (Ptr{Cvoid}, Ptr{Int32}), ctx, r))
    return r[] == ROW_SCALES.int8_part ? :int8_part : :bitsandbytes
end

# bitsandbytes' input rounding and row scale together.
function match_bitsandbytes!(ctx::Context)
    check(ccall((:llmint8_context_match_bitsandbytes, libllmint8), Int32, (Ptr{Cvoid},), ctx))
    return ctx
end

# CUDA contexts: later work on `stream` (a CuStream's handle, e.g. `CUDA.stream().handle`).
function set_stream!(ctx::Context, stream::Ptr{Cvoid})
    check(ccall((:llmint8_context_set_stream, libllmint8), Int32, (Ptr{Cvoid}, Ptr{Cvoid}), ctx, stream))
    return ctx
end

# CUDA contexts: scratch reserved for every matmul of up to `rows` rows, in_features up
# to `in_features`, out_features up to `out_features`, so that such calls on device
# memory can be captured in a CUDA graph (nothing to do on the CPU).
function reserve!(ctx::Context, rows::Integer, in_features::Integer, out_features::Integer)
    check(ccall((:llmint8_context_reserve, libllmint8), Int32, (Ptr{Cvoid}, Csize_t, Csize_t, Csize_t),
                ctx, rows, in_features, out_features))
    return ctx
end

# Waits for the work the context queued (nothing to wait for on the CPU).
function synchronize(ctx::Context)
    check(ccall((:llmint8_context_synchronize, libllmint8), Int32, (Ptr{Cvoid},), ctx))
    return nothing
end

"""
    Int8Weight(ctx, W::AbstractMatrix; bias = nothing, keep = Int[], smoothing = nothing)

Quantizes an `out × in` weight (`Float32`, `Float16`, or `BFloat16` with BFloat16s
loaded) to int8, row by row. The weight is transposed once into the C API's
row-major layout; nothing of it is kept but the int8 values and scales — and the
columns `keep` (1-based input features) in `T`, which the outlier product then
multiplies instead of their dequantized int8 values (on a CUDA context they go to the device too).

`smoothing`: SmoothQuant's vector `s` (`in` positive finite `Float32`s): the
weight stored is `W·diag(s)` and every product divides the input by `s` before
quantizing it (kept columns are then kept as `Float32` of `W·diag(s)`).
Weights given to `mul_shared_input!` must share one vector.
"""
mutable struct Int8Weight
    ptr::Ptr{Cvoid}
    ctx::Context
    out::Int
    in::Int
end

function Int8Weight(ctx::Context, W::AbstractMatrix{T}; bias::Union{Nothing,AbstractVector{T}} = nothing,
                    keep::AbstractVector{<:Integer} = Int[],
                    smoothing::Union{Nothing,AbstractVector{<:Real}} = nothing) where {T}
    code = dtype_code(T)
    out, in = size(W)
    rowmajor = Matrix{T}(permutedims(W))  # in × out column-major == [out, in] row-major
    b = bias === nothing ? nothing : Vector{T}(bias)
    b === nothing || length(b) == out || throw(DimensionMismatch("bias has $(length(b)) elements, the weight $out rows"))
    all(c -> 1 <= c <= in, keep) || throw(ArgumentError("keep holds a column outside 1:$in"))
    keep0 = UInt32[c - 1 for c in keep]  # the C ABI counts columns from 0
    s = smoothing === nothing ? nothing : Vector{Float32}(smoothing)
    s === nothing || length(s) == in || throw(DimensionMismatch("smoothing has $(length(s)) factors, the weight $in columns"))
    handle = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve rowmajor b keep0 s begin
        bp = b === nothing ? C_NULL : pointer(b)
        if s !== nothing
            kp = isempty(keep0) ? C_NULL : pointer(keep0)
            check(ccall((:llmint8_weight_quantize_smoothed, libllmint8), Int32,
                        (Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Csize_t, Ptr{Float32}, Csize_t, Csize_t, Ptr{Cvoid}, Int32,
                         Ptr{UInt32}, Csize_t, Ptr{Ptr{Cvoid}}),
                        ctx, rowmajor, code, out, in, pointer(s), 0, in, bp, code, kp, length(keep0), handle))
        elseif isempty(keep0)
            check(ccall((:llmint8_weight_quantize, libllmint8), Int32,
                        (Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Csize_t, Ptr{Cvoid}, Int32, Ptr{Ptr{Cvoid}}),
                        ctx, rowmajor, code, out, in, bp, code, handle))
        else
            check(ccall((:llmint8_weight_quantize_keep, libllmint8), Int32,
                        (Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Csize_t, Ptr{Cvoid}, Int32, Ptr{UInt32}, Csize_t, Ptr{Ptr{Cvoid}}),
                        ctx, rowmajor, code, out, in, bp, code, pointer(keep0), length(keep0), handle))
        end
    end
    w = Int8Weight(handle[], ctx, out, in)
    finalizer(close, w)
    return w
end

function Base.close(w::Int8Weight)
    p, w.ptr = w.ptr, C_NULL
    p == C_NULL || ccall((:llmint8_weight_destroy, libllmint8), Cvoid, (Ptr{Cvoid},), p)
    return nothing
end

function Base.unsafe_convert(::Type{Ptr{Cvoid}}, w::Int8Weight)
    w.ptr == C_NULL && throw(ArgumentError("the Int8Weight is closed"))
    return w.ptr
end

Base.size(w::Int8Weight) = (w.out, w.in)
Base.size(w::Int8Weight, d::Integer) = size(w)[d]

"""
    smoothing(w::Int8Weight) -> Union{Nothing,Vector{Float32}}

The smoothing vector `w` was made with, or `nothing` for an unsmoothed weight.
"""
function smoothing(w::Int8Weight)
    s, smoothed = Vector{Float32}(undef, w.in), Ref{Int32}(0)
    GC.@preserve s check(ccall((:llmint8_weight_smoothing, libllmint8), Int32,
                               (Ptr{Cvoid}, Ptr{Float32}, Csize_t, Ref{Int32}), w, pointer(s), length(s), smoothed))
    return smoothed[] == 0 ? nothing : s
end

"""
    memory(w::Int8Weight) -> (host = bytes, device = bytes)

The bytes `w` holds in host and in device memory (a CPU weight's device bytes are 0).
"""
function memory(w::Int8Weight)
    host, device = Ref{UInt64}(0), Ref{UInt64}(0)
    check(ccall((:llmint8_weight_memory, libllmint8), Int32, (Ptr{Cvoid}, Ptr{UInt64}, Ptr{UInt64}), w, host, device))
    return (host = Int(host[]), device = Int(device[]))
end

# The one call into llmint8_matmul_host (Julia arrays are host memory; it works
# on CPU and CUDA contexts alike): checks shapes and layout, returns the stats.
function matmul_stats!(Y::StridedMatrix{TY}, w::Int8Weight, X::StridedMatrix{TX}, threshold::Real) where {TX,TY}
    size(X, 1) == w.in || throw(DimensionMismatch("X has $(size(X, 1)) rows, the weight $(w.in) columns"))
    size(Y) == (w.out, size(X, 2)) || throw(DimensionMismatch("Y is $(size(Y)), expected ($(w.out), $(size(X, 2)))"))
    stride(X, 1) == 1 && stride(X, 2) == w.in || throw(ArgumentError("X must be a dense column-major matrix"))
    stride(Y, 1) == 1 && stride(Y, 2) == w.out || throw(ArgumentError("Y must be a dense column-major matrix"))
    stats = Ref(MatmulStats())
    GC.@preserve X Y begin
        check(ccall((:llmint8_matmul_host, libllmint8), Int32,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Cfloat, Ptr{Cvoid}, Int32, Ref{MatmulStats}),
                    w.ctx, w, pointer(X), dtype_code(TX), size(X, 2), threshold, pointer(Y), dtype_code(TY), stats))
    end
    return stats[]
end

"""
    mul!(Y, W8, X; threshold = 6) -> Y

`Y (out × batch) = W8 * X (in × batch) + bias` with LLM.int8(); `threshold = 0`
turns the outlier decomposition off. `X` and `Y` are dense column-major arrays of
a supported element type and are passed to the library without copies.
"""
function LinearAlgebra.mul!(Y::StridedMatrix, w::Int8Weight, X::StridedMatrix; threshold::Real = DEFAULT_THRESHOLD)
    matmul_stats!(Y, w, X, threshold)
    return Y
end

Base.:*(w::Int8Weight, X::StridedMatrix{T}) where {T} = mul!(similar(X, T, w.out, size(X, 2)), w, X)
Base.:*(w::Int8Weight, x::StridedVector{T}) where {T} = vec(w * reshape(x, :, 1))

"""
    mul_shared_input!(Ys, Ws, X; threshold = 6) -> Ys

`Ys[i] (out_i × batch) = Ws[i] * X + bias_i` for weights that share their input
(q/k/v, gate/up) in one llmint8 call: `X` is quantized and its outlier features
found once, and each `Ys[i]` is what `mul!(Ys[i], Ws[i], X)` writes. All weights
come from one context, with the same `in`; the outputs share one element type.
"""
function mul_shared_input!(Ys::AbstractVector{<:StridedMatrix{TY}}, ws::AbstractVector{Int8Weight},
                           X::StridedMatrix{TX}; threshold::Real = DEFAULT_THRESHOLD) where {TX,TY}
    isempty(ws) && throw(ArgumentError("no weights given"))
    length(Ys) == length(ws) || throw(DimensionMismatch("$(length(ws)) weights but $(length(Ys)) outputs"))
    ctx = ws[1].ctx
    for (i, w) in enumerate(ws)
        w.ctx === ctx || throw(ArgumentError("Ws[$i] belongs to another context"))
        size(X, 1) == w.in || throw(DimensionMismatch("X has $(size(X, 1)) rows, Ws[$i] $(w.in) columns"))
        size(Ys[i]) == (w.out, size(X, 2)) ||
            throw(DimensionMismatch("Ys[$i] is $(size(Ys[i])), expected ($(w.out), $(size(X, 2)))"))
        stride(Ys[i], 1) == 1 && stride(Ys[i], 2) == w.out || throw(ArgumentError("Ys[$i] must be dense column-major"))
    end
    stride(X, 1) == 1 && stride(X, 2) == size(X, 1) || throw(ArgumentError("X must be a dense column-major matrix"))
    stats = Ref(MatmulStats())
    GC.@preserve Ys ws X begin
        handles = Ptr{Cvoid}[Base.unsafe_convert(Ptr{Cvoid}, w) for w in ws]
        outs = Ptr{Cvoid}[pointer(Y) for Y in Ys]
        check(ccall((:llmint8_matmul_shared_input_host, libllmint8), Int32,
                    (Ptr{Cvoid}, Ptr{Ptr{Cvoid}}, Csize_t, Ptr{Cvoid}, Int32, Csize_t, Cfloat, Ptr{Ptr{Cvoid}}, Int32,
                     Ref{MatmulStats}),
                    ctx, handles, length(ws), pointer(X), dtype_code(TX), size(X, 2), threshold, outs, dtype_code(TY),
                    stats))
    end
    return Ys
end

"""
    row_parallel_statistics!(row_absmax, W8, X; threshold = 6) -> row_absmax

Stage 1 of a row-parallel matmul: `row_absmax` (a `Vector{Float32}` of `size(X, 2)`)
gets the statistics of this rank's slice `X` (`in × batch`, `in` the shard's) —
all-reduce them with MAX across the ranks, then call `mul_row_parallel!`.
"""
function row_parallel_statistics!(row_absmax::Vector{Float32}, w::Int8Weight, X::StridedMatrix{TX};
                                  threshold::Real = DEFAULT_THRESHOLD) where {TX}
    size(X, 1) == w.in || throw(DimensionMismatch("X has $(size(X, 1)) rows, the weight $(w.in) columns"))
    length(row_absmax) == size(X, 2) ||
        throw(DimensionMismatch("row_absmax has $(length(row_absmax)) entries, X $(size(X, 2)) columns"))
    stride(X, 1) == 1 && stride(X, 2) == w.in || throw(ArgumentError("X must be a dense column-major matrix"))
    stats = Ref(MatmulStats())
    GC.@preserve X row_absmax begin
        check(ccall((:llmint8_row_parallel_statistics_host, libllmint8), Int32,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Cfloat, Ptr{Cfloat}, Ref{MatmulStats}),
                    w.ctx, w, pointer(X), dtype_code(TX), size(X, 2), threshold, pointer(row_absmax), stats))
    end
    return row_absmax
end

"""
    mul_row_parallel!(Y, W8, X, row_absmax; threshold = 6) -> Y

Stage 2: this rank's partial `Y (out × batch)` of its shard `W8` and slice `X`, each
column of `X` quantized with `row_absmax` (the MAX over the ranks); all-reduce the
partials with SUM. `Float32` partials keep the bound stated in llmint8.h.
"""
function mul_row_parallel!(Y::StridedMatrix{TY}, w::Int8Weight, X::StridedMatrix{TX}, row_absmax::Vector{Float32};
                           threshold::Real = DEFAULT_THRESHOLD) where {TX,TY}
    size(X, 1) == w.in || throw(DimensionMismatch("X has $(size(X, 1)) rows, the weight $(w.in) columns"))
    size(Y) == (w.out, size(X, 2)) || throw(DimensionMismatch("Y is $(size(Y)), expected ($(w.out), $(size(X, 2)))"))
    length(row_absmax) == size(X, 2) ||
        throw(DimensionMismatch("row_absmax has $(length(row_absmax)) entries, X $(size(X, 2)) columns"))
    stride(X, 1) == 1 && stride(X, 2) == w.in || throw(ArgumentError("X must be a dense column-major matrix"))
    stride(Y, 1) == 1 && stride(Y, 2) == w.out || throw(ArgumentError("Y must be a dense column-major matrix"))
    stats = Ref(MatmulStats())
    GC.@preserve X Y row_absmax begin
        check(ccall((:llmint8_matmul_row_parallel_host, libllmint8), Int32,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Cfloat, Ptr{Cfloat}, Ptr{Cvoid}, Int32,
                     Ref{MatmulStats}),
                    w.ctx, w, pointer(X), dtype_code(TX), size(X, 2), threshold, pointer(row_absmax), pointer(Y),
                    dtype_code(TY), stats))
    end
    return Y
end

"""
    outlier_columns(W8, X; threshold = 6) -> Int

How many feature rows of `X` (columns of the C API's `[batch, in]`) hold an outlier.
"""
function outlier_columns(w::Int8Weight, X::StridedMatrix{T}; threshold::Real = DEFAULT_THRESHOLD) where {T}
    stats = matmul_stats!(similar(X, T, w.out, size(X, 2)), w, X, threshold)
    return Int(stats.outlier_columns)
end

# ---- Checkpoints ----

# Mirrors `llmint8_tensor_info` (144 bytes).
struct CTensorInfo
    name::Ptr{UInt8}
    dtype_name::Ptr{UInt8}
    file::Ptr{UInt8}
    dtype::Int32
    kind::Int32
    ndim::UInt32
    reserved0::UInt32
    shape::NTuple{8,UInt64}
    num_bytes::UInt64
    reserved::NTuple{4,UInt64}
end
CTensorInfo() = CTensorInfo(C_NULL, C_NULL, C_NULL, 0, 0, 0, 0, ntuple(_ -> UInt64(0), 8), 0, ntuple(_ -> UInt64(0), 4))

const TENSOR_KINDS = (:other, :linear_weight, :int8_weight, :int8_scales, :weight_format, :bias, :kept_columns,
                      :kept_values)

"""
One tensor of a checkpoint: `shape` is as the file stores it (row-major, outermost
first: `[out, in]` for a weight), `kind` one of `$(TENSOR_KINDS)`.
"""
struct TensorInfo
    name::String
    dtype::String
    file::String
    kind::Symbol
    shape::Vector{Int}
    nbytes::Int
end

"""The layer name `Int8Weight(ctx, checkpoint, prefix)` takes: the name without `.weight`."""
function prefix(t::TensorInfo)
    i = findlast('.', t.name)
    return i === nothing ? "" : t.name[1:i-1]
end

"""
    Checkpoint(path)

An open safetensors file, shard index (`model.safetensors.index.json`) or model
directory, memory-mapped read-only. Freed by a finalizer or `close`.
"""
mutable struct Checkpoint
    ptr::Ptr{Cvoid}
    function Checkpoint(path::AbstractString)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check(ccall((:llmint8_checkpoint_open, libllmint8), Int32, (Cstring, Ptr{Ptr{Cvoid}}), path, out))
        ck = new(out[])
        finalizer(close, ck)
        return ck
    end
end

function Base.close(ck::Checkpoint)
    p, ck.ptr = ck.ptr, C_NULL
    p == C_NULL || ccall((:llmint8_checkpoint_destroy, libllmint8), Cvoid, (Ptr{Cvoid},), p)
    return nothing
end

function Base.unsafe_convert(::Type{Ptr{Cvoid}}, ck::Checkpoint)
    ck.ptr == C_NULL && throw(ArgumentError("the Checkpoint is closed"))
    return ck.ptr
end

function tensor_info(ck::Checkpoint, index::Integer)
    info = Ref(CTensorInfo())
    GC.@preserve ck begin
        check(ccall((:llmint8_checkpoint_tensor_info, libllmint8), Int32, (Ptr{Cvoid}, Csize_t, Ptr{CTensorInfo}),
                    ck, index, info))
        i = info[]
        return TensorInfo(unsafe_string(i.name), unsafe_string(i.dtype_name), unsafe_string(i.file),
                          TENSOR_KINDS[i.kind+1], Int[i.shape[d] for d in 1:min(Int(i.ndim), 8)], Int(i.num_bytes))
    end
end

"""    tensors(checkpoint) -> Vector{TensorInfo}, sorted by name."""
function tensors(ck::Checkpoint)
    n = Ref{Csize_t}(0)
    check(ccall((:llmint8_checkpoint_num_tensors, libllmint8), Int32, (Ptr{Cvoid}, Ptr{Csize_t}), ck, n))
    return [tensor_info(ck, i) for i in 0:Int(n[])-1]
end

"""    read_tensor(checkpoint, name) -> Vector{UInt8}: the tensor's raw little-endian bytes."""
function read_tensor(ck::Checkpoint, name::AbstractString)
    index = Ref{Csize_t}(0)
    check(ccall((:llmint8_checkpoint_find, libllmint8), Int32, (Ptr{Cvoid}, Cstring, Ptr{Csize_t}), ck, name, index))
    bytes = Vector{UInt8}(undef, tensor_info(ck, index[]).nbytes)
    GC.@preserve bytes check(ccall((:llmint8_checkpoint_read, libllmint8), Int32, (Ptr{Cvoid}, Csize_t, Ptr{Cvoid}, Csize_t),
                                   ck, index[], pointer(bytes), length(bytes)))
    return bytes
end

function weight_from_handle(ctx::Context, p::Ptr{Cvoid})
    out, in = Ref{Csize_t}(0), Ref{Csize_t}(0)
    w = Int8Weight(p, ctx, 0, 0)
    finalizer(close, w)
    check(ccall((:llmint8_weight_shape, libllmint8), Int32, (Ptr{Cvoid}, Ptr{Csize_t}, Ptr{Csize_t}), w, out, in))
    w.out, w.in = Int(out[]), Int(in[])
    return w
end

"""
    Int8Weight(ctx, checkpoint::Checkpoint, prefix)
    Int8Weight(ctx, path::AbstractString, prefix)

Loads the linear layer `prefix` (e.g. `"model.layers.0.mlp.up_proj"`): quantized
when stored in 16/32-bit, taken as it is when stored by bitsandbytes in int8 (+ SCB),
with its bias when there is one.
"""
function Int8Weight(ctx::Context, ck::Checkpoint, prefix::AbstractString)
    handle = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:llmint8_weight_load, libllmint8), Int32, (Ptr{Cvoid}, Ptr{Cvoid}, Cstring, Ptr{Ptr{Cvoid}}),
                ctx, ck, prefix, handle))
    return weight_from_handle(ctx, handle[])
end

"""
    Int8Weight(ctx, checkpoint::Checkpoint, prefix, rows::UnitRange)

Output rows `rows` (1-based, e.g. `1:2048`) of the linear layer `prefix`: one
rank's shard of a column-parallel layer, reading only those rows
(`llmint8_weight_load_rows`). The ranks' outputs side by side are the whole
layer's bit for bit. An empty range or one past `out_features` throws (SHAPE).
"""
function Int8Weight(ctx::Context, ck::Checkpoint, prefix::AbstractString, rows::UnitRange{<:Integer})
    first(rows) >= 1 || throw(ArgumentError("rows start at 1, not $(first(rows))"))
    handle = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:llmint8_weight_load_rows, libllmint8), Int32,
                (Ptr{Cvoid}, Ptr{Cvoid}, Cstring, Csize_t, Csize_t, Ptr{Ptr{Cvoid}}),
                ctx, ck, prefix, first(rows) - 1, max(last(rows), first(rows) - 1), handle))
    return weight_from_handle(ctx, handle[])
end

"""
    Int8Weight(ctx, checkpoint::Checkpoint, prefix, :, columns::UnitRange)

Input columns `columns` (1-based) of the linear layer `prefix`, all its rows: one
rank's shard of a row-parallel layer (o_proj, down_proj; `llmint8_weight_load_columns`).
Each row's scale comes from the whole row; the shard holding column 1 carries the
bias. Use it with `row_parallel_statistics!` and `mul_row_parallel!`. An empty
range or one past `in_features` throws (SHAPE).
"""
function Int8Weight(ctx::Context, ck::Checkpoint, prefix::AbstractString, ::Colon, columns::UnitRange{<:Integer})
    first(columns) >= 1 || throw(ArgumentError("columns start at 1, not $(first(columns))"))
    handle = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:llmint8_weight_load_columns, libllmint8), Int32,
                (Ptr{Cvoid}, Ptr{Cvoid}, Cstring, Csize_t, Csize_t, Ptr{Ptr{Cvoid}}),
                ctx, ck, prefix, first(columns) - 1, max(last(columns), first(columns) - 1), handle))
    return weight_from_handle(ctx, handle[])
end

function Int8Weight(ctx::Context, path::AbstractString, prefix::AbstractString)
    handle = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:llmint8_weight_load_safetensors, libllmint8), Int32, (Ptr{Cvoid}, Cstring, Cstring, Ptr{Ptr{Cvoid}}),
                ctx, path, prefix, handle))
    return weight_from_handle(ctx, handle[])
end

"""
    save_safetensors(W8, path, prefix)

Writes the weight as transformers + bitsandbytes save a `Linear8bitLt`:
`prefix.weight` (int8), `prefix.SCB`, `prefix.weight_format` (and `prefix.bias`).
"""
function save_safetensors(w::Int8Weight, path::AbstractString, prefix::AbstractString)
    check(ccall((:llmint8_weight_save_safetensors, libllmint8), Int32, (Ptr{Cvoid}, Cstring, Cstring), w, path, prefix))
    return path
end

# ---- CUDA contexts: device memory (e.g. CUDA.jl arrays) ----
# Addresses are given as UInt (`UInt(pointer(A))` for a CuArray `A`), with the
# element type. The C ABI is row-major: a column-major `in × rows` array is the
# row-major `[rows, in]` it takes, and an `in × out` one a weight `[out, in]`.

function require_cuda(ctx::Context, what::AbstractString)
    backend = Ref{Int32}(0)
    check(ccall((:llmint8_context_backend, libllmint8), Int32, (Ptr{Cvoid}, Ptr{Int32}), ctx, backend))
    # On a CPU context the C call would read the addresses as host memory.
    backend[] == 2 || throw(LLMInt8Error(3, "LLMINT8_ERR_UNSUPPORTED", "$what takes device memory and needs a CUDA context"))
    return nothing
end

"""
    quantize_device(ctx, w_address::UInt, T, out, in; bias = nothing)

Quantizes a weight already in the CUDA context's device memory: `w_address` holds
row-major `[out, in]` elements of `T` (an `in × out` CuArray). `bias` is `nothing`
or a host vector of `out` elements. Waits for the quantization.
"""
function quantize_device(ctx::Context, w_address::UInt, ::Type{T}, out::Integer, in::Integer;
                         bias::Union{Nothing,AbstractVector{T}} = nothing) where {T}
    require_cuda(ctx, "quantize_device")
    code = dtype_code(T)
    b = bias === nothing ? nothing : Vector{T}(bias)
    b === nothing || length(b) == out || throw(DimensionMismatch("bias has $(length(b)) elements, the weight $out rows"))
    handle = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve b begin
        check(ccall((:llmint8_weight_quantize_device, libllmint8), Int32,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Csize_t, Ptr{Cvoid}, Int32, Ptr{Ptr{Cvoid}}),
                    ctx, Ptr{Cvoid}(w_address), code, out, in, b === nothing ? C_NULL : pointer(b), code, handle))
    end
    w = Int8Weight(handle[], ctx, Int(out), Int(in))
    finalizer(close, w)
    return w
end

"""
    matmul_device!(ctx, y_address::UInt, TY, w, x_address::UInt, TX, rows; threshold = 6.0)

`y = x · Wᵀ + b` on device memory: `x_address` holds row-major `[rows, in]` of `TX`
(an `in × rows` CuArray), `y_address` `[rows, out]` of `TY`. Only queued on the
context's stream (`set_stream!`): `synchronize(ctx)`, or wait on the stream,
before reading `y`.
"""
function matmul_device!(ctx::Context, y_address::UInt, ::Type{TY}, w::Int8Weight, x_address::UInt, ::Type{TX},
                        rows::Integer; threshold::Real = DEFAULT_THRESHOLD) where {TX,TY}
    require_cuda(ctx, "matmul_device!")
    check(ccall((:llmint8_matmul, libllmint8), Int32,
                (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Cfloat, Ptr{Cvoid}, Int32, Ptr{MatmulStats}),
                ctx, w, Ptr{Cvoid}(x_address), dtype_code(TX), rows, threshold, Ptr{Cvoid}(y_address),
                dtype_code(TY), C_NULL))  # no stats: the call stays asynchronous
    return nothing
end

end # module
