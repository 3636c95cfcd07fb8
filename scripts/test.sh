#!/usr/bin/env bash
# Every test of llmint8: builds the shared library (the C ABI test links it),
# then runs the Rust unit, reference, golden, header and C ABI tests.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo test --release --locked
