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
//! from link events, and a route towards node 2's subnet with `mtu 1300`
//! (a route event) sizes the tunnel by that path: 1250. VXLAN routes
//! every remote through the tunnel. IPIP probes the kernel first
//! ("skipped: kernel has no ipip").
//!
//! `route_mtu_sizes_the_tunnel_and_new_pods` runs node 1 as `tortie agent`
//! (file datastore, the same topology without node 3) so that pods are
//! wired by the real `tortie-cni`: a conflist without `mtu` gives a new
//! pod the computed pod MTU, one with `mtu` keeps the operator's value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tortie_integration::bgp_util::{in_netns, log_tail, spawn_logged, WorkDir};
use tortie_integration::cni_util::run_plugin_in;
use tortie_integration::podnet::pod_behind_veth;
use tortie_integration::tortie_bgp::{self, tortie_binary, Tortie};
use tortie_integration::{kernel_has_link_kind, run_with_timeout, wait_for, Daemon, Netns};

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

/// The router: forwarding only, a bridge for the 192.0.2.0/25 nodes.
fn router(tag: &str) -> Result<Netns> {
    let router = Netns::new(&format!("{tag}r"))?;
    router.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    router.run("ip", &["link", "add", "lan1", "type", "bridge"])?;
    router.run("ip", &["addr", "add", "192.0.2.1/25", "dev", "lan1"])?;
    router.run("ip", &["link", "set", "lan1", "up"])?;
    Ok(router)
}

/// Node `i` of [`NODES`] (0-based) wired to the router, no speaker yet.
fn node_ns(tag: &str, router: &Netns, i: usize) -> Result<Netns> {
    let (addr, _, _, port, gw) = NODES.get(i).ok_or_else(|| anyhow!("no node {i}"))?;
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
    Ok(ns)
}

fn build(tag: &str, mode: &str) -> Result<Topo> {
    let router = router(tag)?;
    let mut nodes = Vec::new();
    for (i, (addr, cidr, pod_addr, _, _)) in NODES.iter().enumerate() {
        let ns = node_ns(tag, &router, i)?;
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

    // A narrower path to node 2 (a route event, no link changed): the
    // tunnel is sized by the route's MTU metric, not the device.
    n1.ns.run(
        "ip",
        &[
            "route",
            "add",
            "198.51.100.0/25",
            "via",
            "192.0.2.1",
            "mtu",
            "1300",
        ],
    )?;
    wait_for("vxlan.tortie mtu 1250", WAIT, || {
        n1.ns
            .run("ip", &["link", "show", "vxlan.tortie"])
            .ok()
            .filter(|s| s.contains("mtu 1250"))
    })
    .with_context(|| n1.speaker.log())?;
    let routes = wait_for("status mtu 1250", WAIT, || {
        status_routes(n1)
            .ok()
            .filter(|r| r.get("mtu").and_then(serde_json::Value::as_u64) == Some(1250))
    })?;
    assert_eq!(routes["encapsulation"][0]["mtu"], 1250, "{routes}");
    assert_eq!(routes["encapsulation"][0]["pathMtu"], 1300, "{routes}");
    // A full-size packet of that tunnel passes with DF set.
    wait_for("1250-octet ping with DF, node 1 -> node 2", WAIT, || {
        n1.pod
            .run(
                "ping",
                &["-c", "1", "-W", "1", "-M", "do", "-s", "1222", n2.pod_addr],
            )
            .ok()
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
        tortie_integration::report_skip(
            "fib_encap::ipip_cross_subnet_encapsulates_only_across_the_router: kernel has no ipip",
        );
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

/// Node 1's manifests: both nodes, the mesh, a VXLAN pool and the pods
/// the test adds through the CNI.
const AGENT_MANIFESTS: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: n1
  annotations: {tortie.io/bgp-address: 192.0.2.11/25}
spec: {podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 192.0.2.11}]}
---
apiVersion: v1
kind: Node
metadata:
  name: n2
  annotations: {tortie.io/bgp-address: 198.51.100.12/25}
spec: {podCIDRs: [10.244.2.0/24]}
status: {addresses: [{type: InternalIP, address: 198.51.100.12}]}
---
apiVersion: tortie.io/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMesh: true}
---
apiVersion: tortie.io/v1alpha1
kind: IPPool
metadata: {name: default}
spec: {cidr: 10.244.0.0/16, encapsulation: VXLAN}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec: {nodeName: n1, containers: [{name: web, image: nginx}]}
---
apiVersion: v1
kind: Pod
metadata: {name: fixed, namespace: default}
spec: {nodeName: n1, containers: [{name: fixed, image: nginx}]}
"#;

/// `tortie status -o json` of the agent whose run dir is `run`.
fn agent_routes(run: &Path) -> Result<Value> {
    let out = run_with_timeout(
        std::process::Command::new(tortie_binary()?).args([
            "status",
            "-o",
            "json",
            "--run-dir",
            &run.display().to_string(),
        ]),
        Duration::from_secs(10),
    )?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.get("routes").cloned().unwrap_or_default())
}

/// The real plugin's ADD inside the node namespace, as the runtime runs
/// it, for pod `default/NAME` in `pod_ns`; `mtu` goes into the conflist
/// when given.
fn cni_add(
    cni: &Path,
    node: &Netns,
    pod_ns: &Netns,
    name: &str,
    sock: &Path,
    mtu: Option<u32>,
) -> Result<Value> {
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "tortie",
        "type": "tortie-cni",
        "agentSocket": sock.display().to_string(),
    });
    if let (Some(mtu), Some(obj)) = (mtu, conf.as_object_mut()) {
        obj.insert("mtu".into(), mtu.into());
    }
    let id = format!("c0ffee{name}");
    let netns = format!("/var/run/netns/{}", pod_ns.name());
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", id.as_str()),
        ("CNI_NETNS", &netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", &args),
    ];
    let run = run_plugin_in(cni, node, &env, &conf.to_string(), Duration::from_secs(30))
        .with_context(|| format!("tortie-cni ADD {name}"))?;
    if run.exit != Some(0) {
        bail!(
            "tortie-cni ADD {name} failed: {} {}",
            run.stdout,
            run.stderr
        );
    }
    run.json()
}

fn link_mtu(ns: &Netns, dev: &str) -> Result<String> {
    ns.run("ip", &["link", "show", dev])
}

#[test]
fn route_mtu_sizes_the_tunnel_and_new_pods() -> Result<()> {
    if !tortie_bgp::require("fib_encap::route_mtu_sizes_the_tunnel_and_new_pods") {
        return Ok(());
    }
    let cni = tortie_integration::cluster::binaries()?.cni;
    let tag = "fxm";
    let router = router(tag)?;
    let n1 = node_ns(tag, &router, 0)?;
    let n2 = node_ns(tag, &router, 1)?;
    n1.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;

    // Node 2: the standalone speaker with a pod behind a veth.
    let p2 = pod_behind_veth(&n2, &format!("{tag}p2"), "cali2", "10.244.2.10")?;
    let config = format!(
        "{}fib:\n  enabled: true\n  resyncSeconds: 2\n  underlay: 198.51.100.12/25\n  pools:\n    - {{cidr: 10.244.0.0/16, encapsulation: VXLAN}}\n",
        tortie_bgp::config(
            64512,
            "198.51.100.12",
            "  - prefix: 10.244.2.0/24\n",
            "  - peerIP: 192.0.2.11\n    asNumber: 64512\n    families: [IPv4]\n",
        )
    );
    let speaker2 = Tortie::start(&n2, &config)?;

    // Node 1: the agent.
    let dir = WorkDir::new("fxm-agent")?;
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("cluster.yaml"), AGENT_MANIFESTS)?;
    let run: PathBuf = dir.join("run");
    let log = dir.join("agent.log");
    let bin = tortie_binary()?.display().to_string();
    let mut agent: Daemon = spawn_logged(
        &n1,
        &bin,
        &[
            "agent",
            "--node-name",
            "n1",
            "--datastore",
            &format!("file:{}", manifests.display()),
            "--run-dir",
            &run.display().to_string(),
            "--state-dir",
            &dir.join("state").display().to_string(),
        ],
        &log,
    )?;
    let explain = |what: &str| {
        format!(
            "{what}\nagent log:\n{}\nnode 2:\n{}",
            log_tail(&log, 40),
            speaker2.log()
        )
    };

    let r = wait_for("node 2's CIDR through vxlan.tortie on node 1", WAIT, || {
        let r = route(&n1, "10.244.2.0/24");
        r.contains("dev vxlan.tortie").then_some(r)
    })
    .with_context(|| explain("no route"))?;
    eprintln!("node 1: {r}");
    wait_for("vxlan.tortie mtu 1450 from the device", WAIT, || {
        link_mtu(&n1, "vxlan.tortie")
            .ok()
            .filter(|s| s.contains("mtu 1450"))
    })
    .with_context(|| explain("vxlan.tortie"))?;

    // The path to node 2 narrows: tunnel 1250, pod MTU 1250.
    n1.run(
        "ip",
        &[
            "route",
            "add",
            "198.51.100.0/25",
            "via",
            "192.0.2.1",
            "mtu",
            "1300",
        ],
    )?;
    wait_for("vxlan.tortie mtu 1250", WAIT, || {
        link_mtu(&n1, "vxlan.tortie")
            .ok()
            .filter(|s| s.contains("mtu 1250"))
    })
    .with_context(|| explain("vxlan.tortie after the route"))?;
    let routes = wait_for("status routes.mtu 1250", WAIT, || {
        agent_routes(&run)
            .ok()
            .filter(|r| r.get("mtu").and_then(Value::as_u64) == Some(1250))
    })
    .with_context(|| explain("status"))?;
    eprintln!("status routes: {routes}");
    assert_eq!(routes["encapsulation"][0]["device"], "vxlan.tortie");
    assert_eq!(routes["encapsulation"][0]["pathMtu"], 1300, "{routes}");

    // A pod whose conflist names no MTU gets the computed one, both ends.
    let web = Netns::new(&format!("{tag}web"))?;
    let sock = run.join("agent.sock");
    let result = cni_add(&cni, &n1, &web, "web", &sock, None).with_context(|| explain("ADD"))?;
    let eth0 = web.run("ip", &["link", "show", "eth0"])?;
    assert!(eth0.contains("mtu 1250"), "pod eth0: {eth0}");
    let host_if = result["interfaces"][0]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("no host interface in {result}"))?
        .to_string();
    let host = link_mtu(&n1, &host_if)?;
    assert!(host.contains("mtu 1250"), "host side: {host}");
    let web_ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .ok_or_else(|| anyhow!("no address in {result}"))?
        .to_string();
    // A full-size packet crosses the tunnel with DF set, both ways.
    wait_for("1250-octet ping with DF, web -> node 2's pod", WAIT, || {
        web.run(
            "ping",
            &[
                "-c",
                "1",
                "-W",
                "1",
                "-M",
                "do",
                "-s",
                "1222",
                "10.244.2.10",
            ],
        )
        .ok()
    })
    .with_context(|| explain("ping"))?;
    p2.run("ping", &["-c", "1", "-W", "2", "-s", "1222", &web_ip])?;

    // The operator's `mtu` in the conflist still wins.
    let fixed = Netns::new(&format!("{tag}fix"))?;
    cni_add(&cni, &n1, &fixed, "fixed", &sock, Some(1400)).with_context(|| explain("ADD"))?;
    let eth0 = fixed.run("ip", &["link", "show", "eth0"])?;
    assert!(
        eth0.contains("mtu 1400"),
        "pod eth0 with mtu 1400 configured: {eth0}"
    );
    agent.stop();
    Ok(())
}

/// The path MTU lookups of a 1,000-node cluster: one pipelined round
/// (64 `ip route get` per `sendmsg`), every answer carrying the route's
/// `mtu` metric. Prints the time it takes.
#[test]
fn a_thousand_path_lookups_are_one_pipelined_round() -> Result<()> {
    if !tortie_integration::require_netns(
        "fib_encap::a_thousand_path_lookups_are_one_pipelined_round",
        &["ip"],
    ) {
        return Ok(());
    }
    let ns = Netns::new("fxl")?;
    ns.run(
        "ip",
        &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
    )?;
    ns.run("ip", &["link", "set", "up0", "up"])?;
    ns.run("ip", &["link", "set", "up1", "up"])?;
    ns.run("sysctl", &["-qw", "net.ipv6.conf.up0.accept_dad=0"])?;
    ns.run("ip", &["addr", "add", "2001:db8::11/64", "dev", "up0"])?;
    ns.run(
        "ip",
        &[
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            "2001:db8::1",
            "dev",
            "up0",
            "mtu",
            "1300",
        ],
    )?;
    let remotes: Vec<std::net::IpAddr> = (1..=1000u16)
        .map(|i| std::net::IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, i]))
        .collect();
    let (elapsed, answers) = in_netns(ns.name(), move || {
        let mut sock = tortie::fib::link::LinkSocket::open()?;
        let start = std::time::Instant::now();
        let answers = sock.route_lookups(&remotes)?;
        Ok((start.elapsed(), answers))
    })?;
    eprintln!("1000 path MTU lookups: {elapsed:?}");
    assert_eq!(answers.len(), 1000);
    for a in &answers {
        let a = a.as_ref().map_err(|e| anyhow!("lookup failed: {e}"))?;
        assert_eq!(a.mtu, Some(1300), "{a:?}");
        assert!(a.oif.is_some(), "{a:?}");
    }
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // No route at all: an error per address, not a hang.
    let answers = in_netns(ns.name(), || {
        let mut sock = tortie::fib::link::LinkSocket::open()?;
        Ok(sock.route_lookups(&["203.0.113.7".parse()?])?)
    })?;
    assert!(
        matches!(answers.as_slice(), [Err(reason)] if reason.contains("unreachable")),
        "{answers:?}"
    );
    Ok(())
}
