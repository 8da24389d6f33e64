//! What the Kubernetes datastore decodes list pages and watch events into:
//! serde types with only the fields tortie reads, so a pod's managedFields,
//! kubectl's last-applied annotation, env, probes, volumes and status
//! conditions are skipped by the JSON parser and never allocated (serde
//! ignores fields a struct does not name). k8s-openapi's `Pod` decoded in
//! full costs ~20 KB of heap for a typical pod, and a list page holds 500.
//!
//! Each type implements kube's [`Resource`] for the same API path as the
//! k8s-openapi type, so kube-runtime's watcher lists and watches them
//! unchanged (it reads `metadata.resourceVersion` only).
//!
//! Owns: the decoding and the conversion to what the cache holds (a
//! [`SlimPod`], a slim k8s-openapi `Node` or `Namespace`), with repeated
//! strings and label sets interned ([`Interner`]). Must never: keep a field
//! the agent does not read (every kept byte is paid 150,000 times).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::Resource;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use tortie_policy::model::{parse_ips, NamedPort, SlimPod, OUR_ANNOTATION_PREFIX};
use tortie_policy::Protocol;

/// `metadata`, reduced: identity, resourceVersion (the watcher resumes
/// from it), labels and `tortie.io/` annotations.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "our_annotations")]
    annotations: BTreeMap<String, String>,
}

/// The `metadata` field as the k8s-openapi type kube's [`Resource`] needs,
/// filled from [`WireMeta`] only.
fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = WireMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        labels: m.labels.filter(|l| !l.is_empty()),
        annotations: (!m.annotations.is_empty()).then_some(m.annotations),
        ..ObjectMeta::default()
    })
}

/// Annotations starting with [`OUR_ANNOTATION_PREFIX`]; the others'
/// values are skipped unread (`null` is an empty map).
fn our_annotations<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Ours;
    impl<'de> Visitor<'de> for Ours {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(Ours)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key.starts_with(OUR_ANNOTATION_PREFIX) {
                    let value: String = map.next_value()?;
                    out.insert(key.into_owned(), value);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }
    d.deserialize_option(Ours)
}

/// Implements kube's [`Resource`] for a wire type, on the API path of the
/// k8s-openapi type it stands for.
macro_rules! wire_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("")
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A `v1` Pod as decoded from the API.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodWire {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpecWire>,
    #[serde(default)]
    status: Option<PodStatusWire>,
}
wire_resource!(PodWire, "Pod", "pods", NamespaceResourceScope);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecWire {
    node_name: Option<String>,
    host_network: Option<bool>,
    #[serde(default)]
    containers: Option<Vec<ContainerWire>>,
    #[serde(default)]
    init_containers: Option<Vec<ContainerWire>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerWire {
    restart_policy: Option<String>,
    #[serde(default)]
    ports: Option<Vec<PortWire>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortWire {
    name: Option<String>,
    #[serde(default)]
    container_port: i64,
    protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatusWire {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs", default)]
    pod_ips: Option<Vec<PodIpWire>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct PodIpWire {
    #[serde(default)]
    ip: String,
}

impl PodWire {
    /// The cached form, with the same content [`SlimPod::from_pod`] gives
    /// for the full object (a test holds the two together).
    pub fn into_slim(self, interner: &mut Interner) -> SlimPod {
        let meta = self.metadata;
        let spec = self.spec.unwrap_or_default();
        let status = self.status.unwrap_or_default();
        let sidecars = spec
            .init_containers
            .into_iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mut named_ports = Vec::new();
        for port in spec
            .containers
            .into_iter()
            .flatten()
            .chain(sidecars)
            .flat_map(|c| c.ports.into_iter().flatten())
        {
            let (Some(name), Ok(number)) = (port.name, u16::try_from(port.container_port)) else {
                continue;
            };
            named_ports.push(NamedPort {
                name: interner.str(&name),
                protocol: port
                    .protocol
                    .as_deref()
                    .map_or(Some(Protocol::Tcp), Protocol::from_api),
                port: number,
            });
        }
        named_ports.shrink_to_fit();
        let ips = parse_ips(
            status
                .pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.as_str())
                .chain(status.pod_ip.as_deref()),
        );
        SlimPod {
            namespace: interner.str(meta.namespace.as_deref().unwrap_or("default")),
            name: meta.name.as_deref().unwrap_or_default().into(),
            labels: interner.labels(meta.labels.unwrap_or_default()),
            annotations: meta.annotations.unwrap_or_default(),
            node_name: spec.node_name.as_deref().map(|n| interner.str(n)),
            host_network: spec.host_network.unwrap_or(false),
            phase: status.phase.as_deref().map(|p| interner.str(p)),
            ips,
            named_ports,
        }
    }
}

/// A `v1` Node as decoded from the API: pod CIDRs and addresses (images,
/// conditions, capacity and the rest of the status, which the kubelet
/// rewrites every few seconds, are skipped, so heartbeats change nothing).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeWire {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<NodeSpecWire>,
    #[serde(default)]
    status: Option<NodeStatusWire>,
}
wire_resource!(NodeWire, "Node", "nodes", ClusterResourceScope);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeSpecWire {
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct NodeStatusWire {
    addresses: Option<Vec<NodeAddress>>,
}

impl NodeWire {
    /// The cached form: the k8s-openapi type the model validates, with
    /// only these fields set.
    pub fn into_node(self) -> Node {
        Node {
            metadata: self.metadata,
            spec: self.spec.map(|s| NodeSpec {
                pod_cidr: s.pod_cidr,
                pod_cidrs: s.pod_cidrs,
                ..NodeSpec::default()
            }),
            status: self.status.map(|s| NodeStatus {
                addresses: s.addresses,
                ..NodeStatus::default()
            }),
        }
    }
}

/// A `v1` Namespace as decoded from the API: its labels.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NamespaceWire {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
}
wire_resource!(
    NamespaceWire,
    "Namespace",
    "namespaces",
    ClusterResourceScope
);

impl NamespaceWire {
    pub fn into_namespace(self) -> Namespace {
        Namespace {
            metadata: self.metadata,
            spec: None,
            status: None,
        }
    }
}

/// One shared copy of each string and label set that repeats across pods
/// (namespaces, node names, phases, port names; a ReplicaSet's pods all
/// carry the same labels). Entries nobody else holds any more are dropped
/// whenever the table has doubled since the last sweep, so it stays
/// proportional to what the cache holds.
#[derive(Debug, Default)]
pub struct Interner {
    strs: HashSet<Arc<str>>,
    labels: HashSet<Arc<BTreeMap<String, String>>>,
    /// Table sizes after the last sweep.
    swept_at: usize,
}

impl Interner {
    pub fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strs.get(s) {
            return a.clone();
        }
        self.sweep_if_grown();
        let a: Arc<str> = Arc::from(s);
        self.strs.insert(a.clone());
        a
    }

    pub fn labels(&mut self, labels: BTreeMap<String, String>) -> Arc<BTreeMap<String, String>> {
        if let Some(a) = self.labels.get(&labels) {
            return a.clone();
        }
        self.sweep_if_grown();
        let a = Arc::new(labels);
        self.labels.insert(a.clone());
        a
    }

    /// Number of interned strings and label sets.
    pub fn len(&self) -> usize {
        self.strs.len() + self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep_if_grown(&mut self) {
        if self.len() < (2 * self.swept_at).max(4096) {
            return;
        }
        self.strs.retain(|a| Arc::strong_count(a) > 1);
        self.labels.retain(|a| Arc::strong_count(a) > 1);
        self.swept_at = self.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn api_pod() -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "prod", "resourceVersion": "42",
                "uid": "u-1", "labels": {"app": "web"},
                "annotations": {"tortie.io/ip-addrs": "[\"10.244.1.9\"]",
                                "kubectl.kubernetes.io/last-applied-configuration": "{\"x\": 1}"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]},
            "spec": {"nodeName": "n1", "serviceAccountName": "default",
                "containers": [
                    {"name": "app", "image": "nginx", "env": [{"name": "A", "value": "b"}],
                     "ports": [{"name": "http", "containerPort": 8080},
                               {"containerPort": 9000},
                               {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
                    {"name": "sidecar", "image": "envoy"}],
                "initContainers": [
                    {"name": "mesh", "restartPolicy": "Always",
                     "ports": [{"name": "proxy", "containerPort": 15001}]},
                    {"name": "setup", "ports": [{"name": "setup", "containerPort": 7000}]}]},
            "status": {"phase": "Running", "hostIP": "192.0.2.11", "podIP": "10.244.1.9",
                "podIPs": [{"ip": "10.244.1.9"}, {"ip": "fd00::9"}],
                "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn a_pod_decodes_to_what_the_full_object_slims_to() {
        let wire: PodWire = serde_json::from_value(api_pod()).unwrap();
        assert_eq!(wire.metadata.resource_version.as_deref(), Some("42"));
        assert!(wire.metadata.managed_fields.is_none());
        let slim = wire.into_slim(&mut Interner::default());
        let full: Pod = serde_json::from_value(api_pod()).unwrap();
        assert_eq!(slim, SlimPod::from_pod(&full));
        assert_eq!(
            slim.annotations.keys().collect::<Vec<_>>(),
            vec!["tortie.io/ip-addrs"]
        );
        let ports: Vec<&str> = slim.named_ports.iter().map(|p| &*p.name).collect();
        assert_eq!(ports, vec!["http", "dns", "proxy"]);
        assert_eq!(slim.ips.len(), 2);
    }

    #[test]
    fn sparse_and_null_fields_decode() {
        let wire: PodWire = serde_json::from_value(json!({
            "metadata": {"name": "a", "annotations": null, "labels": null},
            "spec": {"containers": null}, "status": null}))
        .unwrap();
        let slim = wire.into_slim(&mut Interner::default());
        assert_eq!((&*slim.namespace, &*slim.name), ("default", "a"));
        assert!(slim.labels.is_empty() && slim.ips.is_empty() && slim.named_ports.is_empty());
        let node: NodeWire = serde_json::from_value(json!({
            "metadata": {"name": "n1", "annotations": {"tortie.io/asn": "65001", "x": "y"}},
            "spec": {"podCIDRs": ["10.244.1.0/24"], "providerID": "metal://1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}],
                       "images": [{"names": ["a"], "sizeBytes": 1}]}}))
        .unwrap();
        let node = node.into_node();
        assert_eq!(node.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert!(node.spec.as_ref().unwrap().provider_id.is_none());
        assert!(node.status.as_ref().unwrap().images.is_none());
    }

    #[test]
    fn the_interner_shares_equal_values_and_forgets_unused_ones() {
        let mut i = Interner::default();
        let a = i.str("prod");
        let b = i.str("prod");
        assert!(Arc::ptr_eq(&a, &b));
        let l1 = i.labels([("app".to_string(), "web".to_string())].into());
        let l2 = i.labels([("app".to_string(), "web".to_string())].into());
        assert!(Arc::ptr_eq(&l1, &l2));
        drop((b, l2));
        for n in 0..10_000 {
            drop(i.str(&format!("tmp-{n}")));
        }
        assert!(i.len() < 10_000, "swept: {}", i.len());
        assert!(Arc::ptr_eq(&a, &i.str("prod")), "held entries stay");
    }
}
