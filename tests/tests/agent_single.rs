//! `tortie agent` on one node against a BIRD ToR, from a manifest
//! directory (the file datastore), end to end.
//!
//! ```text
//!  ns TAG-t (ToR: BIRD, AS 65001)          ns TAG-n (node n1: tortie agent, AS 64512)         ns TAG-p (pod default/web)
//!  tor0 192.0.2.1/24 ──────veth──────────  node0 192.0.2.11/24                                 eth0 10.244.1.x/32
//!                                          podCIDR 10.244.1.0/24 (blackhole, announced)  ─veth─ (host side tortXXXXXXXXXXX,
//!                                          agent.sock, metrics 127.0.0.1:9099                   route 10.244.1.x/32 dev tort...)
//! ```
//!
//! Checked: the BGPPeer's session comes up and BIRD learns the pod CIDR;
//! `tortie status -o json` has the contract fields; a broken manifest
//! keeps everything as it was and shows in the status; a CNI ADD through
//! the real `tortie-cni` binary gives the pod its address, its host route
//! and its policy chains before it returns; natOutgoing rules exist;
//! /metrics, /healthz and /readyz answer; SIGTERM stops the agent, removes
//! its socket and leaves the routes and rules in place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use tortie_integration::agent_node::{self, peer_established, TestAgent, TorAndNode, TOR_IP};
use tortie_integration::bgp_util::{in_netns, WorkDir};
use tortie_integration::cni_util::run_plugin_in;
use tortie_integration::{wait_for, Netns};

const METRICS_PORT: u16 = 9099;

/// `tortie-cni` beside `tortie` (built when missing, as the cluster tests do).
fn cni_binary() -> Result<PathBuf> {
    Ok(tortie_integration::cluster::binaries()?.cni)
}

fn pod_and_policy() -> &'static str {
    r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  nodeName: n1
  containers: [{name: web, image: nginx, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
    - from: [{ipBlock: {cidr: 192.0.2.0/24}}]
      ports: [{port: 80, protocol: TCP}]
"#
}

/// `GET PATH` on the agent's metrics address inside `ns`.
fn http_get(ns: &str, path: &str) -> Result<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status: u16 = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no status line in {out:?}"))?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
}

/// Runs the real CNI plugin inside the node namespace, the way kubelet
/// (through the container runtime) does.
fn cni(node: &Netns, command: &str, pod_ns: &Netns, sock: &Path) -> Result<(bool, Value)> {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "tortie",
        "type": "tortie-cni",
        "agentSocket": sock.display().to_string(),
        "mtu": 1500,
    });
    let netns = format!("/var/run/netns/{}", pod_ns.name());
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c0ffee0001"),
        ("CNI_NETNS", &netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee0001",
        ),
    ];
    let run = run_plugin_in(
        &cni_binary()?,
        node,
        &env,
        &conf.to_string(),
        Duration::from_secs(30),
    )
    .with_context(|| format!("tortie-cni {command}"))?;
    let v = run
        .json()
        .with_context(|| format!("tortie-cni stderr {:?}", run.stderr))?;
    Ok((run.exit == Some(0), v))
}

#[test]
fn one_node_agent_against_bird() -> Result<()> {
    if !agent_node::require("agent_single::one_node_agent_against_bird", true)? {
        return Ok(());
    }
    let t0 = Instant::now();
    let topo = TorAndNode::up("as")?;
    let (bird, node) = (&topo.bird, &topo.node);

    let mdir = WorkDir::new("agentmf")?;
    std::fs::write(mdir.join("cluster.yaml"), agent_node::cluster_yaml(""))?;
    let datastore = format!("file:{}", mdir.path().display());
    let metrics = format!("127.0.0.1:{METRICS_PORT}");
    let agent = TestAgent::start(node, "agent", &datastore, &metrics, &[])?;

    // The session to the BGPPeer, and the pod CIDR at BIRD.
    let st = agent.wait_status("peer 192.0.2.1 Established", Duration::from_secs(30), |s| {
        peer_established(s, TOR_IP)
    })?;
    eprintln!("session up {:?} after start", t0.elapsed());
    topo.wait_pod_cidr_at_tor(&agent)?;

    // The status document's contract fields.
    assert_eq!(st["node"], "n1");
    assert_eq!(st["asn"], 64512);
    assert_eq!(st["routerId"], "192.0.2.11");
    let peer = st["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["address"] == "192.0.2.1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(peer["asn"], 65001, "{peer}");
    assert_eq!(peer["source"], "BGPPeer tor", "{peer}");
    for key in ["prefixesReceived", "prefixesAdvertised", "lastError"] {
        assert!(peer.get(key).is_some(), "peers[].{key} missing: {peer}");
    }
    for key in ["policies", "workloads", "errors"] {
        assert!(
            st["policy"].get(key).is_some(),
            "policy.{key} missing: {st}"
        );
    }
    assert_eq!(st["datastore"]["errors"], serde_json::json!([]), "{st}");
    // Our own pod CIDR is a blackhole of tortie's protocol.
    wait_for(
        "blackhole 10.244.1.0/24 proto 52",
        Duration::from_secs(15),
        || {
            node.run("ip", &["route", "show", "10.244.1.0/24", "proto", "52"])
                .ok()
                .filter(|r| r.contains("blackhole"))
        },
    )
    .with_context(|| agent.log())?;
    let st = agent.wait_status("routes installed", Duration::from_secs(15), |s| {
        s["routes"]["installed"].as_u64().unwrap_or(0) >= 1
    })?;
    eprintln!("routes: {}", st["routes"]);

    // natOutgoing: our chain, reached from POSTROUTING.
    let nat = wait_for("natOutgoing rules", Duration::from_secs(10), || {
        node.run("iptables-save", &["-t", "nat"]).ok().filter(|s| {
            s.contains("-A POSTROUTING -j TORTIE-NAT-OUTGOING") && s.contains("MASQUERADE")
        })
    })
    .with_context(|| agent.log())?;
    assert!(nat.contains("--match-set tortie-masq4 src"), "{nat}");

    // Metrics, health, readiness.
    let ready = wait_for("/readyz 200", Duration::from_secs(20), || {
        http_get(node.name(), "/readyz")
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .with_context(|| format!("{:?}\n{}", http_get(node.name(), "/readyz"), agent.log()))?;
    eprintln!("ready {:?} after start: {}", t0.elapsed(), ready.1.trim());
    let (code, _) = http_get(node.name(), "/healthz")?;
    assert_eq!(code, 200);
    let (code, metrics) = http_get(node.name(), "/metrics")?;
    assert_eq!(code, 200);
    for want in [
        "tortie_bgp_sessions{kind=\"external\",state=\"Established\"} 1",
        "tortie_bgp_prefixes_advertised{source=\"BGPPeer tor\",peer=\"192.0.2.1\"}",
        "tortie_route_sync_duration_seconds_count",
        "tortie_policy_sync_duration_seconds_count",
        "tortie_ready 1",
    ] {
        assert!(
            metrics.contains(want),
            "{want} missing from /metrics:\n{metrics}"
        );
    }

    // A broken manifest: everything stays, the error shows.
    std::fs::write(
        mdir.join("broken.yaml"),
        "apiVersion: tortie.io/v1alpha1\nkind: IPPool\nmetadata: {name: bad}\nspec:\n  cidr: 10.250.0.0/99\n",
    )?;
    let st = agent.wait_status(
        "the broken manifest in status",
        Duration::from_secs(15),
        |s| {
            s["datastore"]["errors"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        },
    )?;
    eprintln!("datastore errors: {}", st["datastore"]["errors"]);
    let errors = st["datastore"]["errors"].to_string();
    assert!(
        errors.contains("bad") || errors.contains("broken.yaml"),
        "{errors}"
    );
    let peer_state = st["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["address"] == "192.0.2.1"))
        .map(|p| p["state"].clone());
    assert_eq!(peer_state, Some(Value::from("Established")));
    assert!(!bird.routes_for("10.244.1.0/24")?.is_empty());
    std::fs::remove_file(mdir.join("broken.yaml"))?;
    agent.wait_status("the error gone", Duration::from_secs(15), |s| {
        s["datastore"]["errors"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })?;

    // A pod: its object first, then CNI ADD through the real plugin.
    std::fs::write(mdir.join("web.yaml"), pod_and_policy())?;
    let pod = Netns::new("asp")?;
    let sock = agent.run_dir().join("agent.sock");
    let t_add = Instant::now();
    let (ok, result) = wait_for("CNI ADD succeeds", Duration::from_secs(15), || {
        match cni(node, "ADD", &pod, &sock) {
            Ok((true, v)) => Some(Ok(v)),
            Ok((false, v)) if v.to_string().contains("not known") => None, // the Pod not seen yet
            Ok((false, v)) => Some(Err(anyhow!("CNI ADD failed: {v}"))),
            Err(e) => Some(Err(e)),
        }
    })
    .map(|r| (true, r))
    .with_context(|| agent.log())?;
    let result = result.with_context(|| agent.log())?;
    assert!(ok);
    eprintln!("CNI ADD {:?}: {result}", t_add.elapsed());
    let addr = result["ips"][0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no ips[0].address in {result}"))?
        .to_string();
    let ip = addr.split('/').next().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.244.1."), "{addr}");
    // The pod has it; the host route and the policy are there already.
    let in_pod = pod.run("ip", &["-4", "addr", "show", "dev", "eth0"])?;
    assert!(in_pod.contains(&ip), "{in_pod}");
    let host_route = node.run("ip", &["route", "show", &format!("{ip}/32")])?;
    assert!(
        host_route.contains("dev tort"),
        "host route: {host_route:?}"
    );
    let filter = node.run("iptables-save", &["-t", "filter"])?;
    assert!(filter.contains("-A FORWARD -j TORT-FORWARD"), "{filter}");
    assert!(
        filter.contains("TORT-TW-"),
        "no to-workload chain:\n{filter}"
    );
    let st = agent.status()?;
    assert!(
        st["policy"]["workloads"].as_u64().unwrap_or(0) >= 1,
        "{}",
        st["policy"]
    );
    assert!(
        st["policy"]["policies"].as_u64().unwrap_or(0) >= 1,
        "{}",
        st["policy"]
    );

    // The node reaches the pod on the allowed port's protocol (ping is
    // not TCP 80, but host-to-pod is always allowed by the API).
    let ping = node.run("ping", &["-c", "1", "-W", "2", &ip])?;
    assert!(ping.contains(" 0% packet loss"), "{ping}");

    // SIGTERM: clean exit, socket gone, routes and rules stay.
    let mut agent = agent;
    agent.terminate()?;
    assert!(!sock.exists(), "the socket is still there");
    let r = node.run("ip", &["route", "show", "10.244.1.0/24", "proto", "52"])?;
    assert!(r.contains("blackhole"), "route gone after SIGTERM: {r:?}");
    let hr = node.run("ip", &["route", "show", &format!("{ip}/32")])?;
    assert!(
        hr.contains("dev tort"),
        "host route gone after SIGTERM: {hr:?}"
    );
    let nat = node.run("iptables-save", &["-t", "nat"])?;
    assert!(nat.contains("TORTIE-NAT-OUTGOING"), "{nat}");
    let filter = node.run("iptables-save", &["-t", "filter"])?;
    assert!(filter.contains("TORT-TW-"), "policy gone after SIGTERM");
    assert!(agent.log().contains("SIGTERM"), "{}", agent.log());
    assert!(
        agent.dir().join("state").join("bgp-restart").exists(),
        "graceful-restart marker removed"
    );

    // Start again: a graceful restart. The session comes back, and once
    // the FIB has synced (ready) the pod's host route is still there: the
    // agent took the wired pod over from IPAM and the host's veths.
    let t_restart = Instant::now();
    agent.launch(node)?;
    agent.wait_status(
        "peer Established after restart",
        Duration::from_secs(30),
        |s| peer_established(s, TOR_IP),
    )?;
    wait_for("/readyz 200 after restart", Duration::from_secs(30), || {
        http_get(node.name(), "/readyz")
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .with_context(|| agent.log())?;
    eprintln!("ready again {:?} after the restart", t_restart.elapsed());
    let hr = node.run("ip", &["route", "show", &format!("{ip}/32")])?;
    assert!(
        hr.contains("dev tort"),
        "host route gone after restart: {hr:?}\n{}",
        agent.log()
    );
    let ping = node.run("ping", &["-c", "1", "-W", "2", &ip])?;
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    let st = agent.status()?;
    assert!(
        st["policy"]["workloads"].as_u64().unwrap_or(0) >= 1,
        "{}",
        st["policy"]
    );

    // DEL is idempotent; the host route goes.
    let (ok, v) = cni(node, "DEL", &pod, &sock)?;
    assert!(ok, "DEL: {v}");
    let (ok, v) = cni(node, "DEL", &pod, &sock)?;
    assert!(ok, "second DEL: {v}");
    wait_for("host route gone after DEL", Duration::from_secs(10), || {
        node.run("ip", &["route", "show", &format!("{ip}/32")])
            .ok()
            .filter(|r| r.trim().is_empty())
    })
    .with_context(|| agent.log())?;

    agent.terminate()?;
    assert!(!sock.exists(), "the socket is still there");
    Ok(())
}
