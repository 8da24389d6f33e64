//! The Kubernetes datastore: list/watch the API server and publish the same
//! [`DatastoreSnapshot`] as the file datastore, so everything downstream
//! (model, routing, policy, CNI) is the same code in both modes.
//!
//! Owns:
//! - one kube-runtime watcher per kind (Nodes, Namespaces, Pods,
//!   NetworkPolicies, Secrets of one namespace, and tortie.io's
//!   BGPConfiguration, BGPPeer, IPPool), each with the watcher's own
//!   exponential backoff, resourceVersion resume and bookmarks;
//! - a reflector [`Cache`] updated by plain synchronous code, which keeps
//!   only the fields the agent uses so a 150,000-pod cluster does not cost
//!   gigabytes: Pods, Nodes and Namespaces are decoded straight into slim
//!   types ([`super::wire`]; the rest of each object is skipped by the
//!   parser), pods are held as [`SlimPod`]s with repeated strings and label
//!   sets interned, and pods and nodes are `Arc`s shared with every
//!   published snapshot (and from there with the model and the policy
//!   snapshot), so there is one copy of each;
//! - the connection health: a lost connection keeps the last snapshot in
//!   force and publishes `connected: false` with `disconnected_since`;
//! - [`KubeWriter`], the two things the agent writes back: a condition on
//!   its Node with the BGP status, and Events for errors on our objects.
//!
//! Secrets: only those in one namespace (the agent's own, `POD_NAMESPACE`,
//! default `tortie-system`) are watched. They are needed for BGP passwords
//! only, and reading every Secret of the cluster on every node would hand
//! each agent all credentials; deploy/rbac.yaml grants a Role there and
//! nothing cluster-wide. A BGPPeer whose `secretKeyRef` names another
//! namespace finds no Secret, and the model reports it.
//!
//! Publishing rules:
//! - nothing but a placeholder (generation 0, `connected: false`) until
//!   every kind has been listed once: a model built from pods without their
//!   policies would open holes;
//!   (the placeholder's `connected`/`errors` do change meanwhile, with
//!   generation still 0: a consumer must not build a model from generation
//!   0, e.g. `rx.wait_for(|s| s.generation > 0)` first);
//! - after that, a change is published at most `debounce` after it arrived
//!   (changes that arrive meanwhile ride along), and every publish (objects
//!   or connection status) has `generation` + 1; an update that only
//!   touches fields we drop publishes nothing;
//! - a relist after a 410 Gone keeps the previous objects until the new
//!   list is complete, then replaces them in one step.
//!
//! Must never: decide what objects mean (the model does), or write to the
//! API anything but the Node condition and Events.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeSpec, NodeStatus, ObjectReference, Pod, Secret,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::wire::{Interner, NamespaceWire, NodeWire, PodWire};
use super::DatastoreSnapshot;
use crate::manifests::{Manifests, RawObject, Source};
use crate::model::ObjectError;
use tortie_policy::model::SlimPod;

/// Annotations with this prefix are kept (pod `tortie.io/ip-addrs`, node
/// `tortie.io/asn`, ...); every other annotation is dropped from the cache.
pub use tortie_policy::model::OUR_ANNOTATION_PREFIX;

/// The API group and version of tortie's resources.
pub const TORTIE_GROUP: &str = "tortie.io";
pub const TORTIE_VERSION: &str = "v1alpha1";

/// The Node condition type the agent maintains (see [`KubeWriter::report_bgp`]).
pub const BGP_CONDITION: &str = "TortieBGPReady";

/// A kind the datastore watches.
#[allow(clippy::upper_case_acronyms)] // the Kubernetes kind names
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Node,
    Namespace,
    Pod,
    NetworkPolicy,
    Secret,
    BGPConfiguration,
    BGPPeer,
    IPPool,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Node,
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
        Kind::Secret,
        Kind::BGPConfiguration,
        Kind::BGPPeer,
        Kind::IPPool,
    ];

    /// The resource's plural name, as in its API path.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Secret => "secrets",
            Kind::BGPConfiguration => "bgpconfigurations",
            Kind::BGPPeer => "bgppeers",
            Kind::IPPool => "ippools",
        }
    }

    fn is_ours(self) -> bool {
        matches!(self, Kind::BGPConfiguration | Kind::BGPPeer | Kind::IPPool)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Secret => "Secret",
            Kind::BGPConfiguration => "BGPConfiguration",
            Kind::BGPPeer => "BGPPeer",
            Kind::IPPool => "IPPool",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The API resource, used for the CRDs and for probes.
    fn api_resource(self) -> ApiResource {
        match self {
            Kind::Node => ApiResource::erase::<Node>(&()),
            Kind::Namespace => ApiResource::erase::<Namespace>(&()),
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::BGPConfiguration | Kind::BGPPeer | Kind::IPPool => {
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(TORTIE_GROUP, TORTIE_VERSION, self.name()),
                    self.plural(),
                )
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// One of tortie's own objects, kept as JSON for the model's validation
/// (the file datastore hands them over the same way, as [`RawObject`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomObject {
    pub kind: Kind,
    pub name: String,
    /// `apiVersion`, `kind`, `metadata` (name, uid, generation, labels) and
    /// `spec`.
    pub value: serde_json::Value,
}

/// A cached object, already slimmed. Boxed so a small kind does not pay
/// for the largest one's inline size; pods and nodes in an `Arc` shared
/// with the published snapshots.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    Node(Arc<Node>),
    Namespace(Box<Namespace>),
    Pod(Arc<SlimPod>),
    NetworkPolicy(Box<NetworkPolicy>),
    Secret(Box<Secret>),
    Custom(Box<CustomObject>),
}

/// (namespace or "", name); a pod's key shares its strings.
pub type ObjKey = (Arc<str>, Arc<str>);

impl Obj {
    fn key(&self) -> ObjKey {
        let meta = match self {
            Obj::Node(o) => &o.metadata,
            Obj::Namespace(o) => &o.metadata,
            Obj::Pod(o) => return (o.namespace.clone(), o.name.clone()),
            Obj::NetworkPolicy(o) => &o.metadata,
            Obj::Secret(o) => &o.metadata,
            Obj::Custom(o) => return (Arc::from(""), Arc::from(o.name.as_str())),
        };
        (
            Arc::from(meta.namespace.as_deref().unwrap_or_default()),
            Arc::from(meta.name.as_deref().unwrap_or_default()),
        )
    }
}

/// Dropping what the agent never reads. Every function keeps: name,
/// namespace, uid, labels and `tortie.io/` annotations, plus the fields
/// named on it; managedFields, other annotations (kubectl's
/// last-applied-configuration is a copy of the whole object), owner
/// references and everything else go.
pub mod slim {
    use super::*;

    pub fn meta(meta: ObjectMeta) -> ObjectMeta {
        let annotations: BTreeMap<String, String> = meta
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with(OUR_ANNOTATION_PREFIX))
            .collect();
        ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            labels: meta.labels.filter(|l| !l.is_empty()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        }
    }

    /// Pods: what [`SlimPod`] holds (the watchers decode pods straight
    /// into [`PodWire`] instead; this is for objects already decoded).
    pub fn pod(pod: Pod) -> SlimPod {
        SlimPod::from_pod(&pod)
    }

    /// Nodes: pod CIDRs and addresses (images, conditions, capacity and
    /// the rest of the status, which the kubelet rewrites every few
    /// seconds, are dropped, so heartbeats publish nothing).
    pub fn node(node: Node) -> Node {
        Node {
            metadata: meta(node.metadata),
            spec: node.spec.map(|s| NodeSpec {
                pod_cidr: s.pod_cidr,
                pod_cidrs: s.pod_cidrs,
                ..NodeSpec::default()
            }),
            status: node.status.map(|s| NodeStatus {
                addresses: s.addresses,
                ..NodeStatus::default()
            }),
        }
    }

    /// Namespaces: labels only (the API server sets
    /// `kubernetes.io/metadata.name`).
    pub fn namespace(ns: Namespace) -> Namespace {
        Namespace {
            metadata: meta(ns.metadata),
            spec: None,
            status: None,
        }
    }

    /// NetworkPolicies: the whole spec.
    pub fn network_policy(p: NetworkPolicy) -> NetworkPolicy {
        NetworkPolicy {
            metadata: meta(p.metadata),
            spec: p.spec,
        }
    }

    /// Secrets: the data (BGP passwords).
    pub fn secret(s: Secret) -> Secret {
        Secret {
            metadata: meta(s.metadata),
            data: s.data,
            type_: s.type_,
            ..Secret::default()
        }
    }

    /// tortie.io objects: `apiVersion`, `kind`, `metadata` and `spec` as
    /// JSON (status, if any, is ours to write, not to read).
    pub fn custom(kind: Kind, obj: DynamicObject) -> CustomObject {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let metadata = meta(ObjectMeta {
            generation: None,
            ..obj.metadata.clone()
        });
        let mut value = serde_json::json!({
            "apiVersion": format!("{TORTIE_GROUP}/{TORTIE_VERSION}"),
            "kind": kind.name(),
            "metadata": metadata,
        });
        if let Some(generation) = obj.metadata.generation {
            value["metadata"]["generation"] = generation.into();
        }
        if let Some(spec) = obj.data.get("spec") {
            value["spec"] = spec.clone();
        }
        CustomObject { kind, name, value }
    }
}

/// One kind's reflector table.
#[derive(Debug, Default)]
struct Table {
    live: BTreeMap<ObjKey, Obj>,
    /// Being refilled by a (re)list: the live table stays in force until
    /// the list is complete.
    relist: Option<BTreeMap<ObjKey, Obj>>,
    synced: bool,
}

impl Table {
    /// Applies one watcher event; true when the live table changed.
    fn apply(&mut self, event: Event<Obj>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => match &mut self.relist {
                Some(buffer) => {
                    buffer.insert(obj.key(), obj);
                    false
                }
                None => self.upsert(obj),
            },
            Event::InitDone => {
                let first = !self.synced;
                self.synced = true;
                match self.relist.take() {
                    Some(buffer) if buffer != self.live => {
                        self.live = buffer;
                        true
                    }
                    _ => first,
                }
            }
            Event::Apply(obj) => self.upsert(obj),
            Event::Delete(obj) => self.live.remove(&obj.key()).is_some(),
        }
    }

    fn upsert(&mut self, obj: Obj) -> bool {
        let key = obj.key();
        if self.live.get(&key) == Some(&obj) {
            return false;
        }
        self.live.insert(key, obj);
        true
    }
}

/// The reflector: every watched kind's objects, slimmed. Pure: fed watcher
/// events, read as [`Manifests`].
#[derive(Debug)]
pub struct Cache {
    tables: BTreeMap<Kind, Table>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            tables: Kind::ALL
                .into_iter()
                .map(|k| (k, Table::default()))
                .collect(),
        }
    }
}

impl Cache {
    /// Applies one event of `kind`; true when what [`Cache::manifests`]
    /// returns changed (or the kind finished its first list).
    pub fn apply(&mut self, kind: Kind, event: Event<Obj>) -> bool {
        self.tables.entry(kind).or_default().apply(event)
    }

    /// Kinds not listed completely yet.
    pub fn unsynced(&self) -> Vec<Kind> {
        self.tables
            .iter()
            .filter(|(_, t)| !t.synced)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Number of cached objects of a kind.
    pub fn len(&self, kind: Kind) -> usize {
        self.tables.get(&kind).map_or(0, |t| t.live.len())
    }

    /// The cached objects as the file datastore would load them, sorted by
    /// namespace and name. tortie.io objects go to `other`, their source
    /// named `kubernetes:PLURAL/NAME`.
    pub fn manifests(&self) -> Manifests {
        let mut m = Manifests::default();
        // Exact capacities: a Vec grown by doubling would carry up to half
        // as much again, unused, in every snapshot.
        let n = |k: Kind| self.len(k);
        m.nodes.reserve_exact(n(Kind::Node));
        m.namespaces.reserve_exact(n(Kind::Namespace));
        m.pods.reserve_exact(n(Kind::Pod));
        m.network_policies.reserve_exact(n(Kind::NetworkPolicy));
        m.secrets.reserve_exact(n(Kind::Secret));
        m.other
            .reserve_exact(n(Kind::BGPConfiguration) + n(Kind::BGPPeer) + n(Kind::IPPool));
        for table in self.tables.values() {
            for obj in table.live.values() {
                match obj {
                    Obj::Node(o) => m.nodes.push(o.clone()),
                    Obj::Namespace(o) => m.namespaces.push((**o).clone()),
                    Obj::Pod(o) => m.pods.push(o.clone()),
                    Obj::NetworkPolicy(o) => m.network_policies.push((**o).clone()),
                    Obj::Secret(o) => m.secrets.push((**o).clone()),
                    Obj::Custom(o) => m.other.push(RawObject {
                        source: Source {
                            file: PathBuf::from(format!("kubernetes:{}/{}", o.kind, o.name)),
                            document: 1,
                        },
                        api_version: format!("{TORTIE_GROUP}/{TORTIE_VERSION}"),
                        kind: o.kind.name().to_string(),
                        namespace: None,
                        name: Some(o.name.clone()),
                        value: o.value.clone(),
                    }),
                }
            }
        }
        m
    }
}

/// The connection's health, from watcher errors and probes. Pure: time
/// comes in as an argument.
#[derive(Debug)]
pub struct Health {
    failing: BTreeMap<Kind, String>,
    disconnected_since: Option<SystemTime>,
}

impl Health {
    /// Not connected yet, since `now`.
    pub fn new(now: SystemTime) -> Self {
        Health {
            failing: BTreeMap::new(),
            disconnected_since: Some(now),
        }
    }

    pub fn failed(&mut self, kind: Kind, error: String, now: SystemTime) {
        self.failing.insert(kind, error);
        self.disconnected_since.get_or_insert(now);
    }

    pub fn succeeded(&mut self, kind: Kind) {
        self.failing.remove(&kind);
    }

    pub fn failing(&self) -> Vec<Kind> {
        self.failing.keys().copied().collect()
    }

    /// (connected, disconnected_since, errors) given the cache's sync
    /// state: connected once every kind is listed and none is failing.
    pub fn status(
        &mut self,
        cache: &Cache,
        now: SystemTime,
    ) -> (bool, Option<SystemTime>, Vec<String>) {
        let unsynced = cache.unsynced();
        let connected = unsynced.is_empty() && self.failing.is_empty();
        if connected {
            self.disconnected_since = None;
        } else {
            self.disconnected_since.get_or_insert(now);
        }
        let mut errors: Vec<String> = self
            .failing
            .iter()
            .map(|(kind, e)| format!("kubernetes datastore: watching {kind}: {e}"))
            .collect();
        let waiting: Vec<Kind> = unsynced
            .into_iter()
            .filter(|k| !self.failing.contains_key(k))
            .collect();
        if !waiting.is_empty() {
            let names: Vec<&str> = waiting.iter().map(|k| k.plural()).collect();
            errors.push(format!(
                "kubernetes datastore: waiting for the first list of {}",
                names.join(", ")
            ));
        }
        (connected, self.disconnected_since, errors)
    }
}

/// How the datastore runs.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// The namespace whose Secrets are watched (BGP passwords).
    pub secrets_namespace: String,
    /// Longest delay between a change arriving and its snapshot.
    pub debounce: Duration,
    /// While a kind is failing, how often a one-item list checks whether
    /// the API answers again.
    pub probe_interval: Duration,
    /// Objects per page of a list.
    pub page_size: u32,
}

impl KubeSettings {
    /// Defaults; the Secrets namespace from `POD_NAMESPACE` (set by the
    /// DaemonSet from the downward API), else `tortie-system`.
    pub fn from_env() -> Self {
        KubeSettings {
            secrets_namespace: std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "tortie-system".to_string()),
            ..KubeSettings::default()
        }
    }
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            secrets_namespace: "tortie-system".to_string(),
            debounce: Duration::from_millis(200),
            probe_interval: Duration::from_secs(2),
            page_size: 500,
        }
    }
}

/// A client from `kubeconfig`, or else from the environment: in-cluster
/// (service account token, `KUBERNETES_SERVICE_HOST`), then `KUBECONFIG`
/// and `~/.kube/config`. Does not contact the server.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// Starts the Kubernetes datastore (settings from the environment, see
/// [`KubeSettings::from_env`]). The receiver holds a placeholder
/// (generation 0, not connected) until every kind has been listed once;
/// the task stops when the receiver is dropped. Needs a tokio runtime.
pub async fn spawn_kubernetes(
    kubeconfig: Option<PathBuf>,
) -> anyhow::Result<watch::Receiver<Arc<DatastoreSnapshot>>> {
    let client = connect(kubeconfig.as_deref()).await?;
    Ok(spawn_with_client(client, KubeSettings::from_env()))
}

/// [`spawn_kubernetes`] with a client and settings of the caller's (the
/// daemon shares the client with [`KubeWriter`]; tests shorten timers).
pub fn spawn_with_client(
    client: Client,
    settings: KubeSettings,
) -> watch::Receiver<Arc<DatastoreSnapshot>> {
    let mut health = Health::new(SystemTime::now());
    let cache = Cache::default();
    let (connected, disconnected_since, errors) = health.status(&cache, SystemTime::now());
    let (tx, rx) = watch::channel(Arc::new(DatastoreSnapshot {
        manifests: Manifests::default(),
        connected,
        disconnected_since,
        errors,
        generation: 0,
    }));
    tokio::spawn(run(client, settings, tx, cache, health));
    rx
}

/// What a watcher stream yields, tagged with its kind.
struct Msg {
    kind: Kind,
    result: Result<Event<Obj>, String>,
}

fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    slim: impl Fn(K) -> Obj + Send + 'static,
) -> BoxStream<'static, Msg>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(move |r| Msg {
            kind,
            result: match r {
                Ok(ev) => Ok(map_event(ev, &slim)),
                Err(e) => Err(describe_watch_error(kind, &e)),
            },
        })
        .boxed()
}

use kube::runtime::watcher::watcher;

fn map_event<K>(ev: Event<K>, f: &impl Fn(K) -> Obj) -> Event<Obj> {
    match ev {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// The error as the operator needs it: with a hint where one helps.
fn describe_watch_error(kind: Kind, e: &watcher::Error) -> String {
    let text = e.to_string();
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match status {
        Some(404) if kind.is_ours() => {
            format!("{text} (are tortie's CRDs installed? kubectl apply -k deploy/)")
        }
        Some(403) => format!("{text} (check the tortie ClusterRole in deploy/rbac.yaml)"),
        _ => text,
    }
}

fn streams(client: &Client, settings: &KubeSettings) -> SelectAll<BoxStream<'static, Msg>> {
    let config = watcher::Config::default().page_size(settings.page_size);
    let mut all = SelectAll::new();
    all.push(watch_kind(
        Api::<NodeWire>::all(client.clone()),
        config.clone(),
        Kind::Node,
        |o| Obj::Node(Arc::new(o.into_node())),
    ));
    all.push(watch_kind(
        Api::<NamespaceWire>::all(client.clone()),
        config.clone(),
        Kind::Namespace,
        |o| Obj::Namespace(Box::new(o.into_namespace())),
    ));
    // Only the pod stream interns; the lock is never contended (the
    // streams are polled by one task).
    let interner = Arc::new(Mutex::new(Interner::default()));
    all.push(watch_kind(
        Api::<PodWire>::all(client.clone()),
        config.clone(),
        Kind::Pod,
        move |o| {
            let mut interner = interner.lock().unwrap_or_else(|e| e.into_inner());
            Obj::Pod(Arc::new(o.into_slim(&mut interner)))
        },
    ));
    all.push(watch_kind(
        Api::<NetworkPolicy>::all(client.clone()),
        config.clone(),
        Kind::NetworkPolicy,
        |o| Obj::NetworkPolicy(Box::new(slim::network_policy(o))),
    ));
    all.push(watch_kind(
        Api::<Secret>::namespaced(client.clone(), &settings.secrets_namespace),
        config.clone(),
        Kind::Secret,
        |o| Obj::Secret(Box::new(slim::secret(o))),
    ));
    for kind in [Kind::BGPConfiguration, Kind::BGPPeer, Kind::IPPool] {
        all.push(watch_kind(
            Api::<DynamicObject>::all_with(client.clone(), &kind.api_resource()),
            config.clone(),
            kind,
            move |o| Obj::Custom(Box::new(slim::custom(kind, o))),
        ));
    }
    all
}

/// A one-item list: does the API answer for this kind again?
async fn probe(client: Client, kind: Kind, secrets_namespace: String) -> Result<(), String> {
    let ar = kind.api_resource();
    let api: Api<DynamicObject> = if kind == Kind::Secret {
        Api::namespaced_with(client, &secrets_namespace, &ar)
    } else {
        Api::all_with(client, &ar)
    };
    api.list(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn run(
    client: Client,
    settings: KubeSettings,
    tx: watch::Sender<Arc<DatastoreSnapshot>>,
    mut cache: Cache,
    mut health: Health,
) {
    let mut watchers = streams(&client, &settings);
    let (probe_tx, mut probe_rx) = mpsc::channel::<(Kind, Result<(), String>)>(16);
    let mut probing = false;
    let mut probe_tick = tokio::time::interval(settings.probe_interval);
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the first unpublished change arrived.
    let mut dirty_since: Option<Instant> = None;
    let mut generation = 0u64;
    loop {
        let deadline = dirty_since.map(|t| t + settings.debounce);
        tokio::select! {
            msg = watchers.next() => {
                let Some(Msg { kind, result }) = msg else { break };
                match result {
                    Ok(event) => {
                        health.succeeded(kind);
                        if cache.apply(kind, event) {
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(kind = %kind, error = %e, "kubernetes watch failed; keeping the last objects");
                        health.failed(kind, e, SystemTime::now());
                    }
                }
            }
            Some((kind, result)) = probe_rx.recv() => {
                if result.is_ok() {
                    health.succeeded(kind);
                }
                probing = !probe_rx.is_empty();
            }
            _ = probe_tick.tick() => {
                let failing = health.failing();
                if !failing.is_empty() && !probing {
                    probing = true;
                    let (client, ns, out) = (client.clone(), settings.secrets_namespace.clone(), probe_tx.clone());
                    tokio::spawn(async move {
                        for kind in failing {
                            let result = probe(client.clone(), kind, ns.clone()).await;
                            if out.send((kind, result)).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
            _ = sleep_until_opt(deadline) => {}
        }
        if tx.is_closed() {
            break;
        }
        let now = SystemTime::now();
        let (connected, disconnected_since, errors) = health.status(&cache, now);
        let due = deadline.is_some_and(|d| Instant::now() >= d);
        let publish_objects = due && cache.unsynced().is_empty();
        let current = tx.borrow().clone();
        let status_changed = current.connected != connected
            || current.disconnected_since != disconnected_since
            || current.errors != errors;
        if !publish_objects && !status_changed {
            continue;
        }
        let manifests = if publish_objects {
            dirty_since = None;
            cache.manifests()
        } else {
            current.manifests.clone()
        };
        // Every publish after the first full list counts (consumers rebuild
        // on each); before it, only the placeholder's status changes.
        if publish_objects || current.generation > 0 {
            generation += 1;
        }
        if status_changed {
            tracing::info!(connected, errors = ?errors, "kubernetes datastore status");
        }
        tx.send_replace(Arc::new(DatastoreSnapshot {
            manifests,
            connected,
            disconnected_since,
            errors,
            generation,
        }));
    }
    tracing::debug!("kubernetes datastore stopped");
}

/// A BGP session as the Node condition reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub address: String,
    /// RFC 4271 state name (`Established`, `Active`, ...).
    pub state: String,
    pub last_error: Option<String>,
}

/// Who an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

impl ObjectRef {
    /// One of tortie.io's cluster-scoped objects.
    pub fn tortie(kind: &str, name: &str) -> Self {
        ObjectRef {
            api_version: format!("{TORTIE_GROUP}/{TORTIE_VERSION}"),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: None,
        }
    }

    fn to_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            namespace: self.namespace.clone(),
            ..ObjectReference::default()
        }
    }
}

/// The object a model error is about: tortie.io's kinds and Nodes get
/// Events; other kinds (and errors without a name) do not.
pub fn object_of_error(error: &ObjectError) -> Option<ObjectRef> {
    let kind = Kind::from_name(&error.kind)?;
    if error.name.is_empty() {
        return None;
    }
    match kind {
        Kind::BGPConfiguration | Kind::BGPPeer | Kind::IPPool => {
            Some(ObjectRef::tortie(kind.name(), &error.name))
        }
        Kind::Node => Some(ObjectRef {
            api_version: "v1".to_string(),
            kind: "Node".to_string(),
            name: error.name.clone(),
            namespace: None,
        }),
        _ => None,
    }
}

/// An Event's note for a model error: the field and the problem (the
/// object is the Event's subject already).
pub fn event_note(error: &ObjectError) -> String {
    let mut note = if error.field.is_empty() {
        error.problem.clone()
    } else {
        format!("{}: {}", error.field, error.problem)
    };
    if error.kept_previous {
        note.push_str(" (the previous version stays in force)");
    }
    note
}

/// The condition's status, reason and message for these sessions: True
/// when every configured session is Established (or none is configured).
pub fn bgp_condition(peers: &[PeerReport]) -> (bool, &'static str, String) {
    let up = peers.iter().filter(|p| p.state == "Established").count();
    if peers.is_empty() {
        return (true, "NoPeers", "no BGP sessions configured".to_string());
    }
    let mut message = format!("{up}/{} BGP sessions Established", peers.len());
    for p in peers.iter().filter(|p| p.state != "Established") {
        message.push_str(&format!("; {} {}", p.address, p.state));
        if let Some(e) = &p.last_error {
            message.push_str(&format!(": {e}"));
        }
    }
    // The API server caps condition messages; keep well below.
    if message.len() > 1024 {
        let mut cut = 1021;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    if up == peers.len() {
        (true, "AllSessionsEstablished", message)
    } else {
        (false, "SessionsDown", message)
    }
}

/// The strategic-merge patch of `nodes/NAME/status` that sets the
/// [`BGP_CONDITION`] (conditions merge by `type`, so the kubelet's own
/// conditions stay).
pub fn bgp_condition_patch(
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    transitioned: bool,
    last_transition: Timestamp,
) -> serde_json::Value {
    let transition = if transitioned { now } else { last_transition };
    serde_json::json!({
        "status": {
            "conditions": [{
                "type": BGP_CONDITION,
                "status": if status { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now.to_string(),
                "lastTransitionTime": transition.to_string(),
            }]
        }
    })
}

/// The last condition written: (status, reason, message, transition time).
type WrittenCondition = (bool, String, String, Timestamp);

/// Writes back what users look for: the BGP condition on the agent's Node
/// and Events on our objects. Cheap to clone; every method is one API call
/// at most and returns its error for the caller to log (a failed write
/// changes nothing in the dataplane).
#[derive(Clone)]
pub struct KubeWriter {
    client: Client,
    node: String,
    recorder: Recorder,
    last: Arc<Mutex<Option<WrittenCondition>>>,
    /// Model errors already turned into Events.
    reported: Arc<Mutex<BTreeSet<String>>>,
}

impl fmt::Debug for KubeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeWriter")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl KubeWriter {
    /// The writer of the agent on `node`; Events name `tortie-agent` on
    /// that node as their reporter.
    pub fn new(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "tortie-agent".to_string(),
            instance: Some(node.to_string()),
        };
        KubeWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node: node.to_string(),
            last: Arc::default(),
            reported: Arc::default(),
        }
    }

    /// Sets the `TortieBGPReady` condition on our Node from the sessions'
    /// states. Call it whenever a session changes state (and now and then
    /// as a heartbeat); an unchanged condition is not written again unless
    /// `heartbeat` is set.
    pub async fn report_bgp(
        &self,
        peers: &[PeerReport],
        heartbeat: bool,
    ) -> Result<(), kube::Error> {
        let (status, reason, message) = bgp_condition(peers);
        let now = Timestamp::now();
        let (write, transitioned, last_transition) = {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            match &*last {
                Some((s, r, m, t)) => {
                    let same = *s == status && r == reason && *m == message;
                    (!same || heartbeat, *s != status, *t)
                }
                None => (true, true, now),
            }
        };
        if !write {
            return Ok(());
        }
        let patch =
            bgp_condition_patch(status, reason, &message, now, transitioned, last_transition);
        Api::<Node>::all(self.client.clone())
            .patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await?;
        let transition = if transitioned { now } else { last_transition };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((status, reason.to_string(), message, transition));
        Ok(())
    }

    /// A Warning Event on `object` (`kubectl describe` shows it). Repeats
    /// within a few minutes are folded into one Event with a count.
    pub async fn warn(
        &self,
        object: &ObjectRef,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        self.publish(object, EventType::Warning, reason, note).await
    }

    async fn publish(
        &self,
        object: &ObjectRef,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let note: String = note.chars().take(1000).collect();
        self.recorder
            .publish(
                &KubeEvent {
                    type_,
                    reason: reason.to_string(),
                    note: Some(note),
                    action: "Validate".to_string(),
                    secondary: None,
                },
                &object.to_reference(),
            )
            .await
    }

    /// Warning Events (reason `InvalidObject`) for the model's errors
    /// (`Model::object_errors`) about tortie.io objects and Nodes, each
    /// once per agent run (and again after it was fixed and broke anew);
    /// call it after every model build. Returns the errors of the writes
    /// that failed (they are tried again on the next call).
    pub async fn report_object_errors(&self, errors: &[ObjectError]) -> Vec<kube::Error> {
        let current: BTreeSet<String> = errors.iter().map(ToString::to_string).collect();
        // Forget fixed errors, so a relapse is reported again.
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|e| current.contains(e));
        let mut failures = Vec::new();
        for error in errors {
            let Some(object) = object_of_error(error) else {
                continue;
            };
            let key = error.to_string();
            let new = self
                .reported
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
            if !new {
                continue;
            }
            if let Err(e) = self
                .warn(&object, "InvalidObject", &event_note(error))
                .await
            {
                self.reported
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                failures.push(e);
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, NodeAddress, PodIP, PodSpec, PodStatus,
    };

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            resource_version: Some("7".into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            annotations: Some(
                [
                    (
                        "tortie.io/ip-addrs".to_string(),
                        "[\"10.244.1.9\"]".to_string(),
                    ),
                    (
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        "{...}".to_string(),
                    ),
                ]
                .into(),
            ),
            managed_fields: Some(vec![Default::default()]),
            ..ObjectMeta::default()
        }
    }

    fn pod(name: &str, ip: &str) -> Pod {
        Pod {
            metadata: meta(Some("x"), name),
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![
                    Container {
                        name: "web".into(),
                        image: Some("nginx".into()),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: 80,
                            ..ContainerPort::default()
                        }]),
                        ..Container::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        image: Some("envoy".into()),
                        ..Container::default()
                    },
                ],
                service_account_name: Some("default".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                host_ip: Some("192.0.2.11".into()),
                ..PodStatus::default()
            }),
        }
    }

    fn slim_pod(p: Pod) -> Obj {
        Obj::Pod(Arc::new(slim::pod(p)))
    }

    fn apply_pod(p: Pod) -> Event<Obj> {
        Event::Apply(slim_pod(p))
    }

    #[test]
    fn slim_pod_keeps_what_policy_and_cni_read_and_drops_the_rest() {
        let p = slim::pod(pod("a", "10.244.1.9"));
        assert_eq!((&*p.namespace, &*p.name), ("x", "a"));
        assert_eq!(
            p.annotations.keys().collect::<Vec<_>>(),
            vec!["tortie.io/ip-addrs"]
        );
        assert_eq!(p.labels["app"], "web");
        assert!(p.is_on("n1"));
        assert_eq!(
            p.named_ports.len(),
            1,
            "the container without ports adds none"
        );
        assert_eq!(
            (&*p.named_ports[0].name, p.named_ports[0].port),
            ("http", 80)
        );
        assert_eq!(p.phase.as_deref(), Some("Running"));
        assert_eq!(
            tortie_policy::model::pod_ips(&p),
            vec!["10.244.1.9".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn snapshots_share_the_cached_pods() {
        let mut cache = Cache::default();
        cache.apply(Kind::Pod, apply_pod(pod("a", "10.244.1.9")));
        let (m1, m2) = (cache.manifests(), cache.manifests());
        assert!(Arc::ptr_eq(&m1.pods[0], &m2.pods[0]));
    }

    #[test]
    fn slim_node_drops_status_noise_so_heartbeats_change_nothing() {
        let node = |heartbeat: &str| Node {
            metadata: meta(None, "n1"),
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec!["10.244.1.0/24".into()]),
                provider_id: Some("metal://1".into()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.0.2.11".into(),
                }]),
                conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    message: Some(heartbeat.into()),
                    ..Default::default()
                }]),
                ..NodeStatus::default()
            }),
        };
        let mut cache = Cache::default();
        let ev = |n: Node| Event::Apply(Obj::Node(Arc::new(slim::node(n))));
        assert!(cache.apply(Kind::Node, ev(node("t1"))));
        assert!(
            !cache.apply(Kind::Node, ev(node("t2"))),
            "a heartbeat is no change"
        );
        let m = cache.manifests();
        assert_eq!(
            m.nodes[0]
                .spec
                .as_ref()
                .unwrap()
                .pod_cidrs
                .as_ref()
                .unwrap()[0],
            "10.244.1.0/24"
        );
        assert!(m.nodes[0].spec.as_ref().unwrap().provider_id.is_none());
        assert!(m.nodes[0].status.as_ref().unwrap().conditions.is_none());
    }

    #[test]
    fn custom_objects_keep_spec_and_name_as_raw_objects() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "tortie.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "tor", "resourceVersion": "9", "generation": 2,
                         "managedFields": [{}]},
            "spec": {"peerIP": "192.0.2.1", "asNumber": 65001},
            "status": {"x": 1}
        }))
        .unwrap();
        let mut cache = Cache::default();
        cache.apply(
            Kind::BGPPeer,
            Event::Apply(Obj::Custom(Box::new(slim::custom(Kind::BGPPeer, obj)))),
        );
        let m = cache.manifests();
        let raw = &m.other[0];
        assert_eq!(
            (raw.kind.as_str(), raw.name.as_deref()),
            ("BGPPeer", Some("tor"))
        );
        assert_eq!(raw.api_version, "tortie.io/v1alpha1");
        assert_eq!(raw.value["spec"]["peerIP"], "192.0.2.1");
        assert_eq!(raw.value["metadata"]["generation"], 2);
        assert!(raw.value.get("status").is_none());
        assert!(raw.value["metadata"].get("managedFields").is_none());
        assert_eq!(raw.source.to_string(), "kubernetes:bgppeers/tor document 1");
    }

    #[test]
    fn a_relist_keeps_the_old_objects_until_it_is_complete() {
        let mut cache = Cache::default();
        let init = |c: &mut Cache| c.apply(Kind::Pod, Event::Init);
        init(&mut cache);
        let ia = |p: Pod| Event::InitApply(slim_pod(p));
        assert!(!cache.apply(Kind::Pod, ia(pod("a", "10.244.1.1"))));
        assert_eq!(cache.len(Kind::Pod), 0, "nothing live before InitDone");
        assert!(
            cache.apply(Kind::Pod, Event::InitDone),
            "first sync counts as a change"
        );
        assert!(cache.apply(Kind::Pod, apply_pod(pod("b", "10.244.1.2"))));
        assert_eq!(cache.len(Kind::Pod), 2);
        // 410 Gone: relist; meanwhile b was deleted and c added.
        init(&mut cache);
        cache.apply(Kind::Pod, ia(pod("a", "10.244.1.1")));
        cache.apply(Kind::Pod, ia(pod("c", "10.244.1.3")));
        assert_eq!(cache.len(Kind::Pod), 2);
        assert!(cache.manifests().pods.iter().any(|p| &*p.name == "b"));
        assert!(cache.apply(Kind::Pod, Event::InitDone));
        let names: Vec<_> = cache
            .manifests()
            .pods
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(names, vec!["a", "c"]);
        // A relist with the same content is no change.
        init(&mut cache);
        cache.apply(Kind::Pod, ia(pod("a", "10.244.1.1")));
        cache.apply(Kind::Pod, ia(pod("c", "10.244.1.3")));
        assert!(!cache.apply(Kind::Pod, Event::InitDone));
        assert!(cache.apply(Kind::Pod, Event::Delete(slim_pod(pod("a", "")))));
        assert_eq!(cache.len(Kind::Pod), 1);
    }

    #[test]
    fn health_is_connected_only_when_all_kinds_are_listed_and_none_fails() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let t1 = t0 + Duration::from_secs(5);
        let mut cache = Cache::default();
        let mut health = Health::new(t0);
        let (c, since, errors) = health.status(&cache, t0);
        assert!(!c);
        assert_eq!(since, Some(t0));
        assert!(
            errors[0].contains("waiting for the first list of nodes, namespaces, pods"),
            "{errors:?}"
        );
        for k in Kind::ALL {
            cache.apply(k, Event::Init);
            cache.apply(k, Event::InitDone);
        }
        assert_eq!(health.status(&cache, t0), (true, None, vec![]));
        health.failed(Kind::Pod, "connection refused".into(), t1);
        let (c, since, errors) = health.status(&cache, t1 + Duration::from_secs(1));
        assert!(!c);
        assert_eq!(since, Some(t1));
        assert_eq!(
            errors,
            vec!["kubernetes datastore: watching pods: connection refused"]
        );
        health.succeeded(Kind::Pod);
        assert_eq!(health.status(&cache, t1), (true, None, vec![]));
    }

    #[test]
    fn model_errors_about_our_objects_and_nodes_name_them() {
        let err = |kind: &str, name: &str, field: &str| ObjectError {
            kind: kind.into(),
            name: name.into(),
            field: field.into(),
            problem: "is not an IP address".into(),
            source: None,
            kept_previous: true,
        };
        let peer = err("BGPPeer", "tor-a", "spec.peerIP");
        assert_eq!(
            object_of_error(&peer),
            Some(ObjectRef::tortie("BGPPeer", "tor-a"))
        );
        assert_eq!(
            event_note(&peer),
            "spec.peerIP: is not an IP address (the previous version stays in force)"
        );
        assert_eq!(
            object_of_error(&err("Node", "n1", "")).map(|o| o.api_version),
            Some("v1".into())
        );
        assert_eq!(object_of_error(&err("Pod", "a", "")), None);
        assert_eq!(object_of_error(&err("IPPool", "", "")), None);
    }

    #[test]
    fn bgp_condition_says_which_sessions_are_down() {
        let peer = |a: &str, s: &str, e: Option<&str>| PeerReport {
            address: a.into(),
            state: s.into(),
            last_error: e.map(Into::into),
        };
        assert_eq!(bgp_condition(&[]).1, "NoPeers");
        let (ok, reason, msg) = bgp_condition(&[
            peer("192.0.2.1", "Established", None),
            peer("192.0.2.2", "Active", Some("connection refused")),
        ]);
        assert!(!ok);
        assert_eq!(reason, "SessionsDown");
        assert_eq!(
            msg,
            "1/2 BGP sessions Established; 192.0.2.2 Active: connection refused"
        );
        let long = vec![peer("192.0.2.2", "Idle", Some(&"x".repeat(5000)))];
        assert!(bgp_condition(&long).2.len() <= 1024);
        let t: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let t0: Timestamp = "2026-11-27T09:00:00Z".parse().unwrap();
        let patch = bgp_condition_patch(true, "AllSessionsEstablished", "2/2", t, false, t0);
        let c = &patch["status"]["conditions"][0];
        assert_eq!(c["type"], BGP_CONDITION);
        assert_eq!(c["status"], "True");
        assert_eq!(c["lastHeartbeatTime"], "2026-11-27T10:00:00Z");
        assert_eq!(c["lastTransitionTime"], "2026-11-27T09:00:00Z");
    }
}
