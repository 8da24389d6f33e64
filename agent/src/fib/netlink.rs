//! The netlink edge of the FIB: dump tortie's routes, apply operations.
//!
//! Route requests are encoded by hand straight into the batch buffer
//! (`encode_op`, checked byte for byte against netlink-packet-route's
//! messages, which stay the reference and the dump decoder); the socket
//! work is here and nowhere else.
//!
//! Pipelining: a batch of up to [`BATCH_MESSAGES`] requests goes out in one
//! `sendmsg`. Only the last request of a batch asks for an acknowledgement;
//! the kernel answers any failed request with an error message carrying its
//! sequence number, so one round trip settles a whole batch. This is what
//! makes a million routes take seconds instead of minutes (`ip -batch`
//! waits for each request in turn). With more than one batch, a second
//! thread sends while the caller plans and encodes the next batch and
//! records the last one's outcomes ([`RouteSocket::apply_planned`]).

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::mpsc;

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
        self.apply_each(protocol, ops.to_vec(), |o| outcomes.push(o))?;
        Ok(outcomes)
    }

    /// Applies operations, pipelined, handing each outcome to `on_outcome`
    /// in order, batch by batch as the kernel answers (so the caller can
    /// record them while the kernel works on the next batch). An error of
    /// one route never stops the others. `Err` only when the socket itself
    /// fails; the operations not handed back by then have an unknown fate.
    pub fn apply_each(
        &mut self,
        protocol: u8,
        ops: Vec<Op>,
        mut on_outcome: impl FnMut(OpOutcome),
    ) -> Result<(), FibError> {
        let mut ops = ops.into_iter();
        self.apply_planned(
            protocol,
            &mut ops,
            |ops| ops.by_ref().take(BATCH_MESSAGES).collect(),
            |_, o| on_outcome(o),
        )
    }

    /// Applies operations made batch by batch: `next_batch` gives at most
    /// [`BATCH_MESSAGES`] operations, fewer only when there are no more
    /// (then none), and `on_outcome` gets each one's outcome, in order.
    /// Both get `state` (a reconciler planning lazily, say), one at a time.
    /// An error of one route never stops the others. `Err` only when the
    /// socket itself fails; the operations not handed back by then have an
    /// unknown fate.
    ///
    /// More than one batch: a second thread does the `sendmsg`s and reads
    /// the acknowledgements while this one makes and encodes the next batch
    /// and hands out the outcomes of the previous one. The kernel installs
    /// a batch's routes inside `sendmsg`, so with two cores tortie's own
    /// work, planning included, hides behind the kernel's. Batches stay in
    /// order on one socket, so sequence numbers still name each route.
    pub fn apply_planned<S: ?Sized>(
        &mut self,
        protocol: u8,
        state: &mut S,
        mut next_batch: impl FnMut(&mut S) -> Vec<Op>,
        mut on_outcome: impl FnMut(&mut S, OpOutcome),
    ) -> Result<(), FibError> {
        let first = next_batch(state);
        if first.len() < BATCH_MESSAGES {
            if first.is_empty() {
                return Ok(());
            }
            let mut out = std::mem::take(&mut self.out);
            let first_seq = encode_batch(&mut out, &first, protocol, &mut self.seq);
            let sent = Sent {
                buf: out,
                first_seq,
                count: first.len(),
            };
            let done = send_and_collect(&self.sock, &mut self.inbuf, sent)?;
            self.out = done.buf;
            hand_out(first, &done.errors, &mut |o| on_outcome(state, o));
            return Ok(());
        }
        let mut first = Some(first);
        let mut recv_buf = std::mem::take(&mut self.inbuf);
        let sock = &self.sock;
        let mut seq = self.seq;
        let result = std::thread::scope(|scope| {
            // Two batches queued: one in the kernel, one ready behind it,
            // while this thread makes a third.
            let (to_sender, batches) = mpsc::sync_channel::<Sent>(2);
            let (done_tx, done_rx) = mpsc::channel::<Result<Done, FibError>>();
            let sender = scope.spawn(move || {
                for sent in batches {
                    let done = send_and_collect(sock, &mut recv_buf, sent);
                    let failed = done.is_err();
                    if done_tx.send(done).is_err() || failed {
                        break;
                    }
                }
                recv_buf
            });
            let mut in_flight: VecDeque<Vec<Op>> = VecDeque::new();
            let mut spare: Vec<Vec<u8>> = Vec::new();
            let mut failure = None;
            // Hands out one finished batch; false once the sender failed.
            let mut finish = |done: Result<Done, FibError>,
                              state: &mut S,
                              in_flight: &mut VecDeque<Vec<Op>>,
                              spare: &mut Vec<Vec<u8>>,
                              failure: &mut Option<FibError>| {
                match done {
                    Ok(done) => {
                        let batch = in_flight.pop_front().unwrap_or_default();
                        hand_out(batch, &done.errors, &mut |o| on_outcome(state, o));
                        spare.push(done.buf);
                        true
                    }
                    Err(e) => {
                        *failure = Some(e);
                        false
                    }
                }
            };
            'send: loop {
                let batch = match first.take() {
                    Some(b) => b,
                    None => next_batch(state),
                };
                if batch.is_empty() {
                    break;
                }
                let mut buf = spare.pop().unwrap_or_default();
                let first_seq = encode_batch(&mut buf, &batch, protocol, &mut seq);
                let sent = Sent {
                    buf,
                    first_seq,
                    count: batch.len(),
                };
                in_flight.push_back(batch);
                if to_sender.send(sent).is_err() {
                    // The sender stopped: its error is on `done_rx`.
                    break;
                }
                // Outcomes of finished batches, without waiting; wait only
                // when three batches are out (the queue is full anyway).
                loop {
                    let done = if in_flight.len() >= 3 {
                        match done_rx.recv() {
                            Ok(d) => d,
                            Err(_) => break 'send,
                        }
                    } else {
                        match done_rx.try_recv() {
                            Ok(d) => d,
                            Err(_) => break,
                        }
                    };
                    if !finish(done, state, &mut in_flight, &mut spare, &mut failure) {
                        break 'send;
                    }
                }
            }
            drop(to_sender);
            while failure.is_none() && !in_flight.is_empty() {
                match done_rx.recv() {
                    Ok(done) => {
                        finish(done, state, &mut in_flight, &mut spare, &mut failure);
                    }
                    Err(_) => break,
                }
            }
            drop(done_rx);
            let recv_buf = sender.join().unwrap_or_default();
            match failure {
                Some(e) => Err(e),
                None if !in_flight.is_empty() => Err(FibError::Io {
                    what: "route batch sender",
                    source: io::Error::other("the sender thread stopped"),
                }),
                None => Ok(recv_buf),
            }
        });
        self.seq = seq;
        self.inbuf = result?;
        Ok(())
    }
}

/// Encodes `ops` as one batch into `out` (cleared first), the last asking
/// for an acknowledgement, numbered after `seq` (the last number used,
/// advanced); returns the first sequence number.
fn encode_batch(out: &mut Vec<u8>, ops: &[Op], protocol: u8, seq: &mut u32) -> u32 {
    out.clear();
    let first_seq = batch_start(seq);
    for (i, op) in ops.iter().enumerate() {
        *seq += 1;
        let ack = if i + 1 == ops.len() { NLM_F_ACK } else { 0 };
        encode_op(out, op, protocol, *seq, ack);
    }
    first_seq
}

/// The first sequence number of a batch of at most [`BATCH_MESSAGES`]
/// requests following `seq` (the last one used). Starts again at 1 where
/// the batch would wrap, so that every number in a batch is
/// `first + index` (and none is 0).
fn batch_start(seq: &mut u32) -> u32 {
    if *seq > u32::MAX - BATCH_MESSAGES as u32 - 1 {
        *seq = 0;
    }
    *seq + 1
}

/// One encoded batch on its way to the kernel.
struct Sent {
    buf: Vec<u8>,
    first_seq: u32,
    count: usize,
}

/// The kernel's answer to a batch: the refused requests by index in the
/// batch, with their (negated errno) codes; the buffer comes back for
/// reuse.
struct Done {
    buf: Vec<u8>,
    errors: Vec<(usize, i32)>,
}

/// Sends one batch and reads until its last request is acknowledged. The
/// kernel answers a refused request with an error carrying its sequence
/// number and the last one (which asks for an ack) either way, in order.
fn send_and_collect(sock: &Socket, inbuf: &mut Vec<u8>, sent: Sent) -> Result<Done, FibError> {
    sock.send(&sent.buf, 0).map_err(|source| FibError::Io {
        what: "send route batch",
        source,
    })?;
    // A batch never straddles the wrap of sequence numbers (`batch_start`).
    let last_seq = sent
        .first_seq
        .wrapping_add(u32::try_from(sent.count.saturating_sub(1)).unwrap_or(u32::MAX));
    let mut errors = Vec::new();
    loop {
        inbuf.clear();
        if inbuf.capacity() < RECV_BUF {
            inbuf.reserve(RECV_BUF);
        }
        sock.recv(inbuf, 0).map_err(|source| FibError::Io {
            what: "receive",
            source,
        })?;
        let mut off = 0;
        while let Some(len) = inbuf.get(off..).and_then(message_len) {
            let msg = inbuf.get(off..off + len).unwrap_or_default();
            off += len;
            let Some((seq, code)) = ack_of(msg) else {
                continue;
            };
            if code != 0 {
                let idx = seq.wrapping_sub(sent.first_seq) as usize;
                if idx < sent.count {
                    errors.push((idx, code));
                }
            }
            if seq == last_seq {
                errors.sort_unstable();
                return Ok(Done {
                    buf: sent.buf,
                    errors,
                });
            }
        }
    }
}

/// `(sequence number, error code)` of an `NLMSG_ERROR` message (an ack
/// when the code is 0); `None` for any other message.
///
/// ```text
/// struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
/// struct nlmsgerr { i32 error; struct nlmsghdr msg; ... }
/// ```
fn ack_of(msg: &[u8]) -> Option<(u32, i32)> {
    const NLMSG_ERROR: u16 = 2;
    let kind = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    let seq = u32::from_ne_bytes(msg.get(8..12)?.try_into().ok()?);
    let code = i32::from_ne_bytes(msg.get(16..20)?.try_into().ok()?);
    Some((seq, code))
}

/// Pairs a batch's operations with the kernel's answers.
fn hand_out(batch: Vec<Op>, errors: &[(usize, i32)], on_outcome: &mut dyn FnMut(OpOutcome)) {
    let mut errors = errors.iter().peekable();
    for (i, op) in batch.into_iter().enumerate() {
        let mut result = Ok(());
        while let Some(&&(idx, code)) = errors.peek() {
            if idx > i {
                break;
            }
            if idx == i {
                result = Err(os_reason(code));
            }
            errors.next();
        }
        on_outcome(OpOutcome { op, result });
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

// Hand encoding of route requests, straight into the batch buffer.
//
// netlink-packet-route builds a `Vec` of attribute values and a message
// value per route before serialising it; at a million routes that is a
// large share of tortie's install time. The shapes tortie installs are few,
// so they are written here byte by byte (host byte order, as netlink is);
// the test `hand_encoding_decodes_to_the_library_message` checks every
// shape against `to_message`/`delete_message`, which stay the reference
// (and the decoder for dumps stays netlink-packet-route).
//
// struct nlmsghdr (16) | struct rtmsg (12) | rtattr...   (rtnetlink(7))
//   rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type,
//          flags (u32)
//   rtattr: len (u16), type (u16), payload, padded to 4
//   RTA_MULTIPATH payload: rtnexthop { len u16, flags u8, hops u8,
//          ifindex i32 } followed by its own rtattrs, per next hop

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
/// `RTNH_F_ONLINK`, also used as `RTM_F_ONLINK` in `rtm_flags`.
const F_ONLINK: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNSPEC: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTN_BLACKHOLE: u8 = 6;

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put_addr_attr(out: &mut Vec<u8>, kind: u16, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            put_u16(out, 8);
            put_u16(out, kind);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            put_u16(out, 20);
            put_u16(out, kind);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn put_u32_attr(out: &mut Vec<u8>, kind: u16, v: u32) {
    put_u16(out, 8);
    put_u16(out, kind);
    put_u32(out, v);
}

/// Writes a 16-bit length at `at`; lengths here are bounded by next-hop
/// counts far below 64 KiB, and a longer one saturates (the kernel then
/// refuses that one route rather than misreading the batch).
fn patch_u16(out: &mut [u8], at: usize, len: usize) {
    let v = u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes();
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&v);
    }
}

/// Appends the request for `op` (RTM_NEWROUTE with create|replace, or
/// RTM_DELROUTE naming tortie's protocol) to `out`. Byte for byte what
/// `to_message`/`delete_message` serialise to, except that `RTA_TABLE` is
/// only sent for tables above 255: smaller ones fit `rtm_table`, which the
/// kernel reads when the attribute is absent.
fn encode_op(out: &mut Vec<u8>, op: &Op, protocol: u8, seq: u32, ack: u16) {
    let (kind, flags, route) = match op {
        Op::Add(r) | Op::Replace(r) => (
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE | ack,
            r,
        ),
        Op::Delete(r) => (RTM_DELROUTE, NLM_F_REQUEST | ack, r),
    };
    let start = out.len();
    put_u32(out, 0); // nlmsg_len, patched below
    put_u16(out, kind);
    put_u16(out, flags);
    put_u32(out, seq);
    put_u32(out, 0); // nlmsg_pid: the kernel
    let key = &route.key;
    let family = match key.dst {
        IpNet::V4(_) => libc_family::AF_INET,
        IpNet::V6(_) => libc_family::AF_INET6,
    };
    let small_table = u8::try_from(key.table).ok();
    let (scope, rtype, rflags) = if kind == RTM_DELROUTE {
        (RT_SCOPE_NOWHERE, RTN_UNSPEC, 0u8)
    } else {
        match &route.target {
            RouteTarget::Blackhole => (RT_SCOPE_UNIVERSE, RTN_BLACKHOLE, 0),
            RouteTarget::Unicast(hops) => match &hops[..] {
                [hop] => (
                    if hop.gateway.is_none() {
                        RT_SCOPE_LINK
                    } else {
                        RT_SCOPE_UNIVERSE
                    },
                    RTN_UNICAST,
                    if hop.onlink { F_ONLINK } else { 0 },
                ),
                _ => (RT_SCOPE_UNIVERSE, RTN_UNICAST, 0),
            },
        }
    };
    out.extend_from_slice(&[
        family,
        key.dst.prefix_len(),
        0, // src_len
        0, // tos
        small_table.unwrap_or(RouteHeader::RT_TABLE_UNSPEC),
        protocol,
        scope,
        rtype,
    ]);
    put_u32(out, u32::from(rflags));
    put_addr_attr(out, RTA_DST, key.dst.network());
    if small_table.is_none() {
        put_u32_attr(out, RTA_TABLE, key.table);
    }
    if kind == RTM_NEWROUTE {
        if let RouteTarget::Unicast(hops) = &route.target {
            if let [hop] = &hops[..] {
                if let Some(gw) = hop.gateway {
                    put_addr_attr(out, RTA_GATEWAY, gw);
                }
                if let Some(ifindex) = hop.ifindex {
                    put_u32_attr(out, RTA_OIF, ifindex);
                }
            } else {
                let mp = out.len();
                put_u16(out, 0);
                put_u16(out, RTA_MULTIPATH);
                for hop in hops.iter() {
                    let nh = out.len();
                    put_u16(out, 0);
                    out.push(if hop.onlink { F_ONLINK } else { 0 });
                    out.push(0); // hops (weight - 1)
                    put_u32(out, hop.ifindex.unwrap_or(0));
                    if let Some(gw) = hop.gateway {
                        put_addr_attr(out, RTA_GATEWAY, gw);
                    }
                    let len = out.len() - nh;
                    patch_u16(out, nh, len);
                }
                let len = out.len() - mp;
                patch_u16(out, mp, len);
            }
        }
    }
    // Every piece above is a multiple of 4 bytes, so no padding is needed.
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&len.to_ne_bytes());
    }
}

/// Address family numbers of `rtm_family` (linux/socket.h).
mod libc_family {
    pub const AF_INET: u8 = 2;
    pub const AF_INET6: u8 = 10;
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
            if let [hop] = &hops[..] {
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
            RouteTarget::Unicast(hops.into())
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
        for r in shapes() {
            assert_eq!(round_trip(&r), r, "{r}");
        }
    }

    /// The library message for `op` as the hand encoder means it: the
    /// same, minus `RTA_TABLE` for tables that fit `rtm_table`.
    fn reference(op: &Op, seq: u32) -> NetlinkMessage<RouteNetlinkMessage> {
        let (flags, mut msg, new) = match op {
            Op::Add(r) | Op::Replace(r) => (
                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE,
                to_message(r, 52),
                true,
            ),
            Op::Delete(r) => (NLM_F_REQUEST, delete_message(&r.key, 52), false),
        };
        if op.route().key.table < 256 {
            msg.attributes
                .retain(|a| !matches!(a, RouteAttribute::Table(_)));
        }
        let payload = if new {
            RouteNetlinkMessage::NewRoute(msg)
        } else {
            RouteNetlinkMessage::DelRoute(msg)
        };
        let mut m = NetlinkMessage::new(header(flags, seq), NetlinkPayload::from(payload));
        m.finalize();
        m
    }

    fn shapes() -> Vec<KernelRoute> {
        let gw4: IpAddr = "192.0.2.12".parse().expect("addr");
        let gw6: IpAddr = "2001:db8::12".parse().expect("addr");
        let mut in_table = KernelRoute::unicast(
            "10.244.9.0/24".parse().expect("net"),
            vec![NextHop::via(gw4)],
        );
        in_table.key.table = 1000;
        vec![
            KernelRoute::blackhole("10.244.1.0/24".parse().expect("net")),
            KernelRoute::blackhole("fd00:1::/64".parse().expect("net")),
            KernelRoute::unicast("0.0.0.0/0".parse().expect("net"), vec![NextHop::via(gw4)]),
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
            KernelRoute::unicast(
                "10.244.3.0/24".parse().expect("net"),
                vec![
                    NextHop::via_dev_onlink(gw4, 9),
                    NextHop::via_dev_onlink("192.0.2.13".parse().expect("addr"), 9),
                    NextHop::via("192.0.2.14".parse().expect("addr")),
                ],
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
            KernelRoute::unicast(
                "fd00:3::/64".parse().expect("net"),
                vec![NextHop::via_dev_onlink(gw6, 7)],
            ),
            KernelRoute::unicast("fd00:1::7/128".parse().expect("net"), vec![NextHop::dev(4)]),
            in_table,
        ]
    }

    #[test]
    fn hand_encoding_decodes_to_the_library_message() {
        for r in shapes() {
            for (i, op) in [
                Op::Add(r.clone()),
                Op::Replace(r.clone()),
                Op::Delete(r.clone()),
            ]
            .into_iter()
            .enumerate()
            {
                let seq = 7 + i as u32;
                for ack in [0, NLM_F_ACK] {
                    let mut bytes = Vec::new();
                    encode_op(&mut bytes, &op, 52, seq, ack);
                    let mut want = reference(&op, seq);
                    want.header.flags |= ack;
                    let mut want_bytes = vec![0; want.buffer_len()];
                    want.serialize(&mut want_bytes);
                    assert_eq!(bytes, want_bytes, "{} {r}", op.verb());
                    let got =
                        NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).expect("parses");
                    assert_eq!(got, want, "{} {r}", op.verb());
                    if let (
                        Op::Add(_),
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)),
                    ) = (&op, &got.payload)
                    {
                        assert_eq!(from_message(m).as_ref(), Some(&r), "{r}");
                    }
                }
            }
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
