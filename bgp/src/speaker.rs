//! The pure multi-peer speaker core: per-peer FSMs, the RIB, and the joins
//! between them (UPDATE import, Adj-RIB-Out packing, End-of-RIB, route
//! refresh, graceful restart, max-prefix). No tokio, no clock, no sockets:
//! the runtime feeds it events with `now` and carries out its outputs.
//!
//! Owner: the speaker/runtime helper (work in progress).
