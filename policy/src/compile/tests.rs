//! NetworkPolicy semantics, one test per rule of the API and per edge case.
//!
//! Verdicts come from `explain`, which walks the compiled chains and sets,
//! so every test here checks the ruleset the kernel would get.

use std::net::IpAddr;

use serde_json::json;

use super::*;
use crate::diff::diff;
use crate::explain::{explain, Endpoint, Flow, SideVerdict};
use crate::testing::*;

const WEB: &str = "10.244.0.10";
const DB: &str = "10.244.0.11";
const CLIENT: &str = "10.244.0.12";
const DEV_CLIENT: &str = "10.244.1.12";
const EXTERNAL: &str = "198.51.100.7";

fn cluster(policies: Vec<NetworkPolicy>) -> Snapshot {
    snapshot_all_local(
        vec![
            mk_ns("prod", &[("env", "prod")]),
            mk_ns("dev", &[("env", "dev")]),
        ],
        vec![
            mk_pod("prod", "web", &[("app", "web")], &format!("{WEB},fd00::10")),
            mk_pod("prod", "db", &[("app", "db")], DB),
            mk_pod(
                "prod",
                "client",
                &[("app", "client")],
                &format!("{CLIENT},fd00::12"),
            ),
            mk_pod("dev", "client", &[("app", "client")], DEV_CLIENT),
        ],
        policies,
    )
}

fn pod(ns: &str, name: &str) -> Endpoint {
    Endpoint::Pod {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn ip(s: &str) -> Endpoint {
    Endpoint::Ip(s.parse::<IpAddr>().expect("ip"))
}

fn flow(
    s: &Snapshot,
    from: Endpoint,
    to: Endpoint,
    port: u16,
    protocol: Protocol,
) -> crate::explain::Explanation {
    let c = compile(s);
    assert!(c.errors.is_empty(), "unexpected errors: {:?}", c.errors);
    explain(
        &c,
        s,
        &Flow {
            from,
            to,
            port,
            protocol,
        },
    )
}

fn tcp(s: &Snapshot, from: Endpoint, to: Endpoint, port: u16) -> bool {
    flow(s, from, to, port, Protocol::Tcp).allowed
}

#[test]
fn unselected_pods_allow_everything() {
    let s = cluster(vec![]);
    let e = flow(
        &s,
        pod("prod", "client"),
        pod("prod", "web"),
        80,
        Protocol::Tcp,
    );
    assert!(e.allowed);
    assert_eq!(e.egress, SideVerdict::NotIsolated);
    assert_eq!(e.ingress, SideVerdict::NotIsolated);
    assert!(tcp(&s, ip(EXTERNAL), pod("prod", "web"), 1));
    assert!(tcp(&s, pod("prod", "web"), ip(EXTERNAL), 443));
}

#[test]
fn a_selecting_policy_without_ingress_rules_isolates_ingress_only() {
    // policyTypes absent, no egress section: Ingress only.
    let s = cluster(vec![mk_policy(
        "prod",
        "deny",
        json!({"podSelector": {"matchLabels": {"app": "web"}}}),
    )]);
    let e = flow(
        &s,
        pod("prod", "client"),
        pod("prod", "web"),
        80,
        Protocol::Tcp,
    );
    assert!(!e.allowed);
    assert_eq!(
        e.ingress,
        SideVerdict::Denied {
            policies: vec!["prod/deny".into()]
        }
    );
    // Egress of web is untouched, and other pods are not isolated.
    assert!(tcp(&s, pod("prod", "web"), pod("prod", "db"), 5432));
    assert!(tcp(&s, pod("prod", "client"), pod("prod", "db"), 5432));
}

#[test]
fn empty_and_absent_ingress_lists_both_deny() {
    for spec in [
        json!({"podSelector": {}, "ingress": []}),
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ] {
        let s = cluster(vec![mk_policy("prod", "p", spec)]);
        assert!(!tcp(&s, pod("prod", "client"), pod("prod", "web"), 80));
        assert!(!tcp(&s, ip(EXTERNAL), pod("prod", "web"), 80));
    }
}

#[test]
fn an_empty_rule_allows_everything_including_external() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{}]}),
    )]);
    let e = flow(&s, ip(EXTERNAL), pod("prod", "web"), 9999, Protocol::Udp);
    assert!(e.allowed);
    assert_eq!(
        e.ingress,
        SideVerdict::Allowed {
            policy: "prod/p".into(),
            rule: 0
        }
    );
    assert!(tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
}

#[test]
fn from_absent_or_empty_means_all_sources() {
    for rule in [
        json!({"ports": [{"port": 80}]}),
        json!({"from": [], "ports": [{"port": 80}]}),
    ] {
        let s = cluster(vec![mk_policy(
            "prod",
            "p",
            json!({"podSelector": {}, "ingress": [rule]}),
        )]);
        assert!(tcp(&s, ip(EXTERNAL), pod("prod", "web"), 80));
        assert!(tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
        assert!(!tcp(&s, pod("dev", "client"), pod("prod", "web"), 81));
    }
}

#[test]
fn empty_spec_pod_selector_selects_every_pod_of_its_namespace_only() {
    let s = cluster(vec![mk_policy("prod", "p", json!({"podSelector": {}}))]);
    assert!(!tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
    assert!(!tcp(&s, pod("dev", "client"), pod("prod", "db"), 80));
    assert!(
        tcp(&s, pod("prod", "web"), pod("dev", "client"), 80),
        "dev is not selected"
    );
}

#[test]
fn pod_selector_peer_is_limited_to_the_policy_namespace() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )]);
    assert!(tcp(&s, pod("prod", "client"), pod("prod", "web"), 80));
    assert!(
        !tcp(&s, pod("dev", "client"), pod("prod", "web"), 80),
        "same labels, other namespace"
    );
    assert!(!tcp(&s, pod("prod", "db"), pod("prod", "web"), 80));
}

#[test]
fn empty_pod_selector_peer_means_every_pod_of_the_namespace() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )]);
    assert!(tcp(&s, pod("prod", "db"), pod("prod", "web"), 80));
    assert!(!tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
    assert!(!tcp(&s, ip(EXTERNAL), pod("prod", "web"), 80));
}

#[test]
fn empty_namespace_selector_means_all_pods_everywhere_but_no_external_ip() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )]);
    assert!(tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
    assert!(tcp(&s, pod("prod", "client"), pod("prod", "web"), 80));
    assert!(!tcp(&s, ip(EXTERNAL), pod("prod", "web"), 80));
}

#[test]
fn namespace_and_pod_selector_in_one_peer_are_anded() {
    let mut s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}},
                                       "podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )]);
    s.pods
        .push(mk_pod("dev", "other", &[("app", "other")], "10.244.1.13"));
    s.local.push(mk_local("dev", "other"));
    assert!(tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
    assert!(
        !tcp(&s, pod("dev", "other"), pod("prod", "web"), 80),
        "namespace matches, pod does not"
    );
    assert!(
        !tcp(&s, pod("prod", "client"), pod("prod", "web"), 80),
        "pod matches, namespace does not"
    );
}

#[test]
fn two_peers_in_one_rule_are_ored() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}},
                                     {"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )]);
    assert!(tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
    assert!(tcp(&s, pod("prod", "client"), pod("prod", "web"), 80));
    assert!(!tcp(&s, pod("prod", "db"), pod("prod", "web"), 80));
}

#[test]
fn rules_and_policies_add_up() {
    let s = cluster(vec![
        mk_policy(
            "prod",
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 80}]},
                               {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 81}]}]}),
        ),
        mk_policy(
            "prod",
            "b",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}]}),
        ),
    ]);
    let e = flow(&s, pod("prod", "db"), pod("prod", "web"), 81, Protocol::Tcp);
    assert_eq!(
        e.ingress,
        SideVerdict::Allowed {
            policy: "prod/a".into(),
            rule: 1
        }
    );
    assert!(tcp(&s, pod("prod", "client"), pod("prod", "web"), 80));
    assert!(!tcp(&s, pod("prod", "client"), pod("prod", "web"), 81));
    assert!(!tcp(&s, pod("prod", "db"), pod("prod", "web"), 80));
    let e = flow(&s, ip(EXTERNAL), pod("prod", "web"), 22, Protocol::Tcp);
    assert_eq!(
        e.ingress,
        SideVerdict::Allowed {
            policy: "prod/b".into(),
            rule: 0
        }
    );
    let e = flow(&s, ip("203.0.113.1"), pod("prod", "web"), 80, Protocol::Tcp);
    assert_eq!(
        e.ingress,
        SideVerdict::Denied {
            policies: vec!["prod/a".into(), "prod/b".into()]
        }
    );
}

#[test]
fn ip_block_except_is_carved_out() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "198.51.100.0/24",
                                                   "except": ["198.51.100.0/28", "198.51.100.128/25"]}}]}]}),
    )]);
    assert!(tcp(&s, ip("198.51.100.20"), pod("prod", "web"), 80));
    assert!(!tcp(&s, ip("198.51.100.7"), pod("prod", "web"), 80));
    assert!(!tcp(&s, ip("198.51.100.200"), pod("prod", "web"), 80));
    assert!(!tcp(&s, ip("203.0.113.1"), pod("prod", "web"), 80));
}

#[test]
fn ip_block_zero_prefix_and_except_cover_the_internet_minus_a_range() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}),
    )]);
    assert!(tcp(&s, pod("prod", "web"), ip("203.0.113.9"), 443));
    assert!(tcp(&s, pod("prod", "web"), ip("192.0.2.1"), 443));
    // Pod IPs are inside the except: blocked.
    assert!(!tcp(&s, pod("prod", "web"), pod("prod", "db"), 5432));
    let c = compile(&s);
    let set = c
        .ruleset
        .sets
        .values()
        .find(|s| s.kind == SetKind::HashNet)
        .expect("block set");
    let text: Vec<String> = set
        .entries
        .iter()
        .map(crate::render::ipset::entry_text)
        .collect();
    assert_eq!(text, ["0.0.0.0/1", "10.0.0.0/8 nomatch", "128.0.0.0/1"]);
}

#[test]
fn ports_numeric_range_protocols() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"ports": [{"port": 80},
                                      {"port": 8000, "endPort": 8010, "protocol": "TCP"},
                                      {"protocol": "UDP"},
                                      {"port": 3868, "protocol": "SCTP"}]}]}),
    )]);
    let c = ip(EXTERNAL);
    let w = || pod("prod", "web");
    assert!(flow(&s, c.clone(), w(), 80, Protocol::Tcp).allowed);
    assert!(
        !flow(&s, c.clone(), w(), 80, Protocol::Sctp).allowed,
        "default protocol is TCP"
    );
    assert!(flow(&s, c.clone(), w(), 8000, Protocol::Tcp).allowed);
    assert!(flow(&s, c.clone(), w(), 8010, Protocol::Tcp).allowed);
    assert!(!flow(&s, c.clone(), w(), 8011, Protocol::Tcp).allowed);
    assert!(
        flow(&s, c.clone(), w(), 53, Protocol::Udp).allowed,
        "UDP without port: all UDP ports"
    );
    assert!(flow(&s, c.clone(), w(), 65535, Protocol::Udp).allowed);
    assert!(flow(&s, c.clone(), w(), 3868, Protocol::Sctp).allowed);
    assert!(!flow(&s, c.clone(), w(), 3869, Protocol::Sctp).allowed);
    assert!(!flow(&s, c, w(), 443, Protocol::Tcp).allowed);
}

#[test]
fn ports_absent_or_empty_mean_all_ports_and_protocols() {
    for rule in [json!({}), json!({"ports": []})] {
        let s = cluster(vec![mk_policy(
            "prod",
            "p",
            json!({"podSelector": {}, "ingress": [rule]}),
        )]);
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert!(flow(&s, ip(EXTERNAL), pod("prod", "web"), 4242, p).allowed);
        }
    }
}

#[test]
fn ingress_named_port_resolves_against_each_selected_pod() {
    let mut s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
    )]);
    for p in s.pods.iter_mut() {
        match Some(&*p.name) {
            Some("web") => *p = with_port(p.clone(), "http", 8080, "TCP"),
            Some("db") => *p = with_port(p.clone(), "http", 9090, "TCP"),
            _ => {}
        }
    }
    assert!(tcp(&s, ip(EXTERNAL), pod("prod", "web"), 8080));
    assert!(!tcp(&s, ip(EXTERNAL), pod("prod", "web"), 9090));
    assert!(tcp(&s, ip(EXTERNAL), pod("prod", "db"), 9090));
    assert!(!tcp(&s, ip(EXTERNAL), pod("prod", "db"), 8080));
    assert!(
        !tcp(&s, ip(EXTERNAL), pod("prod", "client"), 8080),
        "client has no port named http"
    );
    // The chain names the port by set, not by number: one chain for all pods.
    let c = compile(&s);
    let chain = c
        .ruleset
        .v4
        .chains
        .get(&naming::policy_chain("prod", "p", Direction::Ingress))
        .expect("chain");
    assert_eq!(chain.rules.len(), 2);
}

#[test]
fn egress_named_port_resolves_against_each_peer_pod() {
    let mut s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "metrics", "protocol": "UDP"}]}]}),
    )]);
    for p in s.pods.iter_mut() {
        match Some(&*p.name) {
            Some("web") => *p = with_port(p.clone(), "metrics", 8080, "UDP"),
            Some("db") => *p = with_port(p.clone(), "metrics", 9090, "UDP"),
            _ => {}
        }
    }
    let c = || pod("prod", "client");
    assert!(flow(&s, c(), pod("prod", "web"), 8080, Protocol::Udp).allowed);
    assert!(!flow(&s, c(), pod("prod", "web"), 9090, Protocol::Udp).allowed);
    assert!(flow(&s, c(), pod("prod", "db"), 9090, Protocol::Udp).allowed);
    assert!(
        !flow(&s, c(), pod("prod", "db"), 9090, Protocol::Tcp).allowed,
        "protocol is part of the name"
    );
    assert!(!flow(&s, c(), ip(EXTERNAL), 8080, Protocol::Udp).allowed);
}

#[test]
fn egress_types_default_from_the_egress_section() {
    // An egress section makes the policy Ingress+Egress.
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
    )]);
    assert!(tcp(&s, pod("prod", "web"), pod("prod", "db"), 5432));
    assert!(!tcp(&s, pod("prod", "web"), ip(EXTERNAL), 443));
    assert!(
        !tcp(&s, pod("prod", "client"), pod("prod", "web"), 80),
        "ingress isolated too"
    );
    // An empty egress section does not.
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{}], "egress": []}),
    )]);
    assert!(tcp(&s, pod("prod", "web"), ip(EXTERNAL), 443));
    // Egress only: ingress stays open.
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )]);
    assert!(!tcp(&s, pod("prod", "web"), ip(EXTERNAL), 443));
    assert!(tcp(&s, ip(EXTERNAL), pod("prod", "web"), 80));
}

#[test]
fn pod_to_pod_needs_egress_of_the_source_and_ingress_of_the_destination() {
    let allow_egress = mk_policy(
        "prod",
        "client-out",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let web_in = mk_policy(
        "prod",
        "web-in",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
    );
    let s = cluster(vec![allow_egress.clone(), web_in]);
    let e = flow(
        &s,
        pod("prod", "client"),
        pod("prod", "web"),
        80,
        Protocol::Tcp,
    );
    assert_eq!(
        e.egress,
        SideVerdict::Allowed {
            policy: "prod/client-out".into(),
            rule: 0
        }
    );
    assert_eq!(
        e.ingress,
        SideVerdict::Denied {
            policies: vec!["prod/web-in".into()]
        }
    );
    assert!(!e.allowed);
    let s = cluster(vec![allow_egress]);
    assert!(tcp(&s, pod("prod", "client"), pod("prod", "web"), 80));
    assert!(!tcp(&s, pod("prod", "client"), pod("prod", "db"), 80));
}

#[test]
fn a_remote_endpoint_is_not_decided_on_this_node() {
    let mut s = cluster(vec![mk_policy("prod", "p", json!({"podSelector": {}}))]);
    s.local.retain(|w| w.pod != "web");
    let e = flow(
        &s,
        pod("prod", "client"),
        pod("prod", "web"),
        80,
        Protocol::Tcp,
    );
    assert!(matches!(e.ingress, SideVerdict::NotEvaluated { .. }), "{e}");
    assert_eq!(e.egress, SideVerdict::NotIsolated);
    assert!(e.allowed);
    // And the local pod is still protected from the remote one.
    assert!(!tcp(&s, pod("prod", "web"), pod("prod", "db"), 80));
}

#[test]
fn host_network_finished_and_addressless_pods_never_match_selectors() {
    let mut s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )]);
    s.pods.push(host_network(mk_pod(
        "prod",
        "node-agent",
        &[("app", "agent")],
        "192.0.2.10",
    )));
    s.pods.push(with_phase(
        mk_pod("prod", "job", &[("app", "job")], "10.244.0.99"),
        "Succeeded",
    ));
    s.pods.push(with_phase(
        mk_pod("prod", "crashed", &[("app", "job")], "10.244.0.98"),
        "Failed",
    ));
    s.pods.push(mk_pod("prod", "pending", &[("app", "x")], ""));
    let c = compile(&s);
    let members: BTreeSet<String> = c
        .ruleset
        .sets
        .values()
        .flat_map(|s| s.entries.iter().map(crate::render::ipset::entry_text))
        .collect();
    for gone in ["192.0.2.10", "10.244.0.99", "10.244.0.98"] {
        assert!(!members.contains(gone), "{gone} in {members:?}");
    }
    assert!(members.contains(DEV_CLIENT));
    assert!(!tcp(&s, ip("192.0.2.10"), pod("prod", "web"), 80));
    let e = flow(
        &s,
        pod("prod", "node-agent"),
        pod("prod", "web"),
        80,
        Protocol::Tcp,
    );
    assert!(!e.allowed);
    assert!(matches!(e.egress, SideVerdict::NotEvaluated { .. }));
}

#[test]
fn a_policy_selecting_no_local_pod_adds_no_chain_and_no_set() {
    let s = cluster(vec![mk_policy(
        "prod",
        "nobody",
        json!({"podSelector": {"matchLabels": {"app": "nothing"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )]);
    let c = compile(&s);
    assert!(c.ruleset.sets.is_empty());
    assert!(!c
        .ruleset
        .v4
        .chains
        .keys()
        .any(|k| k.starts_with("TORT-PI-")));
    assert_eq!(
        compile(&cluster(vec![])).ruleset.v4.chains.len(),
        c.ruleset.v4.chains.len()
    );
}

#[test]
fn identical_peers_share_one_set() {
    let peer = json!({"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]});
    let s = cluster(vec![
        mk_policy(
            "prod",
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [peer.clone()]}),
        ),
        mk_policy(
            "prod",
            "b",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [peer]}),
        ),
    ]);
    let c = compile(&s);
    // One set per family for the shared selector.
    assert_eq!(c.ruleset.sets.len(), 2, "{:?}", c.ruleset.sets.keys());
}

#[test]
fn namespace_relabelled_changes_only_set_members() {
    let policy = mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}),
    );
    let mut s = cluster(vec![policy]);
    assert!(!tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
    let before = compile(&s);
    s.namespaces[1] = mk_ns("dev", &[("env", "dev"), ("team", "a")]);
    assert!(tcp(&s, pod("dev", "client"), pod("prod", "web"), 80));
    let after = compile(&s);
    let u = diff(Some(&before.ruleset), &after.ruleset);
    assert_eq!(u.iptables_v4, None);
    assert_eq!(u.iptables_v6, None);
    assert!(u.ipset.contains("add tort-p4-"), "{}", u.ipset);
    assert!(u.ipset.contains(DEV_CLIENT));
}

#[test]
fn pod_relabelled_or_added_touches_only_ipsets() {
    let policy = mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}]}),
    );
    let mut s = cluster(vec![policy]);
    s.pods[0] = with_port(s.pods[0].clone(), "http", 8080, "TCP");
    let before = compile(&s);
    // db becomes a client; a new remote client appears.
    s.pods[1] = mk_pod("prod", "db", &[("app", "client")], DB);
    s.pods.push(mk_pod(
        "prod",
        "client-2",
        &[("app", "client")],
        "10.244.7.7",
    ));
    let after = compile(&s);
    let u = diff(Some(&before.ruleset), &after.ruleset);
    assert_eq!(
        (u.iptables_v4.as_deref(), u.iptables_v6.as_deref()),
        (None, None)
    );
    assert_eq!(
        u.ipset,
        format!(
            "add {0} {DB} -exist\nadd {0} 10.244.7.7 -exist\n",
            SetSpec::Pods {
                scope: NsScope::Own("prod".into()),
                pods: Selector::parse(
                    &serde_json::from_value(json!({"matchLabels": {"app": "client"}}))
                        .expect("selector"),
                    "x"
                )
                .expect("valid")
            }
            .name(Family::V4)
        )
    );
    assert!(u.stale_sets.is_empty());
    assert!(tcp(&s, pod("prod", "db"), pod("prod", "web"), 8080));
    // Nothing changed: nothing to write.
    assert!(diff(Some(&after.ruleset), &compile(&s).ruleset).is_empty());
}

#[test]
fn a_policy_removed_rewrites_chains_and_retires_its_sets() {
    let p = mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}]}),
    );
    let before = compile(&cluster(vec![p]));
    let after = compile(&cluster(vec![]));
    let u = diff(Some(&before.ruleset), &after.ruleset);
    let chain = naming::policy_chain("prod", "p", Direction::Ingress);
    let v6 = u.iptables_v6.expect("v6 changed");
    assert!(v6.contains(&format!("-X {chain}\n")), "{v6}");
    assert_eq!(u.stale_sets.len(), 1);
    assert!(u.stale_sets[0].starts_with("tort-n6-"));
}

#[test]
fn unknown_workload_interfaces_fail_closed() {
    let mut s = cluster(vec![]);
    s.unknown_interfaces.push("tortdeadbeef000".into());
    // A veth for a pod the snapshot does not know.
    s.local.push(mk_local("prod", "ghost"));
    let c = compile(&s);
    let dispatch: Vec<&Chain> = c
        .ruleset
        .v4
        .chains
        .iter()
        .filter(|(n, _)| n.starts_with(FROM_WORKLOAD_CHAIN))
        .map(|(_, c)| c)
        .collect();
    for chain in &dispatch {
        let last = chain.rules.last().expect("rules");
        assert_eq!(
            last.action,
            Action::Drop,
            "every dispatch level ends in DROP"
        );
    }
    let dropped: Vec<String> = dispatch
        .iter()
        .flat_map(|c| c.rules.iter())
        .filter(|r| r.action == Action::Drop)
        .flat_map(|r| r.matches.iter())
        .filter_map(|m| match m {
            Match::InIface(Iface::Exact(i)) => Some(i.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    let e = flow(
        &s,
        pod("prod", "ghost"),
        pod("prod", "web"),
        80,
        Protocol::Tcp,
    );
    assert!(!e.allowed);
}

#[test]
fn ipv6_pods_and_blocks_land_in_the_v6_ruleset() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}},
                                     {"ipBlock": {"cidr": "203.0.113.0/24"}},
                                     {"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )]);
    assert!(tcp(&s, ip("2001:db8::5"), pod("prod", "web"), 80));
    assert!(!tcp(&s, ip("2001:db8:1::5"), pod("prod", "web"), 80));
    assert!(tcp(&s, ip("203.0.113.5"), pod("prod", "web"), 80));
    // client has both families; web too: v4 is preferred, v6 works as well.
    assert!(tcp(&s, pod("prod", "client"), pod("prod", "web"), 80));
    let c = compile(&s);
    let v6 = crate::render::iptables_restore(&c.ruleset, Family::V6);
    let v4 = crate::render::iptables_restore(&c.ruleset, Family::V4);
    assert!(v6.contains("tort-n6-") && !v6.contains("tort-n4-"));
    assert!(v4.contains("tort-n4-") && !v4.contains("tort-n6-"));
    let p6: Vec<&IpSet> = c
        .ruleset
        .sets
        .values()
        .filter(|s| s.family == Family::V6 && s.kind == SetKind::HashIp)
        .collect();
    assert_eq!(p6.len(), 1);
    assert!(p6[0]
        .entries
        .contains(&SetEntry::Ip("fd00::12".parse().expect("ip"))));
    assert!(tcp(&s, ip("fd00::12"), pod("prod", "web"), 80));
    assert!(!tcp(&s, ip("fd00::99"), pod("prod", "web"), 80));
}

#[test]
fn invalid_policies_are_rejected_whole_with_object_and_field() {
    let bad = |name: &str, spec: serde_json::Value| mk_policy("prod", name, spec);
    let cases = vec![
        (
            bad("cidr", json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "10.0.0.300/8"}}]}]})),
            "NetworkPolicy prod/cidr: spec.ingress[0].from[1].ipBlock.cidr: \"10.0.0.300/8\" is not a CIDR",
        ),
        (
            bad("except", json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]})),
            "NetworkPolicy prod/except: spec.egress[0].to[0].ipBlock.except[0]: \"11.0.0.0/16\" must be a strict subset of cidr \"10.0.0.0/8\"",
        ),
        (
            bad("op", json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}})),
            "NetworkPolicy prod/op: spec.podSelector.matchExpressions[0].operator: \"Has\" is not a valid operator (In, NotIn, Exists, DoesNotExist)",
        ),
        (
            bad("in", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}]}]})),
            "NetworkPolicy prod/in: spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values: operator In needs at least one value",
        ),
        (
            bad("exists", json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}})),
            "NetworkPolicy prod/exists: spec.podSelector.matchExpressions[0].values: operator Exists takes no values",
        ),
        (
            bad("label", json!({"podSelector": {"matchLabels": {"app": "no spaces"}}})),
            "NetworkPolicy prod/label: spec.podSelector.matchLabels: value \"no spaces\" of key \"app\": must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ),
        (
            bad("end", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]})),
            "NetworkPolicy prod/end: spec.ingress[0].ports[0].endPort: 80 must be greater than or equal to port 90",
        ),
        (
            bad("endnamed", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]})),
            "NetworkPolicy prod/endnamed: spec.ingress[0].ports[0].endPort: may not be set when port is a named port",
        ),
        (
            bad("proto", json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]})),
            "NetworkPolicy prod/proto: spec.ingress[0].ports[0].protocol: \"ICMP\" is not one of TCP, UDP, SCTP",
        ),
        (
            bad("port", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]})),
            "NetworkPolicy prod/port: spec.ingress[0].ports[0].port: 70000 is not between 1 and 65535",
        ),
        (
            bad("types", json!({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]})),
            "NetworkPolicy prod/types: spec.policyTypes[1]: \"Sideways\" is not Ingress or Egress",
        ),
        (
            bad("mixed", json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]}]})),
            "NetworkPolicy prod/mixed: spec.ingress[0].from[0]: ipBlock may not be combined with podSelector or namespaceSelector in one peer",
        ),
        (
            bad("v6except", json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/8", "except": ["10.0.0.0/8"]}}]}]})),
            "NetworkPolicy prod/v6except: spec.ingress[0].from[0].ipBlock.except[0]: \"10.0.0.0/8\" must be a strict subset of cidr \"fd00::/8\"",
        ),
    ];
    let mut policies: Vec<NetworkPolicy> = cases.iter().map(|(p, _)| p.clone()).collect();
    // A good policy next to the bad ones still compiles and isolates.
    policies.push(mk_policy(
        "prod",
        "good",
        json!({"podSelector": {"matchLabels": {"app": "web"}}}),
    ));
    let s = cluster(policies);
    let c = compile(&s);
    let got: BTreeSet<String> = c.errors.iter().map(|e| e.to_string()).collect();
    let want: BTreeSet<String> = cases.iter().map(|(_, m)| m.to_string()).collect();
    assert_eq!(got, want);
    assert!(
        !explain(
            &c,
            &s,
            &Flow {
                from: pod("prod", "client"),
                to: pod("prod", "web"),
                port: 80,
                protocol: Protocol::Tcp
            }
        )
        .allowed
    );
    // The bad policies isolate nothing: db is only selected by bad ones.
    assert!(
        explain(
            &c,
            &s,
            &Flow {
                from: pod("prod", "client"),
                to: pod("prod", "db"),
                port: 80,
                protocol: Protocol::Tcp
            }
        )
        .allowed
    );
}

#[test]
fn compile_is_deterministic_whatever_the_input_order() {
    let policies = vec![
        mk_policy(
            "prod",
            "a",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        ),
        mk_policy(
            "dev",
            "b",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}]}]}),
        ),
    ];
    let a = cluster(policies.clone());
    let mut b = cluster(policies.into_iter().rev().collect());
    b.pods.reverse();
    b.local.reverse();
    b.namespaces.reverse();
    assert_eq!(compile(&a), compile(&b));
}

#[test]
fn names_in_the_ruleset_fit_the_kernel_limits() {
    let long = "n".repeat(63);
    let mut s = cluster(vec![]);
    s.namespaces.push(mk_ns(&long, &[]));
    s.pods
        .push(mk_pod(&long, &"p".repeat(253), &[("a", "b")], "10.244.9.9"));
    s.local.push(mk_local(&long, &"p".repeat(253)));
    s.policies.push(mk_policy(
        &long,
        &"x".repeat(253),
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    ));
    let c = compile(&s);
    assert!(c.errors.is_empty());
    for f in Family::ALL {
        for name in c.ruleset.table(f).chains.keys() {
            assert!(name.len() <= naming::MAX_CHAIN_LEN, "{name}");
        }
    }
    for name in c.ruleset.sets.keys() {
        assert!(
            naming::temp_set_name(name).len() <= naming::MAX_SET_LEN,
            "{name}"
        );
    }
}

mod properties {
    //! Whatever the policies say, the compiler neither panics nor emits a
    //! ruleset that references a chain or set it does not define.
    use super::*;
    use proptest::prelude::*;

    fn selector() -> impl Strategy<Value = serde_json::Value> {
        let labels = proptest::collection::btree_map(
            prop_oneof![Just("app"), Just("tier"), Just("bad key!")],
            prop_oneof![Just("web"), Just("db"), Just("client"), Just("")],
            0..2,
        );
        let expr = (
            prop_oneof![Just("app"), Just("env")],
            prop_oneof![
                Just("In"),
                Just("NotIn"),
                Just("Exists"),
                Just("DoesNotExist"),
                Just("Near")
            ],
            proptest::option::of(proptest::collection::vec(
                prop_oneof![Just("web"), Just("prod"), Just("dev")],
                0..3,
            )),
        )
            .prop_map(|(k, op, vs)| json!({"key": k, "operator": op, "values": vs}));
        (labels, proptest::collection::vec(expr, 0..2))
            .prop_map(|(l, e)| json!({"matchLabels": l, "matchExpressions": e}))
    }

    fn peer() -> impl Strategy<Value = serde_json::Value> {
        let cidr = prop_oneof![
            Just("198.51.100.0/24"),
            Just("0.0.0.0/0"),
            Just("10.244.0.0/16"),
            Just("fd00::/8"),
            Just("::/0"),
            Just("10.0.0.300/8"),
            Just("10.0.0.1")
        ];
        let except = proptest::collection::vec(
            prop_oneof![
                Just("198.51.100.0/28"),
                Just("10.244.0.10/32"),
                Just("fd00::10/128"),
                Just("11.0.0.0/8")
            ],
            0..2,
        );
        prop_oneof![
            selector().prop_map(|s| json!({"podSelector": s})),
            selector().prop_map(|s| json!({"namespaceSelector": s})),
            (selector(), selector())
                .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
            (cidr, except).prop_map(|(c, e)| json!({"ipBlock": {"cidr": c, "except": e}})),
            Just(json!({})),
        ]
    }

    fn port() -> impl Strategy<Value = serde_json::Value> {
        let p = prop_oneof![
            (0i64..70000).prop_map(|n| json!(n)),
            Just(json!("http")),
            Just(json!("Bad Name")),
            Just(json!(null)),
        ];
        let proto = prop_oneof![
            Just(json!("TCP")),
            Just(json!("UDP")),
            Just(json!("SCTP")),
            Just(json!("ICMP")),
            Just(json!(null))
        ];
        let end = prop_oneof![Just(json!(null)), (0i64..70000).prop_map(|n| json!(n))];
        (p, proto, end)
            .prop_map(|(p, proto, end)| json!({"port": p, "protocol": proto, "endPort": end}))
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

    fn spec() -> impl Strategy<Value = serde_json::Value> {
        (
            selector(),
            proptest::option::of(proptest::collection::vec(rule("from"), 0..3)),
            proptest::option::of(proptest::collection::vec(rule("to"), 0..3)),
            proptest::option::of(proptest::collection::vec(
                prop_oneof![Just("Ingress"), Just("Egress")],
                0..3,
            )),
        )
            .prop_map(|(sel, ing, eg, types)| {
                let mut s = serde_json::Map::new();
                s.insert("podSelector".into(), sel);
                if let Some(i) = ing {
                    s.insert("ingress".into(), json!(i));
                }
                if let Some(e) = eg {
                    s.insert("egress".into(), json!(e));
                }
                if let Some(t) = types {
                    s.insert("policyTypes".into(), json!(t));
                }
                serde_json::Value::Object(s)
            })
    }

    fn references_resolve(rs: &Ruleset) {
        for f in Family::ALL {
            let t = rs.table(f);
            for (name, chain) in &t.chains {
                assert!(name.len() <= naming::MAX_CHAIN_LEN);
                for r in &chain.rules {
                    if let Action::Jump(c) | Action::Goto(c) = &r.action {
                        assert!(t.chains.contains_key(c), "{name} jumps to missing {c}");
                    }
                    for m in &r.matches {
                        if let Match::Set { set, .. } | Match::DstIpPortSet { set } = m {
                            let s = rs
                                .sets
                                .get(set)
                                .unwrap_or_else(|| panic!("{name} uses missing set {set}"));
                            assert_eq!(s.family, f, "{set} used in the wrong family");
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn compile_render_explain_never_panic(specs in proptest::collection::vec(spec(), 1..4), port in 1u16..65535) {
            let policies = specs
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let obj = json!({"metadata": {"namespace": "prod", "name": format!("p{i}")}, "spec": s});
                    serde_json::from_value::<NetworkPolicy>(obj).ok()
                })
                .collect();
            let s = cluster(policies);
            let c = compile(&s);
            references_resolve(&c.ruleset);
            for f in Family::ALL {
                let _ = crate::render::iptables_restore(&c.ruleset, f);
                let _ = crate::render::ipset_restore(&c.ruleset, f);
            }
            prop_assert!(diff(Some(&c.ruleset), &c.ruleset).is_empty());
            for (from, to) in [
                (pod("prod", "client"), pod("prod", "web")),
                (ip(EXTERNAL), pod("prod", "db")),
                (pod("prod", "web"), ip("fd00::99")),
                (pod("dev", "client"), pod("prod", "client")),
            ] {
                for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                    let _ = explain(&c, &s, &Flow { from: from.clone(), to: to.clone(), port, protocol });
                }
            }
        }
    }
}

#[test]
fn dispatch_fans_out_by_interface_digit_and_a_new_pod_touches_one_bucket() {
    let mut s = cluster(vec![mk_policy("prod", "p", json!({"podSelector": {}}))]);
    let before = compile(&s);
    let top = before
        .ruleset
        .v4
        .chains
        .get(FROM_WORKLOAD_CHAIN)
        .expect("top");
    assert!(top.rules.len() <= 17);
    // A new local pod in a bucket that already exists.
    let taken: BTreeSet<char> = s
        .local
        .iter()
        .filter_map(|w| bucket(&w.interface))
        .collect();
    let name = (0..1000)
        .map(|i| format!("new-{i}"))
        .find(|n| {
            bucket(&naming::host_interface_name("dev", n)).is_some_and(|b| taken.contains(&b))
        })
        .expect("some name lands in a used bucket");
    s.pods
        .push(mk_pod("dev", &name, &[("app", "x")], "10.244.1.50"));
    s.local.push(mk_local("dev", &name));
    let after = compile(&s);
    let u = diff(Some(&before.ruleset), &after.ruleset);
    let b = bucket(&naming::host_interface_name("dev", &name)).expect("bucket");
    let mut want = vec![
        format!("{FROM_WORKLOAD_CHAIN}-{b}"),
        format!("{TO_WORKLOAD_CHAIN}-{b}"),
        naming::workload_chain("dev", &name, Direction::Ingress),
        naming::workload_chain("dev", &name, Direction::Egress),
    ];
    want.sort();
    assert_eq!(
        u.touched_chains(),
        want,
        "only the pod's own chains and its bucket"
    );
    assert!(
        !tcp(&s, pod("dev", &name), pod("prod", "web"), 80),
        "web is isolated by prod/p"
    );
    assert!(
        tcp(&s, pod("prod", "web"), pod("dev", &name), 80),
        "the new pod is not"
    );
}

#[test]
fn a_workload_interface_without_the_prefix_is_reported() {
    let mut s = cluster(vec![]);
    for w in s.local.iter_mut().filter(|w| w.pod == "db") {
        w.interface = "veth1234".into();
    }
    let c = compile(&s);
    assert_eq!(c.errors.len(), 1);
    assert_eq!(
        c.errors[0].to_string(),
        "Pod prod/db: interface: host interface \"veth1234\" does not start with \"tort\"; its traffic bypasses policy"
    );
}

#[test]
fn a_pod_without_an_address_contributes_nothing_but_is_still_protected() {
    let mut s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )]);
    s.pods
        .push(mk_pod("prod", "pending", &[("app", "web")], ""));
    s.local.push(mk_local("prod", "pending"));
    let c = compile(&s);
    // Its workload chains exist (the veth may carry traffic before the
    // status catches up), and the peer set holds only the addressed pods.
    assert!(c.ruleset.v4.chains.contains_key(&naming::workload_chain(
        "prod",
        "pending",
        Direction::Ingress
    )));
    let set = c
        .ruleset
        .sets
        .values()
        .find(|s| s.family == Family::V4 && s.kind == SetKind::HashIp)
        .expect("peer set");
    assert_eq!(set.entries.len(), 3, "web, db, client: {:?}", set.entries);
    let e = flow(
        &s,
        pod("prod", "pending"),
        pod("prod", "web"),
        80,
        Protocol::Tcp,
    );
    assert!(!e.allowed);
    assert!(matches!(e.egress, SideVerdict::Dropped { .. }), "{e}");
}

#[test]
fn an_except_equal_to_half_of_a_zero_prefix_leaves_only_the_other_half() {
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["128.0.0.0/1"]}}]}]}),
    )]);
    let c = compile(&s);
    let set = c
        .ruleset
        .sets
        .values()
        .find(|s| s.kind == SetKind::HashNet)
        .expect("block set");
    let text: Vec<String> = set
        .entries
        .iter()
        .map(crate::render::ipset::entry_text)
        .collect();
    assert_eq!(text, ["0.0.0.0/1", "128.0.0.0/1 nomatch"]);
    assert!(tcp(&s, pod("prod", "web"), ip("10.0.0.1"), 80));
    assert!(!tcp(&s, pod("prod", "web"), ip("192.0.2.1"), 80));
}

#[test]
fn named_ports_of_sidecars_count_but_plain_init_containers_do_not() {
    use k8s_openapi::api::core::v1::{Container, ContainerPort};
    let port = |name: &str, n: i32| ContainerPort {
        name: Some(name.into()),
        container_port: n,
        ..Default::default()
    };
    let mut s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"ports": [{"port": "proxy"}, {"port": "setup"}]}]}),
    )]);
    // The API pod's init containers, through the same slimming the
    // datastores use.
    let mut api = crate::model::Pod::default();
    let spec = api.spec.get_or_insert_with(Default::default);
    spec.init_containers = Some(vec![
        Container {
            name: "mesh".into(),
            restart_policy: Some("Always".into()),
            ports: Some(vec![port("proxy", 15001)]),
            ..Default::default()
        },
        Container {
            name: "init".into(),
            ports: Some(vec![port("setup", 7000)]),
            ..Default::default()
        },
    ]);
    let ports = crate::model::SlimPod::from_pod(&api).named_ports;
    std::sync::Arc::make_mut(&mut s.pods[0])
        .named_ports
        .extend(ports);
    assert!(tcp(&s, ip(EXTERNAL), pod("prod", "web"), 15001));
    assert!(!tcp(&s, ip(EXTERNAL), pod("prod", "web"), 7000));
}

#[test]
fn a_policy_added_creates_its_sets_by_swap_and_writes_only_affected_chains() {
    let before = compile(&cluster(vec![]));
    let s = cluster(vec![mk_policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]);
    let after = compile(&s);
    let u = diff(Some(&before.ruleset), &after.ruleset);
    let mut want = vec![
        naming::policy_chain("prod", "p", Direction::Ingress),
        naming::workload_chain("prod", "db", Direction::Ingress),
    ];
    want.sort();
    assert_eq!(u.touched_chains(), want);
    // Both families' peer sets, each filled aside and swapped in.
    assert_eq!(u.ipset.matches("\nswap ").count(), 2, "{}", u.ipset);
    assert!(u.ipset.contains("add tort-tmp-p4-"));
    assert!(u.stale_sets.is_empty());
}

#[test]
fn stats_count_what_this_node_enforces() {
    let mut s = cluster(vec![
        mk_policy(
            "prod",
            "web",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        ),
        mk_policy(
            "prod",
            "nobody",
            json!({"podSelector": {"matchLabels": {"app": "none"}}}),
        ),
        mk_policy(
            "prod",
            "bad",
            json!({"podSelector": {}, "policyTypes": ["Up"]}),
        ),
    ]);
    s.unknown_interfaces.push("tortffffffffff0".into());
    let st = compile(&s).stats();
    assert_eq!((st.policies, st.workloads, st.errors), (1, 4, 1));
    assert_eq!(st.sets, 2);
    assert_eq!(st.set_entries, 3 + 2, "prod pods: 3 v4 + 2 v6");
}
