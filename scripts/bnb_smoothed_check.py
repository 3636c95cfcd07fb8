#!/usr/bin/env python3
"""What transformers + bitsandbytes do with an 8-bit folder holding smoothed
layers (issue 32): `llmint8 convert --smooth` writes such a layer's int8
values of W·diag(s) with weight_format 83, which bitsandbytes' Linear8bitLt
state-dict hook refuses ("Expected supported weight format - got 83"), and
sets quantization_config.bnb_4bit_compute_dtype to a name that is not a torch
dtype, which transformers refuses when it reads the config (transformers 5
does not run bitsandbytes' hook: with weight_format 83 alone it loaded the
folder, silently wrong).

Converts tests/data/tiny-llama-fp16 twice with target/release/llmint8 — plainly
and smoothing one layer — and loads both with
`AutoModelForCausalLM.from_pretrained` (bitsandbytes' 8-bit form, on the CPU):
the plain folder must load and run, the smoothed one must be refused (by
the config marker or by bitsandbytes' weight format check). Then the same
smoothed folder with a plain config, to show what the weight format alone
does in the installed versions. Exit status 1 when the smoothed folder loads. Needs torch, bitsandbytes and transformers (not part of the test
command: several GB):
    python3 -m venv /tmp/bnbenv
    /tmp/bnbenv/bin/pip install torch bitsandbytes transformers accelerate
    cargo build --release
    /tmp/bnbenv/bin/python scripts/bnb_smoothed_check.py
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "tests", "data", "tiny-llama-fp16")
LAYER = "model.layers.0.self_attn.q_proj"


def convert(out, extra):
    tool = os.path.join(ROOT, "target", "release", "llmint8")
    done = subprocess.run([tool, "convert", "--quiet", SOURCE, out] + extra, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"llmint8 convert failed: {done.stderr}")
    return done.stderr


def main():
    import bitsandbytes

    print(f"torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}, transformers {transformers.__version__}")
    with open(os.path.join(SOURCE, "config.json")) as f:
        hidden = json.load(f)["hidden_size"]
    with tempfile.TemporaryDirectory() as tmp:
        vectors = os.path.join(tmp, "smooth.json")
        with open(vectors, "w") as f:
            json.dump({LAYER: [0.5 + (c % 4) * 0.5 for c in range(hidden)]}, f)
        plain, smoothed = os.path.join(tmp, "plain"), os.path.join(tmp, "smoothed")
        convert(plain, [])
        warning = convert(smoothed, ["--smooth", vectors])
        print(f"llmint8 convert --smooth says: {warning.strip()}")
        model = AutoModelForCausalLM.from_pretrained(plain, device_map="cpu")
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
        print(f"plain 8-bit folder: loaded, logits {tuple(logits.shape)}, finite: {bool(torch.isfinite(logits).all())}")
        refused = attempt(smoothed, "smoothed 8-bit folder")
        with open(os.path.join(plain, "config.json")) as f:
            plain_config = f.read()
        with open(os.path.join(smoothed, "config.json"), "w") as f:
            f.write(plain_config)
        attempt(smoothed, "the same with a plain config (weight_format 83 alone)")
        layer_state_dict(smoothed)
        if not refused:
            sys.exit("the smoothed 8-bit folder LOADED in transformers + bitsandbytes: it would be silently wrong")


def layer_state_dict(folder):
    """The smoothed layer's tensors into a bitsandbytes Linear8bitLt directly
    (how a state dict reaches bitsandbytes without transformers' loader)."""
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    tensors = load_file(os.path.join(folder, "model.safetensors"))
    state = {k[len(LAYER) + 1 :]: v for k, v in tensors.items() if k.startswith(LAYER + ".") and "llmint8" not in k}
    out, inn = state["weight"].shape
    module = bnb.nn.Linear8bitLt(inn, out, bias=False, has_fp16_weights=False)
    try:
        module.load_state_dict(state)
    except ValueError as e:
        print(f"Linear8bitLt.load_state_dict of the smoothed layer: refused, ValueError: {e}")
        return
    print("Linear8bitLt.load_state_dict of the smoothed layer: LOADED")


def attempt(folder, what):
    """Loads `folder`; prints what happened; returns whether it was refused."""
    try:
        AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    except (ValueError, AttributeError) as e:
        print(f"{what}: refused, {type(e).__name__}: {e}")
        return True
    print(f"{what}: LOADED (its outputs would be wrong)")
    return False


if __name__ == "__main__":
    main()
