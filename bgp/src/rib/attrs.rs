//! Path attributes as the RIB stores them, and their interner.
//!
//! A route is a prefix plus an `Arc<PathAttrs>`. Every UPDATE's NLRI share
//! one attribute set, and the [`Interner`] makes equal sets one
//! allocation across UPDATEs and peers, so a million routes with a handful
//! of attribute sets cost a handful of allocations. Attribute sets are
//! immutable once interned; policy and export build a new set and intern
//! it.
//!
//! [`PathAttrs`] is the codec's [`PathAttributes`] normalised for route
//! selection: ORIGIN and AS_PATH always present (4-octet, AS4_PATH already
//! merged by the caller), and the next hop of the route's family folded
//! in (NEXT_HOP for IPv4 NLRI, the MP_REACH next hop otherwise; `None` for
//! our own routes until export picks the session's address). The
//! component types are the codec's.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::wire::{
    Aggregator, AsPath, Community, ExtendedCommunity, LargeCommunity, NextHop, Origin,
    PathAttributes, UnknownAttribute,
};

/// A route's path attributes after decoding (and, in the RIB, after
/// import processing). Shared as `Arc` between routes.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH (4-octet ASNs).
    pub as_path: AsPath,
    /// The next hop for the route's family; `None` = ours, set on export.
    pub next_hop: Option<NextHop>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only; removed on eBGP import and export).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR.
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES (RFC 1997), in received order.
    pub communities: Vec<Community>,
    /// EXTENDED_COMMUNITIES (RFC 4360), passed through.
    pub extended_communities: Vec<ExtendedCommunity>,
    /// LARGE_COMMUNITY (RFC 8092), in received order.
    pub large_communities: Vec<LargeCommunity>,
    /// ORIGINATOR_ID (RFC 4456 §8).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456 §8), nearest first.
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised optional transitive attributes, passed on.
    pub unknown: Vec<UnknownAttribute>,
}

impl Default for PathAttrs {
    fn default() -> Self {
        Self::local()
    }
}

impl PathAttrs {
    /// Attributes for a locally originated route: ORIGIN IGP, empty
    /// AS_PATH, next hop chosen per session on export.
    pub fn local() -> Self {
        PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop: None,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            aggregator: None,
            communities: Vec::new(),
            extended_communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            unknown: Vec::new(),
        }
    }

    /// From a decoded UPDATE's attributes and the next hop of the NLRI
    /// at hand (`attrs.next_hop` for the plain IPv4 NLRI field,
    /// `mp_reach.next_hop` for MP_REACH). Call
    /// [`PathAttributes::reconcile_as4`] first on 2-octet sessions. A
    /// missing ORIGIN or AS_PATH (which RFC 7606 already turned into
    /// treat-as-withdraw) reads as IGP / empty.
    pub fn from_wire(a: &PathAttributes, next_hop: Option<NextHop>) -> Self {
        PathAttrs {
            origin: a.origin.unwrap_or(Origin::Igp),
            as_path: a.as_path.clone().unwrap_or_default(),
            next_hop,
            med: a.multi_exit_disc,
            local_pref: a.local_pref,
            atomic_aggregate: a.atomic_aggregate,
            aggregator: a.aggregator,
            communities: a.communities.clone(),
            extended_communities: a.extended_communities.clone(),
            large_communities: a.large_communities.clone(),
            originator_id: a.originator_id,
            cluster_list: a.cluster_list.clone(),
            unknown: a.unknown.clone(),
        }
    }

    /// The codec's attributes for sending (the next hop goes to the
    /// packer separately; NEXT_HOP is filled for IPv4 next hops).
    pub fn to_wire(&self) -> PathAttributes {
        PathAttributes {
            origin: Some(self.origin),
            as_path: Some(self.as_path.clone()),
            next_hop: match self.next_hop {
                Some(NextHop::V4(a)) => Some(a),
                _ => None,
            },
            multi_exit_disc: self.med,
            local_pref: self.local_pref,
            atomic_aggregate: self.atomic_aggregate,
            aggregator: self.aggregator,
            communities: self.communities.clone(),
            originator_id: self.originator_id,
            cluster_list: self.cluster_list.clone(),
            extended_communities: self.extended_communities.clone(),
            as4_path: None,
            as4_aggregator: None,
            large_communities: self.large_communities.clone(),
            unknown: self
                .unknown
                .iter()
                .map(UnknownAttribute::propagated)
                .collect(),
        }
    }

    /// The address the next hop forwards to (the global one for IPv6).
    pub fn next_hop_addr(&self) -> Option<IpAddr> {
        self.next_hop.map(|nh| match nh {
            NextHop::V4(a) => IpAddr::V4(a),
            NextHop::V6 { global, .. } => IpAddr::V6(global),
        })
    }

    /// Whether the route carries `c`.
    pub fn has_community(&self, c: Community) -> bool {
        self.communities.contains(&c)
    }
}

/// Hash-consing table for attribute sets: equal sets become one `Arc`.
///
/// Sets no route uses any more are dropped by [`Interner::collect`], which
/// runs when the table has doubled since the last run, so the table stays
/// within a factor of two of the live sets.
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<Arc<PathAttrs>>,
    collect_at: usize,
}

impl Interner {
    /// The shared copy of `attrs`.
    pub fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        if let Some(a) = self.set.get(&attrs) {
            return Arc::clone(a);
        }
        if self.set.len() >= self.collect_at {
            self.collect();
            self.collect_at = (self.set.len() * 2).max(1024);
        }
        let a = Arc::new(attrs);
        self.set.insert(Arc::clone(&a));
        a
    }

    /// Drops sets only the interner still holds.
    pub fn collect(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
    }

    /// Number of distinct sets held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no set is held.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Asn;

    #[test]
    fn interner_shares_equal_sets_and_collects_unused() {
        let mut i = Interner::default();
        let a = i.intern(PathAttrs::local());
        let b = i.intern(PathAttrs::local());
        assert!(Arc::ptr_eq(&a, &b));
        let c = i.intern(PathAttrs {
            med: Some(5),
            ..PathAttrs::local()
        });
        assert_eq!(i.len(), 2);
        drop(c);
        i.collect();
        assert_eq!(i.len(), 1);
        drop((a, b));
        i.collect();
        assert!(i.is_empty());
    }

    #[test]
    fn wire_round_trip() {
        let a = PathAttrs {
            as_path: AsPath::from_sequence([Asn(65001), Asn(65002)]),
            next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
            med: Some(7),
            communities: vec![Community::NO_EXPORT],
            ..PathAttrs::local()
        };
        let w = a.to_wire();
        assert_eq!(w.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(PathAttrs::from_wire(&w, a.next_hop), a);
    }
}
