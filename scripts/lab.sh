#!/usr/bin/env bash
# The README's main command: a virtual cluster in network namespaces.
#
#   ./scripts/lab.sh [up] [tortie lab up options]   deps, build, `tortie lab up`
#   ./scripts/lab.sh status [-o json]               `tortie lab status`
#   ./scripts/lab.sh down                           `tortie lab down`
#
# As root on Debian with Rust installed. The Debian packages come from
# scripts/deps.sh (idempotent). TORTIE_BIN / TORTIE_CNI_BIN use already
# built binaries (the test suite does) instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "lab: run as root (it creates network namespaces)" >&2
    exit 1
fi

cmd=${1:-up}
[[ $# -gt 0 ]] && shift

bin_dir="${CARGO_TARGET_DIR:-target}/debug"
if [[ -z ${TORTIE_BIN:-} ]]; then
    if [[ $cmd == up ]]; then
        scripts/deps.sh
        cargo build -p tortie --bins
    fi
    export TORTIE_BIN="$bin_dir/tortie"
fi
export TORTIE_CNI_BIN="${TORTIE_CNI_BIN:-$(dirname "$TORTIE_BIN")/tortie-cni}"
if [[ ! -x $TORTIE_BIN ]]; then
    echo "lab: no tortie binary at $TORTIE_BIN; run './scripts/lab.sh up' first" >&2
    exit 1
fi

case $cmd in
    up | status | down) exec "$TORTIE_BIN" lab "$cmd" "$@" ;;
    *) echo "usage: $0 [up|status|down] [options]" >&2; exit 2 ;;
esac
