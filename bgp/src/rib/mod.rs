//! The RIB: Adj-RIB-In, Loc-RIB with the decision process, Adj-RIB-Out,
//! filters, update building and the FIB change stream. Pure: no clock, no
//! tokio, no sockets; the speaker core feeds it decoded UPDATEs and
//! session events and takes out UPDATEs to send and FIB changes.
//!
//! # Layout
//!
//! ```text
//! rib/
//!   mod.rs            this map; configuration types, PeerId
//!   prefix.rs         packed per-family table keys for the codec's Prefix
//!   attrs.rs          PathAttrs (the codec's attributes, normalised), Interner (Arc hash-consing)
//!   import.rs         receipt checks: AS loop, first AS, own next hop, RR loops
//!   policy.rs         Filter (prefix exact / ge-le, community matches, community setting), MaxPrefix
//!   decision.rs       RFC 4271 §9.1.2.2 + RFC 4456 §9 decision process and the ECMP set
//!   hash.rs           seeded folded-multiply hasher for the prefix tables
//!   shard.rs          the prefix tables split in 64 shards (no whole-table resize peak)
//!   table.rs          per-prefix storage: candidate paths, selection first (the memory budget)
//!   loc_rib.rs        Rib: the API below, per-family tables, change propagation
//!   adj_out.rs        per-peer Adj-RIB-Out and the export rules (split horizon, RR, eBGP rewrites)
//!   update_builder.rs grouping of Adj-RIB-Out changes by attribute set; the codec's packer cuts messages
//!   fib.rs            FibChange/FibPath: the coalesced best-route stream
//! ```
//!
//! # Data flow
//!
//! ```text
//!  announce(peer, attrs, nlri) ─► import checks ─► intern attrs (one Arc per UPDATE)
//!      ─► import filter per prefix ─► table[prefix].paths (Adj-RIB-In ∪ Loc-RIB)
//!      ─► decision ─► selection changed? ─► FIB queue (coalescing)
//!                   ─► best changed?      ─► each established peer: export rules
//!                                              ─► Adj-RIB-Out + pending queue
//!  take_updates(peer) ─► OutUpdates grouped by attribute set
//!  take_fib_changes()  ─► FibChange per prefix, latest state
//! ```
//!
//! The Adj-RIB-In of a peer is not a separate map: every prefix's entry
//! holds all candidate paths keyed by (peer, ADD-PATH id), the selected
//! ones first. That keeps one hash slot per prefix (about 70 bytes per
//! route at a million routes); the price is that peer-down and graceful
//! restart walk the table.
//!
//! The decision is incremental where that is exact: a path arriving for
//! a prefix that has a best path is compared with that best path only
//! (`decision::against_best`), so N peers sending the same prefix cost
//! O(N) comparisons, not O(N²); the full set elimination runs when a
//! selected path is replaced or withdrawn, or when MED across neighbouring
//! ASes makes the pairwise answer depend on the other paths.
//!
//! # How the speaker core drives it
//!
//! ```text
//! Rib::new(RibConfig)                       once; hash_seed from the shell's RNG
//! add_peer(PeerConfig) -> PeerId            per configured neighbour
//! peer_up(id, Session)                      Established: queues the whole Loc-RIB for it
//! apply_update(id, &wire::Update)           every UPDATE (or announce/withdraw with PathAttrs)
//!   -> ImportOutcome { max_prefix: Some(e) } e.notification(): Cease to send, or warn only
//! originate(prefix, attrs) / withdraw_local(prefix)
//! take_updates(id) -> Vec<OutUpdate>        after each input batch; OutUpdate::encode(ctx, buf)
//! take_fib_changes() -> Vec<FibChange>      whenever the FIB writer is ready
//! mark_stale(id) / purge_stale(id)          graceful restart: session lost / End-of-RIB or timer
//! peer_down(id) / remove_peer(id)           session lost without GR / unconfigured
//! ```
//!
//! # What the RIB does not do
//!
//! - IGP cost / next-hop reachability (decision step (e) of §9.1.2.2 and
//!   §9.1.2.1): every next hop counts as reachable at equal cost.
//! - Confederations: confed segments count zero in path length, nothing
//!   more; NO_EXPORT_SUBCONFED is handled as NO_EXPORT.
//! - ADD-PATH send: each peer gets the best path only.
//! - Stale (graceful restart) paths compete normally in the decision.
//! - A peer's new import filter applies to routes received after it (no
//!   soft reconfiguration inbound; ask the peer for a ROUTE-REFRESH);
//!   changing a peer's AS (iBGP <-> eBGP) does not re-run the decision for
//!   the routes it already sent.

pub mod attrs;
pub mod decision;
pub mod fib;
pub mod import;
pub mod policy;
pub mod prefix;
pub mod update_builder;

mod adj_out;
mod hash;
mod loc_rib;
mod shard;
mod table;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use attrs::{Interner, PathAttrs};
pub use decision::{DecisionConfig, SourceKind};
pub use fib::{FibChange, FibPath};
pub use import::DropReason;
pub use loc_rib::{ChangeSummary, ImportOutcome, Rib, RibError, RouteView};
pub use policy::{
    Action, Filter, Match, MaxPrefix, MaxPrefixAction, MaxPrefixExceeded, PrefixMatch, Rule,
    Verdict,
};
pub use update_builder::OutUpdate;

use crate::wire::Asn;

/// A handle to a configured peer, given by [`Rib::add_peer`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PeerId(pub u32);

impl PeerId {
    /// The pseudo-peer of locally originated routes.
    pub const LOCAL: PeerId = PeerId(0x7FFF_FFFF);
}

/// Speaker-wide RIB settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RibConfig {
    /// Our AS.
    pub local_asn: Asn,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our cluster id when we are a route reflector (RFC 4456 §7; usually
    /// the router id). `None`: not a reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Degree of preference of routes without LOCAL_PREF (default 100).
    pub default_local_pref: u32,
    /// Compare MED across neighbouring ASes.
    pub always_compare_med: bool,
    /// Most paths in an ECMP set (1 = no multipath).
    pub max_paths: usize,
    /// Our own addresses: a route whose next hop is one of them is dropped.
    pub local_addresses: Vec<IpAddr>,
    /// Keep the FIB change queue. Off for a speaker with no FIB (a route
    /// reflector, a bench), so nothing accumulates undrained.
    pub track_fib: bool,
    /// Seed of the prefix tables' hash. The speaker should pass a random
    /// value (the RIB itself takes no randomness) so that no peer can
    /// craft prefixes that collide.
    pub hash_seed: u64,
}

impl RibConfig {
    /// Defaults around an AS and router id.
    pub fn new(local_asn: Asn, router_id: Ipv4Addr) -> Self {
        RibConfig {
            local_asn,
            router_id,
            cluster_id: None,
            default_local_pref: 100,
            always_compare_med: false,
            max_paths: 1,
            local_addresses: Vec::new(),
            track_fib: true,
            hash_seed: 0x5EED_0F7A_B1E5,
        }
    }
}

/// Per-peer RIB settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerConfig {
    /// The peer's address (the last decision tie-break).
    pub address: IpAddr,
    /// The peer's AS; equal to ours = iBGP.
    pub asn: Asn,
    /// The peer is our route-reflector client.
    pub rr_client: bool,
    /// Set ourselves as next hop for eBGP-learned routes sent to this
    /// iBGP peer.
    pub next_hop_self: bool,
    /// eBGP: drop routes whose AS_PATH does not start with the peer's AS
    /// (default on; off for route servers).
    pub enforce_first_as: bool,
    /// Import filter (after the receipt checks).
    pub import: Filter,
    /// Export filter.
    pub export: Filter,
    /// Max-prefix limit.
    pub max_prefix: Option<MaxPrefix>,
}

impl PeerConfig {
    /// Defaults: accept all, export all, enforce first AS.
    pub fn new(address: IpAddr, asn: Asn) -> Self {
        PeerConfig {
            address,
            asn,
            rr_client: false,
            next_hop_self: false,
            enforce_first_as: true,
            import: Filter::accept_all(),
            export: Filter::accept_all(),
            max_prefix: None,
        }
    }
}

/// Facts about an Established session the RIB needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Session {
    /// The peer's BGP identifier (its OPEN).
    pub router_id: Ipv4Addr,
    /// Our IPv4 address on the session (next hop for IPv4 routes we set).
    pub local_v4: Option<Ipv4Addr>,
    /// Our IPv6 address on the session (next hop for IPv6 routes we set).
    pub local_v6: Option<Ipv6Addr>,
}
