//! The snapshot the compiler reads.
//!
//! Namespaces and NetworkPolicies are the Kubernetes API types from
//! k8s-openapi, so "absent vs empty" is exactly the API's
//! (`Option<Vec<_>>` = absent, `Some(vec![])` = empty). Pods are
//! [`SlimPod`]s: only the fields tortie reads, shared by `Arc` between the
//! datastore, the agent's model and this snapshot, because a cluster has
//! 100,000s of them and k8s-openapi's `Pod` costs kilobytes each even when
//! empty. This module owns the snapshot shape and the small accessors the
//! compiler needs (which pods are workloads, their IPs and named ports); it
//! never reads files or talks to an API server.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use k8s_openapi::api::core::v1::{Namespace, Pod};
pub use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::ruleset::Protocol;

/// Annotations with this prefix are kept on a [`SlimPod`]
/// (`tortie.io/ip-addrs`); the others are dropped.
pub const OUR_ANNOTATION_PREFIX: &str = "tortie.io/";

/// A pod as tortie needs it: identity, labels, its own annotations, where
/// it runs, whether it is a workload, its IPs and named ports. Built from a
/// k8s-openapi [`Pod`] ([`SlimPod::from_pod`]) or decoded straight from the
/// API (the Kubernetes datastore).
///
/// Strings that repeat across pods (namespace, node, phase, port names,
/// whole label sets) are `Arc`s so a datastore can intern them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlimPod {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// `metadata.labels` (empty when it has none).
    pub labels: Arc<BTreeMap<String, String>>,
    /// `metadata.annotations` starting with [`OUR_ANNOTATION_PREFIX`].
    pub annotations: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: Option<Arc<str>>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `status.phase`.
    pub phase: Option<Arc<str>>,
    /// `status.podIPs` and `status.podIP`, parsed, sorted, deduplicated;
    /// unparsable entries are skipped (the API server validates them, a
    /// file datastore may not).
    pub ips: Vec<IpAddr>,
    /// The named ports of its containers and sidecars (init containers
    /// with `restartPolicy: Always`): both serve on the pod's IP for its
    /// lifetime. Unnamed ports are not kept: policies can only refer to
    /// them by number.
    pub named_ports: Vec<NamedPort>,
}

/// A container port with a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: Arc<str>,
    /// `None`: a protocol the compiler does not know (never matches).
    pub protocol: Option<Protocol>,
    pub port: u16,
}

impl SlimPod {
    /// The slim form of an API pod (namespace `default` when unset).
    pub fn from_pod(pod: &Pod) -> SlimPod {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut named_ports = Vec::new();
        if let Some(spec) = spec {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for port in spec
                .containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
            {
                let (Some(name), Ok(number)) =
                    (port.name.as_deref(), u16::try_from(port.container_port))
                else {
                    continue;
                };
                named_ports.push(NamedPort {
                    name: name.into(),
                    protocol: port
                        .protocol
                        .as_deref()
                        .map_or(Some(Protocol::Tcp), Protocol::from_api),
                    port: number,
                });
            }
        }
        let ip_texts = status
            .into_iter()
            .flat_map(|s| s.pod_ips.iter().flatten().map(|p| p.ip.as_str()))
            .chain(status.and_then(|s| s.pod_ip.as_deref()));
        SlimPod {
            namespace: meta.namespace.as_deref().unwrap_or("default").into(),
            name: meta.name.as_deref().unwrap_or_default().into(),
            labels: Arc::new(meta.labels.clone().unwrap_or_default()),
            annotations: meta
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with(OUR_ANNOTATION_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node_name: spec.and_then(|s| s.node_name.as_deref()).map(Into::into),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase: status.and_then(|s| s.phase.as_deref()).map(Into::into),
            ips: parse_ips(ip_texts),
            named_ports,
        }
    }

    /// The annotation `key`, if kept.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// Scheduled on `node`.
    pub fn is_on(&self, node: &str) -> bool {
        self.node_name.as_deref() == Some(node)
    }
}

impl From<&Pod> for SlimPod {
    fn from(pod: &Pod) -> SlimPod {
        SlimPod::from_pod(pod)
    }
}

/// Parses IP texts the way [`SlimPod::ips`] holds them.
pub fn parse_ips<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = texts
        .into_iter()
        .filter_map(|t| t.parse::<IpAddr>().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips.shrink_to_fit();
    ips
}

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
    /// All pods of the cluster, shared with the datastore.
    pub pods: Vec<Arc<SlimPod>>,
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
pub fn is_workload(pod: &SlimPod) -> bool {
    let finished = matches!(pod.phase.as_deref(), Some("Succeeded") | Some("Failed"));
    !pod.host_network && !finished
}

/// The pod's IPs, deduplicated and sorted.
pub fn pod_ips(pod: &SlimPod) -> Vec<IpAddr> {
    pod.ips.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodIP, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn port(name: Option<&str>, n: i32, proto: Option<&str>) -> ContainerPort {
        ContainerPort {
            name: name.map(Into::into),
            container_port: n,
            protocol: proto.map(Into::into),
            ..ContainerPort::default()
        }
    }

    #[test]
    fn from_pod_keeps_what_the_compiler_and_cni_read() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some(
                    [
                        ("tortie.io/ip-addrs".to_string(), "[]".to_string()),
                        ("other/x".to_string(), "y".to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![
                        port(Some("http"), 80, None),
                        port(None, 81, None),
                        port(Some("dns"), 53, Some("UDP")),
                        port(Some("odd"), 54, Some("XYZ")),
                    ]),
                    ..Container::default()
                }],
                init_containers: Some(vec![
                    Container {
                        name: "once".into(),
                        ports: Some(vec![port(Some("init"), 1, None)]),
                        ..Container::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        restart_policy: Some("Always".into()),
                        ports: Some(vec![port(Some("proxy"), 15001, None)]),
                        ..Container::default()
                    },
                ]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.244.1.9".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "fd00::9".into(),
                    },
                    PodIP {
                        ip: "10.244.1.9".into(),
                    },
                    PodIP { ip: "bad".into() },
                ]),
                ..PodStatus::default()
            }),
        };
        let s = SlimPod::from_pod(&pod);
        assert_eq!(&*s.namespace, "default");
        assert_eq!(&*s.name, "web");
        assert_eq!(s.labels["app"], "web");
        assert_eq!(s.annotation("tortie.io/ip-addrs"), Some("[]"));
        assert_eq!(s.annotations.len(), 1);
        assert!(s.is_on("n1") && !s.host_network);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(
            s.ips,
            vec![
                "10.244.1.9".parse::<IpAddr>().unwrap(),
                "fd00::9".parse().unwrap()
            ]
        );
        let ports: Vec<(&str, Option<Protocol>, u16)> = s
            .named_ports
            .iter()
            .map(|p| (&*p.name, p.protocol, p.port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("http", Some(Protocol::Tcp), 80),
                ("dns", Some(Protocol::Udp), 53),
                ("odd", None, 54),
                ("proxy", Some(Protocol::Tcp), 15001),
            ]
        );
        assert!(is_workload(&s));
    }
}
