//! Prefixes and NLRI fields (RFC 4271 §4.3, RFC 4760 §5, RFC 7911 §3).
//!
//! An NLRI field is decoded in one pass into a compact array
//! ([`NlriSet`]) and read through a zero-allocation iterator of small
//! `Copy` entries; nothing is allocated per prefix. This is what lets a
//! full table (a million /24s) decode in a few milliseconds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::context::{Afi, Family};
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::notification::{Notification, UpdateSubcode};

/// An IP prefix: address and length, host bits always zero.
///
/// Small and `Copy` (no heap), so iterating a million of them costs no
/// allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// A prefix length longer than the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {len} is longer than the address allows ({max})")]
pub struct PrefixLengthError {
    /// Length given.
    pub len: u8,
    /// Maximum for the family.
    pub max: u8,
}

#[inline]
fn mask_v4(a: u32, len: u8) -> u32 {
    // Branch-free: shifting a u64 by up to 32 is defined, and the low 32
    // bits of the result are the netmask (0 for /0).
    let shift = 32u32.saturating_sub(u32::from(len));
    a & ((u64::MAX << shift) as u32)
}

#[inline]
fn mask_v6(a: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => a,
        l => a & (u128::MAX << (128 - u32::from(l))),
    }
}

impl Prefix {
    /// A prefix; host bits beyond `len` are cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixLengthError> {
        match addr {
            IpAddr::V4(a) => Self::v4(a, len),
            IpAddr::V6(a) => Self::v6(a, len),
        }
    }

    /// An IPv4 prefix; host bits are cleared.
    pub fn v4(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixLengthError> {
        if len > 32 {
            return Err(PrefixLengthError { len, max: 32 });
        }
        Ok(Self {
            addr: IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(addr), len))),
            len,
        })
    }

    /// An IPv6 prefix; host bits are cleared.
    pub fn v6(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixLengthError> {
        if len > 128 {
            return Err(PrefixLengthError { len, max: 128 });
        }
        Ok(Self {
            addr: IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(addr), len))),
            len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The AFI of the prefix.
    pub fn afi(&self) -> Afi {
        if self.is_ipv6() {
            Afi::IPV6
        } else {
            Afi::IPV4
        }
    }

    /// Octets the prefix takes in an NLRI field (length octet included).
    pub fn wire_len(&self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }

    /// Append the RFC 4271 §4.3 encoding: length, then just enough octets.
    #[inline]
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => {
                // Fixed-size writes: a variable-length copy per prefix
                // dominates packing a full table otherwise.
                let [a0, a1, a2, a3] = a.octets();
                let len = self.len;
                match n {
                    0 => out.push(len),
                    1 => out.extend_from_slice(&[len, a0]),
                    2 => out.extend_from_slice(&[len, a0, a1]),
                    3 => out.extend_from_slice(&[len, a0, a1, a2]),
                    _ => out.extend_from_slice(&[len, a0, a1, a2, a3]),
                }
            }
            IpAddr::V6(a) => {
                out.push(self.len);
                out.extend_from_slice(a.octets().get(..n).unwrap_or_default());
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A string that is not `ADDR/LEN`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a prefix (ADDR/LEN)")]
pub struct PrefixParseError {
    /// The input.
    pub input: String,
}

impl FromStr for Prefix {
    type Err = PrefixParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PrefixParseError {
            input: s.to_string(),
        };
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        Prefix::new(addr, len).map_err(|_| err())
    }
}

impl From<Prefix> for ipnet::IpNet {
    fn from(p: Prefix) -> Self {
        // The length was validated against the family on construction.
        ipnet::IpNet::new(p.addr, p.len).unwrap_or_else(|_| ipnet::IpNet::from(p.addr))
    }
}

impl From<ipnet::IpNet> for Prefix {
    fn from(n: ipnet::IpNet) -> Self {
        // IpNet guarantees the length fits the family.
        let addr = n.trunc().addr();
        Prefix {
            addr,
            len: n.prefix_len(),
        }
    }
}

/// One NLRI entry: a prefix and, on ADD-PATH sessions, its path
/// identifier (RFC 7911 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NlriEntry {
    /// Path identifier, present exactly when ADD-PATH is in use for the
    /// family in this direction.
    pub path_id: Option<u32>,
    /// The prefix.
    pub prefix: Prefix,
}

impl NlriEntry {
    /// An entry without a path identifier.
    pub fn new(prefix: Prefix) -> Self {
        Self {
            path_id: None,
            prefix,
        }
    }

    /// Octets the entry takes with or without a path identifier.
    pub fn wire_len(&self, add_path: bool) -> usize {
        self.prefix.wire_len() + if add_path { 4 } else { 0 }
    }

    /// Append the entry; with `add_path`, a missing path id is sent as 0.
    pub fn encode(&self, add_path: bool, out: &mut Vec<u8>) {
        if add_path {
            out.extend_from_slice(&self.path_id.unwrap_or(0).to_be_bytes());
        }
        self.prefix.encode(out);
    }
}

impl From<Prefix> for NlriEntry {
    fn from(prefix: Prefix) -> Self {
        Self::new(prefix)
    }
}

/// An NLRI (or withdrawn routes) field of one family, decoded once into a
/// compact array and read through a zero-allocation iterator.
///
/// ```text
/// +---------------------------+
/// | Path Identifier (4 octets)|   only with ADD-PATH (RFC 7911 §3)
/// +---------------------------+
/// |   Length (1 octet)        |
/// +---------------------------+
/// |   Prefix (variable)       |
/// +---------------------------+
/// ```
///
/// Why decoded and not kept as wire bytes: walking an NLRI field is a
/// serial chain (each prefix's position depends on the previous length),
/// so validating it and later iterating it would pay that chain twice.
/// Decoding stores (address, length) pairs — 8 octets per IPv4 prefix, a
/// few allocations per message, none per prefix — and iteration is then a
/// plain array walk.
///
/// Host bits beyond the length are cleared on decode (they are ignored on
/// the wire, RFC 4271 §4.3), so equality compares what the field means:
/// the family and the entries (path ids included), not the ADD-PATH mode
/// of an empty field.
#[derive(Clone)]
pub struct NlriSet {
    family: Family,
    add_path: bool,
    slots: Slots,
    /// One per entry when `add_path`, else empty.
    path_ids: Vec<u32>,
}

/// Decoded prefixes: (address, length), host bits cleared.
#[derive(Clone)]
enum Slots {
    V4(Vec<(u32, u8)>),
    V6(Vec<([u8; 16], u8)>),
}

impl Slots {
    fn len(&self) -> usize {
        match self {
            Slots::V4(v) => v.len(),
            Slots::V6(v) => v.len(),
        }
    }
}

impl fmt::Debug for NlriSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NlriSet")
            .field("family", &self.family)
            .field("add_path", &self.add_path)
            .field("entries", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for NlriSet {
    fn eq(&self, other: &Self) -> bool {
        self.family == other.family && self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for NlriSet {}

fn invalid_network(reason: &'static str) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::InvalidNetworkField { reason },
        Notification::update(UpdateSubcode::InvalidNetworkField, Vec::new()),
    )
}

const PATH_ID_RUNS_PAST: &str = "path identifier runs past the field";
const PREFIX_TOO_LONG: &str = "prefix length exceeds the address length";
const PREFIX_RUNS_PAST: &str = "prefix runs past the field";

/// The IPv4 hot loop: one pass over the field, checking and storing every
/// prefix. Bounds are checked by slice splitting; nothing is allocated per
/// prefix (the vectors are sized from the field length up front).
fn decode_v4(
    mut rest: &[u8],
    add_path: bool,
    slots: &mut Vec<(u32, u8)>,
    path_ids: &mut Vec<u32>,
) -> Result<(), DecodeError> {
    while !rest.is_empty() {
        if add_path {
            let Some((id, r)) = rest.split_first_chunk::<4>() else {
                return Err(invalid_network(PATH_ID_RUNS_PAST));
            };
            path_ids.push(u32::from_be_bytes(*id));
            rest = r;
        }
        let Some((&len, r)) = rest.split_first() else {
            return Err(invalid_network(PATH_ID_RUNS_PAST));
        };
        if len > 32 {
            return Err(invalid_network(PREFIX_TOO_LONG));
        }
        let Some((octets, r)) = r.split_at_checked(usize::from(len).div_ceil(8)) else {
            return Err(invalid_network(PREFIX_RUNS_PAST));
        };
        // Assemble the address from its significant octets without a
        // variable-length copy.
        let a = match *octets {
            [] => 0,
            [b0] => u32::from(b0) << 24,
            [b0, b1] => u32::from_be_bytes([b0, b1, 0, 0]),
            [b0, b1, b2] => u32::from_be_bytes([b0, b1, b2, 0]),
            [b0, b1, b2, b3] => u32::from_be_bytes([b0, b1, b2, b3]),
            _ => return Err(invalid_network(PREFIX_TOO_LONG)),
        };
        slots.push((mask_v4(a, len), len));
        rest = r;
    }
    Ok(())
}

fn decode_v6(
    mut rest: &[u8],
    add_path: bool,
    slots: &mut Vec<([u8; 16], u8)>,
    path_ids: &mut Vec<u32>,
) -> Result<(), DecodeError> {
    while !rest.is_empty() {
        if add_path {
            let Some((id, r)) = rest.split_first_chunk::<4>() else {
                return Err(invalid_network(PATH_ID_RUNS_PAST));
            };
            path_ids.push(u32::from_be_bytes(*id));
            rest = r;
        }
        let Some((&len, r)) = rest.split_first() else {
            return Err(invalid_network(PATH_ID_RUNS_PAST));
        };
        if len > 128 {
            return Err(invalid_network(PREFIX_TOO_LONG));
        }
        let n = usize::from(len).div_ceil(8);
        let Some((octets, r)) = r.split_at_checked(n) else {
            return Err(invalid_network(PREFIX_RUNS_PAST));
        };
        let mut a = [0u8; 16];
        if let Some(dst) = a.get_mut(..n) {
            dst.copy_from_slice(octets);
        }
        let masked = mask_v6(u128::from_be_bytes(a), len).to_be_bytes();
        slots.push((masked, len));
        rest = r;
    }
    Ok(())
}

impl NlriSet {
    /// An empty field.
    pub fn new(family: Family, add_path: bool) -> Self {
        let slots = if family.is_ipv6() {
            Slots::V6(Vec::new())
        } else {
            Slots::V4(Vec::new())
        };
        Self {
            family,
            add_path,
            slots,
            path_ids: Vec::new(),
        }
    }

    /// Decode and validate a field received on the wire. Errors are
    /// UPDATE Message Error / Invalid Network Field (RFC 4271 §6.3; RFC
    /// 7606 §5.3 allows nothing gentler when NLRI cannot be parsed).
    pub fn decode(family: Family, add_path: bool, bytes: &[u8]) -> Result<Self, DecodeError> {
        if !family.is_supported() {
            return Err(DecodeError::new(
                DecodeErrorKind::UnsupportedFamily {
                    afi: family.afi.0,
                    safi: family.safi.0,
                },
                Notification::update(UpdateSubcode::OptionalAttributeError, Vec::new()),
            ));
        }
        // Capacities from the field length (bounded by the message), sized
        // for typical prefixes (/24, /48) so a table needs no regrowth;
        // denser fields grow a few times, never per prefix.
        let id_len = if add_path { 4 } else { 0 };
        let mut path_ids = if add_path {
            Vec::with_capacity(bytes.len() / 5 + 1)
        } else {
            Vec::new()
        };
        let slots = if family.is_ipv6() {
            let mut v = Vec::with_capacity(bytes.len() / (7 + id_len) + 1);
            decode_v6(bytes, add_path, &mut v, &mut path_ids)?;
            Slots::V6(v)
        } else {
            let mut v = Vec::with_capacity(bytes.len() / (4 + id_len) + 1);
            decode_v4(bytes, add_path, &mut v, &mut path_ids)?;
            Slots::V4(v)
        };
        Ok(Self {
            family,
            add_path,
            slots,
            path_ids,
        })
    }

    /// A field from entries. With `add_path`, entries without a path id
    /// get 0; without it, path ids are dropped.
    pub fn from_entries<I>(family: Family, add_path: bool, entries: I) -> Result<Self, EncodeError>
    where
        I: IntoIterator<Item = NlriEntry>,
    {
        let mut set = Self::new(family, add_path);
        for e in entries {
            set.push(e)?;
        }
        Ok(set)
    }

    /// A field of prefixes without path identifiers.
    pub fn from_prefixes<I>(family: Family, prefixes: I) -> Result<Self, EncodeError>
    where
        I: IntoIterator<Item = Prefix>,
    {
        Self::from_entries(family, false, prefixes.into_iter().map(NlriEntry::new))
    }

    /// Append one entry.
    pub fn push(&mut self, entry: NlriEntry) -> Result<(), EncodeError> {
        if !self.family.is_supported() {
            return Err(EncodeError::UnsupportedFamily {
                family: self.family.to_string(),
            });
        }
        let len = entry.prefix.len;
        match (&mut self.slots, entry.prefix.addr) {
            (Slots::V4(v), IpAddr::V4(a)) => v.push((u32::from(a), len)),
            (Slots::V6(v), IpAddr::V6(a)) => v.push((a.octets(), len)),
            _ => {
                return Err(EncodeError::FamilyMismatch {
                    prefix: entry.prefix.to_string(),
                    family: self.family.to_string(),
                })
            }
        }
        if self.add_path {
            self.path_ids.push(entry.path_id.unwrap_or(0));
        }
        Ok(())
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Whether entries carry path identifiers.
    pub fn has_path_ids(&self) -> bool {
        self.add_path
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, without allocating.
    pub fn iter(&self) -> NlriIter<'_> {
        NlriIter { set: self, next: 0 }
    }

    /// Octets this field takes when sent with or without path ids.
    pub fn encoded_len(&self, add_path: bool) -> usize {
        let ids = if add_path { 4 * self.len() } else { 0 };
        let prefixes: usize = match &self.slots {
            Slots::V4(v) => v.iter().map(|(_, l)| 1 + usize::from(*l).div_ceil(8)).sum(),
            Slots::V6(v) => v.iter().map(|(_, l)| 1 + usize::from(*l).div_ceil(8)).sum(),
        };
        ids + prefixes
    }

    /// Append the field as sent with or without path ids (a missing id is
    /// sent as 0).
    pub fn encode(&self, add_path: bool, out: &mut Vec<u8>) {
        for e in self.iter() {
            e.encode(add_path, out);
        }
    }
}

impl<'a> IntoIterator for &'a NlriSet {
    type Item = NlriEntry;
    type IntoIter = NlriIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over a decoded NLRI field. Never allocates.
#[derive(Debug, Clone)]
pub struct NlriIter<'a> {
    set: &'a NlriSet,
    next: usize,
}

impl Iterator for NlriIter<'_> {
    type Item = NlriEntry;

    #[inline]
    fn next(&mut self) -> Option<NlriEntry> {
        let i = self.next;
        let prefix = match &self.set.slots {
            Slots::V4(v) => {
                let &(a, len) = v.get(i)?;
                Prefix {
                    addr: IpAddr::V4(Ipv4Addr::from(a)),
                    len,
                }
            }
            Slots::V6(v) => {
                let &(a, len) = v.get(i)?;
                Prefix {
                    addr: IpAddr::V6(Ipv6Addr::from(a)),
                    len,
                }
            }
        };
        let path_id = if self.set.add_path {
            self.set.path_ids.get(i).copied()
        } else {
            None
        };
        self.next = i + 1;
        Some(NlriEntry { path_id, prefix })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.set.len().saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for NlriIter<'_> {}
