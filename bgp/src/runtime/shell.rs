//! The tokio shell around [`Speaker`]: listeners, outbound connects,
//! per-connection reader and writer tasks, the timer, and a command
//! channel for reconfiguration, status and shutdown.
//!
//! ```text
//!  accept tasks ──┐
//!  connect tasks ─┴─► events (bounded) ─────────┐       ┌─► writer task per conn (coalesces writes)
//!  reader task per conn ─► its own bounded queue ├─► core ┤
//!    (one read = one batch of decoded messages)  │  task  └─► connect tasks
//!  Handle ─────────► commands ───────────────────┘
//! ```
//!
//! # Why keepalives are never starved
//!
//! Route processing happens in the core task, one batch at a time: a
//! reader decodes one read's worth (at most 64 KiB, a few thousand
//! prefixes) into a batch and queues it on its connection's own bounded
//! queue ([`CONN_QUEUE`] batches). The core takes one batch from every
//! connection in turn and fires due timers between any two batches, so:
//!
//! - a KEEPALIVE we owe goes out within one batch's processing time, however
//!   many prefixes are queued;
//! - a peer's KEEPALIVE never waits behind another session's UPDATEs (one
//!   batch per connection per round), and behind its own UPDATEs only up to
//!   the queue bound; each UPDATE processed restarts the hold timer anyway;
//! - full queues push back on the readers, and through TCP on the peers,
//!   instead of growing memory.
//!
//! Commands (status, reconfigure, shutdown) and accepts are checked
//! between rounds too. The test `a_million_prefixes_do_not_starve_keepalives`
//! runs a 1,000,000-prefix flood through 3 s hold-time sessions.
//!
//! A connection from an address that is not a configured peer is dropped
//! at once: nothing is written on it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::socket::{connecting_socket, set_gtsm, set_md5_key};
use crate::fsm::{ConnId, Jitter};
use crate::speaker::{
    canonical, ConnDecoder, Output, PeerSettings, PeerSnapshot, RouteSnapshot, Speaker,
    SpeakerConfig,
};
use crate::wire::{DecodeError, Message, Open};

/// Accepts and connect results waiting for the core.
const EVENT_QUEUE: usize = 64;
/// Batches (reads) queued per connection: the most a peer's KEEPALIVE
/// can wait behind its own UPDATEs.
const CONN_QUEUE: usize = 8;
/// One read (and so one batch of messages) at most.
const READ_CHUNK: usize = 64 * 1024;
/// Outbound connect attempts give up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the Cease NOTIFICATIONs to be written.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// What the shell runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Speaker-wide settings.
    pub speaker: SpeakerConfig,
    /// Peers.
    pub peers: Vec<PeerSettings>,
    /// Addresses to listen on (port 0 = any; see [`Handle::listen_addrs`]);
    /// empty = active sessions only.
    pub listen: Vec<SocketAddr>,
}

/// What [`Handle::status`] returns.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Speaker settings.
    pub speaker: SpeakerConfig,
    /// One line per peer.
    pub peers: Vec<PeerSnapshot>,
    /// The RIB, when asked for.
    pub routes: Option<Vec<RouteSnapshot>>,
    /// Whether graceful-restart deferral holds our advertisements.
    pub deferring: bool,
}

enum Command {
    Reconfigure {
        speaker: Box<SpeakerConfig>,
        peers: Vec<PeerSettings>,
        reply: oneshot::Sender<()>,
    },
    Status {
        routes: bool,
        reply: oneshot::Sender<StatusReport>,
    },
    Shutdown {
        message: String,
        reply: oneshot::Sender<()>,
    },
}

/// Talks to a running speaker.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    listen: Vec<SocketAddr>,
}

/// The speaker task is gone.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the BGP speaker is not running")]
pub struct Stopped;

impl Handle {
    /// The addresses actually listened on (ports resolved).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Applies a new configuration (unchanged sessions stay up).
    pub async fn reconfigure(
        &self,
        speaker: SpeakerConfig,
        peers: Vec<PeerSettings>,
    ) -> Result<(), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reconfigure {
                speaker: Box::new(speaker),
                peers,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The status (and the RIB with `routes`).
    pub async fn status(&self, routes: bool) -> Result<StatusReport, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Status { routes, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Closes every session with Cease / Administrative Shutdown and
    /// stops the speaker; returns when the NOTIFICATIONs are written (or
    /// after a few seconds).
    pub async fn shutdown(&self, message: &str) -> Result<(), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Shutdown {
                message: message.to_string(),
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

#[derive(Debug)]
struct RandJitter;

impl Jitter for RandJitter {
    fn factor(&mut self) -> f64 {
        use rand::Rng;
        rand::thread_rng().gen_range(0.75..=1.0)
    }
}

enum Ev {
    Accepted {
        stream: TcpStream,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Connected {
        conn: ConnId,
        stream: TcpStream,
        local: SocketAddr,
    },
    ConnectFailed {
        conn: ConnId,
        why: String,
    },
    Closed {
        conn: ConnId,
    },
}

enum Write {
    Bytes(Vec<u8>),
    Close,
}

/// What a reader hands the core, in stream order.
enum Inbound {
    Messages(Vec<Result<Message, DecodeError>>),
    Closed,
}

struct Live {
    writer: mpsc::UnboundedSender<Write>,
    inbound: mpsc::Receiver<Inbound>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
}

struct Core {
    speaker: Speaker,
    peers: HashMap<IpAddr, PeerSettings>,
    listeners: Vec<Arc<TcpListener>>,
    ev_tx: mpsc::Sender<Ev>,
    connecting: HashMap<ConnId, (JoinHandle<()>, Box<Open>)>,
    live: HashMap<ConnId, Live>,
    /// Round-robin order of the live connections' inbound queues.
    order: VecDeque<ConnId>,
    /// Readers ring it after queueing a batch.
    ready: Arc<Notify>,
    closing: Vec<JoinHandle<()>>,
    /// Where best-route changes go (with [`SpeakerConfig::track_fib`]).
    fib: Option<std::sync::mpsc::Sender<Vec<crate::rib::FibChange>>>,
}

/// Binds the listeners and starts the speaker; returns its handle and
/// the task (which ends after [`Handle::shutdown`]).
pub async fn start(cfg: RuntimeConfig) -> io::Result<(Handle, JoinHandle<()>)> {
    start_with_fib(cfg, None).await
}

/// [`start`], and every batch of best-route changes is sent to `fib`
/// (set [`SpeakerConfig::track_fib`] too). A std channel because the
/// consumer is a blocking thread that owns a netlink socket; the
/// speaker coalesces per prefix between sends, and the consumer coalesces
/// again by keying on the prefix.
pub async fn start_with_fib(
    cfg: RuntimeConfig,
    fib: Option<std::sync::mpsc::Sender<Vec<crate::rib::FibChange>>>,
) -> io::Result<(Handle, JoinHandle<()>)> {
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for addr in &cfg.listen {
        let l = bind_listener(*addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        bound.push(l.local_addr()?);
        listeners.push(Arc::new(l));
    }
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let (tx, rx) = mpsc::channel(16);
    for l in &listeners {
        tokio::spawn(accept_loop(Arc::clone(l), ev_tx.clone()));
        info!("listening for BGP on {}", l.local_addr()?);
    }
    let now = Instant::now();
    let speaker = Speaker::new(cfg.speaker.clone(), now, Box::new(|| Box::new(RandJitter)));
    let mut core = Core {
        speaker,
        peers: HashMap::new(),
        listeners,
        ev_tx,
        connecting: HashMap::new(),
        live: HashMap::new(),
        order: VecDeque::new(),
        ready: Arc::new(Notify::new()),
        closing: Vec::new(),
        fib,
    };
    core.reconfigure(cfg.speaker, cfg.peers);
    let task = tokio::spawn(core.run(rx, ev_rx));
    Ok((Handle { tx, listen: bound }, task))
}

fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // "0.0.0.0" and "::" are listed separately; keep them apart.
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}

async fn accept_loop(l: Arc<TcpListener>, tx: mpsc::Sender<Ev>) {
    loop {
        match l.accept().await {
            Ok((stream, remote)) => {
                let local = match stream.local_addr() {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                if tx
                    .send(Ev::Accepted {
                        stream,
                        local,
                        remote,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn reader(
    mut rd: OwnedReadHalf,
    mut dec: ConnDecoder,
    tx: mpsc::Sender<Inbound>,
    ready: Arc<Notify>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Inbound::Closed).await;
                ready.notify_one();
                return;
            }
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut msgs = Vec::new();
        let mut used = 0;
        let mut failed = false;
        while let Some((m, len)) = dec.next_message(buf.get(used..).unwrap_or_default()) {
            used += len;
            failed |= m.is_err();
            msgs.push(m);
        }
        buf.drain(..used.min(buf.len()));
        if !msgs.is_empty() {
            if tx.send(Inbound::Messages(msgs)).await.is_err() {
                return;
            }
            ready.notify_one();
        }
        if failed {
            // The FSM answers with a NOTIFICATION and closes; the stream
            // cannot be framed any more.
            return;
        }
    }
}

async fn writer(
    mut wr: OwnedWriteHalf,
    conn: ConnId,
    mut rx: mpsc::UnboundedReceiver<Write>,
    tx: mpsc::Sender<Ev>,
) {
    let mut out = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut close = false;
        match first {
            Write::Bytes(b) => out.extend_from_slice(&b),
            Write::Close => close = true,
        }
        // Coalesce everything already queued into one write.
        while !close && out.len() < 1 << 20 {
            match rx.try_recv() {
                Ok(Write::Bytes(b)) => out.extend_from_slice(&b),
                Ok(Write::Close) => close = true,
                Err(_) => break,
            }
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                debug!(%conn, "write failed: {e}");
                let _ = tx.send(Ev::Closed { conn }).await;
                return;
            }
            out.clear();
        }
        if close {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

impl Core {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Command>, mut ev_rx: mpsc::Receiver<Ev>) {
        let far = Duration::from_secs(3600);
        loop {
            self.fire_timers();
            // Commands and socket events never wait behind route traffic.
            while let Ok(ev) = ev_rx.try_recv() {
                self.event(ev);
                self.dispatch();
            }
            match cmd_rx.try_recv() {
                Ok(Command::Shutdown { message, reply }) => {
                    self.shutdown(&message).await;
                    let _ = reply.send(());
                    return;
                }
                Ok(c) => {
                    self.command(c);
                    self.dispatch();
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.shutdown("tortie is stopping").await;
                    return;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if self.inbound_round() {
                // Let the other tasks (readers, writers, other speakers
                // in tests) run between rounds.
                tokio::task::yield_now().await;
                continue;
            }
            let deadline = self
                .speaker
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + far);
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline.into()) => {}
                cmd = cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown { message, reply }) => {
                        self.shutdown(&message).await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(c) => self.command(c),
                    None => {
                        self.shutdown("tortie is stopping").await;
                        return;
                    }
                },
                Some(ev) = ev_rx.recv() => self.event(ev),
                () = self.ready.notified() => {}
            }
            self.dispatch();
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.speaker.poll_timeout().is_some_and(|t| t <= now) {
            self.speaker.handle_timeout(now);
            self.dispatch();
        }
    }

    /// Takes at most one queued batch from every live connection, in
    /// turn, firing due timers between batches; returns whether anything
    /// was processed.
    fn inbound_round(&mut self) -> bool {
        let mut any = false;
        for _ in 0..self.order.len() {
            let Some(conn) = self.order.pop_front() else {
                break;
            };
            let Some(live) = self.live.get_mut(&conn) else {
                continue;
            };
            self.order.push_back(conn);
            let item = live.inbound.try_recv();
            let now = Instant::now();
            match item {
                Ok(Inbound::Messages(msgs)) => {
                    any = true;
                    self.speaker.received_batch(now, conn, msgs);
                }
                Ok(Inbound::Closed) => {
                    any = true;
                    self.event(Ev::Closed { conn });
                }
                Err(_) => continue,
            }
            self.dispatch();
            self.fire_timers();
        }
        any
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Reconfigure {
                speaker,
                peers,
                reply,
            } => {
                self.reconfigure(*speaker, peers);
                let _ = reply.send(());
            }
            Command::Status { routes, reply } => {
                let now = Instant::now();
                let _ = reply.send(StatusReport {
                    speaker: self.speaker.config().clone(),
                    peers: self.speaker.snapshot(now),
                    routes: routes.then(|| self.speaker.routes()),
                    deferring: self.speaker.deferring(),
                });
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn reconfigure(&mut self, speaker: SpeakerConfig, peers: Vec<PeerSettings>) {
        let new: HashMap<IpAddr, PeerSettings> =
            peers.iter().map(|p| (p.address, p.clone())).collect();
        // TCP-MD5 keys live on the listening sockets, per peer address.
        for l in &self.listeners {
            let v4 = l.local_addr().map(|a| a.is_ipv4()).unwrap_or(true);
            for (addr, p) in &new {
                if addr.is_ipv4() != v4 {
                    continue;
                }
                let old = self
                    .peers
                    .get(addr)
                    .and_then(|o| o.transport.password.clone());
                let key = p.transport.password.clone();
                if old != key {
                    let k = key.unwrap_or_default();
                    if let Err(e) = set_md5_key(l.as_ref(), *addr, k.as_bytes()) {
                        warn!(peer = %addr, "cannot set the TCP-MD5 key on the listener: {e}");
                    }
                }
            }
            for addr in self.peers.keys() {
                if !new.contains_key(addr) && addr.is_ipv4() == v4 {
                    let had = self
                        .peers
                        .get(addr)
                        .is_some_and(|p| p.transport.password.is_some());
                    if had {
                        let _ = set_md5_key(l.as_ref(), *addr, b"");
                    }
                }
            }
        }
        self.peers = new;
        self.speaker.set_config(Instant::now(), speaker, peers);
    }

    fn event(&mut self, ev: Ev) {
        let now = Instant::now();
        match ev {
            Ev::Accepted {
                stream,
                local,
                remote,
            } => match self.speaker.accepted(now, local, remote) {
                None => {
                    info!(peer = %remote.ip(), "refused a connection from {remote}: not a configured peer");
                    drop(stream);
                }
                Some((conn, open)) => {
                    let addr = canonical(remote.ip());
                    if let Some(hops) = self.peers.get(&addr).and_then(|p| p.transport.ttl_security)
                    {
                        if let Err(e) = set_gtsm(&stream, remote.ip(), hops) {
                            warn!(peer = %addr, "cannot set GTSM: {e}");
                        }
                    }
                    self.spawn_io(conn, stream, open);
                }
            },
            Ev::Connected {
                conn,
                stream,
                local,
            } => match self.connecting.remove(&conn) {
                Some((_, open)) => {
                    self.spawn_io(conn, stream, *open);
                    self.speaker.connected(now, conn, local);
                }
                None => drop(stream),
            },
            Ev::ConnectFailed { conn, why } => {
                if self.connecting.remove(&conn).is_some() {
                    self.speaker.connect_failed(now, conn, &why);
                }
            }
            Ev::Closed { conn } => {
                if let Some(l) = self.live.remove(&conn) {
                    l.reader_task.abort();
                    l.writer_task.abort();
                    self.order.retain(|c| *c != conn);
                    self.speaker.closed(now, conn);
                }
            }
        }
    }

    fn spawn_io(&mut self, conn: ConnId, stream: TcpStream, open: Open) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let (itx, irx) = mpsc::channel(CONN_QUEUE);
        let reader_task = tokio::spawn(reader(
            rd,
            ConnDecoder::new(open),
            itx,
            Arc::clone(&self.ready),
        ));
        let writer_task = tokio::spawn(writer(wr, conn, wrx, self.ev_tx.clone()));
        self.live.insert(
            conn,
            Live {
                writer: wtx,
                inbound: irx,
                writer_task,
                reader_task,
            },
        );
        self.order.push_back(conn);
    }

    fn dispatch(&mut self) {
        if let Some(tx) = &self.fib {
            let changes = self.speaker.take_fib_changes();
            if !changes.is_empty() && tx.send(changes).is_err() {
                warn!("the FIB consumer is gone; best-route changes are no longer installed");
                self.fib = None;
            }
        }
        while let Some(o) = self.speaker.poll_output() {
            match o {
                Output::Connect {
                    conn,
                    peer,
                    transport,
                    local_open,
                } => {
                    let tx = self.ev_tx.clone();
                    let target = SocketAddr::new(peer, transport.port);
                    let task = tokio::spawn(async move {
                        let ev = match connect(target, &transport).await {
                            Ok((stream, local)) => Ev::Connected {
                                conn,
                                stream,
                                local,
                            },
                            Err(why) => Ev::ConnectFailed { conn, why },
                        };
                        let _ = tx.send(ev).await;
                    });
                    self.connecting.insert(conn, (task, local_open));
                }
                Output::Send { conn, bytes } => {
                    if let Some(l) = self.live.get(&conn) {
                        let _ = l.writer.send(Write::Bytes(bytes));
                    }
                }
                Output::Close { conn } => {
                    if let Some((task, _)) = self.connecting.remove(&conn) {
                        task.abort();
                    }
                    if let Some(l) = self.live.remove(&conn) {
                        l.reader_task.abort();
                        let _ = l.writer.send(Write::Close);
                        self.closing.push(l.writer_task);
                        self.order.retain(|c| *c != conn);
                    }
                }
            }
        }
        self.closing.retain(|t| !t.is_finished());
    }

    async fn shutdown(&mut self, message: &str) {
        info!("closing every session: {message}");
        self.speaker.shutdown(Instant::now(), message);
        self.dispatch();
        for (_, l) in self.live.drain() {
            l.reader_task.abort();
            let _ = l.writer.send(Write::Close);
            self.closing.push(l.writer_task);
        }
        for (_, (t, _)) in self.connecting.drain() {
            t.abort();
        }
        let all = futures_join(std::mem::take(&mut self.closing));
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, all).await;
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn connect(
    target: SocketAddr,
    t: &crate::speaker::Transport,
) -> Result<(TcpStream, SocketAddr), String> {
    let key = t.password.as_deref().map(str::as_bytes);
    let sock = connecting_socket(target, t.source_address, key, t.ttl_security)
        .map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(target))
        .await
        .map_err(|_| {
            format!(
                "no answer from {target} within {} s",
                CONNECT_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("{target}: {e}"))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    Ok((stream, local))
}
