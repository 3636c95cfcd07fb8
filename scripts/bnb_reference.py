#!/usr/bin/env python3
"""Writes extra reference cases from bitsandbytes into tests/data/extra/, in the
same format as ../shared/golden (see tests/data/GOLDEN-README.md): other shapes,
dtypes and thresholds than the shared set, including zero rows, many outlier
columns and in_features not a multiple of 4.

Needs torch and bitsandbytes (the CPU backend is enough):
    python3 -m venv /tmp/bnbenv && /tmp/bnbenv/bin/pip install torch bitsandbytes safetensors
    /tmp/bnbenv/bin/python scripts/bnb_reference.py
The output is committed; the tests do not run this script.
"""
import json
import os

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import save_file

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

# (m, k, n, dtype, threshold, bias, x scale, outlier features, zero rows)
CONFIGS = [
    (1, 64, 48, "float16", 3.0, True, 1.0, 2, 0),
    (5, 777, 129, "bfloat16", 1.5, True, 1.0, 3, 0),
    (17, 300, 71, "float32", 6.0, False, 1.0, 4, 1),
    (3, 4096, 64, "float16", 6.0, True, 1.0, 6, 0),
    (128, 515, 200, "bfloat16", 6.0, False, 1.0, 5, 2),
    (9, 203, 37, "float32", 0.5, True, 1.0, 0, 0),
    (2, 96, 96, "float16", 10.0, False, 3.0, 3, 1),
    (31, 1001, 13, "float16", 2.0, True, 1.0, 7, 0),
    (64, 257, 300, "float32", 4.0, True, 2.0, 2, 0),
    (4, 33, 5, "bfloat16", 6.0, True, 10.0, 1, 0),
]


def linear8bitlt_forward(w, bias, x, threshold):
    """One Linear8bitLt forward, built as transformers' load_in_8bit builds it, on
    the CPU. Returns (y, CB, SCB)."""
    layer = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=bias is not None,
                                has_fp16_weights=False, threshold=threshold)
    sd = {"weight": w}
    if bias is not None:
        sd["bias"] = bias
    layer.load_state_dict(sd)
    layer = layer.to("cpu").eval()
    cb, scb = layer.weight.data.clone(), layer.weight.SCB.clone()
    with torch.no_grad():
        y = layer(x)
    return y, cb, scb


def main():
    torch.manual_seed(20261126)
    out_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "extra")
    os.makedirs(out_dir, exist_ok=True)
    quant, linear, cases = {}, {}, []
    for i, (m, k, n, dname, threshold, has_bias, scale, n_out, zero_rows) in enumerate(CONFIGS):
        dtype = DTYPES[dname]
        x = torch.randn(m, k) * scale
        for c in torch.randperm(k)[:n_out]:
            mask = torch.rand(m) < 0.8
            x[mask, c] = torch.sign(torch.randn(int(mask.sum()))) * (8 + 12 * torch.rand(int(mask.sum())))
        x[:zero_rows] = 0
        x = x.to(dtype)
        w = (torch.randn(n, k) / k**0.5).to(dtype)
        bias = (torch.randn(n) * 0.1).to(dtype) if has_bias else None
        for t in (threshold, 0.0):
            name = f"x{i}_t{t:g}".replace(".", "p")
            q, scale_a, cols = F.int8_vectorwise_quant(x, threshold=t)
            cols = cols if cols is not None else torch.zeros(0, dtype=torch.int64)
            quant[f"{name}.x"] = x
            quant[f"{name}.CA"] = q
            quant[f"{name}.SCA"] = scale_a.float()
            quant[f"{name}.outlier_cols"] = cols.to(torch.int64).sort().values

            y, cb, scb = linear8bitlt_forward(w, bias, x, t)
            linear[f"{name}.w"] = w
            if has_bias:
                linear[f"{name}.bias"] = bias
            linear[f"{name}.CB"] = cb
            linear[f"{name}.SCB"] = scb
            linear[f"{name}.x"] = x
            linear[f"{name}.y"] = y.to(dtype)
            cases.append(dict(name=name, m=m, k=k, n=n, dtype=dname, threshold=t, bias=has_bias,
                              outlier_cols=int(quant[f"{name}.outlier_cols"].numel())))
    meta = {"generator": f"bitsandbytes {bnb.__version__}, torch {torch.__version__}, CPU backend",
            "script": "scripts/bnb_reference.py"}
    save_file({k: v.clone().contiguous() for k, v in quant.items()}, os.path.join(out_dir, "quant.safetensors"), meta)
    save_file({k: v.clone().contiguous() for k, v in linear.items()}, os.path.join(out_dir, "linear.safetensors"), meta)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"{len(cases)} cases written to {os.path.normpath(out_dir)}")


if __name__ == "__main__":
    main()
