//! NetworkPolicy on real traffic: a 3x3 grid of pods wired to one node.
//!
//! ```text
//!   x/a x/b x/c   y/a y/b y/c   z/a z/b z/c     pods: a netns each, eth0 /32 from
//!    │   │   │     │   │   │     │   │   │      10.244.1.10-18 (x/a .10 ... z/c .18);
//!    └───┴───┴─────┴───┴─┬─┴─────┴───┴───┘      labels pod: a|b|c, namespaces ns: x|y|z
//!                  node netns: tort<hash> veths, proxy ARP, /32 routes,
//!                  tortie's chains and sets applied by the real Applier
//! ```
//!
//! Every pod serves TCP and UDP on ports 80 and 81 (`netprobe serve`). Each
//! case compiles a policy set with the real compiler, applies it with the
//! real Applier inside the node namespace (as a diff against the previous
//! case), probes the full 9x9x4 matrix and compares it with an expectation
//! written by hand from the NetworkPolicy API semantics (never computed by
//! the compiler). Every probe is also checked against `explain`, and the
//! kernel's chains and sets against the compiled ruleset.
//!
//! Traffic from a pod to itself never leaves its namespace (loopback), so
//! it is always allowed and not asked of `explain`.
//!
//! Also here: the same on single-stack IPv6 pods; rejected policies and
//! failed applies (the last good state stays in force, drifted jumps are
//! repaired); an unknown `tort*` interface (fail closed); node-to-pod and
//! pod-to-node traffic (the node's address on its uplink stub, 192.0.2.1).

// A test file: a panic with the message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tortie_integration::podnet::{Matrix, PodDef, PodGrid, Proto};
use tortie_integration::require_netns;
use tortie_policy::apply::{Applier, Dataplane, Payloads, ProcessRunner, RunError, Runner};
use tortie_policy::backend::{self, Backend};
use tortie_policy::model::{LocalWorkload, Snapshot};
use tortie_policy::naming::host_interface_name;
use tortie_policy::{compile, explain, Compiled, Endpoint, Family, Flow, Protocol};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const PORTS: [(Proto, u16); 4] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 81),
    (Proto::Udp, 80),
    (Proto::Udp, 81),
];
const TOOLS: [&str; 5] = [
    "ip",
    "ipset",
    "iptables-nft-restore",
    "iptables-nft-save",
    "ip6tables-nft-restore",
];

fn grid_index(ns: &str, pod: &str) -> u16 {
    let i = NAMESPACES.iter().position(|n| *n == ns).unwrap();
    let j = PODS.iter().position(|p| *p == pod).unwrap();
    u16::try_from(10 + i * 3 + j).unwrap()
}

/// x/a 10.244.1.10, x/b .11, ... z/c .18.
fn ip4_of(ns: &str, pod: &str) -> IpAddr {
    let host = u8::try_from(grid_index(ns, pod)).unwrap();
    Ipv4Addr::new(10, 244, 1, host).into()
}

/// x/a fd00::1:a, x/b fd00::1:b, ... z/c fd00::1:12 (hex of 10..18).
fn ip6_of(ns: &str, pod: &str) -> IpAddr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, grid_index(ns, pod)).into()
}

type IpOf = fn(&str, &str) -> IpAddr;

fn defs(pods: &[(&str, &str)], ip_of: IpOf) -> Vec<PodDef> {
    pods.iter()
        .map(|(ns, pod)| PodDef {
            namespace: ns.to_string(),
            name: pod.to_string(),
            ip: ip_of(ns, pod),
            iface: host_interface_name(ns, pod),
        })
        .collect()
}

fn full_grid() -> Vec<(&'static str, &'static str)> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| (*ns, *p)))
        .collect()
}

/// The cluster objects the compiler reads; tests relabel them in place.
struct World {
    node: String,
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<String, Pod>,
}

impl World {
    fn new(pods: &[(&str, &str)], ip_of: IpOf) -> World {
        let mut namespaces = BTreeMap::new();
        for ns in pods.iter().map(|(ns, _)| *ns).collect::<BTreeSet<_>>() {
            let obj = serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"ns": ns, "kubernetes.io/metadata.name": ns}},
            });
            namespaces.insert(ns.to_string(), serde_json::from_value(obj).unwrap());
        }
        let mut objs = BTreeMap::new();
        for (ns, pod) in pods {
            let port = |name: &str, p: u16, proto: &str| serde_json::json!({"name": name, "containerPort": p, "protocol": proto});
            let obj = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "netprobe", "ports": [
                    port("serve-80-tcp", 80, "TCP"), port("serve-81-tcp", 81, "TCP"),
                    port("serve-80-udp", 80, "UDP"), port("serve-81-udp", 81, "UDP"),
                ]}]},
                "status": {"phase": "Running", "podIPs": [{"ip": ip_of(ns, pod).to_string()}]},
            });
            objs.insert(format!("{ns}/{pod}"), serde_json::from_value(obj).unwrap());
        }
        World {
            node: "n1".into(),
            namespaces,
            pods: objs,
        }
    }

    fn snapshot(&self, policies: Vec<NetworkPolicy>) -> Snapshot {
        let local = self
            .pods
            .values()
            .map(|p| {
                let ns = p.metadata.namespace.clone().unwrap();
                let name = p.metadata.name.clone().unwrap();
                LocalWorkload {
                    interface: host_interface_name(&ns, &name),
                    namespace: ns,
                    pod: name,
                }
            })
            .collect();
        assert_eq!(self.node, "n1");
        Snapshot {
            namespaces: self.namespaces.values().cloned().collect(),
            pods: self
                .pods
                .values()
                .map(|p| std::sync::Arc::new(tortie_policy::SlimPod::from_pod(p)))
                .collect(),
            policies,
            local,
            unknown_interfaces: Vec::new(),
        }
    }

    fn set_pod_label(&mut self, id: &str, key: &str, value: Option<&str>) {
        let labels = self
            .pods
            .get_mut(id)
            .unwrap()
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new);
        match value {
            Some(v) => labels.insert(key.to_string(), v.to_string()),
            None => labels.remove(key),
        };
    }

    fn set_ns_label(&mut self, ns: &str, key: &str, value: Option<&str>) {
        let labels = self
            .namespaces
            .get_mut(ns)
            .unwrap()
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new);
        match value {
            Some(v) => labels.insert(key.to_string(), v.to_string()),
            None => labels.remove(key),
        };
    }
}

/// Parses `---`-separated NetworkPolicy YAML (namespace defaults to x).
fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            let mut p: NetworkPolicy = serde_norway::from_str(&format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{d}"
            ))
            .unwrap_or_else(|e| panic!("test policy does not parse: {e}\n{d}"));
            p.metadata.namespace.get_or_insert_with(|| "x".into());
            p
        })
        .collect()
}

fn ns(id: &str) -> &str {
    id.split('/').next().unwrap()
}

fn pod(id: &str) -> &str {
    id.split('/').nth(1).unwrap()
}

type Expect = Box<dyn Fn(&str, &str, Proto, u16) -> bool>;

/// A node namespace with the grid, the world, and the real Applier.
struct Harness {
    grid: PodGrid,
    world: World,
    applier: Applier,
    failures: Vec<String>,
    cases: usize,
    /// `tort*` interfaces on the node without a pod (fail closed).
    unknown: Vec<String>,
}

impl Harness {
    fn new(tag: &str, pods: &[(&str, &str)], ip_of: IpOf) -> Harness {
        let grid = PodGrid::build(
            tag,
            &defs(pods, ip_of),
            env!("CARGO_BIN_EXE_netprobe").as_ref(),
        )
        .unwrap();
        let runner = ProcessRunner::in_netns(grid.node().name());
        // A fresh namespace holds no rules: the choice falls to the default.
        let decision = backend::detect(&runner, None).unwrap();
        assert_eq!(decision.backend, Backend::Nft, "{}", decision.reason);
        let applier = Applier::new(Dataplane::new(Box::new(runner), decision.backend));
        Harness {
            grid,
            world: World::new(pods, ip_of),
            applier,
            failures: Vec::new(),
            cases: 0,
            unknown: Vec::new(),
        }
    }

    fn compile(&self, yaml: &str) -> (Snapshot, Compiled) {
        let mut snapshot = self.world.snapshot(policies(yaml));
        snapshot.unknown_interfaces = self.unknown.clone();
        let compiled = compile(&snapshot);
        (snapshot, compiled)
    }

    /// Applies `yaml` and checks the matrix, explain and the kernel state.
    /// Failures are collected so one run reports every wrong case.
    fn case(&mut self, name: &str, yaml: &str, expect: Expect) {
        self.cases += 1;
        let t = Instant::now();
        let (snapshot, compiled) = self.compile(yaml);
        if !compiled.errors.is_empty() {
            self.failures
                .push(format!("{name}: compiler rejected: {:?}", compiled.errors));
            return;
        }
        if let Err(e) = self.applier.apply(&compiled) {
            self.failures.push(format!("{name}: apply failed: {e}"));
            return;
        }
        let applied = t.elapsed();
        let observed = self.grid.probe_matrix(&PORTS, PROBE_TIMEOUT).unwrap();
        let expected = Matrix::from_fn(self.grid.pod_ids(), PORTS.to_vec(), |f, t, p, port| {
            f == t || expect(f, t, p, port)
        });
        if let Some(d) = expected.diff(&observed) {
            self.failures.push(format!(
                "{name}: traffic differs from the API semantics:\n{d}"
            ));
        }
        self.check_explain(name, &snapshot, &compiled, &observed);
        self.check_kernel_state(name, &compiled);
        eprintln!(
            "case {name}: applied in {applied:?}, total {:?}",
            t.elapsed()
        );
    }

    fn check_explain(
        &mut self,
        name: &str,
        snapshot: &Snapshot,
        compiled: &Compiled,
        observed: &Matrix,
    ) {
        let ids = self.grid.pod_ids();
        let mut wrong = Vec::new();
        for ((f, t, p, port), seen) in observed.cells() {
            if f == t {
                continue;
            }
            let endpoint = |id: &str| Endpoint::Pod {
                namespace: ns(id).into(),
                name: pod(id).into(),
            };
            let flow = Flow {
                from: endpoint(&ids[f]),
                to: endpoint(&ids[t]),
                port,
                protocol: match p {
                    Proto::Tcp => Protocol::Tcp,
                    Proto::Udp => Protocol::Udp,
                },
            };
            let e = explain(compiled, snapshot, &flow);
            if e.allowed != seen {
                wrong.push(format!(
                    "  {} -> {} {}/{port}: probe {}, explain {} (egress: {}; ingress: {})",
                    ids[f],
                    ids[t],
                    p.as_str(),
                    if seen { "allowed" } else { "denied" },
                    if e.allowed { "allowed" } else { "denied" },
                    e.egress,
                    e.ingress
                ));
            }
        }
        if !wrong.is_empty() {
            self.failures.push(format!(
                "{name}: explain disagrees with {} probes:\n{}",
                wrong.len(),
                wrong.join("\n")
            ));
        }
    }

    /// The kernel holds exactly the compiled chains and sets: nothing stale,
    /// nothing missing, one jump per builtin chain.
    fn check_kernel_state(&mut self, name: &str, compiled: &Compiled) {
        let node = self.grid.node();
        let mut problems = String::new();
        for (family, tool) in [
            (Family::V4, "iptables-nft-save"),
            (Family::V6, "ip6tables-nft-save"),
        ] {
            let save = node.run(tool, &["-t", "filter"]).unwrap();
            let kernel: BTreeSet<String> = save
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|d| d.split_whitespace().next())
                .filter(|c| c.starts_with("TORT-"))
                .map(String::from)
                .collect();
            let wanted: BTreeSet<String> = compiled
                .ruleset
                .table(family)
                .chains
                .keys()
                .cloned()
                .collect();
            if kernel != wanted {
                let _ = writeln!(
                    problems,
                    "  {family:?} chains: stale {:?}, missing {:?}",
                    kernel.difference(&wanted).collect::<Vec<_>>(),
                    wanted.difference(&kernel).collect::<Vec<_>>()
                );
            }
            for (builtin, target) in [
                ("INPUT", "TORT-INPUT"),
                ("FORWARD", "TORT-FORWARD"),
                ("OUTPUT", "TORT-OUTPUT"),
            ] {
                let rule = format!("-A {builtin} -j {target}");
                let n = save.lines().filter(|l| l.trim() == rule).count();
                if n != 1 {
                    let _ = writeln!(problems, "  {family:?}: `{rule}` present {n} times");
                }
            }
        }
        let sets: BTreeSet<String> = node
            .run("ipset", &["list", "-n"])
            .unwrap()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| l.starts_with("tort-"))
            .collect();
        let wanted: BTreeSet<String> = compiled.ruleset.sets.keys().cloned().collect();
        if sets != wanted {
            let _ = writeln!(
                problems,
                "  sets: stale {:?}, missing {:?}",
                sets.difference(&wanted).collect::<Vec<_>>(),
                wanted.difference(&sets).collect::<Vec<_>>()
            );
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "{name}: kernel state differs from the ruleset:\n{problems}"
            ));
        }
    }

    fn finish(mut self) {
        self.applier.remove().unwrap();
        let save = self
            .grid
            .node()
            .run("iptables-nft-save", &["-t", "filter"])
            .unwrap();
        assert!(!save.contains("TORT-"), "remove left chains:\n{save}");
        let sets = self.grid.node().run("ipset", &["list", "-n"]).unwrap();
        assert!(!sets.contains("tort-"), "remove left sets:\n{sets}");
        if !self.failures.is_empty() {
            panic!(
                "{} of {} cases failed:\n\n{}",
                self.failures.len(),
                self.cases,
                self.failures.join("\n\n")
            );
        }
    }
}

fn all() -> Expect {
    Box::new(|_, _, _, _| true)
}

/// The conformance-style cases, one policy set each, applied in sequence
/// on the same node so each is also a diff against the one before.
#[test]
fn policy_grid_matches_api_semantics() {
    if !require_netns("policy_grid_matches_api_semantics", &TOOLS) {
        return;
    }
    let started = Instant::now();
    let mut h = Harness::new("pgrid", &full_grid(), ip4_of);
    eprintln!("grid built in {:?}", started.elapsed());

    h.case("no policy", "", all());
    h.case(
        "deny all ingress in x",
        "metadata: {name: deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}",
        Box::new(|_, t, _, _| ns(t) != "x"),
    );
    h.case(
        "deny all egress in x",
        "metadata: {name: deny-egress}\nspec: {podSelector: {}, policyTypes: [Egress]}",
        Box::new(|f, _, _, _| ns(f) != "x"),
    );
    h.case(
        "allow ingress from the same namespace",
        "metadata: {name: same-ns}\nspec:\n  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]",
        Box::new(|f, t, _, _| ns(t) != "x" || ns(f) == "x"),
    );
    h.case(
        "allow ingress from a namespace by label",
        "metadata: {name: from-y}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
        Box::new(|f, t, _, _| t != "x/a" || ns(f) == "y"),
    );
    h.case(
        "namespaceSelector AND podSelector in one peer",
        "metadata: {name: y-and-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]",
        Box::new(|f, t, _, _| t != "x/a" || f == "y/b"),
    );
    h.case(
        "namespaceSelector OR podSelector as two peers",
        "metadata: {name: y-or-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]}]",
        Box::new(|f, t, _, _| t != "x/a" || ns(f) == "y" || f == "x/b"),
    );
    h.case(
        "ipBlock with except",
        "metadata: {name: cidr}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{ipBlock: {cidr: 10.244.1.0/24, except: [10.244.1.14/32]}}]}]",
        Box::new(|f, t, _, _| t != "x/a" || f != "y/b"),
    );
    h.case(
        "ipBlock excluding the pod network allows no pod",
        "metadata: {name: outside}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}}]}]",
        Box::new(|_, t, _, _| t != "x/a"),
    );
    h.case(
        "port 80/TCP only",
        "metadata: {name: tcp80}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{ports: [{protocol: TCP, port: 80}]}]",
        Box::new(|_, t, p, port| t != "x/a" || (p == Proto::Tcp && port == 80)),
    );
    h.case(
        "port without protocol means TCP",
        "metadata: {name: p81}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 81}]}]",
        Box::new(|_, t, p, port| t != "x/a" || (p == Proto::Tcp && port == 81)),
    );
    h.case(
        "named port",
        "metadata: {name: named}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{ports: [{protocol: UDP, port: serve-81-udp}]}]",
        Box::new(|_, t, p, port| t != "x/a" || (p == Proto::Udp && port == 81)),
    );
    h.case(
        "endPort range",
        "metadata: {name: range}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{ports: [{protocol: TCP, port: 80, endPort: 81}]}]",
        Box::new(|_, t, p, _| t != "x/a" || p == Proto::Tcp),
    );
    h.case(
        "UDP only, any port",
        "metadata: {name: udp}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{protocol: UDP}]}]",
        Box::new(|_, t, p, _| t != "x/a" || p == Proto::Udp),
    );
    h.case(
        "SCTP only allows no TCP or UDP",
        "metadata: {name: sctp}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{ports: [{protocol: SCTP, port: 80}]}]",
        Box::new(|_, t, _, _| t != "x/a"),
    );
    h.case(
        "egress to one pod",
        "metadata: {name: to-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  \
         egress: [{to: [{podSelector: {matchLabels: {pod: b}}}]}]",
        Box::new(|f, t, _, _| f != "x/a" || t == "x/b"),
    );
    h.case(
        "egress to an ipBlock with except",
        "metadata: {name: to-cidr}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  \
         egress: [{to: [{ipBlock: {cidr: 10.244.1.0/28, except: [10.244.1.12/30]}}]}]",
        // /28 is .0-.15, minus .12-.15: of the pods only x/b (.11) remains.
        Box::new(|f, t, _, _| f != "x/a" || t == "x/b"),
    );
    h.case(
        "egress UDP 81 only",
        "metadata: {name: udp81-out}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  \
         egress: [{ports: [{protocol: UDP, port: 81}]}]",
        Box::new(|f, _, p, port| f != "x/a" || (p == Proto::Udp && port == 81)),
    );
    h.case(
        "egress named port",
        "metadata: {name: named-out}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n  \
         egress: [{ports: [{port: serve-80-tcp}]}]",
        Box::new(|f, _, p, port| f != "x/b" || (p == Proto::Tcp && port == 80)),
    );
    h.case(
        "ingress and egress in one policy",
        "metadata: {name: both}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]\n  \
         egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]",
        Box::new(|f, t, _, _| (t != "x/a" || ns(f) == "y") && (f != "x/a" || ns(t) == "z")),
    );
    h.case(
        "egress to a namespace on one port",
        "metadata: {name: x-to-y-80}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  \
         egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{protocol: TCP, port: 80}]}]",
        Box::new(|f, t, p, port| ns(f) != "x" || (ns(t) == "y" && p == Proto::Tcp && port == 80)),
    );
    h.case(
        "multiple policies are a union",
        "metadata: {name: from-ya}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]\n---\n\
         metadata: {name: from-zb-81}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}], ports: [{port: 81}]}]",
        Box::new(|f, t, p, port| {
            t != "x/a" || f == "y/a" || (f == "z/b" && p == Proto::Tcp && port == 81)
        }),
    );
    h.case(
        "two rules with different peers and ports",
        "metadata: {name: two-rules}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  \
         - {from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{protocol: TCP, port: 80}]}\n  \
         - {from: [{namespaceSelector: {matchLabels: {ns: z}}}], ports: [{protocol: UDP, port: 81}]}",
        Box::new(|f, t, p, port| {
            t != "x/a"
                || (ns(f) == "y" && p == Proto::Tcp && port == 80)
                || (ns(f) == "z" && p == Proto::Udp && port == 81)
        }),
    );
    h.case(
        "an empty ingress rule allows all, even next to a deny-all",
        "metadata: {name: deny}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n---\n\
         metadata: {name: allow-all}\nspec:\n  podSelector: {}\n  ingress: [{}]",
        all(),
    );
    h.case(
        "a policy selecting no pod changes nothing",
        "metadata: {name: nobody}\nspec:\n  podSelector: {matchLabels: {pod: nobody}}\n  policyTypes: [Ingress, Egress]",
        all(),
    );
    h.case(
        "matchExpressions In on the policy's podSelector",
        "metadata: {name: in-ab}\nspec:\n  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}\n  \
         policyTypes: [Ingress]",
        Box::new(|_, t, _, _| t != "x/a" && t != "x/b"),
    );
    h.case(
        "matchExpressions NotIn on a peer",
        "metadata: {name: notin}\nspec:\n  podSelector: {matchLabels: {pod: c}}\n  \
         ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}}]}]",
        Box::new(|f, t, _, _| t != "x/c" || f == "x/b"),
    );
    h.case(
        "matchExpressions Exists on a namespaceSelector",
        "metadata: {name: exists, namespace: y}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists}]}, \
         podSelector: {matchExpressions: [{key: pod, operator: In, values: [c]}]}}]}]",
        Box::new(|f, t, _, _| t != "y/a" || pod(f) == "c"),
    );
    h.case(
        "matchExpressions DoesNotExist",
        "metadata: {name: no-pod-label, namespace: z}\nspec:\n  \
         podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}\n  policyTypes: [Ingress]\n---\n\
         metadata: {name: from-unlabelled-ns, namespace: y}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  \
         ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: DoesNotExist}]}}]}]",
        Box::new(|_, t, _, _| t != "y/b"),
    );
    h.case(
        "all namespaces, pods by label",
        "metadata: {name: any-ns-a}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  \
         ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]}]",
        Box::new(|f, t, _, _| t != "x/b" || pod(f) == "a"),
    );
    h.case(
        "policy in another namespace",
        "metadata: {name: from-x, namespace: y}\nspec:\n  podSelector: {matchLabels: {pod: c}}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}]",
        Box::new(|f, t, _, _| t != "y/c" || ns(f) == "x"),
    );
    h.case(
        "egress deny in y, ingress only from y in z",
        "metadata: {name: deny-out, namespace: y}\nspec: {podSelector: {}, policyTypes: [Egress]}\n---\n\
         metadata: {name: from-y, namespace: z}\nspec:\n  podSelector: {}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
        Box::new(|f, t, _, _| ns(f) != "y" && ns(t) != "z"),
    );

    // Updates in place: the same node, each step applied as a diff.
    let from_ns = |n: &str| {
        format!(
            "metadata: {{name: from-ns}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  \
             ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: {n}}}}}}}]}}]"
        )
    };
    h.case(
        "update: policy before edit",
        &from_ns("y"),
        Box::new(|f, t, _, _| t != "x/a" || ns(f) == "y"),
    );
    h.case(
        "update: policy edited",
        &from_ns("z"),
        Box::new(|f, t, _, _| t != "x/a" || ns(f) == "z"),
    );
    h.world.set_ns_label("y", "ns", Some("z"));
    h.case(
        "update: namespace y relabelled ns=z",
        &from_ns("z"),
        Box::new(|f, t, _, _| t != "x/a" || ns(f) == "z" || ns(f) == "y"),
    );
    h.world.set_ns_label("y", "ns", Some("y"));
    let from_b = "metadata: {name: from-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
                  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]";
    h.case(
        "update: pod peer before relabel",
        from_b,
        Box::new(|f, t, _, _| t != "x/a" || f == "x/b"),
    );
    h.world.set_pod_label("x/c", "pod", Some("b"));
    h.case(
        "update: pod x/c relabelled pod=b",
        from_b,
        Box::new(|f, t, _, _| t != "x/a" || f == "x/b" || f == "x/c"),
    );
    h.world.set_pod_label("x/c", "pod", Some("c"));
    h.world.set_pod_label("y/b", "color", Some("red"));
    h.case(
        "update: pod y/b gains a label excluded by DoesNotExist",
        "metadata: {name: uncoloured}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: color, operator: DoesNotExist}]}}]}]",
        Box::new(|f, t, _, _| t != "x/a" || f != "y/b"),
    );
    h.world.set_pod_label("y/b", "color", None);
    h.case("update: all policies deleted", "", all());

    eprintln!("{} cases in {:?}", h.cases, started.elapsed());
    h.finish();
}

/// The same machinery on single-stack IPv6 pods: ip6tables chains, inet6
/// sets, and IPv4 ipBlocks that must not match IPv6 peers.
#[test]
fn policy_grid_ipv6() {
    if !require_netns("policy_grid_ipv6", &TOOLS) {
        return;
    }
    let started = Instant::now();
    let mut h = Harness::new("pgrid6", &full_grid(), ip6_of);
    h.case("v6: no policy", "", all());
    h.case(
        "v6: deny all ingress in x",
        "metadata: {name: deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}",
        Box::new(|_, t, _, _| ns(t) != "x"),
    );
    h.case(
        "v6: allow ingress from a namespace by label",
        "metadata: {name: from-y}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
        Box::new(|f, t, _, _| t != "x/a" || ns(f) == "y"),
    );
    h.case(
        "v6: ipBlock with except",
        "metadata: {name: cidr6}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{ipBlock: {cidr: 'fd00::1:0/112', except: ['fd00::1:e/128']}}]}]",
        // fd00::1:e is y/b (index 14).
        Box::new(|f, t, _, _| t != "x/a" || f != "y/b"),
    );
    h.case(
        "v6: an IPv4 ipBlock matches no IPv6 peer",
        "metadata: {name: v4-only}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}]",
        Box::new(|_, t, _, _| t != "x/a"),
    );
    h.case(
        "v6: named port",
        "metadata: {name: named}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         ingress: [{ports: [{protocol: UDP, port: serve-81-udp}]}]",
        Box::new(|_, t, p, port| t != "x/a" || (p == Proto::Udp && port == 81)),
    );
    h.case(
        "v6: egress to one pod on one port",
        "metadata: {name: to-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  \
         egress: [{to: [{podSelector: {matchLabels: {pod: b}}}], ports: [{protocol: TCP, port: 80}]}]",
        Box::new(|f, t, p, port| f != "x/a" || (t == "x/b" && p == Proto::Tcp && port == 80)),
    );
    h.case(
        "v6: egress to ::/0 allows everything",
        "metadata: {name: to-all}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  \
         egress: [{to: [{ipBlock: {cidr: '::/0'}}]}]",
        all(),
    );
    eprintln!("{} IPv6 cases in {:?}", h.cases, started.elapsed());
    h.finish();
}

/// A workload-looking interface whose pod the datastore does not know (a
/// pod deleted while its veth lingers, a datastore lagging behind the CNI)
/// gets no traffic in or out, policy or not.
#[test]
fn policy_unknown_workload_interface_fails_closed() {
    if !require_netns("policy_unknown_workload_interface_fails_closed", &TOOLS) {
        return;
    }
    let pods = [("x", "a"), ("x", "b"), ("ghost", "g")];
    let ip_of: IpOf = |ns, pod| match ns {
        "ghost" => Ipv4Addr::new(10, 244, 1, 50).into(),
        _ => ip4_of(ns, pod),
    };
    let mut h = Harness::new("pghost", &pods, ip_of);
    h.world.pods.remove("ghost/g");
    h.world.namespaces.remove("ghost");
    h.unknown = vec![host_interface_name("ghost", "g")];
    let not_ghost = |f: &str, t: &str| ns(f) != "ghost" && ns(t) != "ghost";
    h.case(
        "unknown interface, no policy",
        "",
        Box::new(move |f, t, _, _| not_ghost(f, t)),
    );
    h.case(
        "unknown interface, allow-all ingress policy",
        "metadata: {name: allow-all}\nspec:\n  podSelector: {}\n  ingress: [{}]",
        Box::new(move |f, t, _, _| not_ghost(f, t)),
    );
    h.finish();
}

/// Probes `targets` from inside the node namespace (host-to-pod traffic).
fn probe_from_node(h: &Harness, targets: &[(Proto, IpAddr, u16)]) -> Vec<bool> {
    let specs: Vec<String> = targets
        .iter()
        .map(|(p, ip, port)| format!("{}:{}", p.as_str(), std::net::SocketAddr::new(*ip, *port)))
        .collect();
    let mut cmd = h.grid.node().command(env!("CARGO_BIN_EXE_netprobe"));
    cmd.args(["probe-many", "--timeout-ms", "500"]).args(&specs);
    let out = tortie_integration::run_with_timeout(&mut cmd, Duration::from_secs(10)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    specs
        .iter()
        .map(|s| text.lines().any(|l| l == format!("{s} ok")))
        .collect()
}

/// Traffic between the node itself and its pods: the node may always reach
/// its pods (NetworkPolicy: "traffic from the pod's node is allowed"), and
/// a pod reaching the node is egress like any other, where only ipBlocks
/// can match the node's address.
#[test]
fn policy_host_to_pod_and_pod_to_host() {
    if !require_netns("policy_host_to_pod_and_pod_to_host", &TOOLS) {
        return;
    }
    let pods = [("x", "a"), ("y", "a")];
    let mut h = Harness::new("phost", &pods, ip4_of);
    let node_ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    // The node's own address lives on its uplink stub inside the node
    // namespace; pods reach it through their default route.
    h.grid
        .node()
        .run("ip", &["addr", "add", "192.0.2.1/32", "dev", "up0"])
        .unwrap();
    let _node_server = h
        .grid
        .node()
        .spawn(
            env!("CARGO_BIN_EXE_netprobe"),
            &["serve", "--tcp", "80,81", "--udp", "80,81"],
        )
        .unwrap();
    let ports: Vec<(Proto, u16)> = PORTS.to_vec();
    let check = |h: &mut Harness, name: &str, yaml: &str, to_pod: [bool; 2], to_node: [bool; 2]| {
        let (_, compiled) = h.compile(yaml);
        assert!(compiled.errors.is_empty(), "{name}: {:?}", compiled.errors);
        h.applier.apply(&compiled).unwrap();
        h.check_kernel_state(name, &compiled);
        for (k, (ns, pod)) in pods.iter().enumerate() {
            let targets: Vec<(Proto, IpAddr, u16)> = ports
                .iter()
                .map(|(p, port)| (*p, ip4_of(ns, pod), *port))
                .collect();
            let seen = probe_from_node(h, &targets);
            if seen.iter().any(|ok| *ok != to_pod[k]) {
                h.failures.push(format!(
                    "{name}: node -> {ns}/{pod}: {seen:?}, expected all {}",
                    to_pod[k]
                ));
            }
            let targets: Vec<(Proto, IpAddr, u16)> =
                ports.iter().map(|(p, port)| (*p, node_ip, *port)).collect();
            let from = h.grid.pod(&format!("{ns}/{pod}")).unwrap();
            let seen = h.grid.probe_from(from, &targets, PROBE_TIMEOUT).unwrap();
            if seen.iter().any(|ok| *ok != to_node[k]) {
                h.failures.push(format!(
                    "{name}: {ns}/{pod} -> node: {seen:?}, expected all {}",
                    to_node[k]
                ));
            }
        }
    };
    check(&mut h, "host: no policy", "", [true, true], [true, true]);
    check(
        &mut h,
        "host: x isolated both ways",
        "metadata: {name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}",
        [true, true],
        [false, true],
    );
    check(
        &mut h,
        "host: x egress to the node's /24 only",
        "metadata: {name: to-node}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  \
         egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24}}]}]",
        [true, true],
        [true, true],
    );
    h.finish();
}

/// A runner that corrupts the next iptables-restore payload once, so the
/// real tool fails with its real error in the middle of a real update.
#[derive(Debug)]
struct BreakNextRestore {
    inner: ProcessRunner,
    armed: AtomicBool,
}

impl Runner for BreakNextRestore {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, RunError> {
        if program.starts_with("iptables") && program.ends_with("-restore") {
            if let Some(payload) = stdin.filter(|p| p.contains("*filter")) {
                if self.armed.swap(false, Ordering::SeqCst) {
                    let broken = payload.replacen(
                        "COMMIT",
                        "-A TORT-FORWARD -j TORT-NO-SUCH-CHAIN\nCOMMIT",
                        1,
                    );
                    return self.inner.run(program, args, Some(&broken));
                }
            }
        }
        self.inner.run(program, args, stdin)
    }
}

fn filter_rules(h: &Harness) -> String {
    let save = h
        .grid
        .node()
        .run("iptables-nft-save", &["-t", "filter"])
        .unwrap();
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ipset save` without the per-set random hash seed (a swapped-in set has
/// a new one).
fn set_members(h: &Harness) -> String {
    let save = h.grid.node().run("ipset", &["save"]).unwrap();
    save.lines()
        .map(|l| match l.find(" initval ") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rejected policies are left out whole and named in the error; failed
/// applies leave the previous rules and sets in force.
#[test]
fn policy_bad_input_and_failed_apply_keep_last_good_state() {
    if !require_netns(
        "policy_bad_input_and_failed_apply_keep_last_good_state",
        &TOOLS,
    ) {
        return;
    }
    let pods = [("x", "a"), ("x", "b"), ("y", "a")];
    let mut h = Harness::new("pbad", &pods, ip4_of);

    // One good policy (x only from x/a), one with a bad CIDR, one with a
    // bad selector.
    let yaml = "metadata: {name: deny-ingress}\nspec:\n  podSelector: {}\n  \
        ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]\n---\n\
        metadata: {name: bad-cidr, namespace: y}\nspec:\n  podSelector: {}\n  \
        ingress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 10.0.0.300/8}}]}]\n---\n\
        metadata: {name: bad-selector, namespace: y}\nspec:\n  podSelector: {}\n  \
        ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In}]}}]}]";
    let (_, compiled) = h.compile(yaml);
    let errors: Vec<String> = compiled.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let cidr = errors
        .iter()
        .find(|e| e.contains("y/bad-cidr"))
        .expect("bad-cidr named");
    assert!(
        cidr.contains("spec.ingress[0].from[1].ipBlock.cidr"),
        "{cidr}"
    );
    assert!(cidr.contains("10.0.0.300/8"), "{cidr}");
    let sel = errors
        .iter()
        .find(|e| e.contains("y/bad-selector"))
        .expect("bad-selector named");
    assert!(sel.contains("spec.ingress[0].from[0].podSelector"), "{sel}");
    h.applier.apply(&compiled).unwrap();
    let expected = Matrix::from_fn(h.grid.pod_ids(), PORTS.to_vec(), |f, t, _, _| {
        f == t || ns(t) != "x" || f == "x/a"
    });
    let observed = h.grid.probe_matrix(&PORTS, PROBE_TIMEOUT).unwrap();
    assert_eq!(
        expected.diff(&observed),
        None,
        "rejected policies must be left out whole"
    );
    // Nothing of the rejected policies reached the kernel.
    let rules = filter_rules(&h);
    assert!(
        !rules.contains("bad-cidr") && !rules.contains("bad-selector"),
        "{rules}"
    );
    h.check_kernel_state("bad input", &compiled);
    assert!(h.failures.is_empty(), "{:#?}", h.failures);

    // A broken ipset payload fails before any rule changes; sets unchanged.
    let dataplane = Dataplane::new(
        Box::new(ProcessRunner::in_netns(h.grid.node().name())),
        Backend::Nft,
    );
    let (rules_before, sets_before) = (filter_rules(&h), set_members(&h));
    let some_set = compiled.ruleset.sets.keys().next().cloned();
    let bad_sets = match &some_set {
        Some(s) => format!("create {s} hash:ip family inet -exist\nflush {s}\nadd {s} 10.244.1.99\nadd {s} not-an-ip\n"),
        None => "create tort-bogus hash:ip\nadd tort-bogus not-an-ip\n".to_string(),
    };
    let err = dataplane
        .commit(
            &Payloads {
                ipset: &bad_sets,
                ..Payloads::default()
            },
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("ipset"), "{err}");
    assert_eq!(
        set_members(&h),
        sets_before,
        "a failed ipset restore changed sets"
    );
    // A broken iptables payload: the tool's error is returned, rules unchanged.
    let err = dataplane
        .commit(
            &Payloads {
                iptables_v4: Some(
                    "*filter\n:TORT-FORWARD - [0:0]\n-A TORT-FORWARD -j TORT-NO-SUCH\nCOMMIT\n",
                ),
                ..Payloads::default()
            },
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("iptables"), "{err}");
    assert_eq!(
        filter_rules(&h),
        rules_before,
        "a failed restore changed rules"
    );

    // The Applier: an update whose iptables stage fails keeps the old
    // policy in force (sets rolled back), and the next apply succeeds.
    let runner = Arc::new(BreakNextRestore {
        inner: ProcessRunner::in_netns(h.grid.node().name()),
        armed: AtomicBool::new(false),
    });
    let mut applier = Applier::new(Dataplane::new(Box::new(runner.clone()), Backend::Nft));
    applier.apply(&compiled).unwrap();
    let (_, allow_from_y) = h.compile(
        "metadata: {name: deny-ingress}\nspec:\n  podSelector: {}\n  \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
    );
    runner.armed.store(true, Ordering::SeqCst);
    let err = applier.apply(&allow_from_y).unwrap_err();
    assert!(
        err.to_string().contains("TORT-NO-SUCH-CHAIN") || err.to_string().contains("line"),
        "{err}"
    );
    assert_eq!(
        filter_rules(&h),
        rules_before,
        "failed update changed rules"
    );
    assert_eq!(
        set_members(&h),
        sets_before,
        "failed update left sets changed"
    );
    let observed = h.grid.probe_matrix(&PORTS, PROBE_TIMEOUT).unwrap();
    assert_eq!(
        expected.diff(&observed),
        None,
        "old policy not in force after a failed update"
    );
    applier.apply(&allow_from_y).unwrap();
    let expected_new = Matrix::from_fn(h.grid.pod_ids(), PORTS.to_vec(), |f, t, _, _| {
        f == t || ns(t) != "x" || ns(f) == "y"
    });
    let observed = h.grid.probe_matrix(&PORTS, PROBE_TIMEOUT).unwrap();
    assert_eq!(
        expected_new.diff(&observed),
        None,
        "retry after failure did not apply"
    );
    h.check_kernel_state("after retry", &allow_from_y);

    // Drift: our jump deleted by hand comes back with the next apply, and
    // a duplicated one is reduced to one, without touching others' rules.
    let node = h.grid.node();
    node.run(
        "iptables-nft",
        &["-I", "FORWARD", "1", "-s", "192.0.2.1", "-j", "ACCEPT"],
    )
    .unwrap();
    node.run("iptables-nft", &["-D", "INPUT", "-j", "TORT-INPUT"])
        .unwrap();
    node.run("iptables-nft", &["-A", "OUTPUT", "-j", "TORT-OUTPUT"])
        .unwrap();
    let report = applier.apply(&allow_from_y).unwrap();
    assert_eq!(report.jumps_fixed.len(), 2, "{report:?}");
    h.check_kernel_state("after drift", &allow_from_y);
    assert!(filter_rules(&h).contains("-A FORWARD -s 192.0.2.1/32 -j ACCEPT"));
    h.applier = applier;
    h.finish();
}
