#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on the device machine (which has no
# Rust) into target/gpu: the library, the CLI, and the golden, reference and
# cuda_backend test binaries (run there with LLMINT8_TEST_BACKEND=cuda).
# Carry target/gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
out=target/gpu
rm -rf "$out" && mkdir -p "$out/tests"
cp target/release/libllmint8.so target/release/llmint8 "$out/"
for t in golden reference cuda_backend; do
  exe=$(cargo test --release --locked --no-run --test "$t" --message-format=json 2>/dev/null |
    python3 -c 'import json,sys; print([json.loads(l)["executable"] for l in sys.stdin if "\"executable\":\"" in l][-1])')
  cp "$exe" "$out/tests/$t"
done
strip --strip-debug "$out"/llmint8 "$out"/libllmint8.so "$out"/tests/*
du -sh "$out"
