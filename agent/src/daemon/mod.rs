//! `tortie agent`: the node agent (see [`shell`] for the daemon itself).

pub mod metrics;
pub mod nat;
pub mod policy;
pub mod report;
