//! The daemon's side of CNI: the [`CniContext`] the CNI server calls back
//! into, and the dispatch of `{"cni": ...}` lines on agent.sock.
//!
//! An ADD returns only when both halves of the pod's programming are in
//! the kernel: its host route (through the FIB service, which repairs it
//! at every resync) and a policy round that included the pod's IPAM
//! address. The policy round starts once the address is assigned, while
//! the veth is being made; the host route once the veth exists.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tortie_policy::model::SlimPod;
use tracing::warn;

use crate::cni::protocol::{parse_request_line, CniReply};
use crate::cni::server::{BoxFuture, CniContext, CniServer, WiredWorkload};
use crate::cni::spec::Command;

use super::Agent;

/// How long an ADD waits for its Pod to appear in the model.
pub const POD_WAIT: Duration = Duration::from_secs(5);

/// The FIB source name of a workload's host routes.
pub fn route_source(namespace: &str, name: &str) -> String {
    format!("workload {namespace}/{name}")
}

/// [`CniContext`] over the agent's shared state.
#[derive(Debug)]
pub struct AgentContext {
    pub agent: Arc<Agent>,
}

impl CniContext for AgentContext {
    fn pod_cidrs(&self) -> Vec<IpNet> {
        self.agent.pod_cidrs()
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<SlimPod>> {
        let model = self.agent.model()?;
        let pod = model.pod(namespace, name)?;
        // Only pods scheduled here are wired here.
        pod.is_on(&self.agent.node).then(|| pod.clone())
    }

    /// The policy round of an ADD starts as soon as IPAM has the pod's
    /// addresses (the round's snapshot reads them there), while the
    /// server makes the veth; the ADD waits for both.
    fn workload_assigned<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let reason = format!("CNI ADD {namespace}/{name}");
            self.agent
                .policy
                .apply_now(&reason)
                .await
                .map_err(|e| format!("policy: {e}"))
        })
    }

    /// The host route; the policy was programmed by
    /// [`CniContext::workload_assigned`].
    fn workload_ready<'a>(&'a self, w: &'a WiredWorkload) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let source = route_source(&w.namespace, &w.name);
            self.agent
                .fib
                .set_local_routes(&source, w.host_routes())
                .await
                .map_err(|e| format!("host route of {}: {e}", w.host_iface))
        })
    }

    /// The FIB's last computed pod MTU (an atomic read, never a wait).
    fn pod_mtu(&self) -> Option<u32> {
        self.agent.fib.pod_mtu()
    }

    fn workload_gone<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let source = route_source(namespace, name);
            let reason = format!("CNI DEL {namespace}/{name}");
            let (route, policy) = tokio::join!(
                self.agent.fib.set_local_routes(&source, Vec::new()),
                self.agent.policy.apply_now(&reason),
            );
            if let Err(e) = route {
                warn!("withdrawing the host route of {namespace}/{name}: {e}");
            }
            if let Err(e) = policy {
                warn!("policy after {namespace}/{name} left: {e}");
            }
        })
    }
}

/// Starts the CNI server (IPAM in the state dir).
pub fn start(agent: &Arc<Agent>) -> anyhow::Result<Arc<CniServer>> {
    let ctx = Arc::new(AgentContext {
        agent: Arc::clone(agent),
    });
    let server = CniServer::new(&agent.state_dir, ctx)?;
    Ok(Arc::new(server))
}

/// Re-registers the host routes of pods wired before this start (their
/// veths still exist), so the FIB does not remove them as stale.
pub async fn restore_workloads(agent: &Agent, server: &CniServer) -> usize {
    let existing = server.existing_workloads().await;
    let n = existing.len();
    for w in existing {
        let source = route_source(&w.namespace, &w.name);
        // Not awaited: the FIB applies them with its first plan.
        drop(agent.fib.set_local_routes(&source, w.host_routes()));
    }
    n
}

/// Answers one `{"cni": ...}` line; times ADDs for the metrics.
pub async fn answer(agent: &Agent, server: &CniServer, line: &str) -> String {
    let started = Instant::now();
    let req = match parse_request_line(line) {
        Ok(r) => r,
        Err(e) => {
            agent.metrics.error("cni");
            return serde_json::to_string(&CniReply::CniError(e))
                .unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#));
        }
    };
    let add = matches!(req.env.command, Command::Add);
    if add {
        if let (Some(ns), Some(name)) = (&req.env.args.pod_namespace, &req.env.args.pod_name) {
            // Unknown after the wait: the server answers "try again later".
            agent.wait_for_pod(ns, name, POD_WAIT).await;
        }
    }
    let reply = server.handle(req).await;
    match &reply {
        CniReply::CniError(_) => agent.metrics.error("cni"),
        _ if add => agent.metrics.cni_add(started.elapsed()),
        _ => {}
    }
    serde_json::to_string(&reply).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
}
