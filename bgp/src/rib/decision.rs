//! The BGP decision process (RFC 4271 §9.1.2.2 with RFC 4456 §9) and the
//! ECMP set.
//!
//! The process is written as the RFC writes it: a sequence of eliminations
//! over the whole candidate set, not a pairwise "better than". That matters
//! for MED, which only compares routes from the same neighbouring AS and
//! so is not transitive pairwise; eliminating over the set makes the
//! result a function of the set alone, whatever order paths arrived in
//! (property-tested below).
//!
//! Steps, in order (each keeps only the candidates that are best at it):
//!
//! 0. locally originated routes over learned ones (an implementation
//!    preference, like other speakers' "weight"/protocol preference: our own
//!    pod CIDR must never lose to a copy of itself learned back);
//! 1. highest degree of preference: LOCAL_PREF, or the configured default
//!    (100) for eBGP-learned and local routes (§9.1.1);
//! 2. shortest AS_PATH: AS_SET counts one, confederation segments zero;
//! 3. lowest ORIGIN;
//! 4. lowest MED among routes from the same neighbouring AS (first AS of
//!    the path; our own AS for an empty path), or among all routes with
//!    `always_compare_med`; a missing MED counts as 0;
//! 5. eBGP-learned over iBGP-learned;
//! 6. lowest IGP cost to the next hop: skipped: the RIB has no IGP, next
//!    hops are all taken as equally reachable (documented limitation);
//!
//! The survivors form the ECMP set. They are ordered by the remaining
//! tie-breaks, and the first is the best path:
//!
//! 7. lowest BGP identifier, ORIGINATOR_ID in its place when present;
//! 8. shortest CLUSTER_LIST;
//! 9. lowest peer address;
//! 10. lowest ADD-PATH path id, then lowest peer handle (total order).

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr};

use super::attrs::PathAttrs;
use super::PeerId;
use crate::wire::{Asn, Origin};

/// Who a path came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SourceKind {
    /// Originated by this speaker.
    Local,
    /// Learned from an external peer.
    Ebgp,
    /// Learned from an internal peer.
    Ibgp,
}

/// The per-session facts about a path's source the decision needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PathSource {
    /// Local, eBGP or iBGP.
    pub kind: SourceKind,
    /// The peer's BGP identifier (from its OPEN); ours for local routes.
    pub router_id: Ipv4Addr,
    /// The peer's address; unspecified for local routes.
    pub address: IpAddr,
}

/// Knobs of the decision process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DecisionConfig {
    /// Our AS: the neighbouring AS of routes with an empty AS_PATH.
    pub local_asn: Asn,
    /// Degree of preference for routes without LOCAL_PREF (eBGP, local).
    pub default_local_pref: u32,
    /// Compare MED across neighbouring ASes too.
    pub always_compare_med: bool,
    /// Most paths in the ECMP set (1 = no multipath).
    pub max_paths: usize,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            local_asn: Asn(0),
            default_local_pref: 100,
            always_compare_med: false,
            max_paths: 1,
        }
    }
}

/// One candidate path as the decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The path's attributes.
    pub attrs: &'a PathAttrs,
    /// Where it came from.
    pub source: PathSource,
    /// The peer handle.
    pub peer: PeerId,
    /// The ADD-PATH id (0 without ADD-PATH).
    pub path_id: u32,
}

/// The result: candidate indices best first, and how many of them form
/// the ECMP set (`ecmp >= 1` when there is any candidate).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Decision {
    /// All candidate indices: the ECMP set in tie-break order first, then
    /// the rest in a deterministic order.
    pub order: Vec<usize>,
    /// Length of the ECMP prefix of `order`, at most `max_paths`.
    pub ecmp: usize,
}

struct Rank {
    local: bool,
    pref: u32,
    as_len: usize,
    origin: Origin,
    neighbor_as: Asn,
    med: u32,
    ebgp: bool,
    tie: (u32, usize, IpAddr, u32, PeerId),
}

#[cfg(test)]
thread_local! {
    /// Test hook: how many candidates were ranked on this thread (the
    /// unit of work of the decision), to bound the incremental path's cost.
    pub(crate) static RANKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn rank(c: &Candidate<'_>, cfg: &DecisionConfig) -> Rank {
    #[cfg(test)]
    RANKED.with(|n| n.set(n.get() + 1));
    let a = c.attrs;
    let pref = match c.source.kind {
        SourceKind::Ibgp => a.local_pref.unwrap_or(cfg.default_local_pref),
        // RFC 4271 §5.1.5: LOCAL_PREF from an external peer is ignored.
        SourceKind::Ebgp => cfg.default_local_pref,
        SourceKind::Local => a.local_pref.unwrap_or(cfg.default_local_pref),
    };
    let id = a.originator_id.unwrap_or(c.source.router_id);
    Rank {
        local: c.source.kind == SourceKind::Local,
        pref,
        as_len: a.as_path.path_len(),
        origin: a.origin,
        neighbor_as: a.as_path.first_asn().unwrap_or(cfg.local_asn),
        med: a.med.unwrap_or(0),
        ebgp: c.source.kind == SourceKind::Ebgp,
        tie: (
            u32::from(id),
            a.cluster_list.len(),
            c.source.address,
            c.path_id,
            c.peer,
        ),
    }
}

/// Keeps the candidates whose `key` is the minimum among `alive`.
fn keep_min<K: Ord>(alive: &mut Vec<usize>, ranks: &[Rank], key: impl Fn(&Rank) -> K) {
    let Some(best) = alive.iter().filter_map(|&i| ranks.get(i)).map(&key).min() else {
        return;
    };
    alive.retain(|&i| ranks.get(i).is_some_and(|r| key(r) == best));
}

/// Where one more candidate stands against the current best path, found
/// without looking at the other candidates (see [`against_best`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Against {
    /// Eliminated before the tie-breaks, and it eliminates nobody: adding
    /// or removing it leaves the decision as it is.
    Loses,
    /// The sole survivor of the eliminations: the new best and the whole
    /// ECMP set.
    Wins,
    /// Survives every elimination beside the best path, and eliminates
    /// nobody: the survivors gain it; its tie-break key places it.
    Ties,
    /// Depends on the other candidates (MED across neighbouring ASes, or
    /// a lower MED than the best): run [`decide`].
    Unknown,
}

/// Compares a candidate `new` (not part of the decision yet, or a
/// non-selected one about to leave it) against the `best` path of a
/// decision over the other candidates.
///
/// Why this is enough: steps 0-3 and 5 keep the minimum of a key over the
/// survivors, and the best path carries that minimum; so a strictly worse
/// key eliminates `new` without moving the minimum, and a strictly better
/// one leaves `new` alone. MED is the one step that is not a minimum; it
/// is decided here only when `new` is comparable with the best path (same
/// neighbouring AS, or always-compare-med) and its MED is not lower: then
/// anything `new` could eliminate, the best path already eliminates.
pub fn against_best(new: &Candidate<'_>, best: &Candidate<'_>, cfg: &DecisionConfig) -> Against {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let (n, b) = (rank(new, cfg), rank(best, cfg));
    let minimum_steps = [
        (!n.local).cmp(&!b.local),
        Reverse(n.pref).cmp(&Reverse(b.pref)),
        n.as_len.cmp(&b.as_len),
        n.origin.cmp(&b.origin),
    ];
    match minimum_steps.into_iter().find(|o| *o != Equal) {
        Some(Less) => return Against::Wins,
        Some(Greater) => return Against::Loses,
        _ => {}
    }
    if !(cfg.always_compare_med || n.neighbor_as == b.neighbor_as) {
        return Against::Unknown;
    }
    match n.med.cmp(&b.med) {
        Less => return Against::Unknown,
        Greater => return Against::Loses,
        Equal => {}
    }
    match (!n.ebgp).cmp(&!b.ebgp) {
        Less => Against::Wins,
        Greater => Against::Loses,
        Equal => Against::Ties,
    }
}

/// Whether `a` comes before `b` in the final tie-break order (steps 7-10),
/// for two candidates that both survived the eliminations.
pub fn tie_before(a: &Candidate<'_>, b: &Candidate<'_>, cfg: &DecisionConfig) -> bool {
    rank(a, cfg).tie < rank(b, cfg).tie
}

/// Runs the decision process over `cands`.
pub fn decide(cands: &[Candidate<'_>], cfg: &DecisionConfig) -> Decision {
    let ranks: Vec<Rank> = cands.iter().map(|c| rank(c, cfg)).collect();
    let mut alive: Vec<usize> = (0..cands.len()).collect();
    keep_min(&mut alive, &ranks, |r| !r.local);
    keep_min(&mut alive, &ranks, |r| Reverse(r.pref));
    keep_min(&mut alive, &ranks, |r| r.as_len);
    keep_min(&mut alive, &ranks, |r| r.origin);
    // MED: eliminate a route if a comparable survivor has a lower MED.
    // The lowest MED per neighbouring AS (one group with
    // always-compare-med) is taken over the survivors first, so the step
    // is linear, not quadratic, in the candidates (a prefix with 100
    // paths used to cost 10,000 comparisons here on every change).
    let group = |r: &Rank| (!cfg.always_compare_med).then_some(r.neighbor_as);
    let mut lowest: Vec<(Option<Asn>, u32)> = Vec::new();
    for r in alive.iter().filter_map(|&i| ranks.get(i)) {
        let g = group(r);
        match lowest.iter_mut().find(|(k, _)| *k == g) {
            Some((_, m)) => *m = (*m).min(r.med),
            None => lowest.push((g, r.med)),
        }
    }
    alive.retain(|&i| {
        ranks.get(i).is_some_and(|r| {
            let g = group(r);
            lowest.iter().all(|(k, m)| *k != g || *m >= r.med)
        })
    });
    keep_min(&mut alive, &ranks, |r| !r.ebgp);
    alive.sort_by_key(|&i| ranks.get(i).map(|r| r.tie));
    let ecmp = alive.len().min(cfg.max_paths.max(1));
    let mut rest: Vec<usize> = (0..cands.len()).filter(|i| !alive.contains(i)).collect();
    rest.sort_by_key(|&i| ranks.get(i).map(|r| r.tie));
    alive.extend(rest);
    Decision { order: alive, ecmp }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::{AsPath, AsSegment, SegmentType};
    use proptest::prelude::*;

    fn src(kind: SourceKind, id: u8, addr: u8) -> PathSource {
        PathSource {
            kind,
            router_id: Ipv4Addr::new(10, 0, 0, id),
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, addr)),
        }
    }

    fn ibgp(n: u8) -> PathSource {
        src(SourceKind::Ibgp, n, n)
    }

    fn base() -> PathAttrs {
        PathAttrs {
            as_path: AsPath::from_sequence([Asn(65001)]),
            local_pref: Some(100),
            ..PathAttrs::local()
        }
    }

    /// The index of the best path among two that differ as given.
    fn best2(a: (&PathAttrs, PathSource), b: (&PathAttrs, PathSource)) -> usize {
        best2_cfg(a, b, &DecisionConfig::default())
    }

    fn best2_cfg(
        a: (&PathAttrs, PathSource),
        b: (&PathAttrs, PathSource),
        cfg: &DecisionConfig,
    ) -> usize {
        let c = [
            Candidate {
                attrs: a.0,
                source: a.1,
                peer: PeerId(1),
                path_id: 0,
            },
            Candidate {
                attrs: b.0,
                source: b.1,
                peer: PeerId(2),
                path_id: 0,
            },
        ];
        let d = decide(&c, cfg);
        // Either order of arrival gives the same answer.
        let rev = [c[1], c[0]];
        let e = decide(&rev, cfg);
        assert_eq!(d.order[0], 1 - e.order[0]);
        d.order[0]
    }

    #[test]
    fn local_pref_higher_wins() {
        let a = base();
        let b = PathAttrs {
            local_pref: Some(200),
            ..base()
        };
        assert_eq!(best2((&a, ibgp(1)), (&b, ibgp(2))), 1);
    }

    #[test]
    fn ebgp_local_pref_is_the_default() {
        // An eBGP route claiming LOCAL_PREF 500 counts as 100, and loses
        // to an iBGP route with 150.
        let a = PathAttrs {
            local_pref: Some(500),
            ..base()
        };
        let b = PathAttrs {
            local_pref: Some(150),
            ..base()
        };
        assert_eq!(best2((&a, src(SourceKind::Ebgp, 1, 1)), (&b, ibgp(2))), 1);
    }

    #[test]
    fn shorter_as_path_wins_and_as_set_counts_one() {
        let a = PathAttrs {
            as_path: AsPath::from_sequence([Asn(1), Asn(2)]),
            ..base()
        };
        let b = PathAttrs {
            as_path: AsPath::from_sequence([Asn(1), Asn(2), Asn(3)]),
            ..base()
        };
        assert_eq!(best2((&a, ibgp(2)), (&b, ibgp(1))), 0);
        // [1] + {2,3,4,5} has length 2: ties with [1,2] on length, so the
        // router id (lower: peer 1) decides.
        let c = PathAttrs {
            as_path: AsPath {
                segments: vec![
                    AsSegment {
                        kind: SegmentType::Sequence,
                        asns: vec![Asn(1)],
                    },
                    AsSegment {
                        kind: SegmentType::Set,
                        asns: vec![Asn(2), Asn(3), Asn(4), Asn(5)],
                    },
                ],
            },
            ..base()
        };
        assert_eq!(best2((&a, ibgp(2)), (&c, ibgp(1))), 1);
        assert_eq!(best2((&c, ibgp(2)), (&b, ibgp(1))), 0);
    }

    #[test]
    fn lower_origin_wins() {
        let a = PathAttrs {
            origin: Origin::Incomplete,
            ..base()
        };
        let b = PathAttrs {
            origin: Origin::Egp,
            ..base()
        };
        assert_eq!(best2((&a, ibgp(1)), (&b, ibgp(2))), 1);
    }

    #[test]
    fn med_compared_only_within_same_neighbour_as() {
        let a = PathAttrs {
            med: Some(10),
            ..base()
        };
        let b = PathAttrs {
            med: Some(5),
            ..base()
        };
        // Same neighbour AS 65001: lower MED wins although router id is
        // higher.
        assert_eq!(best2((&a, ibgp(1)), (&b, ibgp(2))), 1);
        // Different neighbour AS: MED ignored, router id decides.
        let c = PathAttrs {
            as_path: AsPath::from_sequence([Asn(65002)]),
            ..b.clone()
        };
        assert_eq!(best2((&a, ibgp(1)), (&c, ibgp(2))), 0);
        // always-compare-med: MED decides across ASes.
        let cfg = DecisionConfig {
            always_compare_med: true,
            ..DecisionConfig::default()
        };
        assert_eq!(best2_cfg((&a, ibgp(1)), (&c, ibgp(2)), &cfg), 1);
    }

    #[test]
    fn missing_med_counts_as_zero() {
        let a = PathAttrs {
            med: Some(1),
            ..base()
        };
        let b = PathAttrs {
            med: None,
            ..base()
        };
        assert_eq!(best2((&a, ibgp(1)), (&b, ibgp(2))), 1);
    }

    #[test]
    fn ebgp_over_ibgp() {
        let a = base();
        assert_eq!(best2((&a, ibgp(1)), (&a, src(SourceKind::Ebgp, 2, 2))), 1);
    }

    #[test]
    fn lowest_router_id_then_originator_id_in_its_place() {
        let a = base();
        assert_eq!(best2((&a, ibgp(2)), (&a, ibgp(1))), 1);
        // Peer 2 (router id .2) reflects a route originated by .0.9:
        // ORIGINATOR_ID 10.0.0.1 beats peer 1's own id 10.0.0.3.
        let b = PathAttrs {
            originator_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ..base()
        };
        assert_eq!(best2((&a, src(SourceKind::Ibgp, 3, 1)), (&b, ibgp(2))), 1);
    }

    #[test]
    fn shorter_cluster_list_then_lower_address() {
        let a = PathAttrs {
            cluster_list: vec![Ipv4Addr::new(1, 1, 1, 1)],
            ..base()
        };
        let b = base();
        // Same router id, different addresses: cluster list decides first.
        assert_eq!(
            best2(
                (&a, src(SourceKind::Ibgp, 7, 1)),
                (&b, src(SourceKind::Ibgp, 7, 2))
            ),
            1
        );
        assert_eq!(
            best2(
                (&b, src(SourceKind::Ibgp, 7, 2)),
                (&b, src(SourceKind::Ibgp, 7, 1))
            ),
            1
        );
    }

    #[test]
    fn local_route_wins_over_learned() {
        let learned = PathAttrs {
            local_pref: Some(1000),
            as_path: AsPath::default(),
            ..base()
        };
        let local = PathAttrs::local();
        let l = src(SourceKind::Local, 0, 0);
        assert_eq!(best2((&learned, ibgp(1)), (&local, l)), 1);
    }

    #[test]
    fn ecmp_set_stops_before_router_id_and_is_capped() {
        let a = base();
        let worse = PathAttrs {
            origin: Origin::Incomplete,
            ..base()
        };
        let sources = [ibgp(4), ibgp(2), ibgp(3), ibgp(1)];
        let attrs = [&a, &a, &worse, &a];
        let cands: Vec<Candidate<'_>> = sources
            .iter()
            .zip(attrs)
            .enumerate()
            .map(|(i, (s, at))| Candidate {
                attrs: at,
                source: *s,
                peer: PeerId(i as u32),
                path_id: 0,
            })
            .collect();
        let cfg = DecisionConfig {
            max_paths: 8,
            ..DecisionConfig::default()
        };
        let d = decide(&cands, &cfg);
        assert_eq!(d.ecmp, 3);
        // Ordered by router id: .1 (index 3), .2 (1), .4 (0); the worse
        // origin last.
        assert_eq!(d.order, vec![3, 1, 0, 2]);
        let d2 = decide(
            &cands,
            &DecisionConfig {
                max_paths: 2,
                ..cfg
            },
        );
        assert_eq!(d2.ecmp, 2);
        assert_eq!(&d2.order[..2], &[3, 1]);
        assert_eq!(decide(&cands, &DecisionConfig::default()).ecmp, 1);
    }

    fn arb_path() -> impl Strategy<Value = (PathAttrs, PathSource)> {
        (
            prop::option::of(prop_oneof![Just(100u32), Just(200)]),
            prop::collection::vec(1u32..4, 0..3),
            0u8..3,
            prop::option::of(0u32..3),
            any::<bool>(),
            1u8..4,
            prop::option::of(1u8..4),
            0usize..2,
        )
            .prop_map(|(lp, path, origin, med, ebgp, id, orig, cl)| {
                let attrs = PathAttrs {
                    local_pref: lp,
                    as_path: AsPath::from_sequence(path.into_iter().map(Asn)),
                    origin: match origin {
                        0 => Origin::Igp,
                        1 => Origin::Egp,
                        _ => Origin::Incomplete,
                    },
                    med,
                    originator_id: orig.map(|o| Ipv4Addr::new(10, 0, 0, o)),
                    cluster_list: vec![Ipv4Addr::new(9, 9, 9, 9); cl],
                    ..PathAttrs::local()
                };
                let kind = if ebgp {
                    SourceKind::Ebgp
                } else {
                    SourceKind::Ibgp
                };
                (attrs, src(kind, id, 0))
            })
    }

    proptest! {
        /// The best path and the ECMP set are a function of the set of
        /// candidates, not of their arrival order.
        #[test]
        fn decision_does_not_depend_on_arrival_order(
            (paths, shuffled) in prop::collection::vec(arb_path(), 1..8)
                .prop_map(|v| v.into_iter().enumerate().collect::<Vec<_>>())
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            compare in any::<bool>(),
        ) {
            // Distinct peer addresses, as real sessions have.
            let mk = |v: &[(usize, (PathAttrs, PathSource))]| -> Vec<(PathAttrs, PathSource, PeerId)> {
                v.iter().map(|(i, (a, s))| (a.clone(), PathSource {
                    address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, *i as u8)),
                    ..*s
                }, PeerId(*i as u32))).collect()
            };
            let cfg = DecisionConfig { max_paths: 4, always_compare_med: compare, ..DecisionConfig::default() };
            let run = |v: &[(PathAttrs, PathSource, PeerId)]| -> Vec<PeerId> {
                let c: Vec<Candidate<'_>> = v.iter().map(|(a, s, p)| Candidate {
                    attrs: a, source: *s, peer: *p, path_id: 0,
                }).collect();
                let d = decide(&c, &cfg);
                d.order.iter().map(|&i| c[i].peer).collect::<Vec<_>>()[..d.ecmp].to_vec()
            };
            prop_assert_eq!(run(&mk(&paths)), run(&mk(&shuffled)));
        }
    }
}
