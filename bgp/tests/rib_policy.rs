//! RIB receipt checks, export rules and filters, driven through the
//! public `Rib` API.
//!
//! ```text
//!            AS 65000 (us: router id 10.0.0.1, 192.0.2.1)
//!   ibgp_a 192.0.2.10 ─┐                 ┌─ ebgp_c 198.51.100.3 (AS 65003)
//!   ibgp_b 192.0.2.11 ─┼──── speaker ────┤
//!   ibgp_d 192.0.2.12 ─┘                 └─ ebgp_e 203.0.113.5 (AS 65005)
//! ```
#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tortie_bgp::rib::*;
use tortie_bgp::wire::{
    AsPath, Asn, Community, LargeCommunity, NextHop, NlriEntry, NlriSet, Prefix, SessionContext,
    Update,
};

const US: Asn = Asn(65000);
const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const MY_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn e(s: &str) -> NlriEntry {
    NlriEntry::new(p(s))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nh(s: &str) -> Option<NextHop> {
    Some(NextHop::V4(s.parse().unwrap()))
}

fn path(asns: &[u32]) -> AsPath {
    AsPath::from_sequence(asns.iter().map(|&a| Asn(a)))
}

fn attrs(asns: &[u32], next_hop: &str) -> PathAttrs {
    PathAttrs {
        as_path: path(asns),
        next_hop: nh(next_hop),
        ..PathAttrs::local()
    }
}

fn session(id: u8) -> Session {
    Session {
        router_id: Ipv4Addr::new(10, 0, 0, id),
        local_v4: Some(MY_ADDR),
        local_v6: Some("2001:db8::1".parse::<Ipv6Addr>().unwrap()),
    }
}

struct Lab {
    rib: Rib,
    a: PeerId,
    b: PeerId,
    d: PeerId,
    c: PeerId,
    e: PeerId,
}

fn lab(reflector: bool, tweak: impl Fn(&str, &mut PeerConfig)) -> Lab {
    let mut cfg = RibConfig::new(US, ME);
    cfg.local_addresses = vec![IpAddr::V4(MY_ADDR)];
    if reflector {
        cfg.cluster_id = Some(ME);
    }
    let mut rib = Rib::new(cfg);
    let mut add = |name: &str, addr: &str, asn: u32, id: u8| {
        let mut pc = PeerConfig::new(ip(addr), Asn(asn));
        tweak(name, &mut pc);
        let peer = rib.add_peer(pc);
        rib.peer_up(peer, session(id)).unwrap();
        peer
    };
    let a = add("a", "192.0.2.10", 65000, 10);
    let b = add("b", "192.0.2.11", 65000, 11);
    let d = add("d", "192.0.2.12", 65000, 12);
    let c = add("c", "198.51.100.3", 65003, 3);
    let e = add("e", "203.0.113.5", 65005, 5);
    Lab { rib, a, b, d, c, e }
}

#[test]
fn ibgp_split_horizon_without_reflection() {
    let mut l = lab(false, |_, _| {});
    l.rib
        .announce(l.a, attrs(&[65100], "192.0.2.10"), [e("10.1.0.0/16")])
        .unwrap();
    assert!(l.rib.advertised(l.b, p("10.1.0.0/16")).is_none());
    assert!(l.rib.advertised(l.d, p("10.1.0.0/16")).is_none());
    // Never back to the source either.
    assert!(l.rib.advertised(l.a, p("10.1.0.0/16")).is_none());
    assert!(l.rib.advertised(l.c, p("10.1.0.0/16")).is_some());
    // eBGP-learned routes do go to iBGP peers, next hop unchanged.
    l.rib
        .announce(l.c, attrs(&[65003], "198.51.100.3"), [e("10.3.0.0/16")])
        .unwrap();
    let to_a = l.rib.advertised(l.a, p("10.3.0.0/16")).unwrap();
    assert_eq!(to_a.next_hop, nh("198.51.100.3"));
    assert_eq!(to_a.local_pref, Some(100));
    assert!(l.rib.advertised(l.c, p("10.3.0.0/16")).is_none());
}

#[test]
fn route_reflector_client_and_non_client_rules() {
    let mut l = lab(true, |n, pc| pc.rr_client = n == "a" || n == "d");
    // From client a: to every peer, with ORIGINATOR_ID and CLUSTER_LIST.
    l.rib
        .announce(l.a, attrs(&[], "192.0.2.10"), [e("10.10.0.0/16")])
        .unwrap();
    for peer in [l.b, l.d] {
        let out = l.rib.advertised(peer, p("10.10.0.0/16")).unwrap();
        assert_eq!(out.originator_id, Some(Ipv4Addr::new(10, 0, 0, 10)));
        assert_eq!(out.cluster_list, vec![ME]);
        assert_eq!(
            out.next_hop,
            nh("192.0.2.10"),
            "reflector keeps the next hop"
        );
    }
    assert!(l.rib.advertised(l.a, p("10.10.0.0/16")).is_none());
    // From non-client b: to clients only.
    l.rib
        .announce(l.b, attrs(&[], "192.0.2.11"), [e("10.11.0.0/16")])
        .unwrap();
    assert!(l.rib.advertised(l.a, p("10.11.0.0/16")).is_some());
    assert!(l.rib.advertised(l.d, p("10.11.0.0/16")).is_some());
    // An existing ORIGINATOR_ID is kept, our cluster id goes in front.
    let mut reflected = attrs(&[], "192.0.2.50");
    reflected.originator_id = Some(Ipv4Addr::new(10, 0, 0, 50));
    reflected.cluster_list = vec![Ipv4Addr::new(10, 9, 9, 9)];
    l.rib.announce(l.a, reflected, [e("10.12.0.0/16")]).unwrap();
    let out = l.rib.advertised(l.b, p("10.12.0.0/16")).unwrap();
    assert_eq!(out.originator_id, Some(Ipv4Addr::new(10, 0, 0, 50)));
    assert_eq!(out.cluster_list, vec![ME, Ipv4Addr::new(10, 9, 9, 9)]);
    // And to eBGP the RR attributes are removed.
    let out = l.rib.advertised(l.c, p("10.12.0.0/16")).unwrap();
    assert_eq!(out.originator_id, None);
    assert!(out.cluster_list.is_empty());
}

#[test]
fn route_reflection_loops_are_dropped_on_receipt() {
    let mut l = lab(true, |n, pc| pc.rr_client = n == "a");
    let mut mine = attrs(&[], "192.0.2.10");
    mine.originator_id = Some(ME);
    let o = l.rib.announce(l.a, mine, [e("10.20.0.0/16")]).unwrap();
    assert_eq!(o.dropped, Some(DropReason::OriginatorIsUs));
    let mut looped = attrs(&[], "192.0.2.10");
    looped.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1), ME];
    let o = l.rib.announce(l.a, looped, [e("10.20.0.0/16")]).unwrap();
    assert_eq!(o.dropped, Some(DropReason::ClusterLoop));
    assert!(l.rib.best(p("10.20.0.0/16")).is_none());
}

#[test]
fn ebgp_export_rewrites_attributes() {
    let mut l = lab(false, |_, _| {});
    let mut learned = attrs(&[65100], "192.0.2.10");
    learned.local_pref = Some(200);
    learned.med = Some(5);
    l.rib.announce(l.a, learned, [e("10.1.0.0/16")]).unwrap();
    let out = l.rib.advertised(l.c, p("10.1.0.0/16")).unwrap();
    assert_eq!(out.as_path, path(&[65000, 65100]));
    assert_eq!(out.next_hop, nh("192.0.2.1"));
    assert_eq!(out.local_pref, None);
    assert_eq!(out.med, None, "a learned MED is not passed to another AS");
    // A locally originated MED is kept.
    l.rib.originate(
        p("10.244.1.0/24"),
        PathAttrs {
            med: Some(10),
            ..PathAttrs::local()
        },
    );
    let out = l.rib.advertised(l.c, p("10.244.1.0/24")).unwrap();
    assert_eq!(out.med, Some(10));
    assert_eq!(out.as_path, path(&[65000]));
    // To iBGP the local route gets our next hop and the default LOCAL_PREF.
    let out = l.rib.advertised(l.a, p("10.244.1.0/24")).unwrap();
    assert_eq!(out.next_hop, nh("192.0.2.1"));
    assert_eq!(out.local_pref, Some(100));
    assert!(out.as_path.segments.is_empty());
}

#[test]
fn ipv6_routes_use_the_sessions_ipv6_address() {
    let mut l = lab(false, |_, _| {});
    l.rib.originate(p("fd00:1::/64"), PathAttrs::local());
    let out = l.rib.advertised(l.c, p("fd00:1::/64")).unwrap();
    assert_eq!(
        out.next_hop,
        Some(NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None
        })
    );
}

#[test]
fn next_hop_self_for_ibgp() {
    let mut l = lab(false, |n, pc| pc.next_hop_self = n == "b");
    l.rib
        .announce(l.c, attrs(&[65003], "198.51.100.3"), [e("10.3.0.0/16")])
        .unwrap();
    let to_b = l.rib.advertised(l.b, p("10.3.0.0/16")).unwrap();
    assert_eq!(to_b.next_hop, nh("192.0.2.1"));
    let to_a = l.rib.advertised(l.a, p("10.3.0.0/16")).unwrap();
    assert_eq!(to_a.next_hop, nh("198.51.100.3"));
}

#[test]
fn well_known_communities() {
    let mut l = lab(false, |_, _| {});
    for (c, s) in [
        (Community::NO_EXPORT, "10.1.0.0/16"),
        (Community::NO_EXPORT_SUBCONFED, "10.2.0.0/16"),
        (Community::NO_ADVERTISE, "10.3.0.0/16"),
    ] {
        let mut a = attrs(&[65003], "198.51.100.3");
        a.communities = vec![c];
        l.rib.announce(l.c, a, [e(s)]).unwrap();
    }
    // NO_EXPORT(_SUBCONFED): iBGP yes, eBGP no.
    for s in ["10.1.0.0/16", "10.2.0.0/16"] {
        assert!(l.rib.advertised(l.a, p(s)).is_some());
        assert!(l.rib.advertised(l.e, p(s)).is_none());
    }
    // NO_ADVERTISE: nobody.
    for peer in [l.a, l.b, l.e] {
        assert!(l.rib.advertised(peer, p("10.3.0.0/16")).is_none());
    }
    // But it is still our best path.
    assert!(l.rib.best(p("10.3.0.0/16")).is_some());
}

#[test]
fn receipt_checks() {
    let mut l = lab(false, |n, pc| pc.enforce_first_as = n != "e");
    // Our AS in the path.
    let o = l
        .rib
        .announce(
            l.c,
            attrs(&[65003, 65000, 7], "198.51.100.3"),
            [e("10.1.0.0/16")],
        )
        .unwrap();
    assert_eq!(o.dropped, Some(DropReason::AsLoop));
    // Next hop is ours.
    let o = l
        .rib
        .announce(l.c, attrs(&[65003], "192.0.2.1"), [e("10.1.0.0/16")])
        .unwrap();
    assert_eq!(o.dropped, Some(DropReason::OwnNextHop));
    // First AS is not the peer's (c enforces, e does not).
    let o = l
        .rib
        .announce(l.c, attrs(&[65099], "198.51.100.3"), [e("10.1.0.0/16")])
        .unwrap();
    assert_eq!(o.dropped, Some(DropReason::FirstAsMismatch));
    let o = l
        .rib
        .announce(l.e, attrs(&[65099], "203.0.113.5"), [e("10.1.0.0/16")])
        .unwrap();
    assert_eq!(o.dropped, None);
    assert_eq!(o.accepted, 1);
    // A dropped re-announcement withdraws the previous path.
    let o = l
        .rib
        .announce(
            l.e,
            attrs(&[65099, 65000], "203.0.113.5"),
            [e("10.1.0.0/16")],
        )
        .unwrap();
    assert_eq!(o.removed, 1);
    assert!(l.rib.best(p("10.1.0.0/16")).is_none());
    // LOCAL_PREF from an eBGP peer is not stored.
    let mut lp = attrs(&[65003], "198.51.100.3");
    lp.local_pref = Some(999);
    l.rib.announce(l.c, lp, [e("10.2.0.0/16")]).unwrap();
    assert_eq!(l.rib.best(p("10.2.0.0/16")).unwrap().attrs.local_pref, None);
}

#[test]
fn import_filters_prefix_and_communities() {
    let tag = Community::new(65003, 100);
    let big = LargeCommunity {
        global_admin: 65003,
        local1: 1,
        local2: 1,
    };
    let mut l = lab(false, |n, pc| {
        if n == "c" {
            pc.import = Filter {
                rules: vec![
                    Rule::prefix(PrefixMatch::Exact(p("10.244.9.0/24")), Action::Reject),
                    Rule::prefix(
                        PrefixMatch::within(p("10.244.0.0/16"), Some(24), Some(26)),
                        Action::Accept,
                    ),
                    Rule {
                        matches: Match {
                            community: Some(tag),
                            ..Match::default()
                        },
                        action: Action::Accept,
                        ..Rule::default()
                    },
                    Rule {
                        matches: Match {
                            large_community: Some(big),
                            ..Match::default()
                        },
                        action: Action::Accept,
                        ..Rule::default()
                    },
                ],
                default: Action::Reject,
            };
        }
    });
    let o = l
        .rib
        .announce(
            l.c,
            attrs(&[65003], "198.51.100.3"),
            [
                e("10.244.9.0/24"),
                e("10.244.1.0/24"),
                e("10.244.1.0/26"),
                e("10.244.1.0/27"),
                e("10.244.0.0/16"),
                e("192.168.0.0/16"),
            ],
        )
        .unwrap();
    assert_eq!((o.accepted, o.rejected), (2, 4));
    assert!(l.rib.best(p("10.244.1.0/24")).is_some());
    assert!(l.rib.best(p("10.244.9.0/24")).is_none());
    let mut tagged = attrs(&[65003], "198.51.100.3");
    tagged.communities = vec![tag];
    let o = l.rib.announce(l.c, tagged, [e("192.168.0.0/16")]).unwrap();
    assert_eq!(o.accepted, 1);
    let mut large = attrs(&[65003], "198.51.100.3");
    large.large_communities = vec![big];
    let o = l.rib.announce(l.c, large, [e("172.16.0.0/12")]).unwrap();
    assert_eq!(o.accepted, 1);
    assert_eq!(l.rib.prefixes_received(l.c), 4);
}

#[test]
fn export_filter_rejects_and_sets_communities() {
    let set = Community::new(65000, 1);
    let large = LargeCommunity {
        global_admin: 65000,
        local1: 2,
        local2: 3,
    };
    let mut l = lab(false, |n, pc| {
        if n == "c" {
            pc.export = Filter {
                rules: vec![
                    Rule {
                        matches: Match {
                            prefix: Some(PrefixMatch::within(p("10.244.0.0/16"), None, None)),
                            ..Match::default()
                        },
                        action: Action::Accept,
                        add_communities: vec![set],
                        add_large_communities: vec![large],
                    },
                    Rule::prefix(
                        PrefixMatch::within(p("0.0.0.0/0"), None, None),
                        Action::Reject,
                    ),
                ],
                default: Action::Accept,
            };
        }
    });
    l.rib.originate(p("10.244.1.0/24"), PathAttrs::local());
    l.rib.originate(p("192.168.1.0/24"), PathAttrs::local());
    let out = l.rib.advertised(l.c, p("10.244.1.0/24")).unwrap();
    assert_eq!(out.communities, vec![set]);
    assert_eq!(out.large_communities, vec![large]);
    assert!(l.rib.advertised(l.c, p("192.168.1.0/24")).is_none());
    // Other peers are unaffected.
    let out = l.rib.advertised(l.e, p("10.244.1.0/24")).unwrap();
    assert!(out.communities.is_empty());
}

#[test]
fn max_prefix_cease_and_warn() {
    let mut l = lab(false, |n, pc| {
        pc.max_prefix = match n {
            "c" => Some(MaxPrefix {
                limit: 2,
                action: MaxPrefixAction::Cease,
            }),
            "e" => Some(MaxPrefix {
                limit: 2,
                action: MaxPrefixAction::Warn,
            }),
            _ => None,
        };
    });
    let three = [e("10.1.0.0/16"), e("10.2.0.0/16"), e("10.3.0.0/16")];
    let o = l
        .rib
        .announce(l.c, attrs(&[65003], "198.51.100.3"), three)
        .unwrap();
    let hit = o.max_prefix.unwrap();
    assert_eq!((hit.limit, hit.count), (2, 3));
    let n = hit.notification().unwrap();
    assert_eq!((n.code, n.subcode), (tortie_bgp::wire::ErrorCode::Cease, 1));
    assert_eq!(n.data, vec![0, 1, 1, 0, 0, 0, 2]);
    // Reported once per crossing.
    let o = l
        .rib
        .announce(l.c, attrs(&[65003], "198.51.100.3"), [e("10.4.0.0/16")])
        .unwrap();
    assert!(o.max_prefix.is_none());

    let o = l
        .rib
        .announce(l.e, attrs(&[65005], "203.0.113.5"), three)
        .unwrap();
    let hit = o.max_prefix.unwrap();
    assert_eq!(hit.action, MaxPrefixAction::Warn);
    assert!(hit.notification().is_none());
    assert_eq!(l.rib.prefixes_received(l.e), 3, "warn keeps the routes");
}

#[test]
fn applies_a_decoded_update() {
    let mut l = lab(false, |_, _| {});
    let u = Update {
        attributes: attrs(&[65003], "198.51.100.3").to_wire(),
        nlri: NlriSet::from_prefixes(
            tortie_bgp::wire::Family::IPV4_UNICAST,
            [p("10.1.0.0/16"), p("10.2.0.0/16")],
        )
        .unwrap(),
        ..Update::default()
    };
    let o = l.rib.apply_update(l.c, &u).unwrap();
    assert_eq!(o.accepted, 2);
    assert_eq!(
        l.rib.best(p("10.2.0.0/16")).unwrap().attrs.next_hop,
        nh("198.51.100.3")
    );
    // The export to e round-trips through the codec's packer.
    let ups = l.rib.take_updates(l.e).unwrap();
    let mut bytes = Vec::new();
    let n: usize = ups
        .iter()
        .map(|u| u.encode(&SessionContext::four_octet(), &mut bytes).unwrap())
        .sum();
    assert_eq!(n, 1);
}

#[test]
fn applies_an_ipv6_mp_reach_update_and_its_withdrawal() {
    use tortie_bgp::wire::{Family, MpReach, MpUnreach};
    let mut l = lab(false, |_, _| {});
    let v6 = Family::IPV6_UNICAST;
    let hop = NextHop::V6 {
        global: "2001:db8:100::3".parse().unwrap(),
        link_local: Some("fe80::3".parse().unwrap()),
    };
    let u = Update {
        attributes: PathAttrs {
            as_path: path(&[65003]),
            ..PathAttrs::local()
        }
        .to_wire(),
        mp_reach: Some(MpReach {
            next_hop: hop,
            nlri: NlriSet::from_prefixes(v6, [p("fd00:10::/64"), p("fd00:11::/64")]).unwrap(),
        }),
        ..Update::default()
    };
    let o = l.rib.apply_update(l.c, &u).unwrap();
    assert_eq!(o.accepted, 2);
    assert_eq!(
        l.rib.best(p("fd00:10::/64")).unwrap().attrs.next_hop,
        Some(hop)
    );
    // Exported to e with our IPv6 session address as next hop.
    let out = l.rib.advertised(l.e, p("fd00:11::/64")).unwrap();
    assert_eq!(
        out.next_hop,
        Some(NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None
        })
    );
    let w = Update {
        mp_unreach: Some(MpUnreach {
            withdrawn: NlriSet::from_prefixes(v6, [p("fd00:10::/64")]).unwrap(),
        }),
        ..Update::default()
    };
    let o = l.rib.apply_update(l.c, &w).unwrap();
    assert_eq!(o.removed, 1);
    assert!(l.rib.best(p("fd00:10::/64")).is_none());
    let fib = l.rib.take_fib_changes();
    assert!(fib
        .iter()
        .any(|c| c.prefix == p("fd00:10::/64") && c.is_gone()));
}
