//! [`Fsm`]: one peer's session, RFC 4271 §8.2, sans-IO.
//!
//! Owns the peer's state, its timer table, and the (at most two) TCP
//! connections a collision can produce. It never reads a clock, never
//! draws a random number and never touches a socket: `now` and jitter come
//! in, [`Action`]s go out, and the shell sleeps until [`Fsm::poll_timeout`].
//!
//! # Two connections
//!
//! The RFC runs one FSM per connection and lets collision detection kill
//! one. Here one `Fsm` per peer holds:
//!
//! - the *primary* connection, whose progress is the peer's visible state
//!   (OpenSent, OpenConfirm, Established);
//! - at most one *candidate*: a second connection that arrived while the
//!   primary was past Active. We send our OPEN on it at once, as the RFC's
//!   second FSM would, and decide as soon as the peer's BGP Identifier is
//!   known (an OPEN on either connection): [`super::collision::resolve`]
//!   picks the survivor, the loser gets Cease / Connection Collision
//!   Resolution. A candidate is therefore always in OpenSent.
//!
//! If the primary dies while a candidate waits, the candidate becomes the
//! primary (what the RFC's surviving second FSM would do). While
//! Established, a candidate's OPEN is refused the same way (RFC 4271
//! §6.8, CollisionDetectEstablishedState off), except when the peer had
//! advertised graceful restart: then the new OPEN means the peer restarted
//! and the new connection replaces the old session (RFC 4724 §4.2).
//!
//! # Deviations from the RFC tables, on purpose
//!
//! - A failed outbound connect in Connect goes to Active (keep listening,
//!   retry after the backoff) rather than Idle, so a peer that connects to
//!   us meanwhile is accepted; this is what the RFC does with DelayOpen and
//!   what BIRD does.
//! - A NOTIFICATION from the peer is never answered with a NOTIFICATION
//!   (the RFC's "any other event" rows would send an FSM Error).
//! - Passive peers never connect out, not even after ConnectRetry.
//! - After a failure with automatic restart on, Idle arms the IdleHold
//!   timer with an exponential backoff (§8.1.1 DampPeerOscillations,
//!   simplified) and restarts itself.
//! - While Idle waits out that backoff, a connection from the peer is
//!   accepted (as AutomaticStart_with_PassiveTcpEstablishment) instead of
//!   refused: two speakers backing off out of phase would otherwise refuse
//!   each other's attempts for ever. An FSM that was never started, or was
//!   stopped by the operator, still refuses with Cease / Connection
//!   Rejected.
//! - A candidate connection gets its own OPEN wait (`CandidateHold`, the
//!   second FSM's HoldTimer in OpenSent), so a silent second connection
//!   cannot block a later one for ever.
//! - RFC 9687's SendHoldTimer runs on the primary while the shell reports
//!   `SendStalled` and stops on `SendProgress`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::context::SessionContext;
use crate::wire::notification::{CeaseSubcode, ErrorCode, FsmSubcode, Notification, OpenSubcode};
use crate::wire::open::Open;
use crate::wire::route_refresh::RouteRefresh;
use crate::wire::update::Update;
use crate::wire::Message;

use super::action::{Action, DownReason};
use super::collision::{self, Speaker, Winner};
use super::config::{PeerConfig, OPEN_HOLD_TIME};
use super::event::{ConnId, Direction, Event};
use super::negotiate::{self, Negotiated};
use super::state::State;
use super::timers::{jittered, Backoff, Jitter, TimerKind, Timers};

/// A connection the FSM uses, and who opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conn {
    id: ConnId,
    dir: Direction,
}

/// Asked to send on a session that is not Established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot send {what}: session is {state}, not Established")]
pub struct NotEstablished {
    /// What we tried to send.
    pub what: &'static str,
    /// The state the session was in.
    pub state: State,
}

/// One peer's BGP session state machine. See the module docs.
#[derive(Debug)]
pub struct Fsm {
    config: PeerConfig,
    local_open: Open,
    state: State,
    /// Started and not ManualStop'ed: automatic restarts allowed.
    admin_up: bool,
    /// Current start mode is passive (config or a passive start event).
    passive: bool,
    /// We asked the shell for an outbound connection and have not heard
    /// back yet.
    connecting: bool,
    primary: Option<Conn>,
    candidate: Option<Conn>,
    /// Connections we closed lately. Their late events (above all the
    /// shell's TcpConnectionFails after our Close) are ignored; without
    /// this, a failure report for a closed socket would read as the
    /// failure of the outbound attempt still in flight.
    closed: VecDeque<ConnId>,
    /// What the primary's OPEN exchange negotiated (OpenConfirm,
    /// Established).
    negotiated: Option<Negotiated>,
    timers: Timers,
    backoff: Backoff,
    jitter: Box<dyn Jitter>,
    connect_retry_counter: u32,
    established_at: Option<Instant>,
    last_error: Option<DownReason>,
    out: Vec<Action>,
}

/// How many closed connection ids to remember. Ids are never reused, and
/// a peer has at most a few connections in flight.
const CLOSED_MEMORY: usize = 16;

/// NOTIFICATION error code Send Hold Timer Expired (RFC 9687 §5).
pub const SEND_HOLD_TIMER_EXPIRED: u8 = 8;

fn collision_cease() -> Notification {
    Notification::cease(CeaseSubcode::ConnectionCollisionResolution)
}

fn fsm_error(state: State) -> Notification {
    Notification::fsm(match state {
        State::OpenSent => FsmSubcode::UnexpectedInOpenSent,
        State::OpenConfirm => FsmSubcode::UnexpectedInOpenConfirm,
        State::Established => FsmSubcode::UnexpectedInEstablished,
        _ => FsmSubcode::Unspecified,
    })
}

impl Fsm {
    /// A stopped (Idle) FSM for one peer. `jitter` supplies the RFC 4271
    /// §10 factors for ConnectRetry, Keepalive and the idle-hold backoff.
    pub fn new(config: PeerConfig, jitter: Box<dyn Jitter>) -> Self {
        let local_open = negotiate::local_open(&config);
        let backoff = Backoff::new(config.idle_hold_initial, config.idle_hold_max);
        Self {
            passive: config.passive,
            config,
            local_open,
            state: State::Idle,
            admin_up: false,
            connecting: false,
            primary: None,
            candidate: None,
            closed: VecDeque::with_capacity(CLOSED_MEMORY),
            negotiated: None,
            timers: Timers::default(),
            backoff,
            jitter,
            connect_retry_counter: 0,
            established_at: None,
            last_error: None,
            out: Vec::new(),
        }
    }

    // ----- observers -------------------------------------------------

    /// The peer's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The OPEN we send.
    pub fn local_open(&self) -> &Open {
        &self.local_open
    }

    /// What the OPENs negotiated, from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the last session or attempt ended (`lastError` in status).
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// RFC 4271 ConnectRetryCounter: failures since the last manual start
    /// or stop.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// The timer table.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// When the shell must call [`Fsm::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The connection carrying the Established session.
    pub fn established_conn(&self) -> Option<ConnId> {
        match self.state {
            State::Established => self.primary.map(|c| c.id),
            _ => None,
        }
    }

    /// Connections the FSM currently uses (primary first).
    pub fn connections(&self) -> Vec<ConnId> {
        self.primary
            .iter()
            .chain(self.candidate.iter())
            .map(|c| c.id)
            .collect()
    }

    /// Whether an outbound connection attempt is outstanding.
    pub fn is_connecting(&self) -> bool {
        self.connecting
    }

    /// The codec context for messages on `conn`: negotiated once the
    /// peer's OPEN was accepted on the primary, the pre-OPEN default
    /// otherwise.
    pub fn context_for(&self, conn: ConnId) -> SessionContext {
        match (&self.primary, &self.negotiated) {
            (Some(p), Some(n)) if p.id == conn => n.context,
            _ => SessionContext::default(),
        }
    }

    // ----- inputs ----------------------------------------------------

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        self.step(now, event);
        std::mem::take(&mut self.out)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        // Each expiry can re-arm timers, but only into the future, so this
        // ends; the bound is a guard against a zero-length interval.
        for _ in 0..16 {
            let Some(kind) = self.timers.pop_expired(now) else {
                break;
            };
            let event = match kind {
                TimerKind::ConnectRetry => Event::ConnectRetryTimerExpires,
                TimerKind::Hold => Event::HoldTimerExpires,
                TimerKind::Keepalive => Event::KeepaliveTimerExpires,
                TimerKind::IdleHold => Event::IdleHoldTimerExpires,
                TimerKind::SendHold => Event::SendHoldTimerExpires,
                TimerKind::CandidateHold => {
                    self.candidate_hold_expired();
                    continue;
                }
            };
            self.step(now, event);
        }
        std::mem::take(&mut self.out)
    }

    /// Sends an UPDATE on the Established session (restarting the
    /// KeepaliveTimer, RFC 4271 §8.2.2).
    pub fn send_update(
        &mut self,
        now: Instant,
        update: Update,
    ) -> Result<Vec<Action>, NotEstablished> {
        self.send_established(now, "UPDATE", Message::Update(update))
    }

    /// Sends a ROUTE-REFRESH on the Established session.
    pub fn send_route_refresh(
        &mut self,
        now: Instant,
        refresh: RouteRefresh,
    ) -> Result<Vec<Action>, NotEstablished> {
        self.send_established(now, "ROUTE-REFRESH", Message::RouteRefresh(refresh))
    }

    /// Tells the FSM that the caller wrote messages on the Established
    /// connection itself (e.g. UPDATEs pre-encoded by the codec's packer):
    /// restarts the KeepaliveTimer, as RFC 4271 §8.2.2 asks for every
    /// UPDATE sent. Does nothing in other states.
    pub fn messages_sent(&mut self, now: Instant) {
        if self.state == State::Established {
            self.arm_keepalive(now);
        }
    }

    /// Replaces the configuration. It applies from the next connection on
    /// (our OPEN is rebuilt now; a running session keeps what it
    /// negotiated); e.g. clear `graceful_restart.restarting` once the
    /// restart is over so later OPENs stop setting the R bit. To apply a
    /// change at once, send `Event::AutomaticStop` with Cease / Other
    /// Configuration Change.
    pub fn set_config(&mut self, config: PeerConfig) {
        self.local_open = negotiate::local_open(&config);
        if self.state == State::Idle {
            self.passive = config.passive;
        }
        self.backoff = Backoff::new(config.idle_hold_initial, config.idle_hold_max);
        self.config = config;
    }

    fn send_established(
        &mut self,
        now: Instant,
        what: &'static str,
        message: Message,
    ) -> Result<Vec<Action>, NotEstablished> {
        let conn = match (self.state, self.primary) {
            (State::Established, Some(p)) => p.id,
            _ => {
                return Err(NotEstablished {
                    what,
                    state: self.state,
                })
            }
        };
        self.send(conn, message);
        self.arm_keepalive(now);
        Ok(std::mem::take(&mut self.out))
    }

    // ----- the machine -----------------------------------------------

    fn step(&mut self, now: Instant, event: Event) {
        match event {
            Event::ManualStart => self.start(now, self.config.passive, true),
            Event::ManualStartPassive => self.start(now, true, true),
            Event::AutomaticStart => self.start(now, self.config.passive, false),
            Event::AutomaticStartPassive => self.start(now, true, false),
            Event::ManualStop { message } => self.manual_stop(now, message),
            Event::AutomaticStop { notification } => {
                if self.state != State::Idle {
                    self.connect_retry_counter += 1;
                    self.shutdown(
                        now,
                        DownReason::AutomaticStop {
                            notification: notification.clone(),
                        },
                        notification,
                    );
                }
            }
            Event::ConnectRetryTimerExpires => self.connect_retry_expired(now),
            Event::HoldTimerExpires => self.hold_expired(now),
            Event::KeepaliveTimerExpires => self.keepalive_expired(now),
            Event::SendHoldTimerExpires => self.send_hold_expired(now),
            Event::IdleHoldTimerExpires => {
                if self.state == State::Idle && self.admin_up {
                    self.start(now, self.passive, false);
                }
            }
            other => self.conn_event(now, other),
        }
    }

    fn start(&mut self, now: Instant, passive: bool, manual: bool) {
        if manual {
            self.connect_retry_counter = 0;
        }
        self.admin_up = true;
        if self.state != State::Idle {
            return;
        }
        self.timers.stop(TimerKind::IdleHold);
        self.passive = passive || self.config.passive;
        if self.passive {
            self.set_state(
                State::Active,
                "started; waiting for the peer to connect (passive)".into(),
            );
        } else {
            self.connect(now);
            self.set_state(State::Connect, "started; connecting to the peer".into());
        }
    }

    /// Asks for an outbound connection and arms ConnectRetry.
    fn connect(&mut self, now: Instant) {
        self.out.push(Action::Connect);
        self.connecting = true;
        let wait = jittered(self.config.connect_retry, self.jitter.factor());
        self.timers.arm(TimerKind::ConnectRetry, now + wait);
    }

    fn manual_stop(&mut self, now: Instant, message: Option<String>) {
        self.admin_up = false;
        self.connect_retry_counter = 0;
        self.timers.stop(TimerKind::IdleHold);
        if self.state == State::Idle {
            return;
        }
        let notification = match &message {
            Some(m) => Notification::shutdown(CeaseSubcode::AdministrativeShutdown, m),
            None => Notification::cease(CeaseSubcode::AdministrativeShutdown),
        };
        self.shutdown(now, DownReason::ManualStop { message }, notification);
    }

    /// Ends everything (both connections) with `notification`; used for
    /// the stop events.
    fn shutdown(&mut self, now: Instant, reason: DownReason, notification: Notification) {
        let was = self.state;
        for c in [self.primary.take(), self.take_candidate()]
            .into_iter()
            .flatten()
        {
            self.close(c.id, Some(notification.clone()));
        }
        if was == State::Established {
            self.maybe_reset_backoff(now);
            self.out.push(Action::SessionDown {
                reason: reason.clone(),
                retain_routes_for: None,
            });
        }
        self.negotiated = None;
        self.established_at = None;
        let text = reason.to_string();
        self.last_error = Some(reason);
        self.enter_idle(now, text);
    }

    /// Leaves every connection behind and settles in Idle, arming the
    /// idle-hold backoff when automatic restart applies.
    fn enter_idle(&mut self, now: Instant, reason: String) {
        if let Some(c) = self.take_candidate() {
            self.close(
                c.id,
                Some(Notification::cease(CeaseSubcode::ConnectionRejected)),
            );
        }
        if let Some(c) = self.primary.take() {
            self.close(c.id, None);
        }
        if self.connecting {
            self.out.push(Action::AbortConnect);
            self.connecting = false;
        }
        self.negotiated = None;
        // Every timer belongs to a connection or an attempt, except the
        // backoff armed just below.
        for kind in TimerKind::ALL {
            self.timers.stop(kind);
        }
        let mut reason = reason;
        if self.admin_up && self.config.auto_restart {
            let wait = self.backoff.next_wait(self.jitter.factor());
            self.timers.arm(TimerKind::IdleHold, now + wait);
            reason = format!("{reason}; restarting in {:.1} s", wait.as_secs_f64());
        }
        self.set_state(State::Idle, reason);
    }

    /// A session that stayed up at least as long as the longest backoff
    /// earns a fast reconnect again; a flapping one keeps backing off.
    fn maybe_reset_backoff(&mut self, now: Instant) {
        if let Some(at) = self.established_at {
            if now.saturating_duration_since(at) >= self.backoff.max() {
                self.backoff.reset();
            }
        }
    }

    /// The primary connection failed for `reason`. Closes it (with
    /// `notification` if given), reports the session down if it was up,
    /// and continues on the candidate if there is one; otherwise goes to
    /// Idle (or Active, per the RFC's OpenSent row for a lost connection).
    fn fail(
        &mut self,
        now: Instant,
        reason: DownReason,
        notification: Option<Notification>,
        received: Option<&Notification>,
        count: bool,
    ) {
        let was = self.state;
        if let Some(p) = self.primary.take() {
            self.close(p.id, notification.clone());
        }
        if was == State::Established {
            self.maybe_reset_backoff(now);
            let gr_notification = received.cloned().or(notification);
            let retain = self
                .negotiated
                .as_ref()
                .and_then(|n| n.retains_routes_after(gr_notification.as_ref()));
            self.out.push(Action::SessionDown {
                reason: reason.clone(),
                retain_routes_for: retain,
            });
        }
        if count {
            self.connect_retry_counter += 1;
        }
        self.negotiated = None;
        self.established_at = None;
        self.timers.stop(TimerKind::Keepalive);
        self.timers.stop(TimerKind::ConnectRetry);
        self.timers.stop(TimerKind::SendHold);
        let text = reason.to_string();
        self.last_error = Some(reason);
        if let Some(c) = self.take_candidate() {
            self.primary = Some(c);
            self.timers.arm(TimerKind::Hold, now + OPEN_HOLD_TIME);
            self.set_state(
                State::OpenSent,
                format!("{text}; continuing on the {} connection {}", c.dir, c.id),
            );
        } else if was == State::OpenSent
            && !self.passive
            && matches!(self.last_error, Some(DownReason::ConnectionLost))
        {
            // RFC 4271 §8.2.2 OpenSent, TcpConnectionFails: back to Active,
            // ConnectRetryTimer restarted, listening.
            self.timers.stop(TimerKind::Hold);
            let wait = jittered(self.config.connect_retry, self.jitter.factor());
            self.timers.arm(TimerKind::ConnectRetry, now + wait);
            self.set_state(
                State::Active,
                format!("{text}; retrying in {} s", wait.as_secs()),
            );
        } else {
            self.enter_idle(now, text);
        }
    }

    fn connect_retry_expired(&mut self, now: Instant) {
        match self.state {
            State::Idle => {}
            State::Connect => {
                // Drop the attempt that hangs and try again.
                self.connect(now);
            }
            State::Active => {
                if self.passive {
                    return;
                }
                self.connect(now);
                self.set_state(
                    State::Connect,
                    "connect-retry timer expired; connecting to the peer".into(),
                );
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.unexpected_event(now, "ConnectRetryTimer_Expires");
            }
        }
    }

    fn hold_expired(&mut self, now: Instant) {
        match self.state {
            State::Idle => {}
            State::Connect | State::Active => self.unexpected_event(now, "HoldTimer_Expires"),
            State::OpenSent | State::OpenConfirm | State::Established => {
                let (hold_time, awaiting_open) = match &self.negotiated {
                    Some(n) => (Duration::from_secs(u64::from(n.hold_time.0)), false),
                    None => (OPEN_HOLD_TIME, true),
                };
                let reason = DownReason::HoldTimerExpired {
                    hold_time,
                    awaiting_open,
                };
                self.fail(
                    now,
                    reason,
                    Some(Notification::hold_timer_expired()),
                    None,
                    true,
                );
            }
        }
    }

    fn keepalive_expired(&mut self, now: Instant) {
        match self.state {
            State::Idle => {}
            State::OpenConfirm | State::Established => {
                if let Some(p) = self.primary {
                    self.send(p.id, Message::Keepalive);
                }
                self.arm_keepalive(now);
            }
            _ => self.unexpected_event(now, "KeepaliveTimer_Expires"),
        }
    }

    /// An event the state's row does not allow and that is not a message:
    /// the RFC's "any other event" (FSM Error when a connection is open).
    fn unexpected_event(&mut self, now: Instant, event: &'static str) {
        let state = self.state;
        let reason = DownReason::UnexpectedEvent { event, state };
        if self.primary.is_some() {
            self.fail(now, reason, Some(fsm_error(state)), None, true);
        } else {
            self.connect_retry_counter += 1;
            let text = reason.to_string();
            self.last_error = Some(reason);
            self.enter_idle(now, text);
        }
    }

    fn conn_event(&mut self, now: Instant, event: Event) {
        let Some(id) = event.conn() else {
            return;
        };
        if self.closed.contains(&id) {
            return;
        }
        if self.primary.is_some_and(|p| p.id == id) {
            self.primary_event(now, event);
        } else if self.candidate.is_some_and(|c| c.id == id) {
            self.candidate_event(now, event);
        } else {
            match event {
                Event::TcpCrAcked { conn } => self.new_conn(now, conn, Direction::Outbound),
                Event::TcpConnectionConfirmed { conn } => {
                    self.new_conn(now, conn, Direction::Inbound)
                }
                Event::TcpConnectionFails { .. } => self.connect_failed(now),
                // Late events about a connection we already closed.
                _ => {}
            }
        }
    }

    fn new_conn(&mut self, now: Instant, id: ConnId, dir: Direction) {
        if dir == Direction::Outbound {
            if !self.connecting {
                // An attempt we no longer want (replaced or aborted).
                self.close(id, None);
                return;
            }
            self.connecting = false;
        }
        let conn = Conn { id, dir };
        // Waiting out the backoff is not a refusal to talk: a connection
        // from the peer then counts as AutomaticStart_with_Passive-
        // TcpEstablishment (event 5). Refusing it, as the RFC's Idle row
        // does, lets two speakers backing off out of phase refuse each
        // other for ever.
        let restarting =
            self.state == State::Idle && self.admin_up && self.timers.is_armed(TimerKind::IdleHold);
        match self.state {
            State::Idle if !restarting => {
                self.close(
                    id,
                    Some(Notification::cease(CeaseSubcode::ConnectionRejected)),
                );
            }
            State::Idle | State::Connect | State::Active => {
                self.timers.stop(TimerKind::IdleHold);
                self.timers.stop(TimerKind::ConnectRetry);
                self.primary = Some(conn);
                self.send(id, Message::Open(self.local_open.clone()));
                self.timers.arm(TimerKind::Hold, now + OPEN_HOLD_TIME);
                self.set_state(
                    State::OpenSent,
                    format!("{dir} connection {id} up; OPEN sent"),
                );
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                if self.candidate.is_some() {
                    // A third connection: nothing to resolve, refuse it.
                    self.close(
                        id,
                        Some(Notification::cease(CeaseSubcode::ConnectionRejected)),
                    );
                } else {
                    self.candidate = Some(conn);
                    self.timers
                        .arm(TimerKind::CandidateHold, now + OPEN_HOLD_TIME);
                    self.send(id, Message::Open(self.local_open.clone()));
                }
            }
        }
    }

    fn connect_failed(&mut self, now: Instant) {
        if !self.connecting {
            return;
        }
        self.connecting = false;
        if self.state != State::Connect {
            // The would-be second connection; the primary carries on.
            return;
        }
        self.connect_retry_counter += 1;
        self.last_error = Some(DownReason::ConnectFailed);
        let wait = self
            .backoff
            .next_wait(self.jitter.factor())
            .min(self.config.connect_retry);
        self.timers.arm(TimerKind::ConnectRetry, now + wait);
        self.set_state(
            State::Active,
            format!(
                "could not connect to the peer; retrying in {:.1} s, listening meanwhile",
                wait.as_secs_f64()
            ),
        );
    }

    fn primary_event(&mut self, now: Instant, event: Event) {
        let state = self.state;
        match event {
            Event::TcpConnectionFails { .. } => {
                self.fail(now, DownReason::ConnectionLost, None, None, true);
            }
            Event::TcpCrAcked { .. } | Event::TcpConnectionConfirmed { .. } => {}
            Event::SendStalled { .. } => {
                if let (Some(d), false) = (
                    self.send_hold_time(),
                    self.timers.is_armed(TimerKind::SendHold),
                ) {
                    self.timers.arm(TimerKind::SendHold, now + d);
                }
            }
            Event::SendProgress { .. } => self.timers.stop(TimerKind::SendHold),
            Event::OpenCollisionDump { .. } => {
                // RFC 4271 §8.2.2: send Cease, drop the connection, count
                // a failure; the other connection (if any) carries on.
                let reason = DownReason::CollisionDump;
                self.fail(now, reason, Some(collision_cease()), None, true);
            }
            Event::BgpOpen { open, .. } => match state {
                State::OpenSent => self.primary_open(now, &open),
                _ => self.unexpected_message(now, "BGPOpen"),
            },
            Event::KeepAliveMsg { .. } => match state {
                State::OpenConfirm => self.established(now),
                State::Established => self.arm_hold(now),
                _ => self.unexpected_message(now, "KeepAliveMsg"),
            },
            Event::UpdateMsg { update, .. } => match state {
                State::Established => {
                    self.arm_hold(now);
                    self.out.push(Action::UpdateReceived { update });
                }
                _ => self.unexpected_message(now, "UpdateMsg"),
            },
            Event::RouteRefreshMsg { refresh, .. } => match state {
                State::Established => {
                    self.arm_hold(now);
                    // RFC 2918 §4: a family we did not negotiate is ignored.
                    let ours = self
                        .negotiated
                        .as_ref()
                        .is_some_and(|n| n.families.contains(&refresh.family));
                    if ours {
                        self.out.push(Action::RouteRefreshReceived { refresh });
                    }
                }
                _ => self.unexpected_message(now, "RouteRefreshMsg"),
            },
            Event::NotifMsg { notification, .. } => {
                // NotifMsgVerErr (event 24) does not count as a failure:
                // the peer is telling us which version to try.
                let version_error = notification.code == ErrorCode::OpenMessage
                    && notification.subcode == u8::from(OpenSubcode::UnsupportedVersionNumber)
                    && matches!(state, State::OpenSent | State::OpenConfirm);
                let reason = DownReason::NotificationReceived {
                    notification: notification.clone(),
                };
                self.fail(now, reason, None, Some(&notification), !version_error);
            }
            Event::BgpHeaderErr { error, .. }
            | Event::BgpOpenMsgErr { error, .. }
            | Event::UpdateMsgErr { error, .. } => {
                let notification = error.notification.clone();
                self.fail(
                    now,
                    DownReason::DecodeError { error },
                    Some(notification),
                    None,
                    true,
                );
            }
            _ => {}
        }
    }

    fn unexpected_message(&mut self, now: Instant, message: &'static str) {
        let state = self.state;
        let reason = DownReason::UnexpectedMessage { message, state };
        self.fail(now, reason, Some(fsm_error(state)), None, true);
    }

    /// The peer's OPEN on the primary, in OpenSent.
    fn primary_open(&mut self, now: Instant, open: &Open) {
        let negotiated = match negotiate::negotiate(&self.config, &self.local_open, open) {
            Ok(n) => n,
            Err(error) => {
                let notification = error.notification();
                self.fail(
                    now,
                    DownReason::OpenRejected { error },
                    Some(notification),
                    None,
                    true,
                );
                return;
            }
        };
        if let (Some(primary), Some(candidate)) = (self.primary, self.candidate) {
            // The OPEN arrived on the primary: it is the "new" side here.
            match self.resolve(&negotiated, candidate.dir, primary.dir) {
                Winner::New => {
                    self.take_candidate();
                    self.close(candidate.id, Some(collision_cease()));
                }
                Winner::Existing => {
                    // Keep the candidate (still waiting for its OPEN).
                    self.close(primary.id, Some(collision_cease()));
                    self.primary = Some(candidate);
                    self.take_candidate();
                    self.timers.stop(TimerKind::SendHold);
                    self.timers.arm(TimerKind::Hold, now + OPEN_HOLD_TIME);
                    self.set_state(
                        State::OpenSent,
                        format!(
                            "connection collision with {}: keeping the {} connection {}",
                            negotiated.peer_id, candidate.dir, candidate.id
                        ),
                    );
                    return;
                }
            }
        }
        self.accept_open(now, negotiated);
    }

    fn resolve(&self, negotiated: &Negotiated, existing: Direction, new: Direction) -> Winner {
        let local = Speaker {
            id: u32::from(self.config.router_id.0),
            asn: self.config.local_as.0,
        };
        let remote = Speaker {
            id: u32::from(negotiated.peer_id.0),
            asn: negotiated.peer_as.0,
        };
        collision::resolve(local, remote, existing, new)
    }

    /// OpenSent -> OpenConfirm on the primary.
    fn accept_open(&mut self, now: Instant, negotiated: Negotiated) {
        let Some(p) = self.primary else {
            return;
        };
        self.timers.stop(TimerKind::ConnectRetry);
        self.send(p.id, Message::Keepalive);
        let summary = negotiated.to_string();
        self.negotiated = Some(negotiated);
        self.arm_keepalive(now);
        self.arm_hold(now);
        self.set_state(
            State::OpenConfirm,
            format!("OPEN accepted ({summary}); KEEPALIVE sent"),
        );
    }

    fn established(&mut self, now: Instant) {
        let (Some(p), Some(n)) = (self.primary, self.negotiated.clone()) else {
            return;
        };
        self.arm_hold(now);
        self.established_at = Some(now);
        if self.connecting {
            // Established sessions refuse new connections anyway.
            self.out.push(Action::AbortConnect);
            self.connecting = false;
        }
        self.set_state(State::Established, format!("session up: {n}"));
        self.out.push(Action::Established {
            conn: p.id,
            negotiated: Box::new(n),
        });
    }

    fn candidate_event(&mut self, now: Instant, event: Event) {
        let Some(cand) = self.candidate else {
            return;
        };
        match event {
            Event::TcpConnectionFails { .. } => {
                self.take_candidate();
            }
            Event::TcpCrAcked { .. } | Event::TcpConnectionConfirmed { .. } => {}
            Event::BgpOpen { open, .. } => self.candidate_open(now, cand, &open),
            Event::KeepAliveMsg { .. }
            | Event::UpdateMsg { .. }
            | Event::RouteRefreshMsg { .. } => {
                self.take_candidate();
                self.close(cand.id, Some(fsm_error(State::OpenSent)));
            }
            Event::NotifMsg { .. } => {
                self.take_candidate();
                self.close(cand.id, None);
            }
            Event::OpenCollisionDump { .. } => {
                self.take_candidate();
                self.close(cand.id, Some(collision_cease()));
            }
            Event::BgpHeaderErr { error, .. }
            | Event::BgpOpenMsgErr { error, .. }
            | Event::UpdateMsgErr { error, .. } => {
                self.take_candidate();
                self.close(cand.id, Some(error.notification));
            }
            _ => {}
        }
    }

    /// The peer's OPEN on the candidate: now the collision can be decided.
    fn candidate_open(&mut self, now: Instant, cand: Conn, open: &Open) {
        let negotiated = match negotiate::negotiate(&self.config, &self.local_open, open) {
            Ok(n) => n,
            Err(error) => {
                self.take_candidate();
                self.close(cand.id, Some(error.notification()));
                self.last_error = Some(DownReason::OpenRejected { error });
                return;
            }
        };
        let Some(primary) = self.primary else {
            return;
        };
        if self.state == State::Established {
            let gr_negotiated = self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart.is_some());
            // The peer says it has restarted (R bit, RFC 4724 §3) on the new
            // connection.
            let says_restarted = negotiated
                .peer_graceful_restart
                .as_ref()
                .is_some_and(|g| g.restarting);
            // A second connection in the same direction as the session's
            // cannot be a collision: the side that opened both has given up
            // the first one (it restarted). In opposite directions and
            // without the R bit it is most likely the other half of a
            // simultaneous open (both speakers connected at once and our
            // session got established before the peer's OPEN on its own
            // connection arrived): the peer resolves that collision by the
            // RFC 4271 §6.8 identifier rule, so we do too; taking it for a
            // restart would close the connection the peer kept and flap a
            // session that both sides had up.
            let replace = gr_negotiated
                && (says_restarted
                    || cand.dir == primary.dir
                    || self.resolve(&negotiated, primary.dir, cand.dir) == Winner::New);
            if replace {
                // RFC 4724 §4.2: a new OPEN from a restarting peer ends the
                // old session (its routes kept as stale); fail() moves the
                // candidate up.
                self.fail(now, DownReason::PeerRestarted, None, None, false);
                self.accept_open(now, negotiated);
            } else {
                self.take_candidate();
                self.close(cand.id, Some(collision_cease()));
            }
            return;
        }
        match self.resolve(&negotiated, primary.dir, cand.dir) {
            Winner::Existing => {
                self.take_candidate();
                self.close(cand.id, Some(collision_cease()));
            }
            Winner::New => {
                self.close(primary.id, Some(collision_cease()));
                self.primary = Some(cand);
                self.take_candidate();
                self.timers.stop(TimerKind::SendHold);
                self.negotiated = None;
                self.timers.stop(TimerKind::Keepalive);
                self.set_state(
                    State::OpenSent,
                    format!(
                        "connection collision with {}: keeping the {} connection {}",
                        negotiated.peer_id, cand.dir, cand.id
                    ),
                );
                self.accept_open(now, negotiated);
            }
        }
    }

    // ----- helpers ---------------------------------------------------

    /// RFC 9687 SendHoldTime: the configured value, and never less than
    /// twice the negotiated hold time (a slow but alive peer must not trip
    /// it before our own hold timer would).
    fn send_hold_time(&self) -> Option<Duration> {
        let hold = self
            .negotiated
            .as_ref()
            .map_or(0, |n| u64::from(n.hold_time.0));
        self.config
            .send_hold_time
            .map(|d| d.max(Duration::from_secs(2 * hold)))
    }

    /// The peer took nothing we sent for the send hold time: it is stuck
    /// (RFC 9687 §4). The NOTIFICATION will likely not get through; the
    /// shell writes it without waiting and closes.
    fn send_hold_expired(&mut self, now: Instant) {
        if self.primary.is_none() {
            return;
        }
        let send_hold_time = self.send_hold_time().unwrap_or_default();
        let notification =
            Notification::new(ErrorCode::Other(SEND_HOLD_TIMER_EXPIRED), 0u8, Vec::new());
        self.fail(
            now,
            DownReason::SendHoldTimerExpired { send_hold_time },
            Some(notification),
            None,
            true,
        );
    }

    /// Forgets the candidate (the caller closes or promotes it).
    fn take_candidate(&mut self) -> Option<Conn> {
        self.timers.stop(TimerKind::CandidateHold);
        self.candidate.take()
    }

    /// The candidate never sent its OPEN: close it as the RFC's second
    /// FSM would on HoldTimer_Expires in OpenSent.
    fn candidate_hold_expired(&mut self) {
        if let Some(c) = self.take_candidate() {
            self.close(c.id, Some(Notification::hold_timer_expired()));
        }
    }

    fn send(&mut self, conn: ConnId, message: Message) {
        self.out.push(Action::Send { conn, message });
    }

    fn close(&mut self, conn: ConnId, notification: Option<Notification>) {
        if self.closed.len() == CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back(conn);
        self.out.push(Action::Close { conn, notification });
    }

    /// (Re)arms the HoldTimer with the negotiated hold time, or stops it
    /// when that is 0 (RFC 4271 §4.4).
    fn arm_hold(&mut self, now: Instant) {
        match self.negotiated.as_ref().map(|n| n.hold_time.0) {
            Some(0) => self.timers.stop(TimerKind::Hold),
            Some(h) => self
                .timers
                .arm(TimerKind::Hold, now + Duration::from_secs(u64::from(h))),
            None => self.timers.arm(TimerKind::Hold, now + OPEN_HOLD_TIME),
        }
    }

    /// (Re)arms the KeepaliveTimer, jittered; stopped when the hold time
    /// is 0.
    fn arm_keepalive(&mut self, now: Instant) {
        match self.negotiated.as_ref().and_then(|n| n.keepalive) {
            Some(k) => {
                let wait = jittered(k, self.jitter.factor());
                self.timers.arm(TimerKind::Keepalive, now + wait);
            }
            None => self.timers.stop(TimerKind::Keepalive),
        }
    }

    fn set_state(&mut self, to: State, reason: String) {
        let from = self.state;
        self.state = to;
        if from != to {
            self.out.push(Action::StateChanged { from, to, reason });
        }
    }
}
