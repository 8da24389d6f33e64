//! Serde types of tortie's resources as users write them: the standalone
//! speaker config of `tortie bgp --config FILE` and the `BGPPeer` spec it
//! shares with the CRD (DESIGN.md "Resources"; the file contract is
//! docs/speaker-config.md).
//!
//! Field names are camelCase as in Kubernetes; unknown fields are rejected
//! (a typo must not silently turn a feature off). Values that need parsing
//! (addresses, prefixes, communities) stay strings here and are checked by
//! the consumer, which can then name the field in its error
//! (`peers[1].peerIP: 192.0.2.300 is not an IP address`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole file of `tortie bgp --config FILE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpeakerConfigSpec {
    /// Our AS (4-octet allowed).
    pub as_number: u32,
    /// Our BGP identifier (an IPv4 address).
    pub router_id: String,
    /// Addresses to listen on; absent = `["0.0.0.0", "::"]`; empty = no
    /// listener (active sessions only).
    #[serde(default)]
    pub listen_addresses: Option<Vec<String>>,
    /// TCP port to listen on (default 179).
    #[serde(default)]
    pub listen_port: Option<u16>,
    /// Default hold time for peers (default 90 s).
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Default keepalive interval (default hold time / 3).
    #[serde(default)]
    pub keepalive_time: Option<u16>,
    /// Most paths in an ECMP set (default 8; 1 = no ECMP).
    #[serde(default)]
    pub max_ecmp_paths: Option<u32>,
    /// Set: we are a route reflector for peers with
    /// `routeReflectorClient: true`.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Log every session state change (default true).
    #[serde(default)]
    pub log_neighbor_changes: Option<bool>,
    /// Prefixes this speaker announces.
    #[serde(default)]
    pub originate: Vec<OriginateSpec>,
    /// The peers.
    #[serde(default)]
    pub peers: Vec<BGPPeerSpec>,
    /// Route programming (off until that issue lands).
    #[serde(default)]
    pub fib: Option<FibSpec>,
}

/// A prefix the speaker announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginateSpec {
    /// `ADDR/LEN`.
    pub prefix: String,
    /// MULTI_EXIT_DISC.
    #[serde(default)]
    pub med: Option<u32>,
    /// `"ASN:VALUE"` or a well-known name (`no-export`, `no-advertise`,
    /// `no-export-subconfed`, `no-peer`, `blackhole`, `graceful-shutdown`).
    #[serde(default)]
    pub communities: Vec<String>,
    /// `"GLOBAL:LOCAL1:LOCAL2"`.
    #[serde(default)]
    pub large_communities: Vec<String>,
}

/// `fib:` section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FibSpec {
    /// Program best routes into the kernel.
    #[serde(default)]
    pub enabled: bool,
    /// Seconds between kernel dumps that repair drift (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_seconds: Option<u64>,
    /// Blackhole routes for the originated prefixes (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blackhole_originated: Option<bool>,
    /// IP pools and their encapsulation (routes outside every pool are
    /// plain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<FibPoolSpec>,
    /// The node's underlay address `ADDR/LEN`: the tunnels' local end and
    /// the subnet `CrossSubnet` compares next hops with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<String>,
}

/// One entry of `fib.pools`, as `IPPool.spec` spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FibPoolSpec {
    /// `ADDR/LEN`.
    pub cidr: String,
    /// `None` (default), `IPIP`, `IPIPCrossSubnet`, `VXLAN`,
    /// `VXLANCrossSubnet`.
    #[serde(default)]
    pub encapsulation: crate::fib::encap::Mode,
}

/// `BGPPeer.spec` (group `tortie.io/v1alpha1`, see [`crate::crd`]), also
/// one entry of the speaker config's `peers`. The CRD is derived here, on
/// the shared type, so both spell a peer the same way.
#[allow(clippy::upper_case_acronyms)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tortie.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    derive = "PartialEq",
    doc = "A BGP peering of the nodes it selects (node, nodeSelector, or every node).",
    printcolumn = r#"{"name":"Peer IP","type":"string","jsonPath":".spec.peerIP"}"#,
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.asNumber"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[schemars(
    description = "A BGP peering: the peer, the session's options, and the nodes it applies to (node, nodeSelector, or every node)."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// For logs and status.
    #[serde(default)]
    pub name: Option<String>,
    /// The peer's address.
    #[serde(rename = "peerIP")]
    #[schemars(extend("anyOf" = [{"format": "ipv4"}, {"format": "ipv6"}]))]
    pub peer_ip: String,
    /// The peer's AS.
    #[schemars(range(min = 1, max = 4_294_967_294_u32))]
    pub as_number: u32,
    /// CRD only: the node this peering applies to.
    #[serde(default)]
    pub node: Option<String>,
    /// CRD only: the nodes this peering applies to.
    #[serde(default)]
    pub node_selector: Option<LabelSelector>,
    /// TCP-MD5 password.
    #[serde(default)]
    pub password: Option<PasswordSpec>,
    /// Hold time we offer (0 or >= 3).
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Keepalive interval.
    #[serde(default)]
    pub keepalive_time: Option<u16>,
    /// GTSM: maximum hops (1 = directly connected); absent = off.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub ttl_security: Option<u8>,
    /// Local address for the session.
    #[serde(default)]
    #[schemars(extend("anyOf" = [{"format": "ipv4"}, {"format": "ipv6"}]))]
    pub source_address: Option<String>,
    /// Wait for the peer to connect.
    #[serde(default)]
    pub passive: Option<bool>,
    /// Graceful restart (RFC 4724).
    #[serde(default)]
    pub graceful_restart: Option<GracefulRestartSpec>,
    /// Max-prefix limit; absent = unlimited.
    #[serde(default)]
    pub max_prefixes: Option<u32>,
    /// What crossing it does.
    #[serde(default)]
    pub max_prefixes_action: Option<MaxPrefixesAction>,
    /// The peer is our route-reflector client.
    #[serde(default)]
    pub route_reflector_client: Option<bool>,
    /// iBGP only: next hop self.
    #[serde(default)]
    pub next_hop_self: Option<bool>,
    /// Families (default both).
    #[serde(default)]
    pub families: Option<Vec<FamilyName>>,
    /// ADD-PATH.
    #[serde(default)]
    pub add_paths: Option<AddPaths>,
    /// Import rules, first match wins; default Accept.
    #[serde(default)]
    pub import_filters: Vec<FilterRuleSpec>,
    /// Export rules, first match wins; default Accept.
    #[serde(default)]
    pub export_filters: Vec<FilterRuleSpec>,
}

/// A password: inline (standalone) or from a Secret (CRD; the agent
/// resolves it to `value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSpec {
    /// The password itself.
    #[serde(default)]
    pub value: Option<String>,
    /// Where to read it.
    #[serde(default)]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in its data.
    pub key: String,
    /// Namespace (default: tortie's).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `gracefulRestart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracefulRestartSpec {
    /// On or off.
    #[serde(default)]
    pub enabled: bool,
    /// Seconds the peer keeps our routes (default 120, at most 4095).
    #[serde(default)]
    #[schemars(range(max = 4095))]
    pub restart_time: Option<u16>,
}

/// `maxPrefixesAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum MaxPrefixesAction {
    /// Cease / Maximum Number of Prefixes Reached.
    #[default]
    Reset,
    /// Log and keep going.
    Warn,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FamilyName {
    /// IPv4 unicast.
    IPv4,
    /// IPv6 unicast.
    IPv6,
}

/// `addPaths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum AddPaths {
    /// No ADD-PATH.
    #[default]
    None,
    /// Receive several paths.
    Receive,
    /// Send several paths.
    Send,
    /// Both.
    Both,
}

/// One filter rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterRuleSpec {
    /// Prefix to match (with `matchOperator`).
    #[serde(default)]
    #[schemars(extend("format" = "cidr"))]
    pub cidr: Option<String>,
    /// How `cidr` matches (default In).
    #[serde(default)]
    pub match_operator: Option<MatchOperator>,
    /// With `In`: the allowed prefix lengths.
    #[serde(default)]
    pub prefix_length: Option<PrefixLengthSpec>,
    /// Community the route must carry.
    #[serde(default)]
    pub community: Option<String>,
    /// Large community the route must carry.
    #[serde(default)]
    pub large_community: Option<String>,
    /// Accept or Reject.
    pub action: FilterAction,
    /// Communities added to accepted routes.
    #[serde(default)]
    pub add_communities: Vec<String>,
    /// Large communities added to accepted routes.
    #[serde(default)]
    pub add_large_communities: Vec<String>,
}

/// `matchOperator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MatchOperator {
    /// Inside `cidr` (or equal), lengths per `prefixLength`.
    In,
    /// Exactly `cidr`.
    Equal,
    /// Not inside `cidr`.
    NotIn,
    /// Anything but `cidr`.
    NotEqual,
}

/// `prefixLength`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLengthSpec {
    /// Shortest.
    #[serde(default)]
    pub min: Option<u8>,
    /// Longest.
    #[serde(default)]
    pub max: Option<u8>,
}

/// `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterAction {
    /// Take the route.
    Accept,
    /// Drop it.
    Reject,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_parses() {
        let y = r#"
asNumber: 64512
routerId: 192.0.2.11
listenAddresses: ["0.0.0.0", "::"]
listenPort: 179
holdTime: 90
keepaliveTime: 30
maxEcmpPaths: 8
clusterId: 192.0.2.11
logNeighborChanges: true
originate:
  - prefix: 10.244.1.0/24
    med: 10
    communities: ["65000:1", "no-export"]
    largeCommunities: ["64512:1:2"]
  - prefix: fd00:1::/64
peers:
  - name: tor-a
    peerIP: 192.0.2.1
    asNumber: 65001
    password: {value: "s3cret"}
    holdTime: 9
    keepaliveTime: 3
    ttlSecurity: 1
    sourceAddress: 192.0.2.11
    passive: false
    gracefulRestart: {enabled: true, restartTime: 120}
    maxPrefixes: 1000
    maxPrefixesAction: Reset
    routeReflectorClient: false
    nextHopSelf: false
    families: [IPv4, IPv6]
    addPaths: Receive
    importFilters:
      - {cidr: 10.244.0.0/16, matchOperator: In, prefixLength: {min: 16, max: 28}, action: Accept}
      - {cidr: 0.0.0.0/0, matchOperator: Equal, action: Reject}
      - {community: "65000:666", action: Reject}
    exportFilters:
      - {cidr: 10.244.0.0/16, matchOperator: In, action: Accept, addCommunities: ["65000:1"], addLargeCommunities: ["64512:0:1"]}
fib:
  enabled: false
"#;
        let c: SpeakerConfigSpec = serde_norway::from_str(y).expect("parses");
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].import_filters.len(), 3);
        assert_eq!(c.peers[0].add_paths, Some(AddPaths::Receive));
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_place() {
        let y = "asNumber: 1\nrouterId: 192.0.2.1\npeers:\n  - peerIP: 192.0.2.2\n    asNumber: 2\n    holdtime: 9\n";
        let e = serde_norway::from_str::<SpeakerConfigSpec>(y)
            .expect_err("typo")
            .to_string();
        assert!(e.contains("holdtime"), "{e}");
        assert!(e.contains("peers[0]"), "{e}");
    }
}
