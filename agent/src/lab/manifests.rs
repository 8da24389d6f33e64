//! The lab's datastore: the Kubernetes manifests every agent reads from
//! the shared directory (`--datastore file:RUN_DIR/manifests`).
//!
//! Owns: the YAML of the cluster objects (BGPConfiguration, IPPool,
//! BGPPeers, Namespaces), of each Node and each Pod, and the file name each
//! object lives in. One file per Node and per Pod, so adding or removing
//! one is one atomic rename and never rewrites another's file.
//!
//! Must never: write files (the shell does, through a temp file and a
//! rename so an agent never reads half a file).

use std::net::IpAddr;

use serde_json::{json, Value};

use super::plan::{NodePlan, Plan, PodPlan, TorKind, CLUSTER_ASN, POOL_CIDR};

/// The example policies `up` applies after the first matrix.
pub const EXAMPLE_POLICIES: &str = include_str!("../../../examples/lab/policies.yaml");
/// File name of the example policies in the manifest directory.
pub const POLICY_FILE: &str = "policies.yaml";
/// File name of the cluster-wide objects.
pub const CLUSTER_FILE: &str = "cluster.yaml";
/// The label that puts a Node in a rack; BGPPeers select on it.
pub const RACK_LABEL: &str = "tortie.io/rack";

/// Renders objects as one multi-document YAML text.
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_norway::to_string(o).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// BGPConfiguration, IPPool, the example Namespaces and one BGPPeer per
/// ToR (each selecting its rack's nodes).
pub fn cluster_objects(plan: &Plan) -> Vec<Value> {
    let mesh = plan.tor == TorKind::None;
    let mut objects = vec![
        json!({
            "apiVersion": "tortie.io/v1alpha1",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {
                "asNumber": CLUSTER_ASN,
                // With ToRs every node peers its ToR over eBGP and learns
                // the other nodes' CIDRs from it (Calico's AS-per-rack
                // fabric); without, the nodes mesh over iBGP.
                "nodeToNodeMesh": mesh,
            },
        }),
        json!({
            "apiVersion": "tortie.io/v1alpha1",
            "kind": "IPPool",
            "metadata": {"name": "default-ipv4"},
            "spec": {"cidr": POOL_CIDR, "encapsulation": "None", "natOutgoing": false},
        }),
    ];
    for (namespace, _) in super::plan::APPS {
        objects.push(namespace_object(namespace));
    }
    for rack in &plan.racks {
        let (Some(gw), Some(asn)) = (rack.gateway, rack.asn) else {
            continue;
        };
        objects.push(json!({
            "apiVersion": "tortie.io/v1alpha1",
            "kind": "BGPPeer",
            "metadata": {"name": rack.tor_name()},
            "spec": {
                "peerIP": gw.to_string(),
                "asNumber": asn,
                "nodeSelector": {"matchLabels": {RACK_LABEL: rack.name}},
                "holdTime": 9,
                "keepaliveTime": 3,
                // The ToR keeps a restarting agent's routes, so pods'
                // traffic through it survives the restart.
                "gracefulRestart": {"enabled": true, "restartTime": 120},
            },
        }));
    }
    objects
}

pub fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
    })
}

/// The file a Node lives in.
pub fn node_file(node: &NodePlan) -> String {
    format!("node-{}.yaml", node.name)
}

/// A Node as a kubelet registers it plus the annotations tortie reads.
pub fn node_object(plan: &Plan, node: &NodePlan) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(node.name));
    if let Some(rack) = plan.rack_of(node) {
        labels.insert(RACK_LABEL.into(), json!(rack.name));
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert("tortie.io/bgp-address".into(), json!(node.bgp_address()));
    if let Some(asn) = node.asn {
        annotations.insert("tortie.io/asn".into(), json!(asn.to_string()));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": annotations},
        "spec": {"podCIDR": node.pod_cidr.to_string(), "podCIDRs": [node.pod_cidr.to_string()]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": node.address.to_string()},
            {"type": "Hostname", "address": node.name},
        ]},
    })
}

/// The file a Pod lives in.
pub fn pod_file(pod: &PodPlan) -> String {
    format!("pod-{}-{}.yaml", pod.namespace, pod.name)
}

/// A Pod as the scheduler binds it (no IPs yet), or with `status.podIPs`
/// once the kubelet has the CNI result.
pub fn pod_object(pod: &PodPlan, ips: &[IpAddr]) -> Value {
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels},
        "spec": {
            "nodeName": pod.node,
            "containers": [{"name": "main", "image": "tortie-lab"}],
        },
    });
    if let (Some(first), Some(obj)) = (ips.first(), v.as_object_mut()) {
        let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        obj.insert(
            "status".into(),
            json!({"phase": "Running", "podIP": first.to_string(), "podIPs": pod_ips}),
        );
    }
    v
}

/// Every file of a fresh lab's manifest directory, with its text, in the
/// order `up` writes them (the policies come later).
pub fn initial_files(plan: &Plan) -> Vec<(String, String)> {
    let mut files = vec![(CLUSTER_FILE.to_string(), to_yaml(&cluster_objects(plan)))];
    for node in &plan.nodes {
        files.push((node_file(node), to_yaml(&[node_object(plan, node)])));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::super::plan::LabOptions;
    use super::*;
    use crate::manifests::Manifests;
    use std::path::Path;

    fn parse(files: &[(String, String)]) -> Manifests {
        let mut m = Manifests::default();
        for (name, text) in files {
            m.add_str(Path::new(name), text);
        }
        m
    }

    #[test]
    fn default_lab_manifests() {
        let plan = Plan::new(&LabOptions::default());
        let files = initial_files(&plan);
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cluster.yaml",
                "node-n1.yaml",
                "node-n2.yaml",
                "node-n3.yaml"
            ]
        );
        let cluster = &files[0].1;
        assert!(cluster.contains("nodeToNodeMesh: false"), "{cluster}");
        assert!(cluster.contains("peerIP: 198.51.100.1"), "{cluster}");
        assert!(cluster.contains("tortie.io/rack: b"), "{cluster}");
        assert!(cluster.contains("encapsulation: None"), "{cluster}");
        let n3 = &files[3].1;
        assert!(n3.contains("tortie.io/asn: '65103'"), "{n3}");
        assert!(
            n3.contains("tortie.io/bgp-address: 198.51.100.13/24"),
            "{n3}"
        );
        // The standard objects parse with the policy engine's loader.
        let m = parse(&files);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.nodes.len(), 3);
        assert_eq!(m.namespaces.len(), 2);
    }

    #[test]
    fn flat_mesh_has_no_peers() {
        let plan = Plan::new(&LabOptions {
            tor: TorKind::None,
            ..Default::default()
        });
        let cluster = to_yaml(&cluster_objects(&plan));
        assert!(cluster.contains("nodeToNodeMesh: true"));
        assert!(!cluster.contains("BGPPeer"));
        let n1 = to_yaml(&[node_object(&plan, &plan.nodes[0])]);
        assert!(!n1.contains("tortie.io/asn"), "{n1}");
    }

    #[test]
    fn pod_gets_ips_in_status() {
        let plan = Plan::new(&LabOptions::default());
        let pod = &plan.pods[0];
        let bare = to_yaml(&[pod_object(pod, &[])]);
        assert!(!bare.contains("status"), "{bare}");
        let ip: IpAddr = "10.244.1.2".parse().unwrap();
        let done = to_yaml(&[pod_object(pod, &[ip])]);
        assert!(done.contains("- ip: 10.244.1.2"), "{done}");
        assert_eq!(pod_file(pod), "pod-frontend-web-n1.yaml");
        let m = parse(&[
            (CLUSTER_FILE.into(), to_yaml(&cluster_objects(&plan))),
            (pod_file(pod), done),
        ]);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.pods.len(), 1);
    }

    #[test]
    fn example_policies_parse() {
        let m = parse(&[(POLICY_FILE.into(), EXAMPLE_POLICIES.into())]);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.network_policies.len(), 2);
    }

    /// The model the agents build from the lab's manifests routes each
    /// node as the lab's plan says: its own AS, its rack's ToR as the one
    /// peer; in the flat mesh, every other node.
    #[test]
    fn agents_model_routes_the_plan() {
        let plan = Plan::new(&LabOptions::default());
        let mut files = initial_files(&plan);
        files.push((POLICY_FILE.into(), EXAMPLE_POLICIES.into()));
        let ip: IpAddr = "10.244.1.2".parse().unwrap();
        for p in &plan.pods {
            files.push((pod_file(p), to_yaml(&[pod_object(p, &[ip])])));
        }
        let model = crate::model::Model::build(&parse(&files), None);
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        for (node, asn, peer, peer_as) in [
            ("n1", 65101, "192.0.2.1", 65001),
            ("n2", 65102, "192.0.2.1", 65001),
            ("n3", 65103, "198.51.100.1", 65002),
        ] {
            let r = model.node_routing(node).unwrap();
            assert_eq!(r.speaker.as_number, asn, "{node}");
            let peers: Vec<_> = r
                .speaker
                .peers
                .iter()
                .map(|p| (p.peer_ip.as_str(), p.as_number))
                .collect();
            assert_eq!(peers, [(peer, peer_as)], "{node}");
            assert_eq!(r.pod_cidrs.len(), 1);
            assert_eq!(r.pools.len(), 1);
        }

        let mesh = Plan::new(&LabOptions {
            tor: TorKind::None,
            ..Default::default()
        });
        let model = crate::model::Model::build(&parse(&initial_files(&mesh)), None);
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        let r = model.node_routing("n2").unwrap();
        assert_eq!(r.speaker.as_number, CLUSTER_ASN);
        let mut peers: Vec<_> = r.speaker.peers.iter().map(|p| p.peer_ip.clone()).collect();
        peers.sort();
        assert_eq!(peers, ["192.0.2.11", "192.0.2.13"]);
    }
}
