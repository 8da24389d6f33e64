//! GoBGP ToRs (`--tor gobgp`): the gobgpd and FRR zebra configuration of a
//! rack's top-of-rack router, and reading `gobgp` and `ip route` output for
//! the lab's summary and waits.
//!
//! gobgpd alone installs no kernel routes; its documented way to program a
//! FIB is its zebra client (ZAPI). So each GoBGP ToR runs one FRR `zebra`
//! of its own in its namespace (private zserv socket, pid file and vty
//! directory under the ToR's run directory; never the machine's FRR), and
//! gobgpd hands zebra the best path of every pod CIDR it learns; zebra
//! installs it (`proto bgp`) so the ToR forwards pod traffic, as BIRD's
//! kernel protocol does on a BIRD ToR.
//!
//! ```text
//!   PREFIX-tor-a namespace
//!   ┌──────────────────────────────────────────────────────────────┐
//!   │ gobgpd AS 65001 ──ZAPI 6 (unix:RUN_DIR/tor-a/zebra/zserv.api)──▶ zebra ──netlink──▶ kernel FIB
//!   │   ▲ gRPC 127.0.0.1:50051 (`gobgp` CLI, run inside the namespace)
//!   │   eBGP: n1, n2 (br0), tor-b (to-b)
//!   └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! A known incompatibility shapes one detail: GoBGP 3.10 (Debian 12's
//! gobgpd) decodes ZAPI interface messages with 20-byte interface names,
//! while FRR 8.3 and later (Debian 12 has 8.4) send 16 (IFNAMSIZ; FRR pull
//! request 11137). Every interface message is then read 4 bytes off. For an
//! interface with a hardware address the misread ends in a decode error
//! that gobgpd logs and skips (a kernel-chosen or our MAC starts with a
//! non-zero byte, read as a huge length); for one without (FRR reports
//! `lo`'s all-zero MAC as none) gobgpd reads past the message and panics
//! (osrg/gobgp issue 2681). Route messages carry no interface names and
//! work. So the shell gives the ToR's `lo` [`LOOPBACK_MAC`] before zebra
//! starts; every interface of a ToR namespace then has a MAC.
//!
//! Must never: start a process or run a command (the shell does).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::plan::{Plan, RackPlan, POOL_CIDR};

/// gobgpd's gRPC API port, on 127.0.0.1 of the ToR's namespace (each
/// namespace has its own loopback, so every ToR uses the same port).
pub const API_PORT: u16 = 50051;
/// The ZAPI version gobgpd speaks to FRR 8.x's zebra.
pub const ZAPI_VERSION: u8 = 6;
/// Which FRR gobgpd talks to: selects the ZAPI 6 message layout of FRR
/// 8.x (Debian 12's `frr` is 8.4).
pub const ZEBRA_SOFTWARE: &str = "frr8.4";
/// Where Debian's `frr` package puts zebra (not on PATH).
pub const ZEBRA_BIN: &str = "/usr/lib/frr/zebra";
/// The user zebra runs as: FRR checks that it is in the `frrvty` group,
/// which root is not; the `frr` package creates this user in it.
pub const ZEBRA_USER: &str = "frr";
/// A locally administered MAC for the ToR's loopback, so that gobgpd 3.10
/// survives zebra's interface messages (see the module docs).
pub const LOOPBACK_MAC: &str = "02:00:00:00:00:01";
/// The kernel route protocol zebra installs BGP routes with (186 in
/// /etc/iproute2/rt_protos).
pub const KERNEL_PROTO: &str = "bgp";

/// The gobgpd TOML of `rack`'s ToR, with zebra's socket at `zserv`.
pub fn tor_config(plan: &Plan, rack: &RackPlan, zserv: &Path) -> String {
    let (Some(gw), Some(asn)) = (rack.gateway, rack.asn) else {
        return String::new();
    };
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# gobgpd on {} (top of rack {}, AS {asn}); written by `tortie lab up`.",
        rack.netns, rack.name
    );
    let _ = writeln!(c, "[global.config]");
    let _ = writeln!(c, "  as = {asn}");
    let _ = writeln!(c, "  router-id = \"{gw}\"");
    let _ = writeln!(c);
    let _ = writeln!(
        c,
        "# A ToR accepts and passes on pod CIDRs inside the IP pool and nothing else."
    );
    let _ = writeln!(c, "[global.apply-policy.config]");
    let _ = writeln!(c, "  import-policy-list = [\"pods\"]");
    let _ = writeln!(c, "  default-import-policy = \"reject-route\"");
    let _ = writeln!(c, "  export-policy-list = [\"pods\"]");
    let _ = writeln!(c, "  default-export-policy = \"reject-route\"");
    let _ = writeln!(c);
    let _ = writeln!(
        c,
        "# Best paths go to this namespace's own zebra, which installs them in the kernel."
    );
    let _ = writeln!(c, "[zebra.config]");
    let _ = writeln!(c, "  enabled = true");
    let _ = writeln!(c, "  url = \"unix:{}\"", zserv.display());
    let _ = writeln!(c, "  version = {ZAPI_VERSION}");
    let _ = writeln!(c, "  software-name = \"{ZEBRA_SOFTWARE}\"");
    let _ = writeln!(c, "  redistribute-route-type-list = []");
    let _ = writeln!(c);
    let _ = writeln!(c, "[[defined-sets.prefix-sets]]");
    let _ = writeln!(c, "  prefix-set-name = \"pool\"");
    let _ = writeln!(c, "  [[defined-sets.prefix-sets.prefix-list]]");
    let _ = writeln!(c, "    ip-prefix = \"{POOL_CIDR}\"");
    let pool_len = POOL_CIDR
        .parse::<ipnet::Ipv4Net>()
        .map_or(16, |n| n.prefix_len());
    let _ = writeln!(c, "    masklength-range = \"{pool_len}..32\"");
    let _ = writeln!(c);
    let _ = writeln!(c, "[[policy-definitions]]");
    let _ = writeln!(c, "  name = \"pods\"");
    let _ = writeln!(c, "  [[policy-definitions.statements]]");
    let _ = writeln!(c, "    name = \"pool\"");
    let _ = writeln!(
        c,
        "    [policy-definitions.statements.conditions.match-prefix-set]"
    );
    let _ = writeln!(c, "      prefix-set = \"pool\"");
    let _ = writeln!(c, "    [policy-definitions.statements.actions]");
    let _ = writeln!(c, "      route-disposition = \"accept-route\"");
    for node in plan.nodes.iter().filter(|n| plan.rack_of(n) == Some(rack)) {
        let Some(node_asn) = node.asn else { continue };
        neighbor(
            &mut c,
            &node.name,
            &node.address.to_string(),
            node_asn,
            &gw.to_string(),
        );
    }
    if let Some(up) = rack.uplink {
        for other in plan.racks.iter().filter(|r| r.name != rack.name) {
            let (Some(peer), Some(peer_asn)) = (other.uplink, other.asn) else {
                continue;
            };
            neighbor(
                &mut c,
                &other.tor_name(),
                &peer.to_string(),
                peer_asn,
                &up.to_string(),
            );
        }
    }
    c
}

/// One `[[neighbors]]`: the lab's fast timers (as on the BIRD ToRs) and
/// graceful restart as a helper, so a node's agent restarting keeps its
/// pod routes in the ToR's FIB.
fn neighbor(c: &mut String, name: &str, address: &str, asn: u32, local: &str) {
    let _ = writeln!(c);
    let _ = writeln!(c, "[[neighbors]]");
    let _ = writeln!(c, "  [neighbors.config]");
    let _ = writeln!(c, "    neighbor-address = \"{address}\"");
    let _ = writeln!(c, "    peer-as = {asn}");
    let _ = writeln!(c, "    description = \"{name}\"");
    let _ = writeln!(c, "  [neighbors.transport.config]");
    let _ = writeln!(c, "    local-address = \"{local}\"");
    let _ = writeln!(c, "  [neighbors.timers.config]");
    let _ = writeln!(c, "    connect-retry = 1");
    let _ = writeln!(c, "    hold-time = 9");
    let _ = writeln!(c, "    keepalive-interval = 3");
    let _ = writeln!(c, "  [neighbors.graceful-restart.config]");
    let _ = writeln!(c, "    enabled = true");
    let _ = writeln!(c, "    helper-only = true");
    let _ = writeln!(c, "  [[neighbors.afi-safis]]");
    let _ = writeln!(c, "    [neighbors.afi-safis.config]");
    let _ = writeln!(c, "      afi-safi-name = \"ipv4-unicast\"");
    let _ = writeln!(c, "    [neighbors.afi-safis.mp-graceful-restart.config]");
    let _ = writeln!(c, "      enabled = true");
}

/// zebra's own config: a name and nothing else (it takes its routes from
/// gobgpd and its interfaces from the kernel).
pub fn zebra_config(rack: &RackPlan) -> String {
    format!(
        "! FRR zebra on {} (top of rack {}): the FIB of gobgpd; written by `tortie lab up`.\n\
         hostname {}\n\
         !\n",
        rack.netns,
        rack.name,
        rack.tor_name()
    )
}

/// One BGP session of `gobgp neighbor -j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GobgpSession {
    pub address: String,
    pub peer_as: u32,
    /// `Established`, `Active`, `Idle` ... (GoBGP's session state).
    pub state: String,
    /// Prefixes received and accepted (IPv4 unicast).
    pub received: u64,
    pub accepted: u64,
}

impl GobgpSession {
    pub fn established(&self) -> bool {
        self.state == "Established"
    }
}

/// GoBGP's session state, by its API number or name
/// (`apipb.PeerState.SessionState`).
fn state_name(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(1) => "Idle",
            Some(2) => "Connect",
            Some(3) => "Active",
            Some(4) => "OpenSent",
            Some(5) => "OpenConfirm",
            Some(6) => "Established",
            _ => "Unknown",
        }
        .to_string(),
        Some(Value::String(s)) => {
            let lower = s.to_ascii_lowercase();
            match lower.as_str() {
                "established" => "Established".to_string(),
                "active" => "Active".to_string(),
                "idle" => "Idle".to_string(),
                "connect" => "Connect".to_string(),
                "opensent" => "OpenSent".to_string(),
                "openconfirm" => "OpenConfirm".to_string(),
                _ => s.clone(),
            }
        }
        _ => "Unknown".to_string(),
    }
}

/// The sessions of `gobgp neighbor -j` (an array), sorted by address.
pub fn parse_neighbors(json: &str) -> Result<Vec<GobgpSession>, serde_json::Error> {
    let v: Value = serde_json::from_str(json.trim())?;
    let mut out: Vec<GobgpSession> = v
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            let state = n.get("state")?;
            let address = state
                .get("neighbor_address")
                .or_else(|| n.get("conf")?.get("neighbor_address"))?
                .as_str()?
                .to_string();
            let counts = n
                .get("afi_safis")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|f| f.get("state"));
            let count = |k: &str| counts.and_then(|c| c.get(k)).and_then(Value::as_u64);
            Some(GobgpSession {
                address,
                peer_as: state
                    .get("peer_asn")
                    .and_then(Value::as_u64)
                    .and_then(|a| u32::try_from(a).ok())
                    .unwrap_or(0),
                state: state_name(state.get("session_state")),
                received: count("received").unwrap_or(0),
                accepted: count("accepted").unwrap_or(0),
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(out)
}

/// The prefixes of `gobgp global rib -j` (an object keyed by prefix;
/// `null` or empty when the RIB is), sorted.
pub fn parse_rib_prefixes(json: &str) -> Result<Vec<String>, serde_json::Error> {
    let t = json.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(t)?;
    let mut out: Vec<String> = v
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| k.parse::<ipnet::IpNet>().is_ok())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    Ok(out)
}

/// One route of `ip route show proto bgp`: prefix and next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub prefix: String,
    pub via: Option<String>,
    pub dev: Option<String>,
}

/// The routes of `ip route show ...` (one per line; ECMP continuation
/// lines `nexthop via ...` fold into the route above), sorted.
pub fn parse_kernel_routes(text: &str) -> Vec<KernelRoute> {
    let mut out: Vec<KernelRoute> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string())
        };
        match words.first() {
            Some(&"nexthop") => {
                if let Some(last) = out.last_mut() {
                    last.via = last.via.take().or_else(|| after("via"));
                    last.dev = last.dev.take().or_else(|| after("dev"));
                }
            }
            Some(first) if first.parse::<ipnet::IpNet>().is_ok() => out.push(KernelRoute {
                prefix: first.to_string(),
                via: after("via"),
                dev: after("dev"),
            }),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    out
}

/// A peer's name in the plan (`n1`, `tor-b`) from its address, for
/// sessions GoBGP lists by address.
pub fn peer_name(plan: &Plan, address: &str) -> Option<String> {
    plan.nodes
        .iter()
        .find(|n| n.address.to_string() == address)
        .map(|n| n.name.clone())
        .or_else(|| {
            plan.racks
                .iter()
                .find(|r| r.uplink.is_some_and(|u| u.to_string() == address))
                .map(RackPlan::tor_name)
        })
}

#[cfg(test)]
mod tests {
    use super::super::plan::{LabOptions, TorKind};
    use super::*;

    fn gobgp_plan() -> Plan {
        Plan::new(&LabOptions {
            tor: TorKind::Gobgp,
            ..Default::default()
        })
    }

    #[test]
    fn rack_a_config() {
        let plan = gobgp_plan();
        let c = tor_config(
            &plan,
            &plan.racks[0],
            Path::new("/run/x/tor-a/zebra/zserv.api"),
        );
        for want in [
            "[global.config]\n  as = 65001\n  router-id = \"192.0.2.1\"\n",
            "[zebra.config]\n  enabled = true\n  url = \"unix:/run/x/tor-a/zebra/zserv.api\"\n  \
             version = 6\n  software-name = \"frr8.4\"\n",
            "default-import-policy = \"reject-route\"",
            "ip-prefix = \"10.244.0.0/16\"\n    masklength-range = \"16..32\"",
            "neighbor-address = \"192.0.2.11\"\n    peer-as = 65101\n    description = \"n1\"\n  \
             [neighbors.transport.config]\n    local-address = \"192.0.2.1\"",
            "neighbor-address = \"192.0.2.12\"\n    peer-as = 65102",
            "neighbor-address = \"203.0.113.2\"\n    peer-as = 65002\n    description = \"tor-b\"\n  \
             [neighbors.transport.config]\n    local-address = \"203.0.113.1\"",
            "hold-time = 9",
        ] {
            assert!(c.contains(want), "{want:?} not in:\n{c}");
        }
        assert!(
            !c.contains("198.51.100.13"),
            "n3 is in rack b, not a's: {c}"
        );
        assert_eq!(c.matches("[[neighbors]]").count(), 3);
        let b = tor_config(&plan, &plan.racks[1], Path::new("/z"));
        assert!(b.contains("neighbor-address = \"198.51.100.13\"\n    peer-as = 65103"));
        assert!(b.contains("neighbor-address = \"203.0.113.1\"\n    peer-as = 65001"));
        assert_eq!(b.matches("[[neighbors]]").count(), 2);
        let z = zebra_config(&plan.racks[1]);
        assert!(z.contains("hostname tor-b\n"), "{z}");
    }

    #[test]
    fn one_rack_has_no_uplink_peer_and_a_switch_no_config() {
        let plan = Plan::new(&LabOptions {
            tor: TorKind::Gobgp,
            nodes: 2,
            racks: Some(1),
            ..Default::default()
        });
        let c = tor_config(&plan, &plan.racks[0], Path::new("/z"));
        assert_eq!(c.matches("[[neighbors]]").count(), 2);
        assert!(!c.contains("203.0.113."), "{c}");
        let flat = Plan::new(&LabOptions {
            tor: TorKind::None,
            ..Default::default()
        });
        assert_eq!(tor_config(&flat, &flat.racks[0], Path::new("/z")), "");
    }

    /// `gobgp neighbor -j` of gobgpd 3.10, shortened.
    const NEIGHBORS: &str = r#"[{"conf":{"local_asn":65001,"neighbor_address":"192.0.2.11","peer_asn":65101,"type":1},
        "state":{"neighbor_address":"192.0.2.11","peer_asn":65101,"session_state":6,"router_id":"192.0.2.11"},
        "afi_safis":[{"config":{"family":{"afi":1,"safi":1},"enabled":true},"state":{"family":{"afi":1,"safi":1},"enabled":true,"received":1,"accepted":1}}]},
        {"conf":{"neighbor_address":"203.0.113.2","peer_asn":65002},
        "state":{"neighbor_address":"203.0.113.2","peer_asn":65002,"session_state":3}},
        {"conf":{"neighbor_address":"192.0.2.12","peer_asn":65102},
        "state":{"neighbor_address":"192.0.2.12","peer_asn":65102,"session_state":"ESTABLISHED"}}]"#;

    #[test]
    fn neighbors_parse() {
        let s = parse_neighbors(NEIGHBORS).unwrap();
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.address.as_str(), s.peer_as, s.state.as_str(), s.accepted))
            .collect();
        assert_eq!(
            got,
            [
                ("192.0.2.11", 65101, "Established", 1),
                ("192.0.2.12", 65102, "Established", 0),
                ("203.0.113.2", 65002, "Active", 0),
            ]
        );
        assert!(s[0].established() && !s[2].established());
        assert_eq!(parse_neighbors("[]").unwrap(), []);
        assert!(parse_neighbors("not json").is_err());
        let plan = gobgp_plan();
        assert_eq!(peer_name(&plan, "192.0.2.11").as_deref(), Some("n1"));
        assert_eq!(peer_name(&plan, "203.0.113.2").as_deref(), Some("tor-b"));
        assert_eq!(peer_name(&plan, "192.0.2.99"), None);
    }

    #[test]
    fn rib_and_kernel_routes_parse() {
        let rib = r#"{"10.244.3.0/24":[{"nlri":{"prefix":"10.244.3.0/24"},"best":true,
            "attrs":[{"type":3,"nexthop":"203.0.113.2"}],"neighbor-ip":"203.0.113.2"}],
            "10.244.1.0/24":[{"nlri":{"prefix":"10.244.1.0/24"},"best":true}]}"#;
        assert_eq!(
            parse_rib_prefixes(rib).unwrap(),
            ["10.244.1.0/24", "10.244.3.0/24"]
        );
        assert_eq!(parse_rib_prefixes("null").unwrap(), Vec::<String>::new());
        assert_eq!(parse_rib_prefixes("").unwrap(), Vec::<String>::new());
        // `ip route show proto bgp` in a GoBGP ToR's namespace.
        let text = "10.244.3.0/24 nhid 9 via 203.0.113.2 dev to-b metric 20 \n\
                    10.244.1.0/24 nhid 6 via 192.0.2.11 dev br0 metric 20 \n\
                    10.244.2.0/24 nhid 12 metric 20 \n\
                    \tnexthop via 192.0.2.12 dev br0 weight 1 \n";
        let r = parse_kernel_routes(text);
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.prefix.as_str(), r.via.as_deref(), r.dev.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.244.1.0/24", Some("192.0.2.11"), Some("br0")),
                ("10.244.2.0/24", Some("192.0.2.12"), Some("br0")),
                ("10.244.3.0/24", Some("203.0.113.2"), Some("to-b")),
            ]
        );
    }
}
