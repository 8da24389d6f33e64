//! Address families and the negotiated session context that decoding and
//! encoding depend on (RFC 4760 AFI/SAFI, RFC 6793 4-octet AS, RFC 7911
//! ADD-PATH, RFC 8654 extended messages).
//!
//! The context is computed once when the OPENs have been exchanged
//! ([`SessionContext::negotiate`]) and then passed to every decode and
//! encode call. It is `Copy` and holds no allocation.

use std::fmt;

use super::capability::Capability;
use super::header::{MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN};
use super::open::Open;

/// Address Family Identifier (RFC 4760 §3, IANA "Address Family Numbers").
/// Any value is representable; [`Afi::IPV4`] and [`Afi::IPV6`] are the
/// ones whose NLRI this codec parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    /// IPv4.
    pub const IPV4: Afi = Afi(1);
    /// IPv6.
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (RFC 4760 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    /// Unicast forwarding.
    pub const UNICAST: Safi = Safi(1);
    /// Multicast forwarding (same NLRI encoding as unicast).
    pub const MULTICAST: Safi = Safi(2);
}

/// An (AFI, SAFI) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    /// Address family.
    pub afi: Afi,
    /// Subsequent address family.
    pub safi: Safi,
}

impl Family {
    /// IPv4 unicast, the family of the plain UPDATE NLRI fields.
    pub const IPV4_UNICAST: Family = Family::new(Afi::IPV4, Safi::UNICAST);
    /// IPv6 unicast.
    pub const IPV6_UNICAST: Family = Family::new(Afi::IPV6, Safi::UNICAST);
    /// IPv4 multicast.
    pub const IPV4_MULTICAST: Family = Family::new(Afi::IPV4, Safi::MULTICAST);
    /// IPv6 multicast.
    pub const IPV6_MULTICAST: Family = Family::new(Afi::IPV6, Safi::MULTICAST);

    /// A family from its numbers.
    pub const fn new(afi: Afi, safi: Safi) -> Self {
        Self { afi, safi }
    }

    /// Whether this codec can parse prefixes of this family: IPv4 or IPv6
    /// with SAFI unicast or multicast (both use the RFC 4271 prefix
    /// encoding).
    pub fn is_supported(self) -> bool {
        self.slot().is_some()
    }

    /// Whether the family's addresses are IPv6.
    pub fn is_ipv6(self) -> bool {
        self.afi == Afi::IPV6
    }

    /// Index into the per-family bit sets, for supported families only.
    fn slot(self) -> Option<u8> {
        match (self.afi, self.safi) {
            (Afi::IPV4, Safi::UNICAST) => Some(0),
            (Afi::IPV4, Safi::MULTICAST) => Some(1),
            (Afi::IPV6, Safi::UNICAST) => Some(2),
            (Afi::IPV6, Safi::MULTICAST) => Some(3),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let afi = match self.afi {
            Afi::IPV4 => "ipv4".to_string(),
            Afi::IPV6 => "ipv6".to_string(),
            Afi(n) => format!("afi{n}"),
        };
        let safi = match self.safi {
            Safi::UNICAST => "unicast".to_string(),
            Safi::MULTICAST => "multicast".to_string(),
            Safi(n) => format!("safi{n}"),
        };
        write!(f, "{afi}-{safi}")
    }
}

/// A set of the families this codec parses (see [`Family::is_supported`]),
/// as a bit set so [`SessionContext`] stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FamilySet(u8);

impl FamilySet {
    /// The empty set.
    pub const EMPTY: FamilySet = FamilySet(0);

    /// Add a family; unsupported families are ignored (returns false).
    pub fn insert(&mut self, family: Family) -> bool {
        match family.slot() {
            Some(bit) => {
                self.0 |= 1 << bit;
                true
            }
            None => false,
        }
    }

    /// Builder form of [`FamilySet::insert`].
    pub fn with(mut self, family: Family) -> Self {
        self.insert(family);
        self
    }

    /// Whether the family is in the set.
    pub fn contains(self, family: Family) -> bool {
        family.slot().is_some_and(|bit| self.0 & (1 << bit) != 0)
    }
}

/// What the OPEN exchange negotiated, as the codec needs it.
///
/// `Default` is the context before OPENs are exchanged (2-octet AS, 4096
/// octet messages, no ADD-PATH), which is what OPEN itself is decoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionContext {
    /// Both sides sent the 4-octet AS capability (RFC 6793): AS_PATH and
    /// AGGREGATOR carry 4-octet AS numbers, AS4_* are not used.
    pub four_octet_as: bool,
    /// Both sides sent the Extended Message capability (RFC 8654): UPDATE,
    /// NOTIFICATION and ROUTE-REFRESH may be up to 65535 octets.
    pub extended_message: bool,
    /// Families whose NLRI we receive with ADD-PATH path identifiers
    /// (we advertised Receive and the peer Send, RFC 7911 §4).
    pub add_path_receive: FamilySet,
    /// Families whose NLRI we send with ADD-PATH path identifiers
    /// (we advertised Send and the peer Receive).
    pub add_path_send: FamilySet,
}

impl SessionContext {
    /// A context for a session where both sides speak 4-octet AS and
    /// nothing else is negotiated; handy in tests.
    pub fn four_octet() -> Self {
        Self {
            four_octet_as: true,
            ..Self::default()
        }
    }

    /// Largest message this session may carry (RFC 4271 §4.1, RFC 8654).
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }

    /// Whether NLRI of `family` we receive carry path identifiers.
    pub fn receives_path_ids(&self, family: Family) -> bool {
        self.add_path_receive.contains(family)
    }

    /// Whether NLRI of `family` we send must carry path identifiers.
    pub fn sends_path_ids(&self, family: Family) -> bool {
        self.add_path_send.contains(family)
    }

    /// The context from our OPEN (`local`) and the peer's (`remote`).
    ///
    /// RFC 6793 and RFC 8654: a feature is on when both sides advertise
    /// it. RFC 7911 §4: we receive path identifiers for a family when we
    /// advertised Receive (or Both) and the peer Send (or Both), and send
    /// them in the mirrored case.
    pub fn negotiate(local: &Open, remote: &Open) -> Self {
        let has = |o: &Open, f: fn(&Capability) -> bool| o.capabilities.iter().any(f);
        let four = |c: &Capability| matches!(c, Capability::FourOctetAs(_));
        let ext = |c: &Capability| matches!(c, Capability::ExtendedMessage);
        let mut ctx = Self {
            four_octet_as: has(local, four) && has(remote, four),
            extended_message: has(local, ext) && has(remote, ext),
            ..Self::default()
        };
        let modes = |o: &Open, family: Family| {
            o.capabilities
                .iter()
                .filter_map(|c| match c {
                    Capability::AddPath(list) => Some(list),
                    _ => None,
                })
                .flatten()
                .filter(|a| a.family == family)
                .fold((false, false), |(r, s), a| {
                    (r || a.mode.receives(), s || a.mode.sends())
                })
        };
        for family in [
            Family::IPV4_UNICAST,
            Family::IPV4_MULTICAST,
            Family::IPV6_UNICAST,
            Family::IPV6_MULTICAST,
        ] {
            let (l_recv, l_send) = modes(local, family);
            let (r_recv, r_send) = modes(remote, family);
            if l_recv && r_send {
                ctx.add_path_receive.insert(family);
            }
            if l_send && r_recv {
                ctx.add_path_send.insert(family);
            }
        }
        ctx
    }
}
