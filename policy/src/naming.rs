//! Stable names for interfaces, chains and sets.
//!
//! Every name is derived from the identity of the object it belongs to (kind,
//! namespace, name, direction, or a canonical selector text) through SHA-1,
//! so the same cluster state gives the same names on every run and on every
//! node, and goldens stay stable. Limits: iptables chain names <= 28
//! characters, ipset names <= 31.

use sha1::{Digest, Sha1};

/// Longest iptables chain name (XT_EXTENSION_MAXNAMELEN - 1 = 28).
pub const MAX_CHAIN_LEN: usize = 28;
/// Longest ipset name (IPSET_MAXNAMELEN - 1 = 31).
pub const MAX_SET_LEN: usize = 31;
/// Prefix of host-side workload interfaces.
pub const INTERFACE_PREFIX: &str = "tort";
/// Prefix of every chain tortie owns.
pub const CHAIN_PREFIX: &str = "TORT-";
/// Prefix of every ipset tortie owns.
pub const SET_PREFIX: &str = "tort-";

/// Hex digits of SHA-1 kept in chain and set names: 64 bits, so a collision
/// among a node's few thousand objects is out of reach.
const HASH_HEX: usize = 16;

fn sha1_hex(input: &str) -> String {
    let digest = Sha1::digest(input.as_bytes());
    hex::encode(digest)
}

fn short_hash(input: &str) -> String {
    let mut h = sha1_hex(input);
    h.truncate(HASH_HEX);
    h
}

/// Host-side veth name of a pod: `tort` + the first 11 hex digits of
/// SHA-1(`"<namespace>.<pod>"`) (15 characters, the kernel's IFNAMSIZ - 1).
pub fn host_interface_name(namespace: &str, pod: &str) -> String {
    let mut h = sha1_hex(&format!("{namespace}.{pod}"));
    h.truncate(11);
    format!("{INTERFACE_PREFIX}{h}")
}

/// Traffic direction relative to the workload a chain protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Direction {
    /// Traffic to the workload (`-o <iface>` on the host).
    Ingress,
    /// Traffic from the workload (`-i <iface>` on the host).
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// `TORT-PI-<hash>` / `TORT-PE-<hash>`: the chain shared by every workload a
/// policy selects, for one direction.
pub fn policy_chain(namespace: &str, name: &str, direction: Direction) -> String {
    let tag = match direction {
        Direction::Ingress => "PI",
        Direction::Egress => "PE",
    };
    let h = short_hash(&format!(
        "NetworkPolicy/{namespace}/{name}/{}",
        direction.as_str()
    ));
    format!("{CHAIN_PREFIX}{tag}-{h}")
}

/// `TORT-TW-<hash>` (to the workload) / `TORT-FW-<hash>` (from it).
pub fn workload_chain(namespace: &str, pod: &str, direction: Direction) -> String {
    let tag = match direction {
        Direction::Ingress => "TW",
        Direction::Egress => "FW",
    };
    let h = short_hash(&format!("Pod/{namespace}/{pod}/{}", direction.as_str()));
    format!("{CHAIN_PREFIX}{tag}-{h}")
}

/// Name of an ipset from its kind tag (`p` pods, `n` net, `q` named port),
/// family digit and the canonical identity text of what it holds.
pub fn set_name(kind: char, family: crate::ruleset::Family, identity: &str) -> String {
    let h = short_hash(identity);
    format!("{SET_PREFIX}{kind}{}-{h}", family.digit())
}

/// Prefix of the temporary sets a full refill builds before `swap`.
pub const TEMP_SET_PREFIX: &str = "tort-tmp-";

/// The temporary twin of `set` (`tort-p4-…` → `tort-tmp-p4-…`, 28 chars).
pub fn temp_set_name(set: &str) -> String {
    format!(
        "{TEMP_SET_PREFIX}{}",
        set.strip_prefix(SET_PREFIX).unwrap_or(set)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Family;

    #[test]
    fn interface_name_matches_the_cni_contract() {
        let name = host_interface_name("default", "web-0");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("tort"));
        // SHA-1("default.web-0") computed independently with sha1sum.
        assert_eq!(name, "tort".to_string() + &sha1_hex("default.web-0")[..11]);
    }

    #[test]
    fn names_are_stable_and_fit_the_kernel_limits() {
        let long = "x".repeat(253);
        let c = policy_chain(&long, &long, Direction::Ingress);
        assert!(c.len() <= MAX_CHAIN_LEN, "{c}");
        assert_eq!(c, policy_chain(&long, &long, Direction::Ingress));
        let w = workload_chain(&long, &long, Direction::Egress);
        assert!(w.len() <= MAX_CHAIN_LEN, "{w}");
        let s = set_name('p', Family::V6, &long);
        assert!(temp_set_name(&s).len() <= MAX_SET_LEN, "{s}");
        assert_ne!(
            policy_chain("a", "b", Direction::Ingress),
            policy_chain("a", "b", Direction::Egress)
        );
        assert_ne!(
            policy_chain("a", "bc", Direction::Ingress),
            policy_chain("ab", "c", Direction::Ingress)
        );
    }

    #[test]
    fn golden_names_do_not_drift() {
        // Pinned so an accidental change of the identity text shows up here
        // before it renames every chain on every node.
        // Values computed independently (Python hashlib).
        assert_eq!(
            policy_chain("default", "deny-all", Direction::Ingress),
            "TORT-PI-3fc178b2a2f67f55"
        );
        assert_eq!(
            workload_chain("default", "web-0", Direction::Egress),
            "TORT-FW-5363bbe97380f18e"
        );
        assert_eq!(host_interface_name("default", "web-0"), "tort0d7763386da");
        assert_eq!(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
