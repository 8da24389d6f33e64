//! Encapsulation per IP pool with `tortie bgp` and `fib.pools`: nodes in
//! two subnets behind a router that does not speak BGP and has no route
//! for any pod address, so pod traffic across it only passes inside a
//! tunnel.
//!
//! ```text
//!  pod p1 10.244.1.10                 ns TAG-r (router: forwarding only)                 pod p2 10.244.2.10
//!    │ veth cali1                  lan1 (bridge) 192.0.2.1/25   n2 198.51.100.1/25         │ veth cali2
//!  ns TAG-n1 up0 192.0.2.11/25 ──── n1 ┘   n3 ┐            └──── up0 198.51.100.12/25 ns TAG-n2
//!  ns TAG-n3 up0 192.0.2.13/25 ───────────────┘                                       (default via .1)
//!    │ veth cali3                  no route for 10.244.0.0/16 here
//!  pod p3 10.244.3.10
//!
//!  iBGP mesh AS 64512 (multihop across the router), each node originates
//!  its /24; pool 10.244.0.0/16 with the mode under test; fib.underlay is
//!  each node's up0 address.
//! ```
//!
//! Checked: VXLANCrossSubnet routes node 2's CIDR `via 198.51.100.12 dev
//! vxlan.tortie onlink` and node 3's `via 192.0.2.13 dev up0` (same
//! subnet, plain), pings pass both ways on both paths, the VTEP has its
//! permanent neighbour and FDB entries, `tortie status` shows the MTUs; a
//! VXLAN device deleted by hand and an underlay MTU change are noticed
//! from link events. VXLAN routes every remote through the tunnel. IPIP
//! probes the kernel first ("skipped: kernel has no ipip").

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tortie_integration::podnet::pod_behind_veth;
use tortie_integration::tortie_bgp::{self, Tortie};
use tortie_integration::{kernel_has_link_kind, wait_for, Netns};

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    ns: Netns,
    pod: Netns,
    pod_addr: &'static str,
    speaker: Tortie,
}

struct Topo {
    router: Netns,
    nodes: Vec<Node>,
}

/// (node address/len, pod CIDR, pod address, router-side port, gateway)
const NODES: [(&str, &str, &str, &str, &str); 3] = [
    (
        "192.0.2.11/25",
        "10.244.1.0/24",
        "10.244.1.10",
        "n1",
        "192.0.2.1",
    ),
    (
        "198.51.100.12/25",
        "10.244.2.0/24",
        "10.244.2.10",
        "n2",
        "198.51.100.1",
    ),
    (
        "192.0.2.13/25",
        "10.244.3.0/24",
        "10.244.3.10",
        "n3",
        "192.0.2.1",
    ),
];

fn build(tag: &str, mode: &str) -> Result<Topo> {
    let router = Netns::new(&format!("{tag}r"))?;
    router.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    router.run("ip", &["link", "add", "lan1", "type", "bridge"])?;
    router.run("ip", &["addr", "add", "192.0.2.1/25", "dev", "lan1"])?;
    router.run("ip", &["link", "set", "lan1", "up"])?;
    let mut nodes = Vec::new();
    for (i, (addr, cidr, pod_addr, port, gw)) in NODES.iter().enumerate() {
        let ns = Netns::new(&format!("{tag}n{}", i + 1))?;
        // The pair is created in the node namespace; one end moves to the
        // router.
        ns.run(
            "ip",
            &["link", "add", "up0", "type", "veth", "peer", "name", port],
        )?;
        ns.run("ip", &["link", "set", port, "netns", router.name()])?;
        ns.run("ip", &["addr", "add", addr, "dev", "up0"])?;
        ns.run("ip", &["link", "set", "up0", "up"])?;
        ns.run("ip", &["route", "add", "default", "via", gw])?;
        if *port == "n2" {
            router.run("ip", &["addr", "add", "198.51.100.1/25", "dev", port])?;
        } else {
            router.run("ip", &["link", "set", port, "master", "lan1"])?;
        }
        router.run("ip", &["link", "set", port, "up"])?;
        let pod = pod_behind_veth(
            &ns,
            &format!("{tag}p{}", i + 1),
            &format!("cali{}", i + 1),
            pod_addr,
        )?;
        let me = addr.split('/').next().unwrap_or_default();
        let peers: String = NODES
            .iter()
            .filter(|(a, ..)| a != addr)
            .map(|(a, ..)| {
                format!(
                    "  - peerIP: {}\n    asNumber: 64512\n    families: [IPv4]\n",
                    a.split('/').next().unwrap_or_default()
                )
            })
            .collect();
        let config = format!(
            "{}fib:\n  enabled: true\n  resyncSeconds: 2\n  underlay: {addr}\n  pools:\n    - {{cidr: 10.244.0.0/16, encapsulation: {mode}}}\n",
            tortie_bgp::config(64512, me, &format!("  - prefix: {cidr}\n"), &peers)
        );
        let speaker = Tortie::start(&ns, &config)?;
        nodes.push(Node {
            ns,
            pod,
            pod_addr,
            speaker,
        });
    }
    Ok(Topo { router, nodes })
}

fn route(ns: &Netns, prefix: &str) -> String {
    ns.run("ip", &["-4", "route", "show", prefix, "proto", "52"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn wait_route(node: &Node, prefix: &str, want: &[&str], not: &[&str]) -> Result<String> {
    wait_for(
        &format!("{prefix} with {want:?} in {}", node.ns.name()),
        WAIT,
        || {
            let r = route(&node.ns, prefix);
            (want.iter().all(|w| r.contains(w)) && !not.iter().any(|n| r.contains(n))).then_some(r)
        },
    )
    .with_context(|| node.speaker.log())
}

fn ping(from: &Node, to: &Node) -> Result<()> {
    wait_for(
        &format!("ping {} -> {}", from.pod_addr, to.pod_addr),
        WAIT,
        || {
            from.pod
                .run("ping", &["-c", "1", "-W", "1", to.pod_addr])
                .ok()
        },
    )
    .map(|_| ())
}

fn status_routes(node: &Node) -> Result<serde_json::Value> {
    let s = node.speaker.status()?;
    Ok(s.raw.get("routes").cloned().unwrap_or_default())
}

#[test]
fn vxlan_cross_subnet_encapsulates_only_across_the_router() -> Result<()> {
    if !tortie_bgp::require("fib_encap::vxlan_cross_subnet_encapsulates_only_across_the_router") {
        return Ok(());
    }
    let t = build("fxc", "VXLANCrossSubnet")?;
    let [n1, n2, n3] = &t.nodes[..] else {
        bail!("three nodes");
    };
    // The router cannot route pod addresses at all.
    let r = t.router.run("ip", &["route", "get", "10.244.2.10"]);
    assert!(r.is_err(), "the router must not know pod routes: {r:?}");

    let across = wait_route(
        n1,
        "10.244.2.0/24",
        &["via 198.51.100.12 dev vxlan.tortie", "onlink"],
        &[],
    )?;
    let same = wait_route(n1, "10.244.3.0/24", &["via 192.0.2.13 dev up0"], &["vxlan"])?;
    eprintln!("node 1: {across}\nnode 1: {same}");
    wait_route(
        n2,
        "10.244.1.0/24",
        &["via 192.0.2.11 dev vxlan.tortie", "onlink"],
        &[],
    )?;
    wait_route(n3, "10.244.1.0/24", &["via 192.0.2.11 dev up0"], &["vxlan"])?;

    for (a, b) in [(n1, n2), (n2, n1), (n1, n3), (n3, n1), (n3, n2)] {
        ping(a, b)?;
    }

    // The VTEP of node 2 as seen from node 1.
    let neigh = n1.ns.run("ip", &["neigh", "show", "dev", "vxlan.tortie"])?;
    assert!(
        neigh.contains("198.51.100.12 lladdr 0e:74:c6:33:64:0c PERMANENT"),
        "{neigh}"
    );
    let fdb = n1
        .ns
        .run("bridge", &["fdb", "show", "dev", "vxlan.tortie"])?;
    assert!(fdb.contains("0e:74:c6:33:64:0c dst 198.51.100.12"), "{fdb}");
    assert!(
        !fdb.contains("192.0.2.13"),
        "same-subnet node 3 is not a VTEP: {fdb}"
    );
    let dev = n1.ns.run("ip", &["-d", "link", "show", "vxlan.tortie"])?;
    for want in [
        "mtu 1450",
        "vxlan id 4096",
        "local 192.0.2.11",
        "dstport 4789",
        "nolearning",
    ] {
        assert!(dev.contains(want), "{want} in {dev}");
    }

    // Status: pod MTU and the tunnel.
    let routes = wait_for("MTU in the status", WAIT, || {
        status_routes(n1)
            .ok()
            .filter(|r| r.get("mtu").and_then(serde_json::Value::as_u64) == Some(1450))
    })?;
    eprintln!("status routes: {routes}");
    assert_eq!(routes["encapsulation"][0]["device"], "vxlan.tortie");

    // Link events: the device deleted by hand comes back, and an underlay
    // MTU change reaches the tunnel and the status.
    n1.ns.run("ip", &["link", "del", "vxlan.tortie"])?;
    wait_route(
        n1,
        "10.244.2.0/24",
        &["via 198.51.100.12 dev vxlan.tortie"],
        &[],
    )?;
    ping(n1, n2)?;
    n1.ns.run("ip", &["link", "set", "up0", "mtu", "1400"])?;
    wait_for("vxlan.tortie mtu 1350", WAIT, || {
        n1.ns
            .run("ip", &["link", "show", "vxlan.tortie"])
            .ok()
            .filter(|s| s.contains("mtu 1350"))
    })?;
    wait_for("status mtu 1350", WAIT, || {
        status_routes(n1)
            .ok()
            .filter(|r| r.get("mtu").and_then(serde_json::Value::as_u64) == Some(1350))
    })?;
    Ok(())
}

#[test]
fn vxlan_encapsulates_to_every_node() -> Result<()> {
    if !tortie_bgp::require("fib_encap::vxlan_encapsulates_to_every_node") {
        return Ok(());
    }
    let t = build("fxv", "VXLAN")?;
    let [n1, n2, n3] = &t.nodes[..] else {
        bail!("three nodes");
    };
    wait_route(
        n1,
        "10.244.2.0/24",
        &["via 198.51.100.12 dev vxlan.tortie", "onlink"],
        &[],
    )?;
    wait_route(
        n1,
        "10.244.3.0/24",
        &["via 192.0.2.13 dev vxlan.tortie", "onlink"],
        &[],
    )?;
    for (a, b) in [(n1, n2), (n2, n1), (n1, n3), (n3, n1), (n2, n3)] {
        ping(a, b)?;
    }
    Ok(())
}

#[test]
fn ipip_cross_subnet_encapsulates_only_across_the_router() -> Result<()> {
    if !tortie_bgp::require("fib_encap::ipip_cross_subnet_encapsulates_only_across_the_router") {
        return Ok(());
    }
    if !kernel_has_link_kind("ipip") {
        eprintln!("skipped: kernel has no ipip");
        return Ok(());
    }
    let t = build("fxi", "IPIPCrossSubnet")?;
    let [n1, n2, n3] = &t.nodes[..] else {
        bail!("three nodes");
    };
    wait_route(
        n1,
        "10.244.2.0/24",
        &["via 198.51.100.12 dev ipip.tortie", "onlink"],
        &[],
    )?;
    wait_route(n1, "10.244.3.0/24", &["via 192.0.2.13 dev up0"], &["ipip"])?;
    for (a, b) in [(n1, n2), (n2, n1), (n1, n3), (n3, n1)] {
        ping(a, b)?;
    }
    Ok(())
}
