//! Policy compiler at cluster scale: 110 local workloads, 5,000 remote pods
//! in 100 namespaces, 1,000 policies.
//!
//! - `full`: compile + render everything (what a restart applies).
//! - `update`: one remote pod relabelled and one pod added: compile + diff
//!   (what a pod event applies); asserts the update touches only ipsets.
//!
//! Run: `cargo bench -p tortie-policy --bench compile`. Payload sizes are
//! printed once on stderr.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tortie_policy::model::Snapshot;
use tortie_policy::testing::*;
use tortie_policy::{compile, diff, ipset_restore, iptables_restore, Family};

const NAMESPACES: usize = 100;
const REMOTE_PER_NS: usize = 50;
const LOCAL: usize = 110;
const POLICIES_PER_NS: usize = 10;

fn ns_name(i: usize) -> String {
    format!("ns-{i:02}")
}

fn remote_pod(ns: usize, j: usize, app: &str) -> std::sync::Arc<tortie_policy::SlimPod> {
    let n = ns * REMOTE_PER_NS + j;
    let ip = format!("10.244.{}.{},fd00::{:x}", n / 250, n % 250 + 1, n + 1);
    let tier = format!("t{}", j % 3);
    let pod = mk_pod(
        &ns_name(ns),
        &format!("remote-{j}"),
        &[("app", app), ("tier", &tier)],
        &ip,
    );
    with_port(
        pod,
        "http",
        if j.is_multiple_of(2) { 8080 } else { 9090 },
        "TCP",
    )
}

fn cluster() -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..NAMESPACES {
        let team = format!("team{}", i % 10);
        let env = if i.is_multiple_of(2) { "prod" } else { "dev" };
        s.namespaces
            .push(mk_ns(&ns_name(i), &[("team", &team), ("env", env)]));
        for j in 0..REMOTE_PER_NS {
            s.pods.push(remote_pod(i, j, &format!("a{}", j % 10)));
        }
    }
    for k in 0..LOCAL {
        let ns = ns_name(k % 11);
        let name = format!("local-{k}");
        let app = format!("a{}", k % 10);
        let ip = format!("10.245.{}.{},fd01::{:x}", k / 250, k % 250 + 1, k + 1);
        s.pods.push(with_port(
            mk_pod(&ns, &name, &[("app", &app), ("tier", "t0")], &ip),
            "http",
            8080,
            "TCP",
        ));
        s.local.push(mk_local(&ns, &name));
    }
    for i in 0..NAMESPACES {
        let ns = ns_name(i);
        for k in 0..POLICIES_PER_NS {
            let app = format!("a{k}");
            let next = format!("a{}", (k + 1) % 10);
            let team = format!("team{}", (i + k) % 10);
            let spec = match k % 5 {
                0 => json!({"podSelector": {"matchLabels": {"app": app}},
                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": next}}}],
                                         "ports": [{"port": 80}, {"port": "http"}]}]}),
                1 => json!({"podSelector": {"matchLabels": {"app": app}},
                            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": team}},
                                                   "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["t1", "t2"]}]}}]}]}),
                2 => {
                    json!({"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Egress"],
                            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]},
                                       {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "192.168.0.0/16"]}}]}]})
                }
                3 => json!({"podSelector": {"matchLabels": {"app": app}},
                            "ingress": [{"from": [{"ipBlock": {"cidr": format!("198.51.{i}.0/24")}},
                                                  {"namespaceSelector": {"matchLabels": {"env": "prod"}}}],
                                         "ports": [{"port": 8000, "endPort": 8100}, {"protocol": "UDP"}]}]}),
                _ => {
                    json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [next]}]},
                            "ingress": [{"from": [{"podSelector": {}}]}],
                            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-00"}}}]}]})
                }
            };
            s.policies.push(mk_policy(&ns, &format!("pol-{k}"), spec));
        }
    }
    s
}

/// One remote pod relabelled (into another selector's sets) and one added.
fn churn(mut s: Snapshot) -> Snapshot {
    if let Some(p) = s.pods.get_mut(7) {
        *p = remote_pod(0, 7, "a1");
    }
    s.pods.push(remote_pod(3, REMOTE_PER_NS, "a2"));
    s
}

fn full_payload(s: &Snapshot) -> usize {
    let c = compile(s);
    Family::ALL
        .iter()
        .map(|f| iptables_restore(&c.ruleset, *f).len() + ipset_restore(&c.ruleset, *f).len())
        .sum()
}

fn bench(c: &mut Criterion) {
    let before = cluster();
    let after = churn(before.clone());
    let old = compile(&before);
    assert!(old.errors.is_empty(), "{:?}", old.errors);
    let new = compile(&after);
    let update = diff(Some(&old.ruleset), &new.ruleset);
    assert!(
        update.iptables_v4.is_none() && update.iptables_v6.is_none(),
        "pod churn must touch only ipsets"
    );
    let chains: usize = Family::ALL
        .iter()
        .map(|f| old.ruleset.table(*f).chains.len())
        .sum();
    eprintln!(
        "policy bench: {} chains, {} sets; full payload {} bytes; update payload {} bytes ({} sets touched, 0 chains)",
        chains,
        old.ruleset.sets.len(),
        full_payload(&before),
        update.ipset.len(),
        update.touched_sets().len(),
    );

    let mut g = c.benchmark_group("policy");
    g.sample_size(20);
    g.bench_function("full_compile", |b| b.iter(|| compile(black_box(&before))));
    g.bench_function("full_compile_and_render", |b| {
        b.iter(|| full_payload(black_box(&before)))
    });
    g.bench_function("update_compile_and_diff", |b| {
        b.iter(|| {
            let new = compile(black_box(&after));
            diff(Some(&old.ruleset), &new.ruleset)
        })
    });
    g.bench_function("diff_only", |b| {
        b.iter(|| diff(Some(black_box(&old.ruleset)), black_box(&new.ruleset)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
