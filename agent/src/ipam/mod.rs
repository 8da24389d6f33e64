//! IPAM: addresses for local pods from the node's pod CIDRs.
//!
//! - [`alloc`]: the pure allocator (which address goes to which container,
//!   what is usable in a CIDR, requested addresses, garbage collection).
//! - [`store`]: the crash-safe state file `STATE_DIR/ipam.json` and its
//!   recovery rules.
//!
//! The CNI server ([`crate::cni::server`]) is the one user, through
//! [`SharedIpam`]: every change runs under one mutex, so two concurrent
//! ADDs never race for an address, and changes that arrive during a write
//! are made durable together by the next one (group commit).

pub mod alloc;
pub mod store;

pub use alloc::{usable, AllocError, Allocation, IpamState, Owner, PodKey, StateError};
pub use store::{Ipam, IpamError, SharedIpam, Ticket, STATE_FILE};
