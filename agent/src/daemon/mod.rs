//! `tortie agent`: the node agent. Joins the datastore, the model, the
//! BGP speaker, the FIB, the policy engine, natOutgoing, the CNI server,
//! status and metrics.
//!
//! ```text
//!  datastore task ──snapshots (coalesced)──► main loop ── Model::build
//!     │                                       ├─ node_routing ─► Routing (speaker) ─► FIB service (kernel routes)
//!     │                                       │                  FIB pools/underlay, natOutgoing (nat table)
//!     │                                       └─ kick ─► policy worker ─► Applier (ipset + iptables)
//!  RUN_DIR/agent.sock ─┬─ {"get":"status"} ─► status document
//!                      └─ {"cni":{...}}   ─► CNI server ─► CniContext: FIB host route + policy round
//!  --metrics-addr ─► /metrics /healthz /readyz
//! ```
//!
//! Changes apply without a restart: the speaker is reconfigured in place
//! (sessions whose settings did not change stay up), the FIB gets the new
//! pools, the policy worker re-applies. A model that fails to build a
//! node's routing (no Node object yet, no address) keeps the running
//! config and shows the reason in `tortie status`.
//!
//! SIGTERM / SIGINT: the FIB stops first (routes stay in the kernel), the
//! speaker's sockets are closed without a NOTIFICATION and the
//! graceful-restart marker is kept, so peers that negotiated graceful
//! restart keep forwarding to this node's pods until it is back; the
//! iptables rules stay as they are. The socket file is removed.

pub mod cni_ctx;
pub mod kube_report;
pub mod metrics;
pub mod nat;
pub mod policy;
pub mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tortie_bgp::runtime;
use tortie_policy::apply::{Applier, Dataplane, ProcessRunner};
use tortie_policy::backend::{self, Backend};
use tortie_policy::Family;
use tracing::{error, info, warn};

use crate::bgp_cmd::{self, LogFormat};
use crate::cni::CniServer;
use crate::crd::Encapsulation;
use crate::datastore::{DatastoreSnapshot, SnapshotReceiver};
use crate::fib::encap::{Mode, PoolEncap};
use crate::fib::service::{FibHandle, FibSettings};
use crate::fib::sync::{watch_sync, SyncDecision, NOT_RESTARTING_SYNC_BOUND};
use crate::model::{Model, NodeRouting};
use crate::routing::Routing;
use crate::status_client;

use self::metrics::{Metrics, ReadyInputs};
use self::nat::{NatApplier, NatPool};
use self::policy::PolicyClient;
use self::report::AgentView;

/// Arguments of `tortie agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// This node's name (its Node object).
    #[arg(long)]
    pub node_name: String,
    /// Where the cluster's objects come from: `kubernetes` (the API
    /// server, in-cluster or KUBECONFIG) or `file:DIR` (a directory of
    /// manifests, watched).
    #[arg(long, value_parser = parse_datastore)]
    pub datastore: DatastoreArg,
    /// IPAM state and the graceful-restart marker.
    #[arg(long, default_value = "/var/lib/tortie")]
    pub state_dir: PathBuf,
    /// Where `agent.sock` goes.
    #[arg(long, default_value = "/run/tortie")]
    pub run_dir: PathBuf,
    /// Serve /metrics, /healthz and /readyz on this address (off when
    /// absent).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// iptables backend; default: detected like kubelet does.
    #[arg(long, value_parser = parse_backend)]
    pub iptables_backend: Option<Backend>,
}

/// `--datastore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreArg {
    Kubernetes,
    File(PathBuf),
}

/// Parses `kubernetes` or `file:DIR`.
pub fn parse_datastore(s: &str) -> Result<DatastoreArg, String> {
    if s == "kubernetes" {
        return Ok(DatastoreArg::Kubernetes);
    }
    match s.strip_prefix("file:") {
        Some(dir) if !dir.is_empty() => Ok(DatastoreArg::File(PathBuf::from(dir))),
        _ => Err(format!(
            "{s:?} is not a datastore; use `kubernetes` or `file:DIR`"
        )),
    }
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse::<Backend>().map_err(|e| e.to_string())
}

/// How often the main loop ticks (health, retries, periodic work).
const TICK: Duration = Duration::from_secs(1);
/// A burst of datastore changes within this window is one update.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// natOutgoing is re-checked (jump present, sets and rules) this often.
const NAT_RESYNC: Duration = Duration::from_secs(30);
/// A routing start that failed (port in use ...) is retried this often.
const ROUTING_RETRY: Duration = Duration::from_secs(5);
/// IPAM garbage collection period.
const IPAM_GC: Duration = Duration::from_secs(60);

/// Runs the agent until SIGTERM / SIGINT.
pub fn run(args: Args) -> Result<()> {
    bgp_cmd::init_logging(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(run_async(args));
    // Blocking work (an iptables-restore) must not hold the exit up.
    rt.shutdown_timeout(Duration::from_secs(3));
    result
}

/// State shared by the loops, the socket and the metrics server.
#[derive(Debug)]
pub struct Agent {
    pub node: String,
    pub state_dir: PathBuf,
    pub metrics: Metrics,
    pub fib: FibHandle,
    pub policy: PolicyClient,
    model: RwLock<Option<Arc<Model>>>,
    /// Bumped whenever a new model is in place (CNI ADDs wait on it for a
    /// Pod the datastore has just published).
    model_generation: tokio::sync::watch::Sender<u64>,
    routing: RwLock<Option<runtime::Handle>>,
    view: Mutex<AgentView>,
    ready: Mutex<ReadyInputs>,
    /// Last tick per loop, for /healthz.
    ticks: Mutex<BTreeMap<&'static str, Instant>>,
    /// The node's pod CIDRs (from its Node object).
    pod_cidrs: RwLock<Vec<ipnet::IpNet>>,
}

impl Agent {
    /// The current model (None before the first snapshot).
    pub fn model(&self) -> Option<Arc<Model>> {
        self.model.read().ok().and_then(|m| m.clone())
    }

    /// Waits up to `timeout` until the model has pod `namespace/name`
    /// (a kubelet creates the Pod object just before the CNI ADD; the
    /// datastore and the model may be a few milliseconds behind).
    pub async fn wait_for_pod(&self, namespace: &str, name: &str, timeout: Duration) -> bool {
        let mut rx = self.model_generation.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self
                .model()
                .is_some_and(|m| m.pod(namespace, name).is_some())
            {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// The node's pod CIDRs.
    pub fn pod_cidrs(&self) -> Vec<ipnet::IpNet> {
        self.pod_cidrs.read().map(|c| c.clone()).unwrap_or_default()
    }

    fn tick(&self, loop_name: &'static str) {
        if let Ok(mut t) = self.ticks.lock() {
            t.insert(loop_name, Instant::now());
        }
    }

    fn with_view(&self, f: impl FnOnce(&mut AgentView)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
    }

    fn set_ready(&self, f: impl FnOnce(&mut ReadyInputs)) {
        if let Ok(mut r) = self.ready.lock() {
            f(&mut r);
        }
    }

    fn ready_inputs(&self) -> ReadyInputs {
        let mut r = self.ready.lock().map(|r| *r).unwrap_or_default();
        // Routes count as synced once the FIB has taken over the kernel
        // (the speaker synced, stale routes dealt with).
        r.routes_synced = r.routes_synced && self.fib.stats().synced;
        r
    }

    /// The status document now (asks the speaker when it runs).
    pub async fn status(&self, routes: bool) -> Result<serde_json::Value> {
        let handle = self.routing.read().ok().and_then(|h| h.clone());
        let report = match handle {
            Some(h) => Some(
                h.status(routes)
                    .await
                    .map_err(|e| anyhow!("the BGP speaker: {e}"))?,
            ),
            None => None,
        };
        let mut view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        let fib = self.fib.stats().route_status();
        view.routes_installed = fib.installed;
        view.routes_failed = fib.failed;
        for e in &fib.errors {
            view.routing_errors.push(format!("FIB: {e}"));
        }
        view.ready = metrics::readiness(&self.ready_inputs()).is_ok();
        let mut doc = report::status(&view, report.as_ref());
        doc.routes.mtu = fib.mtu;
        doc.routes.encapsulation = fib.encapsulation;
        let mut v = serde_json::to_value(doc)?;
        if routes {
            if let (Some(obj), Some(r)) = (v.as_object_mut(), report.as_ref()) {
                obj.insert(
                    "rib".into(),
                    serde_json::to_value(status_client::rib_document(r))?,
                );
            }
        }
        Ok(v)
    }

    /// The /metrics body.
    pub async fn metrics_text(&self) -> String {
        let status = match self.status(false).await {
            Ok(v) => serde_json::from_value(v).unwrap_or_default(),
            Err(_) => crate::status::Status::default(),
        };
        metrics::render(&self.metrics.snapshot(), &report::gauges(&status))
    }

    /// /healthz: every loop ticks and the FIB runs.
    pub fn health(&self) -> Result<(), String> {
        let now = Instant::now();
        let ages: Vec<(&str, Duration)> = self
            .ticks
            .lock()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (*k, now.duration_since(*v)))
                    .collect()
            })
            .unwrap_or_default();
        let speaker = self.routing.read().map(|r| r.is_some()).unwrap_or(false);
        metrics::health(&ages, self.fib.is_running()).map_err(|e| {
            if speaker {
                e
            } else {
                e.replace("the BGP speaker stopped", "the FIB stopped")
            }
        })
    }

    /// /readyz.
    pub fn readiness(&self) -> Result<(), String> {
        metrics::readiness(&self.ready_inputs())
    }
}

/// Maps the CRD's encapsulation to the FIB's.
pub fn mode(e: Encapsulation) -> Mode {
    match e {
        Encapsulation::None => Mode::None,
        Encapsulation::IPIP => Mode::IPIP,
        Encapsulation::IPIPCrossSubnet => Mode::IPIPCrossSubnet,
        Encapsulation::VXLAN => Mode::VXLAN,
        Encapsulation::VXLANCrossSubnet => Mode::VXLANCrossSubnet,
    }
}

/// The FIB's pools of a node's routing.
pub fn fib_pools(nr: &NodeRouting) -> Vec<PoolEncap> {
    nr.pools
        .iter()
        .map(|p| PoolEncap {
            cidr: p.cidr,
            mode: mode(p.encapsulation),
        })
        .collect()
}

/// NAT's pools of a node's routing.
pub fn nat_pools(nr: &NodeRouting) -> Vec<NatPool> {
    nr.pools
        .iter()
        .map(|p| NatPool {
            cidr: p.cidr,
            nat_outgoing: p.nat_outgoing,
        })
        .collect()
}

/// Workload interfaces (`tort...`) in the calling thread's network
/// namespace. `if_nameindex(3)` asks the kernel over netlink: every policy
/// round lists them, and an `ip link` process cost a round milliseconds.
pub fn workload_interfaces() -> Vec<String> {
    let Ok(all) = nix::net::if_::if_nameindex() else {
        return Vec::new();
    };
    let mut names: Vec<String> = all
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(tortie_policy::naming::INTERFACE_PREFIX))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The datastore, and for Kubernetes the writer of the Node condition and
/// Events (sharing the client).
async fn open_datastore(
    arg: &DatastoreArg,
    node: &str,
) -> Result<(SnapshotReceiver, Option<crate::datastore::kube::KubeWriter>)> {
    use crate::datastore::kube as kube_ds;
    match arg {
        DatastoreArg::File(dir) => Ok((
            crate::datastore::spawn_file(dir.clone())
                .with_context(|| format!("starting the file datastore on {}", dir.display()))?,
            None,
        )),
        // In-cluster config, or $KUBECONFIG / ~/.kube/config.
        DatastoreArg::Kubernetes => {
            let client = kube_ds::connect(None)
                .await
                .context("connecting to the Kubernetes API")?;
            let settings = kube_ds::KubeSettings::from_env();
            // secretKeyRefs without a namespace resolve where the datastore
            // watches Secrets (the agent's namespace).
            crate::model::set_secret_default_namespace(settings.secrets_namespace.clone());
            let rx = kube_ds::spawn_with_client(client.clone(), settings);
            Ok((rx, Some(kube_ds::KubeWriter::new(client, node))))
        }
    }
}

/// Forwarding for the pods in the agent's namespace: IPv4 always, IPv6
/// when the node has an IPv6 pod CIDR. Blocking (enters the namespace on a
/// thread of its own).
fn enable_forwarding(ipv6: bool) -> Result<()> {
    let here = crate::cni::netns::NetnsHandle::current()
        .context("opening the agent's network namespace")?;
    crate::cni::dataplane::enable_forwarding(&here, ipv6)
        .with_context(|| format!("enabling forwarding (ipv6: {ipv6})"))
}

/// What the main loop owns.
struct MainLoop {
    agent: Arc<Agent>,
    routing: Option<Routing>,
    /// The routing config in force (to skip no-op reconfigures).
    applied: Option<NodeRouting>,
    /// The last routing config asked for (retried when it failed).
    wanted: Option<NodeRouting>,
    last_routing_attempt: Option<Instant>,
    state_ok: bool,
    nat: Option<NatApplier>,
    nat_pools: Vec<NatPool>,
    last_nat: Instant,
    nat_error: Option<String>,
    /// Forwarding turned on so far: (IPv4, IPv6).
    forwarding: (bool, bool),
}

async fn run_async(args: Args) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let node = args.node_name.clone();
    std::fs::create_dir_all(&args.run_dir)
        .with_context(|| format!("cannot create the run dir {}", args.run_dir.display()))?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state dir {}", args.state_dir.display()))?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    // The dataplane tools run in this process's network namespace.
    let runner = ProcessRunner::host();
    let backend = match backend::detect(&runner, args.iptables_backend) {
        Ok(d) => {
            info!("iptables backend: {} ({})", d.backend, d.reason);
            d.backend
        }
        Err(e) => {
            warn!("choosing the iptables backend: {e}; using nft");
            Backend::Nft
        }
    };
    let families = [Family::V4, Family::V6];

    let fib = crate::fib::service::spawn(FibSettings::default())
        .context("starting the FIB (route programming)")?;
    let (policy_client, policy_rx) = PolicyClient::new();
    let agent = Arc::new(Agent {
        node: node.clone(),
        state_dir: args.state_dir.clone(),
        metrics: Metrics::default(),
        fib: fib.clone(),
        policy: policy_client.clone(),
        model: RwLock::new(None),
        model_generation: tokio::sync::watch::channel(0).0,
        routing: RwLock::new(None),
        view: Mutex::new(AgentView {
            node: node.clone(),
            ..AgentView::default()
        }),
        ready: Mutex::new(ReadyInputs::default()),
        ticks: Mutex::new(BTreeMap::new()),
        pod_cidrs: RwLock::new(Vec::new()),
    });

    // CNI server (and IPAM) first: it tells us which addresses are taken
    // before the first policy round.
    let cni = cni_ctx::start(&agent).context("starting the CNI server")?;
    let restored = cni_ctx::restore_workloads(&agent, &cni).await;
    if restored > 0 {
        info!("{restored} workloads from before this start keep their host routes");
    }

    // The policy worker.
    {
        let applier = Applier::new(
            Dataplane::new(Box::new(runner.clone()), backend).with_families(&families),
        );
        let a = Arc::clone(&agent);
        let server = Arc::clone(&cni);
        // Runs on a blocking-pool thread, which stays in the agent's
        // namespace (pod wiring enters pods' namespaces on threads of its
        // own).
        let snapshot: policy::SnapshotFn = Arc::new(move || {
            let model = a.model()?;
            let ips = server.assigned();
            let mut snap = model.policy_snapshot(&a.node, &ips);
            snap.unknown_interfaces = workload_interfaces()
                .into_iter()
                .filter(|i| !snap.local.iter().any(|w| &w.interface == i))
                .collect();
            Some(snap)
        });
        let a = Arc::clone(&agent);
        tokio::spawn(policy::run(
            policy_rx,
            applier,
            snapshot,
            move |out, took| {
                a.tick("policy");
                a.metrics.policy_sync(took);
                if !out.applied {
                    a.metrics.error("policy");
                } else {
                    a.set_ready(|r| r.policy_synced = true);
                }
                a.with_view(|v| {
                    v.policy = crate::status::PolicyStatus {
                        policies: out.policies,
                        workloads: out.workloads,
                        errors: out.errors.clone(),
                    };
                });
            },
        ));
    }

    let (mut datastore, writer) = open_datastore(&args.datastore, &node).await?;
    if let Some(w) = writer {
        tokio::spawn(kube_report::run(Arc::clone(&agent), w));
    }

    // agent.sock: status and CNI.
    let sock = args.run_dir.join("agent.sock");
    let server = {
        let a = Arc::clone(&agent);
        let cni = Arc::clone(&cni);
        status_client::serve_with(&sock, move |line| {
            let a = Arc::clone(&a);
            let cni = Arc::clone(&cni);
            async move { answer(&a, &cni, &line).await }
        })
        .with_context(|| format!("cannot serve on {}", sock.display()))?
    };
    info!("serving status and CNI on {}", sock.display());

    let metrics_server = match args.metrics_addr {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
            info!("metrics on http://{}/metrics", l.local_addr()?);
            let a = Arc::clone(&agent);
            Some(tokio::spawn(metrics::serve(l, move |ep| {
                let a = Arc::clone(&a);
                async move { http_answer(&a, ep).await }
            })))
        }
    };

    let mut main = MainLoop {
        agent: Arc::clone(&agent),
        routing: None,
        applied: None,
        wanted: None,
        last_routing_attempt: None,
        state_ok: true,
        nat: Some(NatApplier::new(
            Box::new(runner.clone()),
            backend,
            &families,
        )),
        nat_pools: Vec::new(),
        last_nat: Instant::now(),
        nat_error: None,
        forwarding: (false, false),
    };

    let first = datastore.borrow_and_update().clone();
    main.on_snapshot(&first).await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gc = Instant::now();
    let result: Result<&str> = loop {
        agent.tick("main");
        tokio::select! {
            r = datastore.changed() => {
                if r.is_err() {
                    break Err(anyhow!("the datastore stopped"));
                }
                // Coalesce a burst (an editor writing several files, a
                // relist) into one update.
                tokio::time::sleep(DEBOUNCE).await;
                let snap = datastore.borrow_and_update().clone();
                main.on_snapshot(&snap).await;
            }
            _ = tick.tick() => {
                main.periodic().await;
                if last_gc.elapsed() >= IPAM_GC
                    && main.applied.is_some()
                    && agent.ready_inputs().datastore_connected
                {
                    last_gc = Instant::now();
                    // Only with a datastore that has loaded: an empty
                    // model would make every pod look deleted.
                    if let Err(e) = cni.gc().await {
                        warn!("IPAM gc: {e}");
                        agent.metrics.error("cni");
                    }
                }
            }
            why = routing_stopped(&mut main.routing) => {
                break Err(anyhow!("{why}"));
            }
            _ = term.recv() => break Ok("SIGTERM"),
            _ = int.recv() => break Ok("SIGINT"),
        }
    };

    // Stop taking requests first.
    server.abort();
    let _ = std::fs::remove_file(&sock);
    if let Some(m) = metrics_server {
        m.abort();
    }
    // The kernel keeps every route: the FIB stops before any session
    // closes.
    if !fib.stop(Duration::from_secs(2)).await {
        warn!("FIB: the FIB thread did not stop within 2 s");
    }
    if let Some(r) = main.routing.take() {
        match &result {
            Ok(sig) => info!(
                "{sig}: stopping; routes and rules stay in place, peers keep ours for the graceful-restart time"
            ),
            Err(e) => error!("stopping: {e:#}"),
        }
        r.detach();
    }
    result.map(|_| ())
}

async fn routing_stopped(r: &mut Option<Routing>) -> String {
    match r {
        Some(r) => r.stopped().await,
        None => std::future::pending().await,
    }
}

impl MainLoop {
    async fn on_snapshot(&mut self, snap: &DatastoreSnapshot) {
        let a = Arc::clone(&self.agent);
        if snap.generation == 0 {
            // The Kubernetes datastore's placeholder until every kind is
            // listed: a model from it would have pods without their
            // policies (holes) or no pods (local workloads dropped).
            a.with_view(|v| {
                v.datastore_errors = snap.errors.clone();
                v.datastore_connected = snap.connected;
                v.disconnected_since = snap.disconnected_since;
            });
            a.set_ready(|r| r.datastore_connected = false);
            return;
        }
        let previous = a.model();
        let model = Arc::new(Model::build(&snap.manifests, previous.as_deref()));
        let mut ds_errors = snap.errors.clone();
        ds_errors.extend(model.errors.iter().cloned());
        let changed_errors = a
            .view
            .lock()
            .map(|v| v.datastore_errors != ds_errors)
            .unwrap_or(true);
        if changed_errors {
            for e in &ds_errors {
                warn!("datastore: {e}");
            }
            if !ds_errors.is_empty() {
                a.metrics.error("datastore");
            }
        }
        a.with_view(|v| {
            v.datastore_errors = ds_errors;
            v.datastore_connected = snap.connected;
            v.disconnected_since = snap.disconnected_since;
        });
        a.set_ready(|r| r.datastore_connected = snap.connected);
        if let Ok(mut m) = a.model.write() {
            *m = Some(Arc::clone(&model));
        }
        a.model_generation.send_modify(|g| *g += 1);
        match model.node_routing(&a.node) {
            Ok(nr) => {
                if let Ok(mut c) = a.pod_cidrs.write() {
                    *c = nr.pod_cidrs.clone();
                }
                self.ensure_forwarding(&nr);
                self.wanted = Some(nr);
                self.apply_routing().await;
            }
            Err(e) => {
                let first = a
                    .view
                    .lock()
                    .map(|v| v.routing_errors.first() != Some(&e))
                    .unwrap_or(true);
                if first {
                    warn!("routing: {e}; keeping the running config");
                    a.metrics.error("routing");
                }
                a.with_view(|v| v.routing_errors = vec![e]);
            }
        }
        a.policy.kick("datastore change");
    }

    /// Applies `wanted` when it differs from what is in force.
    async fn apply_routing(&mut self) {
        let Some(nr) = self.wanted.clone() else {
            return;
        };
        if self.applied.as_ref() == Some(&nr) && self.routing.is_some() {
            return;
        }
        let a = Arc::clone(&self.agent);
        let started = Instant::now();
        self.last_routing_attempt = Some(started);
        let mut errors = nr.errors.clone();
        let loaded = match bgp_cmd::convert(&nr.speaker) {
            Ok(l) => l,
            Err(e) => {
                let e = format!("node {}: the speaker config is invalid: {e:#}", a.node);
                warn!("routing: {e}; keeping the running config");
                a.metrics.error("routing");
                errors.push(e);
                a.with_view(|v| v.routing_errors = errors);
                self.applied = Some(nr);
                return;
            }
        };
        // FIB first: learned routes use the new pools' encapsulation.
        a.fib.set_underlay(Some(nr.bgp_address));
        a.fib.set_pools(fib_pools(&nr));
        match self.routing.as_mut() {
            None => {
                let state = self.state_ok.then_some(a.state_dir.as_path());
                match Routing::start(&loaded, state, Some(a.fib.changes_sender())).await {
                    Ok(r) => {
                        info!(
                            "BGP speaker: AS {} router id {}, {} peers, listening on {:?}{}",
                            loaded.runtime.speaker.asn,
                            loaded.runtime.speaker.router_id,
                            loaded.runtime.peers.len(),
                            r.handle().listen_addrs(),
                            if r.restarting() {
                                " (graceful restart)"
                            } else {
                                ""
                            }
                        );
                        let bound = if r.restarting() {
                            loaded.max_restart_time.unwrap_or(NOT_RESTARTING_SYNC_BOUND)
                        } else {
                            NOT_RESTARTING_SYNC_BOUND
                        };
                        tokio::spawn(watch_sync(
                            r.handle().clone(),
                            SyncDecision {
                                restarting: r.restarting(),
                                bound,
                            },
                            a.fib.clone(),
                        ));
                        if let Ok(mut h) = a.routing.write() {
                            *h = Some(r.handle().clone());
                        }
                        self.routing = Some(r);
                    }
                    Err(e) => {
                        let e = format!("starting the BGP speaker: {e:#} (retrying)");
                        warn!("routing: {e}");
                        a.metrics.error("routing");
                        errors.push(e);
                        a.with_view(|v| v.routing_errors = errors);
                        return;
                    }
                }
            }
            Some(r) => match r.reconfigure(&loaded).await {
                Ok(ignored) => {
                    if let Some(listen) = ignored.listen {
                        let e = format!(
                            "BGPConfiguration listenPort changed to {:?}: needs an agent restart; still listening on {:?}",
                            listen.first().map(|l| l.port()),
                            r.handle().listen_addrs()
                        );
                        warn!("routing: {e}");
                        errors.push(e);
                    }
                    info!("routing reconfigured: {} peers", loaded.runtime.peers.len());
                }
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    a.metrics.error("routing");
                }
            },
        }
        if !errors.is_empty() && self.applied.as_ref().map(|p| &p.errors) != Some(&nr.errors) {
            for e in &nr.errors {
                warn!("routing: {e}");
            }
        }
        a.with_view(|v| {
            v.routing_errors = errors;
            v.peer_sources = nr.peer_sources.clone();
        });
        self.nat_pools = nat_pools(&nr);
        self.apply_nat(false);
        a.metrics.route_sync(started.elapsed());
        a.set_ready(|r| r.routes_synced = true);
        self.applied = Some(nr);
    }

    /// Turns forwarding on once the node's pod CIDRs are known (IPv6 only
    /// with an IPv6 pod CIDR: it also stops router advertisements being
    /// taken on the node's interfaces). Never turned off again.
    fn ensure_forwarding(&mut self, nr: &NodeRouting) {
        let v6 = nr.pod_cidrs.iter().any(|c| c.addr().is_ipv6());
        if self.forwarding.0 && (self.forwarding.1 || !v6) {
            return;
        }
        match tokio::task::block_in_place(|| enable_forwarding(v6)) {
            Ok(()) => {
                info!(ipv6 = v6, "forwarding enabled");
                self.forwarding = (true, self.forwarding.1 || v6);
            }
            Err(e) => {
                warn!("{e:#}");
                self.agent.metrics.error("routing");
            }
        }
    }

    fn apply_nat(&mut self, force: bool) {
        let Some(nat) = self.nat.as_mut() else {
            return;
        };
        self.last_nat = Instant::now();
        let plan = nat::render(&self.nat_pools);
        // iptables-restore blocks; keep the runtime's other tasks going.
        match tokio::task::block_in_place(|| nat.apply(&plan, force)) {
            Ok(sent) => {
                if sent {
                    info!("natOutgoing rules applied");
                }
                self.nat_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if self.nat_error.as_ref() != Some(&msg) {
                    warn!("{msg}");
                }
                self.agent.metrics.error("nat");
                self.nat_error = Some(msg);
            }
        }
        let nat_error = self.nat_error.clone();
        self.agent.with_view(|v| {
            v.routing_errors.retain(|e| !e.starts_with("natOutgoing:"));
            if let Some(e) = nat_error {
                v.routing_errors.push(e);
            }
        });
    }

    async fn periodic(&mut self) {
        if self.routing.is_none()
            && self.wanted.is_some()
            && self
                .last_routing_attempt
                .is_none_or(|t| t.elapsed() >= ROUTING_RETRY)
        {
            self.apply_routing().await;
        }
        if self.applied.is_some() && self.last_nat.elapsed() >= NAT_RESYNC {
            self.apply_nat(self.nat_error.is_some());
        }
    }
}

/// One line on agent.sock.
async fn answer(agent: &Agent, cni: &CniServer, line: &str) -> String {
    let err = |e: String| serde_json::json!({ "error": e }).to_string();
    let v: serde_json::Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(e) => return err(format!("bad request: {e}")),
    };
    if v.get("cni").is_some() {
        return cni_ctx::answer(agent, cni, line).await;
    }
    let req: status_client::Request = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => return err(format!("bad request: {e}")),
    };
    if req.get != "status" {
        return err(format!(
            "unknown request {:?}; try {{\"get\":\"status\"}} or {{\"cni\":{{...}}}}",
            req.get
        ));
    }
    match agent.status(req.routes).await {
        Ok(v) => v.to_string(),
        Err(e) => err(format!("{e:#}")),
    }
}

async fn http_answer(agent: &Agent, ep: metrics::Endpoint) -> metrics::Response {
    use metrics::{Endpoint, Response};
    match ep {
        Endpoint::Metrics => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: agent.metrics_text().await,
        },
        Endpoint::Healthz => match agent.health() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(e) => Response::text(503, format!("{e}\n")),
        },
        Endpoint::Readyz => match agent.readiness() {
            Ok(()) => Response::text(200, "ready\n"),
            Err(e) => Response::text(503, format!("not ready: {e}\n")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_flag_parses() {
        assert_eq!(parse_datastore("kubernetes"), Ok(DatastoreArg::Kubernetes));
        assert_eq!(
            parse_datastore("file:/etc/tortie/manifests"),
            Ok(DatastoreArg::File("/etc/tortie/manifests".into()))
        );
        assert!(parse_datastore("file:").is_err());
        assert!(parse_datastore("etcd").unwrap_err().contains("file:DIR"));
    }

    #[test]
    fn encapsulations_map_one_to_one() {
        for (e, m) in [
            (Encapsulation::None, Mode::None),
            (Encapsulation::IPIP, Mode::IPIP),
            (Encapsulation::IPIPCrossSubnet, Mode::IPIPCrossSubnet),
            (Encapsulation::VXLAN, Mode::VXLAN),
            (Encapsulation::VXLANCrossSubnet, Mode::VXLANCrossSubnet),
        ] {
            assert_eq!(mode(e), m);
        }
    }
}
