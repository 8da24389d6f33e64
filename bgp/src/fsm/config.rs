//! Per-peer session configuration: what we advertise in OPEN and what we
//! accept from the peer.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::wire::context::Family;
use crate::wire::open::{Asn, HoldTime, RouterId};

/// RFC 4271 §10 suggested HoldTime.
pub const DEFAULT_HOLD_TIME: HoldTime = HoldTime(90);
/// RFC 4271 §10 suggested ConnectRetryTime.
pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(120);
/// First wait before reconnecting after a failure.
pub const DEFAULT_IDLE_HOLD_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait before reconnecting after repeated failures.
pub const DEFAULT_IDLE_HOLD_MAX: Duration = Duration::from_secs(120);
/// RFC 9687 §4: the recommended SendHoldTime, 8 minutes.
pub const DEFAULT_SEND_HOLD_TIME: Duration = Duration::from_secs(480);
/// RFC 4724 §3 suggests the restart time not exceed the hold time; 120 s
/// is what BIRD and GoBGP default to.
pub const DEFAULT_RESTART_TIME: u16 = 120;
/// The hold timer while waiting for the peer's OPEN: RFC 4271 §8.2.2
/// suggests "a large value", 4 minutes.
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// Which AS numbers the peer may open with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAs {
    /// Exactly this AS (the usual case).
    Exact(Asn),
    /// Any AS in this range (e.g. a route server's clients, or a dynamic
    /// peer in a private AS range).
    Range(RangeInclusive<Asn>),
    /// Any AS; the session is eBGP or iBGP depending on what the peer says.
    Any,
}

impl PeerAs {
    /// Whether `asn` is acceptable.
    pub fn accepts(&self, asn: Asn) -> bool {
        match self {
            PeerAs::Exact(a) => *a == asn,
            PeerAs::Range(r) => r.contains(&asn),
            PeerAs::Any => true,
        }
    }
}

impl std::fmt::Display for PeerAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAs::Exact(a) => write!(f, "{a}"),
            PeerAs::Range(r) => write!(f, "{}-{}", r.start(), r.end()),
            PeerAs::Any => f.write_str("any AS"),
        }
    }
}

/// Our graceful restart settings (RFC 4724).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// How long (seconds, at most 4095) the peer should keep our routes
    /// after our session drops.
    pub restart_time: u16,
    /// Set the R bit: we are restarting now (the agent came back and the
    /// kernel still holds the routes it installed).
    pub restarting: bool,
    /// Families whose forwarding state we kept across the restart (F bit).
    pub forwarding_preserved: Vec<Family>,
    /// Advertise the N bit (RFC 8538: graceful restart also after a
    /// NOTIFICATION other than Hard Reset).
    pub notification: bool,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        Self {
            restart_time: DEFAULT_RESTART_TIME,
            restarting: false,
            forwarding_preserved: Vec::new(),
            notification: false,
        }
    }
}

/// Everything the FSM needs to know about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// For logs and session-down reasons, e.g. `"BGPPeer tor-a"`.
    pub description: String,
    /// Our AS (4-octet; AS_TRANS goes in the OPEN's My AS when it does not
    /// fit two octets).
    pub local_as: Asn,
    /// The peer's AS, or the set we accept.
    pub peer_as: PeerAs,
    /// Our BGP Identifier.
    pub router_id: RouterId,
    /// Hold time we offer: 0 (no keepalives) or at least 3 seconds.
    pub hold_time: HoldTime,
    /// Keepalive interval, seconds; `None` = a third of the negotiated
    /// hold time. Used only when smaller than that third.
    pub keepalive: Option<u16>,
    /// Smallest non-zero hold time we accept from the peer (0 = anything
    /// RFC 4271 allows, i.e. 3 and up).
    pub min_hold_time: u16,
    /// ConnectRetryTime.
    pub connect_retry: Duration,
    /// SendHoldTime (RFC 9687): give up on a peer that takes none of our
    /// data for this long (raised to twice the negotiated hold time when
    /// that is longer). `None` disables it.
    pub send_hold_time: Option<Duration>,
    /// Never connect out; wait for the peer (RFC 4271
    /// ManualStart_with_PassiveTcpEstablishment).
    pub passive: bool,
    /// Restart automatically after a failure, after the idle-hold backoff
    /// (RFC 4271 §8.1.1 AutomaticStart with DampPeerOscillations).
    pub auto_restart: bool,
    /// First idle-hold wait after a failure.
    pub idle_hold_initial: Duration,
    /// Largest idle-hold wait.
    pub idle_hold_max: Duration,
    /// Address families we offer (Multiprotocol capabilities).
    pub families: Vec<Family>,
    /// Advertise the 4-octet AS capability. Forced on when `local_as`
    /// does not fit two octets.
    pub four_octet_as: bool,
    /// Advertise route refresh (RFC 2918).
    pub route_refresh: bool,
    /// Advertise enhanced route refresh (RFC 7313).
    pub enhanced_route_refresh: bool,
    /// Advertise extended messages (RFC 8654).
    pub extended_message: bool,
    /// Graceful restart; `None` = do not advertise it.
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Families for which we can receive several paths (ADD-PATH Receive).
    pub add_path_receive: Vec<Family>,
    /// Families for which we can send several paths (ADD-PATH Send).
    pub add_path_send: Vec<Family>,
    /// Capability codes the peer must advertise, else the OPEN is refused
    /// with OPEN Message Error / Unsupported Capability (RFC 5492 §5).
    pub required_capabilities: Vec<u8>,
}

impl PeerConfig {
    /// A configuration with RFC defaults: IPv4 unicast, hold 90 s,
    /// connect-retry 120 s, active, automatic restart with 1-120 s
    /// backoff, 4-octet AS and route refresh advertised.
    pub fn new(local_as: Asn, peer_as: Asn, router_id: RouterId) -> Self {
        Self {
            description: format!("peer {peer_as}"),
            local_as,
            peer_as: PeerAs::Exact(peer_as),
            router_id,
            hold_time: DEFAULT_HOLD_TIME,
            keepalive: None,
            min_hold_time: 0,
            connect_retry: DEFAULT_CONNECT_RETRY,
            send_hold_time: Some(DEFAULT_SEND_HOLD_TIME),
            passive: false,
            auto_restart: true,
            idle_hold_initial: DEFAULT_IDLE_HOLD_INITIAL,
            idle_hold_max: DEFAULT_IDLE_HOLD_MAX,
            families: vec![Family::IPV4_UNICAST],
            four_octet_as: true,
            route_refresh: true,
            enhanced_route_refresh: false,
            extended_message: false,
            graceful_restart: None,
            add_path_receive: Vec::new(),
            add_path_send: Vec::new(),
            required_capabilities: Vec::new(),
        }
    }

    /// Whether the session is internal (iBGP) for a peer in `peer_as`.
    pub fn is_ibgp(&self, peer_as: Asn) -> bool {
        self.local_as == peer_as
    }
}
