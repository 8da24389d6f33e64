//! Golden tests: the rendered `iptables-restore` and `ipset restore`
//! payloads of a few representative snapshots, byte for byte.
//!
//! Files live in `policy/tests/golden/<case>.{v4,v6}.rules`,
//! `<case>.ipset` (both families), `<case>.errors` and, for update cases,
//! `<case>.update`. After an intended change, re-bless and review the diff:
//!
//! ```text
//! BLESS=1 cargo test -p tortie-policy --test golden
//! git diff policy/tests/golden/
//! ```

use std::path::PathBuf;

use serde_json::json;
use tortie_policy::model::Snapshot;
use tortie_policy::testing::*;
use tortie_policy::{compile, diff, ipset_restore, iptables_restore, Family};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(file: &str, actual: &str) {
    let path = golden_dir().join(file);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    if expected != actual {
        panic!(
            "{} differs from the golden file; if intended, re-bless with BLESS=1\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

fn check_snapshot(case: &str, s: &Snapshot) {
    let c = compile(s);
    check(
        &format!("{case}.v4.rules"),
        &iptables_restore(&c.ruleset, Family::V4),
    );
    check(
        &format!("{case}.v6.rules"),
        &iptables_restore(&c.ruleset, Family::V6),
    );
    let mut sets = ipset_restore(&c.ruleset, Family::V4);
    sets.push_str(&ipset_restore(&c.ruleset, Family::V6));
    check(&format!("{case}.ipset"), &sets);
    let errors: Vec<String> = c.errors.iter().map(|e| format!("{e}\n")).collect();
    check(&format!("{case}.errors"), &errors.concat());
}

/// Two pods, namespace-wide default deny in both directions.
fn default_deny() -> Snapshot {
    snapshot_all_local(
        vec![mk_ns("shop", &[])],
        vec![
            mk_pod("shop", "web-0", &[("app", "web")], "10.244.0.10"),
            mk_pod("shop", "db-0", &[("app", "db")], "10.244.0.11"),
        ],
        vec![mk_policy(
            "shop",
            "default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        )],
    )
}

/// A three-tier app: named ports, DNS egress to another namespace, an
/// ipBlock with except, dual-stack pods, a remote pod, one invalid policy.
fn three_tier() -> Snapshot {
    let mut s = snapshot_all_local(
        vec![
            mk_ns("shop", &[("team", "shop")]),
            mk_ns("kube-system", &[]),
        ],
        vec![
            with_port(
                mk_pod("shop", "web-0", &[("app", "web")], "10.244.0.10,fd00::a"),
                "http",
                8080,
                "TCP",
            ),
            with_port(
                mk_pod("shop", "db-0", &[("app", "db")], "10.244.0.11"),
                "pg",
                5432,
                "TCP",
            ),
            mk_pod(
                "shop",
                "client-0",
                &[("app", "client")],
                "10.244.0.12,fd00::c",
            ),
        ],
        vec![
            mk_policy(
                "shop",
                "web",
                json!({"podSelector": {"matchLabels": {"app": "web"}},
                       "ingress": [
                           {"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                                     {"ipBlock": {"cidr": "198.51.100.0/24", "except": ["198.51.100.128/25"]}},
                                     {"ipBlock": {"cidr": "2001:db8::/32"}}],
                            "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}]}),
            ),
            mk_policy(
                "shop",
                "db",
                json!({"podSelector": {"matchLabels": {"app": "db"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "pg"}]}],
                       "egress": []}),
            ),
            mk_policy(
                "shop",
                "egress-dns",
                json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "client"]}]},
                       "policyTypes": ["Egress"],
                       "egress": [
                           {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]},
                           {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "pg"}]},
                           {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
            ),
            mk_policy(
                "shop",
                "broken",
                json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}]}),
            ),
        ],
    );
    // CoreDNS runs on another node.
    s.pods.push(mk_pod(
        "kube-system",
        "coredns-1",
        &[("k8s-app", "kube-dns")],
        "10.244.5.3,fd00::5:3",
    ));
    s
}

/// Fail closed and the odd ones: an unknown tort interface, a veth whose
/// pod is gone, a host-network pod, SCTP, a finished pod.
fn odd_ones() -> Snapshot {
    let mut s = snapshot_all_local(
        vec![mk_ns("telco", &[("tier", "core")])],
        vec![
            mk_pod("telco", "amf-0", &[("app", "amf")], "10.244.0.20"),
            host_network(mk_pod(
                "telco",
                "node-exporter",
                &[("app", "amf")],
                "192.0.2.10",
            )),
            with_phase(
                mk_pod("telco", "job-1", &[("app", "amf")], "10.244.0.21"),
                "Succeeded",
            ),
        ],
        vec![mk_policy(
            "telco",
            "sctp",
            json!({"podSelector": {"matchLabels": {"app": "amf"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "core"}}}],
                                "ports": [{"port": 38412, "protocol": "SCTP"}]}]}),
        )],
    );
    s.unknown_interfaces.push("tort0123456789a".into());
    s.local.push(mk_local("telco", "gone-0"));
    s
}

#[test]
fn golden_default_deny() {
    check_snapshot("default-deny", &default_deny());
}

#[test]
fn golden_three_tier() {
    check_snapshot("three-tier", &three_tier());
}

#[test]
fn golden_odd_ones() {
    check_snapshot("odd-ones", &odd_ones());
}

/// The update after a remote pod joins and a local one is relabelled so no
/// selector changes which policies isolate it: sets only.
#[test]
fn golden_update_pod_churn() {
    let mut s = three_tier();
    let before = compile(&s);
    s.pods.push(mk_pod(
        "shop",
        "client-1",
        &[("app", "client")],
        "10.244.3.4",
    ));
    s.pods.push(mk_pod(
        "kube-system",
        "coredns-2",
        &[("k8s-app", "kube-dns")],
        "10.244.6.3",
    ));
    let after = compile(&s);
    let u = diff(Some(&before.ruleset), &after.ruleset);
    assert_eq!(
        (u.iptables_v4.as_deref(), u.iptables_v6.as_deref()),
        (None, None)
    );
    check("three-tier-pod-churn.update", &u.ipset);
}

/// The update after a policy is deleted: its chains go (`-X` after the
/// workload chains stop jumping to them) and its sets become stale.
#[test]
fn golden_update_policy_removed() {
    let mut s = three_tier();
    let before = compile(&s);
    s.policies
        .retain(|p| p.metadata.name.as_deref() != Some("web"));
    let after = compile(&s);
    let u = diff(Some(&before.ruleset), &after.ruleset);
    check(
        "three-tier-web-removed.v4.update",
        u.iptables_v4.as_deref().unwrap_or(""),
    );
    check(
        "three-tier-web-removed.v6.update",
        u.iptables_v6.as_deref().unwrap_or(""),
    );
    check(
        "three-tier-web-removed.ipset.update",
        &format!("{}stale: {:?}\n", u.ipset, u.stale_sets),
    );
}
