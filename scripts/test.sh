#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, golden and the
# root/network-namespace integration tests. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
