#!/usr/bin/env bash
# Records the golden BGP captures in this directory from real peers.
#
#   ns ttcap$$a                          ns ttcap$$b
#   ┌──────────────────────────┐  veth  ┌──────────────────────────┐
#   │ BIRD 2 (bird -f)         │────────│ GoBGP (gobgpd, passive)  │
#   │ 192.0.2.1/24 2001:db8::1 │        │ 192.0.2.2/24 2001:db8::2 │
#   │ (iBGP: + 192.0.2.3 BIRD) │        │ API on 127.0.0.1 of ns b │
#   │ tcpdump 'tcp port 179'   │        │                          │
#   └──────────────────────────┘        └──────────────────────────┘
#
# Usage (root): bgp/tests/data/capture.sh [SCENARIO...]
#   SCENARIO: ebgp-mp as4-trans ibgp-rr ext-msg (default: all of them)
#
# For each scenario it writes <scenario>/capture.pcap, one
# <from>-to-<to>.bin per TCP direction (the raw BGP byte stream, in order,
# retransmissions dropped), messages.txt (an index of every message) and
# the daemon configs it used. GoBGP is passive so that exactly one TCP
# connection carries each session (no collision to resolve).
#
# Every wait polls a condition with a deadline; every command has a
# timeout; the namespaces and every process started here are removed on
# exit, by PID, whatever happens.
set -euo pipefail

DATA="$(cd "$(dirname "$0")" && pwd)"
PFX="ttcap$$"
NSA="${PFX}a"
NSB="${PFX}b"
IFA="${PFX}a"
IFB="${PFX}b"
API_PORT=50051
WORK=""
PIDS=()
T=10 # seconds: timeout for one quick command

log() { printf '%s capture: %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
    log "error: $*"
    local f
    for f in "${WORK:-/nonexistent}"/*.log; do
        [[ -f "$f" ]] || continue
        log "last lines of $(basename "$f"):"
        tail -n 15 "$f" >&2
    done
    if [[ -n "${CAPTURE_DEBUG:-}" && -n "$WORK" ]]; then
        gobgp_ -j neighbor >&2 || true
        birdc_ show protocols all >&2 || true
    fi
    exit 1
}

# Stops every process this script started (by PID: SIGTERM, then SIGKILL
# after a deadline) and deletes the namespaces.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        local deadline=$((SECONDS + 5))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    ip netns del "$NSA" 2>/dev/null || true
    ip netns del "$NSB" 2>/dev/null || true
    if [[ -n "$WORK" ]]; then
        rm -rf "$WORK"
        WORK=""
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for DESCRIPTION SECONDS CMD...: polls CMD every 0.2 s until it
# succeeds or the deadline passes.
wait_for() {
    local what="$1" secs="$2"
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${secs}s waiting for: $what"
        fi
        sleep 0.2
    done
}

ina() { timeout "$T" ip netns exec "$NSA" "$@"; }
inb() { timeout "$T" ip netns exec "$NSB" "$@"; }
birdc_() { timeout "$T" birdc -s "$WORK/bird.ctl" "$@"; }
birdc2_() { timeout "$T" birdc -s "$WORK/bird2.ctl" "$@"; }
gobgp_() { inb gobgp -u 127.0.0.1 -p "$API_PORT" "$@"; }

# --- conditions polled by wait_for -------------------------------------
bird_established() { birdc_ show protocols "$1" | grep -q Established; }
bird2_established() { birdc2_ show protocols "$1" | grep -q Established; }
bird_not_established() { ! bird_established "$1"; }
bird2_not_established() { ! bird2_established "$1"; }
# bird_routes_from PROTO N: BIRD has imported exactly N routes from PROTO.
bird_routes_from() {
    local n
    # One "N of M routes" line per table (master4, master6): add them up.
    n=$(timeout "$T" birdc -s "${CTL:-$WORK/bird.ctl}" show route protocol "$1" count |
        awk '/ of [0-9]+ routes/ { n += $1 } END { print n + 0 }')
    [[ "$n" == "$2" ]] || {
        echo "BIRD has $n routes from $1, waiting for $2" >"$WORK/last-wait.log"
        return 1
    }
}
# gobgp_adj_in NEIGHBOR FAMILY N: GoBGP's Adj-RIB-In holds N paths.
gobgp_adj_in() {
    local n
    n=$(gobgp_ neighbor "$1" adj-in -a "$2" 2>/dev/null | grep -c '/' || true)
    [[ "$n" == "$3" ]]
}
# gobgp_counter NEIGHBOR DIR KIND MIN: a message counter of GoBGP's is at
# least MIN (DIR sent|received; KIND refresh|update|notification).
gobgp_counter() {
    local v
    v=$(gobgp_ -j neighbor "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
m = d.get("state", {}).get("messages", {}).get(sys.argv[1], {})
print(m.get(sys.argv[2], 0))' "$2" "$3")
    ((v >= $4))
}
gobgp_state() {
    gobgp_ -j neighbor "$1" | python3 -c '
import json, sys
print(json.load(sys.stdin).get("state", {}).get("session_state", 0))'
}
# session_state 6 is ESTABLISHED in GoBGP's API.
gobgp_established() { [[ "$(gobgp_state "$1")" == 6 ]]; }
gobgp_not_established() { [[ "$(gobgp_state "$1")" != 6 ]]; }
gobgp_api_up() { gobgp_ global >/dev/null; }
tcpdump_listening() { grep -q "listening on" "$WORK/tcpdump.err"; }
# capture_closed N: the pcap written so far holds N TCP connections, each
# closed (FIN or RST) in both directions. tcpdump drops what the kernel
# still buffers when it is stopped, so this is polled before stopping it.
capture_closed() {
    python3 - "$WORK/capture.pcap" "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
off, syn, closed = 24, set(), set()
while off + 16 <= len(data):
    incl = struct.unpack(e + "I", data[off + 8:off + 12])[0]
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    if len(pkt) < 14 + 40 or struct.unpack(">H", pkt[12:14])[0] != 0x0800:
        continue
    l3 = pkt[14:]
    l4 = l3[(l3[0] & 0x0F) * 4:]
    flow = (l3[12:16], l4[0:2], l3[16:20], l4[2:4])
    if l4[13] & 0x02:
        syn.add(flow)
    if l4[13] & 0x05:
        closed.add(flow)
want = int(sys.argv[2]) * 2
sys.exit(0 if len(syn) == want and syn <= closed else 1)
PY
}

# --- topology -----------------------------------------------------------
setup_netns() {
    WORK="$(mktemp -d "/tmp/${PFX}.XXXXXX")"
    chmod 755 "$WORK"
    timeout "$T" ip netns add "$NSA"
    timeout "$T" ip netns add "$NSB"
    # The veth is created inside ns a and one end moved: nothing is ever
    # added to the machine's own namespace.
    ina ip link add "$IFA" type veth peer name "$IFB"
    ina ip link set "$IFB" netns "$NSB"
    ina ip link set lo up
    inb ip link set lo up
    ina ip addr add 192.0.2.1/24 dev "$IFA"
    ina ip addr add 2001:db8::1/64 dev "$IFA" nodad
    inb ip addr add 192.0.2.2/24 dev "$IFB"
    inb ip addr add 2001:db8::2/64 dev "$IFB" nodad
    ina ip link set "$IFA" up
    inb ip link set "$IFB" up
    wait_for "veth up" 10 ina ping -c1 -W1 192.0.2.2
}

start_tcpdump() {
    # -U: write each packet as it arrives, so SIGINT leaves a whole file.
    ip netns exec "$NSA" timeout 600 tcpdump -U -n -s 0 -i "$IFA" \
        -w "$WORK/capture.pcap" 'tcp port 179' \
        >"$WORK/tcpdump.out" 2>"$WORK/tcpdump.err" &
    TCPDUMP_PID=$!
    PIDS+=("$TCPDUMP_PID")
    wait_for "tcpdump listening" 10 tcpdump_listening
}

stop_tcpdump() {
    kill -INT "$TCPDUMP_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$TCPDUMP_PID" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    kill -0 "$TCPDUMP_PID" 2>/dev/null && die "tcpdump did not stop"
    wait "$TCPDUMP_PID" 2>/dev/null || true
}

# start_bird CONF CTL PIDFILE LOGNAME
# (start_bird CONF CTL PIDFILE LOGNAME NETNS starts it in NETNS instead.)
start_bird() {
    timeout "$T" bird -p -c "$1" || die "bird rejected $1"
    ip netns exec "${5:-$NSA}" timeout 600 bird -f -c "$1" -s "$2" -P "$3" \
        >"$WORK/$4.log" 2>&1 &
    PIDS+=("$!")
}

start_gobgpd() {
    timeout "$T" gobgpd -d -f "$1" >/dev/null || die "gobgpd rejected $1"
    ip netns exec "$NSB" timeout 600 gobgpd -f "$1" -p \
        --api-hosts "127.0.0.1:$API_PORT" --pprof-disable \
        >"$WORK/gobgpd.log" 2>&1 &
    PIDS+=("$!")
    wait_for "gobgpd API" 20 gobgp_api_up
}

# finish SCENARIO NAMES CONNECTIONS: waits until the capture holds every
# connection closed both ways, stops it, then splits it into streams.
finish() {
    local dir="$DATA/$1"
    wait_for "capture holds $3 closed connection(s)" 20 capture_closed "$3"
    stop_tcpdump
    cp "$WORK/capture.pcap" "$dir/capture.pcap"
    rm -f "$dir"/*.bin
    python3 - "$dir/capture.pcap" "$dir" "$2" <<'PY' >"$dir/messages.txt"
# Splits a pcap of BGP sessions into one byte stream per TCP direction.
# Reads: pcap (microsecond or nanosecond, either byte order), Ethernet or
# Linux cooked v1/v2, IPv4/IPv6, TCP. Orders segments by sequence number
# from the SYN, drops retransmitted bytes, fails on a gap.
import struct, sys, os

path, outdir, names_arg = sys.argv[1], sys.argv[2], sys.argv[3]
names = dict(kv.split("=") for kv in names_arg.split(","))
data = open(path, "rb").read()
magic = data[:4]
if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
    e = "<"
elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
    e = ">"
else:
    sys.exit(f"{path}: not a pcap file")
linktype = struct.unpack(e + "I", data[20:24])[0]
off = 24
flows = {}  # (src, sport, dst, dport) -> {"isn": int|None, "segs": [...]}
order = []
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    if linktype == 1:
        etype, l3 = struct.unpack(">H", pkt[12:14])[0], pkt[14:]
    elif linktype == 113:
        etype, l3 = struct.unpack(">H", pkt[14:16])[0], pkt[16:]
    elif linktype == 276:
        etype, l3 = struct.unpack(">H", pkt[0:2])[0], pkt[20:]
    else:
        sys.exit(f"{path}: unsupported link type {linktype}")
    if etype == 0x0800:
        ihl = (l3[0] & 0x0F) * 4
        total = struct.unpack(">H", l3[2:4])[0]
        if l3[9] != 6:
            continue
        src, dst = ".".join(map(str, l3[12:16])), ".".join(map(str, l3[16:20]))
        l4 = l3[ihl:total]
    elif etype == 0x86DD:
        plen = struct.unpack(">H", l3[4:6])[0]
        if l3[6] != 6:
            continue  # extension headers are not expected on this link
        import ipaddress
        src = str(ipaddress.IPv6Address(l3[8:24]))
        dst = str(ipaddress.IPv6Address(l3[24:40]))
        l4 = l3[40:40 + plen]
    else:
        continue
    sport, dport, seq = struct.unpack(">HHI", l4[0:8])
    doff = (l4[12] >> 4) * 4
    flags = l4[13]
    payload = l4[doff:]
    key = (src, sport, dst, dport)
    if key not in flows:
        flows[key] = {"isn": None, "segs": []}
        order.append(key)
    f = flows[key]
    if flags & 0x02:  # SYN
        f["isn"] = seq
    if payload:
        f["segs"].append((seq, payload))

MSG = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}
written = {}
for key in order:
    f = flows[key]
    src, sport, dst, dport = key
    if not f["segs"]:
        continue
    if f["isn"] is None:
        sys.exit(f"{key}: data without a SYN in the capture")
    base = (f["isn"] + 1) & 0xFFFFFFFF
    segs = sorted(((s - base) & 0xFFFFFFFF, p) for s, p in f["segs"])
    out, nxt = bytearray(), 0
    for rel, p in segs:
        end = rel + len(p)
        if end <= nxt:
            continue  # retransmission of bytes we already have
        if rel > nxt:
            sys.exit(f"{key}: gap at relative seq {nxt} (next segment at {rel})")
        out += p[nxt - rel:]
        nxt = end
    name = f"{names[src]}-to-{names[dst]}"
    if name in written:
        sys.exit(f"{name}: more than one TCP connection in the capture")
    written[name] = bytes(out)

for name in sorted(written):
    buf = written[name]
    with open(os.path.join(outdir, name + ".bin"), "wb") as fh:
        fh.write(buf)
    print(f"# {name}.bin: {len(buf)} bytes")
    i = o = 0
    while o + 19 <= len(buf):
        ln, ty = struct.unpack(">HB", buf[o + 16:o + 19])
        print(f"{i:4d} @{o:<7d} {MSG.get(ty, ty)} len={ln}")
        if ln < 19:
            sys.exit(f"{name}: bad length {ln} at {o}")
        o += ln
        i += 1
    if o != len(buf):
        sys.exit(f"{name}: {len(buf) - o} trailing bytes after the last message")
PY
    log "$1: $(grep -c '^ ' "$dir/messages.txt") messages in $(ls "$dir"/*.bin | wc -l) streams"
}

# --- scenario configs ---------------------------------------------------

# bird_prefixes4 FROM COUNT: static IPv4 /24 routes 10.244.<i>.0/24.
bird_routes4() {
    local i
    for ((i = $1; i < $1 + $2; i++)); do
        echo "    route 10.244.$i.0/24 blackhole;"
    done
}
bird_routes6() {
    local i
    for ((i = $1; i < $1 + $2; i++)); do
        printf '    route fd00:1:%x::/48 blackhole;\n' "$i"
    done
}

# Scenario 1: eBGP, 4-octet ASNs, IPv4 + IPv6 over one IPv4 session.
scenario_ebgp_mp() {
    local dir="$DATA/ebgp-mp"
    mkdir -p "$dir"
    cat >"$dir/bird.conf" <<EOF
# BIRD side of scenario ebgp-mp (written by capture.sh).
log stderr all;
router id 192.0.2.1;
protocol device { scan time 10; }
protocol static static4 {
    ipv4;
$(bird_routes4 1 40)
}
protocol static static6 {
    ipv6;
$(bird_routes6 1 20)
}
# Withdrawn during the capture by disabling this protocol.
protocol static static4w {
    ipv4;
$(bird_routes4 200 5)
}
filter to_gobgp {
    bgp_med = 10;
    bgp_community.add((65000, 100));
    bgp_community.add((65535, 666));     # BLACKHOLE, RFC 7999 (well-known)
    bgp_large_community.add((4200000001, 1, 2));
    bgp_ext_community.add((rt, 4200000001, 100));
    bgp_ext_community.add((ro, 65000, 7));
    if net = 10.244.1.0/24 || net = fd00:1:1::/48 then {
        bgp_community.add((65535, 65281)); # NO_EXPORT (well-known)
        bgp_med = 20;
    }
    accept;
}
protocol bgp gobgp {
    local 192.0.2.1 as 4200000001;
    neighbor 192.0.2.2 as 4200000002;
    hold time 90;
    graceful restart on;
    enable route refresh on;
    enable extended messages on;
    ipv4 { import all; export filter to_gobgp; add paths on; };
    ipv6 { import all; export filter to_gobgp; add paths on;
           next hop address 2001:db8::1; };
}
EOF
    cat >"$dir/gobgpd.toml" <<'EOF'
# GoBGP side of scenario ebgp-mp (written by capture.sh).
[global.config]
  as = 4200000002
  router-id = "192.0.2.2"
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 4200000001
  [neighbors.transport.config]
    passive-mode = true
    local-address = "192.0.2.2"
  [neighbors.timers.config]
    hold-time = 90
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
    [neighbors.afi-safis.add-paths.config]
      receive = true
      send-max = 4
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
    [neighbors.afi-safis.add-paths.config]
      receive = true
      send-max = 4
EOF
    setup_netns
    start_tcpdump
    start_gobgpd "$dir/gobgpd.toml"
    # GoBGP's routes exist before the session, so its first UPDATEs pack them.
    local i
    # Three attribute sets over 30 prefixes, so GoBGP can pack NLRI.
    for ((i = 1; i <= 30; i++)); do
        gobgp_ global rib add -a ipv4 "10.245.$i.0/24" nexthop 192.0.2.2 \
            med $((i % 3)) community "65000:$((i % 3)),no-export" \
            large-community "4200000002:$((i % 3)):3" \
            rt "65000:$((i % 3))" >/dev/null
    done
    for ((i = 1; i <= 15; i++)); do
        gobgp_ global rib add -a ipv6 "$(printf 'fd00:2:%x::/48' "$i")" \
            nexthop 2001:db8::2 med 5 community "65000:200" \
            large-community "4200000002:6:$i" >/dev/null
    done
    start_bird "$dir/bird.conf" "$WORK/bird.ctl" "$WORK/bird.pid" bird
    wait_for "BIRD session Established" 60 bird_established gobgp
    wait_for "GoBGP Established" 20 gobgp_established 192.0.2.1
    wait_for "BIRD has GoBGP's 45 routes" 30 bird_routes_from gobgp 45
    wait_for "GoBGP has BIRD's 45 IPv4 paths" 30 gobgp_adj_in 192.0.2.1 ipv4 45
    wait_for "GoBGP has BIRD's 20 IPv6 paths" 30 gobgp_adj_in 192.0.2.1 ipv6 20

    log "ebgp-mp: route refresh from BIRD (reload in)"
    local upd
    upd=$(gobgp_ -j neighbor 192.0.2.1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"]["messages"]["sent"].get("update",0))')
    birdc_ reload in gobgp >/dev/null
    wait_for "GoBGP got ROUTE-REFRESH" 20 gobgp_counter 192.0.2.1 received refresh 1
    wait_for "GoBGP re-sent its routes" 20 gobgp_counter 192.0.2.1 sent update $((upd + 1))

    # GoBGP keeps its Adj-RIB-In, so its softresetin re-runs import policy
    # and sends no ROUTE-REFRESH: only BIRD's direction has one.

    log "ebgp-mp: withdrawals"
    for ((i = 1; i <= 5; i++)); do
        gobgp_ global rib del -a ipv4 "10.245.$i.0/24" >/dev/null
    done
    gobgp_ global rib del -a ipv6 fd00:2:1::/48 >/dev/null
    wait_for "BIRD dropped 6 withdrawn routes" 20 bird_routes_from gobgp 39
    birdc_ disable static4w >/dev/null
    wait_for "GoBGP dropped BIRD's 5 withdrawn paths" 20 gobgp_adj_in 192.0.2.1 ipv4 40

    log "ebgp-mp: administrative shutdown with a shutdown communication"
    birdc_ disable gobgp '"maintenance"' >/dev/null
    wait_for "GoBGP saw the session go down" 20 gobgp_not_established 192.0.2.1
    wait_for "GoBGP counted the NOTIFICATION" 20 gobgp_counter 192.0.2.1 received notification 1
    finish ebgp-mp "192.0.2.1=bird,192.0.2.2=gobgp" 1
    cleanup
}

# Scenario 2: BIRD speaks 2-octet AS only; GoBGP (AS 65002) originates
# paths through 4-octet ASNs, so it must send AS_TRANS + AS4_PATH (and
# AGGREGATOR + AS4_AGGREGATOR).
scenario_as4_trans() {
    local dir="$DATA/as4-trans"
    mkdir -p "$dir"
    cat >"$dir/bird.conf" <<EOF
# BIRD side of scenario as4-trans (written by capture.sh).
log stderr all;
router id 192.0.2.1;
protocol device { scan time 10; }
protocol static static4 {
    ipv4;
$(bird_routes4 1 10)
}
protocol bgp gobgp {
    local 192.0.2.1 as 65001;
    neighbor 192.0.2.2 as 65002;
    enable as4 off;
    hold time 90;
    ipv4 { import all; export filter { bgp_community.add((65001, 1)); accept; }; };
}
EOF
    cat >"$dir/gobgpd.toml" <<'EOF'
# GoBGP side of scenario as4-trans (written by capture.sh).
[global.config]
  as = 65002
  router-id = "192.0.2.2"
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
  [neighbors.transport.config]
    passive-mode = true
    local-address = "192.0.2.2"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
EOF
    setup_netns
    start_tcpdump
    start_gobgpd "$dir/gobgpd.toml"
    local i
    for ((i = 1; i <= 10; i++)); do
        gobgp_ global rib add -a ipv4 "10.245.$i.0/24" nexthop 192.0.2.2 \
            aspath "4200000010 65010 4200000011" >/dev/null
    done
    gobgp_ global rib add -a ipv4 10.246.0.0/16 nexthop 192.0.2.2 \
        aspath "4200000020" aggregator "4200000020:198.51.100.7" >/dev/null
    start_bird "$dir/bird.conf" "$WORK/bird.ctl" "$WORK/bird.pid" bird
    wait_for "BIRD session Established" 60 bird_established gobgp
    wait_for "BIRD has GoBGP's 11 routes" 30 bird_routes_from gobgp 11
    wait_for "GoBGP has BIRD's 10 routes" 30 gobgp_adj_in 192.0.2.1 ipv4 10
    log "as4-trans: shutdown"
    birdc_ disable gobgp >/dev/null
    wait_for "GoBGP saw the session go down" 20 gobgp_not_established 192.0.2.1
    finish as4-trans "192.0.2.1=bird,192.0.2.2=gobgp" 1
    cleanup
}

# Scenario 3: iBGP AS 64512, GoBGP a route reflector with two BIRD
# clients (192.0.2.1 and 192.0.2.3, both in ns a); routes of each client
# reach the other with ORIGINATOR_ID and CLUSTER_LIST.
scenario_ibgp_rr() {
    local dir="$DATA/ibgp-rr"
    mkdir -p "$dir"
    local n
    for n in 1 3; do
        local first=$((n == 1 ? 1 : 100))
        cat >"$dir/bird$n.conf" <<EOF
# BIRD client 192.0.2.$n of scenario ibgp-rr (written by capture.sh).
log stderr all;
router id 192.0.2.$n;
protocol device { scan time 10; }
protocol static static4 {
    ipv4;
$(bird_routes4 "$first" 8)
}
protocol static static6 {
    ipv6;
$(bird_routes6 "$first" 4)
}
protocol bgp reflector {
    local 192.0.2.$n as 64512;
    neighbor 192.0.2.2 as 64512;
    strict bind on;
    hold time 90;
    ipv4 { import all; export filter { bgp_local_pref = $((100 + n)); accept; }; next hop self; };
    ipv6 { import all; export all; next hop address 2001:db8::$n; };
}
EOF
    done
    cat >"$dir/gobgpd.toml" <<'EOF'
# GoBGP route reflector of scenario ibgp-rr (written by capture.sh).
[global.config]
  as = 64512
  router-id = "192.0.2.2"
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 64512
  [neighbors.transport.config]
    passive-mode = true
    local-address = "192.0.2.2"
  [neighbors.route-reflector.config]
    route-reflector-client = true
    route-reflector-cluster-id = "192.0.2.2"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.3"
    peer-as = 64512
  [neighbors.transport.config]
    passive-mode = true
    local-address = "192.0.2.2"
  [neighbors.route-reflector.config]
    route-reflector-client = true
    route-reflector-cluster-id = "192.0.2.2"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
EOF
    setup_netns
    ina ip addr add 192.0.2.3/24 dev "$IFA"
    ina ip addr add 2001:db8::3/64 dev "$IFA" nodad
    start_tcpdump
    start_gobgpd "$dir/gobgpd.toml"
    gobgp_ global rib add -a ipv4 10.247.0.0/24 nexthop 192.0.2.2 \
        local-pref 300 >/dev/null
    start_bird "$dir/bird1.conf" "$WORK/bird.ctl" "$WORK/bird.pid" bird1
    start_bird "$dir/bird3.conf" "$WORK/bird2.ctl" "$WORK/bird2.pid" bird3
    wait_for "BIRD 1 Established" 60 bird_established reflector
    wait_for "BIRD 3 Established" 60 bird2_established reflector
    # Each client gets the other's 12 routes plus GoBGP's own one.
    wait_for "BIRD 1 has 13 routes from the reflector" 30 bird_routes_from reflector 13
    CTL="$WORK/bird2.ctl" wait_for "BIRD 3 has 13 routes from the reflector" 30 \
        bird_routes_from reflector 13
    log "ibgp-rr: shutdown"
    birdc_ disable reflector >/dev/null
    birdc2_ disable reflector >/dev/null
    wait_for "GoBGP saw 192.0.2.1 go down" 20 gobgp_not_established 192.0.2.1
    wait_for "GoBGP saw 192.0.2.3 go down" 20 gobgp_not_established 192.0.2.3
    finish ibgp-rr "192.0.2.1=bird1,192.0.2.3=bird3,192.0.2.2=gobgp" 2
    cleanup
}

# Scenario 4: RFC 8654 extended messages, which GoBGP 3.10 lacks, so BIRD
# talks to BIRD (ns b, passive). BIRD packs at most about 2 KB of NLRI per
# UPDATE whatever the limit, so one route carries 1200 communities (4800
# octets of attribute) to need an UPDATE beyond 4096 octets.
scenario_ext_msg() {
    local dir="$DATA/ext-msg" i
    mkdir -p "$dir"
    {
        echo "# BIRD a (192.0.2.1) of scenario ext-msg (written by capture.sh)."
        echo "log stderr all;"
        echo "router id 192.0.2.1;"
        echo "protocol device { scan time 10; }"
        echo "protocol static static4 {"
        echo "    ipv4;"
        for ((i = 0; i < 300; i++)); do
            echo "    route 10.$((i / 256 + 100)).$((i % 256)).0/24 blackhole;"
        done
        echo "    route 10.99.0.0/24 blackhole;"
        echo "}"
        echo "protocol static static6 {"
        echo "    ipv6;"
        bird_routes6 1 100
        echo "}"
        echo "filter big {"
        echo "    if net = 10.99.0.0/24 then {"
        for ((i = 1; i <= 1200; i++)); do
            echo "        bgp_community.add((65000, $i));"
        done
        echo "    }"
        echo "    accept;"
        echo "}"
        echo "protocol bgp b {"
        echo "    local 192.0.2.1 as 4200000001;"
        echo "    neighbor 192.0.2.2 as 4200000003;"
        echo "    enable extended messages on;"
        echo "    hold time 90;"
        echo "    ipv4 { import all; export filter big; };"
        echo "    ipv6 { import all; export all; next hop address 2001:db8::1; };"
        echo "}"
    } >"$dir/bird-a.conf"
    {
        echo "# BIRD b (192.0.2.2, passive) of scenario ext-msg (written by capture.sh)."
        echo "log stderr all;"
        echo "router id 192.0.2.2;"
        echo "protocol device { scan time 10; }"
        echo "protocol bgp a {"
        echo "    local 192.0.2.2 as 4200000003;"
        echo "    neighbor 192.0.2.1 as 4200000001;"
        echo "    passive on;"
        echo "    enable extended messages on;"
        echo "    hold time 90;"
        echo "    ipv4 { import all; export none; };"
        echo "    ipv6 { import all; export none; };"
        echo "}"
    } >"$dir/bird-b.conf"
    setup_netns
    start_tcpdump
    start_bird "$dir/bird-b.conf" "$WORK/bird2.ctl" "$WORK/bird2.pid" bird-b "$NSB"
    start_bird "$dir/bird-a.conf" "$WORK/bird.ctl" "$WORK/bird.pid" bird-a
    wait_for "BIRD a Established" 60 bird_established b
    wait_for "BIRD b Established" 20 bird2_established a
    CTL="$WORK/bird2.ctl" wait_for "BIRD b has 401 routes" 30 bird_routes_from a 401
    log "ext-msg: shutdown"
    birdc_ disable b >/dev/null
    wait_for "BIRD b saw the session go down" 20 bird2_not_established a
    finish ext-msg "192.0.2.1=bird-a,192.0.2.2=bird-b" 1
    cleanup
}

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
for tool in bird birdc gobgpd gobgp tcpdump python3 ip; do
    command -v "$tool" >/dev/null || die "missing $tool (scripts/deps.sh installs it)"
done

scenarios=("$@")
((${#scenarios[@]})) || scenarios=(ebgp-mp as4-trans ibgp-rr ext-msg)
for s in "${scenarios[@]}"; do
    log "scenario $s"
    case "$s" in
    ebgp-mp) scenario_ebgp_mp ;;
    as4-trans) scenario_as4_trans ;;
    ibgp-rr) scenario_ibgp_rr ;;
    ext-msg) scenario_ext_msg ;;
    *) die "unknown scenario $s" ;;
    esac
done
log "done"
