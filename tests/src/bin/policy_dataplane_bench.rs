//! `policy_dataplane_bench`: what tortie's chains cost per packet and per
//! new connection, measured on real traffic between two pods.
//!
//! ```text
//!  bench/client 10.244.1.10 ──veth── node netns ──veth── bench/server 10.244.1.11
//!                                  (FORWARD: tortie's chains)     netprobe serve-bench 5201
//! ```
//!
//! Scenarios, measured in interleaved rounds (median of 5 reported):
//! 1. no rules at all in the node namespace;
//! 2. tortie's chains, no NetworkPolicy;
//! 3. one policy isolating the server and allowing the client on TCP 5201;
//! 4. 1,000 policies selecting the server (each allowing a different /32
//!    of 10.244.200.0/22 that no pod has) plus the allowing one, sorted last, so a new
//!    connection walks every policy chain before it is accepted;
//! 5. the same with the allowing policy sorted first.
//!
//! Metrics: `rr` µs per 1-byte round trip on one connection (established
//! packets: conntrack accepts them at the top of TORT-FORWARD), `crr` the
//! median µs to connect, do one round trip and close (each SYN walks the
//! policy chains),
//! `stream` bulk Gbit/s. Needs root; run:
//!
//! ```sh
//! cargo build -p tortie-integration --bins --release
//! sudo target/release/policy_dataplane_bench            # iptables-nft
//! sudo BENCH_BACKEND=legacy target/release/policy_dataplane_bench
//! ```
//!
//! Knobs: `BENCH_ROUNDS` (5), `BENCH_RR_COUNT` (20000), `BENCH_CRR_COUNT`
//! (2000), `BENCH_STREAM_SECS` (1).

// A benchmark tool: a panic with its message is the error report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tortie_integration::podnet::{PodDef, PodGrid};
use tortie_integration::{run_with_timeout, wait_for};
use tortie_policy::apply::{Applier, Dataplane, ProcessRunner};
use tortie_policy::backend::Backend;
use tortie_policy::model::{LocalWorkload, Snapshot};
use tortie_policy::naming::host_interface_name;
use tortie_policy::{compile, ipset_restore, iptables_restore, Family};

const PORT: u16 = 5201;

fn main() {
    let exe = std::env::current_exe().unwrap();
    let netprobe: PathBuf = exe.with_file_name("netprobe");
    assert!(
        netprobe.is_file(),
        "{} not found: build it with `cargo build -p tortie-integration --bins`",
        netprobe.display()
    );
    let rr_count: u64 = env_or("BENCH_RR_COUNT", 20_000);
    let crr_count: u64 = env_or("BENCH_CRR_COUNT", 2_000);
    let secs: f64 = env_or("BENCH_STREAM_SECS", 1.0);

    let pods = [("client", ip(10)), ("server", ip(11))];
    let defs: Vec<PodDef> = pods
        .iter()
        .map(|(name, ip)| PodDef {
            namespace: "bench".into(),
            name: name.to_string(),
            ip: *ip,
            iface: host_interface_name("bench", name),
        })
        .collect();
    let grid = PodGrid::build("pbench", &defs, &netprobe).unwrap();
    let server = grid.pod("bench/server").unwrap();
    let client = grid.pod("bench/client").unwrap();
    let np = netprobe.to_string_lossy().into_owned();
    let _srv = server
        .netns()
        .spawn(&np, &["serve-bench", &PORT.to_string()])
        .unwrap();
    let target = format!("{}:{PORT}", ip(11));
    let run = |kind: &str, extra: &[&str]| -> Option<f64> {
        let mut cmd = client.netns().command(&np);
        cmd.args(["bench", kind, &target]).args(extra);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(120)).ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    wait_for("bench server", Duration::from_secs(10), || {
        run("rr", &["--count", "1"])
    })
    .unwrap();

    let backend: Backend = std::env::var("BENCH_BACKEND")
        .unwrap_or_else(|_| "nft".into())
        .parse()
        .unwrap();
    eprintln!("iptables backend: {backend}");
    let mut applier = Applier::new(Dataplane::new(
        Box::new(ProcessRunner::in_netns(grid.node().name())),
        backend,
    ));
    let rr = rr_count.to_string();
    let crr = crr_count.to_string();
    let st = secs.to_string();
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let scenarios: [(&str, Option<Vec<NetworkPolicy>>); 5] = [
        ("no rules in the node namespace", None),
        ("tortie chains, no NetworkPolicy", Some(Vec::new())),
        ("1 policy allows the client", Some(vec![allow_client()])),
        (
            "1,000 policies select the server, allowing one last",
            Some(thousand_policies("zzzz-allow-client")),
        ),
        (
            "1,000 policies select the server, allowing one first",
            Some(thousand_policies("aaaa-allow-client")),
        ),
    ];
    // Rounds interleave the scenarios so a load change on the machine
    // (a parallel build) spreads over all of them instead of skewing one.
    let mut samples: Vec<[Vec<f64>; 3]> = scenarios.iter().map(|_| Default::default()).collect();
    let mut setups = vec![String::from("-"); scenarios.len()];
    for round in 0..rounds {
        for (i, (name, policies)) in scenarios.iter().enumerate() {
            match policies {
                None => applier.remove().unwrap(),
                Some(policies) => {
                    let n = policies.len();
                    let snapshot = snapshot(policies.clone());
                    let t = Instant::now();
                    let compiled = compile(&snapshot);
                    let compile_time = t.elapsed();
                    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
                    let bytes = iptables_restore(&compiled.ruleset, Family::V4).len()
                        + ipset_restore(&compiled.ruleset, Family::V4).len();
                    let t = Instant::now();
                    applier.apply(&compiled).unwrap();
                    if round == 0 {
                        setups[i] = format!(
                            "{n} policies: compile {:.1} ms, apply {:.0} ms, {} KiB v4 payload",
                            compile_time.as_secs_f64() * 1e3,
                            t.elapsed().as_secs_f64() * 1e3,
                            bytes / 1024
                        );
                    }
                }
            }
            let got = [
                run("rr", &["--count", &rr]),
                run("crr", &["--count", &crr]),
                run("stream", &["--secs", &st]),
            ];
            for (k, v) in got.into_iter().enumerate() {
                samples[i][k].push(v.unwrap_or_else(|| panic!("{name}: probe {k} failed")));
            }
            eprintln!(
                "round {round} {name}: {:?}",
                samples[i].iter().map(|s| s.last()).collect::<Vec<_>>()
            );
            if std::env::var("BENCH_COUNTERS").is_ok() && policies.is_some() {
                // How many policy-chain rules saw packets: shows how far a
                // new connection walked.
                let save = grid
                    .node()
                    .run(&backend.save_program(Family::V4), &["-c", "-t", "filter"])
                    .unwrap();
                let hit = save
                    .lines()
                    .filter(|l| l.contains("-A TORT-PI-") && !l.starts_with("[0:0]"))
                    .count();
                let total = save.lines().filter(|l| l.contains("-A TORT-PI-")).count();
                eprintln!("  policy-chain rules with packets: {hit} of {total}");
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    for (i, (name, _)) in scenarios.iter().enumerate() {
        let [r, c, s] = &samples[i];
        let best = c.iter().copied().fold(f64::INFINITY, f64::min);
        rows.push(format!(
            "| {name} | {:.1} | {:.1} ({best:.1}) | {:.2} | {} |",
            median(r),
            median(c),
            median(s),
            setups[i]
        ));
    }
    applier.remove().unwrap();
    println!("| scenario | round trip µs (established) | new connection µs: median (best round) | stream Gbit/s | setup |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ip(host: u8) -> IpAddr {
    Ipv4Addr::new(10, 244, 1, host).into()
}

fn snapshot(policies: Vec<NetworkPolicy>) -> Snapshot {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "bench", "labels": {"kubernetes.io/metadata.name": "bench"}},
    }))
    .unwrap();
    let pod = |name: &str, host: u8| -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "bench", "labels": {"role": name}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "netprobe"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip(host).to_string()}]},
        }))
        .unwrap()
    };
    Snapshot {
        namespaces: vec![ns],
        pods: [pod("client", 10), pod("server", 11)]
            .iter()
            .map(|p| std::sync::Arc::new(tortie_policy::SlimPod::from_pod(p)))
            .collect(),
        policies,
        local: ["client", "server"]
            .iter()
            .map(|p| LocalWorkload {
                namespace: "bench".into(),
                pod: p.to_string(),
                interface: host_interface_name("bench", p),
            })
            .collect(),
        unknown_interfaces: Vec::new(),
    }
}

fn policy(value: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(value).unwrap()
}

fn allow_client() -> NetworkPolicy {
    allow_client_named("zzzz-allow-client")
}

fn allow_client_named(name: &str) -> NetworkPolicy {
    policy(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                         "ports": [{"protocol": "TCP", "port": PORT}]}],
        },
    }))
}

/// 1,000 policies selecting the server, each allowing one /32 of
/// 10.244.200.0/22 that no pod has, plus the one that allows the client
/// (named to sort first or last: policy chains are walked in name order).
fn thousand_policies(allow_name: &str) -> Vec<NetworkPolicy> {
    let mut v: Vec<NetworkPolicy> = (0..1000u32)
        .map(|i| {
            let cidr = format!("10.244.{}.{}/32", 200 + i / 250, i % 250 + 1);
            policy(serde_json::json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("p-{i:04}"), "namespace": "bench"},
                "spec": {
                    "podSelector": {"matchLabels": {"role": "server"}},
                    "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}],
                                 "ports": [{"protocol": "TCP", "port": PORT}]}],
                },
            }))
        })
        .collect();
    v.push(allow_client_named(allow_name));
    v
}
