#!/usr/bin/env python3
"""The CPU baselines beside llmint8, on 2 threads, float16 activations and
outputs, with the activations of examples/bench.rs (6 outlier feature columns
of magnitude 20-60): PyTorch's float32 and bfloat16 products (F.linear; oneDNN,
AMX where present), its raw int8 product (torch._int_mm: no quantization, no
decomposition) and bitsandbytes' Linear8bitLt at thresholds 6 and 0.

    python scripts/bench_torch.py table [REPS] [--rounds N]   # markdown, N alternating rounds (3)
    python scripts/bench_torch.py sweep   # K = N = 4096, M = 1..512, CSV for scripts/plot_bench.py

`table` runs `target/release/examples/bench shape M K N --dtype f16` once per
shape and CPU path this machine has (LLMINT8_CPU_PATH; build it with `cargo
build --release --example bench`), each in its own process and before any
PyTorch work of the round, then measures the baselines; each cell is the
minimum and maximum over the rounds, and the lines under the table give the
issue's ratios per round. Needs torch and bitsandbytes (pip install torch
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
    """GOPS of torch f32, torch bf16, torch._int_mm, bitsandbytes t = 6 and t = 0."""
    w = torch.randn(n, k) / k**0.5
    x = activations(m, k)
    xh, wb, xb = x.half(), w.bfloat16(), x.bfloat16()
    w8 = torch.randint(-127, 128, (k, n), dtype=torch.int8)
    x8 = torch.randint(-127, 128, (m, k), dtype=torch.int8)
    g = lambda f: 2 * m * k * n / median_time(f) / 1e9  # noqa: E731
    row = []
    with torch.no_grad():
        row.append(g(lambda: F.linear(x, w)))
        row.append(g(lambda: F.linear(xb, wb)))
        try:
            row.append(g(lambda: torch._int_mm(x8, w8)))
        except RuntimeError:  # older versions refuse 16 rows or fewer
            row.append(float("nan"))
        for t in (6.0, 0.0):
            layer = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=t)
            layer.load_state_dict({"weight": w})
            layer = layer.to("cpu").eval()
            row.append(g(lambda: layer(xh)))
    return row


def processor():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def llmint8_by_path(reps):
    """{path: {(m, k, n): (gops t=6, gops t=0)}} from `bench shape --dtype f16`, one process per shape and path."""
    paths = ["avx512vnni", "amx"] if "amx_int8" in int8_hardware() else ["avx512vnni"]
    if "avx512_vnni" not in int8_hardware():
        paths = ["avx2"]
    out = {}
    for path in paths:
        env = dict(os.environ, LLMINT8_CPU_PATH=path)
        rows = {}
        for m, k, n in SHAPES:
            text = subprocess.run([BENCH, "shape", str(m), str(k), str(n), "--dtype", "f16", "--reps", str(reps)],
                                  env=env, check=True, capture_output=True, text=True).stdout
            gops = {float(t): float(g) for t, g in re.findall(r" t ([\d.]+): [\d.]+ µs, ([\d.]+) GOPS", text)}
            rows[(m, k, n)] = (gops[6.0], gops[0.0])
        out[path] = rows
    return out


def table(reps, rounds):
    """The table: llmint8 and the baselines measured alternately `rounds`
    times (on a shared VM whose speed drifts within minutes); each cell the
    minimum and maximum of its rounds, then the targets' ratios round by round."""
    per_round = []
    for _ in range(rounds):
        ours = llmint8_by_path(reps)
        cells = {}
        for shape in SHAPES:
            cells[shape] = [v for p in ours for v in ours[p][shape]] + baselines(*shape)
        per_round.append(cells)
    print(f"{processor()}; int8 hardware: {int8_hardware()}; torch {torch.__version__} "
          f"(cpu capability {torch.backends.cpu.get_cpu_capability()}), bitsandbytes {bnb.__version__}, "
          f"2 threads, float16 in and out; GOPS, min-max of {rounds} alternating rounds (median of {reps} calls each)")
    print()
    head = [f"llmint8 {p} t = {t}" for p in ours for t in (6, 0)]
    head += ["torch f32", "torch bf16", "torch._int_mm", "bitsandbytes t = 6", "bitsandbytes t = 0"]
    print("| M | K | N | " + " | ".join(head) + " |")
    print("|---" * (3 + len(head)) + "|")
    for shape in SHAPES:
        cols = zip(*(r[shape] for r in per_round))
        print("| %d | %d | %d | " % shape + " | ".join("%.0f-%.0f" % (min(c), max(c)) for c in cols) + " |")
    # The targets: the fastest path's t = 6 against torch._int_mm and bf16 (M = 128, 512),
    # and against bitsandbytes t = 0 (M >= 16), in every round.
    best = len(ours) * 2 - 2  # the last path's t = 6 column (amx where present)
    base = len(ours) * 2
    print()
    for shape in SHAPES:
        m = shape[0]
        r = [(c[shape][best] / c[shape][base + 2], c[shape][best] / c[shape][base + 1],
              c[shape][best] / c[shape][base + 4]) for c in per_round]
        if m >= 16:
            print(f"- {shape}: llmint8 t = 6 / torch._int_mm " + ", ".join("%.2f" % x[0] for x in r)
                  + "; / torch bf16 " + ", ".join("%.2f" % x[1] for x in r)
                  + "; / bitsandbytes t = 0 " + ", ".join("%.2f" % x[2] for x in r))
    sys.stdout.flush()


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
        rounds = 3
        if "--rounds" in args:
            at = args.index("--rounds")
            rounds = int(args[at + 1])
            del args[at:at + 2]
        table(int(args[0]) if args else 5, rounds)
    elif mode == "sweep":
        sweep()
    else:
        sys.exit(__doc__)
