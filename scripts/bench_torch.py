#!/usr/bin/env python3
"""The reference points for the CPU benchmark plot: PyTorch's float32 and
bfloat16 GEMMs, its raw int8 GEMM (torch._int_mm, oneDNN, no quantization) and
bitsandbytes' Linear8bitLt (thresholds 6 and 0), at K = N = 4096 on 2 threads,
with the same activations as examples/bench.rs (6 outlier features of
magnitude 20-60). Prints CSV for scripts/plot_bench.py.

    /tmp/bnbenv/bin/python scripts/bench_torch.py > /tmp/sweep_torch.csv
"""
import time

import torch
import bitsandbytes as bnb

torch.set_num_threads(2)
K = N = 4096


def median_time(f, reps=7):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    w = torch.randn(N, K) / K**0.5
    layers = {}
    for t in (6.0, 0.0):
        layer = bnb.nn.Linear8bitLt(K, N, bias=False, has_fp16_weights=False, threshold=t)
        layer.load_state_dict({"weight": w})
        layers[t] = layer.to("cpu").eval()
    wt, wb = w.t().contiguous(), w.t().contiguous().bfloat16()
    w8 = torch.randint(-127, 128, (K, N), dtype=torch.int8)
    print("m,torch_f32,torch_bf16,torch_int_mm,bnb_t6,bnb_t0")
    for m in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
        x = torch.randn(m, K)
        for d in range(6):
            x[:, (d * 997 + 123) % K] = 20 + 40 * torch.rand(m)
        xb, x8 = x.bfloat16(), torch.randint(-127, 128, (m, K), dtype=torch.int8)
        ops = 2 * m * K * N
        g = lambda f: ops / median_time(f) / 1e9  # noqa: E731
        with torch.no_grad():
            row = [g(lambda: x @ wt), g(lambda: xb @ wb),
                   # torch._int_mm refuses 16 rows or fewer.
                   g(lambda: torch._int_mm(x8, w8)) if m > 16 else float("nan"),
                   g(lambda: layers[6.0](x)), g(lambda: layers[0.0](x))]
        print(m, *("%.1f" % v for v in row), sep=",", flush=True)


if __name__ == "__main__":
    main()
