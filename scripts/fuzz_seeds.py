#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: small valid safetensors files
(fuzz/corpus/safetensors_loader/) and random parameter bytes for quantize +
matmul (fuzz/corpus/quantize_matmul/). Standard library only."""
import json
import os
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus")
OUT = os.path.join(CORPUS, "safetensors_loader")


def file(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes), laid out in order."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


f16 = lambda vals: b"".join(struct.pack("<e", v) for v in vals)
f32 = lambda vals: b"".join(struct.pack("<f", v) for v in vals)
SEEDS = {
    "int8_layer": file([("l.SCB", "F32", [2], f32([1.0, 2.5])), ("l.weight", "I8", [2, 3], bytes([1, 2, 3, 255, 254, 253])),
                        ("l.weight_format", "U8", [], b"\0")], {"format": "pt"}),
    "int8_with_bias": file([("l.SCB", "F32", [2], f32([1.0, 2.5])), ("l.bias", "F16", [2], f16([0.5, -1])),
                            ("l.weight", "I8", [2, 3], bytes(6))]),
    "f16_layer": file([("l.weight", "F16", [2, 4], f16([1, -2, 3, 7, 0.5, 0, -0.25, 9])),
                       ("l.bias", "F16", [2], f16([0, 1]))]),
    "bf16_layer": file([("a.b.weight", "BF16", [1, 2], b"\x80\x3f\x00\x40")]),
    "f32_layer": file([("x.weight", "F32", [2, 2], f32([1, 2, 3, 4])), ("embed.weight", "F32", [1, 2], f32([1, 2]))]),
    "misaligned_f16": file([("u.x", "U8", [1], b"\x07"), ("l.weight", "F16", [1, 2], f16([1, 2]))]),
    "scalar_and_empty": file([("s", "I64", [], struct.pack("<q", 5)), ("e", "F32", [0, 3], b"")]),
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")
    # quantize + matmul: rows, in, out, dtypes, path/rounding, threshold, then values.
    import random
    rng = random.Random(1126)
    mm = os.path.join(CORPUS, "quantize_matmul")
    os.makedirs(mm, exist_ok=True)
    for i in range(8):
        head = bytes([rng.randrange(10), rng.randrange(80), rng.randrange(40), rng.randrange(256),
                      rng.randrange(256), i])
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(64, 4000)))
        with open(os.path.join(mm, f"seed{i}"), "wb") as f:
            f.write(head + body)
    print(f"wrote 8 seeds to {mm}")
