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
//!         (decode with fsm.context_for(c))
//!       decode error e on c              => act(fsm.handle(now, Event::decode_failed(c, e)))
//!       socket c closed / failed         => act(fsm.handle(now, Event::TcpConnectionFails { conn: c }))
//!     }
//!   }
//! ```
//!
//! Files: [`state`], [`event`], [`action`], [`timers`], [`config`],
//! [`negotiate`], [`collision`], and [`peer`] (the machine itself).

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
