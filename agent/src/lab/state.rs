//! What a running lab is: the plan it was made from, the processes it
//! started (by PID) and the addresses its pods got. Kept in
//! `RUN_DIR/lab.json` so that `status` and `down` in another process (or
//! after a failed `up`) know exactly what to show and what to remove.
//!
//! Also the `tortie lab status -o json` document, a contract for scripts
//! and tests: `nodes[]` with `name`, `netns`, `address`, `podCIDRs`, and
//! `pods[]` with `namespace`, `name`, `netns`, `ip`, `node`, and `tors[]`
//! with their `kind`, `daemons` (by PID) and, filled in by the shell,
//! their `sessions`, `learned` pod CIDRs and `kernelRoutes`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::{LabOptions, Plan, TorKind};

/// The state file's name inside the run directory.
pub const STATE_FILE: &str = "lab.json";

/// One process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRecord {
    /// `bird tor-a`, `agent n1`.
    pub role: String,
    pub pid: u32,
    /// A string its command line must contain to be signalled (`bird`,
    /// `tortie`): a reused PID is never ours.
    pub program: String,
    pub netns: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub options: LabOptions,
    pub plan: Plan,
    pub tortie_bin: PathBuf,
    pub cni_bin: PathBuf,
    /// Namespaces made so far, in creation order.
    pub namespaces: Vec<String>,
    pub processes: Vec<ProcessRecord>,
    /// `NAMESPACE/NAME` -> the addresses of the CNI result.
    pub pod_ips: BTreeMap<String, Vec<IpAddr>>,
}

impl LabState {
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(STATE_FILE)
    }

    /// The latest record of `role`.
    pub fn process(&self, role: &str) -> Option<&ProcessRecord> {
        self.processes.iter().rev().find(|p| p.role == role)
    }

    /// Records a (re)started process, replacing an earlier one of the role.
    pub fn set_process(&mut self, rec: ProcessRecord) {
        self.processes.retain(|p| p.role != rec.role);
        self.processes.push(rec);
    }

    /// The status document; `running` says whether a recorded PID runs.
    pub fn document(&self, running: impl Fn(&ProcessRecord) -> bool) -> StatusDocument {
        let pid_of = |role: String| {
            self.process(&role)
                .map(|p| (p.pid, running(p)))
                .unwrap_or((0, false))
        };
        let nodes = self
            .plan
            .nodes
            .iter()
            .map(|n| {
                let (pid, up) = pid_of(format!("agent {}", n.name));
                NodeDoc {
                    name: n.name.clone(),
                    netns: n.netns.clone(),
                    address: n.address.to_string(),
                    asn: n.asn,
                    rack: self.plan.rack_of(n).map(|r| r.name.clone()),
                    pod_cidrs: vec![n.pod_cidr.to_string()],
                    run_dir: self
                        .options
                        .run_dir
                        .join(&n.name)
                        .join("run")
                        .display()
                        .to_string(),
                    agent_pid: pid,
                    agent_running: up,
                }
            })
            .collect();
        let tors = self
            .plan
            .racks
            .iter()
            .filter_map(|r| {
                let (pid, up) = pid_of(format!("bird {}", r.tor_name()));
                let daemons = tor_programs(self.plan.tor)
                    .iter()
                    .map(|program| {
                        let role = format!("{program} {}", r.tor_name());
                        let (pid, running) = pid_of(role.clone());
                        DaemonDoc {
                            role,
                            program: program.to_string(),
                            pid,
                            running,
                        }
                    })
                    .collect();
                Some(TorDoc {
                    name: r.tor_name(),
                    netns: r.netns.clone(),
                    address: r.gateway?.to_string(),
                    asn: r.asn?,
                    subnet: r.subnet.to_string(),
                    kind: self.plan.tor.to_string(),
                    bird_pid: pid,
                    bird_running: up,
                    daemons,
                    sessions: Vec::new(),
                    learned: Vec::new(),
                    kernel_routes: Vec::new(),
                })
            })
            .collect();
        let pods = self
            .plan
            .pods
            .iter()
            .map(|p| {
                let ips = self.pod_ips.get(&p.id()).cloned().unwrap_or_default();
                PodDoc {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    netns: p.netns.clone(),
                    ip: ips.first().map(|ip| ip.to_string()),
                    ips: ips.iter().map(IpAddr::to_string).collect(),
                    node: p.node.clone(),
                }
            })
            .collect();
        StatusDocument {
            prefix: self.plan.prefix.clone(),
            run_dir: self.options.run_dir.display().to_string(),
            manifests: self.options.run_dir.join("manifests").display().to_string(),
            tor: self.plan.tor.to_string(),
            nodes,
            tors,
            pods,
        }
    }
}

/// The programs a ToR of `kind` runs, in start order; each is recorded
/// with the role `PROGRAM tor-NAME`.
pub fn tor_programs(kind: TorKind) -> &'static [&'static str] {
    match kind {
        TorKind::Bird => &["bird"],
        TorKind::Gobgp => &["zebra", "gobgpd"],
        TorKind::None => &[],
    }
}

/// `tortie lab status -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    pub prefix: String,
    pub run_dir: String,
    /// The shared manifest directory every agent reads.
    pub manifests: String,
    pub tor: String,
    pub nodes: Vec<NodeDoc>,
    pub tors: Vec<TorDoc>,
    pub pods: Vec<PodDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDoc {
    pub name: String,
    pub netns: String,
    pub address: String,
    pub asn: Option<u32>,
    pub rack: Option<String>,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    /// The agent's run dir (`tortie status --run-dir` this).
    pub run_dir: String,
    pub agent_pid: u32,
    pub agent_running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TorDoc {
    pub name: String,
    pub netns: String,
    pub address: String,
    pub asn: u32,
    pub subnet: String,
    /// `bird` or `gobgp`.
    #[serde(default)]
    pub kind: String,
    /// BIRD's PID (0 on a GoBGP ToR; see `daemons`).
    pub bird_pid: u32,
    pub bird_running: bool,
    /// Every process of the ToR: `bird`, or `zebra` and `gobgpd`.
    #[serde(default)]
    pub daemons: Vec<DaemonDoc>,
    /// The ToR's BGP sessions (from birdc or `gobgp neighbor`).
    #[serde(default)]
    pub sessions: Vec<TorSessionDoc>,
    /// Prefixes in the ToR's BGP RIB (birdc show route, `gobgp global rib`).
    #[serde(default)]
    pub learned: Vec<String>,
    /// Prefixes its routing daemon installed in the ToR's kernel (`ip route
    /// show proto bird|bgp`): what the ToR forwards pod traffic by.
    #[serde(default)]
    pub kernel_routes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonDoc {
    /// `gobgpd tor-a`.
    pub role: String,
    pub program: String,
    pub pid: u32,
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TorSessionDoc {
    /// The peer's name in the lab (`n1`, `tor-b`), or its address.
    pub peer: String,
    /// `Established`, `Active` ...
    pub state: String,
    pub established: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDoc {
    pub namespace: String,
    pub name: String,
    pub netns: String,
    /// The first address (none until the CNI ADD returned).
    pub ip: Option<String>,
    pub ips: Vec<String>,
    pub node: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_document_shape() {
        let options = LabOptions::default();
        let plan = Plan::new(&options);
        let mut state = LabState {
            options,
            plan,
            tortie_bin: "/x/tortie".into(),
            cni_bin: "/x/tortie-cni".into(),
            namespaces: vec![],
            processes: vec![],
            pod_ips: BTreeMap::new(),
        };
        state.set_process(ProcessRecord {
            role: "agent n1".into(),
            pid: 7,
            program: "tortie".into(),
            netns: "tl-n1".into(),
        });
        state.set_process(ProcessRecord {
            role: "agent n1".into(),
            pid: 8,
            program: "tortie".into(),
            netns: "tl-n1".into(),
        });
        assert_eq!(state.processes.len(), 1);
        state.pod_ips.insert(
            "frontend/web-n1".into(),
            vec!["10.244.1.2".parse().unwrap()],
        );
        let doc = state.document(|p| p.pid == 8);
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["nodes"][0]["name"], "n1");
        assert_eq!(v["nodes"][0]["netns"], "tl-n1");
        assert_eq!(v["nodes"][0]["address"], "192.0.2.11");
        assert_eq!(v["nodes"][0]["podCIDRs"][0], "10.244.1.0/24");
        assert_eq!(v["nodes"][0]["agentPid"], 8);
        assert_eq!(v["nodes"][0]["agentRunning"], true);
        assert_eq!(v["nodes"][0]["runDir"], "/run/tortie-lab/n1/run");
        assert_eq!(v["tors"][1]["asn"], 65002);
        assert_eq!(v["tors"][1]["kind"], "bird");
        assert_eq!(v["tors"][1]["daemons"][0]["role"], "bird tor-b");
        assert_eq!(v["pods"][0]["ip"], "10.244.1.2");
        assert_eq!(v["pods"][0]["node"], "n1");
        assert_eq!(v["pods"][0]["netns"], "tl-frontend-web-n1");
        assert_eq!(v["pods"][1]["ip"], serde_json::Value::Null);
        let back: StatusDocument = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc);
        let round: LabState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(round, state);
    }

    #[test]
    fn gobgp_tors_list_zebra_and_gobgpd() {
        let options = LabOptions {
            tor: TorKind::Gobgp,
            ..Default::default()
        };
        let plan = Plan::new(&options);
        let mut state = LabState {
            options,
            plan,
            tortie_bin: "/x/tortie".into(),
            cni_bin: "/x/tortie-cni".into(),
            namespaces: vec![],
            processes: vec![],
            pod_ips: BTreeMap::new(),
        };
        for (role, pid) in [("zebra tor-a", 11), ("gobgpd tor-a", 12)] {
            state.set_process(ProcessRecord {
                role: role.into(),
                pid,
                program: role.split(' ').next().unwrap().into(),
                netns: "tl-tor-a".into(),
            });
        }
        let doc = state.document(|p| p.pid == 12);
        let a = &doc.tors[0];
        assert_eq!(a.kind, "gobgp");
        assert_eq!(a.bird_pid, 0);
        let d: Vec<_> = a
            .daemons
            .iter()
            .map(|d| (d.role.as_str(), d.pid, d.running))
            .collect();
        assert_eq!(d, [("zebra tor-a", 11, false), ("gobgpd tor-a", 12, true)]);
        assert_eq!(doc.tors[1].daemons[1].pid, 0);
    }
}
