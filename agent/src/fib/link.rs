//! Tunnel devices, VXLAN neighbour/FDB entries and link/address watching:
//! the netlink edge of encapsulation ([`super::encap`] decides).
//!
//! Requests are values from pure builders ([`vxlan_create`],
//! [`ipip_create`], [`link_set`], [`fdb_replace`], [`neigh_replace`], ...)
//! covered by golden tests; [`LinkSocket`] sends them and dumps links,
//! addresses and neighbours. [`LinkWatcher`] is a non-blocking socket on
//! the link and address multicast groups: the FIB thread drains it every
//! turn and recomputes when anything arrived.
//!
//! Device names are tortie's own ([`VXLAN_DEVICE`], [`IPIP_DEVICE`]): a
//! device with one of these names belongs to tortie and is re-created or
//! removed at will. IPIP does not use the kernel's `tunl0`: that fallback
//! device exists as soon as the ipip module loads and refuses a local
//! address, while a named ipip device with `local UNDERLAY` and no remote
//! receives every IP-in-IP packet sent to the underlay address and sends
//! to each route's gateway (`via NH dev ipip.tortie onlink`).

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoIpTunnel, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The VXLAN device's name.
pub const VXLAN_DEVICE: &str = "vxlan.tortie";
/// The IP-in-IP device's name.
pub const IPIP_DEVICE: &str = "ipip.tortie";
/// VXLAN network identifier of tortie's overlay (Calico's default too).
pub const VXLAN_VNI: u32 = 4096;
/// The IANA VXLAN port (RFC 7348 §5).
pub const VXLAN_PORT: u16 = 4789;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// Route lookups per `sendmsg`: their answers (about 120 octets each)
/// must fit the socket's receive queue, or the kernel drops them.
pub const LOOKUP_BATCH: usize = 64;
/// The route watcher's receive queue. Small on purpose: while tortie
/// programs a million routes of its own, the kernel overruns it (one
/// ENOBUFS, read as "changed") instead of the FIB thread reading a
/// million notifications it would discard.
const ROUTE_WATCH_BUF: usize = 32 * 1024;
const RECV_BUF: usize = 1 << 18;

/// Errors talking to the kernel about links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request; `reason` is its text.
    #[error("{what}: {reason}")]
    Refused { what: String, reason: String },
}

/// A network device as far as the FIB cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub mac: Option<Vec<u8>>,
    /// `IFLA_INFO_KIND` (`vxlan`, `ipip`, `veth`...).
    pub kind: Option<String>,
    /// VXLAN parameters, for a VXLAN device.
    pub vxlan: Option<VxlanParams>,
    /// Local address of an ip tunnel.
    pub tunnel_local: Option<IpAddr>,
}

/// What tortie sets on its VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanParams {
    pub vni: u32,
    pub local: Option<IpAddr>,
    pub port: u16,
    pub learning: bool,
}

/// A neighbour or FDB entry on a device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    /// For an FDB entry, the remote VTEP (`dst`); for a neighbour, the
    /// neighbour's address.
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

fn header(flags: u16) -> NetlinkHeader {
    let mut h = NetlinkHeader::default();
    h.flags = flags;
    h
}

/// `ip link add vxlan.tortie type vxlan id 4096 local LOCAL dstport 4789
/// nolearning` with address `mac`, MTU `mtu`, up.
pub fn vxlan_create(local: IpAddr, mac: [u8; 6], mtu: u32) -> (u16, RouteNetlinkMessage) {
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes
        .push(LinkAttribute::IfName(VXLAN_DEVICE.to_string()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    let mut data = vec![InfoVxlan::Id(VXLAN_VNI)];
    data.push(match local {
        IpAddr::V4(a) => InfoVxlan::Local(a),
        IpAddr::V6(a) => InfoVxlan::Local6(a),
    });
    data.push(InfoVxlan::Port(VXLAN_PORT));
    data.push(InfoVxlan::Learning(false));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    (
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        RouteNetlinkMessage::NewLink(m),
    )
}

/// `ip link add ipip.tortie type ipip local LOCAL` with MTU `mtu`, up.
pub fn ipip_create(local: IpAddr, mtu: u32) -> (u16, RouteNetlinkMessage) {
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes
        .push(LinkAttribute::IfName(IPIP_DEVICE.to_string()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::IpIp),
        LinkInfo::Data(InfoData::IpTunnel(vec![
            InfoIpTunnel::Local(local),
            // Path MTU discovery on, so DF is honoured for the outer header.
            InfoIpTunnel::PMtuDisc(true),
        ])),
    ]));
    (
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        RouteNetlinkMessage::NewLink(m),
    )
}

/// `ip link set dev #index [address MAC] mtu MTU up`.
pub fn link_set(index: u32, mtu: u32, mac: Option<[u8; 6]>) -> (u16, RouteNetlinkMessage) {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::Mtu(mtu));
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    (NLM_F_REQUEST | NLM_F_ACK, RouteNetlinkMessage::NewLink(m))
}

/// `ip link del dev #index`.
pub fn link_delete(index: u32) -> (u16, RouteNetlinkMessage) {
    let mut m = LinkMessage::default();
    m.header.index = index;
    (NLM_F_REQUEST | NLM_F_ACK, RouteNetlinkMessage::DelLink(m))
}

fn neigh_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// `NUD_NOARP | NUD_PERMANENT`, what `bridge fdb ... permanent` sends.
const FDB_STATE: u16 = 0x40 | 0x80;
const NUD_PERMANENT: u16 = 0x80;

/// `bridge fdb replace MAC dev #index dst IP self permanent`: frames to the
/// remote VTEP's MAC go to its underlay address.
pub fn fdb_replace(index: u32, n: &Neigh) -> (u16, RouteNetlinkMessage) {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::from(FDB_STATE);
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_address(n.ip)));
    (
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        RouteNetlinkMessage::NewNeighbour(m),
    )
}

/// `bridge fdb del MAC dev #index dst IP self`.
pub fn fdb_delete(index: u32, n: &Neigh) -> (u16, RouteNetlinkMessage) {
    let (_, msg) = fdb_replace(index, n);
    let RouteNetlinkMessage::NewNeighbour(m) = msg else {
        unreachable!("fdb_replace builds a NewNeighbour")
    };
    (
        NLM_F_REQUEST | NLM_F_ACK,
        RouteNetlinkMessage::DelNeighbour(m),
    )
}

/// `ip neigh replace IP lladdr MAC dev #index nud permanent`: the remote
/// VTEP (addressed by its underlay address) has the derived MAC.
pub fn neigh_replace(index: u32, n: &Neigh) -> (u16, RouteNetlinkMessage) {
    let mut m = NeighbourMessage::default();
    m.header.family = match n.ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_address(n.ip)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
    (
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        RouteNetlinkMessage::NewNeighbour(m),
    )
}

/// `ip neigh del IP dev #index`.
pub fn neigh_delete(index: u32, n: &Neigh) -> (u16, RouteNetlinkMessage) {
    let (_, msg) = neigh_replace(index, n);
    let RouteNetlinkMessage::NewNeighbour(m) = msg else {
        unreachable!("neigh_replace builds a NewNeighbour")
    };
    (
        NLM_F_REQUEST | NLM_F_ACK,
        RouteNetlinkMessage::DelNeighbour(m),
    )
}

/// `ip route get DST`: the kernel's route towards one address, as
/// iproute2 asks for it (`RTM_GETROUTE` without `NLM_F_DUMP`, the full
/// address as `RTA_DST`; IPv4 also sets `RTM_F_LOOKUP_TABLE`). The answer
/// is one `RTM_NEWROUTE` with the output device (`RTA_OIF`) and, when the
/// route or a learned PMTU has one, `RTA_METRICS` holding `RTAX_MTU`; or
/// an error (`Network is unreachable`).
pub fn route_get(dst: IpAddr) -> (u16, RouteNetlinkMessage) {
    let mut m = RouteMessage::default();
    match dst {
        IpAddr::V4(_) => {
            m.header.address_family = AddressFamily::Inet;
            m.header.destination_prefix_length = 32;
            m.header.flags = RouteFlags::LookupTable;
        }
        IpAddr::V6(_) => {
            m.header.address_family = AddressFamily::Inet6;
            m.header.destination_prefix_length = 128;
        }
    }
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    (NLM_F_REQUEST, RouteNetlinkMessage::GetRoute(m))
}

/// What the FIB takes from a `route_get` answer: the output device and
/// the route's MTU metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    pub oif: Option<u32>,
    pub mtu: Option<u32>,
}

/// Reads a `route_get` answer.
pub fn route_lookup_from(m: &RouteMessage) -> RouteLookup {
    let mut r = RouteLookup {
        oif: None,
        mtu: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Metrics(metrics) => {
                r.mtu = metrics.iter().find_map(|x| match x {
                    RouteMetric::Mtu(v) if *v > 0 => Some(*v),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    r
}

/// A dumped link in the FIB's model.
pub fn link_from(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        mac: None,
        kind: None,
        vxlan: None,
        tunnel_local: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(mac) => l.mac = Some(mac.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let mut p = VxlanParams {
                                vni: 0,
                                local: None,
                                port: 0,
                                learning: true,
                            };
                            for x in v {
                                match x {
                                    InfoVxlan::Id(id) => p.vni = *id,
                                    InfoVxlan::Local(a) => p.local = Some(IpAddr::V4(*a)),
                                    InfoVxlan::Local6(a) => p.local = Some(IpAddr::V6(*a)),
                                    InfoVxlan::Port(port) => p.port = *port,
                                    InfoVxlan::Learning(b) => p.learning = *b,
                                    _ => {}
                                }
                            }
                            l.vxlan = Some(p);
                        }
                        LinkInfo::Data(InfoData::IpTunnel(v)) => {
                            l.tunnel_local = v.iter().find_map(|x| match x {
                                InfoIpTunnel::Local(a) => Some(*a),
                                _ => None,
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn neigh_from(m: &NeighbourMessage) -> Option<Neigh> {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            // FDB entries (AF_BRIDGE) carry the VTEP's address raw.
            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                ip = match raw.len() {
                    4 => <[u8; 4]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neigh { ip: ip?, mac: mac? })
}

/// A netlink socket for links, addresses and neighbours.
#[derive(Debug)]
pub struct LinkSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl LinkSocket {
    pub fn open() -> Result<Self, LinkError> {
        let io = |source| LinkError::Io {
            what: "open link socket",
            source,
        };
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io)?;
        sock.bind_auto().map_err(io)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(LinkSocket {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn send(&mut self, flags: u16, msg: RouteNetlinkMessage) -> Result<u32, LinkError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut h = header(flags);
        h.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(h, NetlinkPayload::from(msg));
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|source| LinkError::Io {
            what: "send",
            source,
        })?;
        Ok(self.seq)
    }

    /// Reads answers to `seq` until Done / an error or ack, handing the
    /// payloads to `each`. `Err(reason)` for a kernel error.
    fn answers(
        &mut self,
        seq: u32,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<Result<(), String>, LinkError> {
        loop {
            self.buf.clear();
            self.sock
                .recv(&mut self.buf, 0)
                .map_err(|source| LinkError::Io {
                    what: "receive",
                    source,
                })?;
            let mut off = 0;
            while off + 16 <= self.buf.len() {
                let Some(raw) = self.buf.get(off..off + 4) else {
                    break;
                };
                let len = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
                if len < 16 || off + len > self.buf.len() {
                    break;
                }
                let parsed =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len]);
                off += (len + 3) & !3;
                let Ok(m) = parsed else { continue };
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(Ok(())),
                    NetlinkPayload::Error(e) => {
                        return Ok(match e.code {
                            None => Ok(()),
                            Some(_) => Err(super::netlink::os_reason(e.raw_code())),
                        })
                    }
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    _ => {}
                }
            }
        }
    }

    /// Sends one request and waits for its acknowledgement.
    pub fn request(
        &mut self,
        what: &str,
        (flags, msg): (u16, RouteNetlinkMessage),
    ) -> Result<(), LinkError> {
        let seq = self.send(flags, msg)?;
        self.answers(seq, |_| {})?
            .map_err(|reason| LinkError::Refused {
                what: what.to_string(),
                reason,
            })
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>, LinkError> {
        let seq = self.send(
            NLM_F_REQUEST | NLM_F_DUMP,
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        let mut out = Vec::new();
        self.answers(seq, |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                out.push(link_from(&l));
            }
        })?
        .map_err(|reason| LinkError::Refused {
            what: "link dump".into(),
            reason,
        })?;
        Ok(out)
    }

    /// Every address: (ifindex, ADDR/LEN).
    pub fn addresses(&mut self) -> Result<Vec<(u32, IpNet)>, LinkError> {
        let seq = self.send(
            NLM_F_REQUEST | NLM_F_DUMP,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?;
        let mut out = Vec::new();
        self.answers(seq, |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                let addr = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = addr.or_else(|| {
                    a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(net) = addr.and_then(|ip| IpNet::new(ip, a.header.prefix_len).ok()) {
                    out.push((a.header.index, net));
                }
            }
        })?
        .map_err(|reason| LinkError::Refused {
            what: "address dump".into(),
            reason,
        })?;
        Ok(out)
    }

    /// Permanent entries on device `index`: FDB (`bridge`) or neighbours
    /// (`inet`).
    pub fn neighbours(&mut self, index: u32, fdb: bool) -> Result<Vec<Neigh>, LinkError> {
        let mut q = NeighbourMessage::default();
        q.header.family = if fdb {
            AddressFamily::Bridge
        } else {
            AddressFamily::Unspec
        };
        q.header.ifindex = index;
        let seq = self.send(
            NLM_F_REQUEST | NLM_F_DUMP,
            RouteNetlinkMessage::GetNeighbour(q),
        )?;
        let mut out = Vec::new();
        self.answers(seq, |m| {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                let family_ok = (n.header.family == AddressFamily::Bridge) == fdb;
                if family_ok
                    && n.header.ifindex == index
                    && u16::from(n.header.state) & NUD_PERMANENT != 0
                {
                    if let Some(e) = neigh_from(&n) {
                        out.push(e);
                    }
                }
            }
        })?
        .map_err(|reason| LinkError::Refused {
            what: "neighbour dump".into(),
            reason,
        })?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl LinkSocket {
    /// `ip route get` for every address in `dsts`, pipelined: up to
    /// [`LOOKUP_BATCH`] requests per `sendmsg`, each answered by exactly
    /// one message (the route, or an error), so a thousand remotes cost
    /// sixteen round trips, not a thousand. One result per address, in
    /// order; `Err(reason)` where the kernel has no route.
    pub fn route_lookups(
        &mut self,
        dsts: &[IpAddr],
    ) -> Result<Vec<Result<RouteLookup, String>>, LinkError> {
        let mut out = Vec::with_capacity(dsts.len());
        for chunk in dsts.chunks(LOOKUP_BATCH) {
            let first = self.seq.wrapping_add(1).max(1);
            let mut bytes = Vec::new();
            for dst in chunk {
                self.seq = self.seq.wrapping_add(1).max(1);
                let (flags, msg) = route_get(*dst);
                let mut h = header(flags);
                h.sequence_number = self.seq;
                let mut req = NetlinkMessage::new(h, NetlinkPayload::from(msg));
                req.finalize();
                let start = bytes.len();
                bytes.resize(start + req.buffer_len(), 0);
                req.serialize(&mut bytes[start..]);
            }
            self.sock.send(&bytes, 0).map_err(|source| LinkError::Io {
                what: "send route lookups",
                source,
            })?;
            let mut results: Vec<Option<Result<RouteLookup, String>>> = vec![None; chunk.len()];
            let mut pending = chunk.len();
            while pending > 0 {
                self.buf.clear();
                self.sock
                    .recv(&mut self.buf, 0)
                    .map_err(|source| LinkError::Io {
                        what: "receive route lookups",
                        source,
                    })?;
                let mut off = 0;
                while let Some(len) = self
                    .buf
                    .get(off..off + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(|b| u32::from_ne_bytes(b) as usize)
                    .filter(|len| *len >= 16 && off + len <= self.buf.len())
                {
                    let parsed = self
                        .buf
                        .get(off..off + len)
                        .map(NetlinkMessage::<RouteNetlinkMessage>::deserialize);
                    off += (len + 3) & !3;
                    let Some(Ok(m)) = parsed else { continue };
                    let idx = m.header.sequence_number.wrapping_sub(first) as usize;
                    let Some(slot) = results.get_mut(idx).filter(|s| s.is_none()) else {
                        continue;
                    };
                    let r = match m.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(rm)) => {
                            Ok(route_lookup_from(&rm))
                        }
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            Err(super::netlink::os_reason(e.raw_code()))
                        }
                        // An ack without an answer: nothing known.
                        _ => Err("no route in the answer".to_string()),
                    };
                    *slot = Some(r);
                    pending -= 1;
                }
            }
            out.extend(
                results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err("no answer".into()))),
            );
        }
        Ok(out)
    }
}

/// Route change notifications of every protocol but `ignore` (tortie's
/// own routes come and go by the million and never change a path to a
/// remote node). Non-blocking.
#[derive(Debug)]
pub struct RouteWatcher {
    sock: Socket,
    buf: Vec<u8>,
    ignore: u8,
}

impl RouteWatcher {
    pub fn open(ignore: u8) -> Result<Self, LinkError> {
        let io = |source| LinkError::Io {
            what: "open route watcher",
            source,
        };
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io)?;
        sock.bind_auto().map_err(io)?;
        for g in [RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE] {
            sock.add_membership(g).map_err(io)?;
        }
        sock.set_rx_buf_sz(ROUTE_WATCH_BUF).map_err(io)?;
        sock.set_non_blocking(true).map_err(io)?;
        Ok(RouteWatcher {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
            ignore,
        })
    }

    /// Drains pending notifications; `true` when a route of another
    /// protocol changed (or the socket overflowed, so one may have).
    pub fn changed(&mut self) -> bool {
        let mut any = false;
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(0) => return any,
                Ok(_) => any |= foreign_route_change(&self.buf, self.ignore),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
                Err(_) => return true,
            }
        }
    }
}

/// Whether `buf` (one or more netlink messages) holds a route message
/// whose `rtm_protocol` is not `ignore`. Only the fixed headers are read:
/// `nlmsghdr` (16 octets), then `rtmsg` whose sixth octet is the protocol.
fn foreign_route_change(buf: &[u8], ignore: u8) -> bool {
    const RTM_NEWROUTE: u16 = 24;
    const RTM_DELROUTE: u16 = 25;
    let mut off = 0;
    while let (Some(len), Some(kind)) = (
        buf.get(off..off + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_ne_bytes(b) as usize),
        buf.get(off + 4..off + 6)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_ne_bytes),
    ) {
        if len < 16 {
            return false;
        }
        if matches!(kind, RTM_NEWROUTE | RTM_DELROUTE)
            && buf.get(off + 16 + 5).is_some_and(|p| *p != ignore)
        {
            return true;
        }
        off += (len + 3) & !3;
    }
    false
}

/// Link and address change notifications (non-blocking).
#[derive(Debug)]
pub struct LinkWatcher {
    sock: Socket,
    buf: Vec<u8>,
}

impl LinkWatcher {
    pub fn open() -> Result<Self, LinkError> {
        let io = |source| LinkError::Io {
            what: "open link watcher",
            source,
        };
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io)?;
        sock.bind_auto().map_err(io)?;
        for g in [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR] {
            sock.add_membership(g).map_err(io)?;
        }
        sock.set_non_blocking(true).map_err(io)?;
        Ok(LinkWatcher {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Drains pending notifications; `true` when any arrived (or the
    /// socket overflowed, which means some were lost).
    pub fn changed(&mut self) -> bool {
        let mut any = false;
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(0) => return any,
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
                // ENOBUFS: notifications were dropped; recompute anyway.
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request as bytes (netlink header included, sequence 1), hex,
    /// 16 octets a line.
    fn hex(req: (u16, RouteNetlinkMessage)) -> String {
        let (flags, msg) = req;
        let mut h = header(flags);
        h.sequence_number = 1;
        let mut m = NetlinkMessage::new(h, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0; m.buffer_len()];
        m.serialize(&mut out);
        out.chunks(16)
            .map(|c| {
                c.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    /// Compares with `golden/NAME.hex`; `TORTIE_BLESS=1` rewrites it.
    fn golden(name: &str, got: String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/fib/golden")
            .join(format!("{name}.hex"));
        if std::env::var_os("TORTIE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().expect("golden dir")).expect("mkdir");
            std::fs::write(&path, &got).expect("write golden");
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing; run with TORTIE_BLESS=1", path.display()));
        assert_eq!(
            got, want,
            "{name}: bytes changed (TORTIE_BLESS=1 re-blesses)"
        );
    }

    fn remote() -> Neigh {
        Neigh {
            ip: "198.51.100.12".parse().expect("addr"),
            mac: crate::fib::encap::vtep_mac("198.51.100.12".parse().expect("addr")),
        }
    }

    #[test]
    fn golden_requests() {
        let local: IpAddr = "192.0.2.11".parse().expect("addr");
        let mac = crate::fib::encap::vtep_mac(local);
        golden("vxlan_create", hex(vxlan_create(local, mac, 1450)));
        golden("ipip_create", hex(ipip_create(local, 1480)));
        golden("link_set", hex(link_set(7, 1450, Some(mac))));
        golden("link_delete", hex(link_delete(7)));
        golden("fdb_replace", hex(fdb_replace(7, &remote())));
        golden("fdb_delete", hex(fdb_delete(7, &remote())));
        golden("neigh_replace", hex(neigh_replace(7, &remote())));
        golden("neigh_delete", hex(neigh_delete(7, &remote())));
        golden(
            "route_get",
            hex(route_get("198.51.100.12".parse().expect("addr"))),
        );
        golden(
            "route_get6",
            hex(route_get("2001:db8::12".parse().expect("addr"))),
        );
    }

    #[test]
    fn a_route_get_answer_reads_back() {
        // What the kernel answers `ip route get 198.51.100.12` with over a
        // route `198.51.100.0/25 dev #3 mtu 1300`.
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 32;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                "198.51.100.12".parse::<IpAddr>().expect("addr"),
            )));
        m.attributes.push(RouteAttribute::Oif(3));
        m.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(1300)]));
        let RouteNetlinkMessage::NewRoute(parsed) = reparse((0, RouteNetlinkMessage::NewRoute(m)))
        else {
            panic!("NewRoute");
        };
        assert_eq!(
            route_lookup_from(&parsed),
            RouteLookup {
                oif: Some(3),
                mtu: Some(1300)
            }
        );
        // Without metrics: the device decides.
        let mut m = RouteMessage::default();
        m.attributes.push(RouteAttribute::Oif(4));
        assert_eq!(
            route_lookup_from(&m),
            RouteLookup {
                oif: Some(4),
                mtu: None
            }
        );
    }

    #[test]
    fn only_foreign_route_changes_count() {
        let msg = |kind: u16, proto: u8| {
            let mut b = vec![0u8; 28];
            b[..4].copy_from_slice(&28u32.to_ne_bytes());
            b[4..6].copy_from_slice(&kind.to_ne_bytes());
            b[16 + 5] = proto;
            b
        };
        assert!(!foreign_route_change(&msg(24, 52), 52));
        assert!(foreign_route_change(&msg(24, 4), 52), "static route added");
        assert!(foreign_route_change(&msg(25, 3), 52), "boot route removed");
        let mut two = msg(24, 52);
        two.extend(msg(25, 2));
        assert!(foreign_route_change(&two, 52));
        assert!(
            !foreign_route_change(&msg(16, 4), 52),
            "not a route message"
        );
        assert!(!foreign_route_change(&[1, 2, 3], 52), "short");
        let mut zero = msg(24, 4);
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(!foreign_route_change(&zero, 52), "zero length never loops");
    }

    /// Serialises a request and parses it back as the kernel would see it.
    fn reparse(req: (u16, RouteNetlinkMessage)) -> RouteNetlinkMessage {
        let (flags, msg) = req;
        let mut m = NetlinkMessage::new(header(flags), NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0; m.buffer_len()];
        m.serialize(&mut out);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out)
            .expect("parses")
            .payload
        {
            NetlinkPayload::InnerMessage(inner) => inner,
            other => panic!("not a route message: {other:?}"),
        }
    }

    #[test]
    fn a_created_vxlan_device_reads_back() {
        let local: IpAddr = "192.0.2.11".parse().expect("addr");
        let mac = crate::fib::encap::vtep_mac(local);
        let RouteNetlinkMessage::NewLink(parsed) = reparse(vxlan_create(local, mac, 1450)) else {
            panic!("vxlan_create builds NewLink");
        };
        let l = link_from(&parsed);
        assert_eq!(l.name, VXLAN_DEVICE);
        assert_eq!(l.mtu, 1450);
        assert_eq!(l.mac.as_deref(), Some(&mac[..]));
        assert_eq!(l.kind.as_deref(), Some("vxlan"));
        assert_eq!(
            l.vxlan,
            Some(VxlanParams {
                vni: VXLAN_VNI,
                local: Some(local),
                port: VXLAN_PORT,
                learning: false
            })
        );
    }

    #[test]
    fn neighbour_entries_read_back() {
        for build in [fdb_replace, neigh_replace] {
            let RouteNetlinkMessage::NewNeighbour(parsed) = reparse(build(7, &remote())) else {
                panic!("builds NewNeighbour");
            };
            assert_eq!(neigh_from(&parsed), Some(remote()));
            assert_ne!(u16::from(parsed.header.state) & NUD_PERMANENT, 0);
        }
    }
}
