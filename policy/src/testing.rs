//! Builders for snapshots in tests and benches (`mk_pod`, `mk_ns`,
//! `mk_policy`, ...), in the style of linkerd2's policy-controller tests.
//! Public so the edge's tests and the bench use the same vocabulary. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{LocalWorkload, Namespace, NetworkPolicy, Pod, Snapshot};
use crate::naming;

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A namespace with labels.
pub fn mk_ns(name: &str, label_pairs: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels(label_pairs),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A running pod with labels and IPs (comma-separated, may be empty).
pub fn mk_pod(ns: &str, name: &str, label_pairs: &[(&str, &str)], ips: &str) -> Pod {
    let ips: Vec<PodIP> = ips
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|ip| PodIP { ip: ip.into() })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: labels(label_pairs),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: ips.first().map(|p| p.ip.clone()),
            pod_ips: if ips.is_empty() { None } else { Some(ips) },
            ..Default::default()
        }),
    }
}

/// Adds a named container port (`protocol` as the API spells it: "TCP"...).
pub fn with_port(mut pod: Pod, name: &str, port: i32, protocol: &str) -> Pod {
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.ports.get_or_insert_with(Vec::new).push(ContainerPort {
            name: Some(name.into()),
            container_port: port,
            protocol: Some(protocol.into()),
            ..Default::default()
        });
    }
    pod
}

/// Marks a pod host-network.
pub fn host_network(mut pod: Pod) -> Pod {
    if let Some(s) = pod.spec.as_mut() {
        s.host_network = Some(true);
    }
    pod
}

/// Sets a pod's phase ("Succeeded", "Failed", ...).
pub fn with_phase(mut pod: Pod, phase: &str) -> Pod {
    if let Some(s) = pod.status.as_mut() {
        s.phase = Some(phase.into());
    }
    pod
}

/// A NetworkPolicy from its `spec` written as JSON (the API's field names),
/// e.g. `json!({"podSelector": {}, "ingress": [{}]})`.
///
/// Panics on a spec that does not deserialize: test input only.
pub fn mk_policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    let obj = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    });
    match serde_json::from_value(obj) {
        Ok(p) => p,
        Err(e) => panic!("mk_policy {ns}/{name}: {e}"),
    }
}

/// A local workload for `pod` with its CNI interface name.
pub fn mk_local(ns: &str, pod: &str) -> LocalWorkload {
    LocalWorkload {
        namespace: ns.into(),
        pod: pod.into(),
        interface: naming::host_interface_name(ns, pod),
    }
}

/// A snapshot where every given pod with an IP is local to this node.
pub fn snapshot_all_local(
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    policies: Vec<NetworkPolicy>,
) -> Snapshot {
    let local = pods
        .iter()
        .filter(|p| crate::model::is_workload(p))
        .filter_map(|p| {
            Some(mk_local(
                p.metadata.namespace.as_deref()?,
                p.metadata.name.as_deref()?,
            ))
        })
        .collect();
    Snapshot {
        namespaces,
        pods,
        policies,
        local,
        unknown_interfaces: Vec::new(),
    }
}
