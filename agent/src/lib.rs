//! The tortie node agent: datastore, node config, IPAM, CNI server, FIB
//! programming, status and metrics. The binaries `tortie` and `tortie-cni`
//! are thin front ends over this library.

pub mod bgp_cmd;
pub mod cni;
pub mod crd;
pub mod daemon;
pub mod datastore;
pub mod fib;
pub mod ipam;
pub mod lab;
pub mod manifests;
pub mod model;
pub mod resources;
pub mod routing;
pub mod status;
pub mod status_client;
