//! Builders for snapshots in tests and benches (`mk_pod`, `mk_ns`,
//! `mk_policy`, ...), in the style of linkerd2's policy-controller tests.
//! Public so the edge's tests and the bench use the same vocabulary. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{LocalWorkload, NamedPort, Namespace, NetworkPolicy, Pod, SlimPod, Snapshot};
use crate::naming;
use crate::ruleset::Protocol;

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

/// A running pod with labels and IPs (comma-separated, may be empty), as
/// snapshots hold it.
pub fn mk_pod(ns: &str, name: &str, label_pairs: &[(&str, &str)], ips: &str) -> Arc<SlimPod> {
    Arc::new(SlimPod::from_pod(&mk_api_pod(ns, name, label_pairs, ips)))
}

/// [`mk_pod`] as the API object.
pub fn mk_api_pod(ns: &str, name: &str, label_pairs: &[(&str, &str)], ips: &str) -> Pod {
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

/// Adds a named container port (`protocol` as the API spells it: "TCP"...;
/// a port outside 0..=65535 is dropped, as [`SlimPod::from_pod`] does).
pub fn with_port(mut pod: Arc<SlimPod>, name: &str, port: i32, protocol: &str) -> Arc<SlimPod> {
    if let Ok(port) = u16::try_from(port) {
        Arc::make_mut(&mut pod).named_ports.push(NamedPort {
            name: name.into(),
            protocol: Protocol::from_api(protocol),
            port,
        });
    }
    pod
}

/// Marks a pod host-network.
pub fn host_network(mut pod: Arc<SlimPod>) -> Arc<SlimPod> {
    Arc::make_mut(&mut pod).host_network = true;
    pod
}

/// Sets a pod's phase ("Succeeded", "Failed", ...).
pub fn with_phase(mut pod: Arc<SlimPod>, phase: &str) -> Arc<SlimPod> {
    Arc::make_mut(&mut pod).phase = Some(phase.into());
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
    pods: Vec<Arc<SlimPod>>,
    policies: Vec<NetworkPolicy>,
) -> Snapshot {
    let local = pods
        .iter()
        .filter(|p| crate::model::is_workload(p))
        .map(|p| mk_local(&p.namespace, &p.name))
        .collect();
    Snapshot {
        namespaces,
        pods,
        policies,
        local,
        unknown_interfaces: Vec::new(),
    }
}
