//! The cluster model one agent works from: the datastore's objects, with
//! tortie's CRDs typed and validated and Nodes' routing facts checked.
//!
//! Owns: [`Model::build`] (manifests in, model out, deterministic), the
//! "last good version" rule (an object that fails validation keeps its
//! previous good version from the previous model, and is reported), and
//! the per-node views derived from it: [`Model::node_routing`] (what the
//! speaker, FIB and NAT should do on a node) and [`Model::policy_snapshot`]
//! (the policy compiler's input).
//!
//! Pure: no clock, no files, no sockets. Must never: drop a working object
//! because its new version is bad, or guess a value the user did not write.

mod routing;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Secret};
use serde::de::DeserializeOwned;
use tortie_policy::model::SlimPod;

use crate::crd::{
    BGPConfigurationSpec, BGPPeerSpec, IPPoolSpec, API_VERSION, BGP_CONFIGURATION_NAME,
};
use crate::manifests::{Manifests, RawObject, Source};

pub use routing::{
    secret_default_namespace, secret_namespace_from, set_secret_default_namespace, NodeRouting,
    PoolRouting, RemoteNode, SECRET_DEFAULT_NAMESPACE,
};
pub use validate::{
    ObjectError, PeerScope, ValidNode, ValidPeer, ValidPool, ANNOTATION_ASN,
    ANNOTATION_BGP_ADDRESS, ANNOTATION_RR_CLUSTER_ID, DEFAULT_V4_PREFIX_LEN, DEFAULT_V6_PREFIX_LEN,
    MAX_ASN,
};

/// The validated cluster model.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The objects as loaded (pods, namespaces, policies, secrets, nodes);
    /// pods and nodes shared with the datastore's snapshot by `Arc`.
    manifests: Manifests,
    /// `BGPConfiguration default`, when there is a good one.
    pub bgp_configuration: Option<BGPConfigurationSpec>,
    /// Good `BGPPeer`s by name.
    pub bgp_peers: BTreeMap<String, ValidPeer>,
    /// Good `IPPool`s by name (no two overlap).
    pub ip_pools: BTreeMap<String, ValidPool>,
    /// Good Nodes by name.
    pub nodes: BTreeMap<String, ValidNode>,
    /// Positions in `manifests.pods`, sorted by (namespace, name): an
    /// index of 4 bytes a pod rather than a map of copied names.
    pods: Vec<u32>,
    /// What could not be used, structured (for Events and status).
    pub object_errors: Vec<ObjectError>,
    /// The same, as operator-facing lines (sorted, deterministic).
    pub errors: Vec<String>,
}

impl Model {
    /// Builds the model from the datastore's objects. An object that fails
    /// validation keeps its previous good version from `previous` (when
    /// there is one) and is reported in [`Model::errors`] either way.
    pub fn build(manifests: &Manifests, previous: Option<&Model>) -> Model {
        let mut errors: Vec<ObjectError> = Vec::new();
        let mut model = Model {
            manifests: manifests.clone(),
            ..Model::default()
        };

        // Nodes.
        for node in &manifests.nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            match validate::check_node(node) {
                Ok(v) => {
                    model.nodes.insert(name, v);
                }
                Err(mut e) => {
                    if let Some(prev) = previous.and_then(|p| p.nodes.get(&name)) {
                        e.kept_previous = true;
                        model.nodes.insert(name, prev.clone());
                    }
                    errors.push(e);
                }
            }
        }

        // tortie's resources, each kind in load order.
        let mut seen: BTreeMap<(String, String), Option<Source>> = BTreeMap::new();
        for raw in &manifests.other {
            if raw.api_version != API_VERSION {
                continue;
            }
            let name = raw.name.clone().unwrap_or_default();
            if !name.is_empty() {
                let key = (raw.kind.clone(), name.clone());
                if let Some(first) = seen.get(&key) {
                    let at = first
                        .as_ref()
                        .map_or_else(String::new, |s| format!(" at {s}"));
                    errors.push(validate::object_error(
                        &raw.kind,
                        &name,
                        Some(&raw.source),
                        (
                            String::new(),
                            format!("duplicate object, first defined{at}; this one is ignored"),
                        ),
                    ));
                    continue;
                }
                seen.insert(key, Some(raw.source.clone()));
            }
            match raw.kind.as_str() {
                "BGPConfiguration" => {
                    model.add_bgp_configuration(raw, previous, &mut errors);
                }
                "BGPPeer" => model.add_peer(raw, previous, &mut errors),
                "IPPool" => {} // after the loop: overlaps need all of them
                other => errors.push(validate::object_error(
                    other,
                    &name,
                    Some(&raw.source),
                    (
                        String::new(),
                        format!("unknown kind in {API_VERSION} (BGPConfiguration, BGPPeer, IPPool); ignored"),
                    ),
                )),
            }
        }
        model.add_pools(manifests, previous, &mut errors);

        let pods = &model.manifests.pods;
        let mut index: Vec<u32> = (0..pods.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        index.sort_by(|&a, &b| pod_key(pods, a).cmp(&pod_key(pods, b)));
        model.pods = index;
        errors.sort();
        errors.dedup();
        model.errors = errors.iter().map(ToString::to_string).collect();
        model.object_errors = errors;
        model
    }

    fn add_bgp_configuration(
        &mut self,
        raw: &RawObject,
        previous: Option<&Model>,
        errors: &mut Vec<ObjectError>,
    ) {
        let name = raw.name.clone().unwrap_or_default();
        if name != BGP_CONFIGURATION_NAME {
            errors.push(validate::object_error(
                &raw.kind,
                &name,
                Some(&raw.source),
                (
                    "metadata.name".into(),
                    format!("only the BGPConfiguration named {BGP_CONFIGURATION_NAME:?} is read; this one is ignored"),
                ),
            ));
            return;
        }
        let checked = parse::<BGPConfigurationSpec>(raw, false).and_then(|spec| {
            validate::check_bgp_configuration(&spec)
                .map(|()| spec)
                .map_err(|p| validate::object_error(&raw.kind, &name, Some(&raw.source), p))
        });
        match checked {
            Ok(spec) => self.bgp_configuration = Some(spec),
            Err(mut e) => {
                if let Some(prev) = previous.and_then(|p| p.bgp_configuration.clone()) {
                    e.kept_previous = true;
                    self.bgp_configuration = Some(prev);
                }
                errors.push(e);
            }
        }
    }

    fn add_peer(
        &mut self,
        raw: &RawObject,
        previous: Option<&Model>,
        errors: &mut Vec<ObjectError>,
    ) {
        let name = raw.name.clone().unwrap_or_default();
        let checked = parse::<BGPPeerSpec>(raw, true).and_then(|spec| {
            validate::check_peer(&name, &spec)
                .map_err(|p| validate::object_error(&raw.kind, &name, Some(&raw.source), p))
        });
        match checked {
            Ok(mut peer) => {
                peer.source = Some(raw.source.clone());
                self.bgp_peers.insert(name, peer);
            }
            Err(mut e) => {
                if let Some(prev) = previous.and_then(|p| p.bgp_peers.get(&name)) {
                    e.kept_previous = true;
                    self.bgp_peers.insert(name, prev.clone());
                }
                errors.push(e);
            }
        }
    }

    /// Pools are checked one by one, then for overlaps: pools unchanged
    /// since the previous model win (a new pool must not take addresses
    /// from a working one), then by name.
    fn add_pools(
        &mut self,
        manifests: &Manifests,
        previous: Option<&Model>,
        errors: &mut Vec<ObjectError>,
    ) {
        let mut candidates: Vec<ValidPool> = Vec::new();
        let mut names = BTreeSet::new();
        let fallback = |name: &str, mut e: ObjectError, errors: &mut Vec<ObjectError>| {
            let prev = previous.and_then(|p| p.ip_pools.get(name)).cloned();
            if prev.is_some() {
                e.kept_previous = true;
            }
            errors.push(e);
            prev
        };
        let mut kept: Vec<ValidPool> = Vec::new();
        for raw in &manifests.other {
            if raw.api_version != API_VERSION || raw.kind != "IPPool" {
                continue;
            }
            let name = raw.name.clone().unwrap_or_default();
            if !names.insert(name.clone()) {
                continue; // duplicate, reported above
            }
            let checked = parse::<IPPoolSpec>(raw, true).and_then(|spec| {
                validate::check_pool(&name, &spec)
                    .map_err(|p| validate::object_error(&raw.kind, &name, Some(&raw.source), p))
            });
            match checked {
                Ok(mut pool) => {
                    pool.source = Some(raw.source.clone());
                    candidates.push(pool);
                }
                Err(e) => kept.extend(fallback(&name, e, errors)),
            }
        }
        let unchanged = |p: &ValidPool| {
            previous
                .and_then(|m| m.ip_pools.get(&p.name))
                .is_some_and(|q| q.cidr == p.cidr)
        };
        candidates.sort_by(|a, b| (!unchanged(a), &a.name).cmp(&(!unchanged(b), &b.name)));
        // Pools kept from the previous model hold their ranges first.
        let mut accepted: Vec<ValidPool> = kept;
        for pool in candidates {
            let clash = accepted
                .iter()
                .find(|q| overlaps(&q.cidr, &pool.cidr))
                .map(|q| (q.name.clone(), q.cidr));
            match clash {
                None => accepted.push(pool),
                Some((other, cidr)) => {
                    let e = validate::object_error(
                        "IPPool",
                        &pool.name,
                        pool.source.as_ref(),
                        (
                            "spec.cidr".into(),
                            format!("{} overlaps IPPool {other} ({cidr})", pool.cidr),
                        ),
                    );
                    if let Some(prev) = fallback(&pool.name, e, errors) {
                        if !accepted.iter().any(|q| overlaps(&q.cidr, &prev.cidr)) {
                            accepted.push(prev);
                        }
                    }
                }
            }
        }
        self.ip_pools = accepted.into_iter().map(|p| (p.name.clone(), p)).collect();
    }

    /// The effective cluster BGP settings (defaults without a good
    /// `BGPConfiguration default`).
    pub fn bgp_settings(&self) -> BGPConfigurationSpec {
        self.bgp_configuration.clone().unwrap_or_default()
    }

    /// The objects the model was built from.
    pub fn manifests(&self) -> &Manifests {
        &self.manifests
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Arc<SlimPod>> {
        let pods = &self.manifests.pods;
        let i = self
            .pods
            .binary_search_by(|&i| pod_key(pods, i).cmp(&Some((namespace, name))))
            .ok()?;
        let at = usize::try_from(*self.pods.get(i)?).ok()?;
        pods.get(at)
    }

    /// The node's object (its last good version when the current one is
    /// invalid).
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name).map(|n| &*n.node)
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.manifests.secrets.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// The policy compiler's input for `node`. A local pod whose
    /// `status.podIPs` is not written yet (the CNI ADD that gives it its
    /// address is still running) gets its addresses from IPAM
    /// (`local_ips`, keyed by (namespace, name)), so its policy can be
    /// programmed before the ADD returns.
    pub fn policy_snapshot(
        &self,
        node: &str,
        local_ips: &BTreeMap<(String, String), Vec<IpAddr>>,
    ) -> tortie_policy::model::Snapshot {
        let mut snap = self.manifests.policy_snapshot(node);
        for pod in &mut snap.pods {
            if !pod.is_on(node) || !pod.ips.is_empty() {
                continue;
            }
            let key = (pod.namespace.to_string(), pod.name.to_string());
            let Some(ips) = local_ips.get(&key).filter(|ips| !ips.is_empty()) else {
                continue;
            };
            // Copy-on-write: only this snapshot's pod changes, not the
            // datastore's shared one.
            let mut ips = ips.clone();
            ips.sort();
            ips.dedup();
            Arc::make_mut(pod).ips = ips;
        }
        snap
    }
}

/// (namespace, name) of the pod at `i` (None: out of range, sorts first).
fn pod_key(pods: &[Arc<SlimPod>], i: u32) -> Option<(&str, &str)> {
    let p = pods.get(usize::try_from(i).ok()?)?;
    Some((&*p.namespace, &*p.name))
}

fn parse<S: DeserializeOwned>(raw: &RawObject, spec_required: bool) -> Result<S, ObjectError> {
    validate::parse_custom::<S>(raw, spec_required).map(|(_, s)| s)
}

/// Whether two prefixes share any address (one contains the other).
fn overlaps(a: &ipnet::IpNet, b: &ipnet::IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests;
