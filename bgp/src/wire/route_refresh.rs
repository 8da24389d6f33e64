//! ROUTE-REFRESH (RFC 2918 §3) with the Message Subtype of enhanced route
//! refresh (RFC 7313 §3.2).

use super::context::{Afi, Family, Safi};
use super::error::{DecodeError, DecodeErrorKind};
use super::notification::{ErrorCode, Notification, RouteRefreshSubcode};

/// ROUTE-REFRESH Message Subtype (RFC 7313 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteRefreshSubtype {
    /// 0: a normal route refresh request (RFC 2918).
    Normal,
    /// 1: Beginning of Route Refresh.
    BeginningOfRefresh,
    /// 2: End of Route Refresh.
    EndOfRefresh,
    /// Any other value; RFC 7313 §5 says to ignore the message.
    Other(u8),
}

impl From<u8> for RouteRefreshSubtype {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::Normal,
            1 => Self::BeginningOfRefresh,
            2 => Self::EndOfRefresh,
            v => Self::Other(v),
        }
    }
}

impl From<RouteRefreshSubtype> for u8 {
    fn from(s: RouteRefreshSubtype) -> u8 {
        match s {
            RouteRefreshSubtype::Normal => 0,
            RouteRefreshSubtype::BeginningOfRefresh => 1,
            RouteRefreshSubtype::EndOfRefresh => 2,
            RouteRefreshSubtype::Other(v) => v,
        }
    }
}

/// A ROUTE-REFRESH message (RFC 2918 §3, RFC 7313 §3.2).
///
/// ```text
///  0       7      15      23      31
/// +-------+-------+-------+-------+
/// |      AFI      | Subtype | SAFI |
/// +-------+-------+-------+-------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// The family to refresh.
    pub family: Family,
    /// Normal request, BoRR or EoRR.
    pub subtype: RouteRefreshSubtype,
}

impl RouteRefresh {
    /// A normal refresh request for `family`.
    pub fn request(family: Family) -> Self {
        Self {
            family,
            subtype: RouteRefreshSubtype::Normal,
        }
    }

    /// Decode a body (after the header). RFC 7313 §5: a body that is not
    /// exactly 4 octets is a ROUTE-REFRESH Message Error / Invalid Message
    /// Length carrying the whole message (filled in by
    /// [`decode_message`](super::message::decode_message); here, the
    /// body); we apply that to every subtype since we negotiate no ORF
    /// (RFC 5291) that could lengthen it.
    pub fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        match body {
            [a0, a1, subtype, safi] => Ok(Self {
                family: Family::new(Afi(u16::from_be_bytes([*a0, *a1])), Safi(*safi)),
                subtype: RouteRefreshSubtype::from(*subtype),
            }),
            _ => Err(DecodeError::new(
                DecodeErrorKind::BadRouteRefreshLength {
                    length: body.len() + super::header::HEADER_LEN,
                },
                Notification::new(
                    ErrorCode::RouteRefresh,
                    RouteRefreshSubcode::InvalidMessageLength,
                    body.to_vec(),
                ),
            )),
        }
    }

    /// Append the body.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.family.afi.0.to_be_bytes());
        out.push(self.subtype.into());
        out.push(self.family.safi.0);
    }
}
