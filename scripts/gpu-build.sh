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
cp target/release/libllmint8.so "$out/libllmint8.so.1" # the SONAME, for cuda_device (links are not carried)
for t in golden reference cuda_backend; do
  exe=$(cargo test --release --locked --no-run --test "$t" --message-format=json 2>/dev/null |
    python3 -c 'import json,sys; print([json.loads(l)["executable"] for l in sys.stdin if "\"executable\":\"" in l][-1])')
  cp "$exe" "$out/tests/$t"
done
# The C device program (tests/c/cuda_device.c: device buffers, the engine's
# stream, a decode step captured in a CUDA graph and replayed), built against
# the carried library, run there on the real driver.
cc -std=c11 -O1 -Wall -Wextra -Werror -I include tests/c/cuda_device.c -o "$out/cuda_device" \
  -L "$out" -Wl,-rpath,'$ORIGIN' -lllmint8 -ldl
strip --strip-debug "$out"/llmint8 "$out"/libllmint8.so "$out"/libllmint8.so.1 "$out"/tests/* "$out"/cuda_device
du -sh "$out"
