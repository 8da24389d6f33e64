//! The tortie node agent: datastore, node config, IPAM, CNI server, FIB
//! programming, status and metrics. The binaries `tortie` and `tortie-cni`
//! are thin front ends over this library.

pub mod bgp_cmd;
pub mod datastore;
pub mod fib;
pub mod manifests;
pub mod resources;
pub mod status;
pub mod status_client;
