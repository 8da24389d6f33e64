//! UPDATE (RFC 4271 §4.3): withdrawn routes, path attributes, NLRI; the
//! End-of-RIB marker (RFC 4724 §2); RFC 7606 outcomes recorded on the
//! message; and a packer that splits a large batch of prefixes into as
//! few UPDATEs as the session's message size allows.

use super::attribute::{
    self, decode_attributes, encode_attributes, AttributeBlock, MpReach, MpUnreach, NextHop,
    PathAttributes,
};
use super::context::{Family, SessionContext};
use super::error::{
    AttributeFault, AttributeIssue, DecodeError, DecodeErrorKind, EncodeError, Rfc7606Action,
};
use super::header::{encode_header, MessageType, HEADER_LEN};
use super::nlri::{NlriEntry, NlriIter, NlriSet};
use super::notification::{Notification, UpdateSubcode};

/// An UPDATE message (RFC 4271 §4.3).
///
/// ```text
/// +-----------------------------------------------------+
/// |   Withdrawn Routes Length (2 octets)                |
/// +-----------------------------------------------------+
/// |   Withdrawn Routes (variable)                       |
/// +-----------------------------------------------------+
/// |   Total Path Attribute Length (2 octets)            |
/// +-----------------------------------------------------+
/// |   Path Attributes (variable)                        |
/// +-----------------------------------------------------+
/// |   Network Layer Reachability Information (variable) |
/// +-----------------------------------------------------+
/// ```
///
/// RFC 7606 outcomes other than a session reset are data here:
/// if [`Update::treat_as_withdraw`] is set, every prefix in
/// [`Update::nlri`] and in [`Update::mp_reach`] must be handled as
/// withdrawn (see [`Update::withdrawn_entries`]); [`Update::discarded`]
/// lists attributes that were dropped and the UPDATE is otherwise valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Withdrawn IPv4 unicast routes.
    pub withdrawn: NlriSet,
    /// Path attributes shared by all announced routes.
    pub attributes: PathAttributes,
    /// Announced IPv4 unicast routes.
    pub nlri: NlriSet,
    /// MP_REACH_NLRI (RFC 4760): announced routes of another family.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI (RFC 4760): withdrawn routes of another family.
    pub mp_unreach: Option<MpUnreach>,
    /// Set when RFC 7606 says treat-as-withdraw; the first reason found.
    pub treat_as_withdraw: Option<AttributeFault>,
    /// Attributes discarded under RFC 7606 (and unrecognised optional
    /// non-transitive ones, RFC 4271 §5).
    pub discarded: Vec<AttributeFault>,
}

impl Default for Update {
    fn default() -> Self {
        Self {
            withdrawn: NlriSet::new(Family::IPV4_UNICAST, false),
            attributes: PathAttributes::default(),
            nlri: NlriSet::new(Family::IPV4_UNICAST, false),
            mp_reach: None,
            mp_unreach: None,
            treat_as_withdraw: None,
            discarded: Vec::new(),
        }
    }
}

fn list_error(reason: &'static str) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::MalformedAttributeList { reason },
        Notification::update(UpdateSubcode::MalformedAttributeList, Vec::new()),
    )
}

fn split_len16(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buf.split_first_chunk::<2>()?;
    rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))
}

impl Update {
    /// The End-of-RIB marker for `family` (RFC 4724 §2): an empty UPDATE
    /// for IPv4 unicast, an MP_UNREACH_NLRI without routes otherwise.
    pub fn end_of_rib(family: Family) -> Self {
        let mut u = Self::default();
        if family != Family::IPV4_UNICAST {
            u.mp_unreach = Some(MpUnreach {
                withdrawn: NlriSet::new(family, false),
            });
        }
        u
    }

    /// The family this UPDATE is the End-of-RIB marker of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        let bare = self.withdrawn.is_empty()
            && self.nlri.is_empty()
            && self.mp_reach.is_none()
            && self.attributes == PathAttributes::default()
            && self.treat_as_withdraw.is_none();
        if !bare {
            return None;
        }
        match &self.mp_unreach {
            None => Some(Family::IPV4_UNICAST),
            Some(u) if u.withdrawn.is_empty() => Some(u.family()),
            Some(_) => None,
        }
    }

    /// Whether the UPDATE announces any route.
    pub fn has_announcements(&self) -> bool {
        !self.nlri.is_empty() || self.mp_reach.as_ref().is_some_and(|r| !r.nlri.is_empty())
    }

    /// Every route this UPDATE withdraws, with the family: the withdrawn
    /// fields, plus all announced routes when treat-as-withdraw applies
    /// (RFC 7606 §2).
    pub fn withdrawn_entries(&self) -> Routes<'_> {
        let taw = self.treat_as_withdraw.is_some();
        Routes::new([
            Some(&self.withdrawn),
            self.mp_unreach.as_ref().map(|u| &u.withdrawn),
            Some(&self.nlri).filter(|_| taw),
            self.mp_reach.as_ref().map(|r| &r.nlri).filter(|_| taw),
        ])
    }

    /// Every route this UPDATE announces with its family, unless
    /// treat-as-withdraw applies (then none).
    pub fn announced_entries(&self) -> Routes<'_> {
        let ok = self.treat_as_withdraw.is_none();
        Routes::new([
            Some(&self.nlri).filter(|_| ok),
            self.mp_reach.as_ref().map(|r| &r.nlri).filter(|_| ok),
            None,
            None,
        ])
    }

    /// Decode an UPDATE body (after the header).
    ///
    /// Errors are session resets (RFC 7606 §2); treat-as-withdraw and
    /// attribute discard are reported on the returned UPDATE.
    pub fn decode_body(body: &[u8], ctx: &SessionContext) -> Result<Self, DecodeError> {
        let Some((withdrawn, rest)) = split_len16(body) else {
            return Err(list_error("withdrawn routes length exceeds the message"));
        };
        let Some((attrs, nlri)) = split_len16(rest) else {
            return Err(list_error(
                "total path attribute length exceeds the message",
            ));
        };
        let v4 = Family::IPV4_UNICAST;
        let add_path = ctx.receives_path_ids(v4);
        let withdrawn = NlriSet::decode(v4, add_path, withdrawn)?;
        let AttributeBlock {
            attrs: attributes,
            mp_reach,
            mp_unreach,
            mut treat_as_withdraw,
            discarded,
        } = decode_attributes(attrs, ctx)?;
        let nlri = NlriSet::decode(v4, add_path, nlri)?;

        // RFC 7606 §3 d: missing well-known mandatory attributes with NLRI
        // present. NEXT_HOP is only mandatory for the IPv4 NLRI field
        // (RFC 4760 §3).
        let announces = !nlri.is_empty() || mp_reach.as_ref().is_some_and(|r| !r.nlri.is_empty());
        if announces && treat_as_withdraw.is_none() {
            let missing = if attributes.origin.is_none() {
                Some(attribute::type_code::ORIGIN)
            } else if attributes.as_path.is_none() {
                Some(attribute::type_code::AS_PATH)
            } else if !nlri.is_empty() && attributes.next_hop.is_none() {
                Some(attribute::type_code::NEXT_HOP)
            } else {
                None
            };
            treat_as_withdraw = missing.map(|type_code| AttributeFault {
                type_code,
                issue: AttributeIssue::Missing,
                action: Rfc7606Action::TreatAsWithdraw,
            });
        }
        Ok(Self {
            withdrawn,
            attributes,
            nlri,
            mp_reach,
            mp_unreach,
            treat_as_withdraw,
            discarded,
        })
    }

    /// Append the body (after the header), encoding exactly what the
    /// value holds. RFC 7606 §5.1 says a sender MUST NOT combine more than
    /// one of withdrawn routes, NLRI, MP_REACH_NLRI and MP_UNREACH_NLRI in
    /// one UPDATE; the packers ([`pack_announcements`],
    /// [`pack_withdrawals`]) always comply, and callers building an
    /// [`Update`] by hand should too.
    pub fn encode_body(&self, ctx: &SessionContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let add_path = ctx.sends_path_ids(Family::IPV4_UNICAST);
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        self.withdrawn.encode(add_path, out);
        patch_len16(out, start, "withdrawn routes")?;
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        encode_attributes(
            &self.attributes,
            self.mp_reach.as_ref(),
            self.mp_unreach.as_ref(),
            ctx,
            out,
        )?;
        patch_len16(out, start, "path attributes")?;
        self.nlri.encode(add_path, out);
        Ok(())
    }
}

/// The routes of an UPDATE with their family, across its NLRI fields
/// (see [`Update::announced_entries`], [`Update::withdrawn_entries`]).
///
/// A plain struct rather than an iterator chain: walking a full table
/// through `Chain`/`FlatMap` adapters costs measurably more per prefix.
#[derive(Debug, Clone)]
pub struct Routes<'a> {
    parts: [Option<(Family, NlriIter<'a>)>; 4],
    current: usize,
}

impl<'a> Routes<'a> {
    fn new(sets: [Option<&'a NlriSet>; 4]) -> Self {
        Self {
            parts: sets.map(|s| s.map(|s| (s.family(), s.iter()))),
            current: 0,
        }
    }
}

impl Iterator for Routes<'_> {
    type Item = (Family, NlriEntry);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        while let Some(slot) = self.parts.get_mut(self.current) {
            if let Some((family, it)) = slot {
                if let Some(e) = it.next() {
                    return Some((*family, e));
                }
            }
            self.current += 1;
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self
            .parts
            .iter()
            .skip(self.current)
            .flatten()
            .map(|(_, it)| it.len())
            .sum();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Routes<'_> {}

/// Write the length of what follows the 2-octet slot at `at`.
fn patch_len16(out: &mut [u8], at: usize, what: &'static str) -> Result<(), EncodeError> {
    let length = out.len().saturating_sub(at + 2);
    let len = u16::try_from(length).map_err(|_| EncodeError::FieldTooLong { what, length })?;
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

fn finish_message(out: &mut [u8], start: usize) {
    let len = out.len() - start;
    if let Some(slot) = out.get_mut(start + 16..start + 18) {
        // The packer never lets a message exceed 65535.
        slot.copy_from_slice(&(len.min(65535) as u16).to_be_bytes());
    }
}

fn check_family(family: Family) -> Result<(), EncodeError> {
    if family.is_supported() {
        Ok(())
    } else {
        Err(EncodeError::UnsupportedFamily {
            family: family.to_string(),
        })
    }
}

fn check_prefix(family: Family, e: &NlriEntry) -> Result<(), EncodeError> {
    if e.prefix.afi() == family.afi {
        Ok(())
    } else {
        Err(EncodeError::FamilyMismatch {
            prefix: e.prefix.to_string(),
            family: family.to_string(),
        })
    }
}

/// Largest entry: a /128 with a path id.
const MAX_ENTRY: usize = 4 + 1 + 16;

/// Pack announcements of `routes` (all of `family`) sharing `attrs` into
/// as few UPDATEs as fit the session's maximum message size, appending
/// complete messages (headers included) to `out`. Returns how many; on
/// error `out` is left as it was.
///
/// IPv4 unicast with an IPv4 next hop uses the NEXT_HOP attribute and the
/// plain NLRI field; every other case (IPv6, or IPv4 over an IPv6 next
/// hop, RFC 8950) uses MP_REACH_NLRI. `next_hop` overrides
/// `attrs.next_hop`. Path ids are sent when the context says so for the
/// family.
pub fn pack_announcements<I>(
    attrs: &PathAttributes,
    family: Family,
    next_hop: NextHop,
    routes: I,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError>
where
    I: IntoIterator<Item = NlriEntry>,
{
    let initial = out.len();
    let result = announce_into(attrs, family, next_hop, routes, ctx, out);
    if result.is_err() {
        out.truncate(initial);
    }
    result
}

fn announce_into<I>(
    attrs: &PathAttributes,
    family: Family,
    next_hop: NextHop,
    routes: I,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError>
where
    I: IntoIterator<Item = NlriEntry>,
{
    check_family(family)?;
    let max = ctx.max_message_len();
    let add_path = ctx.sends_path_ids(family);
    let plain = match next_hop {
        NextHop::V4(a) if family == Family::IPV4_UNICAST => Some(a),
        _ => None,
    };
    let mut a = attrs.clone();
    a.next_hop = plain;
    let mut attr_bytes = Vec::new();
    encode_attributes(&a, None, None, ctx, &mut attr_bytes)?;
    let fixed = HEADER_LEN
        + 4
        + attr_bytes.len()
        + if plain.is_some() {
            0
        } else {
            attribute::mp_reach_overhead(&next_hop)
        };
    if fixed + MAX_ENTRY > max {
        return Err(EncodeError::AttributesTooLarge {
            length: attr_bytes.len(),
        });
    }

    let mut count = 0;
    let mut routes = routes.into_iter().peekable();
    while routes.peek().is_some() {
        let start = out.len();
        encode_header(out, 0, MessageType::Update);
        out.extend_from_slice(&[0, 0]);
        let attr_len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        if plain.is_some() {
            out.extend_from_slice(&attr_bytes);
            patch_len16(out, attr_len_at, "path attributes")?;
        }
        // RFC 7606 §5.1: MP_REACH_NLRI first; the other attributes follow
        // the NLRI, so their size is reserved while filling.
        let reserve = if plain.is_some() { 0 } else { attr_bytes.len() };
        let mp_len_at = if plain.is_none() {
            out.extend_from_slice(&[
                attribute::flags::OPTIONAL | attribute::flags::EXTENDED_LENGTH,
                attribute::type_code::MP_REACH_NLRI,
                0,
                0,
            ]);
            let at = out.len() - 2;
            out.extend_from_slice(&family.afi.0.to_be_bytes());
            out.push(family.safi.0);
            out.push(match next_hop {
                NextHop::V4(_) => 4,
                NextHop::V6 {
                    link_local: None, ..
                } => 16,
                NextHop::V6 { .. } => 32,
            });
            match next_hop {
                NextHop::V4(a) => out.extend_from_slice(&a.octets()),
                NextHop::V6 { global, link_local } => {
                    out.extend_from_slice(&global.octets());
                    if let Some(ll) = link_local {
                        out.extend_from_slice(&ll.octets());
                    }
                }
            }
            out.push(0);
            Some(at)
        } else {
            None
        };
        let before = out.len();
        while let Some(e) =
            routes.next_if(|e| out.len() - start + e.wire_len(add_path) + reserve <= max)
        {
            check_prefix(family, &e)?;
            e.encode(add_path, out);
        }
        if out.len() == before {
            // Cannot happen given the MAX_ENTRY check; never loop forever.
            out.truncate(start);
            return Err(EncodeError::AttributesTooLarge {
                length: attr_bytes.len(),
            });
        }
        if let Some(at) = mp_len_at {
            patch_len16(out, at, "MP_REACH_NLRI")?;
            out.extend_from_slice(&attr_bytes);
            patch_len16(out, attr_len_at, "path attributes")?;
        }
        finish_message(out, start);
        count += 1;
    }
    Ok(count)
}

/// Pack withdrawals of `routes` (all of `family`) into as few UPDATEs as
/// fit, appending complete messages to `out`. Returns how many; on error
/// `out` is left as it was. IPv4
/// unicast uses the Withdrawn Routes field, other families
/// MP_UNREACH_NLRI.
pub fn pack_withdrawals<I>(
    family: Family,
    routes: I,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError>
where
    I: IntoIterator<Item = NlriEntry>,
{
    let initial = out.len();
    let result = withdraw_into(family, routes, ctx, out);
    if result.is_err() {
        out.truncate(initial);
    }
    result
}

fn withdraw_into<I>(
    family: Family,
    routes: I,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError>
where
    I: IntoIterator<Item = NlriEntry>,
{
    check_family(family)?;
    let max = ctx.max_message_len();
    let add_path = ctx.sends_path_ids(family);
    let plain = family == Family::IPV4_UNICAST;
    let mut count = 0;
    let mut routes = routes.into_iter().peekable();
    while routes.peek().is_some() {
        let start = out.len();
        encode_header(out, 0, MessageType::Update);
        if plain {
            let wd_at = out.len();
            out.extend_from_slice(&[0, 0]);
            while let Some(e) =
                routes.next_if(|e| out.len() - start + 2 + e.wire_len(add_path) <= max)
            {
                check_prefix(family, &e)?;
                e.encode(add_path, out);
            }
            patch_len16(out, wd_at, "withdrawn routes")?;
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&[0, 0]);
            let attr_len_at = out.len();
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&[
                attribute::flags::OPTIONAL | attribute::flags::EXTENDED_LENGTH,
                attribute::type_code::MP_UNREACH_NLRI,
                0,
                0,
            ]);
            let mp_at = out.len() - 2;
            out.extend_from_slice(&family.afi.0.to_be_bytes());
            out.push(family.safi.0);
            while let Some(e) = routes.next_if(|e| out.len() - start + e.wire_len(add_path) <= max)
            {
                check_prefix(family, &e)?;
                e.encode(add_path, out);
            }
            patch_len16(out, mp_at, "MP_UNREACH_NLRI")?;
            patch_len16(out, attr_len_at, "path attributes")?;
        }
        finish_message(out, start);
        count += 1;
    }
    Ok(count)
}
