//! Path attributes as the RIB stores them, and their interner.
//!
//! A route is a prefix plus an `Arc<PathAttrs>`. Every UPDATE's NLRI share
//! one attribute set, and the [`Interner`] makes equal sets one
//! allocation across UPDATEs and peers, so a million routes with a handful
//! of attribute sets cost a handful of allocations. Attribute sets are
//! immutable once interned; policy and export build a new set and intern
//! it.
//!
//! These are the decoded, semantic attributes (RFC 4271 §5, RFC 1997,
//! RFC 8092, RFC 4456). The codec's wire types convert into them; anything
//! the RIB does not interpret rides along opaquely in
//! [`PathAttrs::other`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// An autonomous system number (4-octet, RFC 6793).
pub type Asn = u32;

/// ORIGIN (RFC 4271 §5.1.1); the order is the decision order (lower wins).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub enum Origin {
    /// Learned from an interior protocol (or originated here).
    #[default]
    Igp = 0,
    /// Learned by EGP.
    Egp = 1,
    /// Learned some other way.
    Incomplete = 2,
}

/// The kind of one AS_PATH segment (RFC 4271 §4.3, RFC 5065 §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum SegmentKind {
    /// Unordered set: counts as one AS in path length.
    Set,
    /// Ordered sequence: each AS counts.
    Sequence,
    /// Confederation sequence: counts zero.
    ConfedSequence,
    /// Confederation set: counts zero.
    ConfedSet,
}

/// One AS_PATH segment.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Segment {
    /// Set or sequence.
    pub kind: SegmentKind,
    /// The ASes, first = most recently prepended.
    pub asns: Vec<Asn>,
}

/// AS_PATH (RFC 4271 §5.1.2), 4-octet ASNs (after RFC 6793 AS4_PATH merge,
/// which is the codec's job).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct AsPath {
    /// Segments, first = nearest.
    pub segments: Vec<Segment>,
}

/// The most ASes one segment may carry (its length is one octet).
const MAX_SEGMENT: usize = 255;

impl AsPath {
    /// A path of one AS_SEQUENCE (empty input gives the empty path).
    pub fn sequence(asns: impl IntoIterator<Item = Asn>) -> Self {
        let asns: Vec<Asn> = asns.into_iter().collect();
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![Segment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }
    }

    /// Path length for the decision process (RFC 4271 §9.1.2.2 a): an
    /// AS_SET counts one whatever its size, confederation segments count
    /// zero (RFC 5065 §5.3).
    pub fn decision_len(&self) -> u32 {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => u32::try_from(s.asns.len()).unwrap_or(u32::MAX),
                SegmentKind::Set => 1,
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => 0,
            })
            .fold(0u32, u32::saturating_add)
    }

    /// The first AS of the path when it starts with an AS_SEQUENCE: the
    /// neighbouring AS the route came from (RFC 4271 §9.1.2.2 c).
    pub fn first_asn(&self) -> Option<Asn> {
        let seg = self.segments.first()?;
        match seg.kind {
            SegmentKind::Sequence => seg.asns.first().copied(),
            _ => None,
        }
    }

    /// Whether `asn` appears anywhere in the path (loop detection,
    /// RFC 4271 §9.1.2).
    pub fn contains(&self, asn: Asn) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The path with `asn` prepended as on export to an external peer
    /// (RFC 4271 §5.1.2 b): into the leading AS_SEQUENCE if there is room,
    /// else as a new segment.
    pub fn prepended(&self, asn: Asn) -> Self {
        let mut out = self.clone();
        match out.segments.first_mut() {
            Some(seg) if seg.kind == SegmentKind::Sequence && seg.asns.len() < MAX_SEGMENT => {
                seg.asns.insert(0, asn);
            }
            _ => out.segments.insert(
                0,
                Segment {
                    kind: SegmentKind::Sequence,
                    asns: vec![asn],
                },
            ),
        }
        out
    }

    /// Whether the path is empty (locally originated, or iBGP-learned
    /// from inside our AS).
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.asns.is_empty())
    }
}

/// NEXT_HOP (RFC 4271 §5.1.3) or the MP_REACH next hop (RFC 4760 §3,
/// RFC 2545 §3 for the IPv6 link-local second address).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum NextHop {
    /// No next hop yet: a locally originated route; export fills in the
    /// session's local address.
    #[default]
    Unset,
    /// An IPv4 next hop.
    V4(Ipv4Addr),
    /// An IPv6 next hop, with the link-local one when the peer sent two.
    V6 {
        /// The global address.
        global: Ipv6Addr,
        /// The link-local address, if any.
        link_local: Option<Ipv6Addr>,
    },
}

impl NextHop {
    /// The address to forward to (the global one for IPv6).
    pub fn addr(self) -> Option<IpAddr> {
        match self {
            NextHop::Unset => None,
            NextHop::V4(a) => Some(IpAddr::V4(a)),
            NextHop::V6 { global, .. } => Some(IpAddr::V6(global)),
        }
    }
    /// A next hop from one address.
    pub fn from_addr(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => NextHop::V4(a),
            IpAddr::V6(a) => NextHop::V6 {
                global: a,
                link_local: None,
            },
        }
    }
}

/// A standard community (RFC 1997).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT: not to be advertised outside the AS (or confederation).
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE: not to be advertised to any peer.
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED: not outside the member AS; without
    /// confederations the same as NO_EXPORT.
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);

    /// `asn:value` in the usual 16:16 split.
    pub fn new(asn: u16, value: u16) -> Self {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

/// A large community (RFC 8092 §3): global administrator and two data
/// parts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct LargeCommunity(pub u32, pub u32, pub u32);

/// AGGREGATOR (RFC 4271 §5.1.7), 4-octet AS.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Aggregator {
    /// The AS that aggregated.
    pub asn: Asn,
    /// Its BGP identifier.
    pub router_id: Ipv4Addr,
}

/// An attribute the RIB does not interpret, kept with its flags so it is
/// passed on (optional transitive ones get the Partial bit on export, the
/// codec's job) or dropped (optional non-transitive) per RFC 4271 §5.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct RawAttribute {
    /// Attribute flags octet.
    pub flags: u8,
    /// Attribute type code.
    pub type_code: u8,
    /// Value bytes.
    pub value: Vec<u8>,
}

impl RawAttribute {
    /// The Transitive flag (RFC 4271 §4.3).
    pub fn is_transitive(&self) -> bool {
        self.flags & 0x40 != 0
    }
}

/// A route's path attributes after decoding (and, in the RIB, after
/// import processing). Shared as `Arc` between routes.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH.
    pub as_path: AsPath,
    /// NEXT_HOP, or the MP_REACH next hop for the family.
    pub next_hop: NextHop,
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
    /// LARGE_COMMUNITY (RFC 8092), in received order.
    pub large_communities: Vec<LargeCommunity>,
    /// ORIGINATOR_ID (RFC 4456 §8): the router id of the route's
    /// originator inside the AS.
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456 §8): cluster ids the route was reflected
    /// through, nearest first.
    pub cluster_list: Vec<Ipv4Addr>,
    /// Attributes not interpreted here, sorted by type code.
    pub other: Vec<RawAttribute>,
}

impl PathAttrs {
    /// Attributes for a locally originated route: ORIGIN IGP, empty
    /// AS_PATH, next hop chosen per session on export.
    pub fn local() -> Self {
        Self::default()
    }

    /// Whether the route carries `c`.
    pub fn has_community(&self, c: Community) -> bool {
        self.communities.contains(&c)
    }

    /// A conservative estimate of the encoded size of these attributes in
    /// an UPDATE (RFC 4271 §4.3), excluding MP_REACH NLRI: used to split
    /// prefixes into UPDATE-sized groups. Every attribute is counted with
    /// a 4-octet (extended length) header so the estimate never falls
    /// short.
    pub fn encoded_len_estimate(&self) -> usize {
        const HDR: usize = 4;
        let mut n = HDR + 1; // ORIGIN
        n += HDR
            + self
                .as_path
                .segments
                .iter()
                .map(|s| 2 + 4 * s.asns.len())
                .sum::<usize>();
        n += match self.next_hop {
            NextHop::Unset | NextHop::V4(_) => HDR + 4,
            // MP_REACH header without NLRI: AFI, SAFI, nh len, two v6
            // addresses, reserved octet.
            NextHop::V6 { .. } => HDR + 2 + 1 + 1 + 32 + 1,
        };
        n += self.med.map_or(0, |_| HDR + 4);
        n += self.local_pref.map_or(0, |_| HDR + 4);
        n += if self.atomic_aggregate { HDR } else { 0 };
        n += self.aggregator.map_or(0, |_| HDR + 8);
        if !self.communities.is_empty() {
            n += HDR + 4 * self.communities.len();
        }
        if !self.large_communities.is_empty() {
            n += HDR + 12 * self.large_communities.len();
        }
        n += self.originator_id.map_or(0, |_| HDR + 4);
        if !self.cluster_list.is_empty() {
            n += HDR + 4 * self.cluster_list.len();
        }
        n += self
            .other
            .iter()
            .map(|a| HDR + a.value.len())
            .sum::<usize>();
        n
    }
}

/// Hash-consing table for attribute sets: equal sets become one `Arc`.
///
/// Sets no route uses any more are dropped by [`Interner::collect`],
/// which the RIB runs when the table has doubled since the last run, so
/// the table stays within a factor of two of the live sets.
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

    /// The shared copy of an attribute set that may already be shared.
    pub fn intern_arc(&mut self, attrs: &Arc<PathAttrs>) -> Arc<PathAttrs> {
        if let Some(a) = self.set.get(attrs.as_ref()) {
            return Arc::clone(a);
        }
        self.set.insert(Arc::clone(attrs));
        Arc::clone(attrs)
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

    #[test]
    fn as_path_length_counts_set_as_one_and_confed_as_zero() {
        let p = AsPath {
            segments: vec![
                Segment {
                    kind: SegmentKind::ConfedSequence,
                    asns: vec![65001, 65002],
                },
                Segment {
                    kind: SegmentKind::Sequence,
                    asns: vec![1, 2],
                },
                Segment {
                    kind: SegmentKind::Set,
                    asns: vec![3, 4, 5],
                },
            ],
        };
        assert_eq!(p.decision_len(), 3);
        assert!(p.contains(4));
        assert_eq!(p.first_asn(), None);
        assert_eq!(AsPath::sequence([7, 8]).first_asn(), Some(7));
    }

    #[test]
    fn prepend_goes_into_leading_sequence_or_new_segment() {
        let p = AsPath::sequence([2, 3]).prepended(1);
        assert_eq!(p, AsPath::sequence([1, 2, 3]));
        let s = AsPath {
            segments: vec![Segment {
                kind: SegmentKind::Set,
                asns: vec![9],
            }],
        };
        let q = s.prepended(1);
        assert_eq!(q.segments.len(), 2);
        assert_eq!(q.first_asn(), Some(1));
        let full = AsPath::sequence(0..255);
        assert_eq!(full.prepended(1).segments.len(), 2);
        assert_eq!(AsPath::default().prepended(5), AsPath::sequence([5]));
    }

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
}
