#!/usr/bin/env python3
"""Plots GOPS against M (K = N = 4096, 2 threads) for llmint8 and the baselines
from two CSV files: `cargo run --release --example bench -- sweep` and
scripts/bench_torch.py. Needs matplotlib.

    python scripts/plot_bench.py docs/bench-sweep-llmint8.csv docs/bench-sweep-torch.csv docs/bench-cpu.png
"""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows] for key in rows[0]}


def main(ours_csv, torch_csv, out_png):
    ours, ref = read(ours_csv), read(torch_csv)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    series = [
        (ours, "llmint8_t6", "llmint8 LLM.int8(), threshold 6", "C3", "-", 2.5),
        (ours, "llmint8_t0", "llmint8, threshold 0", "C3", "--", 1.8),
        (ref, "bnb_t6", "bitsandbytes 0.50.2, threshold 6", "C0", "-", 1.8),
        (ref, "bnb_t0", "bitsandbytes, threshold 0", "C0", "--", 1.5),
        (ref, "torch_int_mm", "torch._int_mm (oneDNN int8, no quantization)", "C2", ":", 1.5),
        (ref, "torch_bf16", "torch bf16 GEMM", "C1", "-.", 1.5),
        (ref, "torch_f32", "torch f32 GEMM", "C7", "-.", 1.5),
        (ours, "f32_matrixmultiply", "matrixmultiply f32 GEMM", "C7", ":", 1.5),
    ]
    for data, key, label, color, style, width in series:
        pts = [(m, v) for m, v in zip(data["m"], data[key]) if not math.isnan(v)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, lw=width, marker="o", ms=3, label=label)
    ax.axhline(934, color="k", lw=0.8, alpha=0.5)
    ax.text(512, 950, "AVX-512 VNNI peak of this machine (2 × 467 GOPS, measured)", fontsize=8, alpha=0.7, ha="right")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M (rows of activations), K = N = 4096")
    ax.set_ylabel("GOPS (2·M·K·N / time)")
    ax.set_title("CPU, AMD EPYC Zen 4, 2 threads")
    ax.set_ylim(0, 1050)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.87))
    fig.tight_layout()
    fig.savefig(out_png)


if __name__ == "__main__":
    main(*sys.argv[1:4])
