#!/usr/bin/env python3
"""The CUDA backend on a real GPU, through the C ABI (ctypes) with PyTorch
holding the device memory and the stream: correctness against the CPU backend
(bit for bit) and an f64 reference, the device-pointer entry points, and the
benchmark against cuBLAS fp16 (torch.matmul) measured in the same run.

    python3 scripts/gpu_check.py target/release/libllmint8.so [--quick]

Prints one line per check, then the benchmark table last. Exit status 1 when a
check fails. Run by scripts/gpu-check.sh on the device machine.
"""
import ctypes as C
import statistics
import sys
import time

import torch

LIB = C.CDLL(sys.argv[1])
QUICK = "--quick" in sys.argv
F32, F16, BF16 = 0, 1, 2
CPU, CUDA = 1, 2
DT = {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16}
vp, sz, i32, f32 = C.c_void_p, C.c_size_t, C.c_int32, C.c_float


class Stats(C.Structure):
    _fields_ = [("outlier_columns", C.c_uint64), ("reserved", C.c_uint64 * 7)]


LIB.llmint8_context_create.argtypes = [i32, i32, C.POINTER(vp)]
LIB.llmint8_context_destroy.argtypes = [vp]
LIB.llmint8_context_set_stream.argtypes = [vp, vp]
LIB.llmint8_context_synchronize.argtypes = [vp]
LIB.llmint8_context_set_input_rounding.argtypes = [vp, i32]
for name in ("llmint8_weight_quantize", "llmint8_weight_quantize_device"):
    getattr(LIB, name).argtypes = [vp, vp, i32, sz, sz, vp, i32, C.POINTER(vp)]
LIB.llmint8_weight_export.argtypes = [vp, vp, vp]
LIB.llmint8_weight_destroy.argtypes = [vp]
for name in ("llmint8_matmul", "llmint8_matmul_host"):
    getattr(LIB, name).argtypes = [vp, vp, vp, i32, sz, f32, vp, i32, C.POINTER(Stats)]
LIB.llmint8_last_error.restype = C.c_char_p
LIB.llmint8_version.restype = C.c_char_p

FAILURES = []


def check(status, what):
    if status != 0:
        raise RuntimeError(f"{what}: status {status}: {LIB.llmint8_last_error().decode()}")


def report(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def context(backend):
    ctx = vp()
    check(LIB.llmint8_context_create(backend, 0, C.byref(ctx)), "context_create")
    return ctx


def weight_host(ctx, w, bias=None):
    """Quantizes a host tensor [n, k] (any dtype) on `ctx`."""
    out = vp()
    b = bias.contiguous() if bias is not None else None
    check(LIB.llmint8_weight_quantize(ctx, w.data_ptr(), DT[w.dtype], w.shape[0], w.shape[1],
                                      b.data_ptr() if b is not None else None, DT[b.dtype] if b is not None else 0,
                                      C.byref(out)), "weight_quantize")
    return out


def weight_device(ctx, w, bias=None):
    out = vp()
    check(LIB.llmint8_weight_quantize_device(ctx, w.data_ptr(), DT[w.dtype], w.shape[0], w.shape[1],
                                             bias.data_ptr() if bias is not None else None,
                                             DT[bias.dtype] if bias is not None else 0, C.byref(out)),
          "weight_quantize_device")
    return out


def export(w, n, k):
    cb = torch.empty(n, k, dtype=torch.int8)
    scb = torch.empty(n, dtype=torch.float32)
    check(LIB.llmint8_weight_export(w, cb.data_ptr(), scb.data_ptr()), "weight_export")
    return cb, scb


def on_device(t):
    """`t` copied to the GPU, the copy finished: llmint8 may run on another stream."""
    t = t.cuda()
    torch.cuda.synchronize()
    return t


def matmul(ctx, w, x, n, threshold, y_dtype, host):
    rows = x.shape[0]
    y = torch.full((rows, n), float("nan"), dtype=y_dtype, device=x.device)
    if y.is_cuda:
        torch.cuda.synchronize()  # the fill runs on PyTorch's stream, llmint8 on its own
    stats = Stats()
    fn = LIB.llmint8_matmul_host if host else LIB.llmint8_matmul
    check(fn(ctx, w, x.data_ptr(), DT[x.dtype], rows, threshold, y.data_ptr(), DT[y_dtype], C.byref(stats)), "matmul")
    return y, stats.outlier_columns


def activations(rows, k, outliers, dtype, gen):
    x = torch.randn(rows, k, generator=gen) * 0.5
    cols = torch.randperm(k, generator=gen)[:outliers]
    x[:, cols] = torch.randn(rows, outliers, generator=gen) * 20 + 10
    return x.to(dtype)


def reference(x, cb, scb, bias, threshold):
    """LLM.int8() in float64 from the int8 weight (src/quant.rs's definition)."""
    x = x.double()
    w = cb.double() * scb.double()[:, None] / 127
    out_cols = ((x.abs() >= threshold) | ~torch.isfinite(x)).any(0) if threshold > 0 else torch.zeros(x.shape[1], dtype=torch.bool)
    # The row absmax leaves out outlier values only (not whole outlier columns).
    outlier = ((x.abs() >= threshold) | ~torch.isfinite(x)) if threshold > 0 else torch.zeros_like(x, dtype=torch.bool)
    sa = torch.where(outlier, torch.zeros_like(x), x.abs()).amax(1, keepdim=True)
    xi = x.clone()
    xi[:, out_cols] = 0
    q = torch.where(sa > 0, torch.round(xi * 127 / sa), torch.zeros_like(xi))
    y = (q @ cb.double().T) * sa * scb.double()[None, :] / 127**2 + x[:, out_cols] @ w[:, out_cols].T
    if bias is not None:
        y = y + bias.double()
    return y


def correctness():
    gen = torch.Generator().manual_seed(7)
    cpu, gpu = context(CPU), context(CUDA)
    stream = torch.cuda.Stream()
    check(LIB.llmint8_context_set_stream(gpu, C.c_void_p(stream.cuda_stream)), "set_stream")
    shapes = [(1, 64, 77), (3, 333, 301), (16, 4096, 512), (100, 1000, 2000), (512, 4096, 4096), (5, 65, 17)]
    if QUICK:
        shapes = shapes[:3]
    for rows, k, n in shapes:
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            w = (torch.randn(n, k, generator=gen) * 0.05).to(dtype)
            bias = torch.randn(n, generator=gen).to(dtype) if n % 2 else None
            x = activations(rows, k, min(6, k), dtype, gen)
            wc = weight_host(cpu, w, bias)
            wg = weight_host(gpu, w, bias)
            wd = weight_device(gpu, on_device(w), bias)
            cb_c, scb_c = export(wc, n, k)
            cb_g, scb_g = export(wg, n, k)
            cb_d, scb_d = export(wd, n, k)
            tag = f"[{rows}x{k}]·[{n}x{k}]ᵀ {str(dtype)[6:]}"
            report(f"weight quantized on the device = on the CPU {tag}",
                   torch.equal(cb_c, cb_d) and torch.equal(scb_c, scb_d) and torch.equal(cb_c, cb_g))
            for threshold in (6.0, 0.0):
                for y_dtype in (torch.float32, torch.float16, torch.bfloat16):
                    y_cpu, n_cpu = matmul(cpu, wc, x, n, threshold, y_dtype, host=True)
                    y_host, n_host = matmul(gpu, wg, x, n, threshold, y_dtype, host=True)
                    xd = on_device(x)
                    y_dev, n_dev = matmul(gpu, wd, xd, n, threshold, y_dtype, host=False)
                    y_dev = y_dev.cpu()
                    same = torch.equal(y_cpu, y_host) and torch.equal(y_cpu, y_dev) and n_cpu == n_host == n_dev
                    ref = reference(x, cb_c, scb_c, bias, threshold)
                    err = ((y_dev.double() - ref).norm() / ref.norm()).item()
                    tol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[y_dtype]
                    report(f"GPU = CPU bit for bit, t={threshold:g} -> {str(y_dtype)[6:]} {tag}",
                           same and err < tol, f"(outliers {n_dev}, rel err vs f64 {err:.2e})")
            for h in (wc, wg, wd):
                LIB.llmint8_weight_destroy(h)
    # Asynchrony: no stats -> the call only queues work; y is right after a sync.
    w = on_device((torch.randn(4096, 4096, generator=gen) * 0.05).half())
    wd = weight_device(gpu, w)
    x = on_device(activations(64, 4096, 6, torch.float16, gen))
    y = torch.empty(64, 4096, dtype=torch.float16, device="cuda")
    torch.cuda.synchronize()
    check(LIB.llmint8_matmul(gpu, wd, x.data_ptr(), F16, 64, 6.0, y.data_ptr(), F16, None), "matmul async")
    check(LIB.llmint8_context_synchronize(gpu), "synchronize")
    y2, _ = matmul(gpu, wd, x, 4096, 6.0, torch.float16, host=False)
    report("matmul without stats, then synchronize", torch.equal(y, y2))
    # Host memory handed to the device entry point is refused.
    xh = x.cpu()
    status = LIB.llmint8_matmul(gpu, wd, xh.data_ptr(), F16, 64, 6.0, y.data_ptr(), F16, None)
    report("host x refused by llmint8_matmul on CUDA", status == 1, LIB.llmint8_last_error().decode()[:80])
    LIB.llmint8_weight_destroy(wd)
    LIB.llmint8_context_destroy(gpu)
    LIB.llmint8_context_destroy(cpu)


def bench():
    """Median time (CUDA events) of llmint8 and torch fp16 on the same stream."""
    gpu = context(CUDA)
    stream = torch.cuda.current_stream()
    check(LIB.llmint8_context_set_stream(gpu, C.c_void_p(stream.cuda_stream)), "set_stream")
    gen = torch.Generator().manual_seed(1)
    rows_out = []
    shapes = [(8192, 8192), (28672, 8192)]
    ms = [1, 4, 16, 4096] if not QUICK else [1, 4096]
    for n, k in shapes:
        # Several weights, rotated, so the int8 weight (and the fp16 one) are
        # read from memory, not from the 50 MB L2.
        copies = 3
        ws = [on_device((torch.randn(n, k, generator=gen) * 0.02).half()) for _ in range(copies)]
        hs = [weight_device(gpu, w) for w in ws]
        for m in ms:
            x = on_device(activations(m, k, 6, torch.float16, gen))
            y = torch.empty(m, n, dtype=torch.float16, device="cuda")
            reps = 50 if m < 4096 else 20

            def run_llm(t, i):
                check(LIB.llmint8_matmul(gpu, hs[i % copies], x.data_ptr(), F16, m, t, y.data_ptr(), F16, None), "bench")

            def run_fp16(i):
                torch.matmul(x, ws[i % copies].T, out=y)

            def timed(f):
                for i in range(5):
                    f(i)
                times = []
                for i in range(reps):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    f(i)
                    b.record()
                    b.synchronize()
                    times.append(a.elapsed_time(b) * 1e3)
                return statistics.median(times)

            t6 = timed(lambda i: run_llm(6.0, i))
            t0 = timed(lambda i: run_llm(0.0, i))
            tf = timed(run_fp16)
            rows_out.append((m, n, k, t6, t0, tf))
        for h in hs:
            LIB.llmint8_weight_destroy(h)
    LIB.llmint8_context_destroy(gpu)
    return rows_out


def main():
    print(f"llmint8 {LIB.llmint8_version().decode()}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    t = time.time()
    # A failure that raises stops the checks but not the benchmark (the lease is short).
    try:
        correctness()
    except Exception as e:  # noqa: BLE001 - report whatever failed and go on
        report("correctness (stopped early)", False, f"{type(e).__name__}: {e}")
    print(f"correctness: {time.time() - t:.1f} s, {len(FAILURES)} failures", flush=True)
    try:
        table = bench()
    except Exception as e:  # noqa: BLE001
        report("benchmark", False, f"{type(e).__name__}: {e}")
        table = []
    print("\n| M | N | K | llmint8 t=6 µs | t=0 µs | cuBLAS fp16 µs | fp16 / t=6 | fp16 / t=0 |")
    print("|---|---|---|---|---|---|---|---|")
    for m, n, k, t6, t0, tf in table:
        print(f"| {m} | {n} | {k} | {t6:.1f} | {t0:.1f} | {tf:.1f} | {tf / t6:.2f}× | {tf / t0:.2f}× |")
    if FAILURES:
        print(f"\n{len(FAILURES)} checks failed: {FAILURES[:5]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
