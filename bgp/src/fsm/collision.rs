//! BGP connection collision resolution, RFC 4271 §6.8 and RFC 6286 §2.1.
//!
//! Pure: given the two speakers' identifiers (and AS numbers, for the equal
//! identifier case of RFC 6286) and who initiated each connection, say
//! which connection survives. The FSM closes the loser with NOTIFICATION
//! Cease / Connection Collision Resolution (RFC 4486 subcode 7).

use super::event::Direction;

/// One side of the comparison: a BGP Identifier and the speaker's AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker {
    /// BGP Identifier, compared as an unsigned 32-bit integer (§6.8).
    pub id: u32,
    /// The speaker's (4-octet) AS number, the RFC 6286 tie-breaker.
    pub asn: u32,
}

/// Which of the two colliding connections to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// The connection that was there first (e.g. already in OpenConfirm).
    Existing,
    /// The connection whose OPEN was just received.
    New,
}

/// Resolves a collision between the `existing` connection and a `new`
/// one, each described by who initiated it.
///
/// RFC 4271 §6.8: "retain only the connection initiated by the BGP speaker
/// with the higher-valued BGP Identifier". RFC 6286 §2.1: with equal
/// identifiers (possible between ASes), the speaker with the larger AS
/// number wins. Two connections in the same direction are not a collision
/// in the §6.8 sense (a duplicate, e.g. a peer reconnecting before we saw
/// the old socket die); we keep the existing one there, which is also what
/// a fully equal comparison falls back to, so both ends agree.
pub fn resolve(local: Speaker, remote: Speaker, existing: Direction, new: Direction) -> Winner {
    if existing == new {
        return Winner::Existing;
    }
    let local_wins = (local.id, local.asn) > (remote.id, remote.asn);
    let remote_wins = (remote.id, remote.asn) > (local.id, local.asn);
    // The winner keeps the connection it initiated: ours is Outbound.
    let keep = if local_wins {
        Direction::Outbound
    } else if remote_wins {
        Direction::Inbound
    } else {
        // Same identifier and AS: a misconfiguration the OPEN checks reject
        // for iBGP; keep what we have rather than flap.
        return Winner::Existing;
    };
    if existing == keep {
        Winner::Existing
    } else {
        Winner::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound, Outbound};

    fn sp(id: u32, asn: u32) -> Speaker {
        Speaker { id, asn }
    }

    #[test]
    fn higher_local_id_keeps_our_outbound() {
        let (l, r) = (sp(0xC000_0202, 65001), sp(0xC000_0201, 65002));
        assert_eq!(resolve(l, r, Outbound, Inbound), Winner::Existing);
        assert_eq!(resolve(l, r, Inbound, Outbound), Winner::New);
    }

    #[test]
    fn lower_local_id_keeps_peer_initiated() {
        let (l, r) = (sp(1, 65001), sp(2, 65002));
        assert_eq!(resolve(l, r, Outbound, Inbound), Winner::New);
        assert_eq!(resolve(l, r, Inbound, Outbound), Winner::Existing);
    }

    #[test]
    fn ids_compare_unsigned() {
        // 128.0.0.1 > 127.0.0.1 even though it is negative as an i32.
        let (l, r) = (sp(0x8000_0001, 1), sp(0x7F00_0001, 1));
        assert_eq!(resolve(l, r, Inbound, Outbound), Winner::New);
    }

    #[test]
    fn equal_ids_fall_back_to_as_number() {
        let (l, r) = (sp(7, 65010), sp(7, 65001));
        assert_eq!(resolve(l, r, Inbound, Outbound), Winner::New);
        assert_eq!(resolve(r, l, Inbound, Outbound), Winner::Existing);
    }

    #[test]
    fn both_ends_agree_on_the_same_tcp_connection() {
        // Connection X: A -> B (A's outbound, B's inbound). Connection Y: B -> A.
        for (a, b) in [
            (sp(1, 1), sp(2, 2)),
            (sp(9, 1), sp(2, 2)),
            (sp(5, 9), sp(5, 2)),
        ] {
            // At A, X is existing; at B, Y is existing (each saw its own first).
            let a_keeps_x = resolve(a, b, Outbound, Inbound) == Winner::Existing;
            let b_keeps_x = resolve(b, a, Outbound, Inbound) == Winner::New;
            assert_eq!(a_keeps_x, b_keeps_x);
        }
    }

    #[test]
    fn same_direction_keeps_existing() {
        assert_eq!(
            resolve(sp(1, 1), sp(2, 2), Inbound, Inbound),
            Winner::Existing
        );
    }
}
