//! `tortie agent --datastore kubernetes` on one node against a BIRD ToR,
//! with the in-process fake API server as the cluster, end to end.
//!
//! ```text
//!  ns TAG-t (ToR: BIRD, AS 65001)       ns TAG-n (node n1: tortie agent, AS 64512)
//!  tor0 192.0.2.1/24 ─────veth───────── node0 192.0.2.11/24
//!                                       podCIDR 10.244.1.0/24 (blackhole, announced)
//!                                       fake API server 127.0.0.1:PORT (bound in this
//!                                       namespace by a thread that entered it)
//! ```
//!
//! Checked: the objects the server serves bring the BGPPeer's session up
//! and BIRD learns the pod CIDR; the agent PATCHes the Node condition
//! `TortieBGPReady`; an invalid BGPPeer becomes a Warning Event; with the
//! server down the status says disconnected while the routes and the
//! session stay; with it back the status says connected again.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tortie_integration::agent_node::{self, peer_established, TestAgent, TorAndNode, TOR_IP};
use tortie_integration::bgp_util::{in_netns, WorkDir};
use tortie_integration::fake_apiserver::FakeApiServer;
use tortie_integration::{wait_for, Netns};

/// The kubelet's own condition on the Node, which the agent's PATCH keeps.
const KUBELET_READY: &str = "  conditions: [{type: Ready, status: \"True\"}]\n";

fn established(s: &Value) -> bool {
    peer_established(s, TOR_IP)
}

/// The fake API server listening on 127.0.0.1 inside `ns`: the runtime is
/// built on a thread that entered the namespace, so its listener (and its
/// worker threads) belong there; the agent in `ns` reaches it on loopback.
struct ServerInNs {
    server: Option<FakeApiServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServerInNs {
    fn start(ns: &Netns) -> Result<Self> {
        let (runtime, server) = in_netns(ns.name(), || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let server = rt.block_on(FakeApiServer::start(Duration::from_millis(500)))?;
            Ok((rt, server))
        })?;
        Ok(ServerInNs {
            server: Some(server),
            runtime: Some(runtime),
        })
    }

    fn get(&self) -> &FakeApiServer {
        self.server.as_ref().expect("server lives until drop")
    }
}

impl Drop for ServerInNs {
    fn drop(&mut self) {
        // The server's tasks first, then their runtime.
        drop(self.server.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

#[test]
fn one_node_agent_against_the_kubernetes_api() -> Result<()> {
    let test = "agent_kube::one_node_agent_against_the_kubernetes_api";
    if !agent_node::require(test, false)? {
        return Ok(());
    }
    let t0 = Instant::now();
    let topo = TorAndNode::up("ak")?;
    let (bird, node) = (&topo.bird, &topo.node);

    let server = ServerInNs::start(node)?;
    let api = server.get();
    api.apply_yaml(&agent_node::cluster_yaml(KUBELET_READY))?;
    let kdir = WorkDir::new("agentkc")?;
    let kubeconfig = api.write_kubeconfig(kdir.path())?;
    let kc = format!("KUBECONFIG={}", kubeconfig.display());
    // No proxy and no in-cluster service: the kubeconfig's server only.
    let env = [
        "-u",
        "KUBERNETES_SERVICE_HOST",
        "-u",
        "HTTP_PROXY",
        "-u",
        "HTTPS_PROXY",
        "-u",
        "http_proxy",
        "-u",
        "https_proxy",
        &kc,
        "POD_NAMESPACE=tortie-system",
    ];
    let agent = TestAgent::start(node, "agentk", "kubernetes", "127.0.0.1:9098", &env)?;

    // The session to the served BGPPeer, and the pod CIDR at BIRD.
    let st = agent.wait_status(
        "peer 192.0.2.1 Established",
        Duration::from_secs(30),
        established,
    )?;
    eprintln!("session up {:?} after start", t0.elapsed());
    assert_eq!(st["node"], "n1");
    assert_eq!(st["asn"], 64512);
    topo.wait_pod_cidr_at_tor(&agent)?;
    agent.wait_status("datastore connected", Duration::from_secs(15), |s| {
        s["datastore"]["connected"] == true
    })?;

    // The Node condition, PATCHed by the agent; the kubelet's stays.
    let cond = wait_for(
        "Node n1 condition TortieBGPReady True",
        Duration::from_secs(30),
        || {
            let n1 = api.get("nodes", "", "n1")?;
            let conds = n1["status"]["conditions"].as_array()?.clone();
            let ours = conds
                .iter()
                .find(|c| c["type"] == "TortieBGPReady" && c["status"] == "True")?
                .clone();
            conds.iter().any(|c| c["type"] == "Ready").then_some(ours)
        },
    )
    .with_context(|| {
        format!(
            "node: {:?}\nrequests: {:?}\n{}",
            api.get("nodes", "", "n1"),
            api.requests()
                .iter()
                .filter(|r| !r.starts_with("GET"))
                .collect::<Vec<_>>(),
            agent.log()
        )
    })?;
    eprintln!("condition {:?} after start: {cond}", t0.elapsed());
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("PATCH /api/v1/nodes/n1/status")),
        "{:?}",
        api.requests()
    );

    // An invalid BGPPeer: a Warning Event about it; the good session stays.
    api.apply(
        json!({"apiVersion": "tortie.io/v1alpha1", "kind": "BGPPeer",
                     "metadata": {"name": "bad"},
                     "spec": {"peerIP": "192.0.2.300", "asNumber": 65002}}),
    )?;
    let ev = wait_for(
        "a Warning Event about BGPPeer bad",
        Duration::from_secs(20),
        || {
            api.objects("events")
                .into_iter()
                .find(|e| e["regarding"]["kind"] == "BGPPeer" && e["regarding"]["name"] == "bad")
        },
    )
    .with_context(|| format!("events: {:?}\n{}", api.objects("events"), agent.log()))?;
    assert_eq!(ev["type"], "Warning", "{ev}");
    assert_eq!(ev["reportingController"], "tortie-agent", "{ev}");
    assert_eq!(ev["reportingInstance"], "n1", "{ev}");
    assert!(
        ev["note"].as_str().unwrap_or_default().contains("peerIP"),
        "{ev}"
    );
    let st = agent.status()?;
    assert!(established(&st), "{st}");

    // The API server goes down: disconnected, and routing carries on.
    let t_down = Instant::now();
    api.set_down(true);
    let st = agent.wait_status("datastore disconnected", Duration::from_secs(20), |s| {
        s["datastore"]["connected"] == false
    })?;
    eprintln!(
        "disconnected seen {:?} after set_down: {}",
        t_down.elapsed(),
        st["datastore"]
    );
    assert!(established(&st), "{st}");
    let r = node.run("ip", &["route", "show", "10.244.1.0/24", "proto", "52"])?;
    assert!(
        r.contains("blackhole"),
        "route gone with the API down: {r:?}"
    );
    assert!(!bird.routes_for("10.244.1.0/24")?.is_empty());
    bird.wait_established("n1", Duration::from_secs(5))?;

    // Back up: connected again, everything still in place.
    let t_up = Instant::now();
    api.set_down(false);
    let st = agent.wait_status("datastore connected again", Duration::from_secs(30), |s| {
        s["datastore"]["connected"] == true
    })?;
    eprintln!("reconnected {:?} after set_down(false)", t_up.elapsed());
    assert!(established(&st), "{st}");
    let r = node.run("ip", &["route", "show", "10.244.1.0/24", "proto", "52"])?;
    assert!(r.contains("blackhole"), "{r:?}");
    assert!(!bird.routes_for("10.244.1.0/24")?.is_empty());

    drop(agent);
    drop(server);
    eprintln!("total {:?}", t0.elapsed());
    Ok(())
}
