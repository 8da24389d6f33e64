//! FSM inputs: the events of RFC 4271 §8.1, with their RFC names in the
//! docs, plus the connection identifiers the shell and the FSM share.

use std::fmt;

use crate::wire::error::DecodeError;
use crate::wire::notification::{ErrorCode, Notification};
use crate::wire::open::Open;
use crate::wire::route_refresh::RouteRefresh;
use crate::wire::update::Update;
use crate::wire::Message;

/// A TCP connection, named by the shell. The FSM only compares ids; the
/// shell must not reuse an id for a new socket while the FSM may still
/// mention the old one (a counter is enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Who opened a TCP connection; collision resolution keeps the one opened
/// by the speaker with the higher BGP Identifier (RFC 4271 §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer.
    Outbound,
    /// The peer connected to us.
    Inbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        })
    }
}

/// An input to the FSM (RFC 4271 §8.1). The RFC's event number and name
/// are given for each; events the RFC lists as optional and that tortie
/// does not implement (DelayOpen, TcpConnection_Valid / Tcp_CR_Invalid,
/// which the shell's listener handles by accepting and then reporting
/// [`Event::TcpConnectionConfirmed`]) have no variant.
///
/// Timer events are produced by `Fsm::handle_timeout`; they are public so
/// tests can inject them in any state, as the RFC tables do.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Event 1, ManualStart: the operator enabled the peer. Connects out
    /// unless the peer is configured passive.
    ManualStart,
    /// Event 4, ManualStart_with_PassiveTcpEstablishment: enabled, but wait
    /// for the peer to connect; never connect out.
    ManualStartPassive,
    /// Event 2, ManualStop: the operator disabled the peer. Sends Cease /
    /// Administrative Shutdown with `message` as the RFC 9003 Shutdown
    /// Communication, and disables automatic restarts.
    ManualStop {
        /// Shutdown Communication for the peer's operator, if any.
        message: Option<String>,
    },
    /// Event 3, AutomaticStart (also what the idle-hold backoff fires).
    AutomaticStart,
    /// Event 5, AutomaticStart_with_PassiveTcpEstablishment.
    AutomaticStartPassive,
    /// Event 8, AutomaticStop: the implementation ends the session (e.g.
    /// maximum prefixes reached) with this NOTIFICATION. Automatic
    /// restart stays on, after the backoff.
    AutomaticStop {
        /// NOTIFICATION to send (typically a Cease).
        notification: Notification,
    },
    /// Event 9, ConnectRetryTimer_Expires.
    ConnectRetryTimerExpires,
    /// Event 10, HoldTimer_Expires.
    HoldTimerExpires,
    /// Event 11, KeepaliveTimer_Expires.
    KeepaliveTimerExpires,
    /// Event 13, IdleHoldTimer_Expires.
    IdleHoldTimerExpires,
    /// SendHoldTimer_Expires (RFC 9687 §4).
    SendHoldTimerExpires,
    /// Not an RFC event: the shell has data queued for `conn` that the
    /// socket does not take (a write is pending). Starts the RFC 9687
    /// SendHoldTimer unless it already runs.
    SendStalled {
        /// The connection.
        conn: ConnId,
    },
    /// Not an RFC event: the socket took data for `conn`. Stops the
    /// SendHoldTimer (report `SendStalled` again if data is still stuck).
    SendProgress {
        /// The connection.
        conn: ConnId,
    },
    /// Event 16, Tcp_CR_Acked: the outbound connection the FSM asked for
    /// with `Action::Connect` is up.
    TcpCrAcked {
        /// The new connection.
        conn: ConnId,
    },
    /// Event 17, TcpConnectionConfirmed: the shell accepted a connection
    /// from the peer's address.
    TcpConnectionConfirmed {
        /// The new connection.
        conn: ConnId,
    },
    /// Event 18, TcpConnectionFails: a connection closed or failed, or the
    /// outbound attempt failed (then `conn` is whatever id the shell gave
    /// the attempt; the FSM has not seen it before).
    TcpConnectionFails {
        /// The connection.
        conn: ConnId,
    },
    /// Event 19, BGPOpen: a valid OPEN (the codec's checks passed; the
    /// FSM's configuration checks are still to come).
    BgpOpen {
        /// Where it arrived.
        conn: ConnId,
        /// The OPEN.
        open: Open,
    },
    /// Event 21, BGPHeaderErr: the header did not decode.
    BgpHeaderErr {
        /// Where it arrived.
        conn: ConnId,
        /// The codec's error, carrying the NOTIFICATION to send.
        error: DecodeError,
    },
    /// Event 22, BGPOpenMsgErr: an OPEN that did not decode or failed the
    /// codec's RFC 4271 §6.2 checks.
    BgpOpenMsgErr {
        /// Where it arrived.
        conn: ConnId,
        /// The codec's error, carrying the NOTIFICATION to send.
        error: DecodeError,
    },
    /// Event 23, OpenCollisionDump: collision detection decided, outside
    /// this FSM, that `conn` must go (the FSM resolves the collisions it
    /// sees itself; this is for a caller that knows more, e.g. of a
    /// connection tracked elsewhere). Closes it with Cease / Connection
    /// Collision Resolution.
    OpenCollisionDump {
        /// The connection to drop.
        conn: ConnId,
    },
    /// Events 24 and 25, NotifMsgVerErr and NotifMsg: the peer sent a
    /// NOTIFICATION (the FSM tells the version error case apart itself).
    NotifMsg {
        /// Where it arrived.
        conn: ConnId,
        /// The NOTIFICATION.
        notification: Notification,
    },
    /// Event 26, KeepAliveMsg.
    KeepAliveMsg {
        /// Where it arrived.
        conn: ConnId,
    },
    /// Event 27, UpdateMsg.
    UpdateMsg {
        /// Where it arrived.
        conn: ConnId,
        /// The UPDATE, for the RIB (boxed: it is most of an event's size).
        update: Box<Update>,
    },
    /// Event 28, UpdateMsgErr: an UPDATE (or another post-OPEN message)
    /// that RFC 7606 answers with a session reset.
    UpdateMsgErr {
        /// Where it arrived.
        conn: ConnId,
        /// The codec's error, carrying the NOTIFICATION to send.
        error: DecodeError,
    },
    /// A ROUTE-REFRESH (RFC 2918, RFC 7313); not an RFC 4271 event, treated
    /// like an UPDATE for timers and states.
    RouteRefreshMsg {
        /// Where it arrived.
        conn: ConnId,
        /// The request (or BoRR/EoRR marker).
        refresh: RouteRefresh,
    },
}

impl Event {
    /// The event for a message the codec decoded on `conn`.
    pub fn received(conn: ConnId, message: Message) -> Self {
        match message {
            Message::Open(open) => Event::BgpOpen { conn, open },
            Message::Update(update) => Event::UpdateMsg {
                conn,
                update: Box::new(update),
            },
            Message::Notification(notification) => Event::NotifMsg { conn, notification },
            Message::Keepalive => Event::KeepAliveMsg { conn },
            Message::RouteRefresh(refresh) => Event::RouteRefreshMsg { conn, refresh },
        }
    }

    /// The event for a message that did not decode on `conn`, classified
    /// by the NOTIFICATION the codec wants sent.
    pub fn decode_failed(conn: ConnId, error: DecodeError) -> Self {
        match error.notification.code {
            ErrorCode::MessageHeader => Event::BgpHeaderErr { conn, error },
            ErrorCode::OpenMessage => Event::BgpOpenMsgErr { conn, error },
            _ => Event::UpdateMsgErr { conn, error },
        }
    }

    /// The RFC 4271 name of the event (for logs).
    pub fn name(&self) -> &'static str {
        match self {
            Event::ManualStart => "ManualStart",
            Event::ManualStartPassive => "ManualStart_with_PassiveTcpEstablishment",
            Event::ManualStop { .. } => "ManualStop",
            Event::AutomaticStart => "AutomaticStart",
            Event::AutomaticStartPassive => "AutomaticStart_with_PassiveTcpEstablishment",
            Event::AutomaticStop { .. } => "AutomaticStop",
            Event::ConnectRetryTimerExpires => "ConnectRetryTimer_Expires",
            Event::HoldTimerExpires => "HoldTimer_Expires",
            Event::KeepaliveTimerExpires => "KeepaliveTimer_Expires",
            Event::IdleHoldTimerExpires => "IdleHoldTimer_Expires",
            Event::SendHoldTimerExpires => "SendHoldTimer_Expires",
            Event::SendStalled { .. } => "SendStalled",
            Event::SendProgress { .. } => "SendProgress",
            Event::TcpCrAcked { .. } => "Tcp_CR_Acked",
            Event::TcpConnectionConfirmed { .. } => "TcpConnectionConfirmed",
            Event::TcpConnectionFails { .. } => "TcpConnectionFails",
            Event::BgpOpen { .. } => "BGPOpen",
            Event::BgpHeaderErr { .. } => "BGPHeaderErr",
            Event::BgpOpenMsgErr { .. } => "BGPOpenMsgErr",
            Event::OpenCollisionDump { .. } => "OpenCollisionDump",
            Event::NotifMsg { .. } => "NotifMsg",
            Event::KeepAliveMsg { .. } => "KeepAliveMsg",
            Event::UpdateMsg { .. } => "UpdateMsg",
            Event::UpdateMsgErr { .. } => "UpdateMsgErr",
            Event::RouteRefreshMsg { .. } => "RouteRefreshMsg",
        }
    }

    /// The connection the event concerns, if any.
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            Event::TcpCrAcked { conn }
            | Event::TcpConnectionConfirmed { conn }
            | Event::TcpConnectionFails { conn }
            | Event::SendStalled { conn }
            | Event::OpenCollisionDump { conn }
            | Event::SendProgress { conn }
            | Event::BgpOpen { conn, .. }
            | Event::BgpHeaderErr { conn, .. }
            | Event::BgpOpenMsgErr { conn, .. }
            | Event::NotifMsg { conn, .. }
            | Event::KeepAliveMsg { conn }
            | Event::UpdateMsg { conn, .. }
            | Event::UpdateMsgErr { conn, .. }
            | Event::RouteRefreshMsg { conn, .. } => Some(*conn),
            _ => None,
        }
    }
}
