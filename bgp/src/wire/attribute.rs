//! Path attributes (RFC 4271 §4.3, §5) and their RFC 7606 error handling.
//!
//! Decoding produces one [`PathAttributes`] per UPDATE (no per-prefix
//! work), the MP_REACH_NLRI / MP_UNREACH_NLRI attributes separately (they
//! carry routes, not route properties), and the RFC 7606 findings.
//!
//! # RFC 7606 §7 actions, as implemented
//!
//! Any malformation of an attribute (bad length, Optional/Transitive flags
//! that contradict the type per §3 c, a bad value) gets the attribute's
//! action from this table:
//!
//! | code | attribute          | malformed ->        | notes |
//! |------|--------------------|---------------------|-------|
//! | 1    | ORIGIN             | treat-as-withdraw   | length != 1, value > 2 (§7.1) |
//! | 2    | AS_PATH            | treat-as-withdraw   | zero-length or unknown segment, overrun (§7.2), AS 0 (RFC 7607) |
//! | 3    | NEXT_HOP           | treat-as-withdraw   | length != 4 (§7.3) |
//! | 4    | MULTI_EXIT_DISC    | treat-as-withdraw   | length != 4 (§7.4) |
//! | 5    | LOCAL_PREF         | treat-as-withdraw   | length != 4 (§7.5) |
//! | 6    | ATOMIC_AGGREGATE   | attribute discard   | length != 0 (§7.6) |
//! | 7    | AGGREGATOR         | attribute discard   | length != 6 / 8 by AS size (§7.7), AS 0 (RFC 7607) |
//! | 8    | COMMUNITIES        | treat-as-withdraw   | not a non-zero multiple of 4 (§7.8) |
//! | 9    | ORIGINATOR_ID      | treat-as-withdraw   | length != 4 (§7.9) |
//! | 10   | CLUSTER_LIST       | treat-as-withdraw   | not a non-zero multiple of 4 (§7.10) |
//! | 14   | MP_REACH_NLRI      | session reset       | any error, unknown AFI/SAFI, bad next-hop length (§7.11) |
//! | 15   | MP_UNREACH_NLRI    | session reset       | as MP_REACH (§7.12) |
//! | 16   | EXTENDED_COMMUNITIES | treat-as-withdraw | not a non-zero multiple of 8 (§7.14) |
//! | 17   | AS4_PATH           | attribute discard   | RFC 6793 §6; confed segments in it, AS 0 |
//! | 18   | AS4_AGGREGATOR     | attribute discard   | RFC 6793 §6; length != 8, AS 0 |
//! | 32   | LARGE_COMMUNITIES  | treat-as-withdraw   | RFC 8092 §6: not a non-zero multiple of 12 |
//!
//! Other rules:
//! - an attribute that overruns the path attribute field, or a header
//!   that does not fit: session reset (Malformed Attribute List), since
//!   RFC 7606 §4 allows nothing else when the NLRI cannot be located;
//! - duplicates (§3 g): all but the first discarded, except MP_REACH /
//!   MP_UNREACH duplicates: session reset;
//! - unrecognised well-known (Optional bit clear): session reset (RFC 4271
//!   §6.3, Unrecognized Well-known Attribute);
//! - unrecognised optional transitive: kept in [`PathAttributes::unknown`]
//!   for propagation with the Partial bit set;
//! - unrecognised optional non-transitive: dropped, listed as
//!   [`AttributeIssue::UnrecognizedNonTransitive`] in the discards;
//! - AS4_PATH / AS4_AGGREGATOR on a 4-octet session: discarded (RFC 6793
//!   §4.1);
//! - missing ORIGIN or AS_PATH (and NEXT_HOP when the IPv4 NLRI field is
//!   not empty) with any NLRI present: treat-as-withdraw (§3 d), checked
//!   in [`super::update`].
//!
//! Not checked here (semantic, left to the RIB): NEXT_HOP being a martian
//! or our own address, LOCAL_PREF from an external peer (§7.5 discard),
//! AS_PATH first AS versus the peer's AS.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use nom::number::complete::{be_u16, be_u8};
use nom::Parser;

pub use super::as_path::{merge_as4_path, AsPath, AsSegment, SegmentType};
use super::context::{Afi, Family, Safi, SessionContext};
use super::error::{
    AttributeFault, AttributeIssue, DecodeError, DecodeErrorKind, EncodeError, Rfc7606Action,
};
use super::nlri::NlriSet;
use super::notification::{Notification, UpdateSubcode};
use super::open::{Asn, AS_TRANS};

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flags {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive (1) or non-transitive (0).
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial: an optional transitive attribute passed on by a speaker
    /// that did not recognise it.
    pub const PARTIAL: u8 = 0x20;
    /// Two-octet attribute length.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    /// RFC 4271.
    pub const ORIGIN: u8 = 1;
    /// RFC 4271.
    pub const AS_PATH: u8 = 2;
    /// RFC 4271.
    pub const NEXT_HOP: u8 = 3;
    /// RFC 4271.
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// RFC 4271.
    pub const LOCAL_PREF: u8 = 5;
    /// RFC 4271.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// RFC 4271.
    pub const AGGREGATOR: u8 = 7;
    /// RFC 1997.
    pub const COMMUNITIES: u8 = 8;
    /// RFC 4456.
    pub const ORIGINATOR_ID: u8 = 9;
    /// RFC 4456.
    pub const CLUSTER_LIST: u8 = 10;
    /// RFC 4760.
    pub const MP_REACH_NLRI: u8 = 14;
    /// RFC 4760.
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// RFC 4360.
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    /// RFC 6793.
    pub const AS4_PATH: u8 = 17;
    /// RFC 6793.
    pub const AS4_AGGREGATOR: u8 = 18;
    /// RFC 8092.
    pub const LARGE_COMMUNITIES: u8 = 32;
}

use type_code as tc;

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// 0: learned by an interior protocol.
    Igp,
    /// 1: learned by EGP.
    Egp,
    /// 2: learned some other way.
    Incomplete,
}

impl Origin {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Igp),
            1 => Some(Self::Egp),
            2 => Some(Self::Incomplete),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Igp => 0,
            Self::Egp => 1,
            Self::Incomplete => 2,
        }
    }
}

/// AGGREGATOR / AS4_AGGREGATOR (RFC 4271 §5.1.7, RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    /// The AS that aggregated.
    pub asn: Asn,
    /// The aggregating speaker's address.
    pub address: Ipv4Addr,
}

/// A community (RFC 1997): 16-bit AS, 16-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED (RFC 1997).
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    /// NOPEER (RFC 3765).
    pub const NOPEER: Community = Community(0xFFFF_FF04);
    /// GRACEFUL_SHUTDOWN (RFC 8326).
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
    /// ACCEPT_OWN (RFC 7611).
    pub const ACCEPT_OWN: Community = Community(0xFFFF_0001);
    /// LLGR_STALE (RFC 9494).
    pub const LLGR_STALE: Community = Community(0xFFFF_0006);
    /// NO_LLGR (RFC 9494).
    pub const NO_LLGR: Community = Community(0xFFFF_0007);
    /// BLACKHOLE (RFC 7999).
    pub const BLACKHOLE: Community = Community(0xFFFF_029A);

    /// `asn:value`.
    pub fn new(asn: u16, value: u16) -> Self {
        Self((u32::from(asn) << 16) | u32::from(value))
    }

    /// The high 16 bits.
    pub fn asn(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The low 16 bits.
    pub fn value(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The well-known name, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NO_EXPORT => "NO_EXPORT",
            Self::NO_ADVERTISE => "NO_ADVERTISE",
            Self::NO_EXPORT_SUBCONFED => "NO_EXPORT_SUBCONFED",
            Self::NOPEER => "NOPEER",
            Self::GRACEFUL_SHUTDOWN => "GRACEFUL_SHUTDOWN",
            Self::ACCEPT_OWN => "ACCEPT_OWN",
            Self::LLGR_STALE => "LLGR_STALE",
            Self::NO_LLGR => "NO_LLGR",
            Self::BLACKHOLE => "BLACKHOLE",
            _ => return None,
        })
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}:{}", self.asn(), self.value()),
        }
    }
}

/// An extended community (RFC 4360 §2), kept as its 8 octets.
///
/// ```text
/// +--------+--------+--------+--------+--------+--------+--------+--------+
/// | Type   | Subtype|                 Value (6 octets)                    |
/// +--------+--------+--------+--------+--------+--------+--------+--------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendedCommunity(pub [u8; 8]);

impl ExtendedCommunity {
    /// The type octet (high).
    pub fn type_high(self) -> u8 {
        self.0[0]
    }

    /// The subtype octet (low), for types that have one.
    pub fn subtype(self) -> u8 {
        self.0[1]
    }

    /// Whether the community is transitive across ASes (T bit clear).
    pub fn is_transitive(self) -> bool {
        self.0[0] & 0x40 == 0
    }

    /// The IANA authority bit: first-come-first-served type (I bit clear).
    pub fn is_iana_fcfs(self) -> bool {
        self.0[0] & 0x80 == 0
    }

    /// A 2-octet-AS-specific Route Target (type 0x00, subtype 0x02).
    pub fn route_target(asn: u16, value: u32) -> Self {
        let a = asn.to_be_bytes();
        let v = value.to_be_bytes();
        Self([0x00, 0x02, a[0], a[1], v[0], v[1], v[2], v[3]])
    }
}

/// A large community (RFC 8092 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global Administrator (an AS).
    pub global_admin: u32,
    /// Local Data Part 1.
    pub local1: u32,
    /// Local Data Part 2.
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global_admin, self.local1, self.local2)
    }
}

/// An optional transitive attribute we do not recognise, kept so it can
/// be passed on (RFC 4271 §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownAttribute {
    /// Optional, Transitive and Partial flags as received (Extended Length
    /// and the unused low bits cleared; the encoder chooses the length
    /// form).
    pub flags: u8,
    /// Type code.
    pub type_code: u8,
    /// Value.
    pub value: Vec<u8>,
}

impl UnknownAttribute {
    /// The attribute as it must be passed on to another peer: Partial set
    /// (RFC 4271 §5, "Partial bit").
    pub fn propagated(&self) -> Self {
        Self {
            flags: self.flags | flags::PARTIAL,
            ..self.clone()
        }
    }
}

/// An MP next hop (RFC 4760 §3, RFC 2545 §3 for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// 4 octets.
    V4(Ipv4Addr),
    /// 16 octets (global), or 32 (global, then link-local).
    V6 {
        /// Global address.
        global: Ipv6Addr,
        /// Link-local address, when the next-hop length is 32.
        link_local: Option<Ipv6Addr>,
    },
}

impl NextHop {
    fn wire_len(&self) -> usize {
        match self {
            Self::V4(_) => 4,
            Self::V6 {
                link_local: None, ..
            } => 16,
            Self::V6 { .. } => 32,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::V4(a) => out.extend_from_slice(&a.octets()),
            Self::V6 { global, link_local } => {
                out.extend_from_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.extend_from_slice(&ll.octets());
                }
            }
        }
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if let Ok(a) = <[u8; 4]>::try_from(b) {
            return Some(Self::V4(Ipv4Addr::from(a)));
        }
        if let Ok(a) = <[u8; 16]>::try_from(b) {
            return Some(Self::V6 {
                global: Ipv6Addr::from(a),
                link_local: None,
            });
        }
        let (g, ll) = b.split_first_chunk::<16>()?;
        let ll = <[u8; 16]>::try_from(ll).ok()?;
        Some(Self::V6 {
            global: Ipv6Addr::from(*g),
            link_local: Some(Ipv6Addr::from(ll)),
        })
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Length of Next Hop Network Address (1 octet)            |
/// +---------------------------------------------------------+
/// | Network Address of Next Hop (variable)                  |
/// +---------------------------------------------------------+
/// | Reserved (1 octet)                                      |
/// +---------------------------------------------------------+
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// Next hop for every prefix.
    pub next_hop: NextHop,
    /// Reachable prefixes; the set's family is the attribute's AFI/SAFI.
    pub nlri: NlriSet,
}

impl MpReach {
    /// The AFI/SAFI.
    pub fn family(&self) -> Family {
        self.nlri.family()
    }
}

/// MP_UNREACH_NLRI (RFC 4760 §4): AFI (2), SAFI (1), withdrawn routes.
/// With no routes it is the End-of-RIB marker for its family (RFC 4724
/// §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    /// Withdrawn prefixes; the set's family is the attribute's AFI/SAFI.
    pub withdrawn: NlriSet,
}

impl MpUnreach {
    /// The AFI/SAFI.
    pub fn family(&self) -> Family {
        self.withdrawn.family()
    }
}

/// The path attributes of an UPDATE, minus MP_REACH/MP_UNREACH (which
/// carry routes and live on [`Update`](super::update::Update)). This is
/// the part a RIB shares between all routes of the UPDATE.
///
/// List-valued attributes use an empty list for "absent": RFC 7606 treats
/// an empty COMMUNITIES (etc.) as malformed, so the encoder never sends
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttributes {
    /// ORIGIN (1), well-known mandatory.
    pub origin: Option<Origin>,
    /// AS_PATH (2), well-known mandatory. On a 2-octet session it holds
    /// what was sent (AS_TRANS included); see
    /// [`PathAttributes::reconcile_as4`].
    pub as_path: Option<AsPath>,
    /// NEXT_HOP (3), mandatory with IPv4 unicast NLRI.
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC (4).
    pub multi_exit_disc: Option<u32>,
    /// LOCAL_PREF (5).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE (6).
    pub atomic_aggregate: bool,
    /// AGGREGATOR (7).
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES (8, RFC 1997).
    pub communities: Vec<Community>,
    /// ORIGINATOR_ID (9, RFC 4456).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (10, RFC 4456).
    pub cluster_list: Vec<Ipv4Addr>,
    /// EXTENDED_COMMUNITIES (16, RFC 4360).
    pub extended_communities: Vec<ExtendedCommunity>,
    /// AS4_PATH (17, RFC 6793); only on 2-octet sessions.
    pub as4_path: Option<AsPath>,
    /// AS4_AGGREGATOR (18, RFC 6793); only on 2-octet sessions.
    pub as4_aggregator: Option<Aggregator>,
    /// LARGE_COMMUNITIES (32, RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
    /// Unrecognised optional transitive attributes, by type code.
    pub unknown: Vec<UnknownAttribute>,
}

impl PathAttributes {
    /// Apply RFC 6793 §4.2.3 to attributes received on a 2-octet session:
    /// if AGGREGATOR names a real 2-octet AS (not AS_TRANS), AS4_PATH and
    /// AS4_AGGREGATOR are ignored; otherwise AS4_AGGREGATOR replaces
    /// AGGREGATOR and AS4_PATH is merged into AS_PATH. The AS4 attributes
    /// are removed either way. Callers on 4-octet sessions need not call
    /// this (the decoder already discards AS4 attributes there).
    pub fn reconcile_as4(&mut self) {
        let as4_path = self.as4_path.take();
        let as4_aggregator = self.as4_aggregator.take();
        if let Some(agg) = self.aggregator {
            if agg.asn != AS_TRANS {
                return;
            }
            if let Some(a4) = as4_aggregator {
                self.aggregator = Some(a4);
            }
        }
        if let (Some(p4), Some(p)) = (as4_path, self.as_path.as_ref()) {
            self.as_path = Some(merge_as4_path(p, &p4));
        }
    }
}

/// Decoded path attribute field.
#[derive(Debug, Default)]
pub(crate) struct AttributeBlock {
    pub attrs: PathAttributes,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub treat_as_withdraw: Option<AttributeFault>,
    pub discarded: Vec<AttributeFault>,
}

/// Optional/Transitive bits each known attribute must carry.
fn expected_flags(code: u8) -> Option<u8> {
    const WK: u8 = flags::TRANSITIVE;
    const OPT_T: u8 = flags::OPTIONAL | flags::TRANSITIVE;
    const OPT_NT: u8 = flags::OPTIONAL;
    Some(match code {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF | tc::ATOMIC_AGGREGATE => WK,
        tc::MULTI_EXIT_DISC | tc::ORIGINATOR_ID | tc::CLUSTER_LIST => OPT_NT,
        tc::MP_REACH_NLRI | tc::MP_UNREACH_NLRI => OPT_NT,
        tc::AGGREGATOR
        | tc::COMMUNITIES
        | tc::EXTENDED_COMMUNITIES
        | tc::AS4_PATH
        | tc::AS4_AGGREGATOR
        | tc::LARGE_COMMUNITIES => OPT_T,
        _ => return None,
    })
}

/// The RFC 7606 §7 action for a malformed attribute (see module docs).
pub fn malformed_action(code: u8) -> Rfc7606Action {
    match code {
        tc::ATOMIC_AGGREGATE | tc::AGGREGATOR | tc::AS4_PATH | tc::AS4_AGGREGATOR => {
            Rfc7606Action::AttributeDiscard
        }
        tc::MP_REACH_NLRI | tc::MP_UNREACH_NLRI => Rfc7606Action::SessionReset,
        _ => Rfc7606Action::TreatAsWithdraw,
    }
}

fn list_error(reason: &'static str) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::MalformedAttributeList { reason },
        Notification::update(UpdateSubcode::MalformedAttributeList, Vec::new()),
    )
}

/// Why decoding one attribute failed.
enum Fault {
    /// Apply the attribute's RFC 7606 action.
    Issue(AttributeIssue),
    /// Reset regardless (e.g. NLRI inside MP_REACH does not parse).
    Reset(DecodeError),
}

impl From<AttributeIssue> for Fault {
    fn from(i: AttributeIssue) -> Self {
        Fault::Issue(i)
    }
}

fn length_issue(value: &[u8]) -> AttributeIssue {
    AttributeIssue::Length {
        length: u16::try_from(value.len()).unwrap_or(u16::MAX),
    }
}

fn exact<const N: usize>(value: &[u8]) -> Result<[u8; N], AttributeIssue> {
    <[u8; N]>::try_from(value).map_err(|_| length_issue(value))
}

fn chunks<const N: usize>(value: &[u8]) -> Result<std::slice::ChunksExact<'_, u8>, AttributeIssue> {
    if value.is_empty() || !value.len().is_multiple_of(N) {
        return Err(length_issue(value));
    }
    Ok(value.chunks_exact(N))
}

fn be32(c: &[u8]) -> u32 {
    <[u8; 4]>::try_from(c).map(u32::from_be_bytes).unwrap_or(0)
}

fn decode_as_path(mut v: &[u8], four_octet: bool) -> Result<AsPath, AttributeIssue> {
    let width = if four_octet { 4 } else { 2 };
    let mut segments = Vec::new();
    while !v.is_empty() {
        let Some((&[kind, count], rest)) = v.split_first_chunk::<2>() else {
            return Err(AttributeIssue::Value);
        };
        let kind = SegmentType::from_u8(kind).ok_or(AttributeIssue::Value)?;
        if count == 0 {
            return Err(AttributeIssue::Value);
        }
        let (body, rest) = rest
            .split_at_checked(usize::from(count) * width)
            .ok_or(AttributeIssue::Value)?;
        let asns = if four_octet {
            body.chunks_exact(4).map(|c| Asn(be32(c))).collect()
        } else {
            body.chunks_exact(2)
                .map(|c| {
                    let two = <[u8; 2]>::try_from(c).unwrap_or_default();
                    Asn(u32::from(u16::from_be_bytes(two)))
                })
                .collect()
        };
        segments.push(AsSegment { kind, asns });
        v = rest;
    }
    Ok(AsPath { segments })
}

/// AGGREGATOR / AS4_AGGREGATOR; AS 0 is malformed (RFC 7607 §2).
fn decode_aggregator(value: &[u8], four_octet: bool) -> Result<Aggregator, AttributeIssue> {
    let agg = decode_aggregator_fields(value, four_octet)?;
    if agg.asn == Asn(0) {
        return Err(AttributeIssue::Value);
    }
    Ok(agg)
}

fn decode_aggregator_fields(value: &[u8], four_octet: bool) -> Result<Aggregator, AttributeIssue> {
    if four_octet {
        let b = exact::<8>(value)?;
        let [a0, a1, a2, a3, i0, i1, i2, i3] = b;
        Ok(Aggregator {
            asn: Asn(u32::from_be_bytes([a0, a1, a2, a3])),
            address: Ipv4Addr::new(i0, i1, i2, i3),
        })
    } else {
        let [a0, a1, i0, i1, i2, i3] = exact::<6>(value)?;
        Ok(Aggregator {
            asn: Asn(u32::from(u16::from_be_bytes([a0, a1]))),
            address: Ipv4Addr::new(i0, i1, i2, i3),
        })
    }
}

fn mp_error(attr: &[u8], kind: DecodeErrorKind) -> DecodeError {
    DecodeError::new(
        kind,
        Notification::update(UpdateSubcode::OptionalAttributeError, attr.to_vec()),
    )
}

type NomError<'a> = nom::Err<nom::error::Error<&'a [u8]>>;

fn decode_mp_family<'a>(
    value: &'a [u8],
    attr: &[u8],
    code: u8,
) -> Result<(Family, &'a [u8]), Fault> {
    let (rest, (afi, safi)) = (be_u16, be_u8).parse(value).map_err(|_: NomError<'_>| {
        Fault::Reset(mp_error(
            attr,
            DecodeErrorKind::MalformedAttribute {
                type_code: code,
                issue: length_issue(value),
            },
        ))
    })?;
    let family = Family::new(Afi(afi), Safi(safi));
    if !family.is_supported() {
        return Err(Fault::Reset(mp_error(
            attr,
            DecodeErrorKind::UnsupportedFamily { afi, safi },
        )));
    }
    Ok((family, rest))
}

fn decode_one(
    code: u8,
    value: &[u8],
    attr: &[u8],
    ctx: &SessionContext,
    block: &mut AttributeBlock,
) -> Result<(), Fault> {
    let a = &mut block.attrs;
    match code {
        tc::ORIGIN => {
            let [v] = exact::<1>(value)?;
            a.origin = Some(Origin::from_u8(v).ok_or(AttributeIssue::Value)?);
        }
        tc::AS_PATH => {
            let p = decode_as_path(value, ctx.four_octet_as)?;
            // RFC 7607 §2: AS 0 in AS_PATH makes it malformed.
            if p.contains(Asn(0)) {
                return Err(AttributeIssue::Value.into());
            }
            a.as_path = Some(p);
        }
        tc::NEXT_HOP => a.next_hop = Some(Ipv4Addr::from(exact::<4>(value)?)),
        tc::MULTI_EXIT_DISC => a.multi_exit_disc = Some(u32::from_be_bytes(exact::<4>(value)?)),
        tc::LOCAL_PREF => a.local_pref = Some(u32::from_be_bytes(exact::<4>(value)?)),
        tc::ATOMIC_AGGREGATE => {
            if !value.is_empty() {
                return Err(length_issue(value).into());
            }
            a.atomic_aggregate = true;
        }
        tc::AGGREGATOR => a.aggregator = Some(decode_aggregator(value, ctx.four_octet_as)?),
        tc::COMMUNITIES => {
            a.communities = chunks::<4>(value)?.map(|c| Community(be32(c))).collect()
        }
        tc::ORIGINATOR_ID => a.originator_id = Some(Ipv4Addr::from(exact::<4>(value)?)),
        tc::CLUSTER_LIST => {
            a.cluster_list = chunks::<4>(value)?
                .map(|c| Ipv4Addr::from(be32(c)))
                .collect();
        }
        tc::EXTENDED_COMMUNITIES => {
            a.extended_communities = chunks::<8>(value)?
                .map(|c| ExtendedCommunity(<[u8; 8]>::try_from(c).unwrap_or_default()))
                .collect();
        }
        tc::LARGE_COMMUNITIES => {
            a.large_communities = chunks::<12>(value)?
                .map(|c| LargeCommunity {
                    global_admin: be32(c.get(0..4).unwrap_or_default()),
                    local1: be32(c.get(4..8).unwrap_or_default()),
                    local2: be32(c.get(8..12).unwrap_or_default()),
                })
                .collect();
        }
        tc::AS4_PATH | tc::AS4_AGGREGATOR if ctx.four_octet_as => {
            return Err(AttributeIssue::UnexpectedAs4.into());
        }
        tc::AS4_PATH => {
            let p = decode_as_path(value, true)?;
            if p.segments.iter().any(|s| s.kind.is_confed()) || p.contains(Asn(0)) {
                return Err(AttributeIssue::Value.into());
            }
            a.as4_path = Some(p);
        }
        tc::AS4_AGGREGATOR => a.as4_aggregator = Some(decode_aggregator(value, true)?),
        tc::MP_REACH_NLRI => {
            let (family, rest) = decode_mp_family(value, attr, code)?;
            let bad = |issue| {
                Fault::Reset(mp_error(
                    attr,
                    DecodeErrorKind::MalformedAttribute {
                        type_code: code,
                        issue,
                    },
                ))
            };
            let Some((&nh_len, rest)) = rest.split_first() else {
                return Err(bad(length_issue(value)));
            };
            let Some((nh, rest)) = rest.split_at_checked(usize::from(nh_len)) else {
                return Err(bad(length_issue(value)));
            };
            let next_hop = NextHop::decode(nh).ok_or_else(|| bad(AttributeIssue::Value))?;
            // Reserved octet (formerly the SNPA count): ignored on receipt.
            let Some((_reserved, nlri)) = rest.split_first() else {
                return Err(bad(length_issue(value)));
            };
            let nlri = NlriSet::decode(family, ctx.receives_path_ids(family), nlri)
                .map_err(Fault::Reset)?;
            block.mp_reach = Some(MpReach { next_hop, nlri });
        }
        tc::MP_UNREACH_NLRI => {
            let (family, rest) = decode_mp_family(value, attr, code)?;
            let withdrawn = NlriSet::decode(family, ctx.receives_path_ids(family), rest)
                .map_err(Fault::Reset)?;
            block.mp_unreach = Some(MpUnreach { withdrawn });
        }
        _ => {}
    }
    Ok(())
}

/// Decode the path attribute field of an UPDATE.
pub(crate) fn decode_attributes(
    buf: &[u8],
    ctx: &SessionContext,
) -> Result<AttributeBlock, DecodeError> {
    let mut block = AttributeBlock::default();
    let mut seen = [0u64; 4];
    let mut rest = buf;
    while !rest.is_empty() {
        let whole = rest;
        let (r, (attr_flags, code)) = (be_u8, be_u8)
            .parse(rest)
            .map_err(|_: NomError<'_>| list_error("attribute header is truncated"))?;
        let (r, len) = if attr_flags & flags::EXTENDED_LENGTH != 0 {
            be_u16::<_, nom::error::Error<&[u8]>>(r)
                .map_err(|_| list_error("attribute header is truncated"))?
        } else {
            let (r, l) = be_u8::<_, nom::error::Error<&[u8]>>(r)
                .map_err(|_| list_error("attribute header is truncated"))?;
            (r, u16::from(l))
        };
        let Some((value, r)) = r.split_at_checked(usize::from(len)) else {
            return Err(list_error("attribute runs past the path attribute field"));
        };
        let attr = whole.get(..whole.len() - r.len()).unwrap_or_default();
        rest = r;

        let (word, bit) = (usize::from(code / 64), code % 64);
        let seen_word = seen
            .get_mut(word)
            .ok_or_else(|| list_error("attribute type"))?;
        if *seen_word & (1 << bit) != 0 {
            if code == tc::MP_REACH_NLRI || code == tc::MP_UNREACH_NLRI {
                return Err(list_error("MP_REACH_NLRI or MP_UNREACH_NLRI appears twice"));
            }
            block.discarded.push(AttributeFault {
                type_code: code,
                issue: AttributeIssue::Duplicate,
                action: Rfc7606Action::AttributeDiscard,
            });
            continue;
        }
        *seen_word |= 1 << bit;

        let Some(expected) = expected_flags(code) else {
            if attr_flags & flags::OPTIONAL == 0 {
                return Err(DecodeError::new(
                    DecodeErrorKind::UnrecognizedWellKnownAttribute { type_code: code },
                    Notification::update(
                        UpdateSubcode::UnrecognizedWellKnownAttribute,
                        attr.to_vec(),
                    ),
                ));
            }
            if attr_flags & flags::TRANSITIVE != 0 {
                block.attrs.unknown.push(UnknownAttribute {
                    // RFC 4271 §4.3: the low four bits are unused, ignored
                    // on receipt and zero when sent; Extended Length is
                    // the encoder's choice.
                    flags: attr_flags & (flags::OPTIONAL | flags::TRANSITIVE | flags::PARTIAL),
                    type_code: code,
                    value: value.to_vec(),
                });
            } else {
                block.discarded.push(AttributeFault {
                    type_code: code,
                    issue: AttributeIssue::UnrecognizedNonTransitive,
                    action: Rfc7606Action::AttributeDiscard,
                });
            }
            continue;
        };

        let outcome = if attr_flags & (flags::OPTIONAL | flags::TRANSITIVE) != expected {
            Err(Fault::Issue(AttributeIssue::Flags { flags: attr_flags }))
        } else {
            decode_one(code, value, attr, ctx, &mut block)
        };
        match outcome {
            Ok(()) => {}
            Err(Fault::Reset(e)) => return Err(e),
            Err(Fault::Issue(issue)) => {
                let action = if issue == AttributeIssue::UnexpectedAs4 {
                    Rfc7606Action::AttributeDiscard
                } else {
                    malformed_action(code)
                };
                let fault = AttributeFault {
                    type_code: code,
                    issue,
                    action,
                };
                match action {
                    Rfc7606Action::SessionReset => {
                        let subcode = match issue {
                            AttributeIssue::Flags { .. } => UpdateSubcode::AttributeFlagsError,
                            AttributeIssue::Length { .. } => UpdateSubcode::AttributeLengthError,
                            _ => UpdateSubcode::OptionalAttributeError,
                        };
                        return Err(DecodeError::new(
                            DecodeErrorKind::MalformedAttribute {
                                type_code: code,
                                issue,
                            },
                            Notification::update(subcode, attr.to_vec()),
                        ));
                    }
                    Rfc7606Action::TreatAsWithdraw => {
                        if block.treat_as_withdraw.is_none() {
                            block.treat_as_withdraw = Some(fault);
                        }
                    }
                    Rfc7606Action::AttributeDiscard => block.discarded.push(fault),
                }
            }
        }
    }
    // The encoder sends unknown attributes in type order; keep the decoded
    // form in that order too so decode(encode(x)) == x.
    block.attrs.unknown.sort_by_key(|u| u.type_code);
    Ok(block)
}

/// Append one attribute: header with a placeholder 2-octet length, the
/// value, then shrink to a 1-octet length when it fits.
fn write_attr<F>(out: &mut Vec<u8>, attr_flags: u8, code: u8, value: F) -> Result<(), EncodeError>
where
    F: FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
{
    write_attr_with(out, attr_flags, code, true, value)
}

fn write_attr_with<F>(
    out: &mut Vec<u8>,
    attr_flags: u8,
    code: u8,
    compact: bool,
    value: F,
) -> Result<(), EncodeError>
where
    F: FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
{
    let start = out.len();
    out.extend_from_slice(&[attr_flags | flags::EXTENDED_LENGTH, code, 0, 0]);
    value(out)?;
    let len = out.len() - start - 4;
    if compact && len <= 255 {
        if let Some(f) = out.get_mut(start) {
            *f = attr_flags & !flags::EXTENDED_LENGTH;
        }
        if let Some(l) = out.get_mut(start + 2) {
            *l = len as u8;
        }
        out.remove(start + 3);
    } else {
        let l = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
            what: "path attribute",
            length: len,
        })?;
        if let Some(slot) = out.get_mut(start + 2..start + 4) {
            slot.copy_from_slice(&l.to_be_bytes());
        }
    }
    Ok(())
}

fn encode_as_path(p: &AsPath, four_octet: bool, skip_confed: bool, out: &mut Vec<u8>) {
    for seg in &p.segments {
        if skip_confed && seg.kind.is_confed() {
            continue;
        }
        for chunk in seg.asns.chunks(255) {
            out.push(seg.kind.to_u8());
            out.push(chunk.len() as u8);
            for a in chunk {
                if four_octet {
                    out.extend_from_slice(&a.0.to_be_bytes());
                } else {
                    out.extend_from_slice(&a.to_two_octet().to_be_bytes());
                }
            }
        }
    }
}

fn encode_aggregator(a: &Aggregator, four_octet: bool, out: &mut Vec<u8>) {
    if four_octet {
        out.extend_from_slice(&a.asn.0.to_be_bytes());
    } else {
        out.extend_from_slice(&a.asn.to_two_octet().to_be_bytes());
    }
    out.extend_from_slice(&a.address.octets());
}

const WK: u8 = flags::TRANSITIVE;
const OPT_T: u8 = flags::OPTIONAL | flags::TRANSITIVE;
const OPT_NT: u8 = flags::OPTIONAL;

/// Append the MP_REACH_NLRI attribute, always with a 2-octet length as
/// BIRD sends it (and as the packer must, since it grows the NLRI in
/// place).
pub(crate) fn encode_mp_reach(
    r: &MpReach,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let family = r.family();
    write_attr_with(out, OPT_NT, tc::MP_REACH_NLRI, false, |o| {
        o.extend_from_slice(&family.afi.0.to_be_bytes());
        o.push(family.safi.0);
        o.push(r.next_hop.wire_len() as u8);
        r.next_hop.encode(o);
        o.push(0);
        r.nlri.encode(ctx.sends_path_ids(family), o);
        Ok(())
    })
}

/// Append the MP_UNREACH_NLRI attribute (1-octet length when it fits, as
/// BIRD does; the packer uses the 2-octet form to grow it in place).
pub(crate) fn encode_mp_unreach(
    u: &MpUnreach,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let family = u.family();
    write_attr(out, OPT_NT, tc::MP_UNREACH_NLRI, |o| {
        o.extend_from_slice(&family.afi.0.to_be_bytes());
        o.push(family.safi.0);
        u.withdrawn.encode(ctx.sends_path_ids(family), o);
        Ok(())
    })
}

/// Octets the MP_REACH_NLRI attribute takes before its NLRI, assuming the
/// 2-octet length form (the packer's worst case).
pub(crate) fn mp_reach_overhead(next_hop: &NextHop) -> usize {
    4 + 2 + 1 + 1 + next_hop.wire_len() + 1
}

/// Append all path attributes: MP_REACH_NLRI and MP_UNREACH_NLRI first
/// (RFC 7606 §5.1), then the others in ascending type order (RFC 4271
/// §5), unknown ones at their place.
///
/// On a 2-octet session, ASes that need four octets are sent as AS_TRANS
/// and, unless the caller supplied them, AS4_PATH / AS4_AGGREGATOR are
/// generated (RFC 6793 §4.2.2). On a 4-octet session AS4_* are never sent.
pub(crate) fn encode_attributes(
    a: &PathAttributes,
    mp_reach: Option<&MpReach>,
    mp_unreach: Option<&MpUnreach>,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let four = ctx.four_octet_as;
    let mut unknown: Vec<&UnknownAttribute> = a.unknown.iter().collect();
    unknown.sort_by_key(|u| u.type_code);
    let mut unknown = unknown.into_iter().peekable();
    let mut flush = |below: u16, out: &mut Vec<u8>| -> Result<(), EncodeError> {
        while let Some(u) = unknown.next_if(|u| u16::from(u.type_code) < below) {
            let f = u.flags & (flags::OPTIONAL | flags::TRANSITIVE | flags::PARTIAL);
            write_attr(out, f, u.type_code, |o| {
                o.extend_from_slice(&u.value);
                Ok(())
            })?;
        }
        Ok(())
    };

    // RFC 7606 §5.1: MP_REACH_NLRI / MP_UNREACH_NLRI go first, so a
    // receiver can still find the NLRI when a later attribute is broken.
    if let Some(r) = mp_reach {
        encode_mp_reach(r, ctx, out)?;
    }
    if let Some(u) = mp_unreach {
        encode_mp_unreach(u, ctx, out)?;
    }
    flush(u16::from(tc::ORIGIN), out)?;
    if let Some(o) = a.origin {
        write_attr(out, WK, tc::ORIGIN, |b| {
            b.push(o.to_u8());
            Ok(())
        })?;
    }
    flush(u16::from(tc::AS_PATH), out)?;
    if let Some(p) = &a.as_path {
        write_attr(out, WK, tc::AS_PATH, |b| {
            encode_as_path(p, four, false, b);
            Ok(())
        })?;
    }
    flush(u16::from(tc::NEXT_HOP), out)?;
    if let Some(nh) = a.next_hop {
        write_attr(out, WK, tc::NEXT_HOP, |b| {
            b.extend_from_slice(&nh.octets());
            Ok(())
        })?;
    }
    flush(u16::from(tc::MULTI_EXIT_DISC), out)?;
    if let Some(m) = a.multi_exit_disc {
        write_attr(out, OPT_NT, tc::MULTI_EXIT_DISC, |b| {
            b.extend_from_slice(&m.to_be_bytes());
            Ok(())
        })?;
    }
    flush(u16::from(tc::LOCAL_PREF), out)?;
    if let Some(l) = a.local_pref {
        write_attr(out, WK, tc::LOCAL_PREF, |b| {
            b.extend_from_slice(&l.to_be_bytes());
            Ok(())
        })?;
    }
    flush(u16::from(tc::ATOMIC_AGGREGATE), out)?;
    if a.atomic_aggregate {
        write_attr(out, WK, tc::ATOMIC_AGGREGATE, |_| Ok(()))?;
    }
    flush(u16::from(tc::AGGREGATOR), out)?;
    if let Some(g) = &a.aggregator {
        write_attr(out, OPT_T, tc::AGGREGATOR, |b| {
            encode_aggregator(g, four, b);
            Ok(())
        })?;
    }
    flush(u16::from(tc::COMMUNITIES), out)?;
    if !a.communities.is_empty() {
        write_attr(out, OPT_T, tc::COMMUNITIES, |b| {
            for c in &a.communities {
                b.extend_from_slice(&c.0.to_be_bytes());
            }
            Ok(())
        })?;
    }
    flush(u16::from(tc::ORIGINATOR_ID), out)?;
    if let Some(o) = a.originator_id {
        write_attr(out, OPT_NT, tc::ORIGINATOR_ID, |b| {
            b.extend_from_slice(&o.octets());
            Ok(())
        })?;
    }
    flush(u16::from(tc::CLUSTER_LIST), out)?;
    if !a.cluster_list.is_empty() {
        write_attr(out, OPT_NT, tc::CLUSTER_LIST, |b| {
            for c in &a.cluster_list {
                b.extend_from_slice(&c.octets());
            }
            Ok(())
        })?;
    }
    flush(u16::from(tc::EXTENDED_COMMUNITIES), out)?;
    if !a.extended_communities.is_empty() {
        write_attr(out, OPT_T, tc::EXTENDED_COMMUNITIES, |b| {
            for c in &a.extended_communities {
                b.extend_from_slice(&c.0);
            }
            Ok(())
        })?;
    }
    if !four {
        flush(u16::from(tc::AS4_PATH), out)?;
        let generated;
        let as4_path = match (&a.as4_path, &a.as_path) {
            (Some(p), _) => Some(p),
            (None, Some(p)) if p.has_four_octet_asn() => {
                generated = p.clone();
                Some(&generated)
            }
            _ => None,
        };
        if let Some(p) = as4_path {
            write_attr(out, OPT_T, tc::AS4_PATH, |b| {
                encode_as_path(p, true, true, b);
                Ok(())
            })?;
        }
        flush(u16::from(tc::AS4_AGGREGATOR), out)?;
        let as4_agg = a
            .as4_aggregator
            .or(a.aggregator.filter(|g| !g.asn.is_two_octet()));
        if let Some(g) = as4_agg {
            write_attr(out, OPT_T, tc::AS4_AGGREGATOR, |b| {
                encode_aggregator(&g, true, b);
                Ok(())
            })?;
        }
    }
    flush(u16::from(tc::LARGE_COMMUNITIES), out)?;
    if !a.large_communities.is_empty() {
        write_attr(out, OPT_T, tc::LARGE_COMMUNITIES, |b| {
            for c in &a.large_communities {
                b.extend_from_slice(&c.global_admin.to_be_bytes());
                b.extend_from_slice(&c.local1.to_be_bytes());
                b.extend_from_slice(&c.local2.to_be_bytes());
            }
            Ok(())
        })?;
    }
    flush(256, out)?;
    Ok(())
}
