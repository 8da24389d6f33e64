//! Decode and encode errors.
//!
//! A [`DecodeError`] always means "this session cannot go on": it carries
//! the NOTIFICATION to send before closing. What RFC 7606 resolves without
//! a reset (treat-as-withdraw, attribute discard) is not an error; it is
//! reported as [`AttributeFault`]s on the decoded
//! [`Update`](super::update::Update).

use std::fmt;

use super::header::MessageType;
use super::notification::Notification;

/// RFC 7606 §2 error-handling approaches, as §7 assigns them per
/// attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rfc7606Action {
    /// Send the NOTIFICATION and close the session (RFC 4271 §6).
    SessionReset,
    /// Treat every prefix of the UPDATE (NLRI and MP_REACH_NLRI) as
    /// withdrawn.
    TreatAsWithdraw,
    /// Ignore the attribute and process the UPDATE otherwise normally.
    AttributeDiscard,
}

/// What was wrong with one path attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeIssue {
    /// The attribute length does not fit the attribute's definition.
    Length {
        /// Length received.
        length: u16,
    },
    /// The Optional or Transitive flag contradicts the attribute type
    /// (RFC 7606 §3 c).
    Flags {
        /// Flags received.
        flags: u8,
    },
    /// The value is not valid (e.g. ORIGIN 3, a zero-length AS_PATH
    /// segment, AS4_PATH carrying confederation segments).
    Value,
    /// A second copy of an attribute (RFC 7606 §3 g).
    Duplicate,
    /// A well-known mandatory attribute is missing while NLRI are present
    /// (RFC 7606 §3 d).
    Missing,
    /// An unrecognised optional non-transitive attribute, which RFC 4271
    /// §5 says to ignore quietly. Listed so it can be logged at debug.
    UnrecognizedNonTransitive,
    /// AS4_PATH or AS4_AGGREGATOR received on a 4-octet AS session, where
    /// RFC 6793 §4.1 says to discard them.
    UnexpectedAs4,
}

impl fmt::Display for AttributeIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { length } => write!(f, "invalid length {length}"),
            Self::Flags { flags } => write!(f, "flags {flags:#04x} contradict the type"),
            Self::Value => f.write_str("invalid value"),
            Self::Duplicate => f.write_str("duplicate"),
            Self::Missing => f.write_str("missing"),
            Self::UnrecognizedNonTransitive => f.write_str("unrecognised optional non-transitive"),
            Self::UnexpectedAs4 => f.write_str("AS4 attribute on a 4-octet AS session"),
        }
    }
}

/// One RFC 7606 finding on an UPDATE that did not reset the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttributeFault {
    /// Attribute type code.
    pub type_code: u8,
    /// What was wrong.
    pub issue: AttributeIssue,
    /// What RFC 7606 says to do about it.
    pub action: Rfc7606Action,
}

impl fmt::Display for AttributeFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "path attribute {}: {} ({:?})",
            self.type_code, self.issue, self.action
        )
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The 16-octet marker is not all ones (RFC 4271 §6.1).
    #[error("message header marker is not all ones")]
    BadMarker,
    /// Header length out of range for the session or message type.
    #[error("message length {length} is out of range")]
    BadLength {
        /// Length field received.
        length: u16,
    },
    /// Header type is not one we know.
    #[error("unknown message type {type_code}")]
    BadType {
        /// Type received.
        type_code: u8,
    },
    /// The body ended before a field it must contain.
    #[error("{message} message is truncated")]
    Truncated {
        /// Message being decoded.
        message: MessageType,
    },
    /// The buffer given to the decoder holds more than the message.
    #[error("{message} message has {count} trailing octets")]
    TrailingBytes {
        /// Message being decoded.
        message: MessageType,
        /// How many octets were left.
        count: usize,
    },
    /// OPEN version is not 4.
    #[error("unsupported BGP version {version}")]
    UnsupportedVersion {
        /// Version received.
        version: u8,
    },
    /// OPEN My AS is 0 (RFC 7607) or the 4-octet AS capability says 0.
    #[error("peer AS {asn} is not acceptable")]
    BadPeerAs {
        /// AS received.
        asn: u32,
    },
    /// BGP Identifier 0.0.0.0 (RFC 6286 allows any other value).
    #[error("BGP identifier {id} is not acceptable")]
    BadBgpIdentifier {
        /// Identifier received.
        id: std::net::Ipv4Addr,
    },
    /// Hold time 1 or 2 (RFC 4271 §4.2).
    #[error("hold time {hold_time} is not 0 and below 3 seconds")]
    UnacceptableHoldTime {
        /// Hold time received.
        hold_time: u16,
    },
    /// An optional parameter other than Capabilities.
    #[error("unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter {
        /// Parameter type received.
        param_type: u8,
    },
    /// Optional parameter lengths do not add up.
    #[error("optional parameters are malformed")]
    MalformedOptionalParameters,
    /// A known capability whose value does not parse.
    #[error("capability {code} is malformed")]
    MalformedCapability {
        /// Capability code.
        code: u8,
    },
    /// UPDATE lengths do not add up, or an attribute overruns the path
    /// attribute field (RFC 7606 §4 leaves nothing to salvage then).
    #[error("malformed attribute list: {reason}")]
    MalformedAttributeList {
        /// What did not add up.
        reason: &'static str,
    },
    /// An attribute with the Optional bit clear that we do not know
    /// (RFC 4271 §6.3).
    #[error("unrecognised well-known attribute {type_code}")]
    UnrecognizedWellKnownAttribute {
        /// Attribute type.
        type_code: u8,
    },
    /// An attribute whose malformation RFC 7606 §7 answers with a session
    /// reset (MP_REACH_NLRI, MP_UNREACH_NLRI).
    #[error("path attribute {type_code}: {issue}")]
    MalformedAttribute {
        /// Attribute type.
        type_code: u8,
        /// What was wrong.
        issue: AttributeIssue,
    },
    /// A family whose NLRI we cannot parse (only IPv4/IPv6 unicast and
    /// multicast are parsed).
    #[error("unsupported address family afi {afi} safi {safi}")]
    UnsupportedFamily {
        /// AFI received.
        afi: u16,
        /// SAFI received.
        safi: u8,
    },
    /// NLRI or withdrawn routes do not parse (prefix length too long,
    /// prefix running past the field).
    #[error("invalid network field: {reason}")]
    InvalidNetworkField {
        /// What was wrong.
        reason: &'static str,
    },
    /// ROUTE-REFRESH BoRR/EoRR with a body other than 4 octets (RFC 7313
    /// §5).
    #[error("ROUTE-REFRESH length {length} is invalid")]
    BadRouteRefreshLength {
        /// Message length received.
        length: usize,
    },
}

/// A decode failure: what was wrong and the NOTIFICATION to send before
/// closing the session (RFC 4271 §6, RFC 7606 "session reset").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}; NOTIFICATION {notification}")]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// The NOTIFICATION to send.
    pub notification: Notification,
}

impl DecodeError {
    /// An error from its parts.
    pub fn new(kind: DecodeErrorKind, notification: Notification) -> Self {
        Self { kind, notification }
    }

    /// What to do: a decode error is always a session reset; RFC 7606's
    /// gentler outcomes are data on the decoded UPDATE.
    pub fn action(&self) -> Rfc7606Action {
        Rfc7606Action::SessionReset
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed the session's maximum message size.
    #[error("message of {length} octets exceeds the session maximum of {max}")]
    TooLarge {
        /// Encoded length.
        length: usize,
        /// Session maximum.
        max: usize,
    },
    /// A field exceeds what its length field can express (a capability
    /// over 255 octets, a shutdown communication over 255 octets, an
    /// attribute over 65535 octets).
    #[error("{what} of {length} octets does not fit its length field")]
    FieldTooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        length: usize,
    },
    /// A prefix of one family handed to an NLRI field of another.
    #[error("prefix {prefix} does not belong to family {family}")]
    FamilyMismatch {
        /// The prefix, printed.
        prefix: String,
        /// The family, printed.
        family: String,
    },
    /// A family whose NLRI this codec does not encode.
    #[error("unsupported address family {family}")]
    UnsupportedFamily {
        /// The family, printed.
        family: String,
    },
    /// The attributes alone leave no room for a single prefix.
    #[error("path attributes of {length} octets leave no room for NLRI")]
    AttributesTooLarge {
        /// Encoded attribute length.
        length: usize,
    },
}
