//! The FIB service: one thread that owns the netlink sockets and keeps
//! the kernel's routes (and tunnel devices) as the rest of tortie wants
//! them. `tortie bgp` and the node agent both run it through a
//! [`FibHandle`].
//!
//! ```text
//!  speaker ── Vec<FibChange> ──┐                       ┌─► RouteSocket (routes, pipelined)
//!  FibHandle ── Command ───────┼─► FIB thread ─ plan ──┤
//!  link watcher ── wake-up ────┘   (Composer +         └─► LinkSocket (tunnels, FDB, neighbours)
//!                                   Reconciler)
//! ```
//!
//! Inputs: best-route changes from the speaker (a std channel, see
//! `tortie_bgp::runtime::start_with_fib`); commands from the handle (pools,
//! underlay, local routes, "synced"); link and address events. Commands go
//! on their own channel and wake the thread with an empty batch on the
//! speaker's channel, so one blocking receive serves all inputs.
//!
//! Routes found in the kernel at start stay until [`FibHandle::mark_synced`]
//! (graceful restart). Every `resync` a dump repairs drift.
//!
//! # MTUs
//!
//! The tunnel devices are sized from the path to each remote they send to
//! (`ip route get REMOTE`: the route's `mtu` metric, else its device's
//! MTU; see [`super::encap::mtus`]). The remotes are the VXLAN remotes
//! of the composer and the gateways of tortie's routes on the IPIP device.
//! A remote new since the last turn is looked up at once; all of them
//! again at every resync, and after a link, address or (non-tortie) route
//! change, at most once a second, or once a resync period when there are
//! more than [`SMALL_REMOTE_SET`] remotes: an event storm in a large
//! cluster costs one pipelined round of lookups, not one per event.
//! The pod MTU is published without a lock for the CNI server
//! ([`FibHandle::pod_mtu`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::oneshot;
use tortie_bgp::rib::FibChange;
use tracing::{debug, error, info, warn};

use super::compose::{Composer, EncapContext};
use super::encap::{Encap, Mtus, PoolEncap};
use super::link::{LinkSocket, LinkWatcher, RouteWatcher};
use super::netlink::{RouteSocket, BATCH_MESSAGES};
use super::route::{KernelRoute, RouteKey, RouteTarget, MAIN_TABLE};
use super::speaker::fib_route;
use super::tunnels::{path_mtus, reconcile_links, reconcile_vxlan_remotes, TunnelState};
use super::{Op, Reconciler, RTPROT_TORTIE};

/// Up to this many tunnel remotes, a link/address/route change refreshes
/// every path MTU within a second; beyond, at the next resync.
pub const SMALL_REMOTE_SET: usize = 256;

/// What the FIB is asked to do (`fib:` of the speaker config, or the
/// node agent's view of the node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibSettings {
    /// Period of the kernel dump that repairs drift.
    pub resync: Duration,
    /// Originated prefixes get a blackhole route.
    pub blackhole_originated: bool,
    /// IP pools and their encapsulation.
    pub pools: Vec<PoolEncap>,
    /// The node's underlay (BGP) address `ADDR/LEN`: the tunnels' local
    /// end, and the subnet `CrossSubnet` compares next hops with.
    pub underlay: Option<IpNet>,
}

impl Default for FibSettings {
    fn default() -> Self {
        FibSettings {
            resync: Duration::from_secs(30),
            blackhole_originated: true,
            pools: Vec::new(),
            underlay: None,
        }
    }
}

/// What the FIB reports for `tortie status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FibStats {
    /// The FIB thread is running.
    pub running: bool,
    /// Stale routes may be removed (the speaker has synced).
    pub synced: bool,
    /// Routes of tortie's protocol the kernel holds as wanted.
    pub installed: u64,
    /// Routes the kernel refused at the last attempt (being retried).
    pub failed: u64,
    /// Routes wanted (learned and local).
    pub desired: u64,
    /// MTUs, once the underlay device is known.
    pub mtu: Option<Mtus>,
    /// Tunnels in use, by name (`ipip.tortie`, `vxlan.tortie`).
    pub tunnels: Vec<String>,
    /// Remote nodes with a VXLAN neighbour and FDB entry.
    pub vxlan_remotes: u64,
    /// Problems an operator should know about, one message each.
    pub errors: Vec<String>,
}

impl FibStats {
    /// The `routes` part of the status document.
    pub fn route_status(&self) -> crate::status::RouteStatus {
        let mut tunnels = Vec::new();
        if let Some(m) = &self.mtu {
            for (device, mtu, path_mtu) in [
                (super::link::IPIP_DEVICE, m.ipip, m.ipip_path),
                (super::link::VXLAN_DEVICE, m.vxlan, m.vxlan_path),
            ] {
                if let (Some(mtu), true) = (mtu, self.tunnels.iter().any(|t| t == device)) {
                    tunnels.push(crate::status::TunnelStatus {
                        device: device.to_string(),
                        mtu,
                        path_mtu,
                    });
                }
            }
        }
        crate::status::RouteStatus {
            installed: self.installed,
            failed: self.failed,
            mtu: self.mtu.map(|m| m.pod),
            encapsulation: tunnels,
            errors: self.errors.clone(),
        }
    }
}

/// Resolves when the routes given to [`FibHandle::set_local_routes`] are
/// in the kernel (`Ok`), or the kernel refused one of them (`Err` with
/// its reason; the FIB keeps retrying), or the FIB stopped.
#[derive(Debug)]
pub struct Applied {
    rx: oneshot::Receiver<Result<(), String>>,
}

impl Applied {
    /// Waits on the calling thread (not from inside an async runtime).
    pub fn blocking_wait(self) -> Result<(), String> {
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err("the FIB is not running".into()))
    }
}

impl Future for Applied {
    type Output = Result<(), String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(v) => v,
            Err(_) => Err("the FIB is not running".into()),
        })
    }
}

enum Command {
    SetPools(Vec<PoolEncap>),
    SetUnderlay(Option<IpNet>),
    SetLocal {
        source: String,
        routes: Vec<KernelRoute>,
        ack: oneshot::Sender<Result<(), String>>,
    },
    MarkSynced,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    stats: Mutex<FibStats>,
    /// [`Mtus::pod`], 0 before the first computation.
    pod_mtu: AtomicU32,
}

/// Talks to the FIB thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FibHandle {
    changes: mpsc::Sender<Vec<FibChange>>,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    join: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::SetPools(p) => write!(f, "SetPools({p:?})"),
            Command::SetUnderlay(u) => write!(f, "SetUnderlay({u:?})"),
            Command::SetLocal { source, routes, .. } => {
                write!(f, "SetLocal({source}, {} routes)", routes.len())
            }
            Command::MarkSynced => write!(f, "MarkSynced"),
        }
    }
}

/// Starts the FIB thread in the calling process's network namespace.
/// Fails when the netlink socket cannot be opened.
pub fn spawn(settings: FibSettings) -> Result<FibHandle> {
    let sock = RouteSocket::open().context("opening the netlink route socket")?;
    let (changes, rx) = mpsc::channel();
    let (commands, cmd_rx) = mpsc::channel();
    let shared = Arc::new(Shared::default());
    let sh = Arc::clone(&shared);
    let join = std::thread::Builder::new()
        .name("tortie-fib".into())
        .spawn(move || {
            set_running(&sh, true);
            if let Err(e) = run(settings, sock, rx, cmd_rx, &sh) {
                error!("FIB: {e:#}; routes are no longer programmed");
                if let Ok(mut s) = sh.stats.lock() {
                    s.errors.push(format!("the FIB stopped: {e:#}"));
                }
            }
            set_running(&sh, false);
        })
        .context("starting the FIB thread")?;
    Ok(FibHandle {
        changes,
        commands,
        shared,
        join: Arc::new(Mutex::new(Some(join))),
    })
}

fn set_running(sh: &Shared, running: bool) {
    if let Ok(mut s) = sh.stats.lock() {
        s.running = running;
    }
}

impl FibHandle {
    /// The sender the speaker feeds best-route changes into (give it to
    /// `tortie_bgp::runtime::start_with_fib` with `track_fib` set).
    pub fn changes_sender(&self) -> mpsc::Sender<Vec<FibChange>> {
        self.changes.clone()
    }

    fn send(&self, c: Command) {
        if self.commands.send(c).is_ok() {
            // Wake the thread, which blocks on the speaker's channel.
            let _ = self.changes.send(Vec::new());
        }
    }

    /// The IP pools and their encapsulation (replaces the previous list).
    pub fn set_pools(&self, pools: Vec<PoolEncap>) {
        self.send(Command::SetPools(pools));
    }

    /// The node's underlay address `ADDR/LEN` (tunnel local end,
    /// CrossSubnet's subnet).
    pub fn set_underlay(&self, underlay: Option<IpNet>) {
        self.send(Command::SetUnderlay(underlay));
    }

    /// Replaces the routes of `source` (say `"workload default/web-0"`)
    /// with `routes`; an empty list removes them. They win over learned
    /// routes for the same destination and are repaired by resync like
    /// every other route. The returned future resolves once they are all
    /// in the kernel.
    pub fn set_local_routes(&self, source: &str, routes: Vec<KernelRoute>) -> Applied {
        let (ack, rx) = oneshot::channel();
        self.send(Command::SetLocal {
            source: source.to_string(),
            routes,
            ack,
        });
        Applied { rx }
    }

    /// The speaker has synced (every peer's End-of-RIB, or the wait timed
    /// out): routes found in the kernel and not re-learned go now.
    pub fn mark_synced(&self) {
        self.send(Command::MarkSynced);
    }

    /// The MTU a new pod interface should get ([`Mtus::pod`]: the
    /// narrowest tunnel, the underlay device at most), read without
    /// waiting for the FIB thread; `None` until it is first computed (the
    /// underlay device is not known yet).
    pub fn pod_mtu(&self) -> Option<u32> {
        Some(self.shared.pod_mtu.load(Ordering::Relaxed)).filter(|m| *m > 0)
    }

    /// The latest figures.
    pub fn stats(&self) -> FibStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Whether the FIB thread is still running.
    pub fn is_running(&self) -> bool {
        self.join
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|j| !j.is_finished()))
            .unwrap_or(false)
    }

    /// Stops the thread before it applies anything more (routes stay in
    /// the kernel: the next start is a graceful restart for forwarding).
    /// Waits up to `timeout`; `true` when the thread has ended.
    pub async fn stop(&self, timeout: Duration) -> bool {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.changes.send(Vec::new());
        let deadline = tokio::time::Instant::now() + timeout;
        while self.is_running() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        !self.is_running()
    }
}

/// Acks of `set_local_routes` waiting for their routes.
struct PendingAck {
    routes: Vec<KernelRoute>,
    ack: oneshot::Sender<Result<(), String>>,
}

/// The thread's state besides the sockets.
struct Fib {
    settings: FibSettings,
    rec: Reconciler,
    composer: Composer,
    acks: Vec<PendingAck>,
    synced_requested: bool,
    /// Links, addresses, neighbours (None: could not open; no tunnels).
    links: Option<LinkSocket>,
    watcher: Option<LinkWatcher>,
    /// Devices must be looked at again (start, events, pools, resync).
    links_dirty: bool,
    /// VXLAN remotes must be compared with the kernel's again.
    neigh_dirty: bool,
    /// The remotes last programmed.
    applied_remotes: BTreeSet<IpAddr>,
    tunnels: TunnelState,
    link_errors: Vec<String>,
    /// Changes of routes that are not tortie's (a route to a remote's
    /// subnet got `mtu N`): paths must be looked up again.
    route_watcher: Option<RouteWatcher>,
    /// Path MTU per tunnel remote (`None`: the kernel has no route).
    path_cache: BTreeMap<IpAddr, Option<u32>>,
    /// Remotes reached through the IPIP device: gateways of tortie's
    /// routes on it, from the last dump plus the routes added since.
    ipip_remotes: BTreeSet<IpAddr>,
    /// A link, address or route changed: every cached path is suspect.
    paths_stale: bool,
    /// The earliest next full path refresh outside a resync.
    next_path_refresh: Instant,
    /// The narrowest path per tunnel the devices were last sized for.
    applied_paths: Vec<(Encap, u32)>,
}

impl Fib {
    fn apply_changes(&mut self, batch: Vec<FibChange>) {
        for c in batch {
            let key = RouteKey {
                table: MAIN_TABLE,
                dst: IpNet::from(c.prefix).trunc(),
            };
            let route = fib_route(&c, self.settings.blackhole_originated);
            self.composer.learn(&mut self.rec, key, route);
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::SetPools(pools) => {
                self.settings.pools = pools;
                self.links_dirty = true;
            }
            Command::SetUnderlay(u) => {
                self.settings.underlay = u;
                self.links_dirty = true;
            }
            Command::SetLocal {
                source,
                routes,
                ack,
            } => {
                self.composer
                    .set_local(&mut self.rec, &source, routes.clone());
                self.acks.push(PendingAck { routes, ack });
            }
            Command::MarkSynced => self.synced_requested = true,
        }
    }

    /// The remotes each tunnel sends to.
    fn tunnel_remotes(&self) -> Vec<(Encap, IpAddr)> {
        let mut v: Vec<(Encap, IpAddr)> = self
            .composer
            .vxlan_remotes()
            .into_iter()
            .map(|r| (Encap::Vxlan, r))
            .collect();
        if self.tunnels.ipip.is_some() {
            v.extend(self.ipip_remotes.iter().map(|r| (Encap::Ipip, *r)));
        }
        v
    }

    /// Looks up the paths to the remotes new since the last turn, or to
    /// all of them at a resync or after a change (rate-limited, see the
    /// module docs); the devices get a pass when the narrowest path of a
    /// tunnel moved.
    fn refresh_paths(&mut self, now: Instant, resync: bool) {
        let remotes = self.tunnel_remotes();
        let unique: BTreeSet<IpAddr> = remotes.iter().map(|(_, r)| *r).collect();
        self.path_cache.retain(|r, _| unique.contains(r));
        let full = resync || (self.paths_stale && now >= self.next_path_refresh);
        let todo: Vec<IpAddr> = unique
            .iter()
            .filter(|r| full || !self.path_cache.contains_key(r))
            .copied()
            .collect();
        if full {
            self.paths_stale = false;
            self.next_path_refresh =
                now + path_refresh_interval(unique.len(), self.settings.resync);
        }
        if let (false, Some(sock)) = (todo.is_empty(), self.links.as_mut()) {
            match path_mtus(sock, &todo) {
                Ok(found) => {
                    debug!("FIB: {} path MTU lookups", todo.len());
                    self.path_cache.extend(found);
                }
                Err(e) => {
                    // Not retried every turn: at the next refresh.
                    warn!("FIB: path MTU lookups: {e}");
                    self.path_cache.extend(todo.iter().map(|r| (*r, None)));
                    self.paths_stale = true;
                }
            }
        }
        let paths = narrowest_paths(&remotes, &self.path_cache);
        if paths != self.applied_paths {
            info!("FIB: narrowest path MTU per tunnel {paths:?}");
            self.applied_paths = paths;
            self.links_dirty = true;
        }
    }

    /// Tortie's routes on the IPIP device name its remotes as gateways.
    fn note_ipip_remotes<'a>(&mut self, routes: impl IntoIterator<Item = &'a KernelRoute>) {
        let Some(dev) = self.tunnels.ipip else {
            return;
        };
        for r in routes {
            if let RouteTarget::Unicast(hops) = &r.target {
                self.ipip_remotes.extend(
                    hops.iter()
                        .filter(|h| h.ifindex == Some(dev))
                        .filter_map(|h| h.gateway),
                );
            }
        }
    }

    /// Path MTUs first (they size the devices), then devices (routes
    /// name them), then the encapsulation context every learned route
    /// derives from, then the VXLAN remotes those routes need (before the
    /// routes go in, so no packet is sent to an unresolved VTEP).
    fn reconcile_tunnels(&mut self, now: Instant, resync: bool) {
        self.refresh_paths(now, resync);
        if self.links_dirty {
            self.links_dirty = false;
            self.neigh_dirty = true;
            let st = match self.links.as_mut() {
                Some(sock) => reconcile_links(
                    sock,
                    &self.settings.pools,
                    self.settings.underlay.as_ref(),
                    &self.applied_paths,
                )
                .unwrap_or_else(|e| {
                    warn!("FIB: tunnel devices: {e}");
                    TunnelState {
                        errors: vec![format!("tunnel devices: {e}")],
                        ..self.tunnels.clone()
                    }
                }),
                None => TunnelState::default(),
            };
            if st != self.tunnels {
                info!("FIB: tunnels {:?}, MTUs {:?}", st.names(), st.mtus);
            }
            self.tunnels = st;
            let ctx = EncapContext {
                pools: self.settings.pools.clone(),
                underlay: self.settings.underlay,
                ipip: self.tunnels.ipip,
                vxlan: self.tunnels.vxlan,
            };
            self.composer.set_context(&mut self.rec, ctx);
        }
        let (Some(index), Some(sock)) = (self.tunnels.vxlan, self.links.as_mut()) else {
            self.applied_remotes.clear();
            return;
        };
        let remotes = self.composer.vxlan_remotes();
        if self.neigh_dirty || remotes != self.applied_remotes {
            self.neigh_dirty = false;
            match reconcile_vxlan_remotes(sock, index, &remotes) {
                Ok(n) if n > 0 => debug!("FIB: {n} VXLAN neighbour/FDB changes"),
                Ok(_) => {}
                Err(e) => warn!("FIB: VXLAN remotes: {e}"),
            }
            self.applied_remotes = remotes;
        }
    }

    /// Answers the acks whose routes are all in the kernel, or one of
    /// which the kernel refused.
    fn settle_acks(&mut self) {
        let pending = std::mem::take(&mut self.acks);
        for p in pending {
            if p.ack.is_closed() {
                continue;
            }
            match self.rec.state_of(&p.routes) {
                Some(Ok(())) => {
                    let _ = p.ack.send(Ok(()));
                }
                Some(Err(reason)) => {
                    let _ = p.ack.send(Err(reason));
                }
                None => self.acks.push(p),
            }
        }
    }
}

/// The FIB thread's loop. Ends when every sender is gone or `stop` is
/// raised (before it applies anything more).
fn run(
    settings: FibSettings,
    mut sock: RouteSocket,
    rx: mpsc::Receiver<Vec<FibChange>>,
    commands: mpsc::Receiver<Command>,
    shared: &Shared,
) -> Result<()> {
    let ctx = EncapContext {
        pools: settings.pools.clone(),
        underlay: settings.underlay,
        ..EncapContext::default()
    };
    let mut fib = Fib {
        settings,
        rec: Reconciler::new(),
        composer: Composer::new(ctx),
        acks: Vec::new(),
        synced_requested: false,
        links: None,
        watcher: None,
        links_dirty: true,
        neigh_dirty: true,
        applied_remotes: BTreeSet::new(),
        tunnels: TunnelState::default(),
        link_errors: Vec::new(),
        route_watcher: None,
        path_cache: BTreeMap::new(),
        ipip_remotes: BTreeSet::new(),
        paths_stale: false,
        next_path_refresh: Instant::now(),
        applied_paths: Vec::new(),
    };
    match LinkSocket::open() {
        Ok(s) => fib.links = Some(s),
        Err(e) => fib.link_errors.push(format!("no tunnels: {e}")),
    }
    match LinkWatcher::open() {
        Ok(w) => fib.watcher = Some(w),
        Err(e) => fib
            .link_errors
            .push(format!("link and address changes are not watched: {e}")),
    }
    match RouteWatcher::open(RTPROT_TORTIE) {
        Ok(w) => fib.route_watcher = Some(w),
        Err(e) => fib.link_errors.push(format!(
            "route changes are not watched (path MTUs are refreshed at resync only): {e}"
        )),
    }
    let found = sock
        .dump(RTPROT_TORTIE)
        .context("dumping the kernel's routes")?;
    info!(
        "FIB: {} routes of protocol {RTPROT_TORTIE} found in the kernel; kept until the speaker has synced",
        found.len()
    );
    fib.rec.observe_dump(found);
    let mut next_resync = Instant::now() + fib.settings.resync;
    loop {
        let now = Instant::now();
        // Wake for the resync, a retry, or to notice a stop.
        let mut wake = next_resync.min(now + Duration::from_millis(200));
        if let Some(t) = fib.rec.poll_timeout() {
            wake = wake.min(t);
        }
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(batch) => fib.apply_changes(batch),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // Batch: everything already queued goes into this plan.
        while let Ok(batch) = rx.try_recv() {
            fib.apply_changes(batch);
        }
        while let Ok(c) = commands.try_recv() {
            fib.command(c);
        }
        if !fib.rec.is_synced() && fib.synced_requested {
            // The changes the speaker made before it synced are queued
            // ahead of the request (the caller decided after a status
            // answer that follows them); take them so nothing re-learned is
            // deleted.
            while let Ok(batch) = rx.try_recv() {
                fib.apply_changes(batch);
            }
            fib.rec.mark_synced();
        }
        // Shutting down: whatever the speaker withdraws now stays in the
        // kernel.
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        // A device went down, an address changed: look at the tunnels
        // again now, and at the routes soon (coalescing bursts).
        if fib.watcher.as_mut().is_some_and(LinkWatcher::changed) {
            fib.links_dirty = true;
            fib.paths_stale = true;
            next_resync = next_resync.min(now + Duration::from_secs(1));
        }
        // Someone else's route changed (say `ip route ... mtu 1300` towards
        // a remote): the paths, not the devices or tortie's routes.
        if fib
            .route_watcher
            .as_mut()
            .is_some_and(RouteWatcher::changed)
        {
            fib.paths_stale = true;
        }
        let resync = now >= next_resync;
        if resync {
            fib.links_dirty = true;
            fib.neigh_dirty = true;
        }
        fib.reconcile_tunnels(now, resync);
        if resync {
            match sock.dump(RTPROT_TORTIE) {
                Ok(routes) => {
                    fib.ipip_remotes.clear();
                    fib.note_ipip_remotes(&routes);
                    fib.rec.observe_dump(routes);
                }
                Err(e) => warn!("FIB: resync dump failed: {e}"),
            }
            next_resync = now + fib.settings.resync;
        }
        if fib.rec.has_work() {
            // Planned batch by batch: a full table's first routes reach the
            // kernel while the rest is still being planned, and outcomes
            // are recorded while the kernel works on the next batch.
            fib.rec.start_plan(now);
            let mut n = 0usize;
            let applied = sock.apply_planned(
                RTPROT_TORTIE,
                &mut fib,
                |fib| {
                    let ops = fib.rec.next_ops(BATCH_MESSAGES);
                    n += ops.len();
                    fib.note_ipip_remotes(ops.iter().filter_map(|op| match op {
                        Op::Add(r) | Op::Replace(r) => Some(r),
                        Op::Delete(_) => None,
                    }));
                    ops
                },
                |fib, o| {
                    if let Err(why) = &o.result {
                        warn!(
                            "FIB: the kernel refused to {} {}: {why}; retrying with backoff",
                            o.op.verb(),
                            o.op.route()
                        );
                    }
                    fib.rec.record_one(o, now);
                },
            );
            match applied {
                Ok(()) if n > 0 => debug!("FIB: applied {n} ops"),
                Ok(()) => {}
                Err(e) => {
                    // Nothing is known about the ops not recorded; a dump
                    // soon re-marks whatever the kernel lacks. The keys not
                    // planned yet stay dirty for the next plan.
                    warn!("FIB: applying route changes failed after {n} ops: {e}");
                    next_resync = now + Duration::from_secs(1);
                }
            }
        }
        fib.settle_acks();
        publish(&fib, shared);
    }
}

/// The narrowest known path per tunnel among its remotes.
fn narrowest_paths(
    remotes: &[(Encap, IpAddr)],
    cache: &BTreeMap<IpAddr, Option<u32>>,
) -> Vec<(Encap, u32)> {
    let mut out: BTreeMap<Encap, u32> = BTreeMap::new();
    for (tunnel, remote) in remotes {
        if let Some(Some(mtu)) = cache.get(remote) {
            out.entry(*tunnel)
                .and_modify(|m| *m = (*m).min(*mtu))
                .or_insert(*mtu);
        }
    }
    out.into_iter().collect()
}

/// How soon after a full path refresh a change may cause another.
fn path_refresh_interval(remotes: usize, resync: Duration) -> Duration {
    if remotes <= SMALL_REMOTE_SET {
        Duration::from_secs(1).min(resync)
    } else {
        resync
    }
}

fn publish(fib: &Fib, shared: &Shared) {
    shared
        .pod_mtu
        .store(fib.tunnels.mtus.map_or(0, |m| m.pod), Ordering::Relaxed);
    let Ok(mut s) = shared.stats.lock() else {
        return;
    };
    s.synced = fib.rec.is_synced();
    s.installed = fib.rec.installed() as u64;
    s.failed = fib.rec.failed().len() as u64;
    s.desired = fib.rec.desired() as u64;
    s.vxlan_remotes = fib.applied_remotes.len() as u64;
    s.mtu = fib.tunnels.mtus;
    s.tunnels = fib.tunnels.names();
    let mut errors = fib.link_errors.clone();
    errors.extend(fib.tunnels.errors.iter().cloned());
    let stopped: Vec<String> = s
        .errors
        .iter()
        .filter(|e| e.starts_with("the FIB stopped"))
        .cloned()
        .collect();
    errors.extend(stopped);
    s.errors = errors;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn each_tunnel_takes_its_narrowest_known_path() {
        let cache = BTreeMap::from([
            (ip("198.51.100.12"), Some(1300)),
            (ip("192.0.2.13"), Some(1500)),
            (ip("203.0.113.14"), None),
        ]);
        let remotes = [
            (Encap::Vxlan, ip("198.51.100.12")),
            (Encap::Vxlan, ip("192.0.2.13")),
            (Encap::Ipip, ip("192.0.2.13")),
            // No route yet: does not count.
            (Encap::Ipip, ip("203.0.113.14")),
            // Not looked up yet: does not count.
            (Encap::Vxlan, ip("203.0.113.15")),
        ];
        assert_eq!(
            narrowest_paths(&remotes, &cache),
            vec![(Encap::Ipip, 1500), (Encap::Vxlan, 1300)]
        );
        assert_eq!(narrowest_paths(&[], &cache), vec![]);
    }

    #[test]
    fn large_remote_sets_refresh_once_per_resync() {
        let resync = Duration::from_secs(30);
        assert_eq!(path_refresh_interval(3, resync), Duration::from_secs(1));
        assert_eq!(
            path_refresh_interval(SMALL_REMOTE_SET, resync),
            Duration::from_secs(1)
        );
        assert_eq!(path_refresh_interval(1000, resync), resync);
        // A fast resync is never slowed down.
        let fast = Duration::from_millis(500);
        assert_eq!(path_refresh_interval(3, fast), fast);
    }

    #[test]
    fn the_status_shows_each_tunnel_with_its_path() {
        let stats = FibStats {
            mtu: Some(crate::fib::encap::mtus(
                1500,
                false,
                &[PoolEncap {
                    cidr: "10.244.0.0/16".parse().expect("net"),
                    mode: crate::fib::encap::Mode::VXLAN,
                }],
                &[(Encap::Vxlan, 1300)],
            )),
            tunnels: vec![super::super::link::VXLAN_DEVICE.to_string()],
            ..FibStats::default()
        };
        let r = stats.route_status();
        assert_eq!(r.mtu, Some(1250));
        let v = serde_json::to_value(&r).expect("serialises");
        assert_eq!(
            v["encapsulation"],
            serde_json::json!([{"device": "vxlan.tortie", "mtu": 1250, "pathMtu": 1300}])
        );
    }

    #[tokio::test]
    async fn applied_reports_a_stopped_fib() {
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        drop(tx);
        assert_eq!(
            Applied { rx }.await,
            Err("the FIB is not running".to_string())
        );
    }
}
