//! OPEN (RFC 4271 §4.2) with capabilities as optional parameters (RFC
//! 5492), the extended optional parameters length of RFC 9072, and the
//! scalar types OPEN introduces (AS numbers, BGP identifier, hold time).

use std::fmt;
use std::net::Ipv4Addr;

use nom::number::complete::{be_u16, be_u32, be_u8};
use nom::Parser;

use super::capability::Capability;
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::header::MessageType;
use super::notification::{Notification, OpenSubcode};

/// An AS number (2- or 4-octet, RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Asn(pub u32);

/// AS_TRANS (RFC 6793 §2): stands in for a 4-octet AS where only two
/// octets fit.
pub const AS_TRANS: Asn = Asn(23456);

impl Asn {
    /// Whether the AS fits in two octets.
    pub fn is_two_octet(self) -> bool {
        self.0 <= u32::from(u16::MAX)
    }

    /// The 2-octet form: the AS itself, or AS_TRANS when it needs four.
    pub fn to_two_octet(self) -> u16 {
        u16::try_from(self.0).unwrap_or(23456)
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AS{}", self.0)
    }
}

/// BGP Identifier (RFC 4271 §4.2, RFC 6286).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouterId(pub Ipv4Addr);

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hold time in seconds (RFC 4271 §4.2): 0 (no keepalives) or at least 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldTime(pub u16);

impl HoldTime {
    /// Whether RFC 4271 §6.2 accepts this value.
    pub fn is_acceptable(self) -> bool {
        self.0 == 0 || self.0 >= 3
    }
}

/// Optional parameter type "Capabilities" (RFC 5492 §4).
pub const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: a Non-Ext OP Type of 255 marks the extended form.
const PARAM_EXTENDED_LENGTH: u8 = 255;

/// An OPEN message (RFC 4271 §4.2).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+
/// |    Version    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     My Autonomous System      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Hold Time           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         BGP Identifier                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Opt Parm Len  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |             Optional Parameters (variable)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// RFC 9072 extended form: Opt Parm Len = 255, then a parameter type 255
/// followed by a 2-octet Extended Opt. Parm. Length, and every parameter
/// has a 2-octet length. Both forms decode; [`Open::encode_body`] uses the
/// extended form only when the parameters exceed 255 octets.
///
/// Capabilities may come one per parameter or many in one; both decode.
///
/// All capabilities from all Capabilities parameters are flattened into
/// [`Open::capabilities`], in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Open {
    /// Version, 4.
    pub version: u8,
    /// My Autonomous System as sent: the AS, or AS_TRANS when the AS needs
    /// four octets (the real one is in [`Capability::FourOctetAs`]).
    pub my_as: u16,
    /// Proposed hold time.
    pub hold_time: HoldTime,
    /// BGP Identifier.
    pub router_id: RouterId,
    /// Capabilities, in the order received.
    pub capabilities: Vec<Capability>,
}

fn open_error(kind: DecodeErrorKind, subcode: OpenSubcode, data: Vec<u8>) -> DecodeError {
    DecodeError::new(kind, Notification::open(subcode, data))
}

fn truncated() -> DecodeError {
    open_error(
        DecodeErrorKind::Truncated {
            message: MessageType::Open,
        },
        OpenSubcode::Unspecific,
        Vec::new(),
    )
}

fn malformed_params() -> DecodeError {
    open_error(
        DecodeErrorKind::MalformedOptionalParameters,
        OpenSubcode::Unspecific,
        Vec::new(),
    )
}

type NomError<'a> = nom::Err<nom::error::Error<&'a [u8]>>;

impl Open {
    /// An OPEN for `asn`: My AS becomes AS_TRANS when the AS needs four
    /// octets, and a 4-octet AS capability is added unless one is given
    /// (RFC 6793 §3 says a NEW speaker always sends it).
    pub fn new(
        asn: Asn,
        hold_time: HoldTime,
        router_id: RouterId,
        mut capabilities: Vec<Capability>,
    ) -> Self {
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Self {
            version: 4,
            my_as: asn.to_two_octet(),
            hold_time,
            router_id,
            capabilities,
        }
    }

    /// The sender's AS: from the 4-octet AS capability if present
    /// (RFC 6793 §4.1), else My AS.
    pub fn asn(&self) -> Asn {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(Asn(u32::from(self.my_as)))
    }

    /// The first capability with this code (see [`super::capability::code`]).
    pub fn capability(&self, code: u8) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.code() == code)
    }

    /// The families announced with the multiprotocol capability, in order.
    /// RFC 4760 §8: a speaker that sends none supports IPv4 unicast only.
    pub fn multiprotocol_families(&self) -> Vec<super::context::Family> {
        self.capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    /// The graceful restart capability, if sent.
    pub fn graceful_restart(&self) -> Option<&super::capability::GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    /// Decode an OPEN body (after the header), checking RFC 4271 §6.2:
    /// version 4, hold time 0 or >= 3, BGP Identifier not 0.0.0.0, My AS
    /// not 0 (RFC 7607), only Capabilities parameters.
    ///
    /// The peer AS is not checked against configuration here; that is the
    /// FSM's job (Bad Peer AS).
    pub fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let (rest, (version, my_as, hold, id, opt_len)) = (be_u8, be_u16, be_u16, be_u32, be_u8)
            .parse(body)
            .map_err(|_: NomError<'_>| truncated())?;
        if version != 4 {
            // Data: the largest version we support, as a 2-octet value.
            return Err(open_error(
                DecodeErrorKind::UnsupportedVersion { version },
                OpenSubcode::UnsupportedVersionNumber,
                vec![0, 4],
            ));
        }
        let hold_time = HoldTime(hold);
        if !hold_time.is_acceptable() {
            return Err(open_error(
                DecodeErrorKind::UnacceptableHoldTime { hold_time: hold },
                OpenSubcode::UnacceptableHoldTime,
                Vec::new(),
            ));
        }
        let router_id = Ipv4Addr::from(id);
        if id == 0 {
            return Err(open_error(
                DecodeErrorKind::BadBgpIdentifier { id: router_id },
                OpenSubcode::BadBgpIdentifier,
                Vec::new(),
            ));
        }
        if my_as == 0 {
            return Err(open_error(
                DecodeErrorKind::BadPeerAs { asn: 0 },
                OpenSubcode::BadPeerAs,
                my_as.to_be_bytes().to_vec(),
            ));
        }

        // RFC 9072 §2: Opt Parm Len 255 followed by type 255 is the
        // extended form; otherwise the classic one.
        let (params, is_extended) =
            if opt_len == 255 && rest.first() == Some(&PARAM_EXTENDED_LENGTH) {
                let (r, (_, ext_len)) = (be_u8, be_u16)
                    .parse(rest)
                    .map_err(|_: NomError<'_>| truncated())?;
                if r.len() != usize::from(ext_len) {
                    return Err(malformed_params());
                }
                (r, true)
            } else {
                if rest.len() != usize::from(opt_len) {
                    return Err(malformed_params());
                }
                (rest, false)
            };

        let mut capabilities = Vec::new();
        let mut rest = params;
        while !rest.is_empty() {
            let (r, param_type) =
                be_u8::<_, nom::error::Error<&[u8]>>(rest).map_err(|_| malformed_params())?;
            let (r, len) = if is_extended {
                be_u16::<_, nom::error::Error<&[u8]>>(r).map_err(|_| malformed_params())?
            } else {
                let (r, l) =
                    be_u8::<_, nom::error::Error<&[u8]>>(r).map_err(|_| malformed_params())?;
                (r, u16::from(l))
            };
            let Some((value, r)) = r.split_at_checked(usize::from(len)) else {
                return Err(malformed_params());
            };
            rest = r;
            if param_type != PARAM_CAPABILITIES {
                return Err(open_error(
                    DecodeErrorKind::UnsupportedOptionalParameter { param_type },
                    OpenSubcode::UnsupportedOptionalParameter,
                    Vec::new(),
                ));
            }
            let mut caps = value;
            while !caps.is_empty() {
                let (r, (code, len)) = (be_u8, be_u8)
                    .parse(caps)
                    .map_err(|_: NomError<'_>| malformed_params())?;
                let Some((value, r)) = r.split_at_checked(usize::from(len)) else {
                    return Err(malformed_params());
                };
                let cap = Capability::decode(code, value)?;
                if let Capability::FourOctetAs(Asn(0)) = cap {
                    return Err(open_error(
                        DecodeErrorKind::BadPeerAs { asn: 0 },
                        OpenSubcode::BadPeerAs,
                        Vec::new(),
                    ));
                }
                capabilities.push(cap);
                caps = r;
            }
        }
        Ok(Self {
            version,
            my_as,
            hold_time,
            router_id: RouterId(router_id),
            capabilities,
        })
    }

    /// Append the body (after the header).
    ///
    /// All capabilities go in one Capabilities parameter, as BIRD and
    /// GoBGP send them; when that exceeds 255 octets, the parameter uses
    /// the RFC 9072 extended form.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.0.to_be_bytes());
        out.extend_from_slice(&self.router_id.0.octets());
        let mut caps_len = 0usize;
        for c in &self.capabilities {
            let len = c.value_len();
            if len > 255 {
                return Err(EncodeError::FieldTooLong {
                    what: "capability",
                    length: len,
                });
            }
            caps_len += 2 + len;
        }
        if self.capabilities.is_empty() {
            out.push(0);
        } else if caps_len + 2 <= 255 {
            out.push(u8::try_from(caps_len + 2).unwrap_or(u8::MAX));
            out.push(PARAM_CAPABILITIES);
            out.push(u8::try_from(caps_len).unwrap_or(u8::MAX));
            for c in &self.capabilities {
                Self::encode_capability(c, out);
            }
        } else {
            let ext_len = 3 + caps_len;
            let (Ok(ext_len16), Ok(caps_len16)) = (u16::try_from(ext_len), u16::try_from(caps_len))
            else {
                return Err(EncodeError::FieldTooLong {
                    what: "optional parameters",
                    length: ext_len,
                });
            };
            out.push(255);
            out.push(PARAM_EXTENDED_LENGTH);
            out.extend_from_slice(&ext_len16.to_be_bytes());
            out.push(PARAM_CAPABILITIES);
            out.extend_from_slice(&caps_len16.to_be_bytes());
            for c in &self.capabilities {
                Self::encode_capability(c, out);
            }
        }
        Ok(())
    }

    fn encode_capability(c: &Capability, out: &mut Vec<u8>) {
        out.push(c.code());
        out.push(u8::try_from(c.value_len()).unwrap_or(u8::MAX));
        c.encode_value(out);
    }
}
