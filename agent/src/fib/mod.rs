//! FIB programming: the routes tortie puts in the kernel.
//!
//! - [`route`]: the kernel route model ([`KernelRoute`], [`NextHop`]) and
//!   tortie's protocol number [`RTPROT_TORTIE`].
//! - [`reconcile`]: the pure reconciler. It holds the desired routes, the
//!   last known kernel state and per-route failures, and answers "what
//!   should change" as a minimal list of [`Op`]s. No I/O.
//! - [`speaker`]: the speaker's best-route changes as kernel routes (pure).
//! - [`encap`]: encapsulation per IP pool, the VTEP MAC scheme and MTUs
//!   (pure).
//! - [`compose`]: the desired routes from their sources (learned, local),
//!   encapsulated (pure).
//! - [`sync`]: when the speaker has synced (pure decision + a poller).
//! - [`service`]: the FIB thread and its [`service::FibHandle`].
//! - [`link`], [`tunnels`]: tunnel devices, VXLAN neighbour/FDB entries,
//!   link/address watching (netlink edge).
//! - [`netlink`]: the edge. One dump of tortie's routes per family, and a
//!   pipelined writer that sends many route requests per `sendmsg` and
//!   collects the kernel's answers by sequence number.
//!
//! Rules this module keeps:
//! - Only routes whose protocol is [`RTPROT_TORTIE`] are ever replaced or
//!   deleted; the kernel's, static, BIRD's and everyone else's are never
//!   touched (deletes carry the protocol, which the kernel matches).
//! - At start the routes already in the kernel stay until the speaker has
//!   synced (graceful restart); only then are stale ones removed.
//! - A route the kernel refuses is retried with backoff and never blocks
//!   the others.

pub mod compose;
pub mod encap;
pub mod link;
pub mod netlink;
pub mod reconcile;
pub mod route;
pub mod service;
pub mod speaker;
pub mod sync;
pub mod tunnels;

pub use reconcile::{Op, OpOutcome, Reconciler};
pub use route::{KernelRoute, NextHop, RouteKey, RouteTarget, RTPROT_TORTIE};
pub use service::{spawn, Applied, FibHandle, FibSettings, FibStats};
