//! NOTIFICATION messages (RFC 4271 §4.5) with named error codes and
//! subcodes (RFC 4271 §6, RFC 4486, RFC 5492, RFC 6608, RFC 7313, RFC 8538),
//! and the Shutdown Communication of RFC 9003.
//!
//! Decoding a NOTIFICATION never fails because of its data: a peer that
//! sends one is closing the session anyway, so we keep whatever it said.

use std::fmt;

/// The error code of a NOTIFICATION (RFC 4271 §4.5).
///
/// Unknown codes are kept as [`ErrorCode::Other`]; `From<u8>` never
/// produces `Other` for a known value, so the mapping round-trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: Message Header Error.
    MessageHeader,
    /// 2: OPEN Message Error.
    OpenMessage,
    /// 3: UPDATE Message Error.
    UpdateMessage,
    /// 4: Hold Timer Expired.
    HoldTimerExpired,
    /// 5: Finite State Machine Error.
    FiniteStateMachine,
    /// 6: Cease.
    Cease,
    /// 7: ROUTE-REFRESH Message Error (RFC 7313).
    RouteRefresh,
    /// Any other code, kept as received.
    Other(u8),
}

impl From<u8> for ErrorCode {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::MessageHeader,
            2 => Self::OpenMessage,
            3 => Self::UpdateMessage,
            4 => Self::HoldTimerExpired,
            5 => Self::FiniteStateMachine,
            6 => Self::Cease,
            7 => Self::RouteRefresh,
            other => Self::Other(other),
        }
    }
}

impl From<ErrorCode> for u8 {
    fn from(c: ErrorCode) -> u8 {
        match c {
            ErrorCode::MessageHeader => 1,
            ErrorCode::OpenMessage => 2,
            ErrorCode::UpdateMessage => 3,
            ErrorCode::HoldTimerExpired => 4,
            ErrorCode::FiniteStateMachine => 5,
            ErrorCode::Cease => 6,
            ErrorCode::RouteRefresh => 7,
            ErrorCode::Other(v) => v,
        }
    }
}

macro_rules! subcodes {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $var = $val,)* }
        impl From<$name> for u8 { fn from(s: $name) -> u8 { s as u8 } }
        impl $name {
            /// The subcode for a wire value, if it is one we name.
            pub fn from_u8(v: u8) -> Option<Self> {
                match v { $($val => Some(Self::$var),)* _ => None }
            }
            /// The RFC's name for this subcode.
            pub fn name(self) -> &'static str {
                match self { $(Self::$var => $text,)* }
            }
        }
    };
}

subcodes!(
    /// Message Header Error subcodes (RFC 4271 §4.5).
    HeaderSubcode {
        /// 1
        ConnectionNotSynchronized = 1, "Connection Not Synchronized";
        /// 2
        BadMessageLength = 2, "Bad Message Length";
        /// 3
        BadMessageType = 3, "Bad Message Type";
    }
);

subcodes!(
    /// OPEN Message Error subcodes (RFC 4271 §4.5, RFC 5492 §5).
    OpenSubcode {
        /// 0
        Unspecific = 0, "Unspecific";
        /// 1
        UnsupportedVersionNumber = 1, "Unsupported Version Number";
        /// 2
        BadPeerAs = 2, "Bad Peer AS";
        /// 3
        BadBgpIdentifier = 3, "Bad BGP Identifier";
        /// 4
        UnsupportedOptionalParameter = 4, "Unsupported Optional Parameter";
        /// 6
        UnacceptableHoldTime = 6, "Unacceptable Hold Time";
        /// 7 (RFC 5492)
        UnsupportedCapability = 7, "Unsupported Capability";
    }
);

subcodes!(
    /// UPDATE Message Error subcodes (RFC 4271 §4.5).
    UpdateSubcode {
        /// 1
        MalformedAttributeList = 1, "Malformed Attribute List";
        /// 2
        UnrecognizedWellKnownAttribute = 2, "Unrecognized Well-known Attribute";
        /// 3
        MissingWellKnownAttribute = 3, "Missing Well-known Attribute";
        /// 4
        AttributeFlagsError = 4, "Attribute Flags Error";
        /// 5
        AttributeLengthError = 5, "Attribute Length Error";
        /// 6
        InvalidOriginAttribute = 6, "Invalid ORIGIN Attribute";
        /// 8
        InvalidNextHopAttribute = 8, "Invalid NEXT_HOP Attribute";
        /// 9
        OptionalAttributeError = 9, "Optional Attribute Error";
        /// 10
        InvalidNetworkField = 10, "Invalid Network Field";
        /// 11
        MalformedAsPath = 11, "Malformed AS_PATH";
    }
);

subcodes!(
    /// Finite State Machine Error subcodes (RFC 6608).
    FsmSubcode {
        /// 0
        Unspecified = 0, "Unspecified Error";
        /// 1
        UnexpectedInOpenSent = 1, "Receive Unexpected Message in OpenSent State";
        /// 2
        UnexpectedInOpenConfirm = 2, "Receive Unexpected Message in OpenConfirm State";
        /// 3
        UnexpectedInEstablished = 3, "Receive Unexpected Message in Established State";
    }
);

subcodes!(
    /// Cease subcodes (RFC 4486, RFC 8538 hard reset, RFC 9384 BFD down).
    CeaseSubcode {
        /// 1
        MaxPrefixesReached = 1, "Maximum Number of Prefixes Reached";
        /// 2 (carries a Shutdown Communication, RFC 9003)
        AdministrativeShutdown = 2, "Administrative Shutdown";
        /// 3
        PeerDeconfigured = 3, "Peer De-configured";
        /// 4 (carries a Shutdown Communication, RFC 9003)
        AdministrativeReset = 4, "Administrative Reset";
        /// 5
        ConnectionRejected = 5, "Connection Rejected";
        /// 6
        OtherConfigurationChange = 6, "Other Configuration Change";
        /// 7
        ConnectionCollisionResolution = 7, "Connection Collision Resolution";
        /// 8
        OutOfResources = 8, "Out of Resources";
        /// 9 (RFC 8538)
        HardReset = 9, "Hard Reset";
        /// 10 (RFC 9384)
        BfdDown = 10, "BFD Down";
    }
);

subcodes!(
    /// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
    RouteRefreshSubcode {
        /// 1
        InvalidMessageLength = 1, "Invalid Message Length";
    }
);

/// Longest Shutdown Communication (RFC 9003 §2): its length field is one octet.
pub const MAX_SHUTDOWN_COMMUNICATION_LEN: usize = 255;

/// A NOTIFICATION message (RFC 4271 §4.5).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Error code    | Error subcode |   Data (variable)             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Error code.
    pub code: ErrorCode,
    /// Error subcode; see the `*Subcode` enums for named values.
    pub subcode: u8,
    /// Data, as the (code, subcode) pair defines it.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION from its parts.
    pub fn new(code: ErrorCode, subcode: impl Into<u8>, data: Vec<u8>) -> Self {
        Self {
            code,
            subcode: subcode.into(),
            data,
        }
    }

    /// Message Header Error.
    pub fn header(subcode: HeaderSubcode, data: Vec<u8>) -> Self {
        Self::new(ErrorCode::MessageHeader, subcode, data)
    }

    /// OPEN Message Error.
    pub fn open(subcode: OpenSubcode, data: Vec<u8>) -> Self {
        Self::new(ErrorCode::OpenMessage, subcode, data)
    }

    /// UPDATE Message Error.
    pub fn update(subcode: UpdateSubcode, data: Vec<u8>) -> Self {
        Self::new(ErrorCode::UpdateMessage, subcode, data)
    }

    /// Hold Timer Expired (RFC 4271 §6.5).
    pub fn hold_timer_expired() -> Self {
        Self::new(ErrorCode::HoldTimerExpired, 0u8, Vec::new())
    }

    /// Finite State Machine Error (RFC 6608).
    pub fn fsm(subcode: FsmSubcode) -> Self {
        Self::new(ErrorCode::FiniteStateMachine, subcode, Vec::new())
    }

    /// Cease without data.
    pub fn cease(subcode: CeaseSubcode) -> Self {
        Self::new(ErrorCode::Cease, subcode, Vec::new())
    }

    /// Cease / Administrative Shutdown or Administrative Reset with a
    /// Shutdown Communication (RFC 9003 §2): one length octet, then UTF-8.
    ///
    /// The message is cut at a character boundary to fit 255 octets, so
    /// the result always encodes.
    pub fn shutdown(subcode: CeaseSubcode, message: &str) -> Self {
        let mut end = message.len().min(MAX_SHUTDOWN_COMMUNICATION_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = message.get(..end).unwrap_or_default();
        let mut data = Vec::with_capacity(1 + text.len());
        // `end` <= 255 by construction.
        data.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
        data.extend_from_slice(text.as_bytes());
        Self::new(ErrorCode::Cease, subcode, data)
    }

    /// The Shutdown Communication (RFC 9003) of a Cease / Administrative
    /// Shutdown or Reset, if present and well formed (length fits, UTF-8).
    pub fn shutdown_communication(&self) -> Option<&str> {
        let carries = self.code == ErrorCode::Cease
            && (self.subcode == CeaseSubcode::AdministrativeShutdown as u8
                || self.subcode == CeaseSubcode::AdministrativeReset as u8);
        if !carries {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        std::str::from_utf8(text).ok()
    }

    /// The RFC name of the subcode, when known for this code.
    pub fn subcode_name(&self) -> Option<&'static str> {
        let s = self.subcode;
        match self.code {
            ErrorCode::MessageHeader => HeaderSubcode::from_u8(s).map(HeaderSubcode::name),
            ErrorCode::OpenMessage => OpenSubcode::from_u8(s).map(OpenSubcode::name),
            ErrorCode::UpdateMessage => UpdateSubcode::from_u8(s).map(UpdateSubcode::name),
            ErrorCode::FiniteStateMachine => FsmSubcode::from_u8(s).map(FsmSubcode::name),
            ErrorCode::Cease => CeaseSubcode::from_u8(s).map(CeaseSubcode::name),
            ErrorCode::RouteRefresh => {
                RouteRefreshSubcode::from_u8(s).map(RouteRefreshSubcode::name)
            }
            ErrorCode::HoldTimerExpired | ErrorCode::Other(_) => None,
        }
    }

    /// Decode a NOTIFICATION body (after the 19-octet header). The header
    /// check already guaranteed at least two octets; a shorter body still
    /// decodes (missing fields read as 0) rather than failing, because
    /// there is nothing to answer a broken NOTIFICATION with.
    pub fn decode_body(body: &[u8]) -> Self {
        let code = body.first().copied().unwrap_or(0);
        let subcode = body.get(1).copied().unwrap_or(0);
        let data = body.get(2..).unwrap_or_default().to_vec();
        Self::new(ErrorCode::from(code), subcode, data)
    }

    /// Append the body (without header).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code.into());
        out.push(self.subcode);
        out.extend_from_slice(&self.data);
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::MessageHeader => "Message Header Error",
            Self::OpenMessage => "OPEN Message Error",
            Self::UpdateMessage => "UPDATE Message Error",
            Self::HoldTimerExpired => "Hold Timer Expired",
            Self::FiniteStateMachine => "Finite State Machine Error",
            Self::Cease => "Cease",
            Self::RouteRefresh => "ROUTE-REFRESH Message Error",
            Self::Other(v) => return write!(f, "error code {v}"),
        };
        f.write_str(name)
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        match self.subcode_name() {
            Some(n) => write!(f, " / {n}")?,
            None => write!(f, " / subcode {}", self.subcode)?,
        }
        if let Some(msg) = self.shutdown_communication() {
            write!(f, ": {msg:?}")?;
        } else if !self.data.is_empty() {
            write!(f, " ({} octets of data)", self.data.len())?;
        }
        Ok(())
    }
}
