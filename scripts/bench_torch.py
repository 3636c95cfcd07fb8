#!/usr/bin/env python3
"""The CPU baselines beside llmint8, in one sitting, on 2 threads, with the
activations of examples/bench.rs (6 outlier feature columns of magnitude
20-60): PyTorch's bfloat16 product (F.linear; oneDNN, AMX where present), its
raw int8 product (torch._int_mm: no quantization, no decomposition) and
bitsandbytes' Linear8bitLt at thresholds 6 and 0.

    python scripts/bench_torch.py table [REPS] [--rounds N]   # llmint8 by CPU path + the baselines, markdown
    python scripts/bench_torch.py sweep   # K = N = 4096, M = 1..512, CSV for scripts/plot_bench.py

`table` first runs `target/release/examples/bench prefill` once per CPU path
this machine has (LLMINT8_CPU_PATH; build it with `cargo build --release
--example bench`), each in its own process and before any PyTorch work, then
measures the baselines. Needs torch and bitsandbytes (pip install torch
bitsandbytes).
"""
import os
import re
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
import bitsandbytes as bnb

torch.set_num_threads(2)
SHAPES = [(1, 4096, 4096), (16, 4096, 4096), (128, 4096, 4096), (512, 4096, 4096),
          (128, 4096, 11008), (512, 4096, 11008)]
BENCH = os.path.join(os.path.dirname(__file__), "..", "target", "release", "examples", "bench")


def median_time(f, reps=7):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def int8_hardware():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    found = [name for name in ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni") if name in flags]
    return ", ".join(found) or "no int8 dot-product instructions"


def activations(m, k):
    x = torch.randn(m, k)
    for d in range(6):
        x[:, (d * 997 + 123) % k] = 20 + 40 * torch.rand(m)
    return x


def baselines(m, k, n):
    """GOPS of torch bf16, torch._int_mm, bitsandbytes t = 6 and t = 0."""
    w = torch.randn(n, k) / k**0.5
    x = activations(m, k)
    wb, xb = w.bfloat16(), x.bfloat16()
    w8 = torch.randint(-127, 128, (k, n), dtype=torch.int8)
    x8 = torch.randint(-127, 128, (m, k), dtype=torch.int8)
    g = lambda f: 2 * m * k * n / median_time(f) / 1e9  # noqa: E731
    row = []
    with torch.no_grad():
        row.append(g(lambda: F.linear(xb, wb)))
        try:
            row.append(g(lambda: torch._int_mm(x8, w8)))
        except RuntimeError:  # older versions refuse 16 rows or fewer
            row.append(float("nan"))
        for t in (6.0, 0.0):
            layer = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=t)
            layer.load_state_dict({"weight": w})
            layer = layer.to("cpu").eval()
            row.append(g(lambda: layer(x)))
    return row


def llmint8_by_path(reps):
    """{path: {(m, k, n): (gops t=6, gops t=0)}} from examples/bench, one process per path."""
    paths = ["avx512vnni", "amx"] if "amx_int8" in int8_hardware() else ["avx512vnni"]
    if "avx512_vnni" not in int8_hardware():
        paths = ["avx2"]
    out = {}
    for path in paths:
        env = dict(os.environ, LLMINT8_CPU_PATH=path)
        text = subprocess.run([BENCH, "prefill", "--reps", str(reps)], env=env, check=True,
                              capture_output=True, text=True).stdout
        rows = {}
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) >= 5 and all(re.fullmatch(r"\d+", c) for c in cells[:3]):
                rows[tuple(int(c) for c in cells[:3])] = (float(cells[3]), float(cells[4]))
        out[path] = rows
    return out


def table(reps, rounds=1):
    """The table; with rounds > 1, llmint8 and the baselines are measured
    alternately that many times and each cell is the best of its rounds (on a
    shared VM whose speed drifts within minutes, so that no column is measured
    only in a slow spell)."""
    best = {}
    for _ in range(rounds):
        ours = llmint8_by_path(reps)
        for shape in SHAPES:
            cells = [v for p in ours for v in ours[p].get(shape, (float("nan"),) * 2)]
            cells += baselines(*shape)
            best[shape] = [max(a, b) for a, b in zip(best.get(shape, cells), cells)]
    print(f"int8 hardware: {int8_hardware()}; torch {torch.__version__} "
          f"(cpu capability {torch.backends.cpu.get_cpu_capability()}), bitsandbytes {bnb.__version__}, 2 threads; GOPS"
          + (f", best of {rounds} alternating rounds" if rounds > 1 else ""))
    print()
    head = [f"llmint8 {p} t = {t}" for p in ours for t in (6, 0)]
    head += ["torch bf16", "torch._int_mm", "bitsandbytes t = 6", "bitsandbytes t = 0"]
    print("| M | K | N | " + " | ".join(head) + " |")
    print("|---" * (3 + len(head)) + "|")
    for shape in SHAPES:
        print("| %d | %d | %d | " % shape + " | ".join("%.0f" % v for v in best[shape]) + " |", flush=True)


def sweep():
    k = n = 4096
    w = torch.randn(n, k) / k**0.5
    layers = {}
    for t in (6.0, 0.0):
        layer = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=t)
        layer.load_state_dict({"weight": w})
        layers[t] = layer.to("cpu").eval()
    wt, wb = w.t().contiguous(), w.t().contiguous().bfloat16()
    w8 = torch.randint(-127, 128, (k, n), dtype=torch.int8)
    print("m,torch_f32,torch_bf16,torch_int_mm,bnb_t6,bnb_t0")
    for m in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
        x = activations(m, k)
        xb, x8 = x.bfloat16(), torch.randint(-127, 128, (m, k), dtype=torch.int8)
        g = lambda f: 2 * m * k * n / median_time(f) / 1e9  # noqa: E731
        with torch.no_grad():
            try:
                int_mm = g(lambda: torch._int_mm(x8, w8))
            except RuntimeError:
                int_mm = float("nan")
            row = [g(lambda: x @ wt), g(lambda: xb @ wb), int_mm,
                   g(lambda: layers[6.0](x)), g(lambda: layers[0.0](x))]
        print(m, *("%.1f" % v for v in row), sep=",", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "table"
    if mode == "table":
        args = sys.argv[2:]
        rounds = 1
        if "--rounds" in args:
            at = args.index("--rounds")
            rounds = int(args[at + 1])
            del args[at:at + 2]
        table(int(args[0]) if args else 5, rounds)
    elif mode == "sweep":
        sweep()
    else:
        sys.exit(__doc__)
