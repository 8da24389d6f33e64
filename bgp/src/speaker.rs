//! The pure multi-peer speaker core: per-peer FSMs ([`crate::fsm`]), the
//! RIB ([`crate::rib`]), and the joins between them. No tokio, no clock,
//! no sockets: the runtime feeds it events with `now` and carries out the
//! [`Output`]s it queues.
//!
//! ```text
//!  runtime                          Speaker                                  runtime
//!  ───────                          ───────                                  ───────
//!  set_config(cfg, peers) ─►  diff peers: add / stop+remove / reset / re-filter
//!  accepted(local, remote) ─► known peer? ─► Fsm (TcpConnectionConfirmed)   ─► Output::Send / Close
//!  connected / connect_failed ─► Fsm (Tcp_CR_Acked / TcpConnectionFails)      Output::Connect
//!  received(conn, msg) ─────► Fsm ─► UpdateReceived ─► Rib::apply_update
//!                                 ─► RouteRefreshReceived ─► re-dump Adj-RIB-Out
//!                                 ─► Established / SessionDown ─► Rib peer_up / peer_down / mark_stale
//!  handle_timeout(now) ─────► Fsm timers, GR stale purge, restart deferral
//!  (after every input) flush: Rib::take_updates ─► codec packer ─► Output::Send
//!                             Rib::take_fib_changes ─► take_fib_changes()
//! ```
//!
//! Connections are named by [`ConnId`]s the speaker hands out (for an
//! outbound attempt in [`Output::Connect`], for an inbound one as the return
//! value of [`Speaker::accepted`]). Bytes are decoded outside the core, by a
//! [`ConnDecoder`] per connection (it switches to the negotiated codec
//! context after the peer's OPEN, as the FSM does), so a runtime can decode
//! in its reader tasks.
//!
//! # Graceful restart (RFC 4724)
//!
//! - Receiver: when a session with a graceful-restart peer drops, the FSM
//!   says how long to keep its routes; they are marked stale and purged on
//!   the peer's End-of-RIB (all negotiated families) or when that time runs
//!   out.
//! - Restarting speaker: [`SpeakerConfig::restarting`] (the runtime found
//!   the restart marker) sets the R and F bits, and our advertisements wait
//!   until every Established peer sent its End-of-RIB, at most
//!   [`SpeakerConfig::restart_defer`]; peers that are not Established and
//!   have already failed (or never tried) do not hold it up. On a first
//!   start nothing waits.
//!
//! # Status counters
//!
//! `prefixes_accepted` is the peer's Adj-RIB-In after import policy (what
//! the RIB stores); `prefixes_received` adds the routes the import policy
//! or the receipt checks rejected in this session (counted per UPDATE, so a
//! rejected route announced twice counts twice: an approximation, not a
//! table).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::fsm::{
    self, Action, ConnId, DownReason, Event, Fsm, GracefulRestartConfig, Jitter, Negotiated,
    PeerAs, State,
};
use crate::rib::{
    self, FibChange, Filter, MaxPrefix, MaxPrefixAction, PathAttrs, PeerId, Rib, RibConfig, Session,
};
use crate::wire::notification::CeaseSubcode;
use crate::wire::{
    frame, Asn, DecodeError, Family, Frame, HoldTime, Message, Notification, Open, Prefix,
    RouteRefresh, RouteRefreshSubtype, RouterId, SessionContext, Update,
};

/// Speaker-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeakerConfig {
    /// Our AS.
    pub asn: Asn,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Route reflector cluster id (RFC 4456); `None` = not a reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Most paths in an ECMP set.
    pub max_paths: usize,
    /// We are restarting gracefully (RFC 4724 §4.1): set R and F bits and
    /// defer our advertisements until peers' End-of-RIB.
    pub restarting: bool,
    /// Upper bound of that deferral.
    pub restart_defer: Duration,
    /// Prefixes we originate.
    pub originate: Vec<Originate>,
    /// Keep the FIB change stream for [`Speaker::take_fib_changes`].
    pub track_fib: bool,
}

impl SpeakerConfig {
    /// Defaults around an AS and router id.
    pub fn new(asn: Asn, router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            asn,
            router_id,
            cluster_id: None,
            max_paths: 8,
            restarting: false,
            restart_defer: Duration::from_secs(120),
            originate: Vec::new(),
            track_fib: false,
        }
    }

    fn same_identity(&self, other: &SpeakerConfig) -> bool {
        self.asn == other.asn
            && self.router_id == other.router_id
            && self.cluster_id == other.cluster_id
            && self.max_paths == other.max_paths
    }
}

/// A locally originated prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Originate {
    /// The prefix.
    pub prefix: Prefix,
    /// Its attributes (start from [`PathAttrs::local`]).
    pub attrs: PathAttrs,
}

/// How to reach a peer: what the runtime needs and the core only compares.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Transport {
    /// The peer's TCP port (179).
    pub port: u16,
    /// TCP-MD5 key (RFC 2385).
    pub password: Option<String>,
    /// GTSM (RFC 5082): maximum hops; `None` = off.
    pub ttl_security: Option<u8>,
    /// Bind outbound connections to this address.
    pub source_address: Option<IpAddr>,
}

/// One configured peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSettings {
    /// For logs and status (`"tor-a"`); may be empty.
    pub name: String,
    /// The peer's address; one peer per address.
    pub address: IpAddr,
    /// The peer's AS.
    pub asn: Asn,
    /// Hold time we offer (0 or >= 3).
    pub hold_time: u16,
    /// Keepalive interval; `None` = hold time / 3.
    pub keepalive: Option<u16>,
    /// Never connect out.
    pub passive: bool,
    /// Families offered.
    pub families: Vec<Family>,
    /// Graceful restart with this restart time (s); `None` = off.
    pub graceful_restart: Option<u16>,
    /// ADD-PATH receive for every offered family.
    pub add_path_receive: bool,
    /// ADD-PATH send for every offered family.
    pub add_path_send: bool,
    /// The peer is our route-reflector client.
    pub rr_client: bool,
    /// iBGP: next hop self for eBGP-learned routes.
    pub next_hop_self: bool,
    /// Import filter.
    pub import: Filter,
    /// Export filter.
    pub export: Filter,
    /// Max-prefix limit.
    pub max_prefix: Option<MaxPrefix>,
    /// Socket-level settings.
    pub transport: Transport,
    /// ConnectRetryTime.
    pub connect_retry: Duration,
    /// First wait before an automatic restart.
    pub idle_hold_initial: Duration,
}

impl PeerSettings {
    /// Defaults: both unicast families, hold 90 s, active, no GR, accept
    /// and export everything.
    pub fn new(address: IpAddr, asn: Asn) -> Self {
        PeerSettings {
            name: String::new(),
            address,
            asn,
            hold_time: 90,
            keepalive: None,
            passive: false,
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            graceful_restart: None,
            add_path_receive: false,
            add_path_send: false,
            rr_client: false,
            next_hop_self: false,
            import: Filter::accept_all(),
            export: Filter::accept_all(),
            max_prefix: None,
            transport: Transport {
                port: 179,
                ..Transport::default()
            },
            connect_retry: fsm::config::DEFAULT_CONNECT_RETRY,
            idle_hold_initial: fsm::config::DEFAULT_IDLE_HOLD_INITIAL,
        }
    }

    /// `"BGPPeer tor-a (192.0.2.1)"`-like label for logs.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            self.address.to_string()
        } else {
            format!("{} ({})", self.name, self.address)
        }
    }

    fn fsm_config(&self, speaker: &SpeakerConfig) -> fsm::PeerConfig {
        let mut c = fsm::PeerConfig::new(speaker.asn, self.asn, RouterId(speaker.router_id));
        c.description = self.label();
        c.peer_as = PeerAs::Exact(self.asn);
        c.hold_time = HoldTime(self.hold_time);
        c.keepalive = self.keepalive;
        c.passive = self.passive;
        c.families = self.families.clone();
        c.connect_retry = self.connect_retry;
        c.idle_hold_initial = self.idle_hold_initial;
        c.enhanced_route_refresh = true;
        c.graceful_restart = self.graceful_restart.map(|t| GracefulRestartConfig {
            restart_time: t.min(4095),
            restarting: speaker.restarting,
            forwarding_preserved: if speaker.restarting {
                self.families.clone()
            } else {
                Vec::new()
            },
            notification: false,
        });
        if self.add_path_receive {
            c.add_path_receive = self.families.clone();
        }
        if self.add_path_send {
            c.add_path_send = self.families.clone();
        }
        c
    }

    fn rib_config(&self) -> rib::PeerConfig {
        let mut c = rib::PeerConfig::new(self.address, self.asn);
        c.rr_client = self.rr_client;
        c.next_hop_self = self.next_hop_self;
        c.import = self.import.clone();
        c.export = self.export.clone();
        c.max_prefix = self.max_prefix;
        c
    }
}

/// Something for the runtime to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a TCP connection to `peer` (port and socket options in
    /// `transport`); report with [`Speaker::connected`] or
    /// [`Speaker::connect_failed`]. Decode what it receives with
    /// `ConnDecoder::new(local_open)`.
    Connect {
        /// The new connection's id.
        conn: ConnId,
        /// The peer's address.
        peer: IpAddr,
        /// Port and socket options.
        transport: Transport,
        /// Our OPEN on this session (for the connection's decoder).
        local_open: Box<Open>,
    },
    /// Write these bytes (whole BGP messages) on `conn`.
    Send {
        /// Where.
        conn: ConnId,
        /// What.
        bytes: Vec<u8>,
    },
    /// Close `conn` after writing everything queued before this. An
    /// outbound attempt still connecting is abandoned.
    Close {
        /// Which.
        conn: ConnId,
    },
}

/// A peer's line in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// Configured name.
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// Configured AS.
    pub asn: u32,
    /// RFC 4271 state.
    pub state: State,
    /// Time in the current state.
    pub since: Duration,
    /// Routes received in this session (accepted + rejected).
    pub prefixes_received: u64,
    /// Routes stored (Adj-RIB-In after policy).
    pub prefixes_accepted: u64,
    /// Prefixes in the Adj-RIB-Out.
    pub prefixes_advertised: u64,
    /// Why the last session ended or failed, in words; empty if none.
    pub last_error: String,
    /// How many times the session reached Established.
    pub established_count: u64,
    /// Routes kept stale for a restarting peer.
    pub stale: bool,
    /// The current session has received End-of-RIB (RFC 4724 §2) for
    /// every negotiated family: the peer's initial table is complete.
    pub end_of_rib: bool,
}

/// One path of a prefix, for `tortie status --routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSnapshot {
    /// Source peer address, `None` for a local route.
    pub peer: Option<IpAddr>,
    /// The path's attributes.
    pub attrs: PathAttrs,
    /// In the selected (best/ECMP) set.
    pub best: bool,
    /// Graceful-restart stale.
    pub stale: bool,
}

/// A prefix and its paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSnapshot {
    /// The prefix.
    pub prefix: Prefix,
    /// Its paths, selected first.
    pub paths: Vec<PathSnapshot>,
}

/// Decodes one connection's byte stream: the pre-OPEN context until the
/// peer's OPEN, the negotiated one after (the same context the FSM
/// negotiates, [`SessionContext::negotiate`]).
#[derive(Debug, Clone)]
pub struct ConnDecoder {
    local_open: Open,
    ctx: SessionContext,
    failed: bool,
}

impl ConnDecoder {
    /// A decoder for a connection on which we send `local_open`.
    pub fn new(local_open: Open) -> Self {
        ConnDecoder {
            local_open,
            ctx: SessionContext::default(),
            failed: false,
        }
    }

    /// Decodes the next whole message at the start of `buf`: `None` when
    /// more bytes are needed (or after an error: the stream is unusable
    /// then), else the message or error and how many octets it used.
    pub fn next_message(&mut self, buf: &[u8]) -> Option<(Result<Message, DecodeError>, usize)> {
        if self.failed {
            return None;
        }
        match frame(buf, &self.ctx) {
            Ok(Frame::Incomplete { .. }) => None,
            Ok(Frame::Complete { length, .. }) => {
                let bytes = buf.get(..length)?;
                let m = crate::wire::decode_message(bytes, &self.ctx);
                match &m {
                    Ok(Message::Open(open)) => {
                        self.ctx = SessionContext::negotiate(&self.local_open, open);
                    }
                    Err(_) => self.failed = true,
                    Ok(_) => {}
                }
                Some((m, length))
            }
            Err(e) => {
                self.failed = true;
                Some((Err(e), buf.len()))
            }
        }
    }
}

/// Supplies a jitter source per FSM (random in the runtime, none in tests).
pub type JitterFactory = Box<dyn FnMut() -> Box<dyn Jitter> + Send>;

#[derive(Debug)]
struct SessionInfo {
    conn: ConnId,
    negotiated: Negotiated,
    rib_session: Session,
    eor_received: Vec<Family>,
    eor_sent: bool,
}

#[derive(Debug)]
struct Peer {
    settings: PeerSettings,
    fsm: Fsm,
    rib_id: PeerId,
    since: Instant,
    session: Option<SessionInfo>,
    connecting: Option<ConnId>,
    stale_until: Option<Instant>,
    last_error: String,
    rejected: u64,
    established_count: u64,
}

#[derive(Debug, Clone, Copy)]
struct ConnInfo {
    peer: IpAddr,
    local: Option<SocketAddr>,
}

/// The speaker core. See the module docs.
pub struct Speaker {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: BTreeMap<IpAddr, Peer>,
    conns: HashMap<ConnId, ConnInfo>,
    next_conn: u64,
    out: VecDeque<Output>,
    fib: Vec<FibChange>,
    defer_until: Option<Instant>,
    jitter: JitterFactory,
    stopping: bool,
}

impl fmt::Debug for Speaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Speaker")
            .field("cfg", &self.cfg)
            .field("peers", &self.peers.len())
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn rib_config(cfg: &SpeakerConfig) -> RibConfig {
    let mut r = RibConfig::new(cfg.asn, cfg.router_id);
    r.cluster_id = cfg.cluster_id;
    r.max_paths = cfg.max_paths.max(1);
    // No FIB queue unless someone drains it: `--routes` reads the RIB's
    // own table, so a route reflector or a bench pays nothing per change.
    r.track_fib = cfg.track_fib;
    r
}

impl Speaker {
    /// A speaker with no peers yet; add them with [`Speaker::set_config`].
    pub fn new(cfg: SpeakerConfig, now: Instant, jitter: JitterFactory) -> Self {
        let mut s = Speaker {
            rib: Rib::new(rib_config(&cfg)),
            defer_until: cfg.restarting.then(|| now + cfg.restart_defer),
            cfg: SpeakerConfig {
                originate: Vec::new(),
                ..cfg.clone()
            },
            peers: BTreeMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            out: VecDeque::new(),
            fib: Vec::new(),
            jitter,
            stopping: false,
        };
        if s.defer_until.is_some() {
            info!("graceful restart: deferring our advertisements until peers send End-of-RIB (at most {} s)", cfg.restart_defer.as_secs());
        }
        s.set_originate(&cfg.originate);
        s.cfg.originate = cfg.originate;
        s.flush(now);
        s
    }

    /// The speaker settings.
    pub fn config(&self) -> &SpeakerConfig {
        &self.cfg
    }

    /// The RIB (read-only).
    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// Applies a new configuration: peers are matched by address; an
    /// unchanged peer keeps its session, a peer whose session parameters
    /// changed is reset, a peer whose filters or RR/next-hop options
    /// changed keeps its session and gets its exports recomputed. A change
    /// of AS, router id, cluster id or ECMP width resets every session.
    pub fn set_config(&mut self, now: Instant, cfg: SpeakerConfig, peers: Vec<PeerSettings>) {
        if !self.cfg.same_identity(&cfg) {
            info!("AS, router id, cluster id or ECMP width changed: resetting every session");
            let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
            for a in addrs {
                self.remove_peer(now, a, "configuration changed (speaker identity)");
            }
            self.rib = Rib::new(rib_config(&cfg));
            self.fib.clear();
            self.cfg.originate.clear();
        }
        if cfg.track_fib != self.cfg.track_fib {
            self.rib.set_track_fib(cfg.track_fib);
            self.fib.clear();
        }
        let originate = cfg.originate.clone();
        self.cfg = SpeakerConfig {
            originate: std::mem::take(&mut self.cfg.originate),
            ..cfg
        };
        self.set_originate(&originate);
        self.cfg.originate = originate;

        let wanted: BTreeMap<IpAddr, PeerSettings> =
            peers.into_iter().map(|p| (p.address, p)).collect();
        let gone: Vec<IpAddr> = self
            .peers
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for a in gone {
            self.remove_peer(now, a, "peer removed from the configuration");
        }
        for (addr, settings) in wanted {
            let Some(p) = self.peers.get_mut(&addr) else {
                self.add_peer(now, settings);
                continue;
            };
            if p.settings == settings {
                continue;
            }
            let session_change = settings.fsm_config(&self.cfg) != *p.fsm.config()
                || settings.transport != p.settings.transport;
            if session_change {
                info!(peer = %addr, "session settings changed: resetting the session");
                self.remove_peer(now, addr, "configuration changed");
                self.add_peer(now, settings);
            } else {
                info!(peer = %addr, "filters or route options changed: keeping the session, recomputing exports");
                let import_changed = p.settings.import != settings.import;
                let _ = self.rib.set_peer_config(p.rib_id, settings.rib_config());
                p.settings = settings;
                // Stored routes were filtered with the old import policy;
                // the RIB keeps no unfiltered copy, so ask the peer to send
                // them again (RFC 2918) rather than reset the session.
                if import_changed {
                    let families = p
                        .session
                        .as_ref()
                        .map(|s| s.negotiated.families.clone())
                        .unwrap_or_default();
                    for f in families {
                        self.request_refresh(now, addr, f);
                    }
                }
            }
        }
        self.flush(now);
    }

    fn set_originate(&mut self, wanted: &[Originate]) {
        let old: HashMap<Prefix, PathAttrs> = self
            .cfg
            .originate
            .iter()
            .map(|o| (o.prefix, o.attrs.clone()))
            .collect();
        let new: HashMap<Prefix, &PathAttrs> =
            wanted.iter().map(|o| (o.prefix, &o.attrs)).collect();
        for p in old.keys() {
            if !new.contains_key(p) {
                self.rib.withdraw_local(*p);
            }
        }
        for (p, a) in new {
            if old.get(&p) != Some(a) {
                self.rib.originate(p, a.clone());
            }
        }
    }

    /// Originates `prefix` (outside the configured list, e.g. a pod CIDR).
    pub fn announce(&mut self, now: Instant, prefix: Prefix, attrs: PathAttrs) {
        self.rib.originate(prefix, attrs);
        self.flush(now);
    }

    /// Stops originating `prefix`.
    pub fn withdraw(&mut self, now: Instant, prefix: Prefix) {
        self.rib.withdraw_local(prefix);
        self.flush(now);
    }

    /// Originates many prefixes with one call (one flush).
    pub fn announce_many(&mut self, now: Instant, routes: impl IntoIterator<Item = Originate>) {
        for o in routes {
            self.rib.originate(o.prefix, o.attrs);
        }
        self.flush(now);
    }

    fn add_peer(&mut self, now: Instant, settings: PeerSettings) {
        let fsm_cfg = settings.fsm_config(&self.cfg);
        let mut fsm = Fsm::new(fsm_cfg, (self.jitter)());
        let rib_id = self.rib.add_peer(settings.rib_config());
        let addr = settings.address;
        info!(peer = %addr, asn = settings.asn.0, "peer {} added ({})", settings.label(), settings.asn);
        let actions = if self.stopping {
            Vec::new()
        } else {
            fsm.handle(now, Event::ManualStart)
        };
        self.peers.insert(
            addr,
            Peer {
                settings,
                fsm,
                rib_id,
                since: now,
                session: None,
                connecting: None,
                stale_until: None,
                last_error: String::new(),
                rejected: 0,
                established_count: 0,
            },
        );
        self.apply(now, addr, actions);
    }

    fn remove_peer(&mut self, now: Instant, addr: IpAddr, why: &str) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let actions = p.fsm.handle(
            now,
            Event::ManualStop {
                message: Some(why.to_string()),
            },
        );
        self.apply(now, addr, actions);
        if let Some(p) = self.peers.remove(&addr) {
            if let Some(c) = p.connecting {
                self.out.push_back(Output::Close { conn: c });
            }
            let _ = self.rib.remove_peer(p.rib_id);
            info!(peer = %addr, "peer {} removed: {why}", p.settings.label());
        }
        self.conns.retain(|_, c| c.peer != addr);
    }

    /// Stops every session with Cease / Administrative Shutdown carrying
    /// `message`; no automatic restart follows.
    pub fn shutdown(&mut self, now: Instant, message: &str) {
        self.stopping = true;
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for a in addrs {
            if let Some(p) = self.peers.get_mut(&a) {
                let actions = p.fsm.handle(
                    now,
                    Event::ManualStop {
                        message: Some(message.to_string()),
                    },
                );
                if let Some(c) = p.connecting.take() {
                    self.out.push_back(Output::Close { conn: c });
                }
                self.apply(now, a, actions);
            }
        }
        self.flush(now);
    }

    /// Asks `peer` to send its routes of `family` again (RFC 2918), e.g.
    /// after an import filter changed.
    pub fn request_refresh(&mut self, now: Instant, peer: IpAddr, family: Family) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if !p
            .session
            .as_ref()
            .is_some_and(|s| s.negotiated.route_refresh)
        {
            if p.session.is_some() {
                warn!(peer = %peer, "{} does not support route refresh: the new import policy applies to routes it sends from now on", p.settings.label());
            }
            return;
        }
        info!(peer = %peer, "asking {} to send its {family} routes again (route refresh)", p.settings.label());
        if let Ok(actions) = p.fsm.send_route_refresh(now, RouteRefresh::request(family)) {
            self.apply(now, peer, actions);
        }
    }

    /// Whether every session is down (after [`Speaker::shutdown`]).
    pub fn is_quiet(&self) -> bool {
        self.conns.is_empty()
    }

    // ----- connection events ---------------------------------------------

    /// A connection arrived from `remote` on our `local` address. `None`:
    /// not a configured peer (close it without sending a byte). Otherwise
    /// the connection's id and our OPEN for its decoder.
    pub fn accepted(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<(ConnId, Open)> {
        let addr = canonical(remote.ip());
        if self.stopping {
            return None;
        }
        let p = self.peers.get_mut(&addr)?;
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            conn,
            ConnInfo {
                peer: addr,
                local: Some(local),
            },
        );
        let open = p.fsm.local_open().clone();
        debug!(peer = %addr, %conn, "accepted a connection from {remote}");
        let actions = p.fsm.handle(now, Event::TcpConnectionConfirmed { conn });
        self.apply(now, addr, actions);
        self.flush(now);
        Some((conn, open))
    }

    /// The outbound connection `conn` is up, from our `local` address.
    pub fn connected(&mut self, now: Instant, conn: ConnId, local: SocketAddr) {
        let Some(info) = self.conns.get_mut(&conn) else {
            // Abandoned meanwhile: the runtime closes it.
            self.out.push_back(Output::Close { conn });
            return;
        };
        info.local = Some(local);
        let addr = info.peer;
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if p.connecting == Some(conn) {
            p.connecting = None;
        }
        let actions = p.fsm.handle(now, Event::TcpCrAcked { conn });
        self.apply(now, addr, actions);
        self.flush(now);
    }

    /// The outbound attempt `conn` failed.
    pub fn connect_failed(&mut self, now: Instant, conn: ConnId, why: &str) {
        let Some(info) = self.conns.remove(&conn) else {
            return;
        };
        let addr = info.peer;
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        debug!(peer = %addr, "connect failed: {why}");
        if p.connecting == Some(conn) {
            p.connecting = None;
        }
        if p.last_error.is_empty() || p.session.is_none() {
            p.last_error = format!("could not connect: {why}");
        }
        let actions = p.fsm.handle(now, Event::TcpConnectionFails { conn });
        self.apply(now, addr, actions);
        self.flush(now);
    }

    /// `conn` closed (EOF, reset, write error).
    pub fn closed(&mut self, now: Instant, conn: ConnId) {
        let Some(info) = self.conns.remove(&conn) else {
            return;
        };
        let addr = info.peer;
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let actions = p.fsm.handle(now, Event::TcpConnectionFails { conn });
        self.apply(now, addr, actions);
        self.flush(now);
    }

    /// A message (or a decode error) arrived on `conn`.
    pub fn received(&mut self, now: Instant, conn: ConnId, msg: Result<Message, DecodeError>) {
        self.received_one(now, conn, msg);
        self.flush(now);
    }

    /// Several messages from one connection, one flush at the end (how
    /// the runtime feeds a read's worth).
    pub fn received_batch(
        &mut self,
        now: Instant,
        conn: ConnId,
        msgs: impl IntoIterator<Item = Result<Message, DecodeError>>,
    ) {
        for m in msgs {
            self.received_one(now, conn, m);
        }
        self.flush(now);
    }

    fn received_one(&mut self, now: Instant, conn: ConnId, msg: Result<Message, DecodeError>) {
        let Some(info) = self.conns.get(&conn) else {
            return;
        };
        let addr = info.peer;
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let event = match msg {
            Ok(m) => {
                if let Message::Notification(n) = &m {
                    warn!(peer = %addr, "received NOTIFICATION {n} from {}", p.settings.label());
                }
                Event::received(conn, m)
            }
            Err(e) => Event::decode_failed(conn, e),
        };
        let actions = p.fsm.handle(now, event);
        self.apply(now, addr, actions);
    }

    // ----- timers ----------------------------------------------------------

    /// When [`Speaker::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|p| [p.fsm.poll_timeout(), p.stale_until])
            .chain([self.defer_until])
            .flatten()
            .min()
    }

    /// Fires everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for a in addrs {
            let Some(p) = self.peers.get_mut(&a) else {
                continue;
            };
            if p.fsm.poll_timeout().is_some_and(|t| t <= now) {
                let actions = p.fsm.handle_timeout(now);
                self.apply(now, a, actions);
            }
            let Some(p) = self.peers.get_mut(&a) else {
                continue;
            };
            if p.stale_until.is_some_and(|t| t <= now) {
                p.stale_until = None;
                let s = self.rib.purge_stale(p.rib_id).unwrap_or_default();
                warn!(peer = %a, "graceful restart: {} did not finish in time, removed {} stale routes", p.settings.label(), s.removed);
            }
        }
        if self.defer_until.is_some_and(|t| t <= now) {
            info!("graceful restart: deferral bound reached, advertising routes");
            self.defer_until = None;
        }
        self.flush(now);
    }

    // ----- outputs ---------------------------------------------------------

    /// The next thing for the runtime to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Best-route changes since the last call (only with
    /// [`SpeakerConfig::track_fib`]).
    pub fn take_fib_changes(&mut self) -> Vec<FibChange> {
        std::mem::take(&mut self.fib)
    }

    /// The peers' status lines.
    pub fn snapshot(&self, now: Instant) -> Vec<PeerSnapshot> {
        self.peers
            .values()
            .map(|p| {
                let accepted = u64::from(self.rib.prefixes_received(p.rib_id));
                let last_error = if !p.last_error.is_empty() {
                    p.last_error.clone()
                } else {
                    p.fsm
                        .last_error()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                };
                PeerSnapshot {
                    name: p.settings.name.clone(),
                    address: p.settings.address,
                    asn: p.settings.asn.0,
                    state: p.fsm.state(),
                    since: now.saturating_duration_since(p.since),
                    prefixes_received: accepted + p.rejected,
                    prefixes_accepted: accepted,
                    prefixes_advertised: self.rib.prefixes_advertised(p.rib_id) as u64,
                    last_error,
                    established_count: p.established_count,
                    stale: p.stale_until.is_some(),
                    end_of_rib: p.session.as_ref().is_some_and(|s| {
                        s.negotiated
                            .families
                            .iter()
                            .all(|f| s.eor_received.contains(f))
                    }),
                }
            })
            .collect()
    }

    /// Every prefix with its paths, sorted by prefix.
    pub fn routes(&self) -> Vec<RouteSnapshot> {
        let by_id: HashMap<PeerId, IpAddr> = self
            .peers
            .values()
            .map(|p| (p.rib_id, p.settings.address))
            .collect();
        let mut prefixes: Vec<Prefix> = self.rib.prefixes();
        prefixes.sort_unstable();
        prefixes
            .into_iter()
            .map(|prefix| {
                let selected = self.rib.ecmp(prefix);
                let paths = self
                    .rib
                    .paths(prefix)
                    .into_iter()
                    .map(|r| PathSnapshot {
                        peer: by_id.get(&r.peer).copied(),
                        best: selected
                            .iter()
                            .any(|s| s.peer == r.peer && s.path_id == r.path_id),
                        stale: r.stale,
                        attrs: (*r.attrs).clone(),
                    })
                    .collect();
                RouteSnapshot { prefix, paths }
            })
            .collect()
    }

    /// Whether our advertisements are held back (graceful restart).
    pub fn deferring(&self) -> bool {
        self.defer_until.is_some()
    }

    // ----- the joins -------------------------------------------------------

    fn encode_to(&mut self, addr: IpAddr, conn: ConnId, message: &Message) {
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        let ctx = p.fsm.context_for(conn);
        match message.encode(&ctx) {
            Ok(bytes) => self.out.push_back(Output::Send { conn, bytes }),
            Err(e) => {
                warn!(peer = %addr, "could not encode a {} message: {e}", message.message_type())
            }
        }
    }

    fn apply(&mut self, now: Instant, addr: IpAddr, actions: Vec<Action>) {
        for a in actions {
            self.apply_one(now, addr, a);
        }
    }

    fn apply_one(&mut self, now: Instant, addr: IpAddr, action: Action) {
        match action {
            Action::Connect => {
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                if let Some(old) = p.connecting.replace(conn) {
                    self.conns.remove(&old);
                    self.out.push_back(Output::Close { conn: old });
                }
                self.conns.insert(
                    conn,
                    ConnInfo {
                        peer: addr,
                        local: None,
                    },
                );
                self.out.push_back(Output::Connect {
                    conn,
                    peer: addr,
                    transport: p.settings.transport.clone(),
                    local_open: Box::new(p.fsm.local_open().clone()),
                });
            }
            Action::AbortConnect => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    if let Some(c) = p.connecting.take() {
                        self.conns.remove(&c);
                        self.out.push_back(Output::Close { conn: c });
                    }
                }
            }
            Action::Send { conn, message } => {
                if let Message::Notification(n) = &message {
                    warn!(peer = %addr, "sent NOTIFICATION {n}");
                }
                self.encode_to(addr, conn, &message);
            }
            Action::Close { conn, notification } => {
                if let Some(n) = notification {
                    warn!(peer = %addr, "sent NOTIFICATION {n}, closing the connection");
                    self.encode_to(addr, conn, &Message::Notification(n));
                }
                self.conns.remove(&conn);
                if let Some(p) = self.peers.get_mut(&addr) {
                    if p.connecting == Some(conn) {
                        p.connecting = None;
                    }
                }
                self.out.push_back(Output::Close { conn });
            }
            Action::StateChanged { from, to, reason } => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.since = now;
                    info!(peer = %addr, from = %from, to = %to, "{}: {from} -> {to}: {reason}", p.settings.label());
                }
            }
            Action::Established { conn, negotiated } => {
                self.established(now, addr, conn, *negotiated)
            }
            Action::SessionDown {
                reason,
                retain_routes_for,
            } => self.session_down(now, addr, reason, retain_routes_for),
            Action::UpdateReceived { update } => self.import(now, addr, *update),
            Action::RouteRefreshReceived { refresh } => self.route_refresh(now, addr, refresh),
        }
    }

    fn established(&mut self, _now: Instant, addr: IpAddr, conn: ConnId, negotiated: Negotiated) {
        let local = self.conns.get(&conn).and_then(|c| c.local);
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let (local_v4, local_v6) = match local.map(|l| canonical(l.ip())) {
            Some(IpAddr::V4(a)) => (Some(a), None),
            Some(IpAddr::V6(a)) => (None, Some(a)),
            None => (None, None),
        };
        let rib_session = Session {
            router_id: negotiated.peer_id.0,
            local_v4,
            // IPv6 routes on an IPv4 session: the IPv4-mapped address is
            // the only next hop we know (what GoBGP sends too).
            local_v6: local_v6.or_else(|| local_v4.map(|a| a.to_ipv6_mapped())),
        };
        info!(peer = %addr, "{}: session established: {negotiated}", p.settings.label());
        p.established_count += 1;
        p.rejected = 0;
        p.last_error.clear();
        // RFC 4724 §4.2: a peer that comes back without the capability
        // will not refresh its stale routes.
        if p.stale_until.is_some() && negotiated.peer_graceful_restart.is_none() {
            p.stale_until = None;
            let s = self.rib.purge_stale(p.rib_id).unwrap_or_default();
            info!(peer = %addr, "{} came back without graceful restart: removed {} stale routes", p.settings.label(), s.removed);
        }
        let _ = self.rib.peer_up(p.rib_id, rib_session);
        p.session = Some(SessionInfo {
            conn,
            negotiated,
            rib_session,
            eor_received: Vec::new(),
            eor_sent: false,
        });
    }

    fn session_down(
        &mut self,
        now: Instant,
        addr: IpAddr,
        reason: DownReason,
        retain: Option<Duration>,
    ) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        p.session = None;
        p.last_error = reason.to_string();
        warn!(peer = %addr, "{}: session down: {reason}", p.settings.label());
        match retain {
            Some(d) if !self.stopping => {
                let n = self.rib.mark_stale(p.rib_id).unwrap_or(0);
                p.stale_until = Some(now + d);
                info!(peer = %addr, "graceful restart: keeping {n} routes of {} as stale for at most {} s", p.settings.label(), d.as_secs());
            }
            _ => {
                let s = self.rib.peer_down(p.rib_id).unwrap_or_default();
                p.stale_until = None;
                debug!(peer = %addr, "removed {} routes", s.removed);
            }
        }
    }

    fn import(&mut self, now: Instant, addr: IpAddr, mut update: Update) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(session) = p.session.as_mut() else {
            return;
        };
        if !session.negotiated.context.four_octet_as {
            update.attributes.reconcile_as4();
        }
        if let Some(f) = update.end_of_rib_family() {
            if !session.eor_received.contains(&f) {
                session.eor_received.push(f);
            }
            debug!(peer = %addr, "End-of-RIB for {f}");
            let all = session
                .negotiated
                .families
                .iter()
                .all(|f| session.eor_received.contains(f));
            if all && p.stale_until.is_some() {
                p.stale_until = None;
                let s = self.rib.purge_stale(p.rib_id).unwrap_or_default();
                info!(peer = %addr, "graceful restart of {} finished: removed {} routes it did not send again", p.settings.label(), s.removed);
            }
            return;
        }
        if let Some(fault) = &update.treat_as_withdraw {
            warn!(peer = %addr, "malformed UPDATE from {} treated as withdraw (RFC 7606): {fault}", p.settings.label());
        }
        for d in &update.discarded {
            info!(peer = %addr, "discarded a malformed attribute from {} (RFC 7606): {d}", p.settings.label());
        }
        let Ok(outcome) = self.rib.apply_update(p.rib_id, &update) else {
            return;
        };
        p.rejected += u64::from(outcome.rejected);
        if let Some(r) = outcome.dropped {
            debug!(peer = %addr, "UPDATE dropped: {r:?}");
        }
        if let Some(mp) = outcome.max_prefix {
            match (mp.action, mp.notification()) {
                (MaxPrefixAction::Cease, Some(n)) => {
                    warn!(peer = %addr, "{} sent {} routes, more than its limit of {}: closing the session", p.settings.label(), mp.count, mp.limit);
                    let actions = p.fsm.handle(now, Event::AutomaticStop { notification: n });
                    self.apply(now, addr, actions);
                }
                _ => {
                    warn!(peer = %addr, "{} sent {} routes, more than its limit of {} (warning only)", p.settings.label(), mp.count, mp.limit);
                }
            }
        }
    }

    fn route_refresh(&mut self, now: Instant, addr: IpAddr, refresh: RouteRefresh) {
        if refresh.subtype != RouteRefreshSubtype::Normal {
            // BoRR/EoRR from the peer: we do not track its re-advertisement
            // (stale marking per RFC 7313 §4), routes simply get replaced.
            debug!(peer = %addr, "route refresh marker {:?} for {}", refresh.subtype, refresh.family);
            return;
        }
        if self.defer_until.is_some() {
            return;
        }
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(s) = p.session.as_ref() else {
            return;
        };
        if !s.negotiated.families.contains(&refresh.family) {
            return;
        }
        let (conn, session, enhanced) =
            (s.conn, s.rib_session, s.negotiated.enhanced_route_refresh);
        info!(peer = %addr, "{} asked for a route refresh of {}", p.settings.label(), refresh.family);
        // Send anything already pending first, so the re-dump below is the
        // whole Adj-RIB-Out and nothing else.
        self.send_pending(addr);
        if enhanced {
            let m = Message::RouteRefresh(RouteRefresh {
                family: refresh.family,
                subtype: RouteRefreshSubtype::BeginningOfRefresh,
            });
            self.encode_to(addr, conn, &m);
        }
        if let Some(p) = self.peers.get_mut(&addr) {
            // Re-announcing the session re-queues the whole Loc-RIB export.
            let _ = self.rib.peer_up(p.rib_id, session);
        }
        self.send_pending(addr);
        if enhanced {
            let m = Message::RouteRefresh(RouteRefresh {
                family: refresh.family,
                subtype: RouteRefreshSubtype::EndOfRefresh,
            });
            self.encode_to(addr, conn, &m);
        }
        let _ = now;
    }

    /// Encodes what the RIB has queued for `addr` (Established only).
    fn send_pending(&mut self, addr: IpAddr) {
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        let Some(s) = p.session.as_ref() else {
            return;
        };
        let (conn, ctx) = (s.conn, s.negotiated.context);
        let families = s.negotiated.families.clone();
        let Ok(ups) = self.rib.take_updates(p.rib_id) else {
            return;
        };
        let mut bytes = Vec::new();
        for u in ups {
            // The RIB exports both families; only negotiated ones go out.
            let fam = match &u {
                rib::OutUpdate::Withdraw { family, .. }
                | rib::OutUpdate::Announce { family, .. } => *family,
            };
            if !families.contains(&fam) {
                continue;
            }
            if let Err(e) = u.encode(&ctx, &mut bytes) {
                warn!(peer = %addr, "could not encode an UPDATE: {e}");
            }
        }
        if !bytes.is_empty() {
            self.out.push_back(Output::Send { conn, bytes });
        }
    }

    /// After every input: FIB stream, restart deferral, UPDATEs and
    /// End-of-RIB.
    fn flush(&mut self, _now: Instant) {
        if self.cfg.track_fib {
            let changes = self.rib.take_fib_changes();
            if self.fib.is_empty() {
                self.fib = changes;
            } else {
                self.fib.extend(changes);
            }
        }
        if self.defer_until.is_some() && self.restart_wait_over() {
            info!("graceful restart: every established peer sent End-of-RIB, advertising routes");
            self.defer_until = None;
        }
        if self.defer_until.is_some() {
            return;
        }
        let addrs: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session.is_some())
            .map(|(a, _)| *a)
            .collect();
        for a in addrs {
            self.send_pending(a);
            let Some(p) = self.peers.get_mut(&a) else {
                continue;
            };
            let Some(s) = p.session.as_mut() else {
                continue;
            };
            if !s.eor_sent {
                s.eor_sent = true;
                let conn = s.conn;
                let fams = s.negotiated.families.clone();
                for f in fams {
                    self.encode_to(a, conn, &Message::Update(Update::end_of_rib(f)));
                }
            }
        }
    }

    /// RFC 4724 §4.1: the restarting speaker waits for End-of-RIB from
    /// its peers. Peers not Established that are not trying (Idle, or
    /// failed at least once) do not count.
    fn restart_wait_over(&self) -> bool {
        // No peers (yet): nobody to wait for and nobody to advertise to;
        // the bound ends the wait.
        !self.peers.is_empty()
            && self.peers.values().all(|p| match &p.session {
                Some(s) => s
                    .negotiated
                    .families
                    .iter()
                    .all(|f| s.eor_received.contains(f)),
                None => {
                    p.fsm.state() == State::Idle
                        || p.fsm.last_error().is_some()
                        || !p.last_error.is_empty()
                }
            })
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack listener) as IPv4.
pub fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The Cease NOTIFICATION for an administrative shutdown with a message.
pub fn admin_shutdown(message: &str) -> Notification {
    Notification::shutdown(CeaseSubcode::AdministrativeShutdown, message)
}

#[cfg(test)]
#[path = "speaker_tests.rs"]
mod tests;
