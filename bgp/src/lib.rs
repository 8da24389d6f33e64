//! tortie's BGP speaker.
//!
//! - [`wire`]: the BGP-4 message codec (RFC 4271 and its extensions), pure.
//!
//! Later modules (issue "BGP speaker"): `fsm` (per-peer RFC 4271 §8 state
//! machine, pure), `rib` (Adj-RIB-In, Loc-RIB and decision process,
//! Adj-RIB-Out, pure), `speaker` (the pure multi-peer core) and `runtime`
//! (the tokio shell: sockets, timers, TCP-MD5, GTSM).

pub mod fsm;
pub mod rib;
pub mod runtime;
pub mod speaker;
pub mod wire;
