#!/usr/bin/env bash
# Installs the Debian packages tortie's lab and tests use, idempotently:
# nothing is downloaded when every package is already present.
set -euo pipefail

PACKAGES=(bird2 gobgpd iptables ipset iproute2 iputils-ping tcpdump procps)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The system bird/gobgpd services must not run in the machine's namespace:
# tests start their own daemons inside network namespaces.
for svc in bird gobgpd; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
exit 0
