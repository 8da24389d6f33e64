//! A test oracle: the NetworkPolicy API semantics evaluated directly on the
//! Kubernetes objects, written from the API documentation independently of
//! the compiler. Random valid policy sets are compiled, every flow of a
//! small cluster is explained (which walks the compiled chains and sets),
//! and the two verdicts must agree.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::explain::{explain, Endpoint, Flow};
use crate::testing::*;

struct PodFacts {
    ns: String,
    labels: BTreeMap<String, String>,
    ip: IpAddr,
    pod: std::sync::Arc<SlimPod>,
}

fn sel(
    v: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Option<Selector> {
    v.as_ref()
        .map(|s| Selector::parse(s, "x").expect("generated selectors are valid"))
}

fn peer_matches(
    peer: &NetworkPolicyPeer,
    policy_ns: &str,
    other: Option<&PodFacts>,
    other_ip: IpAddr,
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    if let Some(b) = &peer.ip_block {
        let cidr: IpNet = b.cidr.parse().expect("valid");
        let excepted = b
            .except
            .iter()
            .flatten()
            .any(|e| e.parse::<IpNet>().expect("valid").contains(&other_ip));
        return cidr.contains(&other_ip) && !excepted;
    }
    let Some(p) = other else { return false };
    let ns_ok = match sel(&peer.namespace_selector) {
        Some(s) => s.matches(&ns_labels[&p.ns]),
        None => p.ns == policy_ns,
    };
    let pod_ok = sel(&peer.pod_selector).is_none_or(|s| s.matches(&p.labels));
    ns_ok && pod_ok
}

fn port_matches(
    ports: Option<&[NetworkPolicyPort]>,
    dst: Option<&PodFacts>,
    port: u16,
    proto: Protocol,
) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let pp = p
            .protocol
            .as_deref()
            .map_or(Protocol::Tcp, |s| Protocol::from_api(s).expect("valid"));
        pp == proto
            && match &p.port {
                None => true,
                Some(IntOrString::Int(n)) => {
                    let end = p.end_port.unwrap_or(*n);
                    (*n..=end).contains(&i32::from(port))
                }
                Some(IntOrString::String(name)) => {
                    dst.is_some_and(|d| named_ports(&d.pod, proto, name).contains(&port))
                }
            }
    })
}

/// Types of a policy as the API defaults them.
fn types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = p.spec.as_ref().expect("spec");
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => (
            t.iter().any(|x| x == "Ingress"),
            t.iter().any(|x| x == "Egress"),
        ),
        None => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// Does `subject` (a pod) let traffic with `other` through in `direction`?
fn side_allows(
    policies: &[NetworkPolicy],
    subject: &PodFacts,
    other: Option<&PodFacts>,
    other_ip: IpAddr,
    egress: bool,
    (port, proto): (u16, Protocol),
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    let mut isolated = false;
    for p in policies {
        let ns = p.metadata.namespace.as_deref().expect("ns");
        let spec = p.spec.as_ref().expect("spec");
        if ns != subject.ns
            || !sel(&spec.pod_selector)
                .unwrap_or_default()
                .matches(&subject.labels)
        {
            continue;
        }
        let (ing, eg) = types(p);
        if (egress && !eg) || (!egress && !ing) {
            continue;
        }
        isolated = true;
        // The destination pod decides what a named port means.
        let dst = if egress { other } else { Some(subject) };
        let ok = if egress {
            spec.egress.iter().flatten().any(|r| {
                r.to.as_deref().is_none_or(|to| {
                    to.is_empty()
                        || to
                            .iter()
                            .any(|pe| peer_matches(pe, ns, other, other_ip, ns_labels))
                }) && port_matches(r.ports.as_deref(), dst, port, proto)
            })
        } else {
            spec.ingress.iter().flatten().any(|r| {
                r.from.as_deref().is_none_or(|f| {
                    f.is_empty()
                        || f.iter()
                            .any(|pe| peer_matches(pe, ns, other, other_ip, ns_labels))
                }) && port_matches(r.ports.as_deref(), dst, port, proto)
            })
        };
        if ok {
            return true;
        }
    }
    !isolated
}

fn selector() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!({"matchLabels": {"app": "web"}})),
        Just(json!({"matchLabels": {"app": "client"}})),
        Just(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]})
        ),
        Just(json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
    ]
}

fn ns_selector() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!({"matchLabels": {"env": "dev"}})),
        Just(json!({"matchLabels": {"kubernetes.io/metadata.name": "prod"}})),
    ]
}

fn peer() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        selector().prop_map(|s| json!({"podSelector": s})),
        ns_selector().prop_map(|s| json!({"namespaceSelector": s})),
        (ns_selector(), selector())
            .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        Just(json!({"ipBlock": {"cidr": "198.51.100.0/24"}})),
        Just(json!({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/24"]}})),
        Just(json!({"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.0.11/32"]}})),
    ]
}

fn port() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!({"port": 80})),
        Just(json!({"port": 80, "endPort": 81})),
        Just(json!({"port": "http"})),
        Just(json!({"port": "http", "protocol": "UDP"})),
        Just(json!({"protocol": "UDP"})),
        Just(json!({"port": 8080, "protocol": "TCP"})),
    ]
}

fn rule(key: &'static str) -> impl Strategy<Value = serde_json::Value> {
    (
        proptest::option::of(proptest::collection::vec(peer(), 0..3)),
        proptest::option::of(proptest::collection::vec(port(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut r = serde_json::Map::new();
            if let Some(p) = peers {
                r.insert(key.into(), json!(p));
            }
            if let Some(p) = ports {
                r.insert("ports".into(), json!(p));
            }
            serde_json::Value::Object(r)
        })
}

fn policy() -> impl Strategy<Value = (bool, serde_json::Value)> {
    (
        any::<bool>(),
        selector(),
        proptest::option::of(proptest::collection::vec(rule("from"), 0..3)),
        proptest::option::of(proptest::collection::vec(rule("to"), 0..3)),
        prop_oneof![
            Just(None),
            Just(Some(json!(["Ingress"]))),
            Just(Some(json!(["Egress"]))),
            Just(Some(json!(["Ingress", "Egress"])))
        ],
    )
        .prop_map(|(in_dev, sel, ing, eg, types)| {
            let mut s = serde_json::Map::new();
            s.insert("podSelector".into(), sel);
            if let Some(i) = ing {
                s.insert("ingress".into(), json!(i));
            }
            if let Some(e) = eg {
                s.insert("egress".into(), json!(e));
            }
            if let Some(t) = types {
                s.insert("policyTypes".into(), t);
            }
            (in_dev, serde_json::Value::Object(s))
        })
}

fn world() -> Snapshot {
    let mut s = snapshot_all_local(
        vec![
            mk_ns("prod", &[("env", "prod")]),
            mk_ns("dev", &[("env", "dev")]),
        ],
        vec![
            with_port(
                mk_pod(
                    "prod",
                    "web",
                    &[("app", "web"), ("tier", "front")],
                    "10.244.0.10",
                ),
                "http",
                8080,
                "TCP",
            ),
            with_port(
                mk_pod("prod", "db", &[("app", "db")], "10.244.0.11"),
                "http",
                81,
                "TCP",
            ),
            with_port(
                mk_pod("dev", "web", &[("app", "web")], "10.244.1.10"),
                "http",
                80,
                "UDP",
            ),
            mk_pod(
                "dev",
                "client",
                &[("app", "client"), ("tier", "x")],
                "10.244.1.12",
            ),
        ],
        vec![],
    );
    // One pod on another node: only its own policies are not evaluated here.
    s.local.retain(|w| w.pod != "client");
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn compiled_rules_agree_with_the_api_semantics(specs in proptest::collection::vec(policy(), 1..4)) {
        let mut s = world();
        s.policies = specs
            .into_iter()
            .enumerate()
            .map(|(i, (in_dev, spec))| mk_policy(if in_dev { "dev" } else { "prod" }, &format!("p{i}"), spec))
            .collect();
        let c = compile(&s);
        prop_assert!(c.errors.is_empty(), "{:?}", c.errors);
        let ns_labels: BTreeMap<String, BTreeMap<String, String>> = [
            ("prod", [("env", "prod"), ("kubernetes.io/metadata.name", "prod")]),
            ("dev", [("env", "dev"), ("kubernetes.io/metadata.name", "dev")]),
        ]
        .into_iter()
        .map(|(n, l)| (n.to_string(), l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
        .collect();
        let pods: Vec<(Endpoint, Option<PodFacts>, bool)> = s
            .pods
            .iter()
            .map(|p| {
                let ns = p.namespace.to_string();
                let name = p.name.to_string();
                let local = s.local.iter().any(|w| w.namespace == ns && w.pod == name);
                let facts = PodFacts {
                    ns: ns.clone(),
                    labels: (*p.labels).clone(),
                    ip: model::pod_ips(p)[0],
                    pod: p.clone(),
                };
                (Endpoint::Pod { namespace: ns, name }, Some(facts), local)
            })
            .chain(["198.51.100.7", "203.0.113.9"].into_iter().map(|ip| {
                (Endpoint::Ip(ip.parse().expect("ip")), None, false)
            }))
            .collect();
        let ip_of = |e: &Endpoint, f: &Option<PodFacts>| match (e, f) {
            (Endpoint::Ip(ip), _) => *ip,
            (_, Some(f)) => f.ip,
            _ => unreachable!(),
        };
        for (from, ffacts, flocal) in &pods {
            for (to, tfacts, tlocal) in &pods {
                if from == to || (ffacts.is_none() && tfacts.is_none()) {
                    continue;
                }
                for (port, proto) in [(80, Protocol::Tcp), (81, Protocol::Tcp), (8080, Protocol::Tcp), (80, Protocol::Udp)] {
                    let (src, dst) = (ip_of(from, ffacts), ip_of(to, tfacts));
                    // Only sides that are local workloads are decided on this node.
                    let egress_ok = match (ffacts, flocal) {
                        (Some(f), true) => side_allows(&s.policies, f, tfacts.as_ref(), dst, true, (port, proto), &ns_labels),
                        _ => true,
                    };
                    let ingress_ok = match (tfacts, tlocal) {
                        (Some(t), true) => side_allows(&s.policies, t, ffacts.as_ref(), src, false, (port, proto), &ns_labels),
                        _ => true,
                    };
                    let e = explain(&c, &s, &Flow { from: from.clone(), to: to.clone(), port, protocol: proto });
                    prop_assert_eq!(
                        e.allowed,
                        egress_ok && ingress_ok,
                        "{} -> {} {}/{}: oracle egress {} ingress {}; explain:\n{}\npolicies: {:#?}",
                        from, to, port, proto, egress_ok, ingress_ok, e,
                        s.policies.iter().map(|p| serde_json::to_string(&p.spec).unwrap_or_default()).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}
