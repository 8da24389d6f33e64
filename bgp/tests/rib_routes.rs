//! RIB route lifecycle through the public API: ECMP, the coalescing FIB
//! stream, graceful restart, peer down, ADD-PATH ids, local origination
//! and UPDATE grouping.
//!
//! ```text
//!   t1 198.51.100.1 (AS 65001) ─┐
//!   t2 198.51.100.2 (AS 65002) ─┼── speaker AS 65000 (10.0.0.1) ── n1 192.0.2.10 (iBGP)
//!   t3 198.51.100.3 (AS 65003) ─┘
//! ```
#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::net::{IpAddr, Ipv4Addr};

use tortie_bgp::rib::*;
use tortie_bgp::wire::{AsPath, Asn, NextHop, NlriEntry, Prefix, SessionContext};

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn e(s: &str) -> NlriEntry {
    NlriEntry::new(p(s))
}

fn attrs(asns: &[u32], next_hop: Ipv4Addr) -> PathAttrs {
    PathAttrs {
        as_path: AsPath::from_sequence(asns.iter().map(|&a| Asn(a))),
        next_hop: Some(NextHop::V4(next_hop)),
        ..PathAttrs::local()
    }
}

fn session(id: u8) -> Session {
    Session {
        router_id: Ipv4Addr::new(10, 0, 0, id),
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        local_v6: None,
    }
}

struct Lab {
    rib: Rib,
    t: [PeerId; 3],
    n1: PeerId,
}

fn lab(max_paths: usize) -> Lab {
    let mut cfg = RibConfig::new(Asn(65000), Ipv4Addr::new(10, 0, 0, 1));
    cfg.max_paths = max_paths;
    let mut rib = Rib::new(cfg);
    let t = [1u8, 2, 3].map(|i| {
        let peer = rib.add_peer(PeerConfig::new(
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)),
            Asn(65000 + u32::from(i)),
        ));
        rib.peer_up(peer, session(i + 100)).unwrap();
        peer
    });
    let n1 = rib.add_peer(PeerConfig::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        Asn(65000),
    ));
    rib.peer_up(n1, session(10)).unwrap();
    Lab { rib, t, n1 }
}

fn tor(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, i)
}

#[test]
fn ecmp_set_through_the_rib() {
    let mut l = lab(2);
    for (i, peer) in l.t.iter().enumerate() {
        let i = u8::try_from(i).unwrap() + 1;
        l.rib
            .announce(
                *peer,
                attrs(&[65000 + u32::from(i), 7], tor(i)),
                [e("10.7.0.0/16")],
            )
            .unwrap();
    }
    let set = l.rib.ecmp(p("10.7.0.0/16"));
    assert_eq!(set.len(), 2, "capped at max_paths");
    assert_eq!(set[0].peer, l.t[0], "lowest router id first");
    assert_eq!(set[1].peer, l.t[1]);
    let fib = l.rib.take_fib_changes();
    let last = fib.iter().rfind(|c| c.prefix == p("10.7.0.0/16")).unwrap();
    assert_eq!(last.paths.len(), 2);
    assert!(last.paths.iter().all(FibPath::is_ebgp));
    assert_eq!(last.paths[0].next_hop, Some(NextHop::V4(tor(1))));
    // A longer path is not part of the set.
    l.rib
        .announce(l.t[0], attrs(&[65001, 8, 7], tor(1)), [e("10.7.0.0/16")])
        .unwrap();
    let set = l.rib.ecmp(p("10.7.0.0/16"));
    assert_eq!(
        set.iter().map(|r| r.peer).collect::<Vec<_>>(),
        vec![l.t[1], l.t[2]]
    );
}

#[test]
fn fib_changes_coalesce_per_prefix() {
    let mut l = lab(1);
    for med in 0..1000 {
        let mut a = attrs(&[65001], tor(1));
        a.med = Some(med);
        l.rib.announce(l.t[0], a, [e("10.9.0.0/16")]).unwrap();
        if med % 2 == 1 {
            l.rib.withdraw(l.t[0], [e("10.9.0.0/16")]).unwrap();
        }
    }
    assert_eq!(l.rib.pending_fib_changes(), 1);
    let changes = l.rib.take_fib_changes();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].is_gone(), "latest state: withdrawn");
    assert!(l.rib.take_fib_changes().is_empty());
    assert_eq!(l.rib.table_len(tortie_bgp::wire::Family::IPV4_UNICAST), 0);

    l.rib
        .announce(l.t[0], attrs(&[65001], tor(1)), [e("10.9.0.0/16")])
        .unwrap();
    let changes = l.rib.take_fib_changes();
    assert_eq!(changes[0].best().unwrap().peer, l.t[0]);
    // An identical re-announcement is not a change.
    l.rib
        .announce(l.t[0], attrs(&[65001], tor(1)), [e("10.9.0.0/16")])
        .unwrap();
    assert_eq!(l.rib.pending_fib_changes(), 0);
}

#[test]
fn graceful_restart_stale_then_purge() {
    let mut l = lab(1);
    let a = attrs(&[65001], tor(1));
    l.rib
        .announce(
            l.t[0],
            a.clone(),
            [e("10.1.0.0/16"), e("10.2.0.0/16"), e("10.3.0.0/16")],
        )
        .unwrap();
    l.rib.take_fib_changes();
    assert_eq!(l.rib.mark_stale(l.t[0]).unwrap(), 3);
    assert!(l.rib.best(p("10.1.0.0/16")).unwrap().stale);
    // Routes stay in the FIB: nothing to report.
    assert_eq!(l.rib.pending_fib_changes(), 0);
    // The peer restarts and re-announces one prefix.
    l.rib.peer_up(l.t[0], session(101)).unwrap();
    l.rib.announce(l.t[0], a, [e("10.2.0.0/16")]).unwrap();
    assert!(!l.rib.best(p("10.2.0.0/16")).unwrap().stale);
    // End-of-RIB: the rest goes.
    let s = l.rib.purge_stale(l.t[0]).unwrap();
    assert_eq!((s.removed, s.prefixes_changed), (2, 2));
    assert!(l.rib.best(p("10.1.0.0/16")).is_none());
    assert!(l.rib.best(p("10.2.0.0/16")).is_some());
    assert_eq!(l.rib.prefixes_received(l.t[0]), 1);
    let mut gone: Vec<_> = l
        .rib
        .take_fib_changes()
        .into_iter()
        .filter(FibChange::is_gone)
        .map(|c| c.prefix)
        .collect();
    gone.sort();
    assert_eq!(gone, vec![p("10.1.0.0/16"), p("10.3.0.0/16")]);
}

#[test]
fn peer_down_removes_its_routes_and_falls_back() {
    let mut l = lab(1);
    l.rib
        .announce(
            l.t[0],
            attrs(&[65001], tor(1)),
            [e("10.1.0.0/16"), e("10.2.0.0/16")],
        )
        .unwrap();
    l.rib
        .announce(l.t[1], attrs(&[65002, 9], tor(2)), [e("10.1.0.0/16")])
        .unwrap();
    assert_eq!(l.rib.best(p("10.1.0.0/16")).unwrap().peer, l.t[0]);
    l.rib.take_fib_changes();
    l.rib.take_updates(l.n1).unwrap();
    let s = l.rib.peer_down(l.t[0]).unwrap();
    assert_eq!((s.removed, s.prefixes_changed), (2, 2));
    assert_eq!(l.rib.best(p("10.1.0.0/16")).unwrap().peer, l.t[1]);
    assert!(l.rib.best(p("10.2.0.0/16")).is_none());
    assert_eq!(l.rib.prefixes_received(l.t[0]), 0);
    // n1 hears the new path for one and a withdrawal for the other.
    let ups = l.rib.take_updates(l.n1).unwrap();
    assert!(ups.iter().any(
        |u| matches!(u, OutUpdate::Withdraw { prefixes, .. } if prefixes == &vec![p("10.2.0.0/16")])
    ));
    assert!(ups.iter().any(
        |u| matches!(u, OutUpdate::Announce { prefixes, .. } if prefixes == &vec![p("10.1.0.0/16")])
    ));
    // The downed peer's Adj-RIB-Out is reset.
    assert_eq!(l.rib.prefixes_advertised(l.t[0]), 0);
}

#[test]
fn add_path_ids_are_separate_routes() {
    let mut l = lab(4);
    let id = |n| NlriEntry {
        path_id: Some(n),
        prefix: p("10.5.0.0/16"),
    };
    l.rib
        .announce(l.t[0], attrs(&[65001], tor(1)), [id(1)])
        .unwrap();
    l.rib
        .announce(
            l.t[0],
            attrs(&[65001], Ipv4Addr::new(198, 51, 100, 99)),
            [id(2)],
        )
        .unwrap();
    assert_eq!(l.rib.paths(p("10.5.0.0/16")).len(), 2);
    assert_eq!(l.rib.prefixes_received(l.t[0]), 2);
    // Equal up to the router id, same peer: ordered by path id.
    let set = l.rib.ecmp(p("10.5.0.0/16"));
    assert_eq!(
        set.iter().map(|r| r.path_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    l.rib.withdraw(l.t[0], [id(1)]).unwrap();
    let left = l.rib.paths(p("10.5.0.0/16"));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].path_id, 2);
}

#[test]
fn local_origination_and_withdrawal() {
    let mut l = lab(1);
    l.rib.originate(p("10.244.3.0/24"), PathAttrs::local());
    let fib = l.rib.take_fib_changes();
    assert!(fib[0].is_local());
    let ups = l.rib.take_updates(l.t[0]).unwrap();
    match &ups[..] {
        [OutUpdate::Announce {
            attrs, next_hop, ..
        }] => {
            assert_eq!(*next_hop, NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)));
            assert_eq!(attrs.as_path, AsPath::from_sequence([Asn(65000)]));
        }
        other => panic!("{other:?}"),
    }
    // A learned copy of our own prefix does not win.
    l.rib
        .announce(
            l.n1,
            attrs(&[], Ipv4Addr::new(192, 0, 2, 10)),
            [e("10.244.3.0/24")],
        )
        .unwrap();
    assert_eq!(l.rib.best(p("10.244.3.0/24")).unwrap().peer, PeerId::LOCAL);
    l.rib.withdraw_local(p("10.244.3.0/24"));
    assert_eq!(l.rib.best(p("10.244.3.0/24")).unwrap().peer, l.n1);
    // n1's path exports to t1 exactly as ours did (same interned set):
    // nothing to send.
    assert!(l.rib.take_updates(l.t[0]).unwrap().is_empty());
    assert!(l.rib.advertised(l.t[0], p("10.244.3.0/24")).is_some());
    l.rib.withdraw(l.n1, [e("10.244.3.0/24")]).unwrap();
    let ups = l.rib.take_updates(l.t[0]).unwrap();
    assert!(matches!(&ups[..], [OutUpdate::Withdraw { .. }]));
}

#[test]
fn updates_coalesce_and_skip_withdrawals_never_sent() {
    let mut l = lab(1);
    l.rib.take_updates(l.n1).unwrap();
    // Announced and withdrawn between two takes: nothing to send.
    l.rib
        .announce(l.t[0], attrs(&[65001], tor(1)), [e("10.1.0.0/16")])
        .unwrap();
    l.rib.withdraw(l.t[0], [e("10.1.0.0/16")]).unwrap();
    assert!(l.rib.take_updates(l.n1).unwrap().is_empty());
    // Many changes to one prefix: one announcement of the latest.
    for med in 0..50 {
        let mut a = attrs(&[65001], tor(1));
        a.med = Some(med);
        l.rib.announce(l.t[0], a, [e("10.1.0.0/16")]).unwrap();
    }
    let ups = l.rib.take_updates(l.n1).unwrap();
    match &ups[..] {
        [OutUpdate::Announce {
            attrs, prefixes, ..
        }] => {
            assert_eq!(prefixes, &vec![p("10.1.0.0/16")]);
            assert_eq!(attrs.med, Some(49));
        }
        other => panic!("{other:?}"),
    }
    // Sent, then withdrawn: the withdrawal goes out.
    l.rib.withdraw(l.t[0], [e("10.1.0.0/16")]).unwrap();
    let ups = l.rib.take_updates(l.n1).unwrap();
    assert!(matches!(&ups[..], [OutUpdate::Withdraw { .. }]));
}

#[test]
fn late_peer_gets_the_whole_table() {
    let mut l = lab(1);
    l.rib
        .announce(
            l.t[0],
            attrs(&[65001], tor(1)),
            [e("10.1.0.0/16"), e("10.2.0.0/16")],
        )
        .unwrap();
    let late = l.rib.add_peer(PeerConfig::new(
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        Asn(65009),
    ));
    assert!(l.rib.take_updates(late).unwrap().is_empty());
    l.rib.peer_up(late, session(9)).unwrap();
    assert!(l.rib.peers_with_updates().contains(&late));
    let ups = l.rib.take_updates(late).unwrap();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].prefixes(), &[p("10.1.0.0/16"), p("10.2.0.0/16")]);
    assert_eq!(l.rib.prefixes_advertised(late), 2);
}

#[test]
fn hundred_thousand_routes_one_attribute_set_about_a_hundred_updates() {
    let mut l = lab(1);
    let nlri: Vec<NlriEntry> = (0..100_000u32)
        .map(|i| NlriEntry::new(Prefix::v4(Ipv4Addr::from((10 << 24) | (i << 8)), 24).unwrap()))
        .collect();
    for chunk in nlri.chunks(1000) {
        let o = l
            .rib
            .announce(
                l.t[0],
                attrs(&[65001, 65100], tor(1)),
                chunk.iter().copied(),
            )
            .unwrap();
        assert_eq!(o.accepted, 1000);
    }
    // One interned set for the received routes (plus what export made).
    assert!(l.rib.attribute_sets() <= 4, "{}", l.rib.attribute_sets());
    let ups = l.rib.take_updates(l.t[1]).unwrap();
    assert_eq!(ups.len(), 1, "one group");
    let mut bytes = Vec::new();
    let messages = ups[0]
        .encode(&SessionContext::four_octet(), &mut bytes)
        .unwrap();
    assert!((95..=110).contains(&messages), "{messages} UPDATEs");
}

mod arrival_order {
    use super::*;
    use proptest::prelude::*;

    /// One iBGP peer's path: (neighbour AS 1 or 2, extra path length, MED,
    /// origin incomplete, LOCAL_PREF 100 or 200).
    type Spec = (u32, u8, Option<u32>, bool, u32);

    fn arb() -> impl Strategy<Value = Vec<Spec>> {
        prop::collection::vec(
            (
                1u32..3,
                0u8..2,
                prop::option::of(0u32..3),
                any::<bool>(),
                prop_oneof![Just(100u32), Just(200)],
            ),
            4,
        )
    }

    fn run(paths: &[Spec], order: &[usize], max_paths: usize) -> Vec<PeerId> {
        let mut cfg = RibConfig::new(Asn(65000), Ipv4Addr::new(10, 0, 0, 1));
        cfg.max_paths = max_paths;
        let mut rib = Rib::new(cfg);
        let peers: Vec<PeerId> = (0..paths.len())
            .map(|i| {
                let n = u8::try_from(i).unwrap() + 20;
                let id = rib.add_peer(PeerConfig::new(
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
                    Asn(65000),
                ));
                rib.peer_up(id, session(n)).unwrap();
                id
            })
            .collect();
        for &i in order {
            let (nas, extra, med, incomplete, lp) = paths[i];
            let n = u8::try_from(i).unwrap() + 20;
            let mut asns = vec![nas];
            asns.extend((0..extra).map(|k| 300 + u32::from(k)));
            let mut a = attrs(&asns, Ipv4Addr::new(192, 0, 2, n));
            a.med = med;
            a.local_pref = Some(lp);
            if incomplete {
                a.origin = tortie_bgp::wire::Origin::Incomplete;
            }
            rib.announce(peers[i], a, [e("10.7.0.0/16")]).unwrap();
        }
        rib.ecmp(p("10.7.0.0/16")).iter().map(|r| r.peer).collect()
    }

    proptest! {
        /// Whatever order four iBGP peers' paths arrive in (MED compared
        /// only within a neighbour AS, so pairwise comparison is not
        /// transitive), the RIB selects the same best path and ECMP set.
        #[test]
        fn rib_selection_is_independent_of_arrival_order(
            paths in arb(),
            order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
            max_paths in 1usize..4,
        ) {
            prop_assert_eq!(run(&paths, &[0, 1, 2, 3], max_paths), run(&paths, &order, max_paths));
        }
    }

    #[test]
    fn med_non_transitivity_is_resolved_by_the_set() {
        // The classic triangle: A (AS1, MED 2), B (AS1, MED 1), C (AS2,
        // MED 0). Pairwise: B beats A (MED), A beats C and C beats B (router
        // id). Set elimination: B removes A, then B vs C by router id.
        let paths = [
            (1, 0, Some(2), false, 100),
            (1, 0, Some(1), false, 100),
            (2, 0, Some(0), false, 100),
        ];
        let first = run(&paths, &[0, 1, 2], 1);
        for order in [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            assert_eq!(run(&paths, &order, 1), first);
        }
    }
}
