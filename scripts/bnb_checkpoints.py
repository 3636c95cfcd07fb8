#!/usr/bin/env python3
"""Checkpoints written by transformers + bitsandbytes, and a check of llmint8's converter.

`generate [NAME...]`: builds four tiny random models other than ../shared's
tiny-llama — OPT in float32 (linear layers with biases), GPT-NeoX in bfloat16
(biases, `embed_out`), GPT-2 in float16 (Conv1D layers, stored [in, out]) and
Llama in float16 saved in shards — saves each in 16/32-bit
(`<name>-src/`) and as transformers + bitsandbytes save it after
`load_in_8bit=True` (`<name>-int8/`), and records `reference_io.safetensors`
in the 8-bit directory: for two layers, an input with outlier features and the
layer's output through bitsandbytes' Linear8bitLt. Written to
tests/data/bnb-models/ (committed; tests/checkpoints.rs reads them).

`check LLMINT8_BIN`: converts each `<name>-src/` (and ../shared's tiny-llama-fp16)
with `llmint8 convert`, loads the result in transformers + bitsandbytes, and
compares it with bitsandbytes' own conversion of the same model: every int8
weight and SCB, and the logits of one forward pass. Then converts with
`--keep-columns` (columns 0 and 3 of every layer) and checks that transformers
+ bitsandbytes load that too, with the same state and logits as the plain
conversion (the `--keep-columns` rows compare with it). Prints a table.

Needs torch, transformers, accelerate and bitsandbytes (CPU backend):
    python3 -m venv /tmp/bnbenv && /tmp/bnbenv/bin/pip install torch bitsandbytes safetensors transformers accelerate
    /tmp/bnbenv/bin/python scripts/bnb_checkpoints.py generate
    /tmp/bnbenv/bin/python scripts/bnb_checkpoints.py check target/release/llmint8
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "bnb-models")
SHARED = os.path.join(ROOT, "..", "shared", "golden", "tiny-llama-fp16")

MODELS = {
    "opt-f32": (
        transformers.OPTConfig,
        dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
             max_position_embeddings=64, word_embed_proj_dim=64, enable_bias=True),
        torch.float32,
        None,
        ["model.decoder.layers.0.self_attn.q_proj", "model.decoder.layers.1.fc2"],
    ),
    "gpt-neox-bf16": (
        transformers.GPTNeoXConfig,
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
             max_position_embeddings=64),
        torch.bfloat16,
        None,
        ["gpt_neox.layers.0.attention.query_key_value", "gpt_neox.layers.1.mlp.dense_4h_to_h"],
    ),
    "gpt2-f16": (
        transformers.GPT2Config,
        dict(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=64),
        torch.float16,
        None,
        ["transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj"],
    ),
    "llama-sharded-f16": (
        transformers.LlamaConfig,
        dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=128, max_position_embeddings=64),
        torch.float16,
        "60KB",
        ["model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"],
    ),
}

INPUT_IDS = torch.tensor([[1, 5, 9, 17, 33, 65, 100, 127]])


def load_8bit(path):
    return AutoModelForCausalLM.from_pretrained(
        path, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu").eval()


def generate(only=()):
    os.makedirs(OUT, exist_ok=True)
    for name, (config_cls, kwargs, dtype, shard, layers) in MODELS.items():
        if only and name not in only:
            continue
        torch.manual_seed(zlib.crc32(name.encode()))
        config = config_cls(**kwargs)
        model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
        src, int8 = os.path.join(OUT, name + "-src"), os.path.join(OUT, name + "-int8")
        for d in (src, int8):
            shutil.rmtree(d, ignore_errors=True)
        extra = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(src, **extra)
        q = load_8bit(src)
        q.save_pretrained(int8, **extra)
        # Inputs of the chosen layers in a real forward pass, with outlier features added.
        captured = {}
        modules = dict(q.named_modules())

        def keep_input(layer):
            def hook(module, args, output):
                captured.setdefault(layer, args[0].detach().clone())  # returns None: output unchanged
            return hook

        hooks = [modules[l].register_forward_hook(keep_input(l)) for l in layers]
        with torch.no_grad():
            q(INPUT_IDS)
        for h in hooks:
            h.remove()
        io = {}
        for l in layers:
            x = captured[l].reshape(-1, captured[l].shape[-1]).clone()
            x[:, 3] = 8.0 * torch.sign(x[:, 3] + 1e-3)
            x[1, 11] = -7.5
            with torch.no_grad():
                y = modules[l](x)
            io[l + ".x"], io[l + ".y"] = x.contiguous(), y.contiguous()
        save_file(io, os.path.join(int8, "reference_io.safetensors"),
                  metadata={"generator": f"transformers {transformers.__version__}, bitsandbytes, CPU backend",
                            "threshold": "6.0"})
        print("wrote", src, int8, sorted(os.listdir(int8)))


def state(model):
    return {k: v for k, v in model.state_dict().items()}


def check(binary):
    sources = [(n + "-src", os.path.join(OUT, n + "-src")) for n in MODELS]
    if os.path.isdir(SHARED):
        sources.insert(0, ("tiny-llama-fp16", SHARED))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in sources:
            for flag in ([], ["--exact"]):
                out = os.path.join(tmp, name + ("-exact" if flag else ""))
                subprocess.run([binary, "convert", src, out, "--quiet"] + flag, check=True)
                ours, theirs = load_8bit(out), load_8bit(src)
                a, b = state(ours), state(theirs)
                assert a.keys() == b.keys(), (set(a) ^ set(b))
                int8_keys = [k for k in a if a[k].dtype == torch.int8]
                cb_diff = sum(int((a[k].int() - b[k].int()).abs().gt(0).sum()) for k in int8_keys)
                cb_max = max(int((a[k].int() - b[k].int()).abs().max()) for k in int8_keys)
                scb_keys = [k for k in a if k.endswith(".SCB")]
                scb_same = all(torch.equal(a[k], b[k]) for k in scb_keys)
                other_same = all(torch.equal(a[k], b[k]) for k in a if k not in int8_keys and k not in scb_keys)
                with torch.no_grad():
                    la, lb = ours(INPUT_IDS).logits.float(), theirs(INPUT_IDS).logits.float()
                rel = float((la - lb).norm() / lb.norm())
                rows.append((name + (" --exact" if flag else ""), len(int8_keys), cb_diff, cb_max,
                             scb_same, other_same, rel))
                if flag:
                    continue
                # With kept 16-bit columns for every layer: transformers + bitsandbytes
                # load it, leave llmint8_kept_* unused, and compute exactly as before.
                keep = os.path.join(tmp, name + "-keep.json")
                with open(keep, "w") as f:
                    json.dump({k[: -len(".weight")]: [0, 3] for k in int8_keys}, f)
                kept_dir = out + "-kept"
                subprocess.run([binary, "convert", src, kept_dir, "--quiet", "--keep-columns", keep], check=True)
                kept = load_8bit(kept_dir)
                c = state(kept)
                assert c.keys() == a.keys(), (set(c) ^ set(a))
                same = all(torch.equal(c[k], a[k]) for k in a)
                with torch.no_grad():
                    lc = kept(INPUT_IDS).logits.float()
                rows.append((name + " --keep-columns", len(int8_keys), 0 if same else -1, 0, same, same,
                             float((lc - la).norm() / la.norm())))
    print(f"{'model':<36} {'int8 layers':>11} {'CB diffs':>8} {'max':>4} {'SCB equal':>9} "
          f"{'rest equal':>10} {'logits rel diff':>16}")
    for r in rows:
        print(f"{r[0]:<36} {r[1]:>11} {r[2]:>8} {r[3]:>4} {str(r[4]):>9} {str(r[5]):>10} {r[6]:>16.3e}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["generate"]:
        generate(sys.argv[2:])
    elif sys.argv[1:2] == ["check"] and len(sys.argv) == 3:
        check(sys.argv[2])
    else:
        sys.exit(__doc__)
