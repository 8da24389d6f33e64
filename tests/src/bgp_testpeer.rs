//! A small BGP speaker written for the tests: it opens a session with an
//! OPEN built by `tortie_bgp::wire`, then sends whatever bytes a test
//! hand-crafts (malformed UPDATEs of each RFC 7606 class) and reads back
//! what the speaker under test answers (KEEPALIVE, UPDATE, NOTIFICATION).
//!
//! Also the bench's feeder: [`Feeder`] streams pre-encoded UPDATEs as fast
//! as TCP takes them while a reader thread drains the other direction.
//!
//! Sockets are made inside the test's namespace ([`in_netns`]), so traffic
//! only ever crosses the namespaces a test made. The codec is used to
//! build valid messages and to decode answers; malformed bytes are built
//! by hand here so the codec cannot "fix" them.
//!
//! Must never: block without a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tortie_bgp::wire::{
    self, decode_message, frame, Asn, Capability, Family, Frame, HoldTime, Message, Notification,
    Open, RouterId, SessionContext,
};

pub use crate::bgp_util::in_netns;

/// Connects from `local` to `remote` inside namespace `ns`.
pub fn connect_in(
    ns: &str,
    local: IpAddr,
    remote: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    in_netns(ns, move || {
        let domain = socket2::Domain::for_address(remote);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.bind(&SocketAddr::new(local, 0).into())
            .with_context(|| format!("binding {local}"))?;
        s.connect_timeout(&remote.into(), timeout)
            .with_context(|| format!("connecting {local} -> {remote}"))?;
        s.set_nodelay(true)?;
        Ok(TcpStream::from(s))
    })
}

/// The OPEN a test peer sends: IPv4 + IPv6 unicast, route refresh, 4-octet
/// AS.
pub fn test_open(asn: u32, router_id: Ipv4Addr, hold_time: u16) -> Open {
    Open::new(
        Asn(asn),
        HoldTime(hold_time),
        RouterId(router_id),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(Asn(asn)),
        ],
    )
}

/// What [`TestPeer::recv`] got.
// Received once per message read in tests; boxing the message would only
// add noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Message(Message),
    /// The speaker closed the connection.
    Closed,
    /// Nothing within the timeout.
    Nothing,
}

/// An established session with raw access to the byte stream.
#[derive(Debug)]
pub struct TestPeer {
    stream: TcpStream,
    buf: Vec<u8>,
    pub ctx: SessionContext,
    pub local_open: Open,
    pub remote_open: Open,
    last_keepalive: Instant,
}

impl TestPeer {
    /// Connects (inside `ns`) and runs the OPEN / KEEPALIVE exchange.
    pub fn connect(ns: &str, local: IpAddr, remote: SocketAddr, open: Open) -> Result<Self> {
        let stream = connect_in(ns, local, remote, Duration::from_secs(5))?;
        Self::handshake(stream, open)
    }

    /// Connects, retrying until `timeout` (the speaker may still be
    /// starting its listener).
    pub fn connect_retry(
        ns: &str,
        local: IpAddr,
        remote: SocketAddr,
        open: Open,
        timeout: Duration,
    ) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::connect(ns, local, remote, open.clone()) {
                Ok(p) => return Ok(p),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no session with {remote} after {timeout:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn handshake(stream: TcpStream, open: Open) -> Result<Self> {
        let mut p = Self {
            stream,
            buf: Vec::new(),
            ctx: SessionContext::default(),
            local_open: open.clone(),
            remote_open: open.clone(),
            last_keepalive: Instant::now(),
        };
        p.send(&Message::Open(open.clone()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let remote = loop {
            match p.recv_until(deadline)? {
                Received::Message(Message::Open(o)) => break o,
                Received::Message(Message::Notification(n)) => {
                    bail!("speaker refused the OPEN: {n}")
                }
                Received::Message(_) => continue,
                Received::Closed => bail!("speaker closed the connection before its OPEN"),
                Received::Nothing => bail!("no OPEN from the speaker within 10 s"),
            }
        };
        p.ctx = SessionContext::negotiate(&open, &remote);
        p.remote_open = remote;
        p.send(&Message::Keepalive)?;
        loop {
            match p.recv_until(deadline)? {
                Received::Message(Message::Keepalive) => break,
                Received::Message(Message::Notification(n)) => {
                    bail!("speaker sent NOTIFICATION during OPEN: {n}")
                }
                Received::Message(_) => continue,
                Received::Closed => bail!("speaker closed the connection in OpenConfirm"),
                Received::Nothing => bail!("no KEEPALIVE from the speaker within 10 s"),
            }
        }
        Ok(p)
    }

    /// Encodes and sends one message.
    pub fn send(&mut self, msg: &Message) -> Result<()> {
        let bytes = msg.encode(&self.ctx).context("encoding a test message")?;
        self.send_raw(&bytes)
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .context("writing to the speaker")?;
        Ok(())
    }

    fn keepalive_if_due(&mut self) -> Result<()> {
        if self.last_keepalive.elapsed() >= Duration::from_secs(1) {
            self.last_keepalive = Instant::now();
            self.send(&Message::Keepalive)?;
        }
        Ok(())
    }

    /// Reads one message, sending our KEEPALIVEs while it waits.
    pub fn recv(&mut self, timeout: Duration) -> Result<Received> {
        self.recv_until(Instant::now() + timeout)
    }

    fn recv_until(&mut self, deadline: Instant) -> Result<Received> {
        loop {
            match frame(&self.buf, &self.ctx) {
                Ok(Frame::Complete { length, .. }) => {
                    let bytes: Vec<u8> = self.buf.drain(..length).collect();
                    let msg = decode_message(&bytes, &self.ctx)
                        .map_err(|e| anyhow!("undecodable message from the speaker: {e}"))?;
                    return Ok(Received::Message(msg));
                }
                Ok(Frame::Incomplete { .. }) => {}
                Err(e) => bail!("bad framing from the speaker: {e}"),
            }
            if self.ctx != SessionContext::default() {
                // Established: keep the speaker's hold timer fed. A broken
                // pipe here is what a reset looks like; reads report it.
                let _ = self.keepalive_if_due();
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Received::Nothing);
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            self.stream.set_read_timeout(Some(wait))?;
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Received::Closed),
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(Received::Closed),
                Err(e) => return Err(e).context("reading from the speaker"),
            }
        }
    }

    /// Reads until a NOTIFICATION arrives (skipping KEEPALIVE and UPDATE);
    /// fails if the connection closes first or nothing comes in time.
    pub fn expect_notification(&mut self, timeout: Duration) -> Result<Notification> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_until(deadline)? {
                Received::Message(Message::Notification(n)) => return Ok(n),
                Received::Message(_) => continue,
                Received::Closed => bail!("the speaker closed the session without a NOTIFICATION"),
                Received::Nothing => bail!("no NOTIFICATION within {timeout:?}"),
            }
        }
    }

    /// Keeps the session going for `dur` and fails if the speaker sends a
    /// NOTIFICATION or closes it. Returns the UPDATEs received meanwhile.
    pub fn stays_up(&mut self, dur: Duration) -> Result<Vec<wire::Update>> {
        let deadline = Instant::now() + dur;
        let mut updates = Vec::new();
        loop {
            match self.recv_until(deadline)? {
                Received::Message(Message::Notification(n)) => {
                    bail!("the speaker reset the session: {n}")
                }
                Received::Message(Message::Update(u)) => updates.push(u),
                Received::Message(_) => continue,
                Received::Closed => bail!("the speaker closed the session"),
                Received::Nothing => return Ok(updates),
            }
        }
    }
}

// --- hand-built UPDATE bytes ------------------------------------------------

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const EXTENDED: u8 = 0x10;
}

/// One path attribute: flags, type, (1- or 2-octet) length, value. The
/// length is taken from `value` unless `len` overrides it (to lie).
pub fn attr(flags: u8, type_code: u8, value: &[u8], len: Option<u16>) -> Vec<u8> {
    let n = len.unwrap_or(u16::try_from(value.len()).unwrap_or(u16::MAX));
    let mut out = vec![flags, type_code];
    if flags & flag::EXTENDED != 0 {
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(u8::try_from(n).unwrap_or(u8::MAX));
    }
    out.extend_from_slice(value);
    out
}

/// ORIGIN IGP.
pub fn origin_igp() -> Vec<u8> {
    attr(flag::TRANSITIVE, 1, &[0], None)
}

/// AS_PATH with one AS_SEQUENCE of 4-octet ASes.
pub fn as_path(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, u8::try_from(asns.len()).unwrap_or(u8::MAX)];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(flag::TRANSITIVE, 2, &v, None)
}

/// NEXT_HOP.
pub fn next_hop(a: Ipv4Addr) -> Vec<u8> {
    attr(flag::TRANSITIVE, 3, &a.octets(), None)
}

/// MULTI_EXIT_DISC.
pub fn med(v: u32) -> Vec<u8> {
    attr(flag::OPTIONAL, 4, &v.to_be_bytes(), None)
}

/// IPv4 NLRI bytes for `a/len`.
pub fn nlri4(a: Ipv4Addr, len: u8) -> Vec<u8> {
    let bytes = usize::from(len).div_ceil(8);
    let mut v = vec![len];
    v.extend_from_slice(a.octets().get(..bytes).unwrap_or(&a.octets()));
    v
}

/// A whole UPDATE message from its three raw fields; `length` overrides
/// the header length (to lie).
pub fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8], length: Option<u16>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(withdrawn.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    let total = u16::try_from(19 + body.len()).unwrap_or(u16::MAX);
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&length.unwrap_or(total).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&body);
    out
}

/// The usual well-formed attributes for a route from `asn` via `nh`.
pub fn base_attrs(asn: u32, nh: Ipv4Addr) -> Vec<u8> {
    [origin_igp(), as_path(&[asn]), next_hop(nh)].concat()
}

// --- bench feeder -----------------------------------------------------------

/// A session that sends a pre-encoded stream of UPDATEs and discards what
/// comes back (a reader thread drains it so the speaker never blocks on
/// us), with KEEPALIVEs every second from a third thread.
#[derive(Debug)]
pub struct Feeder {
    stream: Arc<Mutex<TcpStream>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub ctx: SessionContext,
}

impl Feeder {
    /// Connects from `local` (inside `ns`) and runs the OPEN exchange;
    /// retries until `timeout` while the speaker starts.
    pub fn connect(
        ns: &str,
        local: IpAddr,
        remote: SocketAddr,
        open: Open,
        timeout: Duration,
    ) -> Result<Self> {
        let peer = TestPeer::connect_retry(ns, local, remote, open, timeout)?;
        let stream = peer.stream;
        let ctx = peer.ctx;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut reader = stream.try_clone()?;
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !s.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(_) => break,
                }
            }
        }));
        let stream = Arc::new(Mutex::new(stream));
        let ka = stream.clone();
        let s = stop.clone();
        let keepalive = Message::Keepalive.encode(&ctx)?;
        threads.push(std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    if s.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                // The lock keeps a KEEPALIVE from landing inside a
                // partially written UPDATE.
                let Ok(mut w) = ka.lock() else { return };
                if w.write_all(&keepalive).is_err() {
                    return;
                }
            }
        }));
        Ok(Self {
            stream,
            stop,
            threads,
            ctx,
        })
    }

    /// Writes `bytes` (whole messages), in batches of whole messages so a
    /// KEEPALIVE from the other thread only lands between messages.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = match frame(rest, &self.ctx) {
                Ok(Frame::Complete { length, .. }) => length,
                _ => bail!("feeder: not a whole message"),
            };
            // Batch many whole messages per syscall.
            let mut end = len;
            while end < rest.len() && end < 256 * 1024 {
                match rest.get(end..).map(|r| frame(r, &self.ctx)) {
                    Some(Ok(Frame::Complete { length, .. })) => end += length,
                    _ => break,
                }
            }
            let (chunk, tail) = rest.split_at(end);
            self.stream
                .lock()
                .map_err(|_| anyhow!("feeder lock poisoned"))?
                .write_all(chunk)
                .context("feeding the speaker")?;
            rest = tail;
        }
        Ok(())
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(s) = self.stream.lock() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
