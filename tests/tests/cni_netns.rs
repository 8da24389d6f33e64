//! The CNI server wiring pods for real, in network namespaces.
//!
//! ```text
//!   pod netns <p>-pa                   "host" netns <p>-cnh (the node)
//!  ┌─────────────────────────┐        ┌──────────────────────────────────────┐
//!  │ eth0 10.244.1.x/32      ├─ veth ─┤ tort<11hex>  (proxy ARP, fe80::1)    │
//!  │      fd00:1::x/128      │        │ 10.244.1.x/32 dev tort.. proto 52    │
//!  │ default via 169.254.1.1 │        │ lo: 192.0.2.1/32, 2001:db8::1/128    │
//!  │ default via fe80::1     │        │   (the node's own address to ping)   │
//!  └─────────────────────────┘        └──────────────────────────────────────┘
//!        ... one per pod ...
//! ```
//!
//! The CniServer runs in this test process with a test CniContext; its
//! dataplane's host is the test's "host" namespace, never the machine's.
//! The context installs host routes itself, as the daemon's FIB would.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use tortie::cni::dataplane::{enable_forwarding, Dataplane};
use tortie::cni::netns::NetnsHandle;
use tortie::cni::spec::{code, CniResult, Command};
use tortie::cni::{CniReply, CniServer};
use tortie_integration::cni_util::{netns_path, ping, request, TestCtx};
use tortie_integration::{require_netns, Netns};

const CIDRS: &[&str] = &["10.244.1.0/24", "fd00:1::/64"];

struct Node {
    host: Netns,
    ctx: Arc<TestCtx>,
    state: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Node {
    fn new(cidrs: &[&str]) -> Result<Node> {
        let host = Netns::new("cnh")?;
        host.run("ip", &["addr", "add", "192.0.2.1/32", "dev", "lo"])?;
        host.run("ip", &["addr", "add", "2001:db8::1/128", "dev", "lo"])?;
        let ctx = TestCtx::new(&host, cidrs)?;
        // IPv6 forwarding is global (it changes RA handling on every
        // interface), so the agent turns it on, not the per-pod wiring.
        enable_forwarding(&ctx.host, true)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(Node {
            host,
            ctx,
            state: tempfile::tempdir()?,
            rt,
        })
    }

    fn server(&self) -> Result<Arc<CniServer>> {
        let host = NetnsHandle::open(std::path::Path::new(&netns_path(&self.host)))?;
        Ok(Arc::new(CniServer::with_dataplane(
            self.state.path(),
            self.ctx.clone(),
            Dataplane::new(host),
        )))
    }

    /// `server` handling `cmd` for pod default/POD (container `cid`,
    /// sandbox `netns`) as the plugin would forward it.
    fn call(
        &self,
        server: &CniServer,
        cmd: Command,
        cid: &str,
        netns: &str,
        pod: &str,
    ) -> CniReply {
        self.rt
            .block_on(server.handle(request(cmd, cid, netns, "default", pod)))
    }

    fn host_links(&self) -> Result<String> {
        self.host.run("ip", &["-o", "link", "show"])
    }
}

fn ok(reply: CniReply) -> Result<CniResult> {
    match reply {
        CniReply::CniResult(r) => Ok(r),
        CniReply::CniError(e) => Err(anyhow!("CNI error {}: {e}", e.code)),
    }
}

fn err_code(reply: CniReply) -> Result<(u32, String)> {
    match reply {
        CniReply::CniResult(r) => Err(anyhow!("expected an error, got {r:?}")),
        CniReply::CniError(e) => Ok((e.code, e.to_string())),
    }
}

fn ips(r: &CniResult) -> Vec<IpAddr> {
    r.ips.iter().map(|i| i.address.addr()).collect()
}

#[test]
fn add_ping_check_del() -> Result<()> {
    if !require_netns("cni add_ping_check_del", &["ip", "ping"]) {
        return Ok(());
    }
    let node = Node::new(CIDRS)?;
    let server = node.server()?;
    let pa = Netns::new("pa")?;
    let pb = Netns::new("pb")?;
    node.ctx.add_pod("default", "a", None);
    node.ctx.add_pod("default", "b", None);

    let t = Instant::now();
    let ra = ok(node.call(&server, Command::Add, "ca", &netns_path(&pa), "a"))?;
    let add_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rb = ok(node.call(&server, Command::Add, "cb", &netns_path(&pb), "b"))?;
    eprintln!("ADD latency (first pod, in-process): {add_ms:.1} ms");
    let a = ips(&ra);
    let b = ips(&rb);
    assert_eq!(
        a,
        vec!["10.244.1.1".parse::<IpAddr>()?, "fd00:1::1".parse()?]
    );
    assert_eq!(
        b,
        vec!["10.244.1.2".parse::<IpAddr>()?, "fd00:1::2".parse()?]
    );
    let host_if = tortie_policy::naming::host_interface_name("default", "a");
    assert_eq!(ra.interfaces[0].name, host_if);
    assert_eq!(ra.interfaces[0].mac, "ee:ee:ee:ee:ee:ee");
    assert_eq!(ra.interfaces[1].name, "eth0");
    assert_eq!(
        ra.interfaces[1].sandbox.as_deref(),
        Some(netns_path(&pa).as_str())
    );
    assert_eq!(ra.ips[0].gateway, Some("169.254.1.1".parse()?));
    assert_eq!(ra.ips[1].gateway, Some("fe80::1".parse()?));
    assert_eq!(ra.routes.len(), 2);

    // The pod's view: its addresses, MTU and default routes.
    let link = pa.run("ip", &["-d", "link", "show", "eth0"])?;
    assert!(link.contains("mtu 1400"), "{link}");
    let r4 = pa.run("ip", &["-4", "route", "show", "default"])?;
    assert!(
        r4.contains("via 169.254.1.1 dev eth0") && r4.contains("onlink"),
        "{r4}"
    );
    let r6 = pa.run("ip", &["-6", "route", "show", "default"])?;
    assert!(r6.contains("via fe80::1 dev eth0"), "{r6}");
    // The host's view: proxy ARP on, host routes with protocol 52.
    let proxy = node.host.run(
        "sysctl",
        &["-n", &format!("net.ipv4.conf.{host_if}.proxy_arp")],
    )?;
    assert_eq!(proxy.trim(), "1");
    let routes = node.host.run("ip", &["route", "show", "proto", "52"])?;
    assert!(
        routes.contains(&format!("10.244.1.1 dev {host_if} scope link")),
        "{routes}"
    );

    // Traffic: pod -> node, pod -> pod, both families.
    for (from, to) in [
        (&pa, "192.0.2.1"),
        (&pa, "2001:db8::1"),
        (&pa, "10.244.1.2"),
        (&pa, "fd00:1::2"),
        (&pb, "10.244.1.1"),
        (&pb, "fd00:1::1"),
    ] {
        ping(from, to.parse()?)?;
    }

    // CHECK with the ADD's result as prevResult.
    let mut check = request(Command::Check, "ca", &netns_path(&pa), "default", "a");
    check.config.prev_result = Some(ra.to_json("1.0.0"));
    ok(node.rt.block_on(server.handle(check.clone())))?;
    // CHECK notices a missing address.
    pa.run("ip", &["addr", "del", "10.244.1.1/32", "dev", "eth0"])?;
    let (c, msg) = err_code(node.rt.block_on(server.handle(check.clone())))?;
    assert_eq!(c, code::CHECK_FAILED, "{msg}");
    assert!(msg.contains("lacks address 10.244.1.1"), "{msg}");

    // A retried ADD gets the same addresses and repairs the wiring.
    let again = ok(node.call(&server, Command::Add, "ca", &netns_path(&pa), "a"))?;
    assert_eq!(ips(&again), a);
    ok(node.rt.block_on(server.handle(check)))?;
    ping(&pa, "192.0.2.1".parse()?)?;

    // DEL, twice: idempotent. The veth goes, the pod is reported gone.
    for _ in 0..2 {
        ok(node.call(&server, Command::Del, "ca", &netns_path(&pa), "a"))?;
    }
    assert!(!node.host_links()?.contains(&host_if));
    assert!(node.ctx.gone().contains(&("default".into(), "a".into())));
    assert!(!server
        .assigned()
        .contains_key(&("default".into(), "a".into())));
    let (c, _) = err_code(node.call(&server, Command::Check, "ca", &netns_path(&pa), "a"))?;
    assert_eq!(c, code::UNKNOWN_CONTAINER);

    // DEL after the sandbox's namespace is gone, and with no CNI_NETNS.
    let pb_path = netns_path(&pb);
    drop(pb);
    ok(node.call(&server, Command::Del, "cb", &pb_path, "b"))?;
    ok(node.call(&server, Command::Del, "cb", "", "b"))?;
    assert!(server.assigned().is_empty());
    Ok(())
}

#[test]
fn twenty_concurrent_adds_get_distinct_addresses_and_survive_reopen() -> Result<()> {
    if !require_netns("cni twenty_concurrent_adds", &["ip", "ping"]) {
        return Ok(());
    }
    let node = Node::new(CIDRS)?;
    let server = node.server()?;
    let pods: Vec<Netns> = (0..20)
        .map(|i| Netns::new(&format!("c{i}")))
        .collect::<Result<_>>()?;
    for i in 0..20 {
        node.ctx.add_pod("load", &format!("p{i}"), None);
    }
    let t = Instant::now();
    let results: Vec<(Result<CniResult>, f64)> = node.rt.block_on(async {
        let tasks: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let server = Arc::clone(&server);
                let req = request(
                    Command::Add,
                    &format!("c{i}"),
                    &netns_path(ns),
                    "load",
                    &format!("p{i}"),
                );
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = ok(server.handle(req).await);
                    (r, t.elapsed().as_secs_f64() * 1000.0)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| (Err(anyhow!("join: {e}")), 0.0)));
        }
        out
    });
    let total = t.elapsed();
    let mut lat: Vec<f64> = results.iter().map(|(_, ms)| *ms).collect();
    lat.sort_by(f64::total_cmp);
    eprintln!(
        "20 concurrent ADDs: total {:.0} ms, per ADD p50 {:.1} ms, max {:.1} ms",
        total.as_secs_f64() * 1000.0,
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
    let mut all = BTreeSet::new();
    for (r, _) in results {
        for ip in ips(&r?) {
            assert!(all.insert(ip), "{ip} handed out twice");
        }
    }
    assert_eq!(all.len(), 40, "20 pods x 2 families");
    // Every pod is wired: spot-check a few from both ends.
    for i in [0usize, 9, 19] {
        ping(&pods[i], "192.0.2.1".parse()?)?;
        ping(&pods[i], "2001:db8::1".parse()?)?;
    }
    let before = server.assigned();
    assert_eq!(before.len(), 20);
    drop(server);

    // A restarted agent reads the same table and the existing veths.
    let server = node.server()?;
    assert_eq!(server.assigned(), before);
    let existing = node.rt.block_on(server.existing_workloads());
    assert_eq!(existing.len(), 20);
    assert!(existing.iter().all(|w| w.host_ifindex > 0));
    let extra = Netns::new("cx")?;
    node.ctx.add_pod("load", "extra", None);
    let r = ok(node.rt.block_on(server.handle(request(
        Command::Add,
        "cx",
        &netns_path(&extra),
        "load",
        "extra",
    ))))?;
    for ip in ips(&r) {
        assert!(!all.contains(&ip), "{ip} reused after reopen");
    }
    // The state file on disk is what was assigned.
    let raw = std::fs::read_to_string(node.state.path().join("ipam.json"))?;
    let v: serde_json::Value = serde_json::from_str(&raw)?;
    assert_eq!(v["allocations"].as_array().map(Vec::len), Some(21));
    Ok(())
}

#[test]
fn failures_leave_nothing_behind() -> Result<()> {
    if !require_netns("cni failures_leave_nothing_behind", &["ip"]) {
        return Ok(());
    }
    let node = Node::new(&["10.244.1.0/30"])?;
    let server = node.server()?;
    let p = Netns::new("pf")?;
    let path = netns_path(&p);

    // Unknown pod: try again later, nothing allocated.
    let (c, msg) = err_code(node.call(&server, Command::Add, "c1", &path, "ghost"))?;
    assert_eq!(c, code::TRY_AGAIN_LATER, "{msg}");
    assert!(msg.contains("default/ghost is not known"), "{msg}");
    assert!(server.assigned().is_empty());

    // Policy programming fails: the ADD is undone.
    node.ctx.add_pod("default", "a", None);
    node.ctx.fail_ready.store(true, Ordering::SeqCst);
    let (c, msg) = err_code(node.call(&server, Command::Add, "c1", &path, "a"))?;
    assert_eq!(c, code::PROGRAMMING, "{msg}");
    assert!(msg.contains("policy programming refused"), "{msg}");
    assert!(server.assigned().is_empty());
    let host_if = tortie_policy::naming::host_interface_name("default", "a");
    assert!(!node.host_links()?.contains(&host_if));
    assert!(!p.run("ip", &["-o", "link", "show"])?.contains("eth0"));
    node.ctx.fail_ready.store(false, Ordering::SeqCst);

    // The sandbox namespace does not exist: a dataplane error, released.
    let (c, msg) = err_code(node.call(
        &server,
        Command::Add,
        "c1",
        "/var/run/netns/tortie-no-such-ns",
        "a",
    ))?;
    assert_eq!(c, code::DATAPLANE, "{msg}");
    assert!(server.assigned().is_empty());

    // Requested addresses: free and inside, else a clear error.
    node.ctx
        .add_pod("default", "fixed", Some(r#"["10.244.1.2"]"#));
    let r = ok(node.call(&server, Command::Add, "c2", &path, "fixed"))?;
    assert_eq!(ips(&r), vec!["10.244.1.2".parse::<IpAddr>()?]);
    node.ctx
        .add_pod("default", "copy", Some(r#"["10.244.1.2"]"#));
    node.ctx.add_pod("default", "far", Some(r#"["10.9.9.9"]"#));
    node.ctx.add_pod("default", "junk", Some(r#"not json"#));
    let q = Netns::new("pq")?;
    for (pod, want) in [
        ("copy", "already assigned to pod default/fixed"),
        ("far", "not inside the node's pod CIDRs (10.244.1.0/30)"),
        ("junk", "is not a JSON list"),
    ] {
        let (c, msg) = err_code(node.call(
            &server,
            Command::Add,
            &format!("c-{pod}"),
            &netns_path(&q),
            pod,
        ))?;
        assert_eq!(c, code::IPAM_REQUEST, "{msg}");
        assert!(msg.contains(want), "{msg} lacks {want}");
    }

    // /30 has two usable addresses: .2 is taken, .1 goes next, then full.
    node.ctx.add_pod("default", "b", None);
    node.ctx.add_pod("default", "c", None);
    ok(node.call(&server, Command::Add, "c3", &netns_path(&q), "b"))?;
    let z = Netns::new("pz")?;
    let (c, msg) = err_code(node.call(&server, Command::Add, "c4", &netns_path(&z), "c"))?;
    assert_eq!(c, code::IPAM_EXHAUSTED, "{msg}");
    assert!(msg.contains("10.244.1.0/30 are exhausted"), "{msg}");

    // GC: a pod whose object and sandbox are gone is released.
    node.ctx.remove_pod("default", "b");
    let q_path = netns_path(&q);
    drop(q);
    let gone = node.rt.block_on(server.gc()).map_err(|e| anyhow!("{e}"))?;
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0].pod.name, "b");
    assert!(!std::path::Path::new(&q_path).exists());
    assert!(node.ctx.gone().contains(&("default".into(), "b".into())));
    Ok(())
}

#[test]
fn corrupt_state_refuses_adds_until_repaired() -> Result<()> {
    if !require_netns("cni corrupt_state", &["ip"]) {
        return Ok(());
    }
    let node = Node::new(CIDRS)?;
    std::fs::write(node.state.path().join("ipam.json"), b"{\"version\":1,")?;
    let server = node.server()?;
    assert!(server.ipam_error().is_some());
    node.ctx.add_pod("default", "a", None);
    let p = Netns::new("pc")?;
    let (c, msg) = err_code(node.call(&server, Command::Add, "c1", &netns_path(&p), "a"))?;
    assert_eq!(c, code::IPAM_STATE, "{msg}");
    assert!(msg.contains("a copy is kept at"), "{msg}");
    assert!(!p.run("ip", &["-o", "link", "show"])?.contains("eth0"));
    // The operator repairs the file; the next ADD works without a restart.
    std::fs::write(
        node.state.path().join("ipam.json"),
        br#"{"version":1,"allocations":[]}"#,
    )?;
    let r = ok(node.call(&server, Command::Add, "c1", &netns_path(&p), "a"))?;
    assert_eq!(ips(&r).len(), 2);
    assert!(server.ipam_error().is_none());
    Ok(())
}

/// ADD latency for 100 pods one after another and 100 pods 20 at a time
/// (in-process server, test context installing host routes; no policy
/// engine). A measurement, not a check: `cargo test ... -- --ignored`.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn add_latency_100_pods() -> Result<()> {
    if !require_netns("cni add_latency_100_pods", &["ip"]) {
        return Ok(());
    }
    let node = Node::new(&["10.244.0.0/22", "fd00:1::/64"])?;
    let server = node.server()?;
    let pods: Vec<Netns> = (0..200)
        .map(|i| Netns::new(&format!("l{i}")))
        .collect::<Result<_>>()?;
    for i in 0..200 {
        node.ctx.add_pod("bench", &format!("p{i}"), None);
    }
    let req = |i: usize| {
        request(
            Command::Add,
            &format!("c{i}"),
            &netns_path(&pods[i]),
            "bench",
            &format!("p{i}"),
        )
    };
    let mut seq = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        ok(node.rt.block_on(server.handle(req(i))))?;
        seq.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut par = Vec::new();
    for batch in (100..200).collect::<Vec<_>>().chunks(20) {
        let lat: Vec<Result<f64>> = node.rt.block_on(async {
            let tasks: Vec<_> = batch
                .iter()
                .map(|i| {
                    let server = Arc::clone(&server);
                    let r = req(*i);
                    tokio::spawn(async move {
                        let t = Instant::now();
                        ok(server.handle(r).await).map(|_| t.elapsed().as_secs_f64() * 1000.0)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.map_err(|e| anyhow!("join: {e}")).and_then(|r| r));
            }
            out
        });
        for l in lat {
            par.push(l?);
        }
    }
    for (what, mut v) in [("sequential", seq), ("20 at a time", par)] {
        v.sort_by(f64::total_cmp);
        let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        eprintln!(
            "ADD latency, 100 pods {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            p(0.50),
            p(0.99),
            v[v.len() - 1]
        );
    }
    Ok(())
}
