//! The agent's status document and metric gauges, assembled from what
//! the loops publish ([`AgentView`]) and the speaker's report. Pure: the
//! socket and the metrics server call it per request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tortie_bgp::runtime::StatusReport;

use crate::daemon::metrics::{Gauges, PeerSample};
use crate::status::{DatastoreStatus, PolicyStatus, RouteStatus, Status};
use crate::status_client;

/// What the agent's loops publish for status and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentView {
    pub node: String,
    /// Where each configured peer comes from (`mesh`, `BGPPeer NAME`).
    pub peer_sources: BTreeMap<IpAddr, String>,
    pub routes_installed: u64,
    pub routes_failed: u64,
    /// Why routing is not (fully) applied.
    pub routing_errors: Vec<String>,
    pub policy: PolicyStatus,
    /// Datastore and model errors.
    pub datastore_errors: Vec<String>,
    pub datastore_connected: bool,
    pub disconnected_since: Option<SystemTime>,
    pub ready: bool,
}

/// The status document (DESIGN.md "Binaries"). `report`: the speaker's,
/// None while it does not run (no Node object yet).
pub fn status(view: &AgentView, report: Option<&StatusReport>) -> Status {
    let mut s = match report {
        Some(r) => status_client::status_document(r),
        None => Status::default(),
    };
    s.node = view.node.clone();
    for p in &mut s.peers {
        p.source = p
            .address
            .parse::<IpAddr>()
            .ok()
            .and_then(|a| view.peer_sources.get(&a).cloned())
            .unwrap_or_else(|| "unknown".into());
    }
    s.routes = RouteStatus {
        installed: view.routes_installed,
        failed: view.routes_failed,
        errors: view.routing_errors.clone(),
        ..RouteStatus::default()
    };
    s.policy = view.policy.clone();
    s.datastore = DatastoreStatus {
        errors: view.datastore_errors.clone(),
        connected: Some(view.datastore_connected),
        disconnected_since: if view.datastore_connected {
            None
        } else {
            view.disconnected_since.map(rfc3339)
        },
    };
    s.ready = Some(view.ready);
    s
}

/// The metric gauges of a status document.
pub fn gauges(s: &Status) -> Gauges {
    Gauges {
        ready: s.ready.unwrap_or(false),
        datastore_connected: s.datastore.connected.unwrap_or(true),
        peers: s
            .peers
            .iter()
            .map(|p| PeerSample {
                address: p.address.clone(),
                source: p.source.clone(),
                state: p.state.clone(),
                received: p.prefixes_received,
                advertised: p.prefixes_advertised,
            })
            .collect(),
        routes_installed: s.routes.installed,
        routes_failed: s.routes.failed,
        policy_workloads: s.policy.workloads,
        policy_policies: s.policy.policies,
    }
}

/// `2026-11-27T09:15:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_771_800)),
            "2026-11-27T09:30:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn without_a_speaker_the_document_still_has_every_section() {
        let view = AgentView {
            node: "n1".into(),
            routing_errors: vec!["no Node n1 in the datastore".into()],
            datastore_errors: vec!["a.yaml: document 1: bad".into()],
            datastore_connected: false,
            disconnected_since: Some(UNIX_EPOCH),
            ..AgentView::default()
        };
        let s = status(&view, None);
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["node"], "n1");
        assert_eq!(v["peers"], serde_json::json!([]));
        assert_eq!(v["routes"]["errors"][0], "no Node n1 in the datastore");
        assert_eq!(v["datastore"]["connected"], false);
        assert_eq!(v["datastore"]["disconnectedSince"], "1970-01-01T00:00:00Z");
        assert_eq!(v["ready"], false);
        assert!(v["policy"]["errors"].is_array());
        let g = gauges(&s);
        assert!(!g.datastore_connected);
        assert!(!g.ready);
    }

    #[test]
    fn peer_sources_are_filled_in() {
        use tortie_bgp::fsm::State;
        use tortie_bgp::speaker::{PeerSnapshot, SpeakerConfig};
        use tortie_bgp::wire::Asn;
        let snap = |a: &str| PeerSnapshot {
            name: String::new(),
            address: a.parse().expect("ip"),
            asn: 64512,
            state: State::Established,
            since: Duration::from_secs(3),
            prefixes_received: 1,
            prefixes_accepted: 1,
            prefixes_advertised: 2,
            last_error: String::new(),
            established_count: 1,
            stale: false,
            end_of_rib: true,
        };
        let report = StatusReport {
            speaker: SpeakerConfig::new(Asn(64512), "192.0.2.11".parse().expect("ip")),
            peers: vec![snap("192.0.2.1"), snap("192.0.2.12"), snap("192.0.2.99")],
            routes: None,
            deferring: false,
        };
        let mut view = AgentView {
            node: "n1".into(),
            datastore_connected: true,
            ready: true,
            ..AgentView::default()
        };
        view.peer_sources
            .insert("192.0.2.1".parse().expect("ip"), "BGPPeer tor".into());
        view.peer_sources
            .insert("192.0.2.12".parse().expect("ip"), "mesh".into());
        let s = status(&view, Some(&report));
        assert_eq!(
            (s.asn, s.router_id.as_str(), s.node.as_str()),
            (64512, "192.0.2.11", "n1")
        );
        let sources: Vec<&str> = s.peers.iter().map(|p| p.source.as_str()).collect();
        assert_eq!(sources, ["BGPPeer tor", "mesh", "unknown"]);
        assert_eq!(s.peers[0].state, "Established");
        assert_eq!(s.datastore.connected, Some(true));
        assert_eq!(s.datastore.disconnected_since, None);
        let g = gauges(&s);
        assert_eq!(g.peers.len(), 3);
        assert!(g.ready);
    }
}
