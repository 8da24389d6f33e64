//! The snapshot the compiler reads.
//!
//! Inputs are the Kubernetes API types from k8s-openapi, so "absent vs
//! empty" is exactly the API's (`Option<Vec<_>>` = absent, `Some(vec![])` =
//! empty). This module owns the snapshot shape and the small accessors the
//! compiler needs (which pods are workloads, their IPs and named ports); it
//! never reads files or talks to an API server.

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use k8s_openapi::api::core::v1::{Namespace, Pod};
pub use k8s_openapi::api::networking::v1::NetworkPolicy;

/// A pod on this node with its host-side veth.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalWorkload {
    pub namespace: String,
    pub pod: String,
    /// The host-side interface, e.g. [`crate::naming::host_interface_name`].
    pub interface: String,
}

/// Everything the compiler needs for one node.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub namespaces: Vec<Namespace>,
    /// All pods of the cluster (`status.podIPs` used, `status.podIP` as fallback).
    pub pods: Vec<Pod>,
    pub policies: Vec<NetworkPolicy>,
    pub local: Vec<LocalWorkload>,
    /// Interfaces that look like workload interfaces (prefix `tort`) but have
    /// no known pod: the compiler gives them a drop rule (fail closed).
    pub unknown_interfaces: Vec<String>,
}

/// The object's labels (an empty map when it has none).
pub fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether a pod takes part in pod-selector matching at all.
///
/// Host-network pods share the node's IP, so a selector matching them would
/// open the node; finished pods (Succeeded/Failed) may have their IP reused.
pub fn is_workload(pod: &Pod) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    );
    !host_network && !finished
}

/// The pod's IPs, deduplicated and sorted; unparsable entries are skipped
/// (the API server validates them, a file datastore may not).
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(status) = &pod.status {
        if let Some(list) = &status.pod_ips {
            ips.extend(list.iter().filter_map(|p| p.ip.parse::<IpAddr>().ok()));
        }
        if let Some(ip) = status
            .pod_ip
            .as_deref()
            .and_then(|s| s.parse::<IpAddr>().ok())
        {
            ips.push(ip);
        }
    }
    ips.sort();
    ips.dedup();
    ips
}
