//! The message header (RFC 4271 §4.1) and framing of a TCP byte stream
//! into messages.
//!
//! [`frame`] looks only at the header, so a speaker can find message
//! boundaries before decoding anything and reject a bad header as early as
//! RFC 4271 §6.1 asks.

use std::fmt;

use super::context::SessionContext;
use super::error::{DecodeError, DecodeErrorKind};
use super::notification::{HeaderSubcode, Notification};

/// The all-ones marker.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Header length: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// Maximum message length without RFC 8654.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message length with RFC 8654 extended messages.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// Message type (RFC 4271 §4.1, RFC 2918 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1
    Open,
    /// 2
    Update,
    /// 3
    Notification,
    /// 4
    Keepalive,
    /// 5 (RFC 2918)
    RouteRefresh,
}

impl MessageType {
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Open),
            2 => Some(Self::Update),
            3 => Some(Self::Notification),
            4 => Some(Self::Keepalive),
            5 => Some(Self::RouteRefresh),
            _ => None,
        }
    }

    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Update => 2,
            Self::Notification => 3,
            Self::Keepalive => 4,
            Self::RouteRefresh => 5,
        }
    }

    /// Smallest valid message length including the header.
    pub fn min_len(self) -> usize {
        match self {
            Self::Open => 29,
            Self::Update => 23,
            Self::Notification => 21,
            Self::Keepalive => 19,
            Self::RouteRefresh => 23,
        }
    }

    /// Largest valid message length including the header. RFC 8654 §3:
    /// OPEN and KEEPALIVE stay within 4096 even when extended messages
    /// are negotiated.
    pub fn max_len(self, ctx: &SessionContext) -> usize {
        match self {
            Self::Keepalive => HEADER_LEN,
            Self::Open => MAX_MESSAGE_LEN,
            _ => ctx.max_message_len(),
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "OPEN",
            Self::Update => "UPDATE",
            Self::Notification => "NOTIFICATION",
            Self::Keepalive => "KEEPALIVE",
            Self::RouteRefresh => "ROUTE-REFRESH",
        })
    }
}

/// A validated message header (RFC 4271 §4.1).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                                                               +
/// |                           Marker                              |
/// +                                                               +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          Length               |      Type     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Total message length including the header.
    pub length: u16,
    /// Message type.
    pub message_type: MessageType,
}

/// What [`frame`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frame {
    /// Not a whole message yet: read at least `needed` more octets.
    Incomplete {
        /// Octets missing before the next step can be decided.
        needed: usize,
    },
    /// One complete message occupies the first `length` octets.
    Complete {
        /// The validated header.
        header: Header,
        /// Message length (== `header.length`), for slicing.
        length: usize,
    },
}

fn bad_length(length: u16) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::BadLength { length },
        Notification::header(
            HeaderSubcode::BadMessageLength,
            length.to_be_bytes().to_vec(),
        ),
    )
}

fn bad_marker() -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::BadMarker,
        Notification::header(HeaderSubcode::ConnectionNotSynchronized, Vec::new()),
    )
}

/// Validate a header (the first 19 octets of `buf`) against RFC 4271
/// §6.1 and the session's size limit.
pub fn decode_header(buf: &[u8], ctx: &SessionContext) -> Result<Header, DecodeError> {
    let Some((head, _)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(bad_length(u16::try_from(buf.len()).unwrap_or(u16::MAX)));
    };
    let (marker, rest) = head.split_at(16);
    if marker != MARKER {
        return Err(bad_marker());
    }
    let (length, type_code) = match rest {
        [hi, lo, t] => (u16::from_be_bytes([*hi, *lo]), *t),
        _ => return Err(bad_marker()),
    };
    if usize::from(length) < HEADER_LEN || usize::from(length) > ctx.max_message_len() {
        return Err(bad_length(length));
    }
    let Some(message_type) = MessageType::from_u8(type_code) else {
        return Err(DecodeError::new(
            DecodeErrorKind::BadType { type_code },
            Notification::header(HeaderSubcode::BadMessageType, vec![type_code]),
        ));
    };
    let len = usize::from(length);
    if len < message_type.min_len() || len > message_type.max_len(ctx) {
        return Err(bad_length(length));
    }
    Ok(Header {
        length,
        message_type,
    })
}

/// Find the first message in a buffer read from the TCP stream.
///
/// Returns [`Frame::Incomplete`] when more octets are needed, and checks
/// the marker as soon as any of it has arrived, so garbage is rejected
/// without waiting for 19 octets.
pub fn frame(buf: &[u8], ctx: &SessionContext) -> Result<Frame, DecodeError> {
    let seen = buf.len().min(MARKER.len());
    if buf
        .get(..seen)
        .is_some_and(|m| m.iter().any(|&b| b != 0xff))
    {
        return Err(bad_marker());
    }
    if buf.len() < HEADER_LEN {
        return Ok(Frame::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    }
    let header = decode_header(buf, ctx)?;
    let length = usize::from(header.length);
    if buf.len() < length {
        return Ok(Frame::Incomplete {
            needed: length - buf.len(),
        });
    }
    Ok(Frame::Complete { header, length })
}

/// Append a header for a message of `length` octets (header included).
pub(crate) fn encode_header(out: &mut Vec<u8>, length: u16, message_type: MessageType) {
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(message_type.to_u8());
}
