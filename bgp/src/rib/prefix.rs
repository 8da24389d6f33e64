//! Prefixes as small `Copy` keys, and the per-family table keys.
//!
//! The RIB stores a million routes, so the key matters: an IPv4 prefix
//! packs into one `u64` (`addr << 8 | len`), an IPv6 prefix into a
//! `(u128, u8)`. Host bits are always zero, so two spellings of one
//! prefix are one key.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 prefix with its host bits cleared.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ipv4Prefix {
    addr: u32,
    len: u8,
}

/// An IPv6 prefix with its host bits cleared.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ipv6Prefix {
    addr: u128,
    len: u8,
}

/// An IPv4 or IPv6 unicast prefix (the NLRI of AFI 1/2, SAFI 1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Prefix {
    /// AFI 1.
    V4(Ipv4Prefix),
    /// AFI 2.
    V6(Ipv6Prefix),
}

/// A prefix that could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The length is longer than the address.
    #[error("prefix length {len} is longer than {max}")]
    TooLong {
        /// The length given.
        len: u8,
        /// 32 or 128.
        max: u8,
    },
    /// Text that is not `ADDR/LEN`.
    #[error("{text:?} is not a prefix (ADDR/LEN)")]
    Syntax {
        /// The text given.
        text: String,
    },
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

// `len` is the prefix length, not a container size.
#[allow(clippy::len_without_is_empty)]
impl Ipv4Prefix {
    /// Builds a prefix; host bits are cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::TooLong { len, max: 32 });
        }
        Ok(Self {
            addr: u32::from(addr) & mask32(len),
            len,
        })
    }
    /// The network address.
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
    /// The prefix length.
    pub fn len(self) -> u8 {
        self.len
    }
    /// Whether this is the default route `0.0.0.0/0`.
    pub fn is_default(self) -> bool {
        self.len == 0
    }
    /// The packed table key: `addr << 8 | len`.
    pub(crate) fn key(self) -> u64 {
        (u64::from(self.addr) << 8) | u64::from(self.len)
    }
    pub(crate) fn from_key(key: u64) -> Self {
        // The key was built by `key()`, so the truncating casts are exact.
        Self {
            addr: (key >> 8) as u32,
            len: (key & 0xff) as u8,
        }
    }
}

// `len` is the prefix length, not a container size.
#[allow(clippy::len_without_is_empty)]
impl Ipv6Prefix {
    /// Builds a prefix; host bits are cleared.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::TooLong { len, max: 128 });
        }
        Ok(Self {
            addr: u128::from(addr) & mask128(len),
            len,
        })
    }
    /// The network address.
    pub fn addr(self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }
    /// The prefix length.
    pub fn len(self) -> u8 {
        self.len
    }
    /// Whether this is the default route `::/0`.
    pub fn is_default(self) -> bool {
        self.len == 0
    }
}

// `len` is the prefix length, not a container size.
#[allow(clippy::len_without_is_empty)]
impl Prefix {
    /// Builds a prefix of either family; host bits are cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        match addr {
            IpAddr::V4(a) => Ipv4Prefix::new(a, len).map(Prefix::V4),
            IpAddr::V6(a) => Ipv6Prefix::new(a, len).map(Prefix::V6),
        }
    }
    /// The network address.
    pub fn addr(self) -> IpAddr {
        match self {
            Prefix::V4(p) => IpAddr::V4(p.addr()),
            Prefix::V6(p) => IpAddr::V6(p.addr()),
        }
    }
    /// The prefix length.
    pub fn len(self) -> u8 {
        match self {
            Prefix::V4(p) => p.len,
            Prefix::V6(p) => p.len,
        }
    }
    /// Whether this is a default route.
    pub fn is_default(self) -> bool {
        self.len() == 0
    }
    /// The address family.
    pub fn family(self) -> Family {
        match self {
            Prefix::V4(_) => Family::Ipv4,
            Prefix::V6(_) => Family::Ipv6,
        }
    }
    /// Whether `other` lies inside this prefix (or is it).
    pub fn contains(self, other: Prefix) -> bool {
        match (self, other) {
            (Prefix::V4(a), Prefix::V4(b)) => b.len >= a.len && (b.addr & mask32(a.len)) == a.addr,
            (Prefix::V6(a), Prefix::V6(b)) => b.len >= a.len && (b.addr & mask128(a.len)) == a.addr,
            _ => false,
        }
    }
    /// Bytes this prefix takes in an NLRI field (RFC 4271 §4.3): one
    /// length octet and the significant address octets.
    pub fn nlri_len(self) -> usize {
        1 + usize::from(self.len()).div_ceil(8)
    }
}

/// An address family the RIB carries (SAFI 1, unicast).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Family {
    /// AFI 1, SAFI 1.
    Ipv4,
    /// AFI 2, SAFI 1.
    Ipv6,
}

impl Family {
    /// The IANA AFI number.
    pub fn afi(self) -> u16 {
        match self {
            Family::Ipv4 => 1,
            Family::Ipv6 => 2,
        }
    }
    /// The SAFI number (always unicast here).
    pub fn safi(self) -> u8 {
        1
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len())
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax { text: s.into() };
        let (a, l) = s.split_once('/').ok_or_else(syntax)?;
        let addr: IpAddr = a.parse().map_err(|_| syntax())?;
        let len: u8 = l.parse().map_err(|_| syntax())?;
        Prefix::new(addr, len)
    }
}

impl From<Ipv4Prefix> for Prefix {
    fn from(p: Ipv4Prefix) -> Self {
        Prefix::V4(p)
    }
}

impl From<Ipv6Prefix> for Prefix {
    fn from(p: Ipv6Prefix) -> Self {
        Prefix::V6(p)
    }
}

/// An ADD-PATH path identifier (RFC 7911 §3); 0 when ADD-PATH is not
/// negotiated for the family.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct PathId(pub u32);

/// One announced or withdrawn route: a prefix and its ADD-PATH id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Nlri {
    /// The prefix.
    pub prefix: Prefix,
    /// The path id (0 without ADD-PATH).
    pub path_id: PathId,
}

impl Nlri {
    /// A route without an ADD-PATH id.
    pub fn new(prefix: Prefix) -> Self {
        Self {
            prefix,
            path_id: PathId(0),
        }
    }
}

impl From<Prefix> for Nlri {
    fn from(prefix: Prefix) -> Self {
        Nlri::new(prefix)
    }
}

/// The key of a per-family table. Implemented by the packed IPv4 key and
/// the IPv6 key; the RIB's code is generic over it so each family keeps
/// its own small key instead of a 32-byte enum.
pub(crate) trait TableKey: Copy + Eq + Hash + Ord + fmt::Debug {
    fn prefix(self) -> Prefix;
}

/// Packed IPv4 key (see [`Ipv4Prefix::key`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub(crate) struct V4Key(pub(crate) u64);

/// IPv6 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub(crate) struct V6Key(pub(crate) u128, pub(crate) u8);

impl TableKey for V4Key {
    fn prefix(self) -> Prefix {
        Prefix::V4(Ipv4Prefix::from_key(self.0))
    }
}

impl TableKey for V6Key {
    fn prefix(self) -> Prefix {
        Prefix::V6(Ipv6Prefix {
            addr: self.0,
            len: self.1,
        })
    }
}

impl From<Ipv4Prefix> for V4Key {
    fn from(p: Ipv4Prefix) -> Self {
        V4Key(p.key())
    }
}

impl From<Ipv6Prefix> for V6Key {
    fn from(p: Ipv6Prefix) -> Self {
        V6Key(p.addr, p.len)
    }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_and_keys_round_trip() {
        let p: Prefix = "10.1.2.3/8".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        let Prefix::V4(v4) = p else { panic!() };
        assert_eq!(V4Key::from(v4).prefix(), p);
        let q: Prefix = "2001:db8::1/32".parse().unwrap();
        assert_eq!(q.to_string(), "2001:db8::/32");
        let Prefix::V6(v6) = q else { panic!() };
        assert_eq!(V6Key::from(v6).prefix(), q);
    }

    #[test]
    fn contains_and_lengths() {
        let p: Prefix = "10.244.0.0/16".parse().unwrap();
        assert!(p.contains("10.244.3.0/24".parse().unwrap()));
        assert!(!p.contains("10.245.0.0/24".parse().unwrap()));
        assert!(!p.contains("10.0.0.0/8".parse().unwrap()));
        assert_eq!(p.nlri_len(), 3);
        assert!("1.2.3.4/33".parse::<Prefix>().is_err());
        assert!("x/3".parse::<Prefix>().is_err());
    }
}
