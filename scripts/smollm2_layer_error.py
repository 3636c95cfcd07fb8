#!/usr/bin/env python3
"""Per-layer error of llmint8 against the exact product on a real model's own
activations: a float32 numpy forward of a Llama folder (scripts/smollm2_fixture.py
makes SmolLM2's) over the first 512 tokens of LICENSE-APACHE;
every decoder linear layer's input goes through libllmint8.so (ctypes, C ABI)
at threshold 0 and at threshold 6 with each row scale rule.

    python scripts/smollm2_layer_error.py MODEL_DIR [LIBLLMINT8]
"""
import ctypes, json, os, sys, numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
lib = ctypes.CDLL(sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "target/release/libllmint8.so"))
d = sys.argv[1]
cfg = json.load(open(f"{d}/config.json")); W = {k: v.astype(np.float32) for k, v in load_file(f"{d}/model.safetensors").items()}
tok = Tokenizer.from_file(f"{d}/tokenizer.json")
H, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
ctx = ctypes.c_void_p(); assert lib.llmint8_context_create(1, 0, ctypes.byref(ctx)) == 0
P = lambda a: a.ctypes.data_as(ctypes.c_void_p)
def int8(x, w, t, rule):
    wh = ctypes.c_void_p(); w = np.ascontiguousarray(w, np.float32); x = np.ascontiguousarray(x, np.float32)
    assert lib.llmint8_weight_quantize(ctx, P(w), 0, ctypes.c_size_t(w.shape[0]), ctypes.c_size_t(w.shape[1]), None, 0, ctypes.byref(wh)) == 0
    lib.llmint8_context_set_row_scale(ctx, rule)
    y = np.zeros((x.shape[0], w.shape[0]), np.float32)
    assert lib.llmint8_matmul(ctx, wh, P(x), 0, ctypes.c_size_t(x.shape[0]), ctypes.c_float(t), P(y), 0, None) == 0
    lib.llmint8_weight_destroy(wh); return y
rows = []
def lin(name, x, w):
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    errs = [np.linalg.norm(int8(x, w, t, r) - exact) / np.linalg.norm(exact) for t, r in [(0.0, 0), (6.0, 0), (6.0, 1)]]
    rows.append((name, float(np.abs(x).max()), *errs))
    return (x @ w.T)
def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg["rms_norm_eps"]) * w
def rope(x, pos):
    inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)); f = np.outer(pos, inv); c = np.cos(np.concatenate([f, f], -1))[:, None]; s = np.sin(np.concatenate([f, f], -1))[:, None]
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]; return x * c + np.concatenate([-x2, x1], -1) * s
text = open(os.path.join(root, "LICENSE-APACHE")).read()  # a fixed English text in the repository
ids = tok.encode(text).ids[:512]; T = len(ids); x = W["model.embed_tokens.weight"][ids]; pos = np.arange(T)
for l in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{l}."; h = rms(x, W[p + "input_layernorm.weight"])
    q = lin(f"{l}.q", h, W[p+"self_attn.q_proj.weight"]).reshape(T, nh, hd); k = lin(f"{l}.k", h, W[p+"self_attn.k_proj.weight"]).reshape(T, nkv, hd); v = lin(f"{l}.v", h, W[p+"self_attn.v_proj.weight"]).reshape(T, nkv, hd)
    q, k = rope(q, pos), rope(k, pos); k = np.repeat(k, nh // nkv, 1); v = np.repeat(v, nh // nkv, 1)
    a = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd); a += np.triu(np.full((T, T), -1e30), 1); a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
    o = np.einsum("hts,shd->thd", a, v).reshape(T, H); x = x + lin(f"{l}.o", o, W[p+"self_attn.o_proj.weight"])
    h = rms(x, W[p + "post_attention_layernorm.weight"]); g = lin(f"{l}.gate", h, W[p+"mlp.gate_proj.weight"]); u = lin(f"{l}.up", h, W[p+"mlp.up_proj.weight"])
    x = x + lin(f"{l}.down", (g / (1 + np.exp(-g))) * u, W[p+"mlp.down_proj.weight"])
out = [r for r in rows if r[1] >= 6]
ratio = [r[4] / r[3] for r in out]
print(f"{T} tokens; {len(rows)} layers, {len(out)} with |x| >= 6")
print("median error, layers with outliers: t0 %.4f  t6 bnb %.4f  t6 int8-part %.4f;  median ratio int8-part/bnb %.3f (min %.3f, max %.3f)" % (np.median([r[2] for r in out]), np.median([r[3] for r in out]), np.median([r[4] for r in out]), np.median(ratio), min(ratio), max(ratio)))
for kind in ["q", "k", "v", "o", "gate", "up", "down"]:
    rr = [r[4] / r[3] for r in out if r[0].split(".")[1] == kind]
    if rr: print(f"  {kind}: {len(rr)} layers, median ratio {np.median(rr):.3f}")
worst = max(out, key=lambda r: r[3]); print("worst bnb layer", worst)
