//! The agent side of CNI: one request from `tortie-cni` in, one reply out.
//!
//! ```text
//!  ADD:  ctx.pod(ns, name) ─► IPAM assign in memory (tortie.io/ip-addrs)
//!        ─┬► IPAM write (group commit, fsync)             }
//!         ├► dataplane add (veth, addresses, routes)      } at the same
//!         └► ctx.workload_assigned (daemon: policy round) } time
//!        ─► ctx.workload_ready (daemon: host route in the FIB)
//!        ─► result          any failure: undo what was done, CNI error
//!  DEL:  dataplane del (idempotent) ─► IPAM release
//!        ─► ctx.workload_gone when the pod has no other sandbox
//!  CHECK: IPAM has the container, prevResult agrees, dataplane check
//! ```
//!
//! The IPAM table is behind one mutex: concurrent ADDs never race for an
//! address. Its writes are group commits ([`SharedIpam`]): ADDs that
//! arrive while a write is being fsynced are all made durable by the next
//! write, instead of queueing for two fsyncs each. Wiring of different
//! pods runs in parallel.
//!
//! An unreadable IPAM state file does not stop the server: every request
//! that needs IPAM answers a clear error (code 102) and the file is tried
//! again on the next request, so repairing it needs no agent restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;
use tortie_policy::model::SlimPod;
use tortie_policy::naming::host_interface_name;

use super::dataplane::{self, Dataplane, DataplaneError, PodWiring, Wired, GATEWAY_V4, GATEWAY_V6};
use super::protocol::{parse_request_line, CniReply, CniRequest};
use super::spec::{
    code, CniError, CniResult, Command, Interface, IpConfig, RouteConfig, DEFAULT_MTU,
};
use crate::fib::KernelRoute;
use crate::ipam::{AllocError, Allocation, IpamError, IpamState, Owner, PodKey, SharedIpam};

/// The pod annotation asking for specific addresses: a JSON list.
pub const IP_ADDRS_ANNOTATION: &str = "tortie.io/ip-addrs";

/// A boxed, sendable future (what `futures::future::BoxFuture` is, without
/// the dependency).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the CNI server needs from the agent. Implemented by the daemon
/// (model + FIB + policy) and by tests.
pub trait CniContext: Send + Sync {
    /// The node's pod CIDRs (`Node.spec.podCIDRs`).
    fn pod_cidrs(&self) -> Vec<IpNet>;
    /// The Pod object, when the datastore has it (shared with the model).
    fn pod(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<SlimPod>>;
    /// The pod's addresses are assigned in IPAM and its veth is being
    /// made: a context may program the pod's policy now, while the
    /// wiring runs (rules name the host interface, which need not exist
    /// yet). The ADD waits for this too; an `Err` fails it (and undoes
    /// it). Default: nothing, [`CniContext::workload_ready`] does it all.
    fn workload_assigned<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// The pod's veth is up with its addresses: install its host routes
    /// (FIB, [`WiredWorkload::host_routes`]) and its policy (unless
    /// [`CniContext::workload_assigned`] does: this may run while that
    /// round is still running); resolve when both are programmed. An `Err`
    /// fails the ADD (and undoes it).
    fn workload_ready<'a>(&'a self, w: &'a WiredWorkload) -> BoxFuture<'a, Result<(), String>>;
    /// The pod's last sandbox is gone: withdraw its host routes and policy.
    fn workload_gone<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, ()>;
    /// The MTU for a new pod interface when the network configuration
    /// names none: the FIB's computed pod MTU (room for the tunnels'
    /// overhead on the narrowest path). Must answer at once (the last
    /// computed value); `None` before the first computation.
    fn pod_mtu(&self) -> Option<u32> {
        None
    }
}

/// A wired pod, as the daemon programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiredWorkload {
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    /// `tort` + 11 hex digits, in the agent's namespace.
    pub host_iface: String,
    pub host_ifindex: u32,
    /// The pod's addresses, IPv4 first.
    pub ips: Vec<IpAddr>,
    /// `CNI_NETNS` and `CNI_IFNAME` of the sandbox.
    pub netns: String,
    pub ifname: String,
}

impl WiredWorkload {
    /// `ADDR/32` (`/128`) `dev tortXXX scope link`, for the FIB (which
    /// marks them protocol 52).
    pub fn host_routes(&self) -> Vec<KernelRoute> {
        dataplane::host_routes(&self.ips, self.host_ifindex)
    }
}

/// Reads `tortie.io/ip-addrs` (`'["10.244.1.7", "fd00:1::7"]'`).
pub fn requested_addresses(pod: &SlimPod) -> Result<Option<Vec<IpAddr>>, String> {
    let Some(raw) = pod.annotation(IP_ADDRS_ANNOTATION) else {
        return Ok(None);
    };
    let list: Vec<String> = serde_json::from_str(raw).map_err(|e| {
        format!("annotation {IP_ADDRS_ANNOTATION} {raw:?} is not a JSON list of addresses: {e}")
    })?;
    let ips = list
        .iter()
        .map(|s| {
            s.trim().parse::<IpAddr>().map_err(|_| {
                format!("annotation {IP_ADDRS_ANNOTATION}: {s:?} is not an IP address")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(ips))
}

enum IpamSlot {
    Open(Arc<SharedIpam>),
    Failed(String),
}

impl IpamSlot {
    fn open(dir: &Path) -> IpamSlot {
        match SharedIpam::open(dir) {
            Ok(i) => IpamSlot::Open(Arc::new(i)),
            Err(e) => IpamSlot::Failed(e.to_string()),
        }
    }
}

/// Handles CNI requests for one node.
pub struct CniServer {
    ctx: Arc<dyn CniContext>,
    dataplane: Dataplane,
    state_dir: PathBuf,
    ipam: Arc<Mutex<IpamSlot>>,
}

impl std::fmt::Debug for CniServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CniServer")
            .field("state_dir", &self.state_dir)
            .field("dataplane", &self.dataplane)
            .finish_non_exhaustive()
    }
}

fn alloc_error(e: AllocError) -> CniError {
    let c = match e {
        AllocError::NoCidr | AllocError::Exhausted { .. } => code::IPAM_EXHAUSTED,
        _ => code::IPAM_REQUEST,
    };
    CniError::new(c, e.to_string())
}

fn ipam_error(e: IpamError) -> CniError {
    match e {
        IpamError::Alloc(a) => alloc_error(a),
        other => CniError::new(code::IPAM_STATE, other.to_string()),
    }
}

fn dataplane_error(what: &str, e: DataplaneError) -> CniError {
    CniError::new(code::DATAPLANE, what.to_string()).with_details(e.to_string())
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, CniError> {
    r.map_err(|e| CniError::new(code::IO_FAILURE, format!("an agent worker failed: {e}")))
}

impl CniServer {
    /// A server whose host namespace is the calling thread's; IPAM state in
    /// `state_dir/ipam.json` (an unreadable file is reported per request,
    /// see the module docs).
    pub fn new(state_dir: &Path, ctx: Arc<dyn CniContext>) -> std::io::Result<CniServer> {
        Ok(Self::with_dataplane(state_dir, ctx, Dataplane::current()?))
    }

    pub fn with_dataplane(
        state_dir: &Path,
        ctx: Arc<dyn CniContext>,
        dataplane: Dataplane,
    ) -> CniServer {
        let slot = IpamSlot::open(state_dir);
        if let IpamSlot::Failed(e) = &slot {
            tracing::error!(error = %e, "IPAM state not loaded; CNI ADD fails until it is repaired");
        }
        CniServer {
            ctx,
            dataplane,
            state_dir: state_dir.to_path_buf(),
            ipam: Arc::new(Mutex::new(slot)),
        }
    }

    /// The error that keeps IPAM from working, if any (for status).
    pub fn ipam_error(&self) -> Option<String> {
        match &*self.ipam.lock().unwrap_or_else(|p| p.into_inner()) {
            IpamSlot::Open(_) => None,
            IpamSlot::Failed(e) => Some(e.clone()),
        }
    }

    /// Reads the IPAM table (`None` while it failed to load).
    fn read_ipam<T>(&self, f: impl FnOnce(&IpamState) -> T) -> Option<T> {
        match &*self.ipam.lock().unwrap_or_else(|p| p.into_inner()) {
            IpamSlot::Open(i) => Some(i.read(f)),
            IpamSlot::Failed(_) => None,
        }
    }

    /// Addresses per `(namespace, pod)`, for the policy model.
    pub fn assigned(&self) -> BTreeMap<(String, String), Vec<IpAddr>> {
        self.read_ipam(IpamState::assigned).unwrap_or_default()
    }

    /// Assignments outside the node's current pod CIDRs (the CIDR changed):
    /// `(container id, pod, address)`, for status and logs.
    pub fn outside_cidrs(&self) -> Vec<(String, PodKey, IpAddr)> {
        let cidrs = self.ctx.pod_cidrs();
        self.read_ipam(|s| s.outside(&cidrs)).unwrap_or_default()
    }

    /// Runs `f` on the IPAM table, on the blocking pool (its writes
    /// fsync). Reopens a table that failed to load.
    async fn with_ipam<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SharedIpam) -> Result<T, CniError> + Send + 'static,
    ) -> Result<T, CniError> {
        let ipam = Arc::clone(&self.ipam);
        let dir = self.state_dir.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let table = {
                    let mut slot = ipam.lock().unwrap_or_else(|p| p.into_inner());
                    if let IpamSlot::Failed(_) = &*slot {
                        *slot = IpamSlot::open(&dir);
                        if let IpamSlot::Open(_) = &*slot {
                            tracing::info!(dir = %dir.display(), "IPAM state loaded");
                        }
                    }
                    match &*slot {
                        IpamSlot::Open(i) => Arc::clone(i),
                        IpamSlot::Failed(e) => {
                            return Err(CniError::new(code::IPAM_STATE, e.clone()))
                        }
                    }
                };
                f(&table)
            })
            .await,
        )?
    }

    /// Releases a container's addresses (durably).
    async fn release(&self, container_id: &str) -> Result<Option<Allocation>, CniError> {
        let cid = container_id.to_string();
        self.with_ipam(move |ipam| {
            ipam.update(|s| Ok(s.release(&cid)), |_, _| {})
                .map_err(ipam_error)
        })
        .await
    }

    /// Answers one socket line (`{"cni": ...}`) with one reply line.
    pub async fn handle_line(&self, line: &str) -> String {
        let reply = match parse_request_line(line) {
            Ok(req) => self.handle(req).await,
            Err(e) => CniReply::CniError(e),
        };
        serde_json::to_string(&reply).unwrap_or_else(|e| {
            format!(
                r#"{{"cniError":{{"code":{},"msg":"encoding the reply: {e}"}}}}"#,
                code::PROTOCOL
            )
        })
    }

    /// Handles one request.
    pub async fn handle(&self, req: CniRequest) -> CniReply {
        let start = Instant::now();
        let command = req.env.command;
        let container = req.env.container_id.clone();
        let r = match command {
            Command::Add => self.add(&req).await,
            Command::Del => self.del(&req).await.map(|()| CniResult::default()),
            Command::Check => self.check(&req).await.map(|()| CniResult::default()),
            Command::Version => Ok(CniResult::default()),
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        match &r {
            Ok(_) => tracing::info!(%command, container = %container, ms, "CNI request done"),
            Err(e) => {
                tracing::warn!(%command, container = %container, ms, code = e.code, error = %e, "CNI request failed")
            }
        }
        CniReply::from(r)
    }

    fn pod_of(req: &CniRequest) -> Result<PodKey, CniError> {
        match (&req.env.args.pod_namespace, &req.env.args.pod_name) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                Ok(PodKey::new(ns.clone(), name.clone()))
            }
            _ => Err(CniError::new(
                code::INVALID_ENV,
                "CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME",
            )),
        }
    }

    async fn add(&self, req: &CniRequest) -> Result<CniResult, CniError> {
        let env = &req.env;
        let key = Self::pod_of(req)?;
        let Some(pod) = self.ctx.pod(&key.namespace, &key.name) else {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "pod {key} is not known to the tortie agent yet (not in its datastore); nothing was allocated"
                ),
            ));
        };
        let requested = requested_addresses(&pod)
            .map_err(|e| CniError::new(code::IPAM_REQUEST, format!("pod {key}: {e}")))?;
        let cidrs = self.ctx.pod_cidrs();
        let owner = Owner {
            pod: key.clone(),
            container_id: env.container_id.clone(),
            netns: Some(env.netns.clone()),
            ifname: Some(env.ifname.clone()),
        };
        let started = Instant::now();
        // In memory first: the addresses are the pod's from here on (no
        // other ADD gets them), and durable before anyone outside the
        // agent learns them (the result below).
        let (ips, ticket) = self
            .with_ipam(move |ipam| {
                ipam.change(|s| s.assign(owner, &cidrs, requested.as_deref()))
                    .map_err(ipam_error)
            })
            .await?;
        let assigned = started.elapsed();
        let wiring = PodWiring {
            netns: env.netns.clone(),
            ifname: env.ifname.clone(),
            host_iface: host_interface_name(&key.namespace, &key.name),
            ips: ips.clone(),
            mtu: self.interface_mtu(req),
        };
        // The IPAM write, the policy round and the wiring run at the same
        // time: the round needs the pod's addresses, not its veth, and
        // neither needs them on disk (a failed write undoes both, as any
        // failure does).
        let workload = |w: &Wired| WiredWorkload {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            container_id: env.container_id.clone(),
            host_iface: wiring.host_iface.clone(),
            host_ifindex: w.host_ifindex,
            ips: ips.clone(),
            netns: env.netns.clone(),
            ifname: env.ifname.clone(),
        };
        let ((durable, durable_at), wired, (early, policy_at)) = tokio::join!(
            async {
                let r = self
                    .with_ipam(move |ipam| ipam.durable(ticket).map_err(ipam_error))
                    .await;
                (r, started.elapsed())
            },
            // The host route as soon as the veth is there.
            async {
                let wired = self.wire(&wiring).await;
                let veth_at = started.elapsed();
                let ready = match &wired {
                    Ok(w) => {
                        let w = workload(w);
                        Some(self.ctx.workload_ready(&w).await)
                    }
                    Err(_) => None,
                };
                (wired, veth_at, ready, started.elapsed())
            },
            async {
                let r = self.ctx.workload_assigned(&key.namespace, &key.name).await;
                (r, started.elapsed())
            }
        );
        let (wired, veth_at, ready, routed_at) = wired;
        let failed = match (durable, wired, early, ready) {
            (Ok(()), Ok(w), Ok(()), Some(Ok(()))) => Ok(w),
            (Err(e), _, _, _) | (_, Err(e), _, _) => Err(e),
            (_, Ok(_), Err(e), _) => Err(CniError::new(
                code::PROGRAMMING,
                format!("pod {key}: programming its policy failed"),
            )
            .with_details(e)),
            (_, Ok(_), Ok(()), ready) => Err(CniError::new(
                code::PROGRAMMING,
                format!("pod {key}: programming its host route and policy failed"),
            )
            .with_details(ready.and_then(Result::err).unwrap_or_default())),
        };
        // Where an ADD's time goes, for `RUST_LOG=tortie::cni=debug`.
        // The write, the veth (then the host route) and the policy round
        // run at the same time, all from the end of the IPAM assignment
        // in memory.
        tracing::debug!(
            container = %env.container_id,
            ipam_ms = ms(assigned),
            write_ms = ms(durable_at.saturating_sub(assigned)),
            veth_ms = ms(veth_at.saturating_sub(assigned)),
            route_ms = ms(routed_at.saturating_sub(veth_at)),
            policy_ms = ms(policy_at.saturating_sub(assigned)),
            "CNI ADD phases"
        );
        let wired = match failed {
            Ok(w) => w,
            Err(e) => {
                self.undo(&wiring, &env.container_id).await;
                // The policy may already hold the released addresses.
                if !self.pod_has_other_sandbox(&key, &env.container_id) {
                    self.ctx.workload_gone(&key.namespace, &key.name).await;
                }
                return Err(e);
            }
        };
        Ok(result(&wiring, &wired))
    }

    async fn wire(&self, wiring: &PodWiring) -> Result<Wired, CniError> {
        let dp = self.dataplane.clone();
        let w = wiring.clone();
        joined(tokio::task::spawn_blocking(move || dp.add(&w)).await)?.map_err(|e| {
            dataplane_error(
                &format!(
                    "wiring {} in {} (host side {}) failed",
                    wiring.ifname, wiring.netns, wiring.host_iface
                ),
                e,
            )
        })
    }

    /// A new pod interface's MTU: the configuration's `mtu` wins (the
    /// operator's override), else the agent's computed pod MTU, else
    /// [`DEFAULT_MTU`] before it is known. Pods already wired keep theirs.
    fn interface_mtu(&self, req: &CniRequest) -> u32 {
        let computed = match req.config.mtu {
            Some(_) => None,
            None => self.ctx.pod_mtu(),
        };
        let mtu = pod_interface_mtu(req.config.mtu, computed);
        if req.config.mtu.is_none() && computed.is_none() {
            tracing::warn!(
                container = %req.env.container_id,
                mtu,
                "the pod MTU is not computed yet (underlay device unknown); using the default"
            );
        }
        mtu
    }

    /// Best-effort undo of a failed ADD: interfaces, then the addresses.
    async fn undo(&self, wiring: &PodWiring, container_id: &str) {
        let dp = self.dataplane.clone();
        let (netns, ifname) = (wiring.netns.clone(), wiring.ifname.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || dp.del(&netns, &ifname)).await {
            tracing::warn!(error = %e, "undoing a failed ADD: removing the interface failed");
        }
        if let Err(e) = self.release(container_id).await {
            tracing::warn!(error = %e, "undoing a failed ADD: releasing the addresses failed");
        }
    }

    fn pod_has_other_sandbox(&self, key: &PodKey, container_id: &str) -> bool {
        self.read_ipam(|s| {
            s.allocations
                .iter()
                .any(|a| a.pod == *key && a.container_id != container_id)
        })
        // Unknown: assume yes, so a live pod never loses its routes.
        .unwrap_or(true)
    }

    async fn del(&self, req: &CniRequest) -> Result<(), CniError> {
        let env = &req.env;
        let cid = env.container_id.clone();
        let alloc: Option<Allocation> = self
            .with_ipam(move |ipam| Ok(ipam.read(|s| s.get(&cid).cloned())))
            .await?;
        let netns = if env.netns.is_empty() {
            alloc
                .as_ref()
                .and_then(|a| a.netns.clone())
                .unwrap_or_default()
        } else {
            env.netns.clone()
        };
        let dp = self.dataplane.clone();
        let ifname = env.ifname.clone();
        let ns = netns.clone();
        joined(tokio::task::spawn_blocking(move || dp.del(&ns, &ifname)).await)?.map_err(|e| {
            dataplane_error(&format!("removing {} from {netns} failed", env.ifname), e)
        })?;
        self.release(&env.container_id).await?;
        let key = alloc.map(|a| a.pod).or_else(|| Self::pod_of(req).ok());
        if let Some(key) = key {
            if !self.pod_has_other_sandbox(&key, &env.container_id) {
                self.ctx.workload_gone(&key.namespace, &key.name).await;
            }
        }
        Ok(())
    }

    async fn check(&self, req: &CniRequest) -> Result<(), CniError> {
        let env = &req.env;
        let cid = env.container_id.clone();
        let Some(alloc) = self
            .with_ipam(move |ipam| Ok(ipam.read(|s| s.get(&cid).cloned())))
            .await?
        else {
            return Err(CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "container {} has no addresses from this node's IPAM",
                    env.container_id
                ),
            ));
        };
        if let Some(prev) = &req.config.prev_result {
            let prev = CniResult::from_prev(prev)?;
            let mut want: Vec<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
            want.sort_by_key(|ip| (ip.is_ipv6(), *ip));
            if want != alloc.ips {
                return Err(CniError::new(
                    code::CHECK_FAILED,
                    format!(
                        "container {}: prevResult lists {want:?} but IPAM assigned {:?}",
                        env.container_id, alloc.ips
                    ),
                ));
            }
        }
        let wiring = PodWiring {
            netns: env.netns.clone(),
            ifname: env.ifname.clone(),
            host_iface: host_interface_name(&alloc.pod.namespace, &alloc.pod.name),
            ips: alloc.ips.clone(),
            mtu: req.config.mtu(),
        };
        let dp = self.dataplane.clone();
        joined(tokio::task::spawn_blocking(move || dp.check(&wiring)).await)?
            .map_err(|e| CniError::new(code::CHECK_FAILED, format!("pod {}: {e}", alloc.pod)))
    }

    /// Releases addresses whose sandbox is gone (its netns path no longer
    /// exists) *and* whose Pod object is deleted; withdraws those pods.
    pub async fn gc(&self) -> Result<Vec<Allocation>, CniError> {
        let ctx = Arc::clone(&self.ctx);
        let gone = self
            .with_ipam(move |ipam| {
                let live_sandboxes: std::collections::BTreeSet<String> = ipam.read(|s| {
                    s.allocations
                        .iter()
                        .filter(|a| {
                            a.netns
                                .as_deref()
                                .is_some_and(|n| !n.is_empty() && Path::new(n).exists())
                        })
                        .map(|a| a.container_id.clone())
                        .collect()
                });
                ipam.update(
                    |s| {
                        Ok(s.gc(|pod, container| {
                            live_sandboxes.contains(container)
                                || ctx.pod(&pod.namespace, &pod.name).is_some()
                        }))
                    },
                    |_, _| {},
                )
                .map_err(ipam_error)
            })
            .await?;
        for a in &gone {
            tracing::info!(pod = %a.pod, container = %a.container_id, ips = ?a.ips, "IPAM gc released addresses");
            if !self.pod_has_other_sandbox(&a.pod, &a.container_id) {
                self.ctx.workload_gone(&a.pod.namespace, &a.pod.name).await;
            }
        }
        Ok(gone)
    }

    /// Pods wired before this server started whose host veth still exists,
    /// so the daemon re-registers their host routes and policy after a
    /// restart instead of letting its FIB resync remove them.
    pub async fn existing_workloads(&self) -> Vec<WiredWorkload> {
        let allocs: Vec<Allocation> = self
            .with_ipam(|ipam| Ok(ipam.read(|s| s.allocations.clone())))
            .await
            .unwrap_or_default();
        let dp = self.dataplane.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let names: Vec<String> = allocs
                    .iter()
                    .map(|a| host_interface_name(&a.pod.namespace, &a.pod.name))
                    .collect();
                let indexes = dp.host_ifindexes(&names).unwrap_or_default();
                allocs
                    .into_iter()
                    .zip(names)
                    .filter_map(|(a, host_iface)| {
                        let idx = *indexes.get(&host_iface)?;
                        Some(WiredWorkload {
                            namespace: a.pod.namespace,
                            name: a.pod.name,
                            container_id: a.container_id,
                            host_iface,
                            host_ifindex: idx,
                            ips: a.ips,
                            netns: a.netns.unwrap_or_default(),
                            ifname: a.ifname.unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .await,
        )
        .unwrap_or_default()
    }
}

/// The configured MTU, else the computed one, else [`DEFAULT_MTU`].
fn pod_interface_mtu(configured: Option<u32>, computed: Option<u32>) -> u32 {
    configured.or(computed).unwrap_or(DEFAULT_MTU)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn result(w: &PodWiring, wired: &Wired) -> CniResult {
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for ip in &w.ips {
        let (gw, default) = match ip {
            IpAddr::V4(_) => (IpAddr::V4(GATEWAY_V4), "0.0.0.0/0"),
            IpAddr::V6(_) => (IpAddr::V6(GATEWAY_V6), "::/0"),
        };
        ips.push(IpConfig {
            address: IpNet::from(*ip),
            gateway: Some(gw),
            interface: Some(1),
        });
        if let Ok(dst) = default.parse() {
            if !routes.iter().any(|r: &RouteConfig| r.dst == dst) {
                routes.push(RouteConfig { dst, gw: Some(gw) });
            }
        }
    }
    CniResult {
        interfaces: vec![
            Interface {
                name: w.host_iface.clone(),
                mac: wired.host_mac.clone(),
                sandbox: None,
            },
            Interface {
                name: w.ifname.clone(),
                mac: wired.pod_mac.clone(),
                sandbox: Some(w.netns.clone()),
            },
        ],
        ips,
        routes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod_with(annotation: Option<&str>) -> SlimPod {
        SlimPod::from_pod(&Pod {
            metadata: ObjectMeta {
                annotations: annotation
                    .map(|a| BTreeMap::from([(IP_ADDRS_ANNOTATION.to_string(), a.to_string())])),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }

    #[test]
    fn a_configured_mtu_wins_over_the_computed_one() {
        assert_eq!(pod_interface_mtu(Some(1400), Some(1250)), 1400);
        assert_eq!(pod_interface_mtu(None, Some(1250)), 1250);
        assert_eq!(pod_interface_mtu(None, None), DEFAULT_MTU);
    }

    #[test]
    fn the_ip_addrs_annotation() {
        assert_eq!(requested_addresses(&pod_with(None)), Ok(None));
        assert_eq!(
            requested_addresses(&pod_with(Some(r#"["10.244.1.7", " fd00:1::7 "]"#))),
            Ok(Some(vec![
                "10.244.1.7".parse().expect("addr"),
                "fd00:1::7".parse().expect("addr")
            ]))
        );
        let e = requested_addresses(&pod_with(Some("10.244.1.7"))).expect_err("not a list");
        assert!(e.contains("is not a JSON list"), "{e}");
        let e = requested_addresses(&pod_with(Some(r#"["10.244.1.300"]"#))).expect_err("bad");
        assert!(e.contains("\"10.244.1.300\" is not an IP address"), "{e}");
    }

    #[test]
    fn result_lists_both_ends_and_one_default_per_family() {
        let w = PodWiring {
            netns: "/var/run/netns/x".into(),
            ifname: "eth0".into(),
            host_iface: "tort0d7763386da".into(),
            ips: vec![
                "10.244.1.7".parse().expect("addr"),
                "fd00:1::7".parse().expect("addr"),
            ],
            mtu: 1500,
        };
        let wired = Wired {
            host_ifindex: 7,
            host_mac: "ee:ee:ee:ee:ee:ee".into(),
            pod_ifindex: 2,
            pod_mac: "02:00:00:00:00:01".into(),
        };
        let r = result(&w, &wired);
        assert_eq!(r.interfaces.len(), 2);
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/var/run/netns/x"));
        assert_eq!(r.ips[0].address.to_string(), "10.244.1.7/32");
        assert_eq!(r.ips[1].address.to_string(), "fd00:1::7/128");
        assert!(r.ips.iter().all(|i| i.interface == Some(1)));
        assert_eq!(r.routes.len(), 2);
        let ww = WiredWorkload {
            namespace: "default".into(),
            name: "web-0".into(),
            container_id: "c".into(),
            host_iface: w.host_iface.clone(),
            host_ifindex: 7,
            ips: w.ips.clone(),
            netns: w.netns.clone(),
            ifname: w.ifname.clone(),
        };
        let routes: Vec<String> = ww.host_routes().iter().map(ToString::to_string).collect();
        assert_eq!(routes.len(), 2);
        assert!(routes[0].starts_with("10.244.1.7/32"), "{routes:?}");
    }
}
