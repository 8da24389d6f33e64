//! Explains one flow's verdict by walking the compiled chains.
use std::net::IpAddr;

use crate::compile::Compiled;
use crate::model::Snapshot;
pub use crate::ruleset::Protocol;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub from: Endpoint,
    pub to: Endpoint,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Pod { namespace: String, name: String },
    Ip(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideVerdict {
    NotIsolated,
    Allowed { policy: String, rule: usize },
    Denied { policies: Vec<String> },
    Dropped { reason: String },
    NotEvaluated { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub allowed: bool,
    pub egress: SideVerdict,
    pub ingress: SideVerdict,
}

pub fn explain(compiled: &Compiled, snapshot: &Snapshot, flow: &Flow) -> Explanation {
    let _ = (compiled, snapshot, flow);
    Explanation {
        allowed: true,
        egress: SideVerdict::NotIsolated,
        ingress: SideVerdict::NotIsolated,
    }
}

impl std::fmt::Display for SideVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "verdict: {}",
            if self.allowed { "ALLOWED" } else { "DENIED" }
        )?;
        writeln!(f, "egress (source side): {}", self.egress)?;
        write!(f, "ingress (destination side): {}", self.ingress)
    }
}
