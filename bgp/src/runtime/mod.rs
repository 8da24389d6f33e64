//! The tokio shell around the pure speaker core: listener, per-session I/O
//! tasks, timers and socket options.
//!
//! - [`socket`]: TCP-MD5 (RFC 2385), GTSM (RFC 5082), source binding.
//!
//! This module owns every socket and clock of the speaker; it must never make
//! a protocol decision itself (that is the FSM's and the RIB's job).

pub mod socket;
