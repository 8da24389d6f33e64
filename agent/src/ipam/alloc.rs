//! The pure allocator: which addresses belong to which container.
//!
//! Owns the assignment table and every rule about which address may be
//! handed out. It does no I/O; [`super::store`] persists it.
//!
//! Usable addresses of a pod CIDR:
//!
//! | CIDR | usable |
//! |---|---|
//! | IPv4 `/0`..`/30` | all but the network and the broadcast address |
//! | IPv4 `/31` | both (RFC 3021) |
//! | IPv4 `/32` | the one address |
//! | IPv6 `/0`..`/126` | all but the subnet-router anycast address, the all-zeros interface id (RFC 4291 §2.6.1) |
//! | IPv6 `/127`, `/128` | all (RFC 6164) |
//!
//! Nothing else is reserved: pods reach their node through the link-local
//! gateway `169.254.1.1` / `fe80::1`, so no pod-CIDR address is kept for a
//! gateway.
//!
//! Rules this module keeps:
//! - an address belongs to at most one container, ever (checked again on
//!   load, so a hand-edited state file with a duplicate is refused);
//! - assigning is idempotent per container id;
//! - an assignment is all or nothing: one address per family the node has
//!   CIDRs for, or an error and no change;
//! - fresh addresses are taken round-robin after the last one handed out in
//!   that CIDR, so a just-released address is not reused at once (stale ARP
//!   entries and conntrack state on other nodes die first);
//! - an assignment outside the node's current CIDRs (the CIDR changed) is
//!   kept and reported by [`IpamState::outside`], never silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The version of the state file layout this code writes.
pub const STATE_VERSION: u32 = 1;

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who an assignment is for: the pod, its sandbox container and, for
/// garbage collection, where the sandbox's network namespace lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pod: PodKey,
    pub container_id: String,
    /// `CNI_NETNS` of the sandbox (when known).
    pub netns: Option<String>,
    /// `CNI_IFNAME` in the sandbox (when known).
    pub ifname: Option<String>,
}

impl Owner {
    pub fn new(pod: PodKey, container_id: impl Into<String>) -> Self {
        Owner {
            pod,
            container_id: container_id.into(),
            netns: None,
            ifname: None,
        }
    }
}

/// One container's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub container_id: String,
    pub pod: PodKey,
    /// Sorted, IPv4 before IPv6.
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

/// Why an assignment failed. Messages say what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("the node has no pod CIDR (Node spec.podCIDRs is empty): no address can be assigned until one is set")]
    NoCidr,
    #[error("container id is empty")]
    EmptyContainerId,
    #[error("pod {pod}: the {family} pod CIDR(s) {cidrs} are exhausted ({used} addresses assigned); delete unused pods or give the node a larger pod CIDR")]
    Exhausted {
        pod: String,
        family: &'static str,
        cidrs: String,
        used: usize,
    },
    #[error("pod {pod}: requested address {addr} is not inside the node's pod CIDRs ({cidrs})")]
    NotInCidrs {
        pod: String,
        addr: IpAddr,
        cidrs: String,
    },
    #[error("pod {pod}: requested address {addr} is not usable in {cidr} (network, broadcast or subnet-router anycast address)")]
    Reserved {
        pod: String,
        addr: IpAddr,
        cidr: IpNet,
    },
    #[error("pod {pod}: requested address {addr} is already assigned to pod {holder} (container {container})")]
    InUse {
        pod: String,
        addr: IpAddr,
        holder: String,
        container: String,
    },
    #[error("pod {pod}: the requested address list is invalid: {reason}")]
    BadRequest { pod: String, reason: String },
    #[error("container {container} already has addresses for pod {holder}, not for pod {pod}")]
    ContainerConflict {
        container: String,
        pod: String,
        holder: String,
    },
}

/// A problem found when loading a state file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state file version {found} is not supported (this agent reads version {STATE_VERSION}); was it written by a newer tortie?")]
    Version { found: u32 },
    #[error("address {addr} is assigned twice (containers {first} and {second})")]
    Duplicate {
        addr: IpAddr,
        first: String,
        second: String,
    },
    #[error("container {0} appears twice")]
    DuplicateContainer(String),
}

/// The assignment table. Serialised as the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamState {
    pub version: u32,
    /// Sorted by container id.
    pub allocations: Vec<Allocation>,
    /// The last address handed out per CIDR (`"10.244.1.0/24" -> addr`).
    #[serde(default)]
    pub cursors: BTreeMap<String, IpAddr>,
}

/// The usable range of a CIDR as integers, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    v6: bool,
    first: u128,
    last: u128,
}

impl Range {
    fn of(cidr: &IpNet) -> Range {
        match cidr {
            IpNet::V4(n) => {
                let net = u128::from(u32::from(n.network()));
                let bcast = u128::from(u32::from(n.broadcast()));
                let (first, last) = if n.prefix_len() <= 30 {
                    (net + 1, bcast - 1)
                } else {
                    (net, bcast)
                };
                Range {
                    v6: false,
                    first,
                    last,
                }
            }
            IpNet::V6(n) => {
                let net = u128::from(n.network());
                let last = u128::from(n.broadcast());
                let first = if n.prefix_len() <= 126 { net + 1 } else { net };
                Range {
                    v6: true,
                    first,
                    last,
                }
            }
        }
    }

    fn size(&self) -> u128 {
        // first <= last always; the whole IPv6 space would overflow by one,
        // which no pod CIDR is.
        (self.last - self.first).saturating_add(1)
    }

    fn contains(&self, a: u128) -> bool {
        (self.first..=self.last).contains(&a)
    }

    fn addr(&self, a: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            // In range means it fits 32 bits.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(a).unwrap_or(u32::MAX)))
        }
    }
}

fn as_int(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

fn family_name(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn list(cidrs: &[IpNet]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `addr` is a usable address of `cidr` (inside and not reserved).
pub fn usable(cidr: &IpNet, addr: &IpAddr) -> bool {
    cidr.contains(addr) && Range::of(cidr).contains(as_int(addr))
}

impl IpamState {
    pub fn new() -> Self {
        IpamState {
            version: STATE_VERSION,
            ..IpamState::default()
        }
    }

    /// Checks a loaded table: known version, no address or container twice.
    pub fn validate(&self) -> Result<(), StateError> {
        if self.version != STATE_VERSION {
            return Err(StateError::Version {
                found: self.version,
            });
        }
        let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
        let mut containers = BTreeSet::new();
        for a in &self.allocations {
            if !containers.insert(a.container_id.as_str()) {
                return Err(StateError::DuplicateContainer(a.container_id.clone()));
            }
            for ip in &a.ips {
                if let Some(first) = seen.insert(*ip, &a.container_id) {
                    return Err(StateError::Duplicate {
                        addr: *ip,
                        first: first.to_string(),
                        second: a.container_id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The allocation of a container.
    pub fn get(&self, container_id: &str) -> Option<&Allocation> {
        self.allocations
            .iter()
            .find(|a| a.container_id == container_id)
    }

    /// Every address in use, with its container.
    fn used(&self) -> BTreeMap<IpAddr, &Allocation> {
        self.allocations
            .iter()
            .flat_map(|a| a.ips.iter().map(move |ip| (*ip, a)))
            .collect()
    }

    /// Assigns addresses to `owner`: the requested ones, or one per family
    /// the node has CIDRs for. Idempotent: a container that already has
    /// addresses gets the same ones back.
    pub fn assign(
        &mut self,
        owner: Owner,
        cidrs: &[IpNet],
        requested: Option<&[IpAddr]>,
    ) -> Result<Vec<IpAddr>, AllocError> {
        if owner.container_id.is_empty() {
            return Err(AllocError::EmptyContainerId);
        }
        if let Some(existing) = self.get(&owner.container_id) {
            if existing.pod != owner.pod {
                return Err(AllocError::ContainerConflict {
                    container: owner.container_id,
                    pod: owner.pod.to_string(),
                    holder: existing.pod.to_string(),
                });
            }
            return Ok(existing.ips.clone());
        }
        if cidrs.is_empty() {
            return Err(AllocError::NoCidr);
        }
        let (ips, takeover) = match requested {
            Some(req) => self.check_requested(&owner.pod, cidrs, req)?,
            None => (self.pick(&owner.pod, cidrs)?, Vec::new()),
        };
        // A requested address still held by an older sandbox of the same
        // pod moves to the new one: a pod has one live sandbox, and the old
        // sandbox's DEL may never come.
        for addr in takeover {
            for a in &mut self.allocations {
                a.ips.retain(|ip| *ip != addr);
            }
        }
        self.allocations.retain(|a| !a.ips.is_empty());
        for ip in &ips {
            if let Some(cidr) = cidrs.iter().find(|c| usable(c, ip)) {
                self.cursors.insert(cidr.to_string(), *ip);
            }
        }
        let mut sorted = ips.clone();
        sorted.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        let alloc = Allocation {
            container_id: owner.container_id,
            pod: owner.pod,
            ips: sorted.clone(),
            netns: owner.netns,
            ifname: owner.ifname,
        };
        let at = self
            .allocations
            .partition_point(|a| a.container_id < alloc.container_id);
        self.allocations.insert(at, alloc);
        Ok(sorted)
    }

    /// Validates a requested list; returns the addresses and those to take
    /// over from older sandboxes of the same pod.
    fn check_requested(
        &self,
        pod: &PodKey,
        cidrs: &[IpNet],
        req: &[IpAddr],
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>), AllocError> {
        if req.is_empty() {
            return Err(AllocError::BadRequest {
                pod: pod.to_string(),
                reason: "the list is empty".into(),
            });
        }
        let unique: BTreeSet<&IpAddr> = req.iter().collect();
        if unique.len() != req.len() {
            return Err(AllocError::BadRequest {
                pod: pod.to_string(),
                reason: "an address is listed twice".into(),
            });
        }
        let used = self.used();
        let mut takeover = Vec::new();
        for addr in req {
            let Some(cidr) = cidrs.iter().find(|c| c.contains(addr)) else {
                return Err(AllocError::NotInCidrs {
                    pod: pod.to_string(),
                    addr: *addr,
                    cidrs: list(cidrs),
                });
            };
            if !usable(cidr, addr) {
                return Err(AllocError::Reserved {
                    pod: pod.to_string(),
                    addr: *addr,
                    cidr: *cidr,
                });
            }
            if let Some(holder) = used.get(addr) {
                if holder.pod != *pod {
                    return Err(AllocError::InUse {
                        pod: pod.to_string(),
                        addr: *addr,
                        holder: holder.pod.to_string(),
                        container: holder.container_id.clone(),
                    });
                }
                takeover.push(*addr);
            }
        }
        Ok((req.to_vec(), takeover))
    }

    /// One fresh address per family present in `cidrs`.
    fn pick(&self, pod: &PodKey, cidrs: &[IpNet]) -> Result<Vec<IpAddr>, AllocError> {
        let used = self.used();
        let mut out = Vec::new();
        for v6 in [false, true] {
            let fam: Vec<IpNet> = cidrs
                .iter()
                .filter(|c| matches!(c, IpNet::V6(_)) == v6)
                .copied()
                .collect();
            if fam.is_empty() {
                continue;
            }
            let found = fam.iter().find_map(|c| self.free_in(c, &used));
            match found {
                Some(a) => out.push(a),
                None => {
                    return Err(AllocError::Exhausted {
                        pod: pod.to_string(),
                        family: family_name(v6),
                        cidrs: list(&fam),
                        used: used.keys().filter(|a| a.is_ipv6() == v6).count(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// The first free address of `cidr` after its cursor, wrapping.
    fn free_in(&self, cidr: &IpNet, used: &BTreeMap<IpAddr, &Allocation>) -> Option<IpAddr> {
        let range = Range::of(cidr);
        let in_cidr = used.keys().filter(|a| cidr.contains(*a)).count() as u128;
        let start = self
            .cursors
            .get(&cidr.to_string())
            .map(as_int)
            .filter(|c| range.contains(*c) && *c < range.last)
            .map_or(range.first, |c| c + 1);
        // Among `in_cidr + 1` distinct candidates at least one is free,
        // so the walk is bounded by the table size, not the CIDR size.
        let tries = range.size().min(in_cidr + 1);
        let mut cand = start;
        for _ in 0..tries {
            let addr = range.addr(cand);
            if !used.contains_key(&addr) {
                return Some(addr);
            }
            cand = if cand >= range.last {
                range.first
            } else {
                cand + 1
            };
        }
        None
    }

    /// Releases a container's addresses; `None` when it had none.
    pub fn release(&mut self, container_id: &str) -> Option<Allocation> {
        let i = self
            .allocations
            .iter()
            .position(|a| a.container_id == container_id)?;
        Some(self.allocations.remove(i))
    }

    /// Releases every allocation `keep(pod, container id)` rejects.
    pub fn gc(&mut self, mut keep: impl FnMut(&PodKey, &str) -> bool) -> Vec<Allocation> {
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.allocations)
            .into_iter()
            .partition(|a| keep(&a.pod, &a.container_id));
        self.allocations = kept;
        gone
    }

    /// Addresses per pod (all its containers), for the policy model.
    pub fn assigned(&self) -> BTreeMap<(String, String), Vec<IpAddr>> {
        let mut out: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
        for a in &self.allocations {
            out.entry((a.pod.namespace.clone(), a.pod.name.clone()))
                .or_default()
                .extend(a.ips.iter().copied());
        }
        for ips in out.values_mut() {
            ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
            ips.dedup();
        }
        out
    }

    /// Assignments no longer inside any of `cidrs` (the node's pod CIDR
    /// changed): `(container id, pod, address)`. They stay assigned until
    /// their pod goes; the operator sees them flagged.
    pub fn outside(&self, cidrs: &[IpNet]) -> Vec<(String, PodKey, IpAddr)> {
        self.allocations
            .iter()
            .flat_map(|a| {
                a.ips
                    .iter()
                    .filter(|ip| !cidrs.iter().any(|c| c.contains(*ip)))
                    .map(move |ip| (a.container_id.clone(), a.pod.clone(), *ip))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }
    fn owner(pod: &str, c: &str) -> Owner {
        Owner::new(PodKey::new("default", pod), c)
    }

    #[test]
    fn v4_skips_network_and_broadcast() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/30")];
        let a = s.assign(owner("a", "c1"), &cidrs, None).expect("a");
        let b = s.assign(owner("b", "c2"), &cidrs, None).expect("b");
        assert_eq!(a, vec![ip("10.244.1.1")]);
        assert_eq!(b, vec![ip("10.244.1.2")]);
        let e = s.assign(owner("c", "c3"), &cidrs, None).expect_err("full");
        assert!(matches!(e, AllocError::Exhausted { used: 2, .. }), "{e}");
        assert!(e.to_string().contains("10.244.1.0/30 are exhausted"), "{e}");
    }

    #[test]
    fn point_to_point_and_host_cidrs_use_every_address() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/31")];
        s.assign(owner("a", "c1"), &cidrs, None).expect("a");
        s.assign(owner("b", "c2"), &cidrs, None).expect("b");
        assert!(s.assign(owner("c", "c3"), &cidrs, None).is_err());
        let mut s = IpamState::new();
        assert_eq!(
            s.assign(owner("a", "c1"), &[net("10.244.1.9/32")], None)
                .expect("a"),
            vec![ip("10.244.1.9")]
        );
        assert_eq!(
            s.assign(owner("b", "c2"), &[net("fd00::5/128")], None)
                .expect("b"),
            vec![ip("fd00::5")]
        );
    }

    #[test]
    fn dual_stack_gets_one_of_each_and_v6_skips_anycast() {
        let mut s = IpamState::new();
        let cidrs = [net("fd00:1::/64"), net("10.244.1.0/24")];
        let a = s.assign(owner("a", "c1"), &cidrs, None).expect("a");
        assert_eq!(a, vec![ip("10.244.1.1"), ip("fd00:1::1")]);
        let m = s.assigned();
        assert_eq!(m.get(&("default".into(), "a".into())), Some(&a));
    }

    #[test]
    fn idempotent_per_container_and_conflict_on_other_pod() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/24")];
        let a = s.assign(owner("a", "c1"), &cidrs, None).expect("a");
        let again = s.assign(owner("a", "c1"), &cidrs, None).expect("again");
        assert_eq!(a, again);
        assert_eq!(s.allocations.len(), 1);
        let e = s
            .assign(owner("b", "c1"), &cidrs, None)
            .expect_err("conflict");
        assert!(matches!(e, AllocError::ContainerConflict { .. }), "{e}");
    }

    #[test]
    fn release_does_not_reuse_at_once_and_wraps() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/29")]; // .1 - .6
        let a = s.assign(owner("a", "c1"), &cidrs, None).expect("a");
        assert_eq!(s.release("c1").map(|x| x.ips), Some(a.clone()));
        assert_eq!(s.release("c1"), None);
        let b = s.assign(owner("b", "c2"), &cidrs, None).expect("b");
        assert_ne!(a, b, "a just-released address is not reused first");
        for i in 3..=7 {
            s.assign(owner(&format!("p{i}"), &format!("c{i}")), &cidrs, None)
                .expect("fill");
        }
        // Wrapped around to .1, which was free again.
        assert!(s
            .assigned()
            .values()
            .flatten()
            .any(|x| *x == ip("10.244.1.1")));
        assert!(s.assign(owner("z", "cz"), &cidrs, None).is_err());
    }

    #[test]
    fn requested_addresses_must_be_inside_usable_and_free() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/24"), net("fd00:1::/64")];
        let want = [ip("10.244.1.7")];
        assert_eq!(
            s.assign(owner("a", "c1"), &cidrs, Some(&want)).expect("a"),
            want.to_vec()
        );
        let e = s
            .assign(owner("b", "c2"), &cidrs, Some(&want))
            .expect_err("in use");
        assert!(
            e.to_string()
                .contains("10.244.1.7 is already assigned to pod default/a (container c1)"),
            "{e}"
        );
        let e = s
            .assign(owner("b", "c2"), &cidrs, Some(&[ip("10.245.0.1")]))
            .expect_err("outside");
        assert!(
            e.to_string().contains(
                "10.245.0.1 is not inside the node's pod CIDRs (10.244.1.0/24, fd00:1::/64)"
            ),
            "{e}"
        );
        let e = s
            .assign(owner("b", "c2"), &cidrs, Some(&[ip("10.244.1.255")]))
            .expect_err("broadcast");
        assert!(matches!(e, AllocError::Reserved { .. }), "{e}");
        let e = s
            .assign(owner("b", "c2"), &cidrs, Some(&[]))
            .expect_err("empty");
        assert!(matches!(e, AllocError::BadRequest { .. }), "{e}");
        let two = [ip("10.244.1.8"), ip("10.244.1.8")];
        assert!(s.assign(owner("b", "c2"), &cidrs, Some(&two)).is_err());
        // Nothing was assigned by the failures.
        assert_eq!(s.allocations.len(), 1);
        // Auto assignment never hands out a requested one.
        let b = s.assign(owner("b", "c2"), &cidrs, None).expect("b");
        assert!(!b.contains(&ip("10.244.1.7")));
    }

    #[test]
    fn a_new_sandbox_of_the_same_pod_takes_its_requested_address_over() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/24")];
        let want = [ip("10.244.1.7")];
        s.assign(owner("a", "old"), &cidrs, Some(&want))
            .expect("old");
        s.assign(owner("a", "new"), &cidrs, Some(&want))
            .expect("new");
        assert!(s.get("old").is_none());
        assert_eq!(s.get("new").map(|a| a.ips.clone()), Some(want.to_vec()));
        s.validate().expect("still consistent");
    }

    #[test]
    fn no_cidr_and_empty_container_are_errors() {
        let mut s = IpamState::new();
        assert_eq!(
            s.assign(owner("a", "c1"), &[], None),
            Err(AllocError::NoCidr)
        );
        assert_eq!(
            s.assign(owner("a", ""), &[net("10.244.1.0/24")], None),
            Err(AllocError::EmptyContainerId)
        );
    }

    #[test]
    fn changed_cidr_flags_old_assignments_and_keeps_them() {
        let mut s = IpamState::new();
        s.assign(owner("a", "c1"), &[net("10.244.1.0/24")], None)
            .expect("a");
        let new = [net("10.244.2.0/24")];
        let b = s.assign(owner("b", "c2"), &new, None).expect("b");
        assert_eq!(b, vec![ip("10.244.2.1")]);
        assert_eq!(
            s.outside(&new),
            vec![(
                "c1".to_string(),
                PodKey::new("default", "a"),
                ip("10.244.1.1")
            )]
        );
        assert!(s.get("c1").is_some());
    }

    #[test]
    fn gc_releases_what_keep_rejects() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/24")];
        s.assign(owner("a", "c1"), &cidrs, None).expect("a");
        s.assign(owner("b", "c2"), &cidrs, None).expect("b");
        let gone = s.gc(|pod, _| pod.name == "a");
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].pod.name, "b");
        assert_eq!(s.allocations.len(), 1);
    }

    #[test]
    fn validate_refuses_duplicates_and_unknown_versions() {
        let mut s = IpamState::new();
        let cidrs = [net("10.244.1.0/24")];
        s.assign(owner("a", "c1"), &cidrs, None).expect("a");
        s.assign(owner("b", "c2"), &cidrs, None).expect("b");
        s.validate().expect("fine");
        let mut bad = s.clone();
        bad.allocations[1].ips = bad.allocations[0].ips.clone();
        assert!(matches!(bad.validate(), Err(StateError::Duplicate { .. })));
        let mut bad = s.clone();
        bad.version = 9;
        assert!(bad.validate().is_err());
        let mut bad = s;
        bad.allocations[1].container_id = "c1".into();
        assert!(bad.validate().is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign(u8, bool),
        Release(u8),
        Request(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, any::<bool>()).prop_map(|(c, same)| Op::Assign(c, same)),
            2 => (0u8..40).prop_map(Op::Release),
            1 => (0u8..40, 0u8..16).prop_map(|(c, a)| Op::Request(c, a)),
        ]
    }

    proptest! {
        /// Whatever the sequence, no address is ever held twice, every
        /// address is usable in the CIDRs, and re-assigning a container
        /// gives the same addresses.
        #[test]
        fn never_a_duplicate(ops in proptest::collection::vec(op(), 1..200)) {
            let cidrs = [net("10.244.1.0/28"), net("fd00:1::/125")];
            let mut s = IpamState::new();
            for op in ops {
                match op {
                    Op::Assign(c, same) => {
                        let o = owner(&format!("p{c}"), &format!("c{c}"));
                        let before = s.get(&o.container_id).map(|a| a.ips.clone());
                        let r = s.assign(o, &cidrs, None);
                        if let (Some(b), Ok(got)) = (before, &r) {
                            prop_assert_eq!(&b, got);
                        }
                        if same {
                            let again = s.assign(owner(&format!("p{c}"), &format!("c{c}")), &cidrs, None);
                            prop_assert_eq!(r.ok(), again.ok());
                        }
                    }
                    Op::Release(c) => { s.release(&format!("c{c}")); }
                    Op::Request(c, a) => {
                        let want = [ip(&format!("10.244.1.{a}"))];
                        let _ = s.assign(owner(&format!("p{c}"), &format!("r{c}")), &cidrs, Some(&want));
                    }
                }
                prop_assert!(s.validate().is_ok(), "{:?}", s.validate());
                for a in &s.allocations {
                    for ip in &a.ips {
                        prop_assert!(cidrs.iter().any(|c| usable(c, ip)), "{} unusable", ip);
                    }
                }
            }
        }
    }
}
