#!/usr/bin/env bash
# The README's main command until `tortie lab` lands (issue "node agent"):
# a small BGP fabric in network namespaces with real parts.
#
#            tdemo-tor (BIRD 2, AS 65001, 192.0.2.1, bridge br0)
#             /                                  \
#   tdemo-n1 (tortie bgp, AS 64512)       tdemo-n2 (tortie bgp, AS 64512)
#   192.0.2.11, pod CIDR 10.244.1.0/24    192.0.2.12, pod CIDR 10.244.2.0/24
#             \______________ iBGP mesh ____________/
#
# Each node announces its pod CIDR; the ToR learns both over eBGP, the nodes
# learn each other's over iBGP and the ToR's own 203.0.113.0/24 over eBGP.
# tortie installs what it learns in its node's kernel (protocol 52), and a
# pod namespace behind each node (10.244.N.10, wired like the CNI wires a
# pod) pings the other node's pod across those routes.
#
#   ./scripts/demo.sh          bring it up (idempotent: tears down a previous run first) and show it
#   ./scripts/demo.sh status   show the sessions and routes again
#   ./scripts/demo.sh down     remove everything it made
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=/run/tortie-demo
NS_TOR=tdemo-tor
NODES=(n1 n2)
# TORTIE_BIN=PATH uses an already built tortie (the test suite does).
TORTIE=${TORTIE_BIN:-./target/debug/tortie}

ns() { ip netns exec "$@"; }

down() {
    if [[ -d $RUN ]]; then
        for pidfile in "$RUN"/*.pid; do
            [[ -e $pidfile ]] || continue
            pid=$(cat "$pidfile")
            # Stop by PID only, and only our own processes.
            if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -9 "$pid" 2>/dev/null || true
            fi
        done
    fi
    for n in $NS_TOR "${NODES[@]/#/tdemo-}" "${NODES[@]/#/tdemo-pod-}"; do
        ip netns del "$n" 2>/dev/null || true
    done
    rm -rf "$RUN"
}

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "demo: timed out after ${secs}s waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

show() {
    echo "== BIRD on the ToR: sessions"
    ns $NS_TOR birdc -s $RUN/bird.ctl show protocols | sed 's/^/   /'
    echo "== BIRD on the ToR: routes learned"
    ns $NS_TOR birdc -s $RUN/bird.ctl show route | sed 's/^/   /'
    for n in "${NODES[@]}"; do
        echo "== tortie on $n"
        ns tdemo-$n $TORTIE status --run-dir $RUN/$n | sed 's/^/   /'
        echo "== kernel routes tortie installed on $n (ip route show proto 52)"
        ns tdemo-$n ip route show proto 52 | sed 's/^/   /'
    done
    echo "== pod on n1 (10.244.1.10) pings pod on n2 (10.244.2.10)"
    ns tdemo-pod-n1 ping -c 3 -i 0.2 -W 1 10.244.2.10 | sed 's/^/   /'
}

# A pod namespace behind node $1 with address $2, wired as the CNI does:
# /32 on eth0, default route via a link-local gateway on the host veth.
add_pod() {
    local n=$1 addr=$2
    ip netns add tdemo-pod-$n
    ns tdemo-pod-$n ip link set lo up
    ns tdemo-pod-$n ip link add eth0 type veth peer name pod0
    ns tdemo-pod-$n ip link set pod0 netns tdemo-$n
    ns tdemo-$n ip addr add 169.254.1.1/32 dev pod0
    ns tdemo-$n ip link set pod0 up
    ns tdemo-$n ip route add $addr/32 dev pod0
    ns tdemo-$n sysctl -qw net.ipv4.ip_forward=1
    ns tdemo-pod-$n ip addr add $addr/32 dev eth0
    ns tdemo-pod-$n ip link set eth0 up
    ns tdemo-pod-$n ip route add 169.254.1.1 dev eth0 scope link
    ns tdemo-pod-$n ip route add default via 169.254.1.1 dev eth0 onlink
}

up() {
    scripts/deps.sh
    if [[ -z ${TORTIE_BIN:-} ]]; then
        cargo build -p tortie --bin tortie
    fi
    down
    mkdir -p $RUN
    echo "[1/5] namespaces and links"
    ip netns add $NS_TOR
    ns $NS_TOR ip link set lo up
    ns $NS_TOR ip link add br0 type bridge
    ns $NS_TOR ip addr add 192.0.2.1/24 dev br0
    ns $NS_TOR ip link set br0 up
    i=10
    for n in "${NODES[@]}"; do
        i=$((i + 1))
        ip netns add tdemo-$n
        ns tdemo-$n ip link set lo up
        ns $NS_TOR ip link add tor-$n type veth peer name eth0
        ns $NS_TOR ip link set eth0 netns tdemo-$n
        ns $NS_TOR ip link set tor-$n master br0 up
        ns tdemo-$n ip addr add 192.0.2.$i/24 dev eth0
        ns tdemo-$n ip link set eth0 up
        add_pod $n 10.244.${n#n}.10
    done
    echo "[2/5] BIRD on the ToR (AS 65001)"
    sed "s#@RUN@#$RUN#g" examples/demo/bird-tor.conf > $RUN/bird.conf
    ns $NS_TOR bird -c $RUN/bird.conf -s $RUN/bird.ctl -P $RUN/bird.pid
    echo "[3/5] tortie speakers on the nodes (AS 64512)"
    for n in "${NODES[@]}"; do
        mkdir -p $RUN/$n
        # Not through the `ns` function: a backgrounded function is a
        # subshell whose PID is not tortie's. `ip netns exec` execs tortie,
        # so $! is tortie's own PID and `down` stops it by that PID.
        ip netns exec tdemo-$n $TORTIE bgp --config examples/demo/tortie-$n.yaml \
            --run-dir $RUN/$n --state-dir $RUN/$n </dev/null >$RUN/$n/tortie.log 2>&1 &
        echo $! > $RUN/tortie-$n.pid
    done
    echo "[4/5] waiting for the sessions"
    for n in "${NODES[@]}"; do
        wait_until 30 "BIRD's session to $n" \
            bash -c "ip netns exec $NS_TOR birdc -s $RUN/bird.ctl show protocols $n | grep -q Established"
    done
    echo "[5/5] waiting for the routes"
    wait_until 30 "both pod CIDRs at the ToR" \
        bash -c "ip netns exec $NS_TOR birdc -s $RUN/bird.ctl show route 10.244.1.0/24 | grep -q 10.244.1.0 &&
                 ip netns exec $NS_TOR birdc -s $RUN/bird.ctl show route 10.244.2.0/24 | grep -q 10.244.2.0"
    wait_until 30 "the pod routes in both nodes' kernels" \
        bash -c "ip netns exec tdemo-n1 ip route show 10.244.2.0/24 proto 52 | grep -q via &&
                 ip netns exec tdemo-n2 ip route show 10.244.1.0/24 proto 52 | grep -q via"
    show
    echo
    echo "The fabric stays up: './scripts/demo.sh status' shows it again, './scripts/demo.sh down' removes it."
}

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: run as root (it creates network namespaces)" >&2
    exit 1
fi
case "${1:-up}" in
    up) trap 'rc=$?; if ((rc)); then echo "demo: failed (exit $rc); cleaning up" >&2; down; fi' EXIT; up ;;
    status) show ;;
    down) down; echo "demo: removed" ;;
    *) echo "usage: $0 [up|status|down]" >&2; exit 2 ;;
esac
