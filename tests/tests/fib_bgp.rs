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
use tortie_integration::tortie_bgp::{self, Tortie};
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
    format!(
        "{}fib:\n  enabled: true\n  resyncSeconds: {RESYNC}\n",
        tortie_bgp::config(64512, router_id, &originate, &peers)
    )
}

/// A pod namespace behind a veth, wired as the CNI wires it.
fn pod(node: &Netns, tag: &str, host_if: &str, addr: &str) -> Result<Netns> {
    let p = Netns::new(tag)?;
    node.run(
        "ip",
        &[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
        ],
    )?;
    node.run("ip", &["link", "set", "eth0", "netns", p.name()])?;
    // The gateway address lives on the host side so the pod's ARP for it
    // is answered without proxy-ARP tricks.
    node.run("ip", &["addr", "add", "169.254.1.1/32", "dev", host_if])?;
    node.run("ip", &["link", "set", host_if, "up"])?;
    node.run(
        "ip",
        &["route", "add", &format!("{addr}/32"), "dev", host_if],
    )?;
    node.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    p.run("ip", &["addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
    p.run("ip", &["link", "set", "eth0", "up"])?;
    p.run(
        "ip",
        &[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
            "onlink",
        ],
    )?;
    Ok(p)
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
    let p1 = pod(&n1, "fbp1", "cali1", "10.244.1.10")?;
    let p2 = pod(&n2, "fbp2", "cali2", "10.244.2.10")?;
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

    // SIGKILL + start: the route never leaves the kernel.
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
    let out = p1.run("ping", &["-c", "2", "-i", "0.2", "-W", "1", "10.244.2.10"])?;
    assert!(out.contains(" 0% packet loss"), "{out}");

    // Withdrawal: node 2 stops originating; node 1's kernel loses it.
    s2.reload(&node_config("192.0.2.12", "192.0.2.11", &[]))?;
    wait_for(
        "10.244.2.0/24 withdrawn from node 1's kernel",
        Duration::from_secs(20),
        || {
            kernel_route(&n1, "10.244.2.0/24")
                .ok()
                .filter(String::is_empty)
        },
    )?;
    wait_for("node 2 blackhole removed", Duration::from_secs(20), || {
        kernel_route(&n2, "10.244.2.0/24")
            .ok()
            .filter(String::is_empty)
    })?;
    drop(p1);
    drop(p2);
    eprintln!("fib_bgp total {:?}", t0.elapsed());
    Ok(())
}
