//! Encapsulation per IP pool: which next hops go through a tunnel, the
//! VTEP addressing scheme, and the MTU that leaves room for the outer
//! headers. Pure: no netlink, no clock.
//!
//! # Decision
//!
//! A learned route whose prefix lies inside an IP pool takes that pool's
//! [`Mode`] (the most specific pool wins). Each next hop of the route is
//! decided on its own ([`encap_for`]), so an ECMP set may mix encapsulated
//! and plain next hops. The `CrossSubnet` modes encapsulate only when the
//! next hop is outside the node's own underlay subnet (the node's BGP
//! address `ADDR/LEN`): neighbours on the same L2 segment are reached
//! natively; anything behind a router that does not know pod routes goes
//! through the tunnel.
//!
//! Without a known underlay address nothing is encapsulated: a tunnel
//! needs a local endpoint and CrossSubnet needs the subnet.
//!
//! # VXLAN addressing
//!
//! Every node's VXLAN device gets a MAC derived from the node's underlay
//! address ([`vtep_mac`]). For a remote node R a route goes
//! `via R dev vxlan.tortie onlink`, with a permanent neighbour entry
//! `R lladdr vtep_mac(R) dev vxlan.tortie` and a static FDB entry
//! `vtep_mac(R) dst R dev vxlan.tortie`. Why the underlay address itself is
//! the VTEP's next-hop address:
//! - It is what BGP already carries as the next hop, so nothing else has
//!   to be allocated, stored in the datastore or advertised (Calico gives
//!   each node a separate VTEP address from the pool; tortie does not need
//!   one).
//! - The neighbour entry lives on the VXLAN device, so it never collides
//!   with the underlay's own ARP entry for R on the physical interface.
//! - Both ends compute the same MAC from the same address, so the inner
//!   frame's destination MAC is the remote device's own MAC and the remote
//!   kernel accepts it without learning or multicast.
//!
//! MAC scheme: `0e:74:a:b:c:d` for IPv4 `a.b.c.d` (locally administered,
//! unicast; injective over IPv4), and `0e:76:` + the FNV-1a 32-bit hash of
//! the 16 octets for IPv6 (two underlay addresses of one cluster colliding
//! is then a 1 in 2^32 event per pair).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An IP pool's encapsulation, as `IPPool.spec.encapsulation` spells it.
#[allow(clippy::upper_case_acronyms)] // the resource's spelling
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Mode {
    /// Route natively via the BGP next hop.
    #[default]
    None,
    /// IP-in-IP to every remote node.
    IPIP,
    /// IP-in-IP only to nodes outside the underlay subnet.
    IPIPCrossSubnet,
    /// VXLAN to every remote node.
    VXLAN,
    /// VXLAN only to nodes outside the underlay subnet.
    VXLANCrossSubnet,
}

impl Mode {
    /// The tunnel this mode uses when it encapsulates.
    pub fn tunnel(self) -> Encap {
        match self {
            Mode::None => Encap::None,
            Mode::IPIP | Mode::IPIPCrossSubnet => Encap::Ipip,
            Mode::VXLAN | Mode::VXLANCrossSubnet => Encap::Vxlan,
        }
    }

    fn cross_subnet_only(self) -> bool {
        matches!(self, Mode::IPIPCrossSubnet | Mode::VXLANCrossSubnet)
    }
}

/// An IP pool as the FIB needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolEncap {
    pub cidr: IpNet,
    pub mode: Mode,
}

/// How one next hop is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Encap {
    /// Natively, via the next hop.
    None,
    /// IP-in-IP (`via NH dev ipip.tortie onlink`).
    Ipip,
    /// VXLAN (`via NH dev vxlan.tortie onlink` + neighbour + FDB).
    Vxlan,
}

impl Encap {
    /// Bytes of outer headers per packet. IPIP adds one IP header (20 for
    /// IPv4; an IPv6 underlay would need ip6tnl, 40). VXLAN adds outer IP +
    /// UDP (8) + VXLAN (8) + inner Ethernet (14): 50 over IPv4, 70 over IPv6.
    pub fn overhead(self, underlay_v6: bool) -> u32 {
        match (self, underlay_v6) {
            (Encap::None, _) => 0,
            (Encap::Ipip, false) => 20,
            (Encap::Ipip, true) => 40,
            (Encap::Vxlan, false) => 50,
            (Encap::Vxlan, true) => 70,
        }
    }
}

/// The mode of the most specific pool containing `dst` (`None` outside
/// every pool).
pub fn pool_mode(pools: &[PoolEncap], dst: &IpNet) -> Mode {
    pools
        .iter()
        .filter(|p| p.cidr.contains(dst))
        .max_by_key(|p| p.cidr.prefix_len())
        .map_or(Mode::None, |p| p.mode)
}

/// How to reach `next_hop` for a route of a pool in `mode`, given the
/// node's underlay address `ADDR/LEN`.
pub fn encap_for(mode: Mode, next_hop: IpAddr, underlay: Option<&IpNet>) -> Encap {
    let Some(underlay) = underlay else {
        return Encap::None;
    };
    // A tunnel's endpoints share the underlay's family.
    if mode == Mode::None || next_hop.is_ipv4() != underlay.addr().is_ipv4() {
        return Encap::None;
    }
    if next_hop == underlay.addr() {
        return Encap::None;
    }
    if mode.cross_subnet_only() && underlay.contains(&next_hop) {
        return Encap::None;
    }
    mode.tunnel()
}

/// The tunnels the pools ask for (a device exists as soon as one pool
/// wants it, before any route uses it).
pub fn tunnels_wanted(pools: &[PoolEncap]) -> Vec<Encap> {
    let mut v: Vec<Encap> = pools
        .iter()
        .map(|p| p.mode.tunnel())
        .filter(|e| *e != Encap::None)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The MAC of the VXLAN device of the node whose underlay address is
/// `addr` (see the module docs for the scheme).
pub fn vtep_mac(addr: IpAddr) -> [u8; 6] {
    match addr {
        IpAddr::V4(a) => {
            let [b0, b1, b2, b3] = a.octets();
            [0x0e, 0x74, b0, b1, b2, b3]
        }
        IpAddr::V6(a) => {
            let mut h: u32 = 0x811c_9dc5;
            for b in a.octets() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            let [b0, b1, b2, b3] = h.to_be_bytes();
            [0x0e, 0x76, b0, b1, b2, b3]
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// MTUs derived from the underlay and the paths to the remote nodes.
///
/// A tunnel device's MTU is the smallest path MTU among the remote nodes
/// it sends to, minus its overhead: one peer behind a link with a smaller
/// MTU (a route with `mtu 1300`, a learned PMTU) would otherwise see every
/// full-size packet dropped or fragmented. Before any remote is known the
/// underlay device's MTU stands in for the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mtus {
    /// The underlay device's MTU (the device holding the node's underlay
    /// address).
    pub underlay: u32,
    /// The IPIP device's MTU, when a pool wants IPIP.
    pub ipip: Option<u32>,
    /// The VXLAN device's MTU, when a pool wants VXLAN.
    pub vxlan: Option<u32>,
    /// What pod interfaces should use: room for the largest overhead of any
    /// tunnel in use, so a pod's packet fits whichever path it takes.
    pub pod: u32,
    /// The smallest path MTU to a remote node the IPIP device sends to
    /// (`None` while it has no remote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_path: Option<u32>,
    /// The same for the VXLAN device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_path: Option<u32>,
}

/// The kernel's route towards one remote node's underlay address, as
/// `ip route get ADDR` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRoute {
    /// The route's MTU metric (`RTAX_MTU`): `ip route ... mtu N`, or a
    /// path MTU the kernel learned from ICMP. `None` (or 0) when unset.
    pub route_mtu: Option<u32>,
    /// The MTU of the route's output device.
    pub device_mtu: u32,
}

impl PeerRoute {
    /// The path MTU: the route's metric when set, else the device's
    /// (the kernel's own rule for a route without a metric).
    pub fn path_mtu(&self) -> u32 {
        self.route_mtu.filter(|m| *m > 0).unwrap_or(self.device_mtu)
    }
}

/// The MTUs for an underlay device MTU, the pools, and the path MTU to
/// each remote a tunnel serves (`(tunnel, path MTU)`, one entry per
/// remote and tunnel; an empty list before any remote is known).
pub fn mtus(
    underlay_mtu: u32,
    underlay_v6: bool,
    pools: &[PoolEncap],
    paths: &[(Encap, u32)],
) -> Mtus {
    let wanted = tunnels_wanted(pools);
    let narrowest = |e: Encap| {
        paths
            .iter()
            .filter(|(t, _)| *t == e && wanted.contains(t))
            .map(|(_, mtu)| *mtu)
            .min()
    };
    let dev = |e: Encap| {
        wanted.contains(&e).then(|| {
            narrowest(e)
                .unwrap_or(underlay_mtu)
                .saturating_sub(e.overhead(underlay_v6))
        })
    };
    let (ipip, vxlan) = (dev(Encap::Ipip), dev(Encap::Vxlan));
    // Pods also send natively (CrossSubnet neighbours, plain pools) over
    // the underlay device, so never more than its MTU.
    let pod = [ipip, vxlan]
        .into_iter()
        .flatten()
        .fold(underlay_mtu, u32::min);
    Mtus {
        underlay: underlay_mtu,
        ipip,
        vxlan,
        pod,
        ipip_path: narrowest(Encap::Ipip),
        vxlan_path: narrowest(Encap::Vxlan),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn the_most_specific_pool_decides() {
        let pools = [
            PoolEncap {
                cidr: net("10.244.0.0/16"),
                mode: Mode::VXLAN,
            },
            PoolEncap {
                cidr: net("10.244.8.0/21"),
                mode: Mode::IPIPCrossSubnet,
            },
        ];
        assert_eq!(pool_mode(&pools, &net("10.244.1.0/24")), Mode::VXLAN);
        assert_eq!(
            pool_mode(&pools, &net("10.244.9.0/24")),
            Mode::IPIPCrossSubnet
        );
        // A route wider than every pool, or outside them, is plain.
        assert_eq!(pool_mode(&pools, &net("10.0.0.0/8")), Mode::None);
        assert_eq!(pool_mode(&pools, &net("10.245.0.0/24")), Mode::None);
        assert_eq!(pool_mode(&pools, &net("fd00::/64")), Mode::None);
    }

    #[test]
    fn cross_subnet_encapsulates_only_outside_the_underlay_subnet() {
        let u = net("192.0.2.11/25");
        let same = ip("192.0.2.12");
        let other = ip("198.51.100.12");
        for (mode, same_want, other_want) in [
            (Mode::None, Encap::None, Encap::None),
            (Mode::IPIP, Encap::Ipip, Encap::Ipip),
            (Mode::IPIPCrossSubnet, Encap::None, Encap::Ipip),
            (Mode::VXLAN, Encap::Vxlan, Encap::Vxlan),
            (Mode::VXLANCrossSubnet, Encap::None, Encap::Vxlan),
        ] {
            assert_eq!(encap_for(mode, same, Some(&u)), same_want, "{mode:?}");
            assert_eq!(encap_for(mode, other, Some(&u)), other_want, "{mode:?}");
        }
        // /25: 192.0.2.200 is across the router.
        assert_eq!(
            encap_for(Mode::VXLANCrossSubnet, ip("192.0.2.200"), Some(&u)),
            Encap::Vxlan
        );
    }

    #[test]
    fn no_underlay_or_another_family_means_plain() {
        assert_eq!(encap_for(Mode::VXLAN, ip("192.0.2.12"), None), Encap::None);
        let u = net("192.0.2.11/24");
        assert_eq!(
            encap_for(Mode::VXLAN, ip("2001:db8::12"), Some(&u)),
            Encap::None
        );
        let u6 = net("2001:db8::11/64");
        assert_eq!(
            encap_for(Mode::VXLAN, ip("2001:db8:1::12"), Some(&u6)),
            Encap::Vxlan
        );
        // Never a tunnel to ourselves.
        assert_eq!(
            encap_for(Mode::IPIP, ip("192.0.2.11"), Some(&u)),
            Encap::None
        );
    }

    #[test]
    fn vtep_macs_are_local_unicast_and_stable() {
        let m = vtep_mac(ip("192.0.2.12"));
        assert_eq!(mac_string(&m), "0e:74:c0:00:02:0c");
        let m6 = vtep_mac(ip("2001:db8::12"));
        assert_eq!(m6[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(m6, vtep_mac(ip("2001:db8::12")));
        assert_ne!(m6, vtep_mac(ip("2001:db8::13")));
    }

    fn pools(modes: &[Mode]) -> Vec<PoolEncap> {
        modes
            .iter()
            .enumerate()
            .map(|(i, m)| PoolEncap {
                cidr: net(&format!("10.{i}.0.0/16")),
                mode: *m,
            })
            .collect()
    }

    #[test]
    fn without_remotes_the_underlay_device_decides() {
        let m = mtus(1500, false, &pools(&[Mode::None]), &[]);
        assert_eq!((m.pod, m.ipip, m.vxlan), (1500, None, None));
        assert_eq!((m.ipip_path, m.vxlan_path), (None, None));
        let m = mtus(1500, false, &pools(&[Mode::IPIPCrossSubnet]), &[]);
        assert_eq!((m.pod, m.ipip, m.vxlan), (1480, Some(1480), None));
        let m = mtus(
            9000,
            false,
            &pools(&[Mode::IPIP, Mode::VXLANCrossSubnet]),
            &[],
        );
        assert_eq!((m.pod, m.ipip, m.vxlan), (8950, Some(8980), Some(8950)));
        let m = mtus(1500, true, &pools(&[Mode::VXLAN]), &[]);
        assert_eq!((m.pod, m.vxlan), (1430, Some(1430)));
        let m = mtus(1500, true, &pools(&[Mode::IPIP]), &[]);
        assert_eq!((m.pod, m.ipip), (1460, Some(1460)));
    }

    #[test]
    fn the_narrowest_path_a_tunnel_serves_decides_its_mtu() {
        let p = pools(&[Mode::VXLAN]);
        // Two remotes: one behind a 1300 route, one at 1500.
        let m = mtus(
            1500,
            false,
            &p,
            &[(Encap::Vxlan, 1500), (Encap::Vxlan, 1300)],
        );
        assert_eq!(
            (m.vxlan, m.pod, m.vxlan_path),
            (Some(1250), 1250, Some(1300))
        );
        // Paths wider than the underlay device: the tunnel may use them,
        // pods stay within the device (they also leave natively).
        let m = mtus(1500, false, &p, &[(Encap::Vxlan, 9000)]);
        assert_eq!((m.vxlan, m.pod), (Some(8950), 1500));
        // IPv6 underlay: 70 octets of VXLAN overhead.
        let m = mtus(1500, true, &p, &[(Encap::Vxlan, 1400)]);
        assert_eq!((m.vxlan, m.pod), (Some(1330), 1330));
    }

    #[test]
    fn each_tunnel_counts_only_its_own_remotes() {
        let p = pools(&[Mode::IPIP, Mode::VXLANCrossSubnet]);
        let m = mtus(
            1500,
            false,
            &p,
            &[
                (Encap::Ipip, 1400),
                (Encap::Vxlan, 1500),
                (Encap::Vxlan, 1450),
            ],
        );
        assert_eq!(m.ipip, Some(1380));
        assert_eq!(m.vxlan, Some(1400));
        assert_eq!(
            m.pod, 1380,
            "room for whichever tunnel a pod's packet takes"
        );
        assert_eq!((m.ipip_path, m.vxlan_path), (Some(1400), Some(1450)));
        // A tunnel no pool wants any more: its remotes do not count.
        let m = mtus(1500, false, &pools(&[Mode::VXLAN]), &[(Encap::Ipip, 1000)]);
        assert_eq!((m.ipip, m.vxlan, m.pod), (None, Some(1450), 1450));
        assert_eq!(m.ipip_path, None);
        // Remotes of one tunnel only: the other still uses the device.
        let m = mtus(1500, false, &p, &[(Encap::Vxlan, 1300)]);
        assert_eq!((m.ipip, m.vxlan, m.pod), (Some(1480), Some(1250), 1250));
    }

    #[test]
    fn a_route_mtu_metric_wins_over_the_device() {
        let r = PeerRoute {
            route_mtu: Some(1300),
            device_mtu: 1500,
        };
        assert_eq!(r.path_mtu(), 1300);
        let r = PeerRoute {
            route_mtu: None,
            device_mtu: 1450,
        };
        assert_eq!(r.path_mtu(), 1450);
        // A zero metric is "unset" to the kernel too.
        let r = PeerRoute {
            route_mtu: Some(0),
            device_mtu: 1450,
        };
        assert_eq!(r.path_mtu(), 1450);
    }

    #[test]
    fn mode_names_are_the_resource_spelling() {
        for (m, s) in [
            (Mode::None, "\"None\""),
            (Mode::IPIP, "\"IPIP\""),
            (Mode::IPIPCrossSubnet, "\"IPIPCrossSubnet\""),
            (Mode::VXLAN, "\"VXLAN\""),
            (Mode::VXLANCrossSubnet, "\"VXLANCrossSubnet\""),
        ] {
            assert_eq!(serde_json::to_string(&m).expect("serialises"), s);
        }
    }
}
