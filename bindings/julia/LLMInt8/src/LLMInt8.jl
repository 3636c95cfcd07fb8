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

export Context, Int8Weight, LLMInt8Error, outlier_columns

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

"""
    Int8Weight(ctx, W::AbstractMatrix; bias = nothing)

Quantizes an `out × in` weight (`Float32`, `Float16`, or `BFloat16` with BFloat16s
loaded) to int8, row by row. The weight is transposed once into the C API's
row-major layout; nothing of it is kept but the int8 values and scales.
"""
mutable struct Int8Weight
    ptr::Ptr{Cvoid}
    ctx::Context
    out::Int
    in::Int
end

function Int8Weight(ctx::Context, W::AbstractMatrix{T}; bias::Union{Nothing,AbstractVector{T}} = nothing) where {T}
    code = dtype_code(T)
    out, in = size(W)
    rowmajor = Matrix{T}(permutedims(W))  # in × out column-major == [out, in] row-major
    b = bias === nothing ? nothing : Vector{T}(bias)
    b === nothing || length(b) == out || throw(DimensionMismatch("bias has $(length(b)) elements, the weight $out rows"))
    handle = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve rowmajor b begin
        check(ccall((:llmint8_weight_quantize, libllmint8), Int32,
                    (Ptr{Cvoid}, Ptr{Cvoid}, Int32, Csize_t, Csize_t, Ptr{Cvoid}, Int32, Ptr{Ptr{Cvoid}}),
                    ctx, rowmajor, code, out, in, b === nothing ? C_NULL : pointer(b), code, handle))
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

# The one call into llmint8_matmul: checks shapes and layout, returns the stats.
function matmul_stats!(Y::StridedMatrix{TY}, w::Int8Weight, X::StridedMatrix{TX}, threshold::Real) where {TX,TY}
    size(X, 1) == w.in || throw(DimensionMismatch("X has $(size(X, 1)) rows, the weight $(w.in) columns"))
    size(Y) == (w.out, size(X, 2)) || throw(DimensionMismatch("Y is $(size(Y)), expected ($(w.out), $(size(X, 2)))"))
    stride(X, 1) == 1 && stride(X, 2) == w.in || throw(ArgumentError("X must be a dense column-major matrix"))
    stride(Y, 1) == 1 && stride(Y, 2) == w.out || throw(ArgumentError("Y must be a dense column-major matrix"))
    stats = Ref(MatmulStats())
    GC.@preserve X Y begin
        check(ccall((:llmint8_matmul, libllmint8), Int32,
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
    outlier_columns(W8, X; threshold = 6) -> Int

How many feature rows of `X` (columns of the C API's `[batch, in]`) hold an outlier.
"""
function outlier_columns(w::Int8Weight, X::StridedMatrix{T}; threshold::Real = DEFAULT_THRESHOLD) where {T}
    stats = matmul_stats!(similar(X, T, w.out, size(X, 2)), w, X, threshold)
    return Int(stats.outlier_columns)
end

end # module
