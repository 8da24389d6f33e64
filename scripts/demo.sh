#!/usr/bin/env bash
# The README's main command. Until the lab lands (issue "node agent"), it
# builds tortie and prints what the build can do.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --workspace
./target/release/tortie --help
