//! The netlink edge of the FIB: dump tortie's routes, apply operations.
//!
//! Requests are values built from [`KernelRoute`]s with
//! netlink-packet-route; the socket work is here and nowhere else.
//!
//! Pipelining: a batch of up to [`BATCH_MESSAGES`] requests goes out in one
//! `sendmsg`. Only the last request of a batch asks for an acknowledgement;
//! the kernel answers any failed request with an error message carrying its
//! sequence number, so one round trip settles a whole batch. This is what
//! makes a million routes take seconds instead of minutes (`ip -batch`
//! waits for each request in turn).

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::reconcile::{Op, OpOutcome};
use super::route::{KernelRoute, NextHop, RouteKey, RouteTarget};

/// Requests per `sendmsg`. Large enough to amortise the round trip, small
/// enough that the error answers of a batch that fails entirely still fit
/// the receive buffer.
pub const BATCH_MESSAGES: usize = 1024;

const RECV_BUF: usize = 1 << 20;

/// Errors talking to the kernel's routing socket.
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    #[error("opening the netlink route socket: {0}")]
    Open(#[source] io::Error),
    #[error("netlink {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink dump of {family} routes failed: {reason}")]
    Dump {
        family: &'static str,
        reason: String,
    },
}

/// A netlink route socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct RouteSocket {
    sock: Socket,
    seq: u32,
    out: Vec<u8>,
    inbuf: Vec<u8>,
}

impl RouteSocket {
    pub fn open() -> Result<Self, FibError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(FibError::Open)?;
        sock.bind_auto().map_err(FibError::Open)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(FibError::Open)?;
        // Errors with the kernel's text, acks without the request echoed,
        // and dumps filtered by protocol in the kernel.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        let _ = sock.set_rx_buf_sz(RECV_BUF);
        Ok(RouteSocket {
            sock,
            seq: 1,
            out: Vec::with_capacity(256 * 1024),
            inbuf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Dumps every route of protocol `protocol`, IPv4 and IPv6, all tables.
    pub fn dump(&mut self, protocol: u8) -> Result<Vec<KernelRoute>, FibError> {
        let mut routes = Vec::new();
        for (family, name) in [
            (AddressFamily::Inet, "IPv4"),
            (AddressFamily::Inet6, "IPv6"),
        ] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            msg.header.protocol = RouteProtocol::from(protocol);
            msg.header.table = 0;
            let seq = self.next_seq();
            let mut req = NetlinkMessage::new(
                header(NLM_F_REQUEST | NLM_F_DUMP, seq),
                NetlinkPayload::from(RouteNetlinkMessage::GetRoute(msg)),
            );
            req.finalize();
            self.out.clear();
            self.out.resize(req.buffer_len(), 0);
            req.serialize(&mut self.out);
            self.sock
                .send(&self.out, 0)
                .map_err(|source| FibError::Io {
                    what: "send dump request",
                    source,
                })?;
            let mut failure = None;
            self.read_until(|m| {
                if m.header.sequence_number != seq {
                    return false;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => true,
                    NetlinkPayload::Error(e) => {
                        if e.code.is_some() {
                            failure = Some(os_reason(e.raw_code()));
                        }
                        true
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(rm))
                        if u8::from(rm.header.protocol) == protocol =>
                    {
                        if let Some(r) = from_message(&rm) {
                            routes.push(r);
                        }
                        false
                    }
                    _ => false,
                }
            })?;
            if let Some(reason) = failure {
                return Err(FibError::Dump {
                    family: name,
                    reason,
                });
            }
        }
        Ok(routes)
    }

    fn recv(&mut self) -> Result<(), FibError> {
        self.inbuf.clear();
        if self.inbuf.capacity() < RECV_BUF {
            self.inbuf.reserve(RECV_BUF);
        }
        self.sock
            .recv(&mut self.inbuf, 0)
            .map_err(|source| FibError::Io {
                what: "receive",
                source,
            })?;
        Ok(())
    }

    /// Receives and parses messages, handing each to `on_message`, until it
    /// returns `true` (the answer the caller waits for has arrived).
    fn read_until(
        &mut self,
        mut on_message: impl FnMut(NetlinkMessage<RouteNetlinkMessage>) -> bool,
    ) -> Result<(), FibError> {
        loop {
            self.recv()?;
            let mut off = 0;
            while off < self.inbuf.len() {
                let Some(len) = message_len(&self.inbuf[off..]) else {
                    break;
                };
                let parsed =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.inbuf[off..off + len]);
                off += len;
                if let Ok(m) = parsed {
                    if on_message(m) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Applies operations, pipelined, and returns one outcome per operation
    /// in order. An error of one route never stops the others. `Err` only
    /// when the socket itself fails.
    pub fn apply(&mut self, protocol: u8, ops: &[Op]) -> Result<Vec<OpOutcome>, FibError> {
        let mut outcomes = Vec::with_capacity(ops.len());
        for batch in ops.chunks(BATCH_MESSAGES) {
            let first_seq = self.seq.wrapping_add(1).max(1);
            self.out.clear();
            let mut results: Vec<Result<(), String>> = vec![Ok(()); batch.len()];
            for (i, op) in batch.iter().enumerate() {
                let seq = self.next_seq();
                let ack = if i + 1 == batch.len() { NLM_F_ACK } else { 0 };
                let (flags, payload) = match op {
                    Op::Add(r) | Op::Replace(r) => (
                        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE | ack,
                        RouteNetlinkMessage::NewRoute(to_message(r, protocol)),
                    ),
                    Op::Delete(r) => (
                        NLM_F_REQUEST | ack,
                        RouteNetlinkMessage::DelRoute(delete_message(&r.key, protocol)),
                    ),
                };
                let mut req =
                    NetlinkMessage::new(header(flags, seq), NetlinkPayload::from(payload));
                req.finalize();
                let start = self.out.len();
                self.out.resize(start + req.buffer_len(), 0);
                req.serialize(&mut self.out[start..]);
            }
            let last_seq = self.seq;
            self.sock
                .send(&self.out, 0)
                .map_err(|source| FibError::Io {
                    what: "send route batch",
                    source,
                })?;
            self.read_until(|m| {
                let seq = m.header.sequence_number;
                let NetlinkPayload::Error(e) = m.payload else {
                    return false;
                };
                if e.code.is_some() {
                    let idx = seq.wrapping_sub(first_seq) as usize;
                    if let Some(slot) = results.get_mut(idx) {
                        *slot = Err(os_reason(e.raw_code()));
                    }
                }
                seq == last_seq
            })?;
            outcomes.extend(batch.iter().zip(results).map(|(op, result)| OpOutcome {
                op: op.clone(),
                result,
            }));
        }
        Ok(outcomes)
    }
}

fn header(flags: u16, seq: u32) -> NetlinkHeader {
    let mut h = NetlinkHeader::default();
    h.flags = flags;
    h.sequence_number = seq;
    h
}

/// The length of the netlink message at the start of `buf`, aligned to 4,
/// or `None` when the buffer holds no complete message.
fn message_len(buf: &[u8]) -> Option<usize> {
    let raw: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let len = u32::from_ne_bytes(raw) as usize;
    if len < 16 || len > buf.len() {
        return None;
    }
    Some(((len + 3) & !3).min(buf.len()))
}

/// "Network is unreachable" from a netlink error code (a negated errno).
pub(crate) fn os_reason(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code.saturating_abs()).to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn family_of(dst: &IpNet) -> AddressFamily {
    match dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

fn base_message(key: &RouteKey, protocol: u8) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(&key.dst);
    msg.header.destination_prefix_length = key.dst.prefix_len();
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.header.table = if key.table < 256 {
        key.table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    msg.header.scope = RouteScope::Universe;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            key.dst.network(),
        )));
    msg.attributes.push(RouteAttribute::Table(key.table));
    msg
}

/// The RTM_NEWROUTE request for `route`.
pub fn to_message(route: &KernelRoute, protocol: u8) -> RouteMessage {
    let mut msg = base_message(&route.key, protocol);
    match &route.target {
        RouteTarget::Blackhole => {
            msg.header.kind = RouteType::BlackHole;
        }
        RouteTarget::Unicast(hops) => {
            msg.header.kind = RouteType::Unicast;
            if let [hop] = hops.as_slice() {
                if hop.gateway.is_none() {
                    msg.header.scope = RouteScope::Link;
                }
                if hop.onlink {
                    msg.header.flags |= RouteFlags::Onlink;
                }
                if let Some(gw) = hop.gateway {
                    msg.attributes
                        .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
                }
                if let Some(ifindex) = hop.ifindex {
                    msg.attributes.push(RouteAttribute::Oif(ifindex));
                }
            } else {
                let nhs = hops
                    .iter()
                    .map(|hop| {
                        let mut nh = RouteNextHop::default();
                        if hop.onlink {
                            nh.flags |= RouteNextHopFlags::Onlink;
                        }
                        nh.interface_index = hop.ifindex.unwrap_or(0);
                        if let Some(gw) = hop.gateway {
                            nh.attributes
                                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
                        }
                        nh
                    })
                    .collect();
                msg.attributes.push(RouteAttribute::MultiPath(nhs));
            }
        }
    }
    msg
}

/// The RTM_DELROUTE request for `key`: it names tortie's protocol, so the
/// kernel only ever deletes a route of ours.
pub fn delete_message(key: &RouteKey, protocol: u8) -> RouteMessage {
    let mut msg = base_message(key, protocol);
    msg.header.kind = RouteType::Unspec;
    msg.header.scope = RouteScope::NoWhere;
    msg
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A dumped route in tortie's model; `None` for kinds tortie never
/// installs (local, broadcast, multicast...).
pub fn from_message(msg: &RouteMessage) -> Option<KernelRoute> {
    let plen = msg.header.destination_prefix_length;
    let mut dst_addr: Option<IpAddr> = None;
    let mut table = u32::from(msg.header.table);
    let mut gateway = None;
    let mut oif = None;
    let mut multipath = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst_addr = addr_of(a),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Gateway(a) => gateway = addr_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(nhs) => multipath = Some(nhs),
            _ => {}
        }
    }
    let dst_addr = dst_addr.unwrap_or(match msg.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    let dst = IpNet::new(dst_addr, plen).ok()?.trunc();
    let key = RouteKey { table, dst };
    let target = match msg.header.kind {
        RouteType::BlackHole => RouteTarget::Blackhole,
        RouteType::Unicast => {
            let mut hops: Vec<NextHop> = match multipath {
                Some(nhs) => nhs
                    .iter()
                    .map(|nh| NextHop {
                        gateway: nh.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => addr_of(g),
                            _ => None,
                        }),
                        ifindex: Some(nh.interface_index).filter(|i| *i != 0),
                        onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                    })
                    .collect(),
                None => vec![NextHop {
                    gateway,
                    ifindex: oif,
                    onlink: msg.header.flags.contains(RouteFlags::Onlink),
                }],
            };
            hops.sort_unstable();
            hops.dedup();
            RouteTarget::Unicast(hops)
        }
        _ => return None,
    };
    Some(KernelRoute { key, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn round_trip(r: &KernelRoute) -> KernelRoute {
        let msg = to_message(r, 52);
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let parsed = <RouteMessage as netlink_packet_core::Parseable<[u8]>>::parse(&buf[..])
            .expect("kernel-format route message parses");
        from_message(&parsed).expect("a route tortie installs reads back")
    }

    #[test]
    fn messages_read_back_as_the_same_route() {
        let gw4: IpAddr = "192.0.2.12".parse().expect("addr");
        let gw6: IpAddr = "2001:db8::12".parse().expect("addr");
        for r in [
            KernelRoute::blackhole("10.244.1.0/24".parse().expect("net")),
            KernelRoute::unicast(
                "10.244.2.0/24".parse().expect("net"),
                vec![NextHop::via(gw4)],
            ),
            KernelRoute::unicast(
                "10.244.2.0/24".parse().expect("net"),
                vec![
                    NextHop::via(gw4),
                    NextHop::via("192.0.2.13".parse().expect("addr")),
                ],
            ),
            KernelRoute::unicast(
                "10.244.3.0/24".parse().expect("net"),
                vec![NextHop::via_dev_onlink(gw4, 9)],
            ),
            KernelRoute::unicast("10.244.1.7/32".parse().expect("net"), vec![NextHop::dev(4)]),
            KernelRoute::unicast("fd00:2::/64".parse().expect("net"), vec![NextHop::via(gw6)]),
            KernelRoute::unicast(
                "fd00:2::/64".parse().expect("net"),
                vec![
                    NextHop::via(gw6),
                    NextHop::via("2001:db8::13".parse().expect("addr")),
                ],
            ),
        ] {
            assert_eq!(round_trip(&r), r, "{r}");
        }
    }

    #[test]
    fn delete_names_our_protocol_and_table() {
        let key = RouteKey {
            table: 254,
            dst: "10.244.2.0/24".parse().expect("net"),
        };
        let msg = delete_message(&key, 52);
        assert_eq!(u8::from(msg.header.protocol), 52);
        assert!(msg.attributes.contains(&RouteAttribute::Table(254)));
    }

    #[test]
    fn errno_text_has_no_os_error_suffix() {
        assert_eq!(os_reason(-101), "Network is unreachable");
    }

    #[test]
    fn message_len_rejects_short_and_overlong() {
        assert_eq!(message_len(&[]), None);
        assert_eq!(message_len(&8u32.to_ne_bytes()), None);
        let mut b = 20u32.to_ne_bytes().to_vec();
        b.resize(20, 0);
        assert_eq!(message_len(&b), Some(20));
        b.truncate(19);
        assert_eq!(message_len(&b), None);
    }
}
