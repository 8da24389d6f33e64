//! FSM outputs: what the shell must do, and what the speaker must learn.
//!
//! Timers are not actions: the FSM keeps one timer table and the shell
//! asks `Fsm::poll_timeout` after every call, as quinn-proto does. That
//! keeps a single source of truth for deadlines.

use std::fmt;
use std::time::Duration;

use crate::wire::error::DecodeError;
use crate::wire::notification::{ErrorCode, Notification};
use crate::wire::route_refresh::RouteRefresh;
use crate::wire::update::Update;
use crate::wire::Message;

use super::event::ConnId;
use super::negotiate::{Negotiated, OpenError};
use super::state::State;

/// Something for the shell (or the speaker core) to do.
// Messages are moved through once, straight to the shell or the RIB;
// boxing the big variants would cost an allocation per message for a
// few hundred bytes of Vec slack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a TCP connection to the peer, replacing any attempt still in
    /// progress. Answer with `Event::TcpCrAcked` or
    /// `Event::TcpConnectionFails`.
    Connect,
    /// Abandon the outbound attempt in progress, if any.
    AbortConnect,
    /// Encode `message` with `Fsm::context_for(conn)` and write it.
    Send {
        /// Where.
        conn: ConnId,
        /// What.
        message: Message,
    },
    /// Write `notification` (if any), then close the connection. Nothing
    /// more will be sent on it; late events about it are ignored.
    Close {
        /// Which connection.
        conn: ConnId,
        /// NOTIFICATION to send first.
        notification: Option<Notification>,
    },
    /// The peer's visible state changed (for logs and `tortie status`).
    StateChanged {
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Why, in words an operator understands.
        reason: String,
    },
    /// The session reached Established: routes may flow.
    Established {
        /// The connection carrying the session.
        conn: ConnId,
        /// What the OPENs negotiated.
        negotiated: Box<Negotiated>,
    },
    /// The Established session ended. The speaker withdraws the peer's
    /// routes, or, when `retain_routes_for` is set (graceful restart,
    /// RFC 4724 §4.2), marks them stale and keeps them that long at most.
    SessionDown {
        /// Why.
        reason: DownReason,
        /// Keep the peer's routes as stale for this long.
        retain_routes_for: Option<Duration>,
    },
    /// An UPDATE from the peer, for the RIB.
    UpdateReceived {
        /// The UPDATE.
        update: Box<Update>,
    },
    /// A ROUTE-REFRESH from the peer: re-advertise the family (or a BoRR /
    /// EoRR marker, RFC 7313).
    RouteRefreshReceived {
        /// The request.
        refresh: RouteRefresh,
    },
}

/// Why a session (or an attempt at one) ended, for `lastError` and logs.
///
/// `Display` is a sentence without the peer's address; the shell prefixes
/// the peer (`"BGPPeer tor-a (192.0.2.1): hold timer expired ..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The operator stopped the peer.
    ManualStop {
        /// The Shutdown Communication we sent.
        message: Option<String>,
    },
    /// We stopped the session ourselves (AutomaticStop).
    AutomaticStop {
        /// The NOTIFICATION we sent.
        notification: Notification,
    },
    /// No message from the peer for the hold time.
    HoldTimerExpired {
        /// The hold time that ran out.
        hold_time: Duration,
        /// Whether we were still waiting for the peer's OPEN.
        awaiting_open: bool,
    },
    /// The peer sent a NOTIFICATION.
    NotificationReceived {
        /// What it said.
        notification: Notification,
    },
    /// A message from the peer did not decode; we sent the codec's
    /// NOTIFICATION.
    DecodeError {
        /// The codec's error.
        error: DecodeError,
    },
    /// The peer's OPEN failed our checks; we sent the matching
    /// NOTIFICATION.
    OpenRejected {
        /// What was wrong.
        error: OpenError,
    },
    /// The peer sent a message the state does not allow; we sent a Finite
    /// State Machine Error (RFC 6608).
    UnexpectedMessage {
        /// The message (RFC event name).
        message: &'static str,
        /// Our state when it arrived.
        state: State,
    },
    /// An event the state does not allow that is not a message (e.g. a
    /// timer the state should not have).
    UnexpectedEvent {
        /// The RFC event name.
        event: &'static str,
        /// Our state when it happened.
        state: State,
    },
    /// The TCP connection closed or failed.
    ConnectionLost,
    /// The outbound connection attempt failed.
    ConnectFailed,
    /// The peer opened a new session while ours was Established and it
    /// had advertised graceful restart: it restarted (RFC 4724 §4.2).
    PeerRestarted,
    /// Collision detection outside the FSM dropped this connection
    /// (OpenCollisionDump); we sent Cease / Connection Collision Resolution.
    CollisionDump,
    /// Nothing could be sent to the peer for the send hold time (RFC 9687):
    /// it is not reading.
    SendHoldTimerExpired {
        /// The send hold time that ran out.
        send_hold_time: Duration,
    },
}

impl DownReason {
    /// The NOTIFICATION we sent, if the reason implies one.
    pub fn sent_notification(&self) -> Option<Notification> {
        match self {
            DownReason::AutomaticStop { notification } => Some(notification.clone()),
            DownReason::HoldTimerExpired { .. } => Some(Notification::hold_timer_expired()),
            DownReason::DecodeError { error } => Some(error.notification.clone()),
            DownReason::OpenRejected { error } => Some(error.notification()),
            DownReason::CollisionDump => Some(Notification::cease(
                crate::wire::notification::CeaseSubcode::ConnectionCollisionResolution,
            )),
            _ => None,
        }
    }
}

/// A NOTIFICATION for people: the codec's rendering, minus a bare
/// "subcode 0" where the code has no subcodes (Hold Timer Expired).
fn describe(n: &Notification) -> String {
    if n.subcode == 0 && n.data.is_empty() && n.subcode_name().is_none() {
        n.code.to_string()
    } else {
        n.to_string()
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

impl DownReason {
    /// The reason with the peer named, e.g. `"hold timer expired after
    /// 90 s, no message from 192.0.2.1"`.
    pub fn explain(&self, peer: &str) -> String {
        Explained {
            reason: self,
            peer: Some(peer),
        }
        .to_string()
    }
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Explained {
            reason: self,
            peer: None,
        }
        .fmt(f)
    }
}

/// A [`DownReason`] rendered for one peer (or "the peer").
struct Explained<'a> {
    reason: &'a DownReason,
    peer: Option<&'a str>,
}

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let the_peer = self.peer.unwrap_or("the peer");
        let subject = self.peer.unwrap_or("peer");
        match self.reason {
            DownReason::ManualStop { message: None } => f.write_str("stopped by the operator"),
            DownReason::ManualStop { message: Some(m) } => {
                write!(f, "stopped by the operator: {m:?}")
            }
            DownReason::AutomaticStop { notification } => {
                write!(
                    f,
                    "stopped by tortie, sent NOTIFICATION {}",
                    describe(notification)
                )
            }
            DownReason::HoldTimerExpired {
                hold_time,
                awaiting_open: true,
            } => write!(
                f,
                "no OPEN from {the_peer} within {}, sent NOTIFICATION Hold Timer Expired",
                secs(*hold_time)
            ),
            DownReason::HoldTimerExpired { hold_time, .. } => write!(
                f,
                "hold timer expired after {}, no message from {the_peer}",
                secs(*hold_time)
            ),
            DownReason::NotificationReceived { notification } => {
                write!(f, "{subject} sent NOTIFICATION {}", describe(notification))?;
                if notification.code == ErrorCode::Cease && notification.subcode == 2 {
                    write!(f, " ({the_peer}'s operator shut the session down)")?;
                }
                Ok(())
            }
            DownReason::DecodeError { error } => write!(
                f,
                "bad message from {the_peer} ({}), sent NOTIFICATION {}",
                error.kind,
                describe(&error.notification)
            ),
            DownReason::OpenRejected { error } => write!(
                f,
                "OPEN from {the_peer} refused: {error}; sent NOTIFICATION {}",
                describe(&error.notification())
            ),
            DownReason::UnexpectedMessage { message, state } => write!(
                f,
                "unexpected {message} from {the_peer} in state {state}, \
                 sent NOTIFICATION Finite State Machine Error"
            ),
            DownReason::UnexpectedEvent { event, state } => {
                write!(f, "unexpected event {event} in state {state}")
            }
            DownReason::ConnectionLost => write!(f, "TCP connection to {the_peer} closed"),
            DownReason::ConnectFailed => write!(f, "could not connect to {the_peer}"),
            DownReason::PeerRestarted => write!(
                f,
                "{subject} opened a new session while established (graceful restart), \
                 replacing the old one"
            ),
            DownReason::CollisionDump => write!(
                f,
                "connection to {the_peer} dropped by collision resolution, \
                 sent NOTIFICATION Cease / Connection Collision Resolution"
            ),
            DownReason::SendHoldTimerExpired { send_hold_time } => write!(
                f,
                "could not send to {the_peer} for {} (RFC 9687 send hold timer), \
                 sent NOTIFICATION Send Hold Timer Expired",
                secs(*send_hold_time)
            ),
        }
    }
}
