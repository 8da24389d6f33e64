//! Receipt checks on an UPDATE's attributes (before the import filter).
//!
//! A route that fails them is treated as withdrawn (RFC 7606 style): the
//! peer's previous path for the same NLRI goes away, nothing is stored.

use super::attrs::PathAttrs;
use super::{PeerConfig, RibConfig};

/// Why a whole UPDATE's routes were not stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    /// Our AS is in the AS_PATH (RFC 4271 §9.1.2 loop detection).
    AsLoop,
    /// eBGP: the first AS of the path is not the peer's (RFC 4271 §6.3,
    /// enforce-first-as).
    FirstAsMismatch,
    /// The next hop is one of our own addresses.
    OwnNextHop,
    /// ORIGINATOR_ID is our router id (RFC 4456 §8).
    OriginatorIsUs,
    /// CLUSTER_LIST holds our cluster id (RFC 4456 §8).
    ClusterLoop,
}

/// Checks and normalises attributes received from a peer.
pub(crate) fn receive(
    cfg: &RibConfig,
    peer: &PeerConfig,
    ebgp: bool,
    mut attrs: PathAttrs,
) -> Result<PathAttrs, DropReason> {
    if ebgp && peer.enforce_first_as && attrs.as_path.first_asn() != Some(peer.asn) {
        return Err(DropReason::FirstAsMismatch);
    }
    if attrs.as_path.contains(cfg.local_asn) {
        return Err(DropReason::AsLoop);
    }
    if attrs
        .next_hop_addr()
        .is_some_and(|a| cfg.local_addresses.contains(&a))
    {
        return Err(DropReason::OwnNextHop);
    }
    if attrs.originator_id == Some(cfg.router_id) {
        return Err(DropReason::OriginatorIsUs);
    }
    if let Some(c) = cfg.cluster_id {
        if attrs.cluster_list.contains(&c) {
            return Err(DropReason::ClusterLoop);
        }
    }
    if ebgp {
        // RFC 4271 §5.1.5: LOCAL_PREF from an external peer is ignored;
        // ORIGINATOR_ID/CLUSTER_LIST are iBGP-only (RFC 4456 §8).
        attrs.local_pref = None;
        attrs.originator_id = None;
        attrs.cluster_list.clear();
    }
    Ok(attrs)
}
