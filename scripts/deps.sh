#!/usr/bin/env bash
# Installs the Debian packages tortie's lab and tests use, idempotently:
# nothing is downloaded when every package is already present.
set -euo pipefail

# frr: the lab's GoBGP ToRs (`--tor gobgp`) run FRR's zebra, one per ToR
# namespace, to install gobgpd's routes in the kernel.
PACKAGES=(bird2 gobgpd frr iptables ipset iproute2 iputils-ping tcpdump procps)

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
    # frr's postinst enables frr.service and starts it (watchfrr, zebra and
    # staticd in the machine's own namespace) unless policy-rc.d forbids it.
    # The lab runs its own zebras with private sockets inside ToR
    # namespaces and needs none of that, so an FRR this script has just
    # installed is stopped and disabled again. An FRR that was already
    # installed is the administrator's and is left alone.
    if [[ " ${missing[*]} " == *" frr "* ]]; then
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            systemctl disable --now frr.service >/dev/null 2>&1 || true
        elif [[ -x /etc/init.d/frr ]]; then
            invoke-rc.d frr stop >/dev/null 2>&1 || true
            update-rc.d frr disable >/dev/null 2>&1 || true
        fi
    fi
fi

# The system bird/gobgpd services must not run in the machine's namespace:
# tests start their own daemons inside network namespaces.
for svc in bird gobgpd; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
exit 0
