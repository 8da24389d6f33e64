//! BGP-4 wire codec (RFC 4271 and extensions), pure: bytes in, typed
//! messages out, and back. No I/O, no clock, no panics on any input.
//!
//! # API overview
//!
//! Framing and decoding (what the session runtime calls):
//!
//! ```text
//! frame(&buf, &ctx)          -> Ok(Frame::Incomplete{needed}) | Ok(Frame::Complete{header, length}) | Err
//! decode_message(&buf[..length], &ctx) -> Result<Message, DecodeError>
//! messages(&buf, &ctx)       -> iterator of Result<Message, DecodeError>, .remaining() = unread tail
//! encode_message(&msg, &ctx, &mut out) / msg.encode(&ctx)
//! pack_announcements(&attrs, family, next_hop, routes, &ctx, &mut out) -> number of UPDATEs
//! pack_withdrawals(family, routes, &ctx, &mut out)                    -> number of UPDATEs
//! ```
//!
//! - [`SessionContext`] is what the OPEN exchange negotiated (4-octet AS,
//!   extended messages, ADD-PATH per family and direction); build it with
//!   [`SessionContext::negotiate`]. `SessionContext::default()` is the
//!   pre-OPEN context used to decode OPEN.
//! - [`Message`] owns its data. An [`Update`] holds each NLRI field as an
//!   [`NlriSet`]: decoded once, in one pass, into a compact array (8 octets
//!   per IPv4 prefix) and read through a zero-allocation iterator of `Copy`
//!   [`NlriEntry`]/[`Prefix`] values. A few allocations per message, none
//!   per prefix; attributes are decoded once per message.
//! - A [`DecodeError`] is always a session reset and carries the
//!   [`Notification`] to send. RFC 7606 treat-as-withdraw and attribute
//!   discard are data on the [`Update`] (`treat_as_withdraw`,
//!   `discarded`); use [`Update::announced_entries`] and
//!   [`Update::withdrawn_entries`], which already apply treat-as-withdraw.
//!   The per-attribute RFC 7606 table is in [`attribute`].
//! - On a 2-octet AS session, call [`PathAttributes::reconcile_as4`]
//!   (RFC 6793 §4.2.3) on received attributes; [`merge_as4_path`] is the
//!   path merge alone.
//! - End-of-RIB: [`Update::end_of_rib`] / [`Update::end_of_rib_family`].
//!
//! # What this module must never do
//!
//! Panic, index unchecked, or allocate by an untrusted length beyond the
//! input at hand. Every length is checked against the bytes actually
//! present before use.

// Enforced, not just promised: wire data never reaches an index, unwrap,
// expect or panic in this module (STYLE.md).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod as_path;
pub mod attribute;
pub mod capability;
pub mod context;
pub mod error;
pub mod header;
pub mod message;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod route_refresh;
pub mod update;

pub use attribute::{
    merge_as4_path, Aggregator, AsPath, AsSegment, Community, ExtendedCommunity, LargeCommunity,
    MpReach, MpUnreach, NextHop, Origin, PathAttributes, SegmentType, UnknownAttribute,
};
pub use capability::{
    AddPathFamily, AddPathMode, Capability, GracefulRestart, GracefulRestartFamily,
};
pub use context::{Afi, Family, FamilySet, Safi, SessionContext};
pub use error::{
    AttributeFault, AttributeIssue, DecodeError, DecodeErrorKind, EncodeError, Rfc7606Action,
};
pub use header::{
    decode_header, frame, Frame, Header, MessageType, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN,
    MAX_MESSAGE_LEN,
};
pub use message::{decode_message, encode_message, messages, Message, Messages};
pub use nlri::{NlriEntry, NlriIter, NlriSet, Prefix, PrefixLengthError, PrefixParseError};
pub use notification::{
    CeaseSubcode, ErrorCode, FsmSubcode, HeaderSubcode, Notification, OpenSubcode,
    RouteRefreshSubcode, UpdateSubcode,
};
pub use open::{Asn, HoldTime, Open, RouterId, AS_TRANS};
pub use route_refresh::{RouteRefresh, RouteRefreshSubtype};
pub use update::{pack_announcements, pack_withdrawals, Routes, Update};
