use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::crd::Encapsulation;

fn manifests(text: &str) -> Manifests {
    let mut m = Manifests::default();
    m.add_str(Path::new("c.yaml"), text);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    m
}

fn node(name: &str, ip: &str, cidrs: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n{extra}spec:\n  podCIDRs: [{}]\n\
         status:\n  addresses: [{{type: Hostname, address: {name}}}, {{type: InternalIP, address: \"{ip}\"}}]\n---\n",
        cidrs.join(", ")
    )
}

fn pool(name: &str, cidr: &str, extra: &str) -> String {
    format!(
        "apiVersion: tortie.io/v1alpha1\nkind: IPPool\nmetadata: {{name: {name}}}\nspec:\n  cidr: \"{cidr}\"\n{extra}---\n"
    )
}

fn peer(name: &str, spec: &str) -> String {
    format!("apiVersion: tortie.io/v1alpha1\nkind: BGPPeer\nmetadata: {{name: {name}}}\nspec:\n{spec}---\n")
}

/// Three nodes (n1 and n2 in rack a, n3 in rack b), one dual-stack pool
/// pair, the default config.
fn cluster() -> String {
    [
        node(
            "n1",
            "192.0.2.11",
            &["10.244.1.0/24", "fd00:0:0:1::/64"],
            "  labels: {rack: a}\n",
        ),
        node("n2", "192.0.2.12", &["10.244.2.0/24"], "  labels: {rack: a}\n"),
        node(
            "n3",
            "198.51.100.13",
            &["10.244.3.0/24"],
            "  labels: {rack: b}\n  annotations: {tortie.io/asn: \"65003\", tortie.io/bgp-address: 198.51.100.13/26}\n",
        ),
        pool("v4", "10.244.0.0/16", "  encapsulation: VXLANCrossSubnet\n  natOutgoing: true\n"),
        pool("v6", "fd00::/48", ""),
    ]
    .concat()
}

fn build(text: &str) -> Model {
    Model::build(&manifests(text), None)
}

#[test]
fn node_routing_meshes_with_every_other_node_and_announces_pod_cidrs() {
    let m = build(&cluster());
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let r = m.node_routing("n1").expect("routing");
    assert_eq!(r.speaker.as_number, 64512);
    assert_eq!(r.speaker.router_id, "192.0.2.11");
    assert_eq!(r.bgp_address, "192.0.2.11/24".parse().unwrap());
    assert_eq!(r.speaker.listen_port, Some(179));
    assert_eq!(r.speaker.cluster_id, None);
    let peers: Vec<(&str, u32)> = r
        .speaker
        .peers
        .iter()
        .map(|p| (p.peer_ip.as_str(), p.as_number))
        .collect();
    assert_eq!(peers, [("192.0.2.12", 64512), ("198.51.100.13", 65003)]);
    assert_eq!(
        r.speaker.peers[0].source_address.as_deref(),
        Some("192.0.2.11")
    );
    assert_eq!(r.peer_sources.len(), 2);
    assert!(r.peer_sources.values().all(|s| s == "mesh"));
    let originated: Vec<&str> = r
        .speaker
        .originate
        .iter()
        .map(|o| o.prefix.as_str())
        .collect();
    assert_eq!(originated, ["10.244.1.0/24", "fd00:0:0:1::/64"]);
    let fib = r.speaker.fib.as_ref().expect("fib");
    assert!(fib.enabled && fib.blackhole_originated == Some(true));
    assert_eq!(r.pools.len(), 2);
    assert_eq!(r.pools[0].encapsulation, Encapsulation::VXLANCrossSubnet);
    assert!(r.pools[0].nat_outgoing);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let remote: Vec<(&str, String, usize)> = r
        .remote_nodes
        .iter()
        .map(|(n, x)| (n.as_str(), x.bgp_address.to_string(), x.pod_cidrs.len()))
        .collect();
    assert_eq!(
        remote,
        [
            ("n2", "192.0.2.12/24".to_string(), 1),
            ("n3", "198.51.100.13/26".to_string(), 1)
        ]
    );
    // The config is one the speaker loads.
    crate::bgp_cmd::convert(&r.speaker).expect("loads");

    let r3 = m.node_routing("n3").expect("n3");
    assert_eq!(r3.speaker.as_number, 65003);
    assert_eq!(r3.bgp_address, "198.51.100.13/26".parse().unwrap());
    assert!(m.node_routing("n9").is_err());
}

#[test]
fn bgp_configuration_sets_asn_timers_port_and_can_turn_the_mesh_off() {
    let conf = "apiVersion: tortie.io/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: default}\n\
                spec: {asNumber: 65100, nodeToNodeMesh: false, listenPort: 1179, holdTime: 9, keepaliveTime: 3}\n---\n";
    let m = build(&format!("{}{conf}", cluster()));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let r = m.node_routing("n2").expect("routing");
    assert_eq!(r.speaker.as_number, 65100);
    assert_eq!(r.speaker.listen_port, Some(1179));
    assert_eq!(r.speaker.hold_time, Some(9));
    assert_eq!(r.speaker.keepalive_time, Some(3));
    assert!(r.speaker.peers.is_empty());
}

#[test]
fn bgp_peers_select_nodes_by_name_selector_or_all() {
    let peers = [
        peer("tor-a", "  peerIP: 192.0.2.1\n  asNumber: 65001\n  nodeSelector: {matchLabels: {rack: a}}\n"),
        peer(
            "tor-b",
            "  peerIP: 198.51.100.1\n  asNumber: 65002\n  nodeSelector:\n    matchExpressions: [{key: rack, operator: In, values: [b]}]\n",
        ),
        peer("only-n2", "  peerIP: 203.0.113.1\n  asNumber: 65010\n  node: n2\n"),
        peer("everyone", "  peerIP: 2001:db8::1\n  asNumber: 65020\n"),
    ]
    .concat();
    let m = build(&format!("{}{peers}", cluster()));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let sources = |n: &str| -> Vec<String> {
        let r = m.node_routing(n).expect("routing");
        r.peer_sources
            .iter()
            .filter(|(_, s)| s.as_str() != "mesh")
            .map(|(ip, s)| format!("{ip} {s}"))
            .collect()
    };
    assert_eq!(
        sources("n1"),
        ["192.0.2.1 BGPPeer tor-a", "2001:db8::1 BGPPeer everyone"]
    );
    assert_eq!(
        sources("n2"),
        [
            "192.0.2.1 BGPPeer tor-a",
            "203.0.113.1 BGPPeer only-n2",
            "2001:db8::1 BGPPeer everyone"
        ]
    );
    assert_eq!(
        sources("n3"),
        ["198.51.100.1 BGPPeer tor-b", "2001:db8::1 BGPPeer everyone"]
    );
    let r = m.node_routing("n1").expect("routing");
    let tor = r
        .speaker
        .peers
        .iter()
        .find(|p| p.peer_ip == "192.0.2.1")
        .expect("tor-a");
    assert_eq!(tor.name.as_deref(), Some("tor-a"));
    assert!(tor.node_selector.is_none() && tor.node.is_none());
}

#[test]
fn an_explicit_peer_wins_over_the_mesh_for_the_same_address() {
    let peers = peer(
        "n2-ebgp",
        "  peerIP: 192.0.2.12\n  asNumber: 65099\n  node: n1\n",
    );
    let m = build(&format!("{}{peers}", cluster()));
    let r = m.node_routing("n1").expect("routing");
    let ip: IpAddr = "192.0.2.12".parse().unwrap();
    assert_eq!(r.peer_sources[&ip], "BGPPeer n2-ebgp");
    assert_eq!(
        r.speaker
            .peers
            .iter()
            .filter(|p| p.peer_ip == "192.0.2.12")
            .count(),
        1
    );
}

#[test]
fn passwords_come_from_secrets_and_a_missing_one_only_drops_its_peer() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: bgp, namespace: tortie-system}\n\
                  stringData: {tor: \"s3cret\\n\"}\n---\n\
                  apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: net}\n\
                  data: {pw: aHVudGVyMg==}\n---\n";
    let peers = [
        peer("a", "  peerIP: 192.0.2.1\n  asNumber: 65001\n  password: {secretKeyRef: {name: bgp, key: tor}}\n"),
        peer(
            "b",
            "  peerIP: 192.0.2.2\n  asNumber: 65001\n  password: {secretKeyRef: {name: other, key: pw, namespace: net}}\n",
        ),
        peer("c", "  peerIP: 192.0.2.3\n  asNumber: 65001\n  password: {secretKeyRef: {name: nope, key: pw}}\n"),
        peer("d", "  peerIP: 192.0.2.4\n  asNumber: 65001\n  password: {secretKeyRef: {name: bgp, key: missing}}\n"),
    ]
    .concat();
    let m = build(&format!("{}{secret}{peers}", cluster()));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let r = m.node_routing("n1").expect("routing");
    let pw = |ip: &str| {
        r.speaker
            .peers
            .iter()
            .find(|p| p.peer_ip == ip)
            .map(|p| p.password.clone().and_then(|pw| pw.value))
    };
    assert_eq!(pw("192.0.2.1"), Some(Some("s3cret".into())));
    assert_eq!(pw("192.0.2.2"), Some(Some("hunter2".into())));
    assert_eq!(pw("192.0.2.3"), None);
    assert_eq!(pw("192.0.2.4"), None);
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert_eq!(
        r.errors[0],
        "BGPPeer c: spec.password.secretKeyRef: Secret tortie-system/nope does not exist; this peering is left out"
    );
    assert!(
        r.errors[1].contains("has no key \"missing\""),
        "{}",
        r.errors[1]
    );
    crate::bgp_cmd::convert(&r.speaker).expect("loads");
    let refs: Vec<(String, String)> = m.secret_refs().into_iter().collect();
    assert_eq!(
        refs,
        [
            ("net".to_string(), "other".to_string()),
            ("tortie-system".to_string(), "bgp".to_string()),
            ("tortie-system".to_string(), "nope".to_string()),
        ]
    );
}

#[test]
fn route_reflector_annotation_sets_the_cluster_id_and_allows_clients() {
    let rr = node(
        "rr",
        "192.0.2.50",
        &[],
        "  annotations: {tortie.io/route-reflector-cluster-id: 244.0.0.1}\n",
    );
    let client = peer(
        "clients",
        "  peerIP: 192.0.2.60\n  asNumber: 64512\n  routeReflectorClient: true\n",
    );
    let m = build(&format!("{}{rr}{client}", cluster()));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let r = m.node_routing("rr").expect("rr");
    assert_eq!(r.speaker.cluster_id.as_deref(), Some("244.0.0.1"));
    let c = r
        .speaker
        .peers
        .iter()
        .find(|p| p.peer_ip == "192.0.2.60")
        .expect("client");
    assert_eq!(c.route_reflector_client, Some(true));
    // The mesh stays full and its sessions are not clients.
    assert_eq!(r.speaker.peers.len(), 4);
    // A node that is no reflector leaves the client peering out, loudly.
    let n1 = m.node_routing("n1").expect("n1");
    assert!(n1.speaker.peers.iter().all(|p| p.peer_ip != "192.0.2.60"));
    assert!(
        n1.errors[0].contains("is not a route reflector"),
        "{:?}",
        n1.errors
    );
}

#[test]
fn pod_cidrs_outside_enabled_pools_are_not_announced() {
    let text = [
        node("n1", "192.0.2.11", &["10.244.1.0/24", "10.99.0.0/24"], ""),
        node("n2", "192.0.2.12", &["10.245.0.0/24"], ""),
        pool("v4", "10.244.0.0/16", ""),
        pool("off", "10.245.0.0/16", "  disabled: true\n"),
    ]
    .concat();
    let m = build(&text);
    let r = m.node_routing("n1").expect("routing");
    let originated: Vec<&str> = r
        .speaker
        .originate
        .iter()
        .map(|o| o.prefix.as_str())
        .collect();
    assert_eq!(originated, ["10.244.1.0/24"]);
    assert_eq!(
        r.errors,
        ["Node n1: spec.podCIDRs: 10.99.0.0/24 is not inside an enabled IPPool; it is not announced"]
    );
    assert_eq!(r.pod_cidrs.len(), 2);
    let r2 = m.node_routing("n2").expect("routing");
    assert!(r2.speaker.originate.is_empty());
    assert_eq!(r2.pools.len(), 1, "disabled pools are not routed");
}

#[test]
fn invalid_objects_name_kind_object_and_field() {
    let bad = [
        peer("tor-a", "  peerIP: 192.0.2.300\n  asNumber: 65001\n"),
        peer("typo", "  peerIP: 192.0.2.1\n  asNumber: 65001\n  holdtime: 9\n"),
        peer("asn", "  peerIP: 192.0.2.1\n  asNumber: 0\n"),
        peer("hold", "  peerIP: 192.0.2.1\n  asNumber: 1\n  holdTime: 2\n"),
        peer(
            "sel",
            "  peerIP: 192.0.2.1\n  asNumber: 1\n  nodeSelector:\n    matchExpressions: [{key: rack, operator: Near, values: [a]}]\n",
        ),
        peer(
            "filter",
            "  peerIP: 192.0.2.1\n  asNumber: 1\n  importFilters: [{cidr: 10.0.0.0/33, action: Accept}]\n",
        ),
        pool("cidr", "10.300.0.0/16", ""),
        pool("hostbits", "10.244.1.0/16", ""),
        pool("gre", "10.10.0.0/16", "  encapsulation: GRE\n"),
        pool("ipip6", "fd01::/48", "  encapsulation: IPIP\n"),
        node("bad", "192.0.2.99", &[], "  annotations: {tortie.io/asn: lots}\n"),
        "apiVersion: tortie.io/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 4294967295}\n---\n".to_string(),
    ]
    .concat();
    let m = build(&bad);
    let errs = m.errors.join("\n");
    for want in [
        "BGPPeer tor-a: spec.peerIP: \"192.0.2.300\" is not an IP address (c.yaml document 1)",
        "BGPPeer typo: spec.holdtime: unknown field `holdtime`",
        "BGPPeer asn: spec.asNumber: 0 is not a usable AS number",
        "BGPPeer hold: spec.holdTime: 2 is not allowed",
        "BGPPeer sel: spec.nodeSelector.matchExpressions[0].operator: \"Near\" is not a valid operator",
        "BGPPeer filter: spec.importFilters[0].cidr:",
        "IPPool cidr: spec.cidr: \"10.300.0.0/16\" is not a CIDR",
        "IPPool hostbits: spec.cidr: 10.244.1.0/16 has host bits set (did you mean 10.244.0.0/16?)",
        "IPPool gre: spec.encapsulation: unknown variant `GRE`",
        "IPPool ipip6: spec.encapsulation: IPIP carries IPv4 only",
        "Node bad: metadata.annotations[\"tortie.io/asn\"]: \"lots\" is not an AS number",
        "BGPConfiguration default: spec.asNumber: 4294967295 is not a usable AS number",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
    assert_eq!(m.errors.len(), 12, "{errs}");
    assert!(m.bgp_peers.is_empty() && m.ip_pools.is_empty());
    assert!(m.node("bad").is_none());
    assert!(m.bgp_configuration.is_none());
}

#[test]
fn an_invalid_object_keeps_its_previous_good_version() {
    let good = [
        cluster(),
        peer("tor", "  peerIP: 192.0.2.1\n  asNumber: 65001\n"),
        "apiVersion: tortie.io/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 65100}\n---\n".into(),
    ]
    .concat();
    let first = build(&good);
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let broken = good
        .replace("peerIP: 192.0.2.1\n", "peerIP: 192.0.2.1.7\n")
        .replace("cidr: \"10.244.0.0/16\"", "cidr: \"10.244.0.0/99\"")
        .replace("asNumber: 65100", "asNumber: 0")
        .replace(
            "  labels: {rack: b}\n  annotations: {tortie.io/asn: \"65003\"",
            "  labels: {rack: b}\n  annotations: {tortie.io/asn: \"x\"",
        );
    let second = Model::build(&manifests(&broken), Some(&first));
    assert_eq!(second.errors.len(), 4, "{:?}", second.errors);
    assert!(second
        .errors
        .iter()
        .all(|e| e.ends_with("the previous version stays in force)")));
    assert_eq!(
        second.bgp_peers["tor"].peer_ip,
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(second.ip_pools["v4"].cidr, "10.244.0.0/16".parse().unwrap());
    assert_eq!(second.bgp_settings().as_number, 65100);
    assert_eq!(second.nodes["n3"].asn, Some(65003));
    assert_eq!(second.node_routing("n1"), first.node_routing("n1"));
    // Without a previous model the bad objects are simply not there.
    let fresh = build(&broken);
    assert!(fresh.bgp_peers.is_empty());
    assert!(!fresh.ip_pools.contains_key("v4"));
}

#[test]
fn overlapping_pools_keep_the_established_one() {
    let a = pool("a", "10.244.0.0/16", "");
    let b = pool("b", "10.244.8.0/24", "");
    let first = build(&format!("{}{b}", node("n1", "192.0.2.11", &[], "")));
    let both = manifests(&format!("{}{a}{b}", node("n1", "192.0.2.11", &[], "")));
    // b was there first: the new, larger a is refused.
    let m = Model::build(&both, Some(&first));
    assert_eq!(m.ip_pools.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        m.errors,
        ["IPPool a: spec.cidr: 10.244.0.0/16 overlaps IPPool b (10.244.8.0/24) (c.yaml document 2)"]
    );
    // Both new: the first by name wins.
    let fresh = Model::build(&both, None);
    assert_eq!(fresh.ip_pools.keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn duplicates_unknown_kinds_and_other_configuration_names_are_reported() {
    let text = [
        peer("p", "  peerIP: 192.0.2.1\n  asNumber: 1\n"),
        peer("p", "  peerIP: 192.0.2.2\n  asNumber: 1\n"),
        "apiVersion: tortie.io/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: node.n1}\nspec: {}\n---\n".into(),
        "apiVersion: tortie.io/v1alpha1\nkind: Felix\nmetadata: {name: x}\nspec: {}\n---\n".into(),
        "apiVersion: tortie.io/v1alpha1\nkind: IPPool\nmetadata: {name: y}\nspec: {cidr: 10.0.0.0/8}\nextra: 1\n---\n".into(),
    ]
    .concat();
    let m = build(&text);
    let errs = m.errors.join("\n");
    assert!(
        errs.contains(
            "BGPPeer p: duplicate object, first defined at c.yaml document 1; this one is ignored"
        ),
        "{errs}"
    );
    assert!(errs.contains("BGPConfiguration node.n1: metadata.name: only the BGPConfiguration named \"default\" is read"), "{errs}");
    assert!(errs.contains("Felix x: unknown kind"), "{errs}");
    assert!(errs.contains("IPPool y: extra: unknown field"), "{errs}");
    assert_eq!(
        m.bgp_peers["p"].peer_ip,
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn bgp_address_annotation_and_ipv6_only_nodes() {
    let text = [
        node(
            "v6",
            "2001:db8::6",
            &[],
            "  annotations: {tortie.io/bgp-address: \"2001:db8::6/64\"}\n",
        ),
        node(
            "bare",
            "192.0.2.7",
            &[],
            "  annotations: {tortie.io/bgp-address: 198.51.100.7}\n",
        ),
        "apiVersion: v1\nkind: Node\nmetadata: {name: noaddr}\n---\n".into(),
    ]
    .concat();
    let m = build(&text);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let e = m.node_routing("v6").expect_err("no v4 router id");
    assert!(e.contains("no IPv4 address for the BGP router id"), "{e}");
    let r = m.node_routing("bare").expect("bare");
    assert_eq!(r.bgp_address, "198.51.100.7/24".parse().unwrap());
    assert_eq!(r.speaker.router_id, "198.51.100.7");
    // The v6 node is a mesh peer; the addressless one is not.
    let ips: Vec<&str> = r.speaker.peers.iter().map(|p| p.peer_ip.as_str()).collect();
    assert_eq!(ips, ["2001:db8::6"]);
    assert_eq!(r.speaker.peers[0].source_address, None, "families differ");
    assert!(m
        .node_routing("noaddr")
        .expect_err("no address")
        .contains("no BGP address"));
}

#[test]
fn errors_from_the_kubernetes_datastore_do_not_repeat_kind_and_name() {
    let mut e = ObjectError::new("BGPPeer", "tor", "spec.peerIP", "bad");
    e.source = Some(Box::new(Source {
        file: "kubernetes:BGPPeer/tor".into(),
        document: 1,
    }));
    e.kept_previous = true;
    assert_eq!(
        e.to_string(),
        "BGPPeer tor: spec.peerIP: bad (the previous version stays in force)"
    );
}

#[test]
fn dual_stack_nodes_mesh_once_per_family() {
    let ds = |name: &str, v4: &str, v6: &str, cidrs: &[&str]| {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDRs: [{}]}}\n\
             status:\n  addresses: [{{type: InternalIP, address: \"{v4}\"}}, {{type: InternalIP, address: \"{v6}\"}}]\n---\n",
            cidrs.join(", ")
        )
    };
    let text = [
        ds(
            "a",
            "192.0.2.1",
            "2001:db8::1",
            &["10.244.1.0/24", "fd00:0:0:1::/64"],
        ),
        ds(
            "b",
            "192.0.2.2",
            "2001:db8::2",
            &["10.244.2.0/24", "fd00:0:0:2::/64"],
        ),
        node("c", "192.0.2.3", &["10.244.3.0/24"], ""),
        pool("v4", "10.244.0.0/16", ""),
        pool("v6", "fd00::/48", ""),
    ]
    .concat();
    let m = build(&text);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let r = m.node_routing("a").expect("routing");
    let sessions: Vec<String> = r
        .speaker
        .peers
        .iter()
        .map(|p| {
            format!(
                "{} from {} {:?}",
                p.peer_ip,
                p.source_address.as_deref().unwrap_or("-"),
                p.families
            )
        })
        .collect();
    assert_eq!(
        sessions,
        [
            "192.0.2.2 from 192.0.2.1 Some([IPv4])",
            "192.0.2.3 from 192.0.2.1 None",
            "2001:db8::2 from 2001:db8::1 Some([IPv6])",
        ]
    );
    assert_eq!(r.peer_sources.len(), 3);
    crate::bgp_cmd::convert(&r.speaker).expect("loads");
}

#[test]
fn policy_snapshot_fills_local_pod_ips_from_ipam_until_status_has_them() {
    let text = [
        node("n1", "192.0.2.11", &["10.244.1.0/24"], ""),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n".into(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: new, namespace: x}\nspec: {nodeName: n1, containers: []}\n---\n".into(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: old, namespace: x}\nspec: {nodeName: n1, containers: []}\nstatus: {podIPs: [{ip: 10.244.1.5}]}\n---\n".into(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: far, namespace: x}\nspec: {nodeName: n2, containers: []}\n---\n".into(),
    ]
    .concat();
    let m = build(&text);
    let mut ipam = BTreeMap::new();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    ipam.insert(("x".to_string(), "new".to_string()), vec![ip("10.244.1.9")]);
    ipam.insert(
        ("x".to_string(), "old".to_string()),
        vec![ip("10.244.1.77")],
    );
    ipam.insert(
        ("x".to_string(), "far".to_string()),
        vec![ip("10.244.1.78")],
    );
    let snap = m.policy_snapshot("n1", &ipam);
    let ips = |name: &str| {
        let p = snap.pods.iter().find(|p| &*p.name == name).expect("pod");
        tortie_policy::model::pod_ips(p)
    };
    assert_eq!(ips("new"), [ip("10.244.1.9")]);
    assert_eq!(ips("old"), [ip("10.244.1.5")], "status wins once written");
    assert!(ips("far").is_empty(), "only local pods take IPAM's view");
    assert_eq!(snap.local.len(), 2);
    assert!(m.pod("x", "new").is_some());
    assert!(m.pod("x", "nope").is_none());
    assert!(m.node("n1").is_some());
}

mod never_panics {
    use super::*;
    use crate::manifests::{RawObject, Source};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u32>().prop_map(Value::from),
            "[0-9a-fA-F.:/]{0,24}".prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(json!({"matchLabels": {"rack": "a"}})),
            Just(json!({"matchExpressions": [{"key": "rack", "operator": "In"}]})),
            Just(json!({"secretKeyRef": {"name": "s", "key": "k"}})),
            Just(json!([{"cidr": "10.0.0.0/8", "action": "Accept"}])),
        ]
    }

    fn spec(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
        proptest::collection::vec((proptest::sample::select(keys), leaf()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    fn raw(kind: &str, name: &str, spec: Value) -> RawObject {
        RawObject {
            source: Source {
                file: "p.yaml".into(),
                document: 1,
            },
            api_version: "tortie.io/v1alpha1".into(),
            kind: kind.into(),
            namespace: None,
            name: Some(name.into()),
            value: json!({"apiVersion": "tortie.io/v1alpha1", "kind": kind,
                          "metadata": {"name": name}, "spec": spec}),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn build_routing_and_policy_never_panic(
            peers in proptest::collection::vec(spec(&["peerIP", "asNumber", "node", "nodeSelector",
                "password", "holdTime", "keepaliveTime", "ttlSecurity", "sourceAddress",
                "routeReflectorClient", "importFilters", "families", "bogus"]), 0..4),
            pools in proptest::collection::vec(spec(&["cidr", "encapsulation", "natOutgoing", "disabled"]), 0..4),
            conf in spec(&["asNumber", "nodeToNodeMesh", "listenPort", "holdTime", "keepaliveTime"]),
            nodes in proptest::collection::vec(
                ("[0-9a-f.:/]{0,20}", "[0-9a-f.:/]{0,20}", "\\PC{0,8}|[0-9]{1,10}", "[0-9.]{0,16}", "[0-9a-f.:/]{0,20}"),
                0..4),
        ) {
            let mut m = Manifests::default();
            for (i, (ip, addr, asn, cluster, cidr)) in nodes.iter().enumerate() {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": format!("n{i}"), "labels": {"rack": "a"},
                                 "annotations": {"tortie.io/bgp-address": addr, "tortie.io/asn": asn,
                                                 "tortie.io/route-reflector-cluster-id": cluster}},
                    "spec": {"podCIDRs": [cidr]},
                    "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
                })).expect("node json");
                m.nodes.push(std::sync::Arc::new(node));
            }
            for (i, p) in peers.into_iter().enumerate() {
                m.other.push(raw("BGPPeer", &format!("p{i}"), p));
            }
            for (i, p) in pools.into_iter().enumerate() {
                m.other.push(raw("IPPool", &format!("pool{i}"), p));
            }
            m.other.push(raw("BGPConfiguration", "default", conf));
            let first = Model::build(&m, None);
            let again = Model::build(&m, Some(&first));
            prop_assert_eq!(&first.errors, &again.errors);
            for i in 0..nodes.len() {
                let name = format!("n{i}");
                if let Ok(r) = again.node_routing(&name) {
                    // Whatever the model hands out, the speaker accepts.
                    prop_assert!(crate::bgp_cmd::convert(&r.speaker).is_ok());
                }
                let _ = again.policy_snapshot(&name, &BTreeMap::new());
            }
        }
    }
}

/// `cargo test -p tortie --lib -- --ignored --nocapture model_cost`
#[test]
#[ignore = "measurement, not a check"]
fn model_cost_for_500_nodes_and_5000_pods() {
    let mut text = String::new();
    for i in 0..500 {
        text.push_str(&node(
            &format!("n{i}"),
            &format!("10.1.{}.{}", i / 250, i % 250 + 1),
            &[&format!("10.244.{}.{}/26", i / 4, (i % 4) * 64)],
            "",
        ));
    }
    for i in 0..5000 {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: x, labels: {{app: a{}}}}}\n\
             spec: {{nodeName: n{}, containers: []}}\nstatus: {{podIPs: [{{ip: 10.244.0.1}}]}}\n---\n",
            i % 7,
            i % 500
        ));
    }
    text.push_str(&pool("v4", "10.244.0.0/16", ""));
    let m = manifests(&text);
    let t = std::time::Instant::now();
    let copy = m.clone();
    eprintln!(
        "Manifests::clone: {:?} ({} objects)",
        t.elapsed(),
        copy.len()
    );
    let t = std::time::Instant::now();
    let first = Model::build(&m, None);
    eprintln!("Model::build (500 nodes, 5000 pods): {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let again = Model::build(&m, Some(&first));
    eprintln!("Model::build with previous: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let r = again.node_routing("n7").expect("routing");
    eprintln!("node_routing (499 mesh peers): {:?}", t.elapsed());
    assert_eq!(r.speaker.peers.len(), 499);
    let t = std::time::Instant::now();
    let s = again.policy_snapshot("n7", &BTreeMap::new());
    eprintln!(
        "policy_snapshot: {:?} ({} local)",
        t.elapsed(),
        s.local.len()
    );
}

#[test]
#[ignore = "manual check of a directory: TORTIE_CHECK_DIR=... TORTIE_CHECK_NODE=..."]
fn check_dir_from_env() {
    let dir = std::env::var("TORTIE_CHECK_DIR").expect("TORTIE_CHECK_DIR");
    let m = crate::manifests::load_dir(Path::new(&dir)).expect("load");
    eprintln!("manifest errors: {:#?}", m.errors);
    let model = Model::build(&m, None);
    eprintln!("model errors: {:#?}", model.errors);
    if let Ok(node) = std::env::var("TORTIE_CHECK_NODE") {
        eprintln!("{:#?}", model.node_routing(&node));
    }
}
