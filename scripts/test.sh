#!/usr/bin/env bash
# Every test of llmint8: builds the shared library (the C ABI test links it),
# runs the Rust unit, reference, golden, header and C ABI tests, then the C ABI
# test program once more under valgrind memcheck (no errors, nothing leaked).
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo test --release --locked
# Built by tests/c_abi.rs above. valgrind does not emulate AVX-512, so there the
# library picks its AVX2 (or portable) kernels.
valgrind --quiet --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect \
  target/release/c-tests/test_abi
