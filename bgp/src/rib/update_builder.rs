//! Building UPDATEs from Adj-RIB-Out changes.
//!
//! Pending prefixes are grouped by their (interned, so compared by
//! pointer) attribute set: one [`OutUpdate`] per family and attribute set,
//! withdrawals first so a peer never briefly holds both an old and a new
//! path. [`OutUpdate::encode`] hands each group to the codec's packer
//! ([`pack_announcements`], [`pack_withdrawals`]), which cuts it into as
//! few messages as the session's maximum size allows: 100,000 /24s with
//! one attribute set become about a hundred 4096-octet UPDATEs.

use std::collections::HashMap;
use std::sync::Arc;

use super::attrs::PathAttrs;
use crate::wire::{
    pack_announcements, pack_withdrawals, EncodeError, Family, NextHop, NlriEntry, Prefix,
    SessionContext,
};

/// A group of changes for one peer, one family.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum OutUpdate {
    /// Withdraw these prefixes.
    Withdraw {
        /// The family (IPv6 goes in MP_UNREACH_NLRI).
        family: Family,
        /// The prefixes.
        prefixes: Vec<Prefix>,
    },
    /// Announce these prefixes with one attribute set.
    Announce {
        /// The family (IPv6 goes in MP_REACH_NLRI).
        family: Family,
        /// The exported attributes.
        attrs: Arc<PathAttrs>,
        /// The next hop (from `attrs`, always set by export).
        next_hop: NextHop,
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

    /// Appends the group as complete UPDATE messages (headers included)
    /// for a session with context `ctx`; returns how many messages.
    pub fn encode(&self, ctx: &SessionContext, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        match self {
            OutUpdate::Withdraw { family, prefixes } => pack_withdrawals(
                *family,
                prefixes.iter().map(|p| NlriEntry::new(*p)),
                ctx,
                out,
            ),
            OutUpdate::Announce {
                family,
                attrs,
                next_hop,
                prefixes,
            } => pack_announcements(
                &attrs.to_wire(),
                *family,
                *next_hop,
                prefixes.iter().map(|p| NlriEntry::new(*p)),
                ctx,
                out,
            ),
        }
    }
}

/// Groups one family's changes, in first-change order: `changes` pairs
/// each prefix with what the peer should now hold.
pub(crate) fn build(
    family: Family,
    changes: Vec<(Prefix, Option<Arc<PathAttrs>>)>,
) -> Vec<OutUpdate> {
    let mut withdrawn = Vec::new();
    let mut groups: Vec<(Arc<PathAttrs>, NextHop, Vec<Prefix>)> = Vec::new();
    let mut index: HashMap<*const PathAttrs, usize> = HashMap::new();
    for (p, attrs) in changes {
        // Export always sets a next hop; a set without one cannot be
        // sent and is withdrawn instead.
        let Some((a, nh)) = attrs.and_then(|a| a.next_hop.map(|nh| (a, nh))) else {
            withdrawn.push(p);
            continue;
        };
        let i = *index.entry(Arc::as_ptr(&a)).or_insert_with(|| {
            groups.push((Arc::clone(&a), nh, Vec::new()));
            groups.len() - 1
        });
        if let Some(g) = groups.get_mut(i) {
            g.2.push(p);
        }
    }
    let mut out = Vec::with_capacity(groups.len() + 1);
    if !withdrawn.is_empty() {
        out.push(OutUpdate::Withdraw {
            family,
            prefixes: withdrawn,
        });
    }
    out.extend(
        groups
            .into_iter()
            .map(|(attrs, next_hop, prefixes)| OutUpdate::Announce {
                family,
                attrs,
                next_hop,
                prefixes,
            }),
    );
    out
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::{AsPath, Asn};
    use std::net::Ipv4Addr;

    #[test]
    fn hundred_thousand_prefixes_one_set_is_about_a_hundred_updates() {
        let a = Arc::new(PathAttrs {
            as_path: AsPath::from_sequence([Asn(65000), Asn(65001)]),
            next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
            ..PathAttrs::local()
        });
        let b = Arc::new(PathAttrs {
            med: Some(1),
            ..(*a).clone()
        });
        let mut changes = Vec::new();
        for i in 0..100_000u32 {
            let p = Prefix::v4(Ipv4Addr::from((10 << 24) | (i << 8)), 24).unwrap();
            changes.push((p, Some(Arc::clone(&a))));
        }
        changes.push(("192.0.2.0/24".parse().unwrap(), Some(Arc::clone(&b))));
        changes.push(("198.51.100.0/24".parse().unwrap(), None));
        let groups = build(Family::IPV4_UNICAST, changes);
        assert_eq!(groups.len(), 3);
        assert!(matches!(groups[0], OutUpdate::Withdraw { .. }));
        let ctx = SessionContext::four_octet();
        let mut bytes = Vec::new();
        let big = groups[1].encode(&ctx, &mut bytes).unwrap();
        assert!((98..=105).contains(&big), "{big} UPDATEs");
        assert_eq!(groups[2].encode(&ctx, &mut bytes).unwrap(), 1);
        assert_eq!(groups[0].encode(&ctx, &mut bytes).unwrap(), 1);
        let total: usize = groups.iter().map(|u| u.prefixes().len()).sum();
        assert_eq!(total, 100_002);
    }
}
