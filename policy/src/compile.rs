//! Snapshot to ruleset IR (pure).
//!
//! Owns the NetworkPolicy semantics (networking.k8s.io/v1): validation,
//! defaulting of `policyTypes`, isolation, peers, ports. Must never run a
//! process, read a file or a clock: the same snapshot always gives the same
//! ruleset, byte for byte once rendered.
//!
//! # Dataplane layout (filter table, per family)
//!
//! ```text
//!  FORWARD ─► TORT-FORWARD                        INPUT ─► TORT-INPUT      OUTPUT ─► TORT-OUTPUT
//!   -i/-o tort+ ESTABLISHED,RELATED  ACCEPT        -i tort+ EST,REL ACCEPT  -o tort+ INVALID DROP
//!   -i/-o tort+ INVALID              DROP          -i tort+ INVALID DROP    -o tort+ ACCEPT (own node
//!   -i tort+ -j TORT-FROM-WL   (egress of source)   -i tort+ -j TORT-FROM-WL    may always reach its pods)
//!   -o tort+ -j TORT-TO-WL     (ingress of dest)    (then back to INPUT: the host's firewall decides)
//!   -i/-o tort+ ACCEPT         (both sides passed)
//!
//!  TORT-FROM-WL: -i tort0+ -g TORT-FROM-WL-0 … -i tortf+ -g TORT-FROM-WL-f, DROP (fail closed)
//!   TORT-FROM-WL-3: -i tort3… -g TORT-FW-<pod> … -i <unknown tort3…> DROP, DROP
//!  TORT-TO-WL (the same with -o and TORT-TW-<pod>)
//!
//!  TORT-TW-<pod> (one per local workload and direction)
//!   MARK 0/0x10000                  ; clear the accept bit
//!   -j TORT-PI-<policy>             ; each policy selecting the pod, sorted
//!   mark 0x10000 → RETURN           ; a rule of that policy allowed it
//!   …
//!   DROP (isolated) | RETURN (no policy isolates this direction)
//!
//!  TORT-PI-<policy> (one per policy and direction, shared by its pods)
//!   <peer set> <port> → MARK 0x10000   ; one line per peer × port of rule 0
//!   mark 0x10000 → RETURN
//!   …                                   ; rule 1, 2, …
//! ```
//!
//! Traffic between two pods on this node passes FORWARD once with
//! `-i tortA -o tortB`: TORT-FROM-WL checks A's egress and returns, then
//! TORT-TO-WL checks B's ingress, and only then is it accepted.
//!
//! Chains never hold pod IPs: peers are ipsets (`hash:ip` per distinct peer
//! selector, `hash:net` per ipBlock with `nomatch` entries for `except`,
//! `hash:ip,port` per named port). Only policies that select a local
//! workload get chains, and only sets those chains use are built.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use crate::model::SlimPod;
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::FieldError;
pub use crate::error::PolicyError;
use crate::model::{self, Snapshot};
use crate::naming::{self, Direction};
use crate::ruleset::{
    Action, Addr, BuiltinChain, Chain, CtState, Family, Iface, IpSet, Match, Note, Protocol, Rule,
    Ruleset, SetEntry, SetKind, ACCEPT_MARK,
};
use crate::selector::Selector;

/// The compiler's output for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub ruleset: Ruleset,
    /// Objects rejected, each naming object and field; they are left out,
    /// everything else compiles. Sorted.
    pub errors: Vec<PolicyError>,
}

/// Counts for status output and logs (`tortie status` shows policies,
/// workloads and errors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Policies with chains on this node (they select a local workload).
    pub policies: usize,
    /// Local workloads with chains (known pods on `tort` interfaces).
    pub workloads: usize,
    /// Chains over both families.
    pub chains: usize,
    /// Sets over both families, and their members.
    pub sets: usize,
    pub set_entries: usize,
    /// Objects rejected.
    pub errors: usize,
}

impl Compiled {
    /// Counts read off the ruleset.
    pub fn stats(&self) -> Stats {
        let rs = &self.ruleset;
        let v4 = &rs.v4.chains;
        let policies: BTreeSet<(&str, &str)> = v4
            .values()
            .flat_map(|c| c.rules.iter())
            .filter_map(|r| match &r.note {
                Note::PolicyJump { namespace, name } => Some((namespace.as_str(), name.as_str())),
                _ => None,
            })
            .collect();
        let workloads = v4.keys().filter(|n| n.starts_with("TORT-TW-")).count();
        Stats {
            policies: policies.len(),
            workloads,
            chains: v4.len() + rs.v6.chains.len(),
            sets: rs.sets.len(),
            set_entries: rs.sets.values().map(|s| s.entries.len()).sum(),
            errors: self.errors.len(),
        }
    }
}

/// Chain `-i tort+` traffic goes to (egress of the source workload).
pub const FROM_WORKLOAD_CHAIN: &str = "TORT-FROM-WL";
/// Chain `-o tort+` traffic goes to (ingress of the destination workload).
pub const TO_WORKLOAD_CHAIN: &str = "TORT-TO-WL";

/// The namespace label the API server sets on every namespace.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

// ---------------------------------------------------------------------------
// Validated policies

/// Which pods a pod-selector peer picks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NsScope {
    /// The policy's own namespace (peer without namespaceSelector).
    Own(String),
    /// Namespaces matching this selector.
    Selected(Selector),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Pods { scope: NsScope, pods: Selector },
    Block { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortSpec {
    /// All ports of the protocol.
    Any(Protocol),
    Range(Protocol, u16, u16),
    Named(Protocol, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct RuleSpec {
    /// `None`: `from`/`to` absent or empty, every peer (including external).
    peers: Option<Vec<Peer>>,
    /// `None`: `ports` absent or empty, every port and protocol.
    ports: Option<Vec<PortSpec>>,
}

#[derive(Clone, Debug)]
struct PolicySpec {
    namespace: String,
    name: String,
    selector: Selector,
    /// `Some(rules)` when the policy has Ingress in its (defaulted) policyTypes.
    ingress: Option<Vec<RuleSpec>>,
    egress: Option<Vec<RuleSpec>>,
}

impl PolicySpec {
    fn rules(&self, direction: Direction) -> Option<&Vec<RuleSpec>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }
}

/// Validates one policy as the API server would, and lowers it.
fn lower_policy(policy: &NetworkPolicy) -> Result<PolicySpec, PolicyError> {
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let name = policy.metadata.name.clone().unwrap_or_default();
    let fail = |e: FieldError| PolicyError::policy(&namespace, &name, e.field, e.problem);
    if name.is_empty() {
        return Err(fail(FieldError::new("metadata.name", "is missing")));
    }
    let no_spec = NetworkPolicySpec::default();
    let spec = policy.spec.as_ref().unwrap_or(&no_spec);
    let selector = match &spec.pod_selector {
        Some(s) => Selector::parse(s, "spec.podSelector").map_err(fail)?,
        // podSelector is required by the API; treat absent like `{}` (its
        // documented empty value) rather than dropping the policy.
        None => Selector::everything(),
    };
    let mut has_ingress = true;
    let mut has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
    if let Some(types) = spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        if types.len() > 2 {
            return Err(fail(FieldError::new(
                "spec.policyTypes",
                "may hold at most Ingress and Egress",
            )));
        }
        has_ingress = false;
        has_egress = false;
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "Ingress" => has_ingress = true,
                "Egress" => has_egress = true,
                other => {
                    return Err(fail(FieldError::new(
                        format!("spec.policyTypes[{i}]"),
                        format!("{other:?} is not Ingress or Egress"),
                    )))
                }
            }
        }
    }
    // Rules are validated even for a direction policyTypes leaves out: the
    // API server rejects such an object whole all the same.
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            lower_rule(
                &format!("spec.ingress[{i}]"),
                "from",
                r.from.as_deref(),
                r.ports.as_deref(),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let egress = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            lower_rule(
                &format!("spec.egress[{i}]"),
                "to",
                r.to.as_deref(),
                r.ports.as_deref(),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    Ok(PolicySpec {
        namespace: namespace.clone(),
        name: name.clone(),
        selector,
        ingress: has_ingress.then_some(ingress),
        egress: has_egress.then_some(egress),
    })
}

fn lower_rule(
    field: &str,
    peers_key: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
) -> Result<RuleSpec, FieldError> {
    let peers = match peers {
        None | Some([]) => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(j, p)| lower_peer(&format!("{field}.{peers_key}[{j}]"), p))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(j, p)| lower_port(&format!("{field}.ports[{j}]"), p))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(RuleSpec { peers, ports })
}

fn lower_peer(field: &str, peer: &NetworkPolicyPeer) -> Result<Peer, FieldError> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err(FieldError::new(
                field,
                "ipBlock may not be combined with podSelector or namespaceSelector in one peer",
            ));
        }
        let cidr = parse_cidr(&block.cidr)
            .map_err(|p| FieldError::new(format!("{field}.ipBlock.cidr"), p))?;
        let mut except = Vec::new();
        for (k, e) in block.except.iter().flatten().enumerate() {
            let f = format!("{field}.ipBlock.except[{k}]");
            let net = parse_cidr(e).map_err(|p| FieldError::new(&f, p))?;
            let inside = Family::of(&net.addr()) == Family::of(&cidr.addr())
                && cidr.contains(&net.network())
                && net.prefix_len() > cidr.prefix_len();
            if !inside {
                return Err(FieldError::new(
                    f,
                    format!("{e:?} must be a strict subset of cidr {:?}", block.cidr),
                ));
            }
            except.push(net);
        }
        except.sort();
        except.dedup();
        return Ok(Peer::Block { cidr, except });
    }
    let pods = match &peer.pod_selector {
        Some(s) => Selector::parse(s, &format!("{field}.podSelector"))?,
        None => Selector::everything(),
    };
    let scope = match (&peer.namespace_selector, &peer.pod_selector) {
        (Some(ns), _) => {
            NsScope::Selected(Selector::parse(ns, &format!("{field}.namespaceSelector"))?)
        }
        (None, Some(_)) => NsScope::Own(String::new()), // namespace filled in by the caller
        (None, None) => {
            return Err(FieldError::new(
                field,
                "must specify one of podSelector, namespaceSelector or ipBlock",
            ))
        }
    };
    Ok(Peer::Pods { scope, pods })
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if !s.contains('/') {
        return Err(format!("{s:?} is not a CIDR (expected ADDRESS/PREFIX)"));
    }
    IpNet::from_str(s)
        // Host bits set ("10.0.0.1/8") are accepted and masked, as the
        // API server long did.
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR"))
}

fn lower_port(field: &str, port: &NetworkPolicyPort) -> Result<PortSpec, FieldError> {
    let protocol = match port.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(p) => Protocol::from_api(p).ok_or_else(|| {
            FieldError::new(
                format!("{field}.protocol"),
                format!("{p:?} is not one of TCP, UDP, SCTP"),
            )
        })?,
    };
    let check_num = |n: i32, f: &str| -> Result<u16, FieldError> {
        u16::try_from(n).ok().filter(|p| *p >= 1).ok_or_else(|| {
            FieldError::new(
                format!("{field}.{f}"),
                format!("{n} is not between 1 and 65535"),
            )
        })
    };
    match (&port.port, port.end_port) {
        (None, None) => Ok(PortSpec::Any(protocol)),
        (None, Some(_)) => Err(FieldError::new(
            format!("{field}.endPort"),
            "may only be set together with a numeric port",
        )),
        (Some(IntOrString::Int(p)), end) => {
            let first = check_num(*p, "port")?;
            let last = match end {
                None => first,
                Some(e) => {
                    let last = check_num(e, "endPort")?;
                    if last < first {
                        return Err(FieldError::new(
                            format!("{field}.endPort"),
                            format!("{last} must be greater than or equal to port {first}"),
                        ));
                    }
                    last
                }
            };
            Ok(PortSpec::Range(protocol, first, last))
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                return Err(FieldError::new(
                    format!("{field}.endPort"),
                    "may not be set when port is a named port",
                ));
            }
            // A string holding digits is how YAML sometimes spells a number.
            if let Ok(n) = name.parse::<i32>() {
                let p = check_num(n, "port")?;
                return Ok(PortSpec::Range(protocol, p, p));
            }
            check_port_name(name)
                .map_err(|p| FieldError::new(format!("{field}.port"), format!("{name:?}: {p}")))?;
            Ok(PortSpec::Named(protocol, name.clone()))
        }
    }
}

/// IANA_SVC_NAME: 1-15 of `[a-z0-9-]`, a letter somewhere, no `-` at either
/// end or twice in a row.
fn check_port_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err("is not a valid port name (IANA_SVC_NAME: 1-15 lowercase alphanumerics or '-', with a letter)")
    }
}

// ---------------------------------------------------------------------------
// The cluster as the compiler indexes it

#[derive(Clone, Debug)]
struct PodInfo<'a> {
    namespace: &'a str,
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
    ips: &'a [IpAddr],
    pod: &'a SlimPod,
}

struct Index<'a> {
    /// Namespace labels, including `kubernetes.io/metadata.name`.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Workload pods (not host-network, not finished) by namespace.
    pods_by_ns: BTreeMap<&'a str, Vec<PodInfo<'a>>>,
}

impl<'a> Index<'a> {
    fn build(snapshot: &'a Snapshot) -> Index<'a> {
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for ns in &snapshot.namespaces {
            let Some(name) = ns.metadata.name.clone() else {
                continue;
            };
            let mut labels = model::labels_of(&ns.metadata).clone();
            labels
                .entry(NAMESPACE_NAME_LABEL.to_string())
                .or_insert_with(|| name.clone());
            namespaces.insert(name, labels);
        }
        let mut pods_by_ns: BTreeMap<&str, Vec<PodInfo<'_>>> = BTreeMap::new();
        for pod in &snapshot.pods {
            if !model::is_workload(pod) {
                continue;
            }
            let name = &*pod.name;
            let namespace = &*pod.namespace;
            if !namespaces.contains_key(namespace) {
                // A pod in a namespace the snapshot lacks: the API server
                // would still have labelled that namespace with its name.
                let labels =
                    BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string())]);
                namespaces.insert(namespace.to_string(), labels);
            }
            pods_by_ns.entry(namespace).or_default().push(PodInfo {
                namespace,
                name,
                labels: &pod.labels,
                ips: &pod.ips,
                pod,
            });
        }
        for pods in pods_by_ns.values_mut() {
            pods.sort_by(|a, b| a.name.cmp(b.name));
        }
        Index {
            namespaces,
            pods_by_ns,
        }
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo<'a>> {
        let pods = self.pods_by_ns.get(namespace)?;
        pods.binary_search_by(|p| p.name.cmp(name))
            .ok()
            .and_then(|i| pods.get(i))
    }

    /// Pods a pod-selector peer selects.
    fn select(&self, scope: &NsScope, pods: &Selector) -> Vec<&PodInfo<'a>> {
        let mut out = Vec::new();
        let mut take = |ns: &str| {
            for p in self.pods_by_ns.get(ns).into_iter().flatten() {
                if pods.matches(p.labels) {
                    out.push(p);
                }
            }
        };
        match scope {
            NsScope::Own(ns) => take(ns),
            NsScope::Selected(sel) => {
                for (ns, labels) in &self.namespaces {
                    if sel.matches(labels) {
                        take(ns);
                    }
                }
            }
        }
        out
    }
}

/// Every container port named `name` with `protocol` (containers and
/// sidecars, see [`SlimPod::named_ports`]).
fn named_ports(pod: &SlimPod, protocol: Protocol, name: &str) -> Vec<u16> {
    pod.named_ports
        .iter()
        .filter(|p| &*p.name == name && p.protocol == Some(protocol))
        .map(|p| p.port)
        .collect()
}

// ---------------------------------------------------------------------------
// Sets

/// What a set holds, independent of family; its identity names the set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SetSpec {
    Pods { scope: NsScope, pods: Selector },
    Block { cidr: IpNet, except: Vec<IpNet> },
    NamedPort { protocol: Protocol, name: String },
}

impl SetSpec {
    fn kind_tag(&self) -> char {
        match self {
            SetSpec::Pods { .. } => 'p',
            SetSpec::Block { .. } => 'n',
            SetSpec::NamedPort { .. } => 'q',
        }
    }

    /// Canonical text: the identity hashed into the set name, and its description.
    fn identity(&self) -> String {
        match self {
            SetSpec::Pods {
                scope: NsScope::Own(ns),
                pods,
            } => format!("pods in namespace {ns} matching {pods}"),
            SetSpec::Pods {
                scope: NsScope::Selected(nss),
                pods,
            } => {
                format!("pods in namespaces matching {nss} matching {pods}")
            }
            SetSpec::Block { cidr, except } => {
                let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
                format!("ipBlock {cidr} except [{}]", ex.join(","))
            }
            SetSpec::NamedPort { protocol, name } => format!("named port {name}/{protocol}"),
        }
    }

    fn name(&self, family: Family) -> String {
        naming::set_name(self.kind_tag(), family, &self.identity())
    }
}

/// Entries of a `hash:net` set for one ipBlock. `hash:net` refuses a /0,
/// so a /0 becomes its two /1 halves; `except` ranges are `nomatch`
/// entries, which win because a lookup takes the most specific prefix.
fn block_entries(cidr: &IpNet, except: &[IpNet]) -> Vec<SetEntry> {
    let halves: Vec<IpNet> = if cidr.prefix_len() == 0 {
        cidr.subnets(1).map(|h| h.collect()).unwrap_or_default()
    } else {
        vec![*cidr]
    };
    // An except equal to a /0's half would be the same net twice, once
    // `nomatch`: ipset refuses the second add, and the half is all excepted.
    let mut out: Vec<SetEntry> = halves
        .into_iter()
        .filter(|h| !except.contains(h))
        .map(|net| SetEntry::Net {
            net,
            nomatch: false,
        })
        .collect();
    out.extend(except.iter().map(|net| SetEntry::Net {
        net: *net,
        nomatch: true,
    }));
    out
}

// ---------------------------------------------------------------------------
// Compilation

/// Compiles `snapshot` into the ruleset for this node.
pub fn compile(snapshot: &Snapshot) -> Compiled {
    let index = Index::build(snapshot);
    let mut errors = Vec::new();

    // Validate every policy; keep the valid ones, sorted and unique by identity.
    let mut policies: BTreeMap<(String, String), PolicySpec> = BTreeMap::new();
    for policy in &snapshot.policies {
        match lower_policy(policy) {
            Ok(mut p) => {
                fill_own_namespace(&mut p);
                policies
                    .entry((p.namespace.clone(), p.name.clone()))
                    .or_insert(p);
            }
            Err(e) => errors.push(e),
        }
    }

    let mut ruleset = Ruleset::default();
    let mut sets: BTreeSet<SetSpec> = BTreeSet::new();

    // Local workloads: which policies select each, in each direction.
    let mut locals: Vec<&model::LocalWorkload> = snapshot.local.iter().collect();
    locals.sort_by(|a, b| a.interface.cmp(&b.interface));
    locals.dedup_by(|a, b| a.interface == b.interface);
    let mut dispatch: Vec<(String, (String, String))> = Vec::new(); // iface -> workload chains
    let mut unknown: BTreeSet<String> = snapshot.unknown_interfaces.iter().cloned().collect();
    let mut used_policies: BTreeSet<(String, String)> = BTreeSet::new();
    let mut workload_chains: Vec<(String, Chain, Family)> = Vec::new();
    for wl in locals {
        if !wl.interface.starts_with(naming::INTERFACE_PREFIX) {
            // FORWARD only sends `tort+` traffic to tortie's chains: policy
            // for this pod could never be enforced, so say so loudly.
            errors.push(PolicyError {
                kind: "Pod",
                namespace: wl.namespace.clone(),
                name: wl.pod.clone(),
                field: "interface".into(),
                problem: format!(
                    "host interface {:?} does not start with {:?}; its traffic bypasses policy",
                    wl.interface,
                    naming::INTERFACE_PREFIX
                ),
            });
            continue;
        }
        let Some(pod) = index.pod(&wl.namespace, &wl.pod) else {
            // A veth whose pod is gone, host-network or finished: fail closed.
            unknown.insert(wl.interface.clone());
            continue;
        };
        let selecting: Vec<&PolicySpec> = policies
            .range((wl.namespace.clone(), String::new())..)
            .take_while(|((ns, _), _)| *ns == wl.namespace)
            .map(|(_, p)| p)
            .filter(|p| p.selector.matches(pod.labels))
            .collect();
        let mut names = (String::new(), String::new());
        for direction in [Direction::Ingress, Direction::Egress] {
            let chain_name = naming::workload_chain(pod.namespace, pod.name, direction);
            let mut chain = Chain::default();
            chain.rules.push(rule(
                vec![],
                Action::SetMark {
                    value: 0,
                    mask: ACCEPT_MARK,
                },
                Note::Plumbing,
            ));
            let mut isolated = false;
            for p in &selecting {
                if p.rules(direction).is_none() {
                    continue;
                }
                isolated = true;
                used_policies.insert((p.namespace.clone(), p.name.clone()));
                chain.rules.push(rule(
                    vec![],
                    Action::Jump(naming::policy_chain(&p.namespace, &p.name, direction)),
                    Note::PolicyJump {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                    },
                ));
                chain
                    .rules
                    .push(rule(vec![accept_mark()], Action::Return, Note::Plumbing));
            }
            let (ns, podname) = (pod.namespace.to_string(), pod.name.to_string());
            chain.rules.push(if isolated {
                rule(
                    vec![],
                    Action::Drop,
                    Note::DefaultDeny {
                        namespace: ns,
                        pod: podname,
                        direction,
                    },
                )
            } else {
                rule(
                    vec![],
                    Action::Return,
                    Note::NotIsolated {
                        namespace: ns,
                        pod: podname,
                        direction,
                    },
                )
            });
            match direction {
                Direction::Ingress => names.0 = chain_name.clone(),
                Direction::Egress => names.1 = chain_name.clone(),
            }
            for family in Family::ALL {
                workload_chains.push((chain_name.clone(), chain.clone(), family));
            }
        }
        unknown.remove(&wl.interface);
        dispatch.push((wl.interface.clone(), names));
    }
    for (name, chain, family) in workload_chains {
        ruleset.table_mut(family).chains.insert(name, chain);
    }

    // One chain per used policy and direction, shared by its workloads.
    for key in &used_policies {
        let Some(p) = policies.get(key) else { continue };
        for direction in [Direction::Ingress, Direction::Egress] {
            let Some(rules) = p.rules(direction) else {
                continue;
            };
            let name = naming::policy_chain(&p.namespace, &p.name, direction);
            for family in Family::ALL {
                let chain = policy_chain(p, direction, rules, family, &mut sets);
                ruleset.table_mut(family).chains.insert(name.clone(), chain);
            }
        }
    }

    // Fixed chains and dispatch.
    for family in Family::ALL {
        let table = ruleset.table_mut(family);
        for (name, chain) in fixed_chains(&dispatch, &unknown) {
            table.chains.insert(name, chain);
        }
    }

    // Sets the chains use, with their members.
    materialize_sets(&index, &sets, &mut ruleset);

    errors.sort_by(|a, b| {
        (a.kind, &a.namespace, &a.name, &a.field).cmp(&(b.kind, &b.namespace, &b.name, &b.field))
    });
    errors.dedup();

    Compiled { ruleset, errors }
}

fn fill_own_namespace(p: &mut PolicySpec) {
    let ns = p.namespace.clone();
    for rules in [p.ingress.as_mut(), p.egress.as_mut()]
        .into_iter()
        .flatten()
    {
        for r in rules.iter_mut() {
            for peer in r.peers.iter_mut().flatten() {
                if let Peer::Pods {
                    scope: NsScope::Own(n),
                    ..
                } = peer
                {
                    n.clone_from(&ns);
                }
            }
        }
    }
}

fn rule(matches: Vec<Match>, action: Action, note: Note) -> Rule {
    Rule {
        matches,
        action,
        note,
    }
}

fn accept_mark() -> Match {
    Match::Mark {
        value: ACCEPT_MARK,
        mask: ACCEPT_MARK,
    }
}

fn policy_chain(
    p: &PolicySpec,
    direction: Direction,
    rules: &[RuleSpec],
    family: Family,
    sets: &mut BTreeSet<SetSpec>,
) -> Chain {
    let addr = match direction {
        Direction::Ingress => Addr::Src,
        Direction::Egress => Addr::Dst,
    };
    let mut chain = Chain::default();
    for (index, r) in rules.iter().enumerate() {
        let note = Note::PolicyRule {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            direction,
            index,
        };
        // Peer alternatives: `None` (no peer match) when the rule has no peers.
        let peer_matches: Vec<Option<Match>> = match &r.peers {
            None => vec![None],
            Some(peers) => peers
                .iter()
                .filter_map(|peer| {
                    let spec = match peer {
                        Peer::Pods { scope, pods } => SetSpec::Pods {
                            scope: scope.clone(),
                            pods: pods.clone(),
                        },
                        Peer::Block { cidr, except } => {
                            // An ipBlock of the other family cannot match here.
                            if Family::of(&cidr.addr()) != family {
                                return None;
                            }
                            SetSpec::Block {
                                cidr: *cidr,
                                except: except.clone(),
                            }
                        }
                    };
                    let set = spec.name(family);
                    sets.insert(spec);
                    Some(Some(Match::Set { set, addr }))
                })
                .collect(),
        };
        let port_matches: Vec<Vec<Match>> = match &r.ports {
            None => vec![vec![]],
            Some(ports) => ports
                .iter()
                .map(|port| match port {
                    PortSpec::Any(protocol) => vec![Match::Proto {
                        protocol: *protocol,
                        ports: None,
                    }],
                    PortSpec::Range(protocol, a, b) => vec![Match::Proto {
                        protocol: *protocol,
                        ports: Some((*a, *b)),
                    }],
                    PortSpec::Named(protocol, name) => {
                        let spec = SetSpec::NamedPort {
                            protocol: *protocol,
                            name: name.clone(),
                        };
                        let set = spec.name(family);
                        sets.insert(spec);
                        vec![
                            Match::Proto {
                                protocol: *protocol,
                                ports: None,
                            },
                            Match::DstIpPortSet { set },
                        ]
                    }
                })
                .collect(),
        };
        let mut wrote = false;
        for peer in &peer_matches {
            for ports in &port_matches {
                let mut matches: Vec<Match> = peer.iter().cloned().collect();
                matches.extend(ports.iter().cloned());
                chain.rules.push(rule(
                    matches,
                    Action::SetMark {
                        value: ACCEPT_MARK,
                        mask: ACCEPT_MARK,
                    },
                    note.clone(),
                ));
                wrote = true;
            }
        }
        if wrote {
            chain
                .rules
                .push(rule(vec![accept_mark()], Action::Return, Note::Plumbing));
        }
    }
    chain
}

fn tort_in() -> Match {
    Match::InIface(Iface::Prefix(naming::INTERFACE_PREFIX.to_string()))
}

fn tort_out() -> Match {
    Match::OutIface(Iface::Prefix(naming::INTERFACE_PREFIX.to_string()))
}

fn ct(states: &[CtState]) -> Match {
    Match::CtState(states.to_vec())
}

fn fixed_chains(
    dispatch: &[(String, (String, String))],
    unknown: &BTreeSet<String>,
) -> Vec<(String, Chain)> {
    use CtState::{Established, Invalid, Related};
    let from = FROM_WORKLOAD_CHAIN.to_string();
    let to = TO_WORKLOAD_CHAIN.to_string();
    let forward = Chain {
        rules: vec![
            rule(
                vec![tort_in(), ct(&[Related, Established])],
                Action::Accept,
                Note::Conntrack,
            ),
            rule(
                vec![tort_out(), ct(&[Related, Established])],
                Action::Accept,
                Note::Conntrack,
            ),
            rule(
                vec![tort_in(), ct(&[Invalid])],
                Action::Drop,
                Note::Conntrack,
            ),
            rule(
                vec![tort_out(), ct(&[Invalid])],
                Action::Drop,
                Note::Conntrack,
            ),
            rule(vec![tort_in()], Action::Jump(from.clone()), Note::Plumbing),
            rule(vec![tort_out()], Action::Jump(to.clone()), Note::Plumbing),
            rule(vec![tort_in()], Action::Accept, Note::Plumbing),
            rule(vec![tort_out()], Action::Accept, Note::Plumbing),
        ],
    };
    let input = Chain {
        rules: vec![
            rule(
                vec![tort_in(), ct(&[Related, Established])],
                Action::Accept,
                Note::Conntrack,
            ),
            rule(
                vec![tort_in(), ct(&[Invalid])],
                Action::Drop,
                Note::Conntrack,
            ),
            rule(vec![tort_in()], Action::Jump(from.clone()), Note::Plumbing),
        ],
    };
    let output = Chain {
        rules: vec![
            rule(
                vec![tort_out(), ct(&[Invalid])],
                Action::Drop,
                Note::Conntrack,
            ),
            rule(vec![tort_out()], Action::Accept, Note::HostToPod),
        ],
    };
    let mut chains = vec![
        (BuiltinChain::Forward.target().to_string(), forward),
        (BuiltinChain::Input.target().to_string(), input),
        (BuiltinChain::Output.target().to_string(), output),
    ];
    chains.extend(dispatch_chains(Direction::Egress, dispatch, unknown));
    chains.extend(dispatch_chains(Direction::Ingress, dispatch, unknown));
    chains
}

/// The dispatch bucket of an interface: the hex digit after `tort`.
fn bucket(iface: &str) -> Option<char> {
    let c = iface
        .strip_prefix(naming::INTERFACE_PREFIX)?
        .chars()
        .next()?;
    (c.is_ascii_digit() || ('a'..='f').contains(&c)).then_some(c)
}

/// `TORT-FROM-WL` (egress) / `TORT-TO-WL` (ingress) and their buckets.
///
/// A NEW packet would otherwise walk one rule per local workload; the top
/// chain fans out on the first hex digit of the interface name (`-i tort3+`
/// → `TORT-FROM-WL-3`), so a lookup costs at most 16 + n/16 rules, and a pod
/// added or removed rewrites only its bucket. Each level ends in DROP: a
/// `tort` interface nobody dispatched is a workload we know nothing about.
fn dispatch_chains(
    direction: Direction,
    dispatch: &[(String, (String, String))],
    unknown: &BTreeSet<String>,
) -> Vec<(String, Chain)> {
    let top_name = match direction {
        Direction::Egress => FROM_WORKLOAD_CHAIN,
        Direction::Ingress => TO_WORKLOAD_CHAIN,
    };
    let iface_match = |i: Iface| match direction {
        Direction::Egress => Match::InIface(i),
        Direction::Ingress => Match::OutIface(i),
    };
    let mut top = Chain::default();
    let mut buckets: BTreeMap<char, Chain> = BTreeMap::new();
    let mut entries: Vec<(&String, Rule)> = Vec::new();
    for (iface, (ingress, egress)) in dispatch {
        let target = match direction {
            Direction::Egress => egress,
            Direction::Ingress => ingress,
        };
        let r = rule(
            vec![iface_match(Iface::Exact(iface.clone()))],
            Action::Goto(target.clone()),
            Note::Plumbing,
        );
        entries.push((iface, r));
    }
    for iface in unknown {
        let note = Note::UnknownInterface {
            interface: Some(iface.clone()),
        };
        entries.push((
            iface,
            rule(
                vec![iface_match(Iface::Exact(iface.clone()))],
                Action::Drop,
                note,
            ),
        ));
    }
    for (iface, r) in entries {
        match bucket(iface) {
            Some(b) => buckets.entry(b).or_default().rules.push(r),
            None => top.rules.push(r),
        }
    }
    let fail_closed = || {
        rule(
            vec![],
            Action::Drop,
            Note::UnknownInterface { interface: None },
        )
    };
    let mut out = Vec::new();
    for (b, mut chain) in buckets {
        let name = format!("{top_name}-{b}");
        top.rules.push(rule(
            vec![iface_match(Iface::Prefix(format!(
                "{}{b}",
                naming::INTERFACE_PREFIX
            )))],
            Action::Goto(name.clone()),
            Note::Plumbing,
        ));
        chain.rules.push(fail_closed());
        out.push((name, chain));
    }
    // Only `tort+` traffic enters the top chain.
    top.rules.push(fail_closed());
    out.push((top_name.to_string(), top));
    out
}

fn materialize_sets(index: &Index<'_>, sets: &BTreeSet<SetSpec>, ruleset: &mut Ruleset) {
    for spec in sets {
        // Collected unsorted, then built in one go: sorting a Vec and bulk
        // building the set is much cheaper than thousands of inserts.
        let mut v4: Vec<SetEntry> = Vec::new();
        let mut v6: Vec<SetEntry> = Vec::new();
        let mut push = |ip: &IpAddr, e: SetEntry| match Family::of(ip) {
            Family::V4 => v4.push(e),
            Family::V6 => v6.push(e),
        };
        let (kind, families): (SetKind, &[Family]) = match spec {
            SetSpec::Pods { scope, pods } => {
                for pod in index.select(scope, pods) {
                    for ip in pod.ips {
                        push(ip, SetEntry::Ip(*ip));
                    }
                }
                (SetKind::HashIp, &Family::ALL)
            }
            SetSpec::Block { cidr, except } => {
                for e in block_entries(cidr, except) {
                    push(&cidr.addr(), e);
                }
                // The other family never references a block set.
                match Family::of(&cidr.addr()) {
                    Family::V4 => (SetKind::HashNet, &[Family::V4]),
                    Family::V6 => (SetKind::HashNet, &[Family::V6]),
                }
            }
            SetSpec::NamedPort { protocol, name } => {
                for pod in index.pods_by_ns.values().flatten() {
                    if pod.ips.is_empty() {
                        continue;
                    }
                    for port in named_ports(pod.pod, *protocol, name) {
                        for ip in pod.ips {
                            push(
                                ip,
                                SetEntry::IpPort {
                                    ip: *ip,
                                    protocol: *protocol,
                                    port,
                                },
                            );
                        }
                    }
                }
                (SetKind::HashIpPort, &Family::ALL)
            }
        };
        for family in families {
            let entries = match family {
                Family::V4 => std::mem::take(&mut v4),
                Family::V6 => std::mem::take(&mut v6),
            };
            let entries: BTreeSet<SetEntry> = entries.into_iter().collect();
            ruleset.sets.insert(
                spec.name(*family),
                IpSet {
                    family: *family,
                    kind,
                    describe: spec.identity(),
                    entries,
                },
            );
        }
    }
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
