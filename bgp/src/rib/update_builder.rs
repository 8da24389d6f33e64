//! Building UPDATEs from Adj-RIB-Out changes.
//!
//! Pending prefixes are grouped by their (interned, so compared by
//! pointer) attribute set and cut into groups that fit one UPDATE of
//! `max_message_len` octets (4096, or 65535 with RFC 8654 extended
//! messages). The speaker encodes each [`OutUpdate`] as one UPDATE
//! message: IPv4 in the classic NLRI/Withdrawn Routes fields, IPv6 in
//! MP_REACH_NLRI/MP_UNREACH_NLRI (RFC 4760). Withdrawals come first so a
//! peer never briefly holds both an old and a new more-specific.
//!
//! Sizes use [`PathAttrs::encoded_len_estimate`], which never falls short,
//! so a group may leave a few octets unused but never overflows.

use std::collections::HashMap;
use std::sync::Arc;

use super::attrs::PathAttrs;
use super::prefix::{Family, Prefix};

/// BGP message header (RFC 4271 §4.1).
const HEADER: usize = 19;
/// Withdrawn Routes Length + Total Path Attribute Length.
const UPDATE_FIXED: usize = 4;
/// MP_UNREACH_NLRI: extended-length attribute header, AFI, SAFI.
const MP_UNREACH_FIXED: usize = 4 + 3;

/// One UPDATE to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum OutUpdate {
    /// Withdraw these prefixes (one family).
    Withdraw {
        /// The family (IPv6 goes in MP_UNREACH_NLRI).
        family: Family,
        /// The prefixes.
        prefixes: Vec<Prefix>,
    },
    /// Announce these prefixes (one family) with one attribute set.
    Announce {
        /// The family (IPv6 goes in MP_REACH_NLRI with the next hop from
        /// `attrs`).
        family: Family,
        /// The exported attributes.
        attrs: Arc<PathAttrs>,
        /// The prefixes.
        prefixes: Vec<Prefix>,
    },
}

impl OutUpdate {
    /// The prefixes it carries.
    pub fn prefixes(&self) -> &[Prefix] {
        match self {
            OutUpdate::Withdraw { prefixes, .. } | OutUpdate::Announce { prefixes, .. } => prefixes,
        }
    }
}

/// Cuts `prefixes` into runs whose NLRI bytes fit `budget`.
fn split(prefixes: Vec<Prefix>, budget: usize) -> Vec<Vec<Prefix>> {
    let budget = budget.max(17); // room for at least one IPv6 /128
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for p in prefixes {
        let n = p.nlri_len();
        if used + n > budget && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += n;
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Builds the UPDATEs for one family's changes, in first-change order:
/// `changes` pairs each prefix with what the peer should now hold.
pub(crate) fn build(
    family: Family,
    changes: Vec<(Prefix, Option<Arc<PathAttrs>>)>,
    max_message_len: usize,
) -> Vec<OutUpdate> {
    let room = max_message_len.saturating_sub(HEADER + UPDATE_FIXED);
    let mut withdrawn = Vec::new();
    let mut groups: Vec<(Arc<PathAttrs>, Vec<Prefix>)> = Vec::new();
    let mut index: HashMap<*const PathAttrs, usize> = HashMap::new();
    for (p, attrs) in changes {
        match attrs {
            None => withdrawn.push(p),
            Some(a) => {
                let i = *index.entry(Arc::as_ptr(&a)).or_insert_with(|| {
                    groups.push((Arc::clone(&a), Vec::new()));
                    groups.len() - 1
                });
                if let Some(g) = groups.get_mut(i) {
                    g.1.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    let wbudget = match family {
        Family::Ipv4 => room,
        Family::Ipv6 => room.saturating_sub(MP_UNREACH_FIXED),
    };
    for prefixes in split(withdrawn, wbudget) {
        out.push(OutUpdate::Withdraw { family, prefixes });
    }
    for (attrs, prefixes) in groups {
        let budget = room.saturating_sub(attrs.encoded_len_estimate());
        for prefixes in split(prefixes, budget) {
            out.push(OutUpdate::Announce {
                family,
                attrs: Arc::clone(&attrs),
                prefixes,
            });
        }
    }
    out
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::attrs::{AsPath, NextHop};
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn groups_by_attribute_set_and_fits_messages() {
        let a = Arc::new(PathAttrs {
            as_path: AsPath::sequence([65000, 65001]),
            next_hop: NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
            ..PathAttrs::default()
        });
        let b = Arc::new(PathAttrs {
            med: Some(1),
            ..(*a).clone()
        });
        let mut changes = Vec::new();
        for i in 0..100_000u32 {
            let p = Prefix::new(Ipv4Addr::from((10 << 24) | (i << 8)).into(), 24).unwrap();
            changes.push((p, Some(Arc::clone(&a))));
        }
        changes.push(("192.0.2.0/24".parse().unwrap(), Some(Arc::clone(&b))));
        changes.push(("198.51.100.0/24".parse().unwrap(), None));
        let ups = build(Family::Ipv4, changes, 4096);
        // 1 withdraw, ~100 for the big group, 1 for the other set.
        assert!(matches!(ups[0], OutUpdate::Withdraw { .. }));
        let big = ups
            .iter()
            .filter(|u| matches!(u, OutUpdate::Announce { attrs, .. } if Arc::ptr_eq(attrs, &a)))
            .count();
        assert!((98..=110).contains(&big), "{big} UPDATEs");
        assert_eq!(ups.len(), big + 2);
        for u in &ups {
            let nlri: usize = u.prefixes().iter().map(|p| p.nlri_len()).sum();
            let attrs = match u {
                OutUpdate::Announce { attrs, .. } => attrs.encoded_len_estimate(),
                OutUpdate::Withdraw { .. } => 0,
            };
            assert!(HEADER + UPDATE_FIXED + attrs + nlri <= 4096);
        }
        let total: usize = ups.iter().map(|u| u.prefixes().len()).sum();
        assert_eq!(total, 100_002);
    }
}
