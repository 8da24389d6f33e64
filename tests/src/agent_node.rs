//! One node running the real `tortie agent` binary beside a BIRD ToR: the
//! topology, the cluster objects and the agent handle that the single-node
//! end-to-end tests (file datastore, Kubernetes datastore) share.
//!
//! ```text
//!  ns TAG-t (ToR: BIRD, AS 65001)       ns TAG-n (node n1: tortie agent, AS 64512)
//!  tor0 192.0.2.1/24 ─────veth───────── node0 192.0.2.11/24
//!                                       podCIDR 10.244.1.0/24 (blackhole, announced)
//! ```
//!
//! Must never: stop the agent other than by its PID, or wait without a
//! deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::bgp_util::{log_tail, spawn_logged, WorkDir};
use crate::bird::{Bird, FAST_TIMERS};
use crate::tortie_bgp::tortie_binary;
use crate::{kill_pid, run_with_timeout, wait_for, Daemon, Netns};

/// The ToR's address, the agent's BGPPeer.
pub const TOR_IP: &str = "192.0.2.1";

/// Checks root, BIRD, iptables, ipset and the tortie binary (and
/// `tortie-cni` when `cni`): `false` means skip (outside CI only; under
/// `CI=true` a missing piece is an error).
pub fn require(test: &str, cni: bool) -> Result<bool> {
    if !crate::require_netns(test, &["bird", "birdc", "iptables", "ipset"]) {
        return Ok(false);
    }
    let found = if cni {
        crate::cluster::binaries().map(|_| ())
    } else {
        tortie_binary().map(|_| ())
    };
    match found {
        Ok(()) => Ok(true),
        Err(e) if crate::in_ci() => Err(e),
        Err(e) => {
            crate::report_skip(format!("{test}: {e:#}"));
            Ok(false)
        }
    }
}

/// The one-node cluster: Node n1 (`node_status_extra`: more lines under
/// its `status:`, two-space indented), the BGPConfiguration, the BGPPeer
/// `tor`, the IP pool (natOutgoing) and the `default` Namespace.
pub fn cluster_yaml(node_status_extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {{rack: a}}
  annotations:
    tortie.io/bgp-address: 192.0.2.11/24
spec:
  podCIDRs: [10.244.1.0/24]
status:
  addresses: [{{type: InternalIP, address: 192.0.2.11}}]
{node_status_extra}---
apiVersion: tortie.io/v1alpha1
kind: BGPConfiguration
metadata: {{name: default}}
spec:
  asNumber: 64512
  nodeToNodeMesh: true
---
apiVersion: tortie.io/v1alpha1
kind: BGPPeer
metadata: {{name: tor}}
spec:
  peerIP: {TOR_IP}
  asNumber: 65001
  holdTime: 9
  keepaliveTime: 3
---
apiVersion: tortie.io/v1alpha1
kind: IPPool
metadata: {{name: default}}
spec:
  cidr: 10.244.0.0/16
  encapsulation: None
  natOutgoing: true
---
apiVersion: v1
kind: Namespace
metadata: {{name: default}}
"#
    )
}

/// BIRD on the ToR: AS 65001, one session to n1, imports everything.
pub fn tor_bird_config() -> String {
    format!(
        "log stderr all;\nrouter id {TOR_IP};\nprotocol device {{ }}\n\
         protocol bgp n1 {{\n  local {TOR_IP} as 65001;\n  neighbor 192.0.2.11 as 64512;\n  \
         hold time 9; keepalive time 3;\n  {FAST_TIMERS}\n  ipv4 {{ import all; export none; }};\n}}\n"
    )
}

/// The ToR and the node namespaces, linked, the node forwarding, BIRD up.
#[derive(Debug)]
pub struct TorAndNode {
    /// BIRD first: it stops before its namespace goes.
    pub bird: Bird,
    pub tor: Netns,
    pub node: Netns,
}

impl TorAndNode {
    /// Namespaces `<prefix>TAGt` and `<prefix>TAGn`.
    pub fn up(tag: &str) -> Result<Self> {
        let (tor, node) = crate::tortie_bgp::tor_and_node(tag)?;
        node.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        let bird = Bird::start(&tor, &tor_bird_config())?;
        Ok(TorAndNode { bird, tor, node })
    }
}

impl TorAndNode {
    /// Waits until BIRD's session to n1 is Established and BIRD has
    /// learned n1's pod CIDR (10.244.1.0/24); fails with `agent`'s log.
    pub fn wait_pod_cidr_at_tor(&self, agent: &TestAgent) -> Result<()> {
        self.bird
            .wait_established("n1", Duration::from_secs(10))
            .with_context(|| agent.log())?;
        wait_for("BIRD learns 10.244.1.0/24", Duration::from_secs(15), || {
            self.bird
                .routes_for("10.244.1.0/24")
                .ok()
                .filter(|r| !r.is_empty())
        })
        .with_context(|| agent.log())?;
        Ok(())
    }
}

/// Whether a `tortie status -o json` document has the session to `peer`
/// Established.
pub fn peer_established(status: &Value, peer: &str) -> bool {
    status["peers"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p["address"] == peer && p["state"] == "Established")
    })
}

/// A `tortie agent` for node n1, stopped by PID on drop.
#[derive(Debug)]
pub struct TestAgent {
    dir: WorkDir,
    log: PathBuf,
    /// The program and its arguments (`env .. tortie agent ..` when the
    /// agent needs a changed environment).
    command: Vec<String>,
    daemon: Option<Daemon>,
}

impl TestAgent {
    /// Starts `tortie agent --node-name n1 --datastore DATASTORE` in `ns`
    /// with its run and state directories in a fresh work directory, and
    /// waits until its socket answers. `env` (`-u VAR`, `VAR=VALUE`) goes
    /// to env(1) in front of the agent when not empty.
    pub fn start(
        ns: &Netns,
        tag: &str,
        datastore: &str,
        metrics_addr: &str,
        env: &[&str],
    ) -> Result<Self> {
        let dir = WorkDir::new(tag)?;
        let bin = tortie_binary()?.display().to_string();
        let mut command: Vec<String> = if env.is_empty() {
            vec![bin]
        } else {
            std::iter::once("env")
                .chain(env.iter().copied())
                .map(str::to_string)
                .chain([bin])
                .collect()
        };
        command.extend(
            [
                "agent",
                "--node-name",
                "n1",
                "--datastore",
                datastore,
                "--run-dir",
                &dir.join("run").display().to_string(),
                "--state-dir",
                &dir.join("state").display().to_string(),
                "--metrics-addr",
                metrics_addr,
            ]
            .map(str::to_string),
        );
        let mut a = TestAgent {
            log: dir.join("agent.log"),
            dir,
            command,
            daemon: None,
        };
        a.launch(ns)?;
        Ok(a)
    }

    /// Starts the agent (again, after [`TestAgent::terminate`]: same state
    /// and run directories) and waits until its socket answers.
    pub fn launch(&mut self, ns: &Netns) -> Result<()> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| anyhow!("no agent command"))?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.daemon = Some(spawn_logged(ns, program, &args, &self.log)?);
        let up = wait_for("agent.sock answers", Duration::from_secs(20), || {
            if !self.daemon.as_mut().is_some_and(Daemon::is_running) {
                return Some(Err(anyhow!("tortie agent exited")));
            }
            self.status().ok().map(|_| Ok(()))
        });
        match up {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => Err(e.context(format!(
                "tortie agent did not start:\n{}",
                log_tail(&self.log, 40)
            ))),
        }
    }

    /// SIGTERM, and wait until the process is gone.
    pub fn terminate(&mut self) -> Result<()> {
        let mut d = self
            .daemon
            .take()
            .ok_or_else(|| anyhow!("no agent running"))?;
        kill_pid(d.pid(), libc::SIGTERM);
        wait_for("agent exits", Duration::from_secs(10), || {
            (!d.is_running()).then_some(())
        })
        .with_context(|| self.log())
    }

    /// The work directory: `run/` (agent.sock), `state/`, `agent.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The last lines of the agent's output.
    pub fn log(&self) -> String {
        log_tail(&self.log, 60)
    }

    /// `tortie status -o json --run-dir RUN`.
    pub fn status(&self) -> Result<Value> {
        let out = run_with_timeout(
            Command::new(tortie_binary()?).args([
                "status",
                "-o",
                "json",
                "--run-dir",
                &self.run_dir().display().to_string(),
            ]),
            Duration::from_secs(10),
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Polls the status until `cond` holds; fails with the last status and
    /// the log.
    pub fn wait_status(
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

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_objects_parse_with_the_extra_status_lines() {
        let extra = "  conditions: [{type: Ready, status: \"True\"}]\n";
        let text = cluster_yaml(extra);
        let docs: Vec<serde_json::Value> = text
            .split("\n---\n")
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 5);
        assert_eq!(docs[0]["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(docs[2]["spec"]["peerIP"], TOR_IP);
        assert!(tor_bird_config().contains("neighbor 192.0.2.11 as 64512;"));
    }
}
