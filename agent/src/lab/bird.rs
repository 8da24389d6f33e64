//! BIRD 2 configuration of a rack's top-of-rack router, and reading
//! `birdc` output for the lab's summary.
//!
//! Owns: the ToR's routing policy. eBGP to each node of the rack (one AS
//! per rack, one per node), eBGP to the other rack's ToR over the uplink,
//! pod routes (inside the IP pool only) into the ToR's kernel so it
//! forwards pod traffic, and fast timers so the lab converges in seconds.
//!
//! Must never: start BIRD or run birdc (the shell does).

use std::fmt::Write as _;
use std::path::Path;

use super::plan::{Plan, RackPlan, POOL_CIDR};

/// BIRD's protocol name for a node (`n1`) or the peer ToR (`tor_b`):
/// letters, digits and underscores only.
pub fn protocol_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The config of `rack`'s ToR, logging to `log`.
pub fn tor_config(plan: &Plan, rack: &RackPlan, log: &Path) -> String {
    let (Some(gw), Some(asn)) = (rack.gateway, rack.asn) else {
        return String::new();
    };
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# BIRD 2 on {} (top of rack {}, AS {asn}); written by `tortie lab up`.",
        rack.netns, rack.name
    );
    let _ = writeln!(c, "router id {gw};");
    let _ = writeln!(c, "log \"{}\" all;", log.display());
    let _ = writeln!(c);
    let _ = writeln!(c, "protocol device {{ scan time 10; }}");
    let _ = writeln!(c);
    let _ = writeln!(
        c,
        "# Learned pod routes go into this namespace's kernel: the ToR forwards pod traffic."
    );
    let _ = writeln!(
        c,
        "protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}"
    );
    let _ = writeln!(c);
    let _ = writeln!(
        c,
        "# A ToR accepts pod CIDRs inside the IP pool and nothing else."
    );
    let _ = writeln!(
        c,
        "filter pods {{ if net ~ [ {POOL_CIDR}+ ] then accept; reject; }}"
    );
    let _ = writeln!(c);
    let _ = writeln!(c, "template bgp lab {{");
    let _ = writeln!(c, "    hold time 9;");
    let _ = writeln!(c, "    keepalive time 3;");
    let _ = writeln!(c, "    connect delay time 1;");
    let _ = writeln!(c, "    connect retry time 1;");
    let _ = writeln!(c, "    error wait time 1, 5;");
    let _ = writeln!(c, "    graceful restart on;");
    let _ = writeln!(c, "    ipv4 {{ import filter pods; export filter pods; }};");
    let _ = writeln!(c, "}}");
    let _ = writeln!(c);
    for node in plan.nodes.iter().filter(|n| plan.rack_of(n) == Some(rack)) {
        let Some(node_asn) = node.asn else { continue };
        let _ = writeln!(
            c,
            "protocol bgp {} from lab {{ local {gw} as {asn}; neighbor {} as {node_asn}; }}",
            protocol_name(&node.name),
            node.address
        );
    }
    if let Some(up) = rack.uplink {
        for other in plan.racks.iter().filter(|r| r.name != rack.name) {
            let (Some(peer), Some(peer_asn)) = (other.uplink, other.asn) else {
                continue;
            };
            let _ = writeln!(
                c,
                "protocol bgp {} from lab {{ local {up} as {asn}; neighbor {peer} as {peer_asn}; }}",
                protocol_name(&other.tor_name())
            );
        }
    }
    c
}

/// One line of `birdc show protocols`: a BGP protocol and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdSession {
    pub name: String,
    /// `up`, `start`, `down`.
    pub state: String,
    /// `Established`, `Active`, `Connect` ...
    pub info: String,
}

/// The BGP protocols of `birdc show protocols`.
pub fn parse_sessions(text: &str) -> Vec<BirdSession> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.get(1) != Some(&"BGP") {
                return None;
            }
            Some(BirdSession {
                name: cols.first()?.to_string(),
                state: cols.get(3)?.to_string(),
                info: cols.get(5..).map(|c| c.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
}

/// The prefixes of `birdc show route` (the first column of each route).
pub fn parse_route_prefixes(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let first = l.split_whitespace().next()?;
            (first.contains('/') && first.parse::<ipnet::IpNet>().is_ok())
                .then(|| first.to_string())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::super::plan::LabOptions;
    use super::*;

    #[test]
    fn rack_a_config() {
        let plan = Plan::new(&LabOptions::default());
        let c = tor_config(&plan, &plan.racks[0], Path::new("/run/x/bird.log"));
        assert!(c.contains("router id 192.0.2.1;"), "{c}");
        assert!(c.contains(
            "protocol bgp n1 from lab { local 192.0.2.1 as 65001; neighbor 192.0.2.11 as 65101; }"
        ));
        assert!(c.contains("neighbor 192.0.2.12 as 65102"));
        assert!(
            !c.contains("neighbor 198.51.100.13"),
            "n3 is in rack b: {c}"
        );
        assert!(c.contains(
            "protocol bgp tor_b from lab { local 203.0.113.1 as 65001; neighbor 203.0.113.2 as 65002; }"
        ));
        let b = tor_config(&plan, &plan.racks[1], Path::new("/x"));
        assert!(b.contains("neighbor 198.51.100.13 as 65103"));
        assert!(b.contains("neighbor 203.0.113.1 as 65001"));
    }

    #[test]
    fn no_config_for_a_switch() {
        let plan = Plan::new(&LabOptions {
            tor: super::super::plan::TorKind::None,
            ..Default::default()
        });
        assert_eq!(tor_config(&plan, &plan.racks[0], Path::new("/x")), "");
    }

    #[test]
    fn birdc_output_parses() {
        let protocols = "BIRD 2.0.12 ready.\n\
            Name       Proto      Table      State  Since         Info\n\
            device1    Device     ---        up     09:00:00.000  \n\
            kernel1    Kernel     master4    up     09:00:00.000  \n\
            n1         BGP        ---        up     09:00:01.000  Established   \n\
            tor_b      BGP        ---        start  09:00:01.000  Active        Socket: Connection refused\n";
        let s = parse_sessions(protocols);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].info, "Established");
        assert_eq!(s[1].state, "start");
        assert!(s[1].info.starts_with("Active"));
        let routes = "BIRD 2.0.12 ready.\nTable master4:\n\
            10.244.3.0/24        unicast [tor_b 09:00:02.000] * (100) [AS65103i]\n\
            \tvia 203.0.113.2 on up0\n\
            10.244.1.0/24        unicast [n1 09:00:02.000] * (100) [AS65101i]\n\
            \tvia 192.0.2.11 on br0\n";
        assert_eq!(
            parse_route_prefixes(routes),
            ["10.244.1.0/24", "10.244.3.0/24"]
        );
    }
}
