//! CNI test helpers: a [`CniContext`] for tests, requests the way kubelet
//! makes them, and the `tortie-cni` binary.
//!
//! The test context installs each pod's host routes itself (the daemon's
//! FIB does this in the agent), in the test's "host" namespace — never in
//! the machine's own.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tortie::cni::dataplane::{install_host_routes, remove_host_routes};
use tortie::cni::netns::NetnsHandle;
use tortie::cni::spec::{parse_netconf, CniArgs, CniEnv, Command as CniCommand};
use tortie::cni::{BoxFuture, CniContext, CniRequest, WiredWorkload, IP_ADDRS_ANNOTATION};

use crate::{kill_pid, run_with_timeout, Netns};

/// `/var/run/netns/NAME` of a test namespace (what a runtime passes as
/// `CNI_NETNS`).
pub fn netns_path(ns: &Netns) -> String {
    format!("/var/run/netns/{}", ns.name())
}

/// A Pod object, optionally with `tortie.io/ip-addrs`.
pub fn pod(namespace: &str, name: &str, ip_addrs: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            annotations: ip_addrs
                .map(|a| BTreeMap::from([(IP_ADDRS_ANNOTATION.to_string(), a.to_string())])),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

/// The test's side of the agent: pods by name, fixed pod CIDRs, host
/// routes installed directly, and a record of what the server asked.
#[derive(Debug)]
pub struct TestCtx {
    pub host: NetnsHandle,
    pub cidrs: Mutex<Vec<IpNet>>,
    pub pods: Mutex<BTreeMap<(String, String), Pod>>,
    pub ready: Mutex<Vec<WiredWorkload>>,
    pub gone: Mutex<Vec<(String, String)>>,
    /// Makes `workload_ready` fail (rollback tests).
    pub fail_ready: AtomicBool,
}

impl TestCtx {
    pub fn new(host: &Netns, cidrs: &[&str]) -> Result<Arc<TestCtx>> {
        let handle = NetnsHandle::open(std::path::Path::new(&netns_path(host)))
            .with_context(|| format!("opening {}", host.name()))?;
        Ok(Arc::new(TestCtx {
            host: handle,
            cidrs: Mutex::new(
                cidrs
                    .iter()
                    .map(|c| c.parse().map_err(|e| anyhow!("{c}: {e}")))
                    .collect::<Result<_>>()?,
            ),
            pods: Mutex::default(),
            ready: Mutex::default(),
            gone: Mutex::default(),
            fail_ready: AtomicBool::new(false),
        }))
    }

    pub fn add_pod(&self, namespace: &str, name: &str, ip_addrs: Option<&str>) {
        lock(&self.pods).insert(
            (namespace.into(), name.into()),
            pod(namespace, name, ip_addrs),
        );
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        lock(&self.pods).remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn gone(&self) -> Vec<(String, String)> {
        lock(&self.gone).clone()
    }

    pub fn ready(&self) -> Vec<WiredWorkload> {
        lock(&self.ready).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CniContext for TestCtx {
    fn pod_cidrs(&self) -> Vec<IpNet> {
        lock(&self.cidrs).clone()
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<Arc<tortie_policy::SlimPod>> {
        lock(&self.pods)
            .get(&(namespace.to_string(), name.to_string()))
            .map(|p| Arc::new(tortie_policy::SlimPod::from_pod(p)))
    }

    fn workload_ready<'a>(&'a self, w: &'a WiredWorkload) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.fail_ready.load(Ordering::SeqCst) {
                return Err("test: policy programming refused".to_string());
            }
            install_host_routes(&self.host, &w.host_routes()).map_err(|e| e.to_string())?;
            lock(&self.ready).push(w.clone());
            Ok(())
        })
    }

    fn workload_gone<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // The kernel removed the routes with the veth; remove any
            // left (a failed ADD) so the host table is clean.
            let routes: Vec<_> = lock(&self.ready)
                .iter()
                .filter(|w| w.namespace == namespace && w.name == name)
                .flat_map(WiredWorkload::host_routes)
                .collect();
            let _ = remove_host_routes(&self.host, &routes);
            lock(&self.gone).push((namespace.to_string(), name.to_string()));
        })
    }
}

/// A request as kubelet would make it for pod `namespace/name` in `netns`.
pub fn request(
    command: CniCommand,
    container_id: &str,
    netns: &str,
    namespace: &str,
    name: &str,
) -> CniRequest {
    CniRequest {
        env: CniEnv {
            command,
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            args: CniArgs {
                pod_namespace: Some(namespace.into()),
                pod_name: Some(name.into()),
                ..CniArgs::default()
            },
            path: Vec::new(),
        },
        config: parse_netconf(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tortie-cni","mtu":1400}"#,
        )
        .unwrap_or_else(|e| panic!("test config: {e}")),
    }
}

/// Finds (or builds) `tortie-cni`: `TORTIE_CNI_BIN`, else next to the test
/// executable, else `cargo build`.
pub fn tortie_cni_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TORTIE_CNI_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("TORTIE_CNI_BIN={} is not a file", p.display());
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("tortie-cni"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("tortie-cni"));
        }
    }
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_with_timeout(
        Command::new(cargo).args(["build", "-p", "tortie", "--bin", "tortie-cni"]),
        Duration::from_secs(900),
    )
    .context("building tortie-cni")?;
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("tortie-cni not found after building"))
}

/// What one plugin run printed.
#[derive(Debug, Clone)]
pub struct PluginRun {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    /// stdout as JSON (`Null` when empty).
    pub fn json(&self) -> Result<serde_json::Value> {
        if self.stdout.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("plugin stdout is not JSON: {:?}", self.stdout))
    }
}

/// Runs the plugin binary with `env` and `stdin`, as a runtime does, with a
/// timeout.
pub fn run_plugin(env: &[(&str, &str)], stdin: &str, timeout: Duration) -> Result<PluginRun> {
    let bin = tortie_cni_binary()?;
    let mut cmd = Command::new(&bin);
    cmd.env_clear().envs(env.iter().copied());
    run_plugin_command(cmd, &bin, stdin, timeout)
}

/// Runs the plugin `bin` inside `node`'s namespace, as the runtime on that
/// node does (the test's environment plus `env`), with a timeout.
pub fn run_plugin_in(
    bin: &Path,
    node: &Netns,
    env: &[(&str, &str)],
    stdin: &str,
    timeout: Duration,
) -> Result<PluginRun> {
    let mut cmd = node.command(&bin.display().to_string());
    cmd.envs(env.iter().copied());
    run_plugin_command(cmd, bin, stdin, timeout)
}

fn run_plugin_command(
    mut cmd: Command,
    bin: &Path,
    stdin: &str,
    timeout: Duration,
) -> Result<PluginRun> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    if let Some(mut s) = child.stdin.take() {
        // A plugin may exit without reading stdin (VERSION, a bad
        // environment); a runtime ignores that, and so do we.
        match s.write_all(stdin.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing the plugin's stdin")
            }
            _ => {}
        }
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out.context("waiting for tortie-cni")?;
            Ok(PluginRun {
                exit: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
        Err(_) => {
            kill_pid(pid, libc::SIGKILL);
            bail!("tortie-cni timed out after {timeout:?}")
        }
    }
}

/// Addresses of a result JSON's `ips`.
pub fn result_ips(v: &serde_json::Value) -> Vec<IpAddr> {
    v["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.parse::<IpNet>().ok())
        .map(|n| n.addr())
        .collect()
}

/// Pings `dst` once from `ns` (IPv4 or IPv6), with a short deadline.
pub fn ping(ns: &Netns, dst: IpAddr) -> Result<()> {
    let family = if dst.is_ipv6() { "-6" } else { "-4" };
    ns.run("ping", &[family, "-c", "1", "-W", "2", &dst.to_string()])
        .map(|_| ())
        .with_context(|| format!("ping {dst} from {}", ns.name()))
}
