//! The status document: what `tortie status` prints and what the agent (or
//! the standalone speaker) serves on `RUN_DIR/agent.sock`.
//!
//! The JSON field names are a contract (DESIGN.md, "Binaries"): tooling
//! outside the repo reads them. Fields may be added; none may be renamed or
//! removed without a note in the README.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The whole status document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Node name (`--node-name`), or the speaker's configured name.
    pub node: String,
    pub asn: u32,
    pub router_id: String,
    pub peers: Vec<PeerStatus>,
    pub routes: RouteStatus,
    pub policy: PolicyStatus,
    pub datastore: DatastoreStatus,
    /// The agent only: ready (first sync of routes and policy done,
    /// datastore connected); absent for the standalone speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// One BGP peer, like a line of `birdc show protocols all`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub address: String,
    pub asn: u32,
    /// RFC 4271 state name: Idle, Connect, Active, OpenSent, OpenConfirm,
    /// Established.
    pub state: String,
    pub prefixes_received: u64,
    #[serde(default)]
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    /// The last reason the session went down or failed to come up, in
    /// words; empty when there was none.
    pub last_error: String,
    /// Seconds in the current state.
    #[serde(default)]
    pub uptime_seconds: u64,
    /// Where the peer comes from: `mesh` (node-to-node), `BGPPeer NAME`, or
    /// the speaker config.
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Routes of tortie's protocol in the kernel.
    pub installed: u64,
    /// Routes the kernel refused at the last attempt.
    #[serde(default)]
    pub failed: u64,
    /// MTU for pod interfaces: the narrowest tunnel device in use (sized
    /// by the paths to the remote nodes), at most the underlay device's
    /// (absent until the underlay device is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Tunnel devices in use and their MTUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encapsulation: Vec<TunnelStatus>,
    /// Why routes are not (fully) as wanted, one message each: the agent's
    /// routing config (no Node object, a bad BGPPeer ...) and the FIB's
    /// own problems (a tunnel the kernel cannot create ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One tunnel device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStatus {
    /// `vxlan.tortie`, `ipip.tortie`.
    pub device: String,
    pub mtu: u32,
    /// The smallest path MTU (route `mtu` metric, else the output
    /// device's) to a remote node this tunnel sends to; `mtu` is this
    /// minus the tunnel's overhead. Absent while it has no remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// NetworkPolicies compiled.
    pub policies: u64,
    /// Local workloads with chains.
    pub workloads: u64,
    /// Rejected objects and failed applies, one message each.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreStatus {
    /// Files or objects that did not load, one message each.
    pub errors: Vec<String>,
    /// The agent only: whether the datastore is connected now (a file
    /// datastore always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// The agent only: since when it is disconnected (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_since: Option<String>,
}

impl Status {
    /// Renders the status for people: a header, then one line per peer.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "node {}  AS {}  router id {}",
            self.node, self.asn, self.router_id
        );
        let mut rows: Vec<[String; 7]> = vec![[
            "PEER".into(),
            "AS".into(),
            "STATE".into(),
            "SINCE".into(),
            "RECEIVED".into(),
            "ADVERTISED".into(),
            "LAST ERROR".into(),
        ]];
        let mut peers = self.peers.clone();
        peers.sort_by(|a, b| a.address.cmp(&b.address));
        for p in &peers {
            rows.push([
                p.address.clone(),
                p.asn.to_string(),
                p.state.clone(),
                human_duration(p.uptime_seconds),
                if p.prefixes_accepted != p.prefixes_received {
                    format!("{} ({} accepted)", p.prefixes_received, p.prefixes_accepted)
                } else {
                    p.prefixes_received.to_string()
                },
                p.prefixes_advertised.to_string(),
                p.last_error.clone(),
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(
            out,
            "routes installed {}{}",
            self.routes.installed,
            if self.routes.failed > 0 {
                format!(", {} refused by the kernel", self.routes.failed)
            } else {
                String::new()
            }
        );
        if let Some(mtu) = self.routes.mtu {
            let tunnels: Vec<String> = self
                .routes
                .encapsulation
                .iter()
                .map(|t| format!("{} mtu {}", t.device, t.mtu))
                .collect();
            let _ = writeln!(
                out,
                "pod mtu {mtu}{}",
                if tunnels.is_empty() {
                    String::new()
                } else {
                    format!(", tunnels: {}", tunnels.join(", "))
                }
            );
        }
        let _ = writeln!(
            out,
            "policy: {} policies, {} workloads",
            self.policy.policies, self.policy.workloads
        );
        for e in &self.policy.errors {
            let _ = writeln!(out, "  policy error: {e}");
        }
        for e in &self.routes.errors {
            let _ = writeln!(out, "  routing error: {e}");
        }
        if self.datastore.connected == Some(false) {
            let _ = writeln!(
                out,
                "datastore disconnected since {}",
                self.datastore.disconnected_since.as_deref().unwrap_or("?")
            );
        }
        for e in &self.datastore.errors {
            let _ = writeln!(out, "  datastore error: {e}");
        }
        if self.ready == Some(false) {
            let _ = writeln!(out, "not ready");
        }
        out
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86399 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{:02}h", secs / 86400, (secs % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            node: "node-1".into(),
            asn: 64512,
            router_id: "192.0.2.11".into(),
            peers: vec![PeerStatus {
                address: "192.0.2.1".into(),
                asn: 65001,
                state: "Established".into(),
                prefixes_received: 3,
                prefixes_accepted: 3,
                prefixes_advertised: 1,
                last_error: String::new(),
                uptime_seconds: 75,
                source: "BGPPeer tor-a".into(),
            }],
            routes: RouteStatus {
                installed: 3,
                failed: 0,
                ..RouteStatus::default()
            },
            policy: PolicyStatus::default(),
            datastore: DatastoreStatus {
                errors: vec!["pods.yaml: document 2: bad".into()],
                ..DatastoreStatus::default()
            },
            ready: None,
        }
    }

    #[test]
    fn json_uses_the_contract_field_names() {
        let v = serde_json::to_value(sample()).expect("serialise");
        for key in [
            "node",
            "asn",
            "routerId",
            "peers",
            "routes",
            "policy",
            "datastore",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        let peer = &v["peers"][0];
        for key in [
            "address",
            "asn",
            "state",
            "prefixesReceived",
            "prefixesAdvertised",
            "lastError",
        ] {
            assert!(peer.get(key).is_some(), "missing peers[].{key} in {peer}");
        }
        assert!(v["routes"].get("installed").is_some());
        for key in ["policies", "workloads", "errors"] {
            assert!(v["policy"].get(key).is_some());
        }
        assert!(v["datastore"].get("errors").is_some());
        let back: Status = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, sample());
    }

    #[test]
    fn table_lists_peers_and_errors() {
        let t = sample().to_table();
        assert!(t.contains("192.0.2.1"), "{t}");
        assert!(t.contains("Established"), "{t}");
        assert!(t.contains("1m15s"), "{t}");
        assert!(t.contains("datastore error: pods.yaml"), "{t}");
    }
}
