//! The kernel route model, independent of netlink's encoding.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// The routing protocol number tortie marks its routes with (`ip route show
/// proto 52`). Not in iproute2's well-known table; chosen to stay clear of
/// BIRD (12), zebra (11), the BGP/IS-IS/OSPF range (186-192) and Calico.
/// Documented in the README; an operator may name it in
/// `/etc/iproute2/rt_protos.d/tortie.conf` as `52 tortie`.
pub const RTPROT_TORTIE: u8 = 52;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// Identifies one kernel route: one destination in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub table: u32,
    pub dst: IpNet,
}

/// One next hop of a unicast route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop {
    /// The gateway; `None` for a device route (a local pod's host route).
    pub gateway: Option<IpAddr>,
    /// Output interface index; `None` lets the kernel resolve the gateway.
    pub ifindex: Option<u32>,
    /// `onlink`: the gateway is reachable on `ifindex` without a covering
    /// connected route (IP-in-IP and VXLAN next hops).
    pub onlink: bool,
}

impl NextHop {
    pub fn via(gateway: IpAddr) -> Self {
        NextHop {
            gateway: Some(gateway),
            ifindex: None,
            onlink: false,
        }
    }

    pub fn dev(ifindex: u32) -> Self {
        NextHop {
            gateway: None,
            ifindex: Some(ifindex),
            onlink: false,
        }
    }

    pub fn via_dev_onlink(gateway: IpAddr, ifindex: u32) -> Self {
        NextHop {
            gateway: Some(gateway),
            ifindex: Some(ifindex),
            onlink: true,
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(gw) = self.gateway {
            write!(f, "via {gw}")?;
            sep = " ";
        }
        if let Some(ifindex) = self.ifindex {
            write!(f, "{sep}dev #{ifindex}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// Drop silently (the node's own pod CIDR: an unallocated pod address
    /// must not leak to the default route).
    Blackhole,
    /// One or more next hops; several make one multipath (ECMP) route.
    /// Kept sorted and deduplicated so equal sets compare equal. Shared:
    /// the routes through one peer can hold one set (the FIB's composer
    /// interns them), so a million routes cost a million pointers, and
    /// planning, recording and dropping them allocates and frees nothing.
    Unicast(Arc<[NextHop]>),
}

impl RouteTarget {
    /// Whether the kernel's `found` target is what `self` asks for. The
    /// kernel fills in the output interface of a gateway route; a wanted
    /// next hop that leaves the interface to the kernel accepts any.
    pub fn satisfied_by(&self, found: &RouteTarget) -> bool {
        match (self, found) {
            (RouteTarget::Blackhole, RouteTarget::Blackhole) => true,
            (RouteTarget::Unicast(want), RouteTarget::Unicast(have)) => {
                want.len() == have.len()
                    && want.iter().all(|w| {
                        have.iter().any(|h| {
                            w.gateway == h.gateway
                                && w.onlink == h.onlink
                                && (w.ifindex.is_none() || w.ifindex == h.ifindex)
                        })
                    })
            }
            _ => false,
        }
    }
}

/// A route as tortie wants it in the kernel (or found it there).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelRoute {
    pub key: RouteKey,
    pub target: RouteTarget,
}

impl KernelRoute {
    /// A blackhole route in the main table.
    pub fn blackhole(dst: IpNet) -> Self {
        KernelRoute {
            key: RouteKey {
                table: MAIN_TABLE,
                dst: dst.trunc(),
            },
            target: RouteTarget::Blackhole,
        }
    }

    /// A unicast route in the main table; the next hops are sorted and
    /// deduplicated. An empty set is a caller bug and yields a blackhole.
    pub fn unicast(dst: IpNet, mut hops: Vec<NextHop>) -> Self {
        hops.sort_unstable();
        hops.dedup();
        let target = if hops.is_empty() {
            RouteTarget::Blackhole
        } else {
            RouteTarget::Unicast(hops.into())
        };
        KernelRoute {
            key: RouteKey {
                table: MAIN_TABLE,
                dst: dst.trunc(),
            },
            target,
        }
    }
}

impl fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key.dst)?;
        if self.key.table != MAIN_TABLE {
            write!(f, " table {}", self.key.table)?;
        }
        match &self.target {
            RouteTarget::Blackhole => write!(f, " blackhole"),
            RouteTarget::Unicast(hops) if hops.len() == 1 => write!(f, " {}", hops[0]),
            RouteTarget::Unicast(hops) => {
                for h in hops.iter() {
                    write!(f, " nexthop {h}")?;
                }
                Ok(())
            }
        }
    }
}
