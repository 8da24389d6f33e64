//! tortie's custom resources (group `tortie.io/v1alpha1`, cluster-scoped),
//! defined once here with kube's `CustomResource` derive: the Rust types the
//! model reads and, through [`crds_yaml`], the CRD manifests `tortie crds`
//! prints for `deploy/`.
//!
//! Owns: the shape of `BGPConfiguration`, `BGPPeer` and `IPPool` and the
//! OpenAPI validation the API server applies before the agent ever sees an
//! object (address formats, ASN ranges, enums). The `BGPPeer` spec is
//! [`crate::resources::BGPPeerSpec`], shared with the standalone speaker's
//! config file so one peer is spelled the same way in both places.
//!
//! Must never: decide what the objects mean for a node (the model does) or
//! accept a typo silently (unknown fields are rejected by serde; the schema
//! lets the API server prune or reject them too).

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `BGPPeer` is derived on the spec type it shares with the speaker config.
pub use crate::resources::{BGPPeer, BGPPeerSpec};

/// API group of every tortie resource.
pub const GROUP: &str = "tortie.io";
/// The version served and stored.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "tortie.io/v1alpha1";

/// Default AS when no `BGPConfiguration` (or no `asNumber`) says otherwise:
/// the first private 2-octet AS, as Calico uses.
pub const DEFAULT_ASN: u32 = 64512;
/// Default BGP port.
pub const DEFAULT_LISTEN_PORT: u16 = 179;
/// The only `BGPConfiguration` name the agent reads.
pub const BGP_CONFIGURATION_NAME: &str = "default";

/// Cluster-wide BGP settings. Only the object named `default` is used.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tortie.io",
    version = "v1alpha1",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations",
    singular = "bgpconfiguration",
    derive = "PartialEq",
    doc = "Cluster-wide BGP settings of tortie; only the object named `default` is read.",
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.asNumber"}"#,
    printcolumn = r#"{"name":"Mesh","type":"boolean","jsonPath":".spec.nodeToNodeMesh"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.listenPort"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPConfigurationSpec {
    /// The nodes' AS (a node's `tortie.io/asn` annotation overrides it).
    #[serde(default = "default_asn")]
    #[schemars(range(min = 1, max = 4_294_967_294_u32))]
    pub as_number: u32,
    /// Every node peers with every other node (iBGP full mesh).
    #[serde(default = "default_true")]
    pub node_to_node_mesh: bool,
    /// TCP port the nodes listen on and connect to.
    #[serde(default = "default_listen_port")]
    #[schemars(range(min = 1))]
    pub listen_port: u16,
    /// Hold time offered to every peer (0, or 3 and more seconds; default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<u16>,
    /// Keepalive interval (default holdTime / 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keepalive_time: Option<u16>,
}

impl Default for BGPConfigurationSpec {
    fn default() -> Self {
        BGPConfigurationSpec {
            as_number: DEFAULT_ASN,
            node_to_node_mesh: true,
            listen_port: DEFAULT_LISTEN_PORT,
            hold_time: None,
            keepalive_time: None,
        }
    }
}

fn default_asn() -> u32 {
    DEFAULT_ASN
}

fn default_true() -> bool {
    true
}

fn default_listen_port() -> u16 {
    DEFAULT_LISTEN_PORT
}

/// How traffic between pods of a pool crosses the underlay.
#[allow(clippy::upper_case_acronyms)] // the names users write in manifests
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Encapsulation {
    /// Native routing: the fabric routes pod addresses (learned over BGP).
    #[default]
    None,
    /// IP-in-IP to every other node.
    IPIP,
    /// IP-in-IP only to nodes in another subnet; native routing inside one.
    IPIPCrossSubnet,
    /// VXLAN to every other node.
    VXLAN,
    /// VXLAN only to nodes in another subnet; native routing inside one.
    VXLANCrossSubnet,
}

impl Encapsulation {
    /// Whether the mode tunnels IPv4 in IPv4 (no IPv6 pools).
    pub fn is_ipip(self) -> bool {
        matches!(self, Encapsulation::IPIP | Encapsulation::IPIPCrossSubnet)
    }

    /// Whether the mode tunnels only across subnets.
    pub fn is_cross_subnet(self) -> bool {
        matches!(
            self,
            Encapsulation::IPIPCrossSubnet | Encapsulation::VXLANCrossSubnet
        )
    }
}

/// A range pod addresses come from, and how they are routed.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tortie.io",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    derive = "PartialEq",
    doc = "A range of pod addresses: node pod CIDRs inside an enabled pool are announced over BGP.",
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"Encapsulation","type":"string","jsonPath":".spec.encapsulation"}"#,
    printcolumn = r#"{"name":"NAT","type":"boolean","jsonPath":".spec.natOutgoing"}"#,
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    /// The pool, `ADDR/LEN` (IPv4 or IPv6, no host bits).
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
    /// Tunnel mode between nodes (default None: native routing).
    #[serde(default)]
    pub encapsulation: Encapsulation,
    /// Masquerade pod traffic that leaves every pool.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// A disabled pool is neither announced nor routed.
    #[serde(default)]
    pub disabled: bool,
}

/// The three CRDs as YAML documents separated by `---`, in a stable order
/// (the file `deploy/` holds and a test compares).
pub fn crds_yaml() -> String {
    let crds = [BGPConfiguration::crd(), BGPPeer::crd(), IPPool::crd()];
    let mut out = String::new();
    for (i, crd) in crds.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        // Serializing a k8s-openapi value with string keys cannot fail; an
        // empty document would be caught by the round-trip test.
        out.push_str(&serde_norway::to_string(crd).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, JSONSchemaProps,
    };

    fn parsed() -> Vec<CustomResourceDefinition> {
        crate::manifests::split_documents(&crds_yaml())
            .into_iter()
            .map(|(_, d)| serde_norway::from_str(&d).expect("a CRD"))
            .collect()
    }

    fn spec_props(crd: &CustomResourceDefinition) -> JSONSchemaProps {
        let v = &crd.spec.versions[0];
        let root = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.clone())
            .expect("schema");
        root.properties.expect("props")["spec"].clone()
    }

    #[test]
    fn yaml_round_trips_into_three_cluster_scoped_crds() {
        let crds = parsed();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            vec![
                "bgpconfigurations.tortie.io",
                "bgppeers.tortie.io",
                "ippools.tortie.io"
            ]
        );
        for c in &crds {
            assert_eq!(c.spec.group, GROUP);
            assert_eq!(c.spec.scope, "Cluster");
            assert_eq!(c.spec.versions.len(), 1);
            assert_eq!(c.spec.versions[0].name, VERSION);
            assert!(c.spec.versions[0].served && c.spec.versions[0].storage);
            let cols = c.spec.versions[0]
                .additional_printer_columns
                .as_ref()
                .expect("printer columns");
            assert!(cols.len() >= 3, "{cols:?}");
        }
        // The YAML is stable and emits itself again unchanged.
        let again: Vec<String> = crds
            .iter()
            .map(|c| serde_norway::to_string(c).expect("yaml"))
            .collect();
        assert_eq!(again.join("---\n"), crds_yaml());
    }

    #[test]
    fn schema_validates_asn_ranges_formats_and_enums() {
        let crds = parsed();
        let conf = spec_props(&crds[0]).properties.expect("conf props");
        let asn = &conf["asNumber"];
        assert_eq!(asn.minimum, Some(1.0));
        assert_eq!(asn.maximum, Some(4_294_967_294.0));
        assert_eq!(
            conf["nodeToNodeMesh"].default.as_ref().map(|d| d.0.clone()),
            Some(serde_json::json!(true))
        );

        let peer = spec_props(&crds[1]);
        let required = peer.required.clone().unwrap_or_default();
        assert!(required.contains(&"peerIP".to_string()), "{required:?}");
        let props = peer.properties.expect("peer props");
        let ip = serde_json::to_string(&props["peerIP"]).expect("json");
        assert!(ip.contains("ipv4") && ip.contains("ipv6"), "{ip}");
        assert_eq!(props["asNumber"].maximum, Some(4_294_967_294.0));
        assert!(props.contains_key("nodeSelector"));
        assert!(props.contains_key("node"));

        let pool = spec_props(&crds[2]).properties.expect("pool props");
        assert_eq!(pool["cidr"].format.as_deref(), Some("cidr"));
        let modes: Vec<String> = pool["encapsulation"]
            .enum_
            .clone()
            .expect("enum")
            .into_iter()
            .map(|v| v.0.as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            modes,
            [
                "None",
                "IPIP",
                "IPIPCrossSubnet",
                "VXLAN",
                "VXLANCrossSubnet"
            ]
        );
    }

    #[test]
    fn specs_take_their_defaults() {
        let c: BGPConfigurationSpec = serde_json::from_str("{}").expect("defaults");
        assert_eq!(c, BGPConfigurationSpec::default());
        let p: IPPoolSpec = serde_json::from_str(r#"{"cidr":"10.244.0.0/16"}"#).expect("pool");
        assert_eq!(p.encapsulation, Encapsulation::None);
        assert!(!p.nat_outgoing && !p.disabled);
        let e = serde_json::from_str::<IPPoolSpec>(r#"{"cidr":"x","encapsulation":"GRE"}"#)
            .expect_err("unknown mode");
        assert!(e.to_string().contains("unknown variant `GRE`"), "{e}");
    }
}
