//! The lab's topology as a value: which namespaces, links, addresses,
//! ASNs, pod CIDRs and pods a `tortie lab up` makes.
//!
//! Owns: every name and number of the lab, derived deterministically from
//! [`LabOptions`], so `up`, `status`, `down` and the tests agree without
//! talking to each other.
//!
//! Must never: run a command, touch a file or read the clock. The shell
//! (`cluster.rs`) turns this plan into namespaces and processes.
//!
//! ```text
//!   rack a (192.0.2.0/24)                           rack b (198.51.100.0/24)
//!   PREFIX-tor-a  BIRD AS 65001  203.0.113.1 ─── 203.0.113.2  PREFIX-tor-b  BIRD AS 65002
//!     br0 192.0.2.1                                  br0 198.51.100.1
//!     ├── PREFIX-n1 192.0.2.11  AS 65101 10.244.1.0/24   └── PREFIX-n3 198.51.100.13 AS 65103 10.244.3.0/24
//!     └── PREFIX-n2 192.0.2.12  AS 65102 10.244.2.0/24
//! ```
//!
//! Each node has its own AS (`tortie.io/asn`), as in Calico's "AS per
//! compute server" design: with one AS shared by the nodes of a rack, a
//! node would drop its rack neighbours' routes by AS-path loop detection.
//! With `--tor gobgp` the ToRs run gobgpd (the same ASNs and sessions)
//! with an FRR zebra each for their kernel routes. With `--tor none` every node sits on one switch (a bridge in
//! `PREFIX-sw`, 192.0.2.0/24) in AS 64512 with the iBGP full mesh.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The biggest lab `up` accepts: node addresses are `.11` upwards in a
/// /24 and pod CIDRs `10.244.N.0/24`.
pub const MAX_NODES: u32 = 100;
/// Pods per node `up` accepts; the matrix is printed for all of them.
pub const MAX_PODS_PER_NODE: u32 = 20;
/// The AS of every node with `--tor none`, and the cluster default.
pub const CLUSTER_ASN: u32 = 64512;
/// The IP pool every pod CIDR comes from.
pub const POOL_CIDR: &str = "10.244.0.0/16";

/// What the ToR routers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TorKind {
    /// BIRD 2, eBGP to each node and to the other rack's ToR.
    Bird,
    /// GoBGP, eBGP like BIRD, with an FRR zebra of its own in the ToR's
    /// namespace installing GoBGP's routes in the kernel (`gobgp.rs`).
    Gobgp,
    /// No ToR: one switch, the nodes in an iBGP full mesh.
    None,
}

impl fmt::Display for TorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TorKind::Bird => "bird",
            TorKind::Gobgp => "gobgp",
            TorKind::None => "none",
        })
    }
}

impl FromStr for TorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bird" => Ok(TorKind::Bird),
            "gobgp" => Ok(TorKind::Gobgp),
            "none" => Ok(TorKind::None),
            other => Err(format!("unknown ToR kind {other:?}: bird, gobgp or none")),
        }
    }
}

/// What `tortie lab up` was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabOptions {
    pub nodes: u32,
    pub pods_per_node: u32,
    pub tor: TorKind,
    /// Racks (1 or 2) the nodes are spread over; default: 2 when there are
    /// two nodes or more. Ignored with `--tor none`.
    #[serde(default)]
    pub racks: Option<u32>,
    /// Prefix of every namespace the lab makes (`PREFIX-n1`, `PREFIX-tor-a`).
    pub prefix: String,
    pub run_dir: PathBuf,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            nodes: 3,
            pods_per_node: 2,
            tor: TorKind::Bird,
            racks: None,
            prefix: "tl".into(),
            run_dir: PathBuf::from("/run/tortie-lab"),
        }
    }
}

impl LabOptions {
    /// Checks the options a plan can be made from; the message names the
    /// option.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(format!("--nodes {}: must be 1..={MAX_NODES}", self.nodes));
        }
        if self.pods_per_node > MAX_PODS_PER_NODE {
            return Err(format!(
                "--pods-per-node {}: must be 0..={MAX_PODS_PER_NODE}",
                self.pods_per_node
            ));
        }
        valid_prefix(&self.prefix)?;
        if let Some(r) = self.racks {
            if !(1..=2).contains(&r) || r > self.nodes {
                return Err(format!(
                    "--racks {r}: must be 1 or 2, and no more than --nodes"
                ));
            }
        }
        Ok(())
    }
}

/// A prefix is short and plain so that `PREFIX-...` stays a safe
/// namespace name and `down` can match exactly its own namespaces.
pub fn valid_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 16
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--prefix {prefix:?}: must be 1-16 lowercase letters and digits, starting with a letter"
        ))
    }
}

/// One rack: a bridge in its ToR namespace, with BIRD on it unless the
/// lab has no ToR (then the namespace is a plain switch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RackPlan {
    /// `a`, `b`.
    pub name: String,
    pub netns: String,
    pub subnet: Ipv4Net,
    /// The ToR's address on the rack bridge (none for a plain switch).
    pub gateway: Option<Ipv4Addr>,
    /// The ToR's AS (none for a plain switch).
    pub asn: Option<u32>,
    /// The ToR's end of the ToR-to-ToR link (203.0.113.0/24).
    pub uplink: Option<Ipv4Addr>,
}

impl RackPlan {
    /// The BIRD protocol and BGPPeer name of this rack's ToR.
    pub fn tor_name(&self) -> String {
        format!("tor-{}", self.name)
    }
}

/// One node namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    /// 1-based; the N of `nN`, of `10.244.N.0/24` and of the address.
    pub index: u32,
    pub name: String,
    pub netns: String,
    /// Index into [`Plan::racks`].
    pub rack: usize,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// Per-node AS (`tortie.io/asn`); none in the flat mesh.
    pub asn: Option<u32>,
    pub pod_cidr: Ipv4Net,
}

impl NodePlan {
    /// `ADDR/LEN`, the `tortie.io/bgp-address` annotation.
    pub fn bgp_address(&self) -> String {
        format!("{}/{}", self.address, self.prefix_len)
    }

    /// Where the agent's Prometheus endpoint listens.
    pub fn metrics_addr(&self) -> String {
        format!("{}:9091", self.address)
    }
}

/// One pod, created the way a kubelet does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub labels: BTreeMap<String, String>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
}

impl PodPlan {
    /// A pod of namespace `namespace` on node `node` with labels; the
    /// names of its netns and container derive from it.
    pub fn new(
        prefix: &str,
        namespace: &str,
        name: &str,
        node: &str,
        labels: BTreeMap<String, String>,
    ) -> PodPlan {
        PodPlan {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: node.to_string(),
            netns: format!("{prefix}-{namespace}-{name}"),
            labels,
            container_id: format!("{prefix}-{namespace}-{name}"),
        }
    }

    /// `NAMESPACE/NAME`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the lab makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub prefix: String,
    pub tor: TorKind,
    pub racks: Vec<RackPlan>,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
}

/// The racks' subnets (documentation ranges; DESIGN.md "Test networks").
const RACK_SUBNETS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 0), Ipv4Addr::new(198, 51, 100, 0)];
const RACK_NAMES: [&str; 2] = ["a", "b"];
const TOR_ASNS: [u32; 2] = [65001, 65002];
const UPLINKS: [Ipv4Addr; 2] = [Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)];
/// Per-node ASNs are `NODE_ASN_BASE + index` (private 16-bit range).
pub const NODE_ASN_BASE: u32 = 65100;

/// The two example namespaces and their apps, alternating per pod.
pub const APPS: [(&str, &str); 2] = [("frontend", "web"), ("backend", "db")];

impl Plan {
    /// The plan for valid options (see [`LabOptions::validate`]).
    pub fn new(opts: &LabOptions) -> Plan {
        let racks: Vec<RackPlan> = match opts.tor {
            TorKind::None => vec![RackPlan {
                name: "sw".into(),
                netns: format!("{}-sw", opts.prefix),
                subnet: Ipv4Net::new(RACK_SUBNETS[0], 24).unwrap_or_default(),
                gateway: None,
                asn: None,
                uplink: None,
            }],
            TorKind::Bird | TorKind::Gobgp => {
                let default = if opts.nodes >= 2 { 2 } else { 1 };
                let count = opts.racks.unwrap_or(default).clamp(1, 2) as usize;
                (0..count)
                    .map(|r| RackPlan {
                        name: RACK_NAMES[r].into(),
                        netns: format!("{}-tor-{}", opts.prefix, RACK_NAMES[r]),
                        subnet: Ipv4Net::new(RACK_SUBNETS[r], 24).unwrap_or_default(),
                        gateway: Some(host(RACK_SUBNETS[r], 1)),
                        asn: Some(TOR_ASNS[r]),
                        uplink: (count > 1).then_some(UPLINKS[r]),
                    })
                    .collect()
            }
        };
        let mut plan = Plan {
            prefix: opts.prefix.clone(),
            tor: opts.tor,
            racks,
            nodes: Vec::new(),
            pods: Vec::new(),
        };
        let n = opts.nodes as usize;
        let rack_count = plan.racks.len();
        for i in 0..n {
            // Racks fill in order: 3 nodes in 2 racks are a, a, b.
            let rack = (i * rack_count) / n.max(1);
            let node = plan.node_plan(i as u32 + 1, rack);
            for j in 1..=opts.pods_per_node {
                plan.pods.push(example_pod(&opts.prefix, &node.name, j));
            }
            plan.nodes.push(node);
        }
        plan
    }

    /// Node `index` (1-based) in rack `rack`: its name, namespace, address,
    /// AS and pod CIDR. Also used to add a node to a running lab.
    pub fn node_plan(&self, index: u32, rack: usize) -> NodePlan {
        let r = self.racks.get(rack).or(self.racks.first());
        let subnet = r.map_or(RACK_SUBNETS[0], |r| r.subnet.network());
        let name = format!("n{index}");
        NodePlan {
            index,
            netns: format!("{}-{name}", self.prefix),
            name,
            rack,
            address: host(subnet, 10 + index as u8),
            prefix_len: 24,
            asn: (self.tor != TorKind::None).then_some(NODE_ASN_BASE + index),
            pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, index as u8, 0), 24).unwrap_or_default(),
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn rack_of(&self, node: &NodePlan) -> Option<&RackPlan> {
        self.racks.get(node.rack)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodPlan> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// Every namespace the plan makes, routers and switches first, then
    /// nodes, then pods: the order `up` creates them in.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.racks.iter().map(|r| r.netns.clone()).collect();
        v.extend(self.nodes.iter().map(|n| n.netns.clone()));
        v.extend(self.pods.iter().map(|p| p.netns.clone()));
        v
    }

    /// The namespaces of a lab with prefix `prefix` among `all` (the
    /// output of `ip netns list`): what `down` removes when it has no
    /// state file to go by.
    pub fn owned_namespaces(prefix: &str, all: &[String]) -> Vec<String> {
        let p = format!("{prefix}-");
        all.iter().filter(|n| n.starts_with(&p)).cloned().collect()
    }
}

/// The `j`-th (1-based) example pod of a node: odd ones are `web` pods in
/// `frontend`, even ones `db` pods in `backend`.
pub fn example_pod(prefix: &str, node: &str, j: u32) -> PodPlan {
    let (namespace, app) = APPS[((j.max(1) - 1) % 2) as usize];
    let nth = j.div_ceil(2);
    let name = if nth <= 1 {
        format!("{app}-{node}")
    } else {
        format!("{app}{nth}-{node}")
    };
    let labels = BTreeMap::from([("app".to_string(), app.to_string())]);
    PodPlan::new(prefix, namespace, &name, node, labels)
}

fn host(net: Ipv4Addr, n: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lab_is_three_nodes_in_two_racks() {
        let plan = Plan::new(&LabOptions::default());
        let racks: Vec<_> = plan
            .racks
            .iter()
            .map(|r| (r.netns.as_str(), r.subnet.to_string(), r.asn, r.uplink))
            .collect();
        assert_eq!(
            racks,
            vec![
                (
                    "tl-tor-a",
                    "192.0.2.0/24".to_string(),
                    Some(65001),
                    Some(Ipv4Addr::new(203, 0, 113, 1))
                ),
                (
                    "tl-tor-b",
                    "198.51.100.0/24".to_string(),
                    Some(65002),
                    Some(Ipv4Addr::new(203, 0, 113, 2))
                ),
            ]
        );
        let nodes: Vec<_> = plan
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.rack,
                    n.bgp_address(),
                    n.asn,
                    n.pod_cidr.to_string(),
                )
            })
            .collect();
        assert_eq!(
            nodes,
            vec![
                (
                    "n1",
                    0,
                    "192.0.2.11/24".into(),
                    Some(65101),
                    "10.244.1.0/24".into()
                ),
                (
                    "n2",
                    0,
                    "192.0.2.12/24".into(),
                    Some(65102),
                    "10.244.2.0/24".into()
                ),
                (
                    "n3",
                    1,
                    "198.51.100.13/24".into(),
                    Some(65103),
                    "10.244.3.0/24".into()
                ),
            ]
        );
        let pods: Vec<_> = plan.pods.iter().map(PodPlan::id).collect();
        assert_eq!(
            pods,
            [
                "frontend/web-n1",
                "backend/db-n1",
                "frontend/web-n2",
                "backend/db-n2",
                "frontend/web-n3",
                "backend/db-n3"
            ]
        );
        assert_eq!(plan.pods[0].netns, "tl-frontend-web-n1");
        assert_eq!(plan.namespaces().len(), 2 + 3 + 6);
    }

    #[test]
    fn flat_mesh_has_one_switch_and_no_asns() {
        let plan = Plan::new(&LabOptions {
            tor: TorKind::None,
            nodes: 4,
            pods_per_node: 3,
            prefix: "x1".into(),
            ..Default::default()
        });
        assert_eq!(plan.racks.len(), 1);
        assert_eq!(plan.racks[0].netns, "x1-sw");
        assert_eq!(plan.racks[0].gateway, None);
        assert!(plan.nodes.iter().all(|n| n.asn.is_none() && n.rack == 0));
        assert_eq!(plan.nodes[3].address, Ipv4Addr::new(192, 0, 2, 14));
        let names: Vec<_> = plan
            .pods
            .iter()
            .filter(|p| p.node == "n1")
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["web-n1", "db-n1", "web2-n1"]);
    }

    #[test]
    fn one_node_gets_one_rack_without_uplink() {
        let plan = Plan::new(&LabOptions {
            nodes: 1,
            ..Default::default()
        });
        assert_eq!(plan.racks.len(), 1);
        assert_eq!(plan.racks[0].uplink, None);
    }

    #[test]
    fn two_nodes_behind_one_tor() {
        let plan = Plan::new(&LabOptions {
            nodes: 2,
            racks: Some(1),
            ..Default::default()
        });
        assert_eq!(plan.racks.len(), 1);
        assert_eq!(plan.racks[0].uplink, None);
        assert!(plan.nodes.iter().all(|n| n.rack == 0));
        let bad = LabOptions {
            nodes: 1,
            racks: Some(2),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn racks_split_nodes_in_order() {
        let plan = Plan::new(&LabOptions {
            nodes: 5,
            ..Default::default()
        });
        let racks: Vec<usize> = plan.nodes.iter().map(|n| n.rack).collect();
        assert_eq!(racks, [0, 0, 0, 1, 1]);
        assert_eq!(plan.nodes[4].address, Ipv4Addr::new(198, 51, 100, 15));
    }

    #[test]
    fn options_are_checked() {
        let ok = LabOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            LabOptions {
                nodes: 0,
                ..ok.clone()
            },
            LabOptions {
                nodes: 101,
                ..ok.clone()
            },
            LabOptions {
                pods_per_node: 21,
                ..ok.clone()
            },
            LabOptions {
                prefix: "Tl".into(),
                ..ok.clone()
            },
            LabOptions {
                prefix: "t-l".into(),
                ..ok.clone()
            },
            LabOptions {
                prefix: "".into(),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!("none".parse::<TorKind>(), Ok(TorKind::None));
        assert_eq!("gobgp".parse::<TorKind>(), Ok(TorKind::Gobgp));
        let gobgp = LabOptions {
            tor: TorKind::Gobgp,
            nodes: 2,
            ..ok.clone()
        };
        assert!(gobgp.validate().is_ok());
        let plan = Plan::new(&gobgp);
        assert_eq!(plan.racks.len(), 2);
        assert_eq!(plan.nodes[1].asn, Some(65102));
        assert!("frr".parse::<TorKind>().is_err());
    }

    #[test]
    fn down_matches_only_its_own_prefix() {
        let all: Vec<String> = ["tl-n1", "tl2-n1", "tl-tor-a", "tlx", "other"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(Plan::owned_namespaces("tl", &all), ["tl-n1", "tl-tor-a"]);
    }
}
