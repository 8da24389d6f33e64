//! The tokio shell around the pure speaker core: listener, per-session I/O
//! tasks, timers and socket options.
//!
//! - [`socket`]: TCP-MD5 (RFC 2385), GTSM (RFC 5082), source binding.
//! - [`shell`]: [`start`] runs a [`crate::speaker::Speaker`] on sockets and
//!   returns a [`Handle`] (reconfigure, status, shutdown).
//!
//! This module owns every socket and clock of the speaker; it must never make
//! a protocol decision itself (that is the FSM's and the RIB's job).

pub mod shell;
pub mod socket;

pub use shell::{start, start_with_fib, Handle, RuntimeConfig, StatusReport, Stopped};

#[cfg(test)]
mod tests;
