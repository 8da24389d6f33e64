//! The best-route change stream for the FIB.
//!
//! Changes coalesce: the Loc-RIB entry carries a "queued" bit and the
//! queue holds each prefix at most once, so however slow the consumer,
//! pending work is bounded by the number of prefixes and a prefix that
//! flapped a thousand times is reported once, in its latest state.

use std::net::IpAddr;

use super::decision::SourceKind;
use super::PeerId;
use crate::wire::{NextHop, Prefix};

/// One path of a FIB route.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FibPath {
    /// Where to forward (None only for our own routes).
    pub next_hop: Option<NextHop>,
    /// The peer the path was learned from ([`PeerId::LOCAL`] for our own).
    pub peer: PeerId,
    /// The peer's address (None for local routes).
    pub peer_address: Option<IpAddr>,
    /// Local, eBGP or iBGP.
    pub kind: SourceKind,
    /// The ADD-PATH id the peer gave it.
    pub path_id: u32,
    /// Kept through a graceful restart, not yet refreshed.
    pub stale: bool,
}

impl FibPath {
    /// Whether the path was learned over eBGP.
    pub fn is_ebgp(&self) -> bool {
        self.kind == SourceKind::Ebgp
    }
}

/// The latest state of one prefix.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FibChange {
    /// The prefix.
    pub prefix: Prefix,
    /// The ECMP set, best first; empty = the prefix is gone.
    pub paths: Vec<FibPath>,
}

impl FibChange {
    /// The best path, if the prefix is still reachable.
    pub fn best(&self) -> Option<&FibPath> {
        self.paths.first()
    }
    /// Whether the prefix is gone.
    pub fn is_gone(&self) -> bool {
        self.paths.is_empty()
    }
    /// Whether the best path is our own (the FIB has nothing to install:
    /// the route is local).
    pub fn is_local(&self) -> bool {
        self.best().is_some_and(|p| p.kind == SourceKind::Local)
    }
}
