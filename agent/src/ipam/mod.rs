//! IPAM: addresses for local pods from the node's pod CIDRs.
//!
//! - [`alloc`]: the pure allocator (which address goes to which container,
//!   what is usable in a CIDR, requested addresses, garbage collection).
//! - [`store`]: the crash-safe state file `STATE_DIR/ipam.json` and its
//!   recovery rules.
//!
//! The CNI server ([`crate::cni::server`]) is the one user; it serialises
//! every call through a mutex, so two concurrent ADDs never race here.

pub mod alloc;
pub mod store;

pub use alloc::{usable, AllocError, Allocation, IpamState, Owner, PodKey, StateError};
pub use store::{Ipam, IpamError, STATE_FILE};
