//! `tortie bgp` with `fib.enabled: true` programs the kernel of its
//! namespace: two nodes peer over iBGP, each announces its pod CIDR, and
//! pods on different nodes reach each other through the routes the
//! speakers install (protocol 52).
//!
//! ```text
//!  ns TAG-p1 (pod 1)        ns TAG-n1 (node 1, tortie AS 64512)       ns TAG-n2 (node 2, tortie AS 64512)        ns TAG-p2 (pod 2)
//!  eth0 10.244.1.10/32 ─veth─ cali1 169.254.1.1/32            node0 192.0.2.11 ─veth─ node0 192.0.2.12   cali2 169.254.1.1/32 ─veth─ eth0 10.244.2.10/32
//!  default via               route 10.244.1.10/32 dev cali1   originate 10.244.1.0/24  originate 10.244.2.0/24  route 10.244.2.10/32 dev cali2
//!   169.254.1.1 onlink       ip_forward=1                      kernel: 10.244.2.0/24 via 192.0.2.12 proto 52 (and the mirror on node 2)
//! ```
//!
//! Checked: the route appears; a ping from pod 1 to pod 2 passes; a
//! withdrawn prefix (SIGHUP without it) leaves the other kernel; a route
//! deleted by hand comes back within the resync period; a SIGKILL and a
//! new start of node 1's speaker never remove the route (polled every
//! 50 ms across the restart).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tortie_integration::bird::Bird;
use tortie_integration::podnet::pod_behind_veth;
use tortie_integration::tortie_bgp::{self, Tortie, TortieStatus};
use tortie_integration::{veth, wait_for, Netns};

const RESYNC: u64 = 1;

fn node_config(router_id: &str, peer: &str, originate: &[&str]) -> String {
    let originate: String = originate
        .iter()
        .map(|p| format!("  - prefix: {p}\n"))
        .collect();
    let peers = format!(
        "  - peerIP: {peer}\n    asNumber: 64512\n    gracefulRestart: {{enabled: true, restartTime: 120}}\n"
    );
    with_fib(tortie_bgp::config(64512, router_id, &originate, &peers))
}

/// `config` with the FIB on and a short resync period.
fn with_fib(config: String) -> String {
    format!("{config}fib:\n  enabled: true\n  resyncSeconds: {RESYNC}\n")
}

/// Node 1's two neighbours in [`three_nodes`].
const N1_NEIGHBOURS: [&str; 2] = ["192.0.2.12", "198.51.100.13"];

/// Node 1 in the middle, one link to each other node:
/// `TAG2 192.0.2.12 ─ 192.0.2.11 TAG1 198.51.100.11 ─ 198.51.100.13 TAG3`.
fn three_nodes(tag: &str) -> Result<(Netns, Netns, Netns)> {
    let n1 = Netns::new(&format!("{tag}1"))?;
    let n2 = Netns::new(&format!("{tag}2"))?;
    let n3 = Netns::new(&format!("{tag}3"))?;
    veth(&n1, "to2", "192.0.2.11/24", &n2, "to1", "192.0.2.12/24")?;
    veth(
        &n1,
        "to3",
        "198.51.100.11/24",
        &n3,
        "to1",
        "198.51.100.13/24",
    )?;
    Ok((n1, n2, n3))
}

/// Waits until `ns` has no protocol 52 route for `prefix`.
fn wait_route_gone(ns: &Netns, prefix: &str, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(20), || {
        kernel_route(ns, prefix)
            .ok()
            .filter(String::is_empty)
            .map(|_| ())
    })
}

/// Waits until the speaker's status says `routes.KEY == want`.
fn wait_routes_count(s: &Tortie, key: &str, want: u64, timeout: Duration) -> Result<TortieStatus> {
    wait_for(&format!("status routes.{key} == {want}"), timeout, || {
        s.status_summary()
            .ok()
            .filter(|st| st.raw["routes"][key].as_u64() == Some(want))
    })
    .with_context(|| format!("{:?}\n{}", s.status_summary().map(|st| st.raw), s.log()))
}

fn kernel_route(ns: &Netns, prefix: &str) -> Result<String> {
    Ok(ns
        .run("ip", &["-4", "route", "show", prefix, "proto", "52"])?
        .trim()
        .to_string())
}

fn wait_kernel(ns: &Netns, prefix: &str, want: &str, timeout: Duration) -> Result<String> {
    wait_for(
        &format!("{prefix} {want} proto 52 in {}", ns.name()),
        timeout,
        || kernel_route(ns, prefix).ok().filter(|r| r.contains(want)),
    )
}

#[test]
fn two_nodes_install_each_others_pod_routes() -> Result<()> {
    if !tortie_bgp::require("fib_bgp::two_nodes_install_each_others_pod_routes") {
        return Ok(());
    }
    let t0 = Instant::now();
    let n1 = Netns::new("fbn1")?;
    let n2 = Netns::new("fbn2")?;
    veth(&n1, "to2", "192.0.2.11/24", &n2, "to1", "192.0.2.12/24")?;
    let p1 = pod_behind_veth(&n1, "fbp1", "cali1", "10.244.1.10")?;
    let p2 = pod_behind_veth(&n2, "fbp2", "cali2", "10.244.2.10")?;
    let c1 = node_config("192.0.2.11", "192.0.2.12", &["10.244.1.0/24"]);
    let c2 = node_config("192.0.2.12", "192.0.2.11", &["10.244.2.0/24"]);
    let mut s1 = Tortie::start(&n1, &c1)?;
    let s2 = Tortie::start(&n2, &c2)?;
    s1.wait_established("192.0.2.12", Duration::from_secs(30))?;

    // The routes appear on both sides; our own prefix is a blackhole.
    let r = wait_kernel(
        &n1,
        "10.244.2.0/24",
        "via 192.0.2.12",
        Duration::from_secs(20),
    )
    .with_context(|| s1.log())?;
    eprintln!("node 1: {r} ({:?} after start)", t0.elapsed());
    wait_kernel(
        &n2,
        "10.244.1.0/24",
        "via 192.0.2.11",
        Duration::from_secs(20),
    )?;
    let own = n1.run("ip", &["route", "show", "10.244.1.0/24", "proto", "52"])?;
    assert!(own.contains("blackhole"), "own prefix: {own:?}");
    let out = p1.run("ping", &["-c", "3", "-i", "0.2", "-W", "1", "10.244.2.10"])?;
    assert!(out.contains(" 0% packet loss"), "{out}");
    let st = s1.status_summary()?;
    assert!(
        st.raw["routes"]["installed"].as_u64().unwrap_or(0) >= 2,
        "status routes: {}",
        st.raw["routes"]
    );

    // A route deleted by hand comes back within the resync period.
    n1.run("ip", &["route", "del", "10.244.2.0/24", "proto", "52"])?;
    let t = Instant::now();
    wait_kernel(
        &n1,
        "10.244.2.0/24",
        "via 192.0.2.12",
        Duration::from_secs(RESYNC * 3 + 2),
    )?;
    eprintln!("hand-deleted route back after {:?}", t.elapsed());

    // SIGKILL + start: the route never leaves the kernel, and pod traffic
    // does not stop (an interval ping across the restart).
    let pinger = {
        let name = p1.name().to_string();
        std::thread::spawn(move || -> Result<String> {
            let out = tortie_integration::run_with_timeout(
                std::process::Command::new("ip").args([
                    "netns",
                    "exec",
                    &name,
                    "ping",
                    "-i",
                    "0.05",
                    "-c",
                    "80",
                    "-W",
                    "1",
                    "10.244.2.10",
                ]),
                Duration::from_secs(30),
            );
            // ping exits 1 when a reply was lost; the summary says how many.
            match out {
                Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
                Err(e) => Ok(format!("{e:#}")),
            }
        })
    };
    s1.kill();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = std::sync::Arc::clone(&stop);
        let name = n1.name().to_string();
        std::thread::spawn(move || -> Result<u32> {
            let mut polls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = tortie_integration::run_with_timeout(
                    std::process::Command::new("ip").args([
                        "netns",
                        "exec",
                        &name,
                        "ip",
                        "-4",
                        "route",
                        "show",
                        "10.244.2.0/24",
                        "proto",
                        "52",
                    ]),
                    Duration::from_secs(5),
                )?;
                if !String::from_utf8_lossy(&out.stdout).contains("via 192.0.2.12") {
                    bail!("the route vanished during the restart (poll {polls})");
                }
                polls += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(polls)
        })
    };
    let t = Instant::now();
    s1.restart(&n1)?;
    // The new instance found the routes of the old one and kept them.
    assert!(
        s1.log().contains("FIB: 2 routes of protocol 52 found"),
        "{}",
        s1.log()
    );
    s1.wait_established("192.0.2.12", Duration::from_secs(30))?;
    // Past the sync point: stale routes would be gone by now.
    wait_for("node 1 FIB synced", Duration::from_secs(130), || {
        s1.log().contains("FIB: synced").then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(RESYNC * 1000 + 500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let polls = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    eprintln!(
        "restart: route present in all {polls} polls over {:?}",
        t.elapsed()
    );
    let out = pinger
        .join()
        .map_err(|_| anyhow::anyhow!("pinger panicked"))??;
    let summary = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or(&out)
        .to_string();
    eprintln!("ping -i 0.05 across the restart: {summary}");
    assert!(summary.contains(" 0% packet loss"), "{out}");

    // Withdrawal: node 2 stops originating; node 1's kernel loses it.
    s2.reload(&node_config("192.0.2.12", "192.0.2.11", &[]))?;
    wait_route_gone(
        &n1,
        "10.244.2.0/24",
        "10.244.2.0/24 withdrawn from node 1's kernel",
    )?;
    wait_route_gone(&n2, "10.244.2.0/24", "node 2 blackhole removed")?;
    drop(p1);
    drop(p2);
    eprintln!("fib_bgp total {:?}", t0.elapsed());
    Ok(())
}

/// Node 1 peers with nodes 2 and 3 over two links; both announce
/// 10.244.9.0/24 (equal attributes), so node 1 installs one multipath
/// route; when node 3 stops, the route shrinks to the remaining next hop.
///
/// ```text
///  ns TAG-n2 192.0.2.12 ─veth─ 192.0.2.11 ns TAG-n1 198.51.100.11 ─veth─ 198.51.100.13 ns TAG-n3
///  originate 10.244.9.0/24     kernel: 10.244.9.0/24 proto 52           originate 10.244.9.0/24
///                                nexthop via 192.0.2.12 nexthop via 198.51.100.13
/// ```
#[test]
fn equal_paths_make_one_multipath_route() -> Result<()> {
    if !tortie_bgp::require("fib_bgp::equal_paths_make_one_multipath_route") {
        return Ok(());
    }
    let t0 = Instant::now();
    let (n1, n2, n3) = three_nodes("fen")?;
    let peer = |ip: &str| format!("  - peerIP: {ip}\n    asNumber: 64512\n    families: [IPv4]\n");
    let c1 = with_fib(tortie_bgp::config(
        64512,
        "192.0.2.11",
        "",
        &N1_NEIGHBOURS.map(peer).concat(),
    ));
    let s1 = Tortie::start(&n1, &c1)?;
    let _s2 = Tortie::start(
        &n2,
        &node_config("192.0.2.12", "192.0.2.11", &["10.244.9.0/24"]),
    )?;
    let mut s3 = Tortie::start(
        &n3,
        &node_config("198.51.100.13", "198.51.100.11", &["10.244.9.0/24"]),
    )?;
    let r = wait_for(
        "a two-way multipath route on node 1",
        Duration::from_secs(30),
        || {
            kernel_route(&n1, "10.244.9.0/24").ok().filter(|r| {
                r.contains("nexthop via 192.0.2.12") && r.contains("nexthop via 198.51.100.13")
            })
        },
    )
    .with_context(|| s1.log())?;
    eprintln!("node 1: {r} ({:?} after start)", t0.elapsed());
    s3.stop();
    let r = wait_kernel(
        &n1,
        "10.244.9.0/24",
        "via 192.0.2.12",
        Duration::from_secs(20),
    )?;
    wait_for(
        "the multipath route shrunk to one next hop",
        Duration::from_secs(20),
        || {
            kernel_route(&n1, "10.244.9.0/24")
                .ok()
                .filter(|r| r.contains("via 192.0.2.12") && !r.contains("198.51.100.13"))
        },
    )?;
    eprintln!("after node 3 stopped: {r}; total {:?}", t0.elapsed());
    Ok(())
}

/// eBGP to a BIRD ToR, both families: the ToR's static prefixes land in
/// the node's kernel via the ToR's addresses; the node's own prefixes are
/// blackholes.
///
/// ```text
///   ns TAG-t (BIRD, AS 4200000001)          ns TAG-n (tortie, AS 4200000011, fib on)
///   tor0 192.0.2.1  2001:db8::1  ─veth─  node0 192.0.2.11  2001:db8::11
///   static 10.245.1.0/24, fd00:245:1::/64   kernel: 10.245.1.0/24 via 192.0.2.1 proto 52
///                                                   fd00:245:1::/64 via 2001:db8::1 proto 52
/// ```
#[test]
fn ebgp_routes_from_a_bird_tor_are_installed() -> Result<()> {
    if !tortie_bgp::require("fib_bgp::ebgp_routes_from_a_bird_tor_are_installed") {
        return Ok(());
    }
    const TOR_AS: u32 = 4_200_000_001;
    const NODE_AS: u32 = 4_200_000_011;
    let t0 = Instant::now();
    let (tor, node) = tortie_bgp::tor_and_node("feb")?;
    let _bird = Bird::start(&tor, &tortie_bgp::bird_tor(TOR_AS, NODE_AS, 6, "", "")?)?;
    let conf = with_fib(tortie_bgp::tortie_node(NODE_AS, TOR_AS, 6, "", "")?);
    // A leftover of an earlier run (protocol 52) and someone else's route.
    node.run(
        "ip",
        &[
            "route",
            "add",
            "10.245.99.0/24",
            "via",
            "192.0.2.1",
            "proto",
            "52",
        ],
    )?;
    node.run(
        "ip",
        &["route", "add", "10.245.98.0/24", "via", "192.0.2.1"],
    )?;
    let s = Tortie::start(&node, &conf)?;
    let r4 = wait_kernel(
        &node,
        "10.245.1.0/24",
        "via 192.0.2.1",
        Duration::from_secs(30),
    )
    .with_context(|| s.log())?;
    let r6 = wait_for(
        "fd00:245:1::/64 via 2001:db8::1 proto 52",
        Duration::from_secs(30),
        || {
            node.run(
                "ip",
                &["-6", "route", "show", "fd00:245:1::/64", "proto", "52"],
            )
            .ok()
            .filter(|r| r.contains("via 2001:db8::1"))
        },
    )
    .with_context(|| s.log())?;
    let own = node.run("ip", &["route", "show", "10.244.11.0/24", "proto", "52"])?;
    assert!(own.contains("blackhole"), "own prefix: {own:?}");
    let own6 = node.run(
        "ip",
        &["-6", "route", "show", "fd00:11::/64", "proto", "52"],
    )?;
    assert!(own6.contains("blackhole"), "own IPv6 prefix: {own6:?}");
    eprintln!(
        "node: {} | {} ({:?} after start)",
        r4.trim(),
        r6.trim(),
        t0.elapsed()
    );
    // 10.245.1.0/24, 10.245.2.0/24, fd00:245:1::/64 and the two blackholes
    // (the leftover counts until the speaker has synced).
    let st = wait_routes_count(&s, "installed", 5, Duration::from_secs(10))?;
    assert_eq!(st.raw["routes"]["failed"].as_u64(), Some(0), "{}", st.raw);
    // Not a graceful restart (no gracefulRestart in this config): once
    // the session is up the leftover is removed; the static route stays.
    let t = Instant::now();
    wait_route_gone(
        &node,
        "10.245.99.0/24",
        "the leftover proto 52 route removed",
    )
    .with_context(|| s.log())?;
    eprintln!(
        "leftover gone {:?} after the status count settled",
        t.elapsed()
    );
    let other = node.run("ip", &["route", "show", "10.245.98.0/24"])?;
    assert!(other.contains("via 192.0.2.1"), "not tortie's: {other:?}");
    // SIGTERM leaves the routes in place for the next start.
    let mut s = s;
    s.stop();
    let left = node.run("ip", &["-4", "route", "show", "proto", "52"])?;
    assert!(left.contains("10.245.1.0/24 via 192.0.2.1"), "{left}");
    assert!(left.contains("blackhole 10.244.11.0/24"), "{left}");
    Ok(())
}

/// A reflected route whose next hop the node cannot reach: the kernel
/// refuses it, the speaker reports it (log with the kernel's reason,
/// `routes.failed`) and retries; once a route to the next hop exists, the
/// retry installs it.
///
/// ```text
///  ns TAG-n2 (fib on)                ns TAG-n1 (route reflector)              ns TAG-n3
///  192.0.2.12 ─────────veth───────── 192.0.2.11   198.51.100.11 ─────veth──── 198.51.100.13
///  learns 10.244.3.0/24 via          clusterId 192.0.2.11                     originate 10.244.3.0/24
///   198.51.100.13: unreachable
/// ```
#[test]
fn unreachable_next_hop_is_reported_and_retried() -> Result<()> {
    if !tortie_bgp::require("fib_bgp::unreachable_next_hop_is_reported_and_retried") {
        return Ok(());
    }
    let t0 = Instant::now();
    let (n1, n2, n3) = three_nodes("fun")?;
    let client = |ip: &str| {
        format!(
            "  - peerIP: {ip}\n    asNumber: 64512\n    families: [IPv4]\n    routeReflectorClient: true\n"
        )
    };
    let rr = format!(
        "clusterId: 192.0.2.11\n{}",
        tortie_bgp::config(64512, "192.0.2.11", "", &N1_NEIGHBOURS.map(client).concat())
    );
    let _s1 = Tortie::start(&n1, &rr)?;
    let s2 = Tortie::start(&n2, &node_config("192.0.2.12", "192.0.2.11", &[]))?;
    let _s3 = Tortie::start(
        &n3,
        &node_config("198.51.100.13", "198.51.100.11", &["10.244.3.0/24"]),
    )?;
    let st = wait_routes_count(&s2, "failed", 1, Duration::from_secs(30))?;
    eprintln!(
        "node 2 status routes: {} ({:?})",
        st.raw["routes"],
        t0.elapsed()
    );
    let log = s2.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused") && l.contains("10.244.3.0/24"))
        .with_context(|| format!("no refusal logged:\n{log}"))?;
    assert!(line.contains("unreachable"), "{line}");
    eprintln!("logged: {line}");
    assert_eq!(kernel_route(&n2, "10.244.3.0/24")?, "");

    // A route to the next hop appears: a retry installs the route.
    // (The kernel does not resolve a gateway through another gateway, so
    // the route that makes it reachable is a link route.)
    n2.run("ip", &["route", "add", "198.51.100.0/24", "dev", "to1"])?;
    let t = Instant::now();
    wait_kernel(
        &n2,
        "10.244.3.0/24",
        "via 198.51.100.13",
        Duration::from_secs(40),
    )?;
    wait_routes_count(&s2, "failed", 0, Duration::from_secs(5))?;
    eprintln!(
        "installed {:?} after the next hop became reachable; total {:?}",
        t.elapsed(),
        t0.elapsed()
    );
    Ok(())
}
