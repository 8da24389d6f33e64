//! Explains one flow's verdict by walking the compiled chains.
//!
//! Owns a small iptables evaluator over the IR (interfaces, conntrack state
//! NEW, protocol/port, ipset membership with `hash:net` most-specific and
//! `nomatch` semantics, marks, jump/goto/return). It must never re-derive
//! NetworkPolicy semantics from the policies: the answer comes from the same
//! ruleset the kernel gets, so a compiler bug shows up here too.

use std::fmt;
use std::net::IpAddr;

use crate::compile::Compiled;
use crate::model::{self, Snapshot};
pub use crate::ruleset::Protocol;
use crate::ruleset::{
    Action, Addr, CtState, Family, IpSet, Match, Note, Rule, Ruleset, SetEntry, ACCEPT_MARK,
};

/// One connection attempt: `from` opens `protocol` to `to`:`port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub from: Endpoint,
    pub to: Endpoint,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod (by name) or a bare address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Pod { namespace: String, name: String },
    Ip(IpAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Endpoint::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The verdict of one side (the source's egress or the destination's ingress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideVerdict {
    /// No policy selecting the workload has this direction in its policyTypes.
    NotIsolated,
    /// Isolated, and rule `rule` of NetworkPolicy `policy` ("ns/name") allowed it.
    Allowed { policy: String, rule: usize },
    /// Isolated by these policies ("ns/name"), and none of their rules matched.
    Denied { policies: Vec<String> },
    /// Dropped before policy: fail closed (unknown interface or pod) or no address.
    Dropped { reason: String },
    /// This side is not a workload on this node, so this node does not decide it.
    NotEvaluated { reason: String },
}

impl SideVerdict {
    /// Whether this side lets the flow through (or does not decide it here).
    pub fn permits(&self) -> bool {
        !matches!(
            self,
            SideVerdict::Denied { .. } | SideVerdict::Dropped { .. }
        )
    }
}

/// Both sides of a flow and the overall verdict on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Neither side denied or dropped it.
    pub allowed: bool,
    pub egress: SideVerdict,
    pub ingress: SideVerdict,
}

/// Explains `flow` against `compiled` (the ruleset of the node `snapshot`
/// describes). Uses the snapshot only to find the endpoints' addresses and
/// interfaces.
pub fn explain(compiled: &Compiled, snapshot: &Snapshot, flow: &Flow) -> Explanation {
    let from = resolve(snapshot, &flow.from);
    let to = resolve(snapshot, &flow.to);
    // IPv4 first when both endpoints have both families.
    let chosen = [Family::V4, Family::V6]
        .into_iter()
        .find_map(|f| Some((f, from.ip(f)?, to.ip(f)?)));
    let Some((family, src, dst)) = chosen else {
        let reason = if from.ips.is_empty() {
            format!("{} has no address", flow.from)
        } else if to.ips.is_empty() {
            format!("{} has no address", flow.to)
        } else {
            format!("{} and {} share no address family", flow.from, flow.to)
        };
        return Explanation {
            allowed: false,
            egress: SideVerdict::Dropped {
                reason: reason.clone(),
            },
            ingress: SideVerdict::Dropped { reason },
        };
    };
    let packet = |in_iface: &str, out_iface: &str| Packet {
        in_iface: in_iface.to_string(),
        out_iface: out_iface.to_string(),
        src,
        dst,
        protocol: flow.protocol,
        port: flow.port,
    };
    // Each side is walked on its own through TORT-FORWARD, with the other
    // interface a non-workload one; on one node both checks run in the same
    // FORWARD pass and clear the mark between them, so this is equivalent.
    const UPLINK: &str = "eth0";
    let egress = match (&from.iface, &from.not_here) {
        (Some(iface), None) => side(&compiled.ruleset, family, &packet(iface, UPLINK)),
        (_, Some(reason)) => SideVerdict::NotEvaluated {
            reason: reason.clone(),
        },
        (None, None) => SideVerdict::NotEvaluated {
            reason: format!("{} is not on this node", flow.from),
        },
    };
    let ingress = match (&to.iface, &to.not_here) {
        (Some(iface), None) => side(&compiled.ruleset, family, &packet(UPLINK, iface)),
        (_, Some(reason)) => SideVerdict::NotEvaluated {
            reason: reason.clone(),
        },
        (None, None) => SideVerdict::NotEvaluated {
            reason: format!("{} is not on this node", flow.to),
        },
    };
    Explanation {
        allowed: egress.permits() && ingress.permits(),
        egress,
        ingress,
    }
}

struct Resolved {
    ips: Vec<IpAddr>,
    /// Host-side interface when the endpoint is a pod on this node.
    iface: Option<String>,
    /// Why this endpoint is not evaluated as a workload here.
    not_here: Option<String>,
}

impl Resolved {
    fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }
}

fn resolve(snapshot: &Snapshot, ep: &Endpoint) -> Resolved {
    match ep {
        Endpoint::Ip(ip) => Resolved {
            ips: vec![*ip],
            iface: None,
            not_here: Some(format!("{ip} is not a workload")),
        },
        Endpoint::Pod { namespace, name } => {
            let pod = snapshot
                .pods
                .iter()
                .find(|p| *p.name == **name && *p.namespace == **namespace);
            let iface = snapshot
                .local
                .iter()
                .find(|w| &w.namespace == namespace && &w.pod == name)
                .map(|w| w.interface.clone());
            let Some(pod) = pod else {
                // A local veth without a pod is still walked: it must drop.
                return Resolved {
                    ips: Vec::new(),
                    iface,
                    not_here: None,
                };
            };
            let not_here = if model::is_workload(pod) {
                None
            } else {
                Some(format!(
                    "pod {namespace}/{name} is host-network or finished, not a workload"
                ))
            };
            Resolved {
                ips: model::pod_ips(pod),
                iface,
                not_here,
            }
        }
    }
}

#[derive(Debug)]
struct Packet {
    in_iface: String,
    out_iface: String,
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    port: u16,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accept,
    Drop,
    Return,
}

#[derive(Default)]
struct Trace<'r> {
    mark: u32,
    /// The policy rule whose mark is standing (cleared with the mark).
    allowed_by: Option<&'r Note>,
    policies: Vec<String>,
    /// Note of the rule that ended the walk (or returned from a workload chain).
    decided_by: Option<&'r Note>,
}

fn side(ruleset: &Ruleset, family: Family, packet: &Packet) -> SideVerdict {
    let mut trace = Trace::default();
    let outcome = walk(
        ruleset,
        family,
        crate::ruleset::BuiltinChain::Forward.target(),
        packet,
        &mut trace,
        0,
    );
    match (outcome, trace.decided_by) {
        (Outcome::Drop, Some(Note::DefaultDeny { .. })) => {
            let mut policies = trace.policies;
            policies.dedup();
            SideVerdict::Denied { policies }
        }
        (Outcome::Drop, Some(Note::UnknownInterface { .. })) => SideVerdict::Dropped {
            reason: "workload interface without a known pod (fail closed)".to_string(),
        },
        (Outcome::Drop, other) => SideVerdict::Dropped {
            reason: format!("dropped by {other:?}"),
        },
        (_, _) => match trace.allowed_by {
            Some(Note::PolicyRule {
                namespace,
                name,
                index,
                ..
            }) => SideVerdict::Allowed {
                policy: format!("{namespace}/{name}"),
                rule: *index,
            },
            _ => SideVerdict::NotIsolated,
        },
    }
}

/// Chains are at most a few levels deep; a loop in a hand-made ruleset ends here.
const MAX_DEPTH: usize = 16;

fn walk<'r>(
    ruleset: &'r Ruleset,
    family: Family,
    chain: &str,
    packet: &Packet,
    trace: &mut Trace<'r>,
    depth: usize,
) -> Outcome {
    let Some(c) = ruleset.table(family).chains.get(chain) else {
        return Outcome::Return;
    };
    if depth > MAX_DEPTH {
        return Outcome::Drop;
    }
    for r in &c.rules {
        if !matches(ruleset, r, packet, trace.mark) {
            continue;
        }
        match &r.action {
            Action::Accept => {
                trace.decided_by = Some(&r.note);
                return Outcome::Accept;
            }
            Action::Drop => {
                trace.decided_by = Some(&r.note);
                return Outcome::Drop;
            }
            Action::Return => {
                if matches!(r.note, Note::NotIsolated { .. }) {
                    trace.decided_by = Some(&r.note);
                }
                return Outcome::Return;
            }
            Action::Jump(target) | Action::Goto(target) => {
                if let Note::PolicyJump { namespace, name } = &r.note {
                    trace.policies.push(format!("{namespace}/{name}"));
                }
                let o = walk(ruleset, family, target, packet, trace, depth + 1);
                if o != Outcome::Return || matches!(r.action, Action::Goto(_)) {
                    return o;
                }
            }
            Action::SetMark { value, mask } => {
                trace.mark = (trace.mark & !mask) ^ value;
                if trace.mark & ACCEPT_MARK == 0 {
                    trace.allowed_by = None;
                } else if matches!(r.note, Note::PolicyRule { .. }) && trace.allowed_by.is_none() {
                    trace.allowed_by = Some(&r.note);
                }
            }
        }
    }
    Outcome::Return
}

fn matches(ruleset: &Ruleset, rule: &Rule, p: &Packet, mark: u32) -> bool {
    rule.matches.iter().all(|m| match m {
        Match::InIface(i) => i.matches(&p.in_iface),
        Match::OutIface(i) => i.matches(&p.out_iface),
        // A first packet of a flow is NEW.
        Match::CtState(states) => states.contains(&CtState::New),
        Match::Proto { protocol, ports } => {
            *protocol == p.protocol && ports.is_none_or(|(a, b)| (a..=b).contains(&p.port))
        }
        Match::Set { set, addr } => {
            let ip = match addr {
                Addr::Src => p.src,
                Addr::Dst => p.dst,
            };
            ruleset.sets.get(set).is_some_and(|s| set_contains(s, ip))
        }
        Match::DstIpPortSet { set } => ruleset.sets.get(set).is_some_and(|s| {
            s.entries.contains(&SetEntry::IpPort {
                ip: p.dst,
                protocol: p.protocol,
                port: p.port,
            })
        }),
        Match::Mark { value, mask } => mark & mask == *value,
    })
}

/// ipset semantics: `hash:ip` exact; `hash:net` the most specific
/// containing entry decides, and a `nomatch` entry means "not in the set".
fn set_contains(set: &IpSet, ip: IpAddr) -> bool {
    let mut best: Option<(u8, bool)> = None;
    for e in &set.entries {
        match e {
            SetEntry::Ip(x) if *x == ip => return true,
            SetEntry::Net { net, nomatch }
                if net.contains(&ip) && best.is_none_or(|(len, _)| net.prefix_len() > len) =>
            {
                best = Some((net.prefix_len(), !nomatch));
            }
            _ => {}
        }
    }
    best.is_some_and(|(_, m)| m)
}

impl fmt::Display for SideVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SideVerdict::NotIsolated => f.write_str("allowed: no policy isolates this side"),
            SideVerdict::Allowed { policy, rule } => {
                write!(f, "allowed by NetworkPolicy {policy} rule {rule}")
            }
            SideVerdict::Denied { policies } => {
                write!(
                    f,
                    "denied: isolated by {}; no rule matched",
                    policies.join(", ")
                )
            }
            SideVerdict::Dropped { reason } => write!(f, "dropped: {reason}"),
            SideVerdict::NotEvaluated { reason } => write!(f, "not evaluated here: {reason}"),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verdict: {}",
            if self.allowed { "ALLOWED" } else { "DENIED" }
        )?;
        writeln!(f, "egress (source side): {}", self.egress)?;
        write!(f, "ingress (destination side): {}", self.ingress)
    }
}
