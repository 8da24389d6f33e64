//! Turning raw objects into validated ones: tortie's CRDs from
//! [`RawObject`]s and the routing-relevant parts of Nodes (annotations,
//! pod CIDRs, addresses).
//!
//! Owns: every check that makes an object unusable, each reported as an
//! [`ObjectError`] naming kind, object and field. Pure: no I/O.
//!
//! Must never: fall back to a guess for a bad value (a typo must not turn a
//! peering or a pool into something else); the caller keeps the previous
//! good version instead.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use tortie_policy::selector::Selector;

use crate::crd::{BGPConfigurationSpec, BGPPeerSpec, IPPoolSpec};
use crate::manifests::{RawObject, Source};
use crate::resources::{PasswordSpec, SpeakerConfigSpec};

/// Node annotation: the node's own AS.
pub const ANNOTATION_ASN: &str = "tortie.io/asn";
/// Node annotation: the node's BGP (underlay) address, `ADDR/LEN`.
pub const ANNOTATION_BGP_ADDRESS: &str = "tortie.io/bgp-address";
/// Node annotation: the node is a route reflector with this cluster id.
pub const ANNOTATION_RR_CLUSTER_ID: &str = "tortie.io/route-reflector-cluster-id";

/// Prefix length of a BGP address taken from an InternalIP (which carries
/// none): /24 for IPv4, /64 for IPv6. Annotate the node with
/// `tortie.io/bgp-address: ADDR/LEN` where the subnet differs (it decides
/// which peers are "same subnet" for CrossSubnet encapsulation).
pub const DEFAULT_V4_PREFIX_LEN: u8 = 24;
/// See [`DEFAULT_V4_PREFIX_LEN`].
pub const DEFAULT_V6_PREFIX_LEN: u8 = 64;

/// Largest usable AS number (4294967295 is reserved, RFC 7300).
pub const MAX_ASN: u32 = 4_294_967_294;

/// One object that could not be used, as precise as the operator needs to
/// fix it: `BGPPeer tor-a: spec.peerIP: "192.0.2.300" is not an IP address`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectError {
    /// `BGPPeer`, `IPPool`, `BGPConfiguration`, `Node`.
    pub kind: String,
    /// metadata.name (empty when it is missing).
    pub name: String,
    /// The field at fault (`spec.peerIP`), empty for the whole object.
    pub field: String,
    /// What is wrong and, where it helps, what to do.
    pub problem: String,
    /// File and document, for the file datastore (boxed: errors travel
    /// in `Result`s and should stay small).
    pub source: Option<Box<Source>>,
    /// The previous good version of the object stays in force.
    pub kept_previous: bool,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.name.is_empty() {
            write!(f, " {}", self.name)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.problem)?;
        } else {
            write!(f, ": {}: {}", self.field, self.problem)?;
        }
        let mut notes = Vec::new();
        // The Kubernetes datastore names its objects `kubernetes:KIND/NAME`,
        // which says nothing the kind and name above do not.
        if let Some(s) = self
            .source
            .as_ref()
            .filter(|s| !s.file.to_string_lossy().starts_with("kubernetes:"))
        {
            notes.push(s.to_string());
        }
        if self.kept_previous {
            notes.push("the previous version stays in force".to_string());
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ObjectError {}

impl ObjectError {
    pub fn new(
        kind: &str,
        name: &str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ObjectError {
            kind: kind.to_string(),
            name: name.to_string(),
            field: field.into(),
            problem: problem.into(),
            source: None,
            kept_previous: false,
        }
    }

    fn at(mut self, source: &Source) -> Self {
        self.source = Some(Box::new(source.clone()));
        self
    }
}

/// A field and what is wrong with it, before the object is known.
type FieldProblem = (String, String);

fn problem(field: impl Into<String>, p: impl Into<String>) -> FieldProblem {
    (field.into(), p.into())
}

/// Metadata and spec of a custom resource, checked against its type:
/// unknown top-level or spec fields are rejected with their path.
pub(crate) fn parse_custom<S: DeserializeOwned>(
    raw: &RawObject,
    spec_required: bool,
) -> Result<(ObjectMeta, S), ObjectError> {
    let name = raw.name.clone().unwrap_or_default();
    let fail =
        |(field, p): FieldProblem| ObjectError::new(&raw.kind, &name, field, p).at(&raw.source);
    let Some(map) = raw.value.as_object() else {
        return Err(fail(problem("", "not a mapping")));
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            return Err(fail(problem(key.as_str(), "unknown field")));
        }
    }
    let meta: ObjectMeta = match map.get("metadata") {
        None => ObjectMeta::default(),
        Some(v) => serde_path_to_error::deserialize(v)
            .map_err(|e| fail(problem(join_path("metadata", &e), e.inner().to_string())))?,
    };
    if meta.name.as_deref().unwrap_or_default().is_empty() {
        return Err(fail(problem("metadata.name", "is missing")));
    }
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let spec_value = match map.get("spec") {
        Some(v) => v,
        None if spec_required => return Err(fail(problem("spec", "is missing"))),
        None => &empty,
    };
    let spec: S = serde_path_to_error::deserialize(spec_value)
        .map_err(|e| fail(problem(join_path("spec", &e), e.inner().to_string())))?;
    Ok((meta, spec))
}

fn join_path(root: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let p = e.path().to_string();
    if p == "." || p.is_empty() {
        root.to_string()
    } else if p.starts_with('[') {
        format!("{root}{p}")
    } else {
        format!("{root}.{p}")
    }
}

/// Checks a `BGPConfiguration` spec beyond its schema.
pub(crate) fn check_bgp_configuration(spec: &BGPConfigurationSpec) -> Result<(), FieldProblem> {
    check_asn("spec.asNumber", spec.as_number)?;
    if spec.listen_port == 0 {
        return Err(problem("spec.listenPort", "0 is not a usable port"));
    }
    let hold = spec.hold_time.unwrap_or(90);
    if let Some(h) = spec.hold_time {
        if h != 0 && h < 3 {
            return Err(problem(
                "spec.holdTime",
                format!("{h} is not allowed (0, or 3 and more seconds)"),
            ));
        }
    }
    if let Some(k) = spec.keepalive_time {
        if k == 0 || (hold != 0 && k >= hold) {
            return Err(problem(
                "spec.keepaliveTime",
                format!("{k} must be at least 1 and smaller than the hold time {hold}"),
            ));
        }
    }
    Ok(())
}

fn check_asn(field: &str, asn: u32) -> Result<(), FieldProblem> {
    if asn == 0 || asn > MAX_ASN {
        return Err(problem(
            field,
            format!("{asn} is not a usable AS number (1..={MAX_ASN})"),
        ));
    }
    Ok(())
}

/// Which nodes a `BGPPeer` applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerScope {
    /// `spec.node`.
    Node(String),
    /// `spec.nodeSelector`.
    Selector(Selector),
    /// Neither: every node.
    AllNodes,
}

impl PeerScope {
    pub fn selects(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            PeerScope::Node(n) => n == node_name,
            PeerScope::Selector(s) => s.matches(labels),
            PeerScope::AllNodes => true,
        }
    }
}

/// A `BGPPeer` that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPeer {
    pub name: String,
    pub peer_ip: IpAddr,
    pub scope: PeerScope,
    pub spec: BGPPeerSpec,
    pub source: Option<Source>,
}

/// Checks a `BGPPeer` spec: its own fields here, everything the speaker
/// checks (timers, filters, families, ...) through the speaker's own
/// converter so the two can never disagree.
pub(crate) fn check_peer(name: &str, spec: &BGPPeerSpec) -> Result<ValidPeer, FieldProblem> {
    let peer_ip: IpAddr = spec.peer_ip.trim().parse().map_err(|_| {
        problem(
            "spec.peerIP",
            format!("{:?} is not an IP address", spec.peer_ip),
        )
    })?;
    check_asn("spec.asNumber", spec.as_number)?;
    let scope = match (&spec.node, &spec.node_selector) {
        (Some(_), Some(_)) => {
            return Err(problem(
                "spec.nodeSelector",
                "set node or nodeSelector, not both",
            ))
        }
        (Some(n), None) if n.is_empty() => return Err(problem("spec.node", "is empty")),
        (Some(n), None) => PeerScope::Node(n.clone()),
        (None, Some(sel)) => PeerScope::Selector(
            Selector::parse(sel, "spec.nodeSelector").map_err(|e| (e.field, e.problem))?,
        ),
        (None, None) => PeerScope::AllNodes,
    };
    let mut probe = spec.clone();
    if let Some(pw) = &spec.password {
        match (&pw.value, &pw.secret_key_ref) {
            (Some(_), Some(_)) => {
                return Err(problem(
                    "spec.password",
                    "set value or secretKeyRef, not both",
                ))
            }
            (None, None) => return Err(problem("spec.password", "needs secretKeyRef (or value)")),
            (None, Some(r)) => {
                if r.name.is_empty() {
                    return Err(problem("spec.password.secretKeyRef.name", "is empty"));
                }
                if r.key.is_empty() {
                    return Err(problem("spec.password.secretKeyRef.key", "is empty"));
                }
                // The speaker only takes resolved passwords; the Secret is
                // looked up per node when the routing is built.
                probe.password = Some(PasswordSpec {
                    value: Some("resolved-later".into()),
                    secret_key_ref: None,
                });
            }
            (Some(_), None) => {}
        }
    }
    probe.node = None;
    probe.node_selector = None;
    let config = SpeakerConfigSpec {
        as_number: 64512,
        router_id: "192.0.2.1".into(),
        listen_addresses: Some(Vec::new()),
        listen_port: None,
        hold_time: None,
        keepalive_time: None,
        max_ecmp_paths: None,
        // Lets `routeReflectorClient` pass here; whether the node is a
        // reflector is decided per node.
        cluster_id: Some("192.0.2.1".into()),
        log_neighbor_changes: None,
        originate: Vec::new(),
        peers: vec![probe],
        fib: None,
    };
    if let Err(e) = crate::bgp_cmd::convert(&config) {
        return Err(speaker_error(&e.to_string()));
    }
    Ok(ValidPeer {
        name: name.to_string(),
        peer_ip,
        scope,
        spec: spec.clone(),
        source: None,
    })
}

/// The speaker names fields `peers[0].x: problem`; as a BGPPeer they are
/// `spec.x`.
fn speaker_error(message: &str) -> FieldProblem {
    let rest = message.strip_prefix("peers[0]").unwrap_or(message);
    match rest.split_once(": ") {
        Some((field, p)) => {
            let field = field.trim_start_matches('.');
            let field = if field.is_empty() {
                "spec".to_string()
            } else {
                format!("spec.{field}")
            };
            (field, p.to_string())
        }
        None => ("spec".to_string(), rest.to_string()),
    }
}

/// An `IPPool` that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPool {
    pub name: String,
    pub cidr: IpNet,
    pub spec: IPPoolSpec,
    pub source: Option<Source>,
}

pub(crate) fn check_pool(name: &str, spec: &IPPoolSpec) -> Result<ValidPool, FieldProblem> {
    let cidr: IpNet = spec.cidr.trim().parse().map_err(|_| {
        problem(
            "spec.cidr",
            format!("{:?} is not a CIDR (ADDR/LEN)", spec.cidr),
        )
    })?;
    if cidr.trunc() != cidr {
        return Err(problem(
            "spec.cidr",
            format!("{cidr} has host bits set (did you mean {}?)", cidr.trunc()),
        ));
    }
    if cidr.addr().is_ipv6() && spec.encapsulation.is_ipip() {
        return Err(problem(
            "spec.encapsulation",
            format!(
                "{:?} carries IPv4 only; the IPv6 pool {cidr} needs None, VXLAN or VXLANCrossSubnet",
                spec.encapsulation
            ),
        ));
    }
    Ok(ValidPool {
        name: name.to_string(),
        cidr,
        spec: spec.clone(),
        source: None,
    })
}

/// The routing-relevant facts of a Node, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidNode {
    pub name: String,
    /// Shared with the datastore's snapshot.
    pub node: Arc<Node>,
    /// `tortie.io/asn`.
    pub asn: Option<u32>,
    /// `tortie.io/bgp-address`, else the first InternalIP (IPv4 first)
    /// with the default prefix length. None: the node has no address yet
    /// and takes no part in the mesh.
    pub bgp_address: Option<IpNet>,
    /// Every IPv4 InternalIP, for the router id when the BGP address is
    /// IPv6.
    pub internal_v4: Vec<Ipv4Addr>,
    /// Every IPv6 InternalIP: a dual-stack node's IPv6 mesh sessions.
    pub internal_v6: Vec<Ipv6Addr>,
    /// `tortie.io/route-reflector-cluster-id`.
    pub cluster_id: Option<Ipv4Addr>,
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    pub labels: BTreeMap<String, String>,
}

impl ValidNode {
    /// The address of this node's IPv6 sessions: its BGP address when that
    /// is IPv6, else its first IPv6 InternalIP.
    pub fn ipv6_session_address(&self) -> Option<Ipv6Addr> {
        match self.bgp_address.map(|a| a.addr()) {
            Some(IpAddr::V6(v6)) => Some(v6),
            _ => self.internal_v6.first().copied(),
        }
    }
}

pub(crate) fn check_node(node: &Arc<Node>) -> Result<ValidNode, ObjectError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let fail = |(field, p): FieldProblem| ObjectError::new("Node", &name, field, p);
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let field = |key: &str| format!("metadata.annotations[{key:?}]");
    let asn = match annotations.get(ANNOTATION_ASN) {
        None => None,
        Some(v) => {
            let asn: u32 = v.trim().parse().map_err(|_| {
                fail(problem(
                    field(ANNOTATION_ASN),
                    format!("{v:?} is not an AS number (1..={MAX_ASN})"),
                ))
            })?;
            check_asn(&field(ANNOTATION_ASN), asn).map_err(fail)?;
            Some(asn)
        }
    };
    let cluster_id = match annotations.get(ANNOTATION_RR_CLUSTER_ID) {
        None => None,
        Some(v) => Some(v.trim().parse::<Ipv4Addr>().map_err(|_| {
            fail(problem(
                field(ANNOTATION_RR_CLUSTER_ID),
                format!("{v:?} is not a cluster id (an IPv4 address such as 244.0.0.1)"),
            ))
        })?),
    };
    let mut internal = Vec::new();
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, a) in addresses.iter().enumerate() {
        if a.type_ != "InternalIP" {
            continue;
        }
        let ip: IpAddr = a.address.trim().parse().map_err(|_| {
            fail(problem(
                format!("status.addresses[{i}].address"),
                format!("{:?} is not an IP address", a.address),
            ))
        })?;
        internal.push(ip);
    }
    let internal_v6: Vec<Ipv6Addr> = internal
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
        .collect();
    let internal_v4: Vec<Ipv4Addr> = internal
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    let bgp_address = match annotations.get(ANNOTATION_BGP_ADDRESS) {
        Some(v) => Some(parse_address(v).ok_or_else(|| {
            fail(problem(
                field(ANNOTATION_BGP_ADDRESS),
                format!("{v:?} is not an address with a prefix length (ADDR/LEN)"),
            ))
        })?),
        None => internal
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(internal.first())
            .map(|ip| with_default_len(*ip)),
    };
    let spec = node.spec.as_ref();
    let mut texts: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    let field_name = if texts.is_empty() {
        texts.extend(spec.and_then(|s| s.pod_cidr.clone()));
        "spec.podCIDR"
    } else {
        "spec.podCIDRs"
    };
    let mut pod_cidrs = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let f = if field_name == "spec.podCIDR" {
            field_name.to_string()
        } else {
            format!("{field_name}[{i}]")
        };
        let net: IpNet = t.trim().parse().map_err(|_| {
            fail(problem(
                f.clone(),
                format!("{t:?} is not a CIDR (ADDR/LEN)"),
            ))
        })?;
        if net.trunc() != net {
            return Err(fail(problem(
                f,
                format!("{net} has host bits set (did you mean {}?)", net.trunc()),
            )));
        }
        pod_cidrs.push(net);
    }
    Ok(ValidNode {
        name: name.clone(),
        node: node.clone(),
        asn,
        bgp_address,
        internal_v4,
        internal_v6,
        cluster_id,
        pod_cidrs,
        labels: node.metadata.labels.clone().unwrap_or_default(),
    })
}

/// `ADDR/LEN`, or a bare address with the default prefix length.
fn parse_address(text: &str) -> Option<IpNet> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Some(net);
    }
    t.parse::<IpAddr>().ok().map(with_default_len)
}

fn with_default_len(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() {
        DEFAULT_V4_PREFIX_LEN
    } else {
        DEFAULT_V6_PREFIX_LEN
    };
    // The lengths are constants within range for their family.
    IpNet::new(ip, len).unwrap_or_else(|_| IpNet::from(ip))
}

/// Attaches object identity to a field problem.
pub(crate) fn object_error(
    kind: &str,
    name: &str,
    source: Option<&Source>,
    (field, p): FieldProblem,
) -> ObjectError {
    let e = ObjectError::new(kind, name, field, p);
    match source {
        Some(s) => e.at(s),
        None => e,
    }
}
