//! CNI: the `tortie-cni` plugin and the agent side that wires pods.
//!
//! - [`spec`]: CNI spec 1.0.0 — environment, network configuration,
//!   results, error codes, VERSION (pure).
//! - [`protocol`]: the `{"cni": ...}` request and `{"cniResult"|"cniError": ...}`
//!   reply on the agent socket, and the blocking client the plugin uses.
//! - [`plugin`]: the `tortie-cni` binary's `main`.
//! - [`server`]: [`CniServer`] — IPAM, wiring and the daemon's
//!   [`CniContext`] joined into ADD / DEL / CHECK.
//! - [`dataplane`]: the veth pair, addresses, routes and sysctls by netlink.
//! - [`netns`]: running work inside a network namespace.

pub mod dataplane;
pub mod netns;
pub mod plugin;
pub mod protocol;
pub mod server;
pub mod spec;

pub use protocol::{is_cni_request, CniReply, CniRequest};
pub use server::{BoxFuture, CniContext, CniServer, WiredWorkload, IP_ADDRS_ANNOTATION};
pub use spec::{CniError, CniResult};
