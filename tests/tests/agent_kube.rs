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

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use tortie_integration::bgp_util::{in_netns, link, log_tail, spawn_logged, WorkDir};
use tortie_integration::bird::{Bird, FAST_TIMERS};
use tortie_integration::fake_apiserver::FakeApiServer;
use tortie_integration::tortie_bgp::tortie_binary;
use tortie_integration::{run_with_timeout, wait_for, Daemon, Netns};

fn objects() -> &'static str {
    r#"apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {rack: a}
  annotations:
    tortie.io/bgp-address: 192.0.2.11/24
spec:
  podCIDRs: [10.244.1.0/24]
status:
  addresses: [{type: InternalIP, address: 192.0.2.11}]
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: tortie.io/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 64512
  nodeToNodeMesh: true
---
apiVersion: tortie.io/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 192.0.2.1
  asNumber: 65001
  holdTime: 9
  keepaliveTime: 3
---
apiVersion: tortie.io/v1alpha1
kind: IPPool
metadata: {name: default}
spec:
  cidr: 10.244.0.0/16
  encapsulation: None
  natOutgoing: true
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
"#
}

fn bird_config() -> String {
    format!(
        "log stderr all;\nrouter id 192.0.2.1;\nprotocol device {{ }}\n\
         protocol bgp n1 {{\n  local 192.0.2.1 as 65001;\n  neighbor 192.0.2.11 as 64512;\n  \
         hold time 9; keepalive time 3;\n  {FAST_TIMERS}\n  ipv4 {{ import all; export none; }};\n}}\n"
    )
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

/// A running `tortie agent --datastore kubernetes`.
struct Agent {
    dir: WorkDir,
    log: std::path::PathBuf,
    daemon: Option<Daemon>,
}

impl Agent {
    fn start(ns: &Netns, kubeconfig: &std::path::Path) -> Result<Self> {
        let dir = WorkDir::new("agentk")?;
        let log = dir.join("agent.log");
        let bin = tortie_binary()?.display().to_string();
        let run = dir.join("run").display().to_string();
        let state = dir.join("state").display().to_string();
        let kc = format!("KUBECONFIG={}", kubeconfig.display());
        let daemon = spawn_logged(
            ns,
            "env",
            &[
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
                &bin,
                "agent",
                "--node-name",
                "n1",
                "--datastore",
                "kubernetes",
                "--run-dir",
                &run,
                "--state-dir",
                &state,
                "--metrics-addr",
                "127.0.0.1:9098",
            ],
            &log,
        )?;
        let mut a = Agent {
            dir,
            log,
            daemon: Some(daemon),
        };
        let up = wait_for("agent.sock answers", Duration::from_secs(20), || {
            if !a.daemon.as_mut().is_some_and(Daemon::is_running) {
                return Some(Err(anyhow!("tortie agent exited")));
            }
            a.status().ok().map(|_| Ok(()))
        });
        match up {
            Ok(Ok(())) => Ok(a),
            Ok(Err(e)) | Err(e) => Err(e.context(format!(
                "tortie agent did not start:\n{}",
                log_tail(&a.log, 40)
            ))),
        }
    }

    fn log(&self) -> String {
        log_tail(&self.log, 60)
    }

    /// `tortie status -o json --run-dir RUN`.
    fn status(&self) -> Result<Value> {
        let out = run_with_timeout(
            Command::new(tortie_binary()?).args([
                "status",
                "-o",
                "json",
                "--run-dir",
                &self.dir.join("run").display().to_string(),
            ]),
            Duration::from_secs(10),
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut last = Value::Null;
        wait_for(what, timeout, || {
            let s = self.status().ok()?;
            last = s.clone();
            cond(&s).then_some(s)
        })
        .with_context(|| format!("last status: {last:#}\nlog:\n{}", self.log()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }
}

fn established(s: &Value) -> bool {
    s["peers"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p["address"] == "192.0.2.1" && p["state"] == "Established")
    })
}

#[test]
fn one_node_agent_against_the_kubernetes_api() -> Result<()> {
    let test = "agent_kube::one_node_agent_against_the_kubernetes_api";
    if !tortie_integration::require_netns(test, &["bird", "birdc", "iptables", "ipset"]) {
        return Ok(());
    }
    if let Err(e) = tortie_binary() {
        if tortie_integration::in_ci() {
            return Err(e);
        }
        eprintln!("skipped: {test}: {e:#}");
        return Ok(());
    }
    let t0 = Instant::now();
    let tor = Netns::new("akt")?;
    let node = Netns::new("akn")?;
    link(&tor, "tor0", 1, &node, "node0", 11)?;
    node.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    let bird = Bird::start(&tor, &bird_config())?;

    let server = ServerInNs::start(&node)?;
    let api = server.get();
    api.apply_yaml(objects())?;
    let kdir = WorkDir::new("agentkc")?;
    let kubeconfig = api.write_kubeconfig(kdir.path())?;
    let agent = Agent::start(&node, &kubeconfig)?;

    // The session to the served BGPPeer, and the pod CIDR at BIRD.
    let st = agent.wait_status(
        "peer 192.0.2.1 Established",
        Duration::from_secs(30),
        established,
    )?;
    eprintln!("session up {:?} after start", t0.elapsed());
    assert_eq!(st["node"], "n1");
    assert_eq!(st["asn"], 64512);
    bird.wait_established("n1", Duration::from_secs(10))?;
    wait_for("BIRD learns 10.244.1.0/24", Duration::from_secs(15), || {
        bird.routes_for("10.244.1.0/24")
            .ok()
            .filter(|r| !r.is_empty())
    })
    .with_context(|| agent.log())?;
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
