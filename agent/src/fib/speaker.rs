//! From the speaker's best-route changes to kernel routes: pure.

use std::net::IpAddr;

use tortie_bgp::rib::decision::SourceKind;
use tortie_bgp::rib::FibChange;
use tortie_bgp::wire::NextHop as WireNextHop;

use super::{KernelRoute, NextHop};

/// The kernel route for one best-route change; `None` removes it.
/// Our own prefixes are never routed via ourselves: they get a blackhole
/// (so unallocated addresses do not follow the default route) or nothing.
pub fn fib_route(c: &FibChange, blackhole_originated: bool) -> Option<KernelRoute> {
    let dst = ipnet::IpNet::from(c.prefix);
    if c.is_gone() {
        return None;
    }
    if c.is_local() {
        return blackhole_originated.then(|| KernelRoute::blackhole(dst));
    }
    let hops: Vec<NextHop> = c
        .paths
        .iter()
        .filter(|p| p.kind != SourceKind::Local)
        .filter_map(|p| p.next_hop)
        .filter_map(|nh| {
            let ip = match nh {
                WireNextHop::V4(a) => IpAddr::V4(a),
                WireNextHop::V6 { global, .. } => IpAddr::V6(global),
            };
            // A next hop of another family (IPv4-mapped on an IPv4 session,
            // or unspecified) is not something the kernel can route via.
            (ip.is_ipv4() == dst.addr().is_ipv4() && !ip.is_unspecified()).then_some(ip)
        })
        .map(NextHop::via)
        .collect();
    if hops.is_empty() {
        return None;
    }
    Some(KernelRoute::unicast(dst, hops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tortie_bgp::wire::Prefix;

    fn path(nh: Option<WireNextHop>, kind: SourceKind) -> tortie_bgp::rib::FibPath {
        tortie_bgp::rib::FibPath {
            next_hop: nh,
            peer: tortie_bgp::rib::PeerId(1),
            peer_address: None,
            kind,
            path_id: 0,
            stale: false,
        }
    }

    #[test]
    fn fib_routes_from_best_route_changes() {
        let prefix: Prefix = "10.244.2.0/24".parse().expect("prefix");
        let v4 = |a: [u8; 4]| Some(WireNextHop::V4(Ipv4Addr::from(a)));
        // Two iBGP paths: one multipath route, next hops sorted.
        let c = FibChange {
            prefix,
            paths: vec![
                path(v4([192, 0, 2, 13]), SourceKind::Ibgp),
                path(v4([192, 0, 2, 12]), SourceKind::Ibgp),
            ],
        };
        let r = fib_route(&c, true).expect("route");
        assert_eq!(
            r.to_string(),
            "10.244.2.0/24 nexthop via 192.0.2.12 nexthop via 192.0.2.13"
        );
        // Our own prefix: a blackhole, or nothing.
        let own = FibChange {
            prefix,
            paths: vec![path(None, SourceKind::Local)],
        };
        assert_eq!(
            fib_route(&own, true).map(|r| r.to_string()),
            Some("10.244.2.0/24 blackhole".into())
        );
        assert_eq!(fib_route(&own, false), None);
        // Gone, and a next hop of the other family: nothing to install.
        assert_eq!(
            fib_route(
                &FibChange {
                    prefix,
                    paths: vec![]
                },
                true
            ),
            None
        );
        let v6 = FibChange {
            prefix,
            paths: vec![path(
                Some(WireNextHop::V6 {
                    global: "::ffff:192.0.2.12".parse().expect("v6"),
                    link_local: None,
                }),
                SourceKind::Ebgp,
            )],
        };
        assert_eq!(fib_route(&v6, true), None);
    }
}
