//! Whole messages: the [`Message`] enum, decoding one framed message,
//! encoding one, and iterating the messages in a buffer.

use super::context::SessionContext;
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::header::{decode_header, encode_header, frame, Frame, MessageType, HEADER_LEN};
use super::notification::{HeaderSubcode, Notification};
use super::open::Open;
use super::route_refresh::RouteRefresh;
use super::update::Update;

/// A BGP message.
// UPDATE is by far the most frequent message and is consumed right after
// decoding; boxing it would cost an allocation per UPDATE to save a few
// bytes on the rare KEEPALIVE.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN (RFC 4271 §4.2).
    Open(Open),
    /// UPDATE (RFC 4271 §4.3).
    Update(Update),
    /// NOTIFICATION (RFC 4271 §4.5).
    Notification(Notification),
    /// KEEPALIVE (RFC 4271 §4.4): a bare header.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918, RFC 7313).
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Open(_) => MessageType::Open,
            Self::Update(_) => MessageType::Update,
            Self::Notification(_) => MessageType::Notification,
            Self::Keepalive => MessageType::Keepalive,
            Self::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Encode into a new buffer.
    pub fn encode(&self, ctx: &SessionContext) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        encode_message(self, ctx, &mut out)?;
        Ok(out)
    }
}

fn length_error(length: usize) -> DecodeError {
    let length = u16::try_from(length).unwrap_or(u16::MAX);
    DecodeError::new(
        DecodeErrorKind::BadLength { length },
        Notification::header(
            HeaderSubcode::BadMessageLength,
            length.to_be_bytes().to_vec(),
        ),
    )
}

/// Decode exactly one message: `buf` holds the header and the body and
/// nothing else (as [`frame`] delimits it).
///
/// The result owns its data (one copy of each NLRI field, no per-prefix
/// allocation), so it can outlive the read buffer.
pub fn decode_message(buf: &[u8], ctx: &SessionContext) -> Result<Message, DecodeError> {
    let header = decode_header(buf, ctx)?;
    let length = usize::from(header.length);
    if buf.len() != length {
        return Err(length_error(buf.len()));
    }
    let body = buf.get(HEADER_LEN..).unwrap_or_default();
    Ok(match header.message_type {
        MessageType::Open => Message::Open(Open::decode_body(body)?),
        MessageType::Update => Message::Update(Update::decode_body(body, ctx)?),
        MessageType::Notification => Message::Notification(Notification::decode_body(body)),
        MessageType::Keepalive => Message::Keepalive,
        MessageType::RouteRefresh => {
            // RFC 7313 §5: the NOTIFICATION carries the complete message.
            let rr = RouteRefresh::decode_body(body).map_err(|mut e| {
                e.notification.data = buf.to_vec();
                e
            })?;
            Message::RouteRefresh(rr)
        }
    })
}

/// Append one encoded message (header included) to `out`. Fails, leaving
/// `out` as it was, when the message exceeds what the session allows.
pub fn encode_message(
    msg: &Message,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let ty = msg.message_type();
    encode_header(out, 0, ty);
    let body = match msg {
        Message::Open(o) => o.encode_body(out),
        Message::Update(u) => u.encode_body(ctx, out),
        Message::Notification(n) => {
            n.encode_body(out);
            Ok(())
        }
        Message::Keepalive => Ok(()),
        Message::RouteRefresh(r) => {
            r.encode_body(out);
            Ok(())
        }
    };
    if let Err(e) = body {
        out.truncate(start);
        return Err(e);
    }
    let length = out.len() - start;
    let max = ty.max_len(ctx);
    if length > max {
        out.truncate(start);
        return Err(EncodeError::TooLarge { length, max });
    }
    if let Some(slot) = out.get_mut(start + 16..start + 18) {
        slot.copy_from_slice(&(length as u16).to_be_bytes());
    }
    Ok(())
}

/// Iterator over the complete messages at the start of a buffer; see
/// [`messages`].
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    ctx: SessionContext,
    failed: bool,
}

impl<'a> Messages<'a> {
    /// The octets not consumed yet: an incomplete message to keep until
    /// more arrive (or, after an error, the unread input).
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = match frame(self.rest, &self.ctx) {
            Ok(Frame::Incomplete { .. }) => return None,
            Ok(Frame::Complete { length, .. }) => {
                let (msg, rest) = self.rest.split_at_checked(length)?;
                self.rest = rest;
                decode_message(msg, &self.ctx)
            }
            Err(e) => Err(e),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// Decode the messages in `buf` one after another, stopping at an
/// incomplete tail or after the first error (a session reset: nothing
/// after it can be trusted).
pub fn messages<'a>(buf: &'a [u8], ctx: &SessionContext) -> Messages<'a> {
    Messages {
        rest: buf,
        ctx: *ctx,
        failed: false,
    }
}
