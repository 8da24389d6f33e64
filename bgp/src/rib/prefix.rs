//! Per-family table keys for the codec's [`Prefix`], and prefix helpers.
//!
//! The RIB stores a million routes, so the key matters: the codec's
//! `Prefix` (an `IpAddr` and a length, 20 bytes) is the API type, but the
//! tables key IPv4 by one packed `u64` (`addr << 8 | len`) and IPv6 by a
//! `(u128, u8)`, so the common IPv4 slot is 8 bytes of key.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{Family, Prefix};

/// The unicast family of a prefix (the RIB carries SAFI 1 only).
pub fn family_of(p: Prefix) -> Family {
    if p.is_ipv6() {
        Family::IPV6_UNICAST
    } else {
        Family::IPV4_UNICAST
    }
}

/// Whether `inner` lies inside `outer` (or is it).
pub fn contains(outer: Prefix, inner: Prefix) -> bool {
    if inner.prefix_len() < outer.prefix_len() {
        return false;
    }
    match (outer.addr(), inner.addr()) {
        (IpAddr::V4(_), IpAddr::V4(b)) => {
            Prefix::v4(b, outer.prefix_len()).is_ok_and(|p| p == outer)
        }
        (IpAddr::V6(_), IpAddr::V6(b)) => {
            Prefix::v6(b, outer.prefix_len()).is_ok_and(|p| p == outer)
        }
        _ => false,
    }
}

/// The key of a per-family table. The RIB's code is generic over it so
/// each family keeps its own small key.
pub(crate) trait TableKey: Copy + Eq + Hash + Ord + fmt::Debug {
    fn prefix(self) -> Prefix;
}

/// Packed IPv4 key: `addr << 8 | len`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub(crate) struct V4Key(u64);

/// IPv6 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub(crate) struct V6Key(u128, u8);

/// A prefix's table key.
pub(crate) enum Key {
    V4(V4Key),
    V6(V6Key),
}

impl Key {
    pub(crate) fn of(p: Prefix) -> Key {
        let len = p.prefix_len();
        match p.addr() {
            IpAddr::V4(a) => Key::V4(V4Key((u64::from(u32::from(a)) << 8) | u64::from(len))),
            IpAddr::V6(a) => Key::V6(V6Key(u128::from(a), len)),
        }
    }
}

impl TableKey for V4Key {
    fn prefix(self) -> Prefix {
        // The key came from a valid prefix: the casts are exact and the
        // length is at most 32.
        let addr = Ipv4Addr::from((self.0 >> 8) as u32);
        let len = (self.0 & 0xff) as u8;
        Prefix::v4(addr, len.min(32)).unwrap_or_else(|_| unreachable!("length clamped"))
    }
}

impl TableKey for V6Key {
    fn prefix(self) -> Prefix {
        Prefix::v6(Ipv6Addr::from(self.0), self.1.min(128))
            .unwrap_or_else(|_| unreachable!("length clamped"))
    }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip() {
        for s in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "2001:db8::/32",
            "::/0",
        ] {
            let back = match Key::of(p(s)) {
                Key::V4(k) => k.prefix(),
                Key::V6(k) => k.prefix(),
            };
            assert_eq!(back, p(s));
        }
    }

    #[test]
    fn containment() {
        let outer = p("10.244.0.0/16");
        assert!(contains(outer, p("10.244.3.0/24")));
        assert!(contains(outer, outer));
        assert!(!contains(outer, p("10.245.0.0/24")));
        assert!(!contains(outer, p("10.0.0.0/8")));
        assert!(!contains(outer, p("2001:db8::/32")));
        assert_eq!(family_of(p("2001:db8::/32")), Family::IPV6_UNICAST);
    }
}
