//! Capabilities advertised in OPEN (RFC 5492) and the ones tortie knows:
//! multiprotocol (RFC 4760), route refresh (RFC 2918), enhanced route
//! refresh (RFC 7313), 4-octet AS (RFC 6793), graceful restart (RFC 4724),
//! ADD-PATH (RFC 7911), extended message (RFC 8654).
//!
//! Unknown capabilities are kept as code + value and re-encoded unchanged,
//! so a speaker can report them and a proxy could pass them on.

use nom::number::complete::{be_u16, be_u8};
use nom::Parser;

use super::context::{Afi, Family, Safi};
use super::error::{DecodeError, DecodeErrorKind};
use super::notification::{Notification, OpenSubcode};
use super::open::Asn;

/// Capability codes (IANA "Capability Codes").
pub mod code {
    /// RFC 4760.
    pub const MULTIPROTOCOL: u8 = 1;
    /// RFC 2918.
    pub const ROUTE_REFRESH: u8 = 2;
    /// RFC 8654.
    pub const EXTENDED_MESSAGE: u8 = 6;
    /// RFC 4724.
    pub const GRACEFUL_RESTART: u8 = 64;
    /// RFC 6793.
    pub const FOUR_OCTET_AS: u8 = 65;
    /// RFC 7911.
    pub const ADD_PATH: u8 = 69;
    /// RFC 7313.
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// One capability (RFC 5492 §4).
///
/// ```text
/// +------------------------------+
/// | Capability Code (1 octet)    |
/// +------------------------------+
/// | Capability Length (1 octet)  |
/// +------------------------------+
/// | Capability Value (variable)  |
/// ~                              ~
/// +------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Multiprotocol extensions for one family (RFC 4760 §8): AFI (2),
    /// reserved (1), SAFI (1). Any AFI/SAFI is kept as numbers.
    Multiprotocol(Family),
    /// Route refresh (RFC 2918), empty value.
    RouteRefresh,
    /// Enhanced route refresh (RFC 7313), empty value.
    EnhancedRouteRefresh,
    /// Support for 4-octet AS numbers and our AS (RFC 6793 §3).
    FourOctetAs(Asn),
    /// Graceful restart (RFC 4724 §3).
    GracefulRestart(GracefulRestart),
    /// ADD-PATH (RFC 7911 §4): one entry per family.
    AddPath(Vec<AddPathFamily>),
    /// Extended message (RFC 8654), empty value.
    ExtendedMessage,
    /// Any other capability, kept as received.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// Graceful restart capability value (RFC 4724 §3).
///
/// ```text
/// +--------------------------------------------------+
/// | Restart Flags (4 bits)                           |
/// +--------------------------------------------------+
/// | Restart Time in seconds (12 bits)                |
/// +--------------------------------------------------+
/// | Address Family Identifier (16 bits)              |
/// +--------------------------------------------------+
/// | Subsequent Address Family Identifier (8 bits)    |
/// +--------------------------------------------------+
/// | Flags for Address Family (8 bits)                |
/// +--------------------------------------------------+
/// | ...                                              |
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): the sender supports graceful restart for
    /// NOTIFICATION messages.
    pub notification: bool,
    /// Restart time in seconds; only the low 12 bits are sent.
    pub restart_time: u16,
    /// Families for which the sender keeps forwarding state.
    pub families: Vec<GracefulRestartFamily>,
}

/// One family in the graceful restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    /// The family.
    pub family: Family,
    /// F bit: forwarding state was preserved across the restart.
    pub forwarding_preserved: bool,
}

/// ADD-PATH Send/Receive field (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddPathMode {
    /// 1: able to receive multiple paths.
    Receive,
    /// 2: able to send multiple paths.
    Send,
    /// 3: both.
    Both,
}

impl AddPathMode {
    /// Whether this side receives path identifiers.
    pub fn receives(self) -> bool {
        matches!(self, Self::Receive | Self::Both)
    }

    /// Whether this side sends path identifiers.
    pub fn sends(self) -> bool {
        matches!(self, Self::Send | Self::Both)
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Receive),
            2 => Some(Self::Send),
            3 => Some(Self::Both),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Receive => 1,
            Self::Send => 2,
            Self::Both => 3,
        }
    }
}

/// One family in the ADD-PATH capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddPathFamily {
    /// The family.
    pub family: Family,
    /// What the sender can do for it.
    pub mode: AddPathMode,
}

const GR_RESTART_STATE: u16 = 0x8000;
const GR_NOTIFICATION: u16 = 0x4000;
const GR_TIME_MASK: u16 = 0x0fff;
const GR_FORWARDING: u8 = 0x80;

fn malformed(code: u8, value: &[u8]) -> DecodeError {
    let mut data = Vec::with_capacity(2 + value.len());
    data.push(code);
    data.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    data.extend_from_slice(value);
    DecodeError::new(
        DecodeErrorKind::MalformedCapability { code },
        Notification::open(OpenSubcode::Unspecific, data),
    )
}

type NomResult<'a, T> = nom::IResult<&'a [u8], T, nom::error::Error<&'a [u8]>>;

fn family(input: &[u8]) -> NomResult<'_, Family> {
    let (rest, (afi, safi)) = (be_u16, be_u8).parse(input)?;
    Ok((rest, Family::new(Afi(afi), Safi(safi))))
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Self::Multiprotocol(_) => code::MULTIPROTOCOL,
            Self::RouteRefresh => code::ROUTE_REFRESH,
            Self::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Self::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Self::GracefulRestart(_) => code::GRACEFUL_RESTART,
            Self::AddPath(_) => code::ADD_PATH,
            Self::ExtendedMessage => code::EXTENDED_MESSAGE,
            Self::Unknown { code, .. } => *code,
        }
    }

    /// Decode one capability value. A known capability whose value does
    /// not parse is an OPEN Message Error; a reserved ADD-PATH mode makes
    /// the capability unknown (kept, not used) rather than fatal.
    pub fn decode(code: u8, value: &[u8]) -> Result<Self, DecodeError> {
        let bad = || malformed(code, value);
        let empty = |cap: Capability| {
            if value.is_empty() {
                Ok(cap)
            } else {
                Err(bad())
            }
        };
        match code {
            code::MULTIPROTOCOL => {
                let (rest, (afi, _reserved, safi)) = (be_u16, be_u8, be_u8)
                    .parse(value)
                    .map_err(|_: nom::Err<nom::error::Error<&[u8]>>| bad())?;
                if !rest.is_empty() {
                    return Err(bad());
                }
                Ok(Self::Multiprotocol(Family::new(Afi(afi), Safi(safi))))
            }
            code::ROUTE_REFRESH => empty(Self::RouteRefresh),
            code::ENHANCED_ROUTE_REFRESH => empty(Self::EnhancedRouteRefresh),
            code::EXTENDED_MESSAGE => empty(Self::ExtendedMessage),
            code::FOUR_OCTET_AS => match <[u8; 4]>::try_from(value) {
                Ok(b) => Ok(Self::FourOctetAs(Asn(u32::from_be_bytes(b)))),
                Err(_) => Err(bad()),
            },
            code::GRACEFUL_RESTART => {
                let (mut rest, word) =
                    be_u16::<_, nom::error::Error<&[u8]>>(value).map_err(|_| bad())?;
                let mut families = Vec::with_capacity(rest.len() / 4);
                while !rest.is_empty() {
                    let (r, (family, flags)) = (family, be_u8).parse(rest).map_err(|_| bad())?;
                    families.push(GracefulRestartFamily {
                        family,
                        forwarding_preserved: flags & GR_FORWARDING != 0,
                    });
                    rest = r;
                }
                Ok(Self::GracefulRestart(GracefulRestart {
                    restart_state: word & GR_RESTART_STATE != 0,
                    notification: word & GR_NOTIFICATION != 0,
                    restart_time: word & GR_TIME_MASK,
                    families,
                }))
            }
            code::ADD_PATH => {
                let mut rest = value;
                let mut families = Vec::with_capacity(rest.len() / 4);
                while !rest.is_empty() {
                    let (r, (family, mode)) = (family, be_u8).parse(rest).map_err(|_| bad())?;
                    let Some(mode) = AddPathMode::from_u8(mode) else {
                        return Ok(Self::Unknown {
                            code,
                            value: value.to_vec(),
                        });
                    };
                    families.push(AddPathFamily { family, mode });
                    rest = r;
                }
                Ok(Self::AddPath(families))
            }
            _ => Ok(Self::Unknown {
                code,
                value: value.to_vec(),
            }),
        }
    }

    /// Append the value (without code and length).
    pub fn encode_value(&self, out: &mut Vec<u8>) {
        match self {
            Self::Multiprotocol(f) => {
                out.extend_from_slice(&f.afi.0.to_be_bytes());
                out.push(0);
                out.push(f.safi.0);
            }
            Self::RouteRefresh | Self::EnhancedRouteRefresh | Self::ExtendedMessage => {}
            Self::FourOctetAs(asn) => out.extend_from_slice(&asn.0.to_be_bytes()),
            Self::GracefulRestart(gr) => {
                let mut word = gr.restart_time & GR_TIME_MASK;
                if gr.restart_state {
                    word |= GR_RESTART_STATE;
                }
                if gr.notification {
                    word |= GR_NOTIFICATION;
                }
                out.extend_from_slice(&word.to_be_bytes());
                for f in &gr.families {
                    out.extend_from_slice(&f.family.afi.0.to_be_bytes());
                    out.push(f.family.safi.0);
                    out.push(if f.forwarding_preserved {
                        GR_FORWARDING
                    } else {
                        0
                    });
                }
            }
            Self::AddPath(list) => {
                for a in list {
                    out.extend_from_slice(&a.family.afi.0.to_be_bytes());
                    out.push(a.family.safi.0);
                    out.push(a.mode.to_u8());
                }
            }
            Self::Unknown { value, .. } => out.extend_from_slice(value),
        }
    }

    /// Length of the value in octets.
    pub fn value_len(&self) -> usize {
        match self {
            Self::Multiprotocol(_) | Self::FourOctetAs(_) => 4,
            Self::RouteRefresh | Self::EnhancedRouteRefresh | Self::ExtendedMessage => 0,
            Self::GracefulRestart(gr) => 2 + 4 * gr.families.len(),
            Self::AddPath(list) => 4 * list.len(),
            Self::Unknown { value, .. } => value.len(),
        }
    }
}
