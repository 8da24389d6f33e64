#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, golden and the
# root/network-namespace integration tests. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# A CI run starts from a fresh clone: incremental caches would only cost
# disk (several GB for this workspace), never save time.
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
fi
echo "disk before build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Build the binaries the netns tests run (tortie, tortie-cni, the bench
# bins) in the same invocation as the tests, so they share the tests'
# feature set and dependency builds; a test that had to build them itself
# would compile every dependency a second time inside its timeout.
cargo build --workspace --bins --tests
cargo test --workspace --no-fail-fast
echo "disk after tests: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target/ $(du -sh "${CARGO_TARGET_DIR:-target}" | cut -f1)"
