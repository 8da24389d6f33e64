//! The FIB reconciler and netlink writer against a real kernel, in a
//! namespace the test makes.
//!
//! ```text
//!   node (tortie's FIB runs here)            peer
//!   fibn0 192.0.2.1/24, 2001:db8::1/64 ──── fibp0 192.0.2.2/24, 192.0.2.3/24, 2001:db8::2/64
//! ```
//!
//! Checks, with `ip route` as the independent witness: routes of every
//! shape are installed (plain, ECMP, blackhole, device, IPv6); a static
//! route of another protocol is never touched; a hand-deleted and a
//! hand-changed route are repaired at the next resync; an ECMP set shrinks
//! in place; a refused route is reported with the kernel's reason and does
//! not stop the others; a restarted reconciler keeps the routes until it
//! is synced, then removes only the stale ones.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use ipnet::IpNet;
use tortie::fib::netlink::{RouteSocket, BATCH_MESSAGES};
use tortie::fib::{KernelRoute, NextHop, Op, Reconciler, RouteKey, RTPROT_TORTIE};
use tortie_integration::bgp_util::in_netns;
use tortie_integration::{require_netns, Netns};

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn via(dst: &str, gws: &[&str]) -> KernelRoute {
    KernelRoute::unicast(
        net(dst),
        gws.iter()
            .map(|g| NextHop::via(g.parse().expect("test address")))
            .collect(),
    )
}

/// One reconcile pass as the agent does it: dump, diff, apply, record.
fn sync(sock: &mut RouteSocket, r: &mut Reconciler) -> Result<Vec<(Op, Result<(), String>)>> {
    let dumped = sock.dump(RTPROT_TORTIE)?;
    r.observe_dump(dumped);
    let ops = r.plan(Instant::now());
    let outcomes = sock.apply(RTPROT_TORTIE, &ops)?;
    let report = outcomes
        .iter()
        .map(|o| (o.op.clone(), o.result.clone()))
        .collect();
    r.record(outcomes, Instant::now());
    Ok(report)
}

fn routes(ns: &Netns, family: &str, filter: &[&str]) -> Result<String> {
    let mut args = vec![family, "route", "show"];
    args.extend_from_slice(filter);
    ns.run("ip", &args)
}

#[test]
fn fib_installs_repairs_and_never_touches_foreign_routes() -> Result<()> {
    if !require_netns(
        "fib_installs_repairs_and_never_touches_foreign_routes",
        &["ip"],
    ) {
        return Ok(());
    }
    let node = Netns::new("fibn")?;
    let peer = Netns::new("fibp")?;
    node.run(
        "ip",
        &[
            "link", "add", "fibn0", "type", "veth", "peer", "name", "fibp0",
        ],
    )?;
    node.run("ip", &["link", "set", "fibp0", "netns", peer.name()])?;
    node.run("ip", &["addr", "add", "192.0.2.1/24", "dev", "fibn0"])?;
    node.run(
        "ip",
        &["addr", "add", "2001:db8::1/64", "dev", "fibn0", "nodad"],
    )?;
    node.run("ip", &["link", "set", "fibn0", "up"])?;
    for a in ["192.0.2.2/24", "192.0.2.3/24"] {
        peer.run("ip", &["addr", "add", a, "dev", "fibp0"])?;
    }
    peer.run(
        "ip",
        &["addr", "add", "2001:db8::2/64", "dev", "fibp0", "nodad"],
    )?;
    peer.run("ip", &["link", "set", "fibp0", "up"])?;
    // Someone else's route: tortie must never touch it.
    node.run(
        "ip",
        &[
            "route",
            "add",
            "10.99.0.0/16",
            "via",
            "192.0.2.2",
            "proto",
            "static",
        ],
    )?;
    let ifindex: u32 = node
        .run("cat", &["/sys/class/net/fibn0/ifindex"])?
        .trim()
        .parse()
        .context("ifindex of fibn0")?;

    let ns_name = node.name().to_string();
    let report = in_netns(&ns_name, move || -> Result<String> {
        let mut sock = RouteSocket::open()?;
        let mut r = Reconciler::new();
        r.mark_synced();
        let mut desired: Vec<KernelRoute> = (0..200)
            .map(|i| via(&format!("10.244.{i}.0/24"), &["192.0.2.2"]))
            .collect();
        desired.push(via("10.245.0.0/24", &["192.0.2.2", "192.0.2.3"]));
        desired.push(KernelRoute::blackhole(net("10.246.0.0/24")));
        desired.push(KernelRoute::unicast(
            net("10.246.0.7/32"),
            vec![NextHop::dev(ifindex)],
        ));
        desired.push(via("fd00:2::/64", &["2001:db8::2"]));
        desired.push(via("10.247.0.0/24", &["198.51.100.1"])); // unreachable
        r.set_all(desired);
        let report = sync(&mut sock, &mut r)?;
        let refused: Vec<_> = report.iter().filter(|(_, res)| res.is_err()).collect();
        ensure!(
            refused.len() == 1,
            "exactly the unreachable route is refused: {refused:?}"
        );
        ensure!(
            matches!(&refused[0].1, Err(reason) if reason.contains("unreachable")),
            "kernel reason is kept: {refused:?}"
        );
        ensure!(r.installed() == 204, "installed {}", r.installed());
        ensure!(r.failed().len() == 1);
        Ok(format!("{} ops", report.len()))
    })?;
    eprintln!("first sync: {report}");

    let v4 = routes(&node, "-4", &["proto", "52"])?;
    assert_eq!(
        v4.lines().filter(|l| l.starts_with("10.244.")).count(),
        200,
        "{v4}"
    );
    assert!(v4.contains("blackhole 10.246.0.0/24"), "{v4}");
    assert!(v4.contains("10.246.0.7 dev fibn0"), "{v4}");
    let ecmp = routes(&node, "-4", &["10.245.0.0/24"])?;
    assert!(
        ecmp.contains("nexthop via 192.0.2.2") && ecmp.contains("nexthop via 192.0.2.3"),
        "{ecmp}"
    );
    let v6 = routes(&node, "-6", &["proto", "52"])?;
    assert!(v6.contains("fd00:2::/64 via 2001:db8::2"), "{v6}");
    assert!(
        !v4.contains("10.247.0.0"),
        "refused route is not there: {v4}"
    );

    // Hand edits: one route deleted, one changed, and the ECMP set shrinks.
    node.run("ip", &["route", "del", "10.244.5.0/24", "proto", "52"])?;
    node.run(
        "ip",
        &[
            "route",
            "replace",
            "10.244.6.0/24",
            "via",
            "192.0.2.3",
            "proto",
            "52",
        ],
    )?;
    let ns_name = node.name().to_string();
    in_netns(&ns_name, move || -> Result<()> {
        let mut sock = RouteSocket::open()?;
        // A fresh reconciler = an agent restart: nothing goes before sync.
        let mut r = Reconciler::new();
        r.set_all((0..100).map(|i| via(&format!("10.244.{i}.0/24"), &["192.0.2.2"])));
        r.set(via("10.245.0.0/24", &["192.0.2.3"]));
        let report = sync(&mut sock, &mut r)?;
        ensure!(
            report.iter().all(|(op, _)| !matches!(op, Op::Delete(_))),
            "no deletes before sync: {report:?}"
        );
        ensure!(
            report.len() == 3,
            "repair 10.244.5 and 10.244.6, shrink 10.245: {report:?}"
        );
        Ok(())
    })?;
    let v4 = routes(&node, "-4", &["proto", "52"])?;
    assert!(
        v4.contains("10.244.5.0/24 via 192.0.2.2"),
        "deleted route is back: {v4}"
    );
    assert!(
        v4.contains("10.244.6.0/24 via 192.0.2.2"),
        "changed route is repaired: {v4}"
    );
    assert!(
        v4.contains("10.244.150.0/24"),
        "stale routes stay until sync: {v4}"
    );
    let ecmp = routes(&node, "-4", &["10.245.0.0/24"])?;
    assert!(
        !ecmp.contains("nexthop") && ecmp.contains("via 192.0.2.3"),
        "{ecmp}"
    );

    // After sync, only tortie's stale routes go; the static route stays.
    let ns_name = node.name().to_string();
    in_netns(&ns_name, move || -> Result<()> {
        let mut sock = RouteSocket::open()?;
        let mut r = Reconciler::new();
        r.set_all((0..100).map(|i| via(&format!("10.244.{i}.0/24"), &["192.0.2.2"])));
        r.mark_synced();
        let report = sync(&mut sock, &mut r)?;
        ensure!(report.iter().all(|(_, res)| res.is_ok()), "{report:?}");
        ensure!(
            r.installed() == 100,
            "only the 100 wanted remain, installed {}",
            r.installed()
        );
        let key = RouteKey {
            table: 254,
            dst: net("10.99.0.0/16"),
        };
        ensure!(
            !sock.dump(RTPROT_TORTIE)?.iter().any(|k| k.key == key),
            "the static route is not ours"
        );
        Ok(())
    })?;
    let v4 = routes(&node, "-4", &["proto", "52"])?;
    assert_eq!(v4.lines().count(), 100, "{v4}");
    let all = routes(&node, "-4", &[])?;
    assert!(
        all.contains("10.99.0.0/16 via 192.0.2.2 dev fibn0 proto static"),
        "{all}"
    );
    let v6 = routes(&node, "-6", &["proto", "52"])?;
    assert!(v6.trim().is_empty(), "{v6}");
    Ok(())
}

/// The FIB service as the node agent uses it: a workload's host route
/// registered through the handle is in the kernel when the acknowledgement
/// arrives; a route the kernel refuses is answered with its reason; a
/// route deleted by hand comes back; an empty list removes them.
#[test]
fn fib_handle_acknowledges_local_routes_once_installed() -> Result<()> {
    use std::time::Duration;
    use tortie::fib::service::{spawn, FibSettings};
    if !require_netns(
        "fib_handle_acknowledges_local_routes_once_installed",
        &["ip"],
    ) {
        return Ok(());
    }
    let node = Netns::new("fibh")?;
    node.run(
        "ip",
        &[
            "link", "add", "tortw0", "type", "veth", "peer", "name", "eth0",
        ],
    )?;
    node.run("ip", &["link", "set", "tortw0", "up"])?;
    node.run("ip", &["link", "set", "eth0", "up"])?;
    let ifindex: u32 = node
        .run("cat", &["/sys/class/net/tortw0/ifindex"])?
        .trim()
        .parse()
        .context("ifindex")?;
    let name = node.name().to_string();
    // `ip` started from the thread inside the namespace runs there too.
    fn ours() -> Result<String> {
        let out = tortie_integration::run_with_timeout(
            std::process::Command::new("ip").args(["-4", "route", "show", "proto", "52"]),
            std::time::Duration::from_secs(10),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
    in_netns(&name, move || {
        let fib = spawn(FibSettings {
            resync: Duration::from_secs(1),
            ..FibSettings::default()
        })?;
        let host = KernelRoute::unicast(net("10.244.1.7/32"), vec![NextHop::dev(ifindex)]);
        fib.set_local_routes("workload default/web-0", vec![host])
            .blocking_wait()
            .map_err(anyhow::Error::msg)?;
        // The acknowledgement means the kernel has it now.
        let r = ours()?;
        ensure!(r.contains("10.244.1.7 dev tortw0 scope link"), "{r}");
        // A device that does not exist: refused with the kernel's reason.
        let bad = KernelRoute::unicast(net("10.244.1.8/32"), vec![NextHop::dev(999_999)]);
        let e = fib
            .set_local_routes("workload default/web-1", vec![bad])
            .blocking_wait()
            .expect_err("no such device");
        ensure!(e.contains("No such device"), "{e}");
        fib.set_local_routes("workload default/web-1", vec![]);
        // Deleted by hand: back within the resync period.
        tortie_integration::run_with_timeout(
            std::process::Command::new("ip").args(["route", "del", "10.244.1.7/32"]),
            Duration::from_secs(10),
        )?;
        tortie_integration::wait_for("the host route back", Duration::from_secs(5), || {
            ours().ok().filter(|r| r.contains("10.244.1.7"))
        })?;
        let stats = fib.stats();
        ensure!(stats.running && stats.installed == 1, "{stats:?}");
        // Removed: an empty list (deletes wait for the sync).
        fib.mark_synced();
        fib.set_local_routes("workload default/web-0", vec![])
            .blocking_wait()
            .map_err(anyhow::Error::msg)?;
        tortie_integration::wait_for("the host route gone", Duration::from_secs(5), || {
            ours().ok().filter(|r| r.trim().is_empty())
        })?;
        Ok(())
    })
}

/// More routes than one batch take the pipelined path (a sender thread
/// does the `sendmsg`s while the caller encodes and records): each refused
/// route is still named by its sequence number, in whichever batch it
/// falls, the rest go in, and a withdrawal of everything leaves nothing.
#[test]
fn pipelined_batches_name_each_refused_route() -> Result<()> {
    if !require_netns("pipelined_batches_name_each_refused_route", &["ip"]) {
        return Ok(());
    }
    let (node, _peer) = veth_pair("fibq", "fibr")?;
    let ns_name = node.name().to_string();
    let mut refused = in_netns(&ns_name, move || -> Result<Vec<String>> {
        let mut sock = RouteSocket::open()?;
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set_all((0..N).map(batch_route));
        // In key order, so that the refusals sit where the comment on
        // `UNREACHABLE` says (a plan this large goes out spread).
        let mut ops = r.plan(Instant::now());
        ops.sort_by_key(|op| op.route().key);
        ensure!(ops.len() == N as usize);
        let mut refused = Vec::new();
        let now = Instant::now();
        sock.apply_each(RTPROT_TORTIE, ops, |o| {
            if let Err(reason) = &o.result {
                refused.push(format!("{} {reason}", o.op.route().key.dst));
            }
            r.record_one(o, now);
        })?;
        ensure!(r.installed() == N as usize - UNREACHABLE.len());
        ensure!(r.failed().len() == UNREACHABLE.len());
        let dumped = sock.dump(RTPROT_TORTIE)?.len();
        ensure!(dumped == r.installed(), "kernel has {dumped}");
        // Withdraw everything (also pipelined).
        r.set_all([]);
        let ops = r.plan(Instant::now() + std::time::Duration::from_secs(60));
        ensure!(ops.len() == N as usize - UNREACHABLE.len(), "{}", ops.len());
        sock.apply_each(RTPROT_TORTIE, ops, |o| {
            if let Err(reason) = &o.result {
                refused.push(format!("withdraw {} {reason}", o.op.route().key.dst));
            }
            r.record_one(o, now);
        })?;
        ensure!(sock.dump(RTPROT_TORTIE)?.is_empty(), "routes left behind");
        Ok(refused)
    })?;
    refused.sort();
    ensure!(refused == unreachable_reasons(), "refused {refused:?}");
    Ok(())
}

/// As the FIB service does it: a plan made batch by batch while the kernel
/// works (`start_plan`, `next_ops`, `apply_planned`), large enough to go out
/// in spread order, then a withdrawal of everything, planned by a walk of
/// the table. Refusals are still named, routes the kernel took are all
/// there, and nothing is left behind.
#[test]
fn a_plan_made_while_the_kernel_works_installs_and_withdraws_everything() -> Result<()> {
    if !require_netns(
        "a_plan_made_while_the_kernel_works_installs_and_withdraws_everything",
        &["ip"],
    ) {
        return Ok(());
    }
    let (node, _peer) = veth_pair("fibl", "fibm")?;
    let ns_name = node.name().to_string();
    let mut refused = in_netns(&ns_name, move || -> Result<Vec<String>> {
        let mut sock = RouteSocket::open()?;
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set_all((0..N).map(batch_route));
        let mut refused = Vec::new();
        let mut sizes = Vec::new();
        let now = Instant::now();
        let mut apply = |r: &mut Reconciler, sock: &mut RouteSocket, refused: &mut Vec<String>| {
            r.start_plan(now);
            sock.apply_planned(
                RTPROT_TORTIE,
                r,
                |r| {
                    let ops = r.next_ops(BATCH_MESSAGES);
                    sizes.push(ops.len());
                    ops
                },
                |r, o| {
                    if let Err(reason) = &o.result {
                        refused.push(format!("{} {reason}", o.op.route().key.dst));
                    }
                    r.record_one(o, now);
                },
            )
        };
        apply(&mut r, &mut sock, &mut refused)?;
        ensure!(r.installed() == N as usize - UNREACHABLE.len());
        ensure!(r.failed().len() == UNREACHABLE.len());
        let dumped: Vec<KernelRoute> = sock.dump(RTPROT_TORTIE)?;
        let mut want: Vec<KernelRoute> = (0..N)
            .filter(|i| !UNREACHABLE.contains(i))
            .map(batch_route)
            .collect();
        let mut got: Vec<KernelRoute> = dumped;
        got.sort();
        want.sort();
        ensure!(got.len() == want.len(), "kernel has {}", got.len());
        for (g, w) in got.iter().zip(&want) {
            ensure!(
                g.key == w.key && w.target.satisfied_by(&g.target),
                "{g} vs {w}"
            );
        }
        r.set_all([]);
        apply(&mut r, &mut sock, &mut refused)?;
        ensure!(sock.dump(RTPROT_TORTIE)?.is_empty(), "routes left behind");
        ensure!(r.installed() == 0 && r.desired() == 0);
        ensure!(
            sizes.iter().all(|&n| n <= BATCH_MESSAGES),
            "batches of {sizes:?}"
        );
        Ok(refused)
    })?;
    refused.sort();
    ensure!(refused == unreachable_reasons(), "refused {refused:?}");
    Ok(())
}

/// Routes of the batch tests: five batches' worth.
const N: u32 = 5000;

/// Routes via an unreachable gateway: in key order, in the first, a middle
/// and the last batch, and at a batch's last request (the one that asks
/// for the acknowledgement).
const UNREACHABLE: [u32; 5] = [0, 1023, 1024, 2500, 4999];

fn batch_route(i: u32) -> KernelRoute {
    let dst = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
    if UNREACHABLE.contains(&i) {
        via(&dst, &["198.51.100.1"])
    } else {
        via(&dst, &["192.0.2.2"])
    }
}

fn unreachable_reasons() -> Vec<String> {
    let mut want: Vec<String> = UNREACHABLE
        .iter()
        .map(|i| format!("{} Network is unreachable", batch_route(*i).key.dst))
        .collect();
    want.sort();
    want
}

/// `node` (192.0.2.1/24 on `{node}0`) and `peer` (192.0.2.2/24) joined by
/// a veth.
fn veth_pair(node: &str, peer: &str) -> Result<(Netns, Netns)> {
    let n = Netns::new(node)?;
    let p = Netns::new(peer)?;
    let (a, b) = (format!("{node}0"), format!("{peer}0"));
    n.run(
        "ip",
        &["link", "add", &a, "type", "veth", "peer", "name", &b],
    )?;
    n.run("ip", &["link", "set", &b, "netns", p.name()])?;
    n.run("ip", &["addr", "add", "192.0.2.1/24", "dev", &a])?;
    n.run("ip", &["link", "set", &a, "up"])?;
    p.run("ip", &["addr", "add", "192.0.2.2/24", "dev", &b])?;
    p.run("ip", &["link", "set", &b, "up"])?;
    Ok((n, p))
}
