//! One node's routing from the model: the speaker config (ASN, router id,
//! mesh and BGPPeer sessions with resolved passwords, originated pod
//! CIDRs, FIB on) plus what the FIB and NAT need (pools, encapsulation,
//! the underlay address).
//!
//! Must never: let one bad peer (a missing Secret, a reflector setting on a
//! node that is no reflector) take the other sessions down; such a peer is
//! left out and reported in [`NodeRouting::errors`].
//!
//! The node mesh: one session to every other node with a BGP address
//! (`tortie.io/bgp-address`, else its first InternalIP, IPv4 preferred,
//! with a /24 or /64 prefix length), from our BGP address, with graceful
//! restart. Dual-stack nodes (IPv4 BGP addresses and an IPv6 InternalIP on
//! both ends) get a second, IPv6-only session between their IPv6
//! addresses, and the IPv4 session carries IPv4 only.
//!
//! Route reflectors: a node annotated `tortie.io/route-reflector-cluster-id`
//! gets that cluster id and reflects for the BGPPeers marked
//! `routeReflectorClient`; the node mesh stays a full mesh (mesh sessions
//! are never reflector clients), so turn `nodeToNodeMesh` off when
//! reflectors should carry the routes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::validate::ValidNode;
use super::Model;
use crate::crd::Encapsulation;
use crate::resources::{
    BGPPeerSpec, FamilyName, FibSpec, GracefulRestartSpec, OriginateSpec, PasswordSpec,
    SpeakerConfigSpec,
};

/// Namespace of a `secretKeyRef` that names none, unless the agent sets
/// another with [`set_secret_default_namespace`]: where tortie is deployed
/// (deploy/). With the file datastore this default stays: a Secret without
/// `metadata.namespace` in the manifests is in `default`, so a secretKeyRef
/// to it must name `namespace: default` (or the Secret must say
/// `namespace: tortie-system`).
pub const SECRET_DEFAULT_NAMESPACE: &str = "tortie-system";

/// The process-wide override of [`SECRET_DEFAULT_NAMESPACE`]: the agent's
/// own namespace with the Kubernetes datastore, because RBAC lets it read
/// Secrets only there and the datastore watches only that namespace.
static SECRET_NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The namespace for a `secretKeyRef` without one, from the value of
/// `POD_NAMESPACE` (the DaemonSet sets it from the downward API): that
/// value when set and not empty, else [`SECRET_DEFAULT_NAMESPACE`].
pub fn secret_namespace_from(pod_namespace: Option<&str>) -> String {
    pod_namespace
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(SECRET_DEFAULT_NAMESPACE)
        .to_string()
}

/// Sets the namespace of secretKeyRefs without one for this process (once,
/// at agent start, before the first model; later calls are ignored and
/// return false).
pub fn set_secret_default_namespace(namespace: String) -> bool {
    SECRET_NAMESPACE.set(namespace).is_ok()
}

/// The namespace a `secretKeyRef` without one resolves in.
pub fn secret_default_namespace() -> &'static str {
    SECRET_NAMESPACE
        .get()
        .map(String::as_str)
        .unwrap_or(SECRET_DEFAULT_NAMESPACE)
}

/// Graceful restart time offered on mesh sessions: long enough for an
/// agent restart (the routes stay in the kernel meanwhile).
const MESH_RESTART_TIME: u16 = 120;

/// Everything routing-related one node should do.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRouting {
    /// The speaker's config, for `bgp_cmd::convert()`.
    pub speaker: SpeakerConfigSpec,
    /// Why each peer is there: `"mesh"` or `"BGPPeer NAME"`.
    pub peer_sources: BTreeMap<IpAddr, String>,
    /// The node's pod CIDRs (all of them, announced or not).
    pub pod_cidrs: Vec<IpNet>,
    /// The node's underlay address, `ADDR/LEN`.
    pub bgp_address: IpNet,
    /// Enabled pools, sorted by name.
    pub pools: Vec<PoolRouting>,
    /// Every other node with a BGP address, by name: the tunnel endpoints
    /// (VXLAN FDB entries, CrossSubnet decisions) and which node owns
    /// which pod CIDR, whether or not BGP has learned it yet.
    pub remote_nodes: BTreeMap<String, RemoteNode>,
    /// Peers left out and pod CIDRs not announced, with the reason.
    pub errors: Vec<String>,
}

/// Another node, as tunnels and routes to its pods need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// Its underlay address, `ADDR/LEN`.
    pub bgp_address: IpNet,
    /// Its pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
}

/// An enabled IP pool, as the FIB and NAT use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRouting {
    pub name: String,
    pub cidr: IpNet,
    pub encapsulation: Encapsulation,
    pub nat_outgoing: bool,
}

impl Model {
    /// What `node` should do for routing. An error means the node cannot
    /// route at all (not in the datastore, no address): the caller keeps
    /// its current config.
    pub fn node_routing(&self, node: &str) -> Result<NodeRouting, String> {
        let me = self.nodes.get(node).ok_or_else(|| {
            format!("Node {node} is not in the datastore (or has never been valid)")
        })?;
        let bgp_address = me.bgp_address.ok_or_else(|| {
            format!(
                "Node {node}: no BGP address: annotate it with tortie.io/bgp-address: ADDR/LEN or give it an InternalIP"
            )
        })?;
        let router_id = router_id(me, bgp_address).ok_or_else(|| {
            format!(
                "Node {node}: no IPv4 address for the BGP router id (the BGP address {bgp_address} is IPv6 and there is no IPv4 InternalIP)"
            )
        })?;
        let settings = self.bgp_settings();
        let asn = me.asn.unwrap_or(settings.as_number);
        let mut errors = Vec::new();
        let mut peers: Vec<BGPPeerSpec> = Vec::new();
        let mut peer_sources = BTreeMap::new();
        let my_ip = bgp_address.addr();

        // BGPPeers first: an explicit peering wins over the mesh for the
        // same address.
        for peer in self.bgp_peers.values() {
            if !peer.scope.selects(node, &me.labels) {
                continue;
            }
            let label = format!("BGPPeer {}", peer.name);
            if peer.peer_ip == my_ip {
                continue; // a peering that selects the peer itself
            }
            if let Some(first) = peer_sources.get(&peer.peer_ip) {
                errors.push(format!(
                    "{label}: spec.peerIP: {} is already peered by {first}; this peering is ignored on node {node}",
                    peer.peer_ip
                ));
                continue;
            }
            let mut spec = peer.spec.clone();
            spec.node = None;
            spec.node_selector = None;
            spec.name = Some(peer.name.clone());
            if spec.route_reflector_client == Some(true) && me.cluster_id.is_none() {
                errors.push(format!(
                    "{label}: spec.routeReflectorClient: node {node} is not a route reflector (annotate it with tortie.io/route-reflector-cluster-id); this peering is left out"
                ));
                continue;
            }
            match self.resolve_password(spec.password.as_ref()) {
                Ok(pw) => spec.password = pw,
                Err(e) => {
                    errors.push(format!("{label}: {e}; this peering is left out"));
                    continue;
                }
            }
            peer_sources.insert(peer.peer_ip, label);
            peers.push(spec);
        }

        if settings.node_to_node_mesh {
            let my_v6 = me.ipv6_session_address();
            for other in self.nodes.values() {
                if other.name == node {
                    continue;
                }
                let Some(addr) = other.bgp_address else {
                    continue;
                };
                let asn = other.asn.unwrap_or(settings.as_number);
                let ip = addr.addr();
                // Dual-stack nodes (IPv4 BGP addresses, IPv6 InternalIPs on
                // both ends) get one session per family: an IPv6 route
                // learned over IPv4 carries an IPv4-mapped next hop the
                // kernel cannot route via.
                let v6_pair = match (ip, my_ip, my_v6, other.ipv6_session_address()) {
                    (IpAddr::V4(_), IpAddr::V4(_), Some(mine), Some(theirs)) => {
                        Some((mine, theirs))
                    }
                    _ => None,
                };
                let families = v6_pair.map(|_| vec![FamilyName::IPv4]);
                if ip != my_ip && !peer_sources.contains_key(&ip) {
                    peer_sources.insert(ip, "mesh".to_string());
                    peers.push(mesh_peer(&other.name, ip, asn, my_ip, families));
                }
                if let Some((mine, theirs)) = v6_pair {
                    let ip6 = IpAddr::V6(theirs);
                    if theirs != mine && !peer_sources.contains_key(&ip6) {
                        peer_sources.insert(ip6, "mesh".to_string());
                        peers.push(mesh_peer(
                            &other.name,
                            ip6,
                            asn,
                            IpAddr::V6(mine),
                            Some(vec![FamilyName::IPv6]),
                        ));
                    }
                }
            }
        }
        peers.sort_by(|a, b| a.peer_ip.cmp(&b.peer_ip));

        let pools: Vec<PoolRouting> = self
            .ip_pools
            .values()
            .filter(|p| !p.spec.disabled)
            .map(|p| PoolRouting {
                name: p.name.clone(),
                cidr: p.cidr,
                encapsulation: p.spec.encapsulation,
                nat_outgoing: p.spec.nat_outgoing,
            })
            .collect();
        let mut originate = Vec::new();
        for cidr in &me.pod_cidrs {
            if pools.iter().any(|p| p.cidr.contains(cidr)) {
                originate.push(OriginateSpec {
                    prefix: cidr.to_string(),
                    med: None,
                    communities: Vec::new(),
                    large_communities: Vec::new(),
                });
            } else {
                errors.push(format!(
                    "Node {node}: spec.podCIDRs: {cidr} is not inside an enabled IPPool; it is not announced"
                ));
            }
        }

        let speaker = SpeakerConfigSpec {
            as_number: asn,
            router_id: router_id.to_string(),
            listen_addresses: None,
            listen_port: Some(settings.listen_port),
            hold_time: settings.hold_time,
            keepalive_time: settings.keepalive_time,
            max_ecmp_paths: None,
            cluster_id: me.cluster_id.map(|c| c.to_string()),
            log_neighbor_changes: None,
            originate,
            peers,
            fib: Some(FibSpec {
                enabled: true,
                resync_seconds: None,
                blackhole_originated: Some(true),
                ..FibSpec::default()
            }),
        };
        // Each peer passed the speaker's checks alone; together they must
        // too (this is the config the daemon will load).
        if let Err(e) = crate::bgp_cmd::convert(&speaker) {
            return Err(format!(
                "Node {node}: the routing config is not usable: {e}"
            ));
        }
        let remote_nodes = self
            .nodes
            .values()
            .filter(|n| n.name != node)
            .filter_map(|n| {
                let bgp_address = n.bgp_address?;
                Some((
                    n.name.clone(),
                    RemoteNode {
                        bgp_address,
                        pod_cidrs: n.pod_cidrs.clone(),
                    },
                ))
            })
            .collect();
        Ok(NodeRouting {
            speaker,
            peer_sources,
            pod_cidrs: me.pod_cidrs.clone(),
            bgp_address,
            pools,
            remote_nodes,
            errors,
        })
    }

    /// The Secrets (namespace, name) that good BGPPeers read passwords
    /// from: what a datastore must make available.
    pub fn secret_refs(&self) -> std::collections::BTreeSet<(String, String)> {
        self.bgp_peers
            .values()
            .filter_map(|p| p.spec.password.as_ref()?.secret_key_ref.as_ref())
            .map(|r| {
                (
                    r.namespace
                        .clone()
                        .unwrap_or_else(|| secret_default_namespace().to_string()),
                    r.name.clone(),
                )
            })
            .collect()
    }

    /// A BGPPeer's password: inline, or from its Secret (`data` as the API
    /// server stores it, `stringData` as manifest files write it).
    fn resolve_password(&self, pw: Option<&PasswordSpec>) -> Result<Option<PasswordSpec>, String> {
        let Some(pw) = pw else {
            return Ok(None);
        };
        if pw.value.is_some() {
            return Ok(Some(PasswordSpec {
                value: pw.value.clone(),
                secret_key_ref: None,
            }));
        }
        let Some(r) = &pw.secret_key_ref else {
            return Ok(None);
        };
        let ns = r.namespace.as_deref().unwrap_or(secret_default_namespace());
        let field = "spec.password.secretKeyRef";
        let secret = self
            .secret(ns, &r.name)
            .ok_or_else(|| format!("{field}: Secret {ns}/{} does not exist", r.name))?;
        let from_data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| String::from_utf8(b.0.clone()));
        let value = match from_data {
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                return Err(format!(
                    "{field}: key {:?} of Secret {ns}/{} is not UTF-8 text",
                    r.key, r.name
                ))
            }
            None => secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .cloned()
                .ok_or_else(|| format!("{field}: Secret {ns}/{} has no key {:?}", r.name, r.key))?,
        };
        // `echo pw | kubectl create secret` leaves a newline no router
        // config has.
        let value = value.trim_end_matches('\n').to_string();
        if value.is_empty() || value.len() > 80 {
            return Err(format!(
                "{field}: key {:?} of Secret {ns}/{} must hold 1 to 80 octets (the TCP-MD5 limit)",
                r.key, r.name
            ));
        }
        Ok(Some(PasswordSpec {
            value: Some(value),
            secret_key_ref: None,
        }))
    }
}

/// One node-to-node session.
fn mesh_peer(
    node: &str,
    ip: IpAddr,
    asn: u32,
    local: IpAddr,
    families: Option<Vec<FamilyName>>,
) -> BGPPeerSpec {
    BGPPeerSpec {
        name: Some(format!("mesh {node}")),
        peer_ip: ip.to_string(),
        as_number: asn,
        node: None,
        node_selector: None,
        password: None,
        hold_time: None,
        keepalive_time: None,
        ttl_security: None,
        // Sessions from the BGP address, so the peer sees the address it
        // expects whatever route the kernel picks.
        source_address: (ip.is_ipv4() == local.is_ipv4()).then(|| local.to_string()),
        passive: None,
        graceful_restart: Some(GracefulRestartSpec {
            enabled: true,
            restart_time: Some(MESH_RESTART_TIME),
        }),
        max_prefixes: None,
        max_prefixes_action: None,
        route_reflector_client: None,
        next_hop_self: None,
        families,
        add_paths: None,
        import_filters: Vec::new(),
        export_filters: Vec::new(),
    }
}

/// The IPv4 BGP identifier: the BGP address when it is IPv4, else the
/// node's first IPv4 InternalIP.
fn router_id(node: &ValidNode, bgp_address: IpNet) -> Option<Ipv4Addr> {
    match bgp_address.addr() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => node.internal_v4.first().copied(),
    }
}

#[cfg(test)]
mod secret_namespace_tests {
    use super::*;

    #[test]
    fn pod_namespace_wins_when_set() {
        assert_eq!(secret_namespace_from(Some("kube-system")), "kube-system");
    }

    #[test]
    fn unset_or_empty_pod_namespace_means_tortie_system() {
        assert_eq!(secret_namespace_from(None), "tortie-system");
        assert_eq!(secret_namespace_from(Some("")), "tortie-system");
        assert_eq!(secret_namespace_from(Some("  ")), "tortie-system");
    }

    #[test]
    fn without_an_override_refs_resolve_in_tortie_system() {
        // Tests never call set_secret_default_namespace (process-wide).
        assert_eq!(secret_default_namespace(), SECRET_DEFAULT_NAMESPACE);
    }
}
