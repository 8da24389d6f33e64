//! Pod wiring by netlink: the veth pair, the pod's addresses and routes,
//! and the host-side settings that make the link-local gateway work.
//!
//! ```text
//!   pod netns (CNI_NETNS)                    host netns (the agent's)
//!  ┌──────────────────────────────┐         ┌──────────────────────────────────────┐
//!  │ CNI_IFNAME  10.244.1.7/32    │         │ tort<11 hex>  ee:ee:ee:ee:ee:ee      │
//!  │             fd00:1::7/128    ├─ veth ──┤   fe80::1/64 (no DAD)                │
//!  │ default via 169.254.1.1      │         │   proxy_arp=1, proxy_delay=0,        │
//!  │   dev CNI_IFNAME onlink      │         │   forwarding=1                       │
//!  │ default via fe80::1          │         │ 10.244.1.7/32 dev tort... scope link │
//!  │ neigh 169.254.1.1, fe80::1   │         │   proto 52 (by the daemon's FIB, or  │
//!  │   lladdr ee:ee:.. PERMANENT  │         │   install_host_routes in tests)      │
//!  └──────────────────────────────┘         └──────────────────────────────────────┘
//! ```
//!
//! Why this shape (Calico's): the pod has one default route through an
//! address that exists nowhere, so no pod-CIDR address is spent on a
//! gateway and every pod's view is the same. The host veth answers ARP for
//! 169.254.1.1 by proxy ARP; the pod also gets a permanent neighbour entry
//! for both gateways pointing at the host veth's fixed MAC, so the first
//! packet does not wait for ARP/NDP and the pod works even where proxy ARP
//! would not answer (a host without a route to 169.254.1.1). IPv6 needs no
//! proxy: `fe80::1` is a real address of the host veth (link-local, so the
//! same on every veth), added without DAD so it is usable at once.
//!
//! Forwarding: IPv4 `ip_forward` is switched on with the first IPv4 pod
//! (as every CNI plugin does). IPv6 forwarding is only set per host veth:
//! `net.ipv6.conf.all.forwarding` also turns off router-advertisement
//! processing on every interface of the node, so turning it on is the
//! agent's (or operator's) decision ([`enable_forwarding`]) — without it
//! pods reach the node over IPv6 but not each other.
//!
//! Owns: creating, checking and removing one pod's interfaces. It never
//! touches an interface it did not name, and never routes in the host
//! namespace except through [`install_host_routes`] (tests) — the agent
//! programs host routes with its FIB.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::netns::{run_in, NetnsHandle};
use crate::fib::{KernelRoute, NextHop, Op, RTPROT_TORTIE};

/// The pods' IPv4 gateway: link-local, answered by the host veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway: the host veth's link-local address.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The host veth's MAC, the same on every host veth (like Calico's), so
/// the pods' neighbour entries for the gateway are fixed.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// Errors wiring a pod.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("network namespace {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Check(String),
}

/// What to wire for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWiring {
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `tort` + 11 hex digits.
    pub host_iface: String,
    pub ips: Vec<IpAddr>,
    pub mtu: u32,
}

/// What wiring made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    pub host_ifindex: u32,
    pub host_mac: String,
    pub pod_ifindex: u32,
    pub pod_mac: String,
}

/// The wiring edge, bound to the host namespace it was made in.
#[derive(Debug, Clone)]
pub struct Dataplane {
    host: NetnsHandle,
}

impl Dataplane {
    /// Wires pods between `host` and their own namespaces.
    pub fn new(host: NetnsHandle) -> Self {
        Dataplane { host }
    }

    /// The calling thread's namespace is the host.
    pub fn current() -> io::Result<Self> {
        Ok(Self::new(NetnsHandle::current()?))
    }

    pub fn host(&self) -> &NetnsHandle {
        &self.host
    }

    /// Creates the pod's veth pair, addresses and routes. A pod interface
    /// or host veth left by an earlier attempt is replaced. Blocking.
    pub fn add(&self, w: &PodWiring) -> Result<Wired, DataplaneError> {
        let pod_ns = open_pod_netns(&w.netns)?;
        let w = w.clone();
        let host = self.host.clone();
        in_ns(&self.host, move || add_on_thread(&host, &pod_ns, &w))
    }

    /// Removes the pod's interface (and with it the veth pair). Missing
    /// namespace or interface is success: DEL is idempotent. Blocking.
    pub fn del(&self, netns: &str, ifname: &str) -> Result<(), DataplaneError> {
        if netns.is_empty() {
            return Ok(());
        }
        let pod_ns = match NetnsHandle::open(Path::new(netns)) {
            Ok(ns) => ns,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(DataplaneError::Netns {
                    path: netns.into(),
                    source,
                })
            }
        };
        let ifname = ifname.to_string();
        in_ns(&pod_ns, move || {
            let mut nl = Rtnl::open()?;
            nl.del_link(&ifname)
        })
    }

    /// Verifies the pod's wiring: both ends up, the pod's addresses and
    /// default routes in place. Blocking.
    pub fn check(&self, w: &PodWiring) -> Result<(), DataplaneError> {
        let pod_ns = open_pod_netns(&w.netns)?;
        let host_iface = w.host_iface.clone();
        let host_ok = in_ns(&self.host, move || {
            let mut nl = Rtnl::open()?;
            nl.link(&host_iface)
        })?;
        match host_ok {
            None => {
                return Err(DataplaneError::Check(format!(
                    "host interface {} does not exist",
                    w.host_iface
                )))
            }
            Some(l) if !l.up => {
                return Err(DataplaneError::Check(format!(
                    "host interface {} is down",
                    w.host_iface
                )))
            }
            Some(_) => {}
        }
        let w = w.clone();
        in_ns(&pod_ns, move || check_in_pod(&w))
    }
}

impl Dataplane {
    /// Interface indexes of those of `names` that exist in the host
    /// namespace. Blocking.
    pub fn host_ifindexes(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, u32>, DataplaneError> {
        let names = names.to_vec();
        in_ns(&self.host, move || {
            let mut nl = Rtnl::open()?;
            let mut out = std::collections::BTreeMap::new();
            for n in names {
                if let Some(l) = nl.link(&n)? {
                    out.insert(n, l.index);
                }
            }
            Ok(out)
        })
    }
}

fn open_pod_netns(netns: &str) -> Result<NetnsHandle, DataplaneError> {
    NetnsHandle::open(Path::new(netns)).map_err(|source| DataplaneError::Netns {
        path: netns.into(),
        source,
    })
}

/// `run_in` for work that returns a dataplane result.
fn in_ns<T: Send + 'static>(
    ns: &NetnsHandle,
    f: impl FnOnce() -> Result<T, DataplaneError> + Send + 'static,
) -> Result<T, DataplaneError> {
    run_in(ns, f).map_err(|source| DataplaneError::Netns {
        path: ns.path().display().to_string(),
        source,
    })?
}

fn mac_text(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn enter(ns: &NetnsHandle) -> Result<(), DataplaneError> {
    ns.enter().map_err(|source| DataplaneError::Netns {
        path: ns.path().display().to_string(),
        source,
    })
}

/// Runs on a dedicated thread that starts in the host namespace and moves
/// between it and the pod's (sockets and sysctls follow the thread's
/// namespace at open time).
fn add_on_thread(
    host_ns: &NetnsHandle,
    pod_ns: &NetnsHandle,
    w: &PodWiring,
) -> Result<Wired, DataplaneError> {
    let has_v4 = w.ips.iter().any(IpAddr::is_ipv4);
    let has_v6 = w.ips.iter().any(IpAddr::is_ipv6);
    let mut host = Rtnl::open()?;

    // A retried ADD, or a sandbox of the same pod whose DEL never came,
    // leaves interfaces under the names we are about to use.
    enter(pod_ns)?;
    let mut pod = Rtnl::open()?;
    pod.del_link(&w.ifname)?;

    enter(host_ns)?;
    host.del_link(&w.host_iface)?;
    host.create_veth(&w.host_iface, &w.ifname, w.mtu, pod_ns)?;
    let host_link = host.link(&w.host_iface)?.ok_or_else(|| {
        DataplaneError::Check(format!(
            "host interface {} vanished after creation",
            w.host_iface
        ))
    })?;
    let hif = &w.host_iface;
    if has_v4 {
        sysctl("net/ipv4/ip_forward", "1", false)?;
        sysctl(&format!("net/ipv4/conf/{hif}/forwarding"), "1", false)?;
        sysctl(&format!("net/ipv4/conf/{hif}/proxy_arp"), "1", false)?;
        // Answer proxy ARP at once, not after up to 0.8 s.
        sysctl(&format!("net/ipv4/neigh/{hif}/proxy_delay"), "0", false)?;
    }
    if has_v6 {
        sysctl(&format!("net/ipv6/conf/{hif}/accept_dad"), "0", true)?;
        sysctl(&format!("net/ipv6/conf/{hif}/forwarding"), "1", true)?;
        let gw = IpNet::new(IpAddr::V6(GATEWAY_V6), 64)
            .map_err(|e| DataplaneError::Check(format!("gateway prefix: {e}")))?;
        host.add_address(host_link.index, gw, AddressScope::Link)?;
    }
    host.set_up(host_link.index)?;

    enter(pod_ns)?;
    let pod_link = pod.link(&w.ifname)?.ok_or_else(|| {
        DataplaneError::Check(format!(
            "pod interface {} did not appear in {}",
            w.ifname, w.netns
        ))
    })?;
    if has_v6 {
        // Usable at once: IPAM made the /128 unique.
        sysctl(&format!("net/ipv6/conf/{}/accept_dad", w.ifname), "0", true)?;
    }
    for ip in &w.ips {
        pod.add_address(pod_link.index, IpNet::from(*ip), AddressScope::Universe)?;
    }
    pod.set_up(pod_link.index)?;
    for (present, gw) in [
        (has_v4, IpAddr::V4(GATEWAY_V4)),
        (has_v6, IpAddr::V6(GATEWAY_V6)),
    ] {
        if present {
            pod.add_neighbour(pod_link.index, gw, &HOST_MAC)?;
            pod.add_default_route(pod_link.index, gw)?;
        }
    }
    Ok(Wired {
        host_ifindex: host_link.index,
        host_mac: mac_text(&host_link.mac),
        pod_ifindex: pod_link.index,
        pod_mac: mac_text(&pod_link.mac),
    })
}

/// Runs on a thread in the pod namespace.
fn check_in_pod(w: &PodWiring) -> Result<(), DataplaneError> {
    let mut nl = Rtnl::open()?;
    let Some(link) = nl.link(&w.ifname)? else {
        return Err(DataplaneError::Check(format!(
            "interface {} does not exist in {}",
            w.ifname, w.netns
        )));
    };
    if !link.up {
        return Err(DataplaneError::Check(format!(
            "interface {} in {} is down",
            w.ifname, w.netns
        )));
    }
    let have = nl.addresses(link.index)?;
    for ip in &w.ips {
        if !have.contains(ip) {
            return Err(DataplaneError::Check(format!(
                "interface {} in {} lacks address {ip}",
                w.ifname, w.netns
            )));
        }
    }
    let defaults = nl.default_gateways(link.index)?;
    for (present, gw) in [
        (w.ips.iter().any(IpAddr::is_ipv4), IpAddr::V4(GATEWAY_V4)),
        (w.ips.iter().any(IpAddr::is_ipv6), IpAddr::V6(GATEWAY_V6)),
    ] {
        if present && !defaults.contains(&gw) {
            return Err(DataplaneError::Check(format!(
                "{} has no default route via {gw} dev {}",
                w.netns, w.ifname
            )));
        }
    }
    Ok(())
}

/// Writes `/proc/sys/<key>` for the calling thread's namespace. With
/// `optional`, a missing key (IPv6 disabled) is not an error.
fn sysctl(key: &str, value: &str, optional: bool) -> Result<(), DataplaneError> {
    let path = format!("/proc/sys/{key}");
    match std::fs::write(&path, value) {
        Ok(()) => Ok(()),
        Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataplaneError::Sysctl { path, source }),
    }
}

/// Turns on forwarding in `host` for the pods: IPv4 always, IPv6
/// (`net.ipv6.conf.all.forwarding`, which also stops router-advertisement
/// processing on the node's interfaces) when `ipv6`. For the agent at
/// start when the node has an IPv6 pod CIDR, and for tests. Blocking.
pub fn enable_forwarding(host: &NetnsHandle, ipv6: bool) -> Result<(), DataplaneError> {
    in_ns(host, move || {
        sysctl("net/ipv4/ip_forward", "1", false)?;
        if ipv6 {
            sysctl("net/ipv6/conf/all/forwarding", "1", false)?;
        }
        Ok(())
    })
}

/// Installs host routes (protocol 52) in `host`: what the agent's FIB does
/// for [`super::server::WiredWorkload::host_routes`]; for tests and tools
/// that run without the FIB. Blocking.
pub fn install_host_routes(
    host: &NetnsHandle,
    routes: &[KernelRoute],
) -> Result<(), DataplaneError> {
    apply_routes(host, routes.iter().cloned().map(Op::Add).collect())
}

/// Removes host routes installed by [`install_host_routes`]. Blocking.
pub fn remove_host_routes(
    host: &NetnsHandle,
    routes: &[KernelRoute],
) -> Result<(), DataplaneError> {
    apply_routes(host, routes.iter().cloned().map(Op::Delete).collect())
}

fn apply_routes(host: &NetnsHandle, ops: Vec<Op>) -> Result<(), DataplaneError> {
    in_ns(host, move || {
        let mut sock =
            crate::fib::netlink::RouteSocket::open().map_err(|e| DataplaneError::Netlink {
                what: "opening the route socket".into(),
                source: io::Error::other(e.to_string()),
            })?;
        let outcomes = sock
            .apply(RTPROT_TORTIE, &ops)
            .map_err(|e| DataplaneError::Netlink {
                what: "applying host routes".into(),
                source: io::Error::other(e.to_string()),
            })?;
        for o in outcomes {
            if let Err(e) = o.result {
                // Deleting a route that is already gone is fine.
                if matches!(o.op, Op::Delete(_)) && e.contains("No such process") {
                    continue;
                }
                return Err(DataplaneError::Netlink {
                    what: format!("host route {:?}", o.op),
                    source: io::Error::other(e),
                });
            }
        }
        Ok(())
    })
}

/// The host routes of a pod: one `/32` or `/128` per address through its
/// host veth.
pub fn host_routes(ips: &[IpAddr], host_ifindex: u32) -> Vec<KernelRoute> {
    ips.iter()
        .map(|ip| KernelRoute::unicast(IpNet::from(*ip), vec![NextHop::dev(host_ifindex)]))
        .collect()
}

/// A link as far as wiring cares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    index: u32,
    mac: Vec<u8>,
    up: bool,
}

/// A small rtnetlink client for the calling thread's namespace: one request
/// at a time, each acknowledged.
struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

fn nl_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Netlink { what, source }
}

impl Rtnl {
    fn open() -> Result<Self, DataplaneError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(nl_err("opening a netlink socket"))?;
        sock.bind_auto()
            .map_err(nl_err("binding a netlink socket"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(nl_err("connecting a netlink socket"))?;
        let _ = sock.set_ext_ack(true);
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, io::Error> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut h = NetlinkHeader::default();
        h.flags = NLM_F_REQUEST | flags;
        h.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(h, NetlinkPayload::from(msg));
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Receives messages of `seq` until the request is settled; hands
    /// payloads to `on`. `Ok(())` on ACK/DONE, `Err` with the errno.
    fn receive(
        &mut self,
        seq: u32,
        mut on: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), io::Error> {
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0)?;
            let mut off = 0;
            while off < self.buf.len() {
                let Some(len) = self
                    .buf
                    .get(off..off + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(|b| u32::from_ne_bytes(b) as usize)
                    .filter(|l| *l >= 16 && off + *l <= self.buf.len())
                else {
                    break;
                };
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(
                    self.buf.get(off..off + len).unwrap_or_default(),
                );
                off += (len + 3) & !3;
                let Ok(m) = parsed else { continue };
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(c) => Err(io::Error::from_raw_os_error(c.get().saturating_abs())),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => on(inner),
                    _ => {}
                }
            }
        }
    }

    fn ack(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), DataplaneError> {
        let seq = self.send(msg, flags | NLM_F_ACK).map_err(nl_err(what))?;
        self.receive(seq, |_| {}).map_err(nl_err(what))
    }

    fn link(&mut self, name: &str) -> Result<Option<Link>, DataplaneError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let what = format!("looking up interface {name}");
        let seq = self
            .send(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK)
            .map_err(nl_err(what.clone()))?;
        let mut found = None;
        let r = self.receive(seq, |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                let mac = l
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::Address(b) => Some(b.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                found = Some(Link {
                    index: l.header.index,
                    mac,
                    up: l.header.flags.contains(LinkFlags::Up),
                });
            }
        });
        match r {
            Ok(()) => Ok(found),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(what)(e)),
        }
    }

    fn del_link(&mut self, name: &str) -> Result<(), DataplaneError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let what = format!("deleting interface {name}");
        let seq = self
            .send(RouteNetlinkMessage::DelLink(msg), NLM_F_ACK)
            .map_err(nl_err(what.clone()))?;
        match self.receive(seq, |_| {}) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err(what)(e)),
        }
    }

    fn create_veth(
        &mut self,
        host: &str,
        pod: &str,
        mtu: u32,
        pod_ns: &NetnsHandle,
    ) -> Result<(), DataplaneError> {
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(pod.to_string()));
        peer.attributes.push(LinkAttribute::Mtu(mtu));
        peer.attributes
            .push(LinkAttribute::NetNsFd(pod_ns.file().as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes
            .push(LinkAttribute::Address(HOST_MAC.to_vec()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(
            &format!(
                "creating veth {host} <-> {pod} (in {})",
                pod_ns.path().display()
            ),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn set_up(&mut self, index: u32) -> Result<(), DataplaneError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(
            &format!("setting interface #{index} up"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    fn add_address(
        &mut self,
        index: u32,
        net: IpNet,
        scope: AddressScope,
    ) -> Result<(), DataplaneError> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(&net.addr());
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.header.scope = scope;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if net.addr().is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.ack(
            &format!("adding address {net} to interface #{index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpAddr>, DataplaneError> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = AddressMessage::default();
            msg.header.family = fam;
            let seq = self
                .send(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)
                .map_err(nl_err("dumping addresses"))?;
            self.receive(seq, |m| {
                if let RouteNetlinkMessage::NewAddress(a) = m {
                    if a.header.index == index {
                        out.extend(a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        }));
                    }
                }
            })
            .map_err(nl_err("dumping addresses"))?;
        }
        Ok(out)
    }

    fn add_neighbour(&mut self, index: u32, ip: IpAddr, mac: &[u8]) -> Result<(), DataplaneError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(&ip);
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.ack(
            &format!("adding neighbour {ip} on interface #{index}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    fn add_default_route(&mut self, index: u32, gw: IpAddr) -> Result<(), DataplaneError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(&gw);
        msg.header.destination_prefix_length = 0;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if gw.is_ipv4() {
            msg.header.flags |= RouteFlags::Onlink;
        }
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.ack(
            &format!("adding default route via {gw} dev #{index}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Gateways of default routes through `index` (main table).
    fn default_gateways(&mut self, index: u32) -> Result<Vec<IpAddr>, DataplaneError> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            let seq = self
                .send(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)
                .map_err(nl_err("dumping routes"))?;
            self.receive(seq, |m| {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    return;
                };
                if r.header.destination_prefix_length != 0 {
                    return;
                }
                let oif = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                let gw = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                });
                if let (Some(i), Some(gw)) = (oif, gw) {
                    if i == index {
                        out.push(gw);
                    }
                }
            })
            .map_err(nl_err("dumping routes"))?;
        }
        Ok(out)
    }
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
