//! The per-peer BGP session state machine (RFC 4271 §8), pure.
//!
//! This module owns one peer's session: states and events with their RFC
//! names, the timer table, OPEN checks and capability negotiation, and
//! connection collision resolution. It must never read a clock, draw a
//! random number, or touch a socket: time (`now: Instant`) and jitter come
//! in as arguments, and everything to do comes out as [`Action`] values.
//!
//! How the shell drives one peer:
//!
//! ```text
//!   fsm = Fsm::new(config, Box::new(jitter_source))
//!   act(fsm.handle(now, Event::ManualStart))
//!   loop {
//!     select {
//!       sleep_until(fsm.poll_timeout())  => act(fsm.handle_timeout(now))
//!       connect finished on conn c       => act(fsm.handle(now, Event::TcpCrAcked { conn: c }))
//!       accepted from the peer as c      => act(fsm.handle(now, Event::TcpConnectionConfirmed { conn: c }))
//!       message m decoded on c           => act(fsm.handle(now, Event::received(c, m)))
//!         (frame and decode with fsm.context_for(c), one message at a time:
//!          the context changes once the peer's OPEN is accepted)
//!       decode error e on c              => act(fsm.handle(now, Event::decode_failed(c, e)))
//!       socket c closed / connect failed => act(fsm.handle(now, Event::TcpConnectionFails { conn: c }))
//!       writes to c stuck / moving again => Event::SendStalled / Event::SendProgress (RFC 9687)
//!     }
//!   }
//! ```
//!
//! `act` carries out each [`Action`]: `Connect` (one outbound attempt,
//! replacing any in flight) and `AbortConnect`; `Send` (encode with
//! `context_for(conn)`); `Close` (write the NOTIFICATION if any, without
//! waiting long, then close; later events about that id are ignored);
//! `StateChanged` (log, status); `Established` / `SessionDown` /
//! `UpdateReceived` / `RouteRefreshReceived` (hand to the speaker and RIB).
//! UPDATEs go out through [`Fsm::send_update`], or, when the caller encodes
//! them itself, as bytes followed by [`Fsm::messages_sent`] so the
//! KeepaliveTimer restarts. [`DownReason::explain`] names the peer in a
//! reason; [`Fsm::last_error`] is `lastError` in `tortie status`.
//!
//! Connection ids ([`ConnId`]) are the shell's and must never be reused.
//!
//! Files: [`state`], [`event`], [`action`], [`timers`], [`config`],
//! [`negotiate`](mod@negotiate), [`collision`], and [`peer`] (the machine itself).

pub mod action;
pub mod collision;
pub mod config;
pub mod event;
pub mod negotiate;
pub mod peer;
pub mod state;
pub mod timers;

pub use action::{Action, DownReason};
pub use config::{GracefulRestartConfig, PeerAs, PeerConfig};
pub use event::{ConnId, Direction, Event};
pub use negotiate::{negotiate, Negotiated, OpenError, PeerGracefulRestart};
pub use peer::{Fsm, NotEstablished};
pub use state::State;
pub use timers::{Backoff, Jitter, NoJitter, ScriptedJitter, TimerKind, Timers};
