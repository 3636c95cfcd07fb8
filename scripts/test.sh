#!/usr/bin/env bash
# Every test of llmint8: builds the shared library (the C ABI test links it),
# runs the Rust unit, reference, golden, header and C ABI tests, checks the
# aarch64 build, then runs the C ABI test program once more under valgrind
# memcheck (no errors, nothing leaked).
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo test --release --locked
# The portable code must build for aarch64 too (needs `rustup target add
# aarch64-unknown-linux-gnu`, which .ci/run does).
if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
  cargo check --release --locked --target aarch64-unknown-linux-gnu --all-targets
else
  echo "note: aarch64-unknown-linux-gnu is not installed; skipping the aarch64 build check" >&2
fi
# test_abi was built by tests/c_abi.rs above. valgrind does not emulate
# AVX-512, so under it the library picks its AVX2 (or portable) kernels.
valgrind --quiet --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect \
  target/release/c-tests/test_abi
