#!/usr/bin/env bash
# The CUDA suite on a GPU machine, in one run of at most 8 minutes. The device
# machine has the CUDA driver and toolkit and PyTorch, but no Rust: build here
# first, then carry the artifacts (see scripts/gpu-build.sh):
#
#   scripts/gpu-build.sh                      # here: library, cuda-info, test binaries
#   run: scripts/gpu-check.sh   carry: [target/gpu]
#
# 1. `llmint8 cuda-info`: the libraries found, the driver, each device with
#    the kernels compiled by NVRTC and loaded.
# 2. The golden tests (bitsandbytes' outputs), the reference/property tests
#    and tests/cuda_backend.rs (CUDA against the CPU backend, bit for bit) on
#    CUDA device 0 (LLMINT8_TEST_BACKEND=cuda: host memory through
#    llmint8_matmul_host's path).
# 3. tests/c/cuda_device.c against the real driver (device memory, streams,
#    CUDA-graph capture and replay).
# 4. scripts/gpu_check.py: GPU against the CPU backend bit for bit (every
#    dtype pair, thresholds 6 and 0, weights quantized on the host and on the
#    device), the device-pointer and stream entry points, and the benchmark
#    against cuBLAS fp16 (PyTorch), whose table it prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
art=target/gpu
failed=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "== cuda-info"
"$art/llmint8" cuda-info || failed=1
export LLMINT8_TEST_BACKEND=cuda LLMINT8_TEST_ROOT="$PWD"
for t in "$art"/tests/*; do
  echo "== $(basename "$t") on CUDA"
  timeout 180 "$t" --test-threads 1 2>&1 | grep -E "^test |test result|panicked|FAILED" | tail -40 || true
  [ "${PIPESTATUS[0]}" = 0 ] || failed=1
done
# The C device program on the real driver: device pointers on the engine's
# stream, and a decode step captured in a CUDA graph, replayed bit for bit.
echo "== cuda_device (C ABI on device memory, CUDA-graph capture)"
LLMINT8_LIBCUDA=libcuda.so.1 timeout 120 "$art/cuda_device" || failed=1
# Few-row calls through the separate launches instead of the one-block prep
# kernel (LLMINT8_CUDA_PREP=separate): both must be right; the tables compare them.
echo "== gpu_check.py --quick, LLMINT8_CUDA_PREP=separate"
LLMINT8_CUDA_PREP=separate timeout 120 python3 scripts/gpu_check.py "$art/libllmint8.so" --quick || failed=1
echo "== gpu_check.py"
timeout 240 python3 scripts/gpu_check.py "$art/libllmint8.so" "$@" || failed=1
exit $failed
