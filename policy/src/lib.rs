//! tortie's NetworkPolicy engine.
//!
//! Layout: [`model`] (the snapshot the compiler reads), [`selector`] (label
//! selectors), [`compile`] (model to the [`ruleset`] IR, pure), [`naming`]
//! (stable chain and set names), [`render`] (iptables-restore and ipset
//! restore text), [`diff`], [`explain`], [`testing`] (snapshot builders
//! for tests and benches), and the thin edge: `apply`
//! (runs iptables-restore and ipset) and `backend` (nft or legacy).
//! Everything except `apply` and `backend` is pure: no processes, files or
//! clocks.

pub mod apply;
pub mod backend;
pub mod compile;
pub mod diff;
pub mod error;
pub mod explain;
pub mod model;
pub mod naming;
pub mod render;
pub mod ruleset;
pub mod selector;
pub mod testing;

pub use compile::{compile, Compiled, Stats};
pub use diff::{diff, Update};
pub use error::PolicyError;
pub use explain::{explain, Endpoint, Explanation, Flow, SideVerdict};
pub use model::{LocalWorkload, NamedPort, Namespace, NetworkPolicy, Pod, SlimPod, Snapshot};
pub use render::{
    ipset_restore, iptables_restore, iptables_restore_with, jumps_restore, RenderOptions,
};
pub use ruleset::{BuiltinChain, Family, Protocol, Ruleset};
