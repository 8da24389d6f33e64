//! `kube_soak`: the Kubernetes datastore under a cluster's worth of
//! objects, with the agent-side memory and CPU it costs.
//!
//! ```text
//!   kube_soak --serve (child process)            kube_soak (this process: measured)
//!   FakeApiServer, 127.0.0.1:PORT  ◄── list/watch ──  kube datastore ─► snapshot
//!   seeds half the objects,                           ─► Model::build ─► policy compile
//!   streams the rest on "stream"
//! ```
//!
//! The fake API server runs in a child process so the RSS and CPU reported
//! are the datastore's (+ model + compile), not the server's.
//!
//! Objects look like a real cluster's: pods carry managedFields, kubectl's
//! last-applied annotation, images, env, resources, volume mounts and
//! status conditions, which the datastore must drop.
//!
//! ```sh
//! cargo build --release -p tortie-integration --bin kube_soak
//! target/release/kube_soak                   # 5,000 pods, 500 policies, 100 nodes
//! target/release/kube_soak --pods 20000 --policies 1000
//! target/release/kube_soak --pods 150000 --nodes 5000   # the issue's scale (target 1 GiB)
//! ```
//!
//! Pass/fail: peak RSS under `--target-mib` (default 200 MiB up to 5,000
//! pods, the issue's soak target, else 1,024 MiB).

// A benchmark tool: a panic with its message is the error report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tortie::datastore::kube::{self as kds, KubeSettings};
use tortie::datastore::DatastoreSnapshot;
use tortie_integration::fake_apiserver::FakeApiServer;

// Counts live heap bytes, to tell the datastore's own memory from what the
// allocator keeps after transient work.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not freed.
fn heap_bytes() -> u64 {
    let s = GLOBAL.stats();
    // Realloc growth and shrink are already booked into these two.
    (s.bytes_allocated as u64).saturating_sub(s.bytes_deallocated as u64)
}

#[derive(Debug, Clone, Copy)]
struct Size {
    pods: usize,
    policies: usize,
    nodes: usize,
    namespaces: usize,
    /// Peak RSS limit (0: the default for the size).
    target_mib: u64,
}

fn parse_args() -> (bool, Size) {
    let mut serve = false;
    let mut size = Size {
        pods: 5000,
        policies: 500,
        nodes: 100,
        namespaces: 50,
        target_mib: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--serve" => serve = true,
            "--pods" => size.pods = num(),
            "--policies" => size.policies = num(),
            "--nodes" => size.nodes = num(),
            "--namespaces" => size.namespaces = num(),
            "--target-mib" => size.target_mib = num() as u64,
            other => panic!("unknown argument {other}"),
        }
    }
    (serve, size)
}

fn namespace(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": format!("ns-{i}"), "labels": {"team": format!("t{}", i % 10)}}})
}

fn node(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": format!("node-{i}"),
                        "labels": {"kubernetes.io/hostname": format!("node-{i}"), "rack": format!("r{}", i % 8)},
                        "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                        "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
           "spec": {"podCIDRs": [format!("10.244.{}.0/24", i % 256)]},
           "status": {"addresses": [{"type": "InternalIP", "address": format!("192.0.2.{}", 10 + i % 200)},
                                    {"type": "Hostname", "address": format!("node-{i}")}],
                      "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                      "message": "kubelet is posting ready status"}],
                      "images": (0..20).map(|j| json!({"names": [format!("registry.example/app-{j}@sha256:{:064x}", j)], "sizeBytes": 123456789})).collect::<Vec<_>>()}})
}

/// A pod as the API server returns it, noise included.
fn pod(i: usize, size: Size, generation: usize) -> Value {
    let ns = format!("ns-{}", i % size.namespaces);
    let app = format!("app-{}", i % (size.policies.max(1)));
    let node = format!("node-{}", i % size.nodes);
    let ip = format!(
        "10.{}.{}.{}",
        244 + (i / 65536) % 8,
        (i / 256) % 256,
        i % 256
    );
    let name = format!("{app}-{i:06}-x7k2p");
    let last_applied = "x".repeat(800);
    let conditions: Vec<Value> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": "2026-11-27T08:00:05Z"}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"app": app, "tier": if i.is_multiple_of(3) { "frontend" } else { "backend" },
                       "pod-template-hash": "5d8f7c9b4", "generation": generation.to_string()},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied,
                            "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-5d8f7c9b4"),
                                 "uid": "2b8c8a4e-0000-4000-8000-000000000001", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}},
                              {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIPs": {}}}}]},
        "spec": {"nodeName": node, "serviceAccountName": "default", "restartPolicy": "Always",
            "containers": [
                {"name": "app", "image": format!("registry.example/{app}:1.2.3"),
                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                           {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                 "env": (0..8).map(|j| json!({"name": format!("ENV_{j}"), "value": format!("value-{j}")})).collect::<Vec<_>>(),
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                 "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 10}},
                {"name": "sidecar", "image": "registry.example/proxy:2.0", "args": ["--config", "/etc/proxy.yaml"]}],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "hostIP": "192.0.2.10", "podIP": ip, "podIPs": [{"ip": ip}],
            "qosClass": "Burstable", "startTime": "2026-11-27T08:00:00Z",
            "conditions": conditions,
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "registry.example/app:1.2.3",
                                   "imageID": format!("registry.example/app@sha256:{:064x}", i), "containerID": format!("containerd://{:064x}", i),
                                   "started": true, "state": {"running": {"startedAt": "2026-11-27T08:00:04Z"}}}]}})
}

fn policy(i: usize, size: Size, variant: usize) -> Value {
    let ns = format!("ns-{}", i % size.namespaces);
    let app = format!("app-{i}");
    let from = format!("app-{}", (i + 1 + variant) % size.policies.max(1));
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("allow-{app}"), "namespace": ns,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "y".repeat(400)}},
        "spec": {"podSelector": {"matchLabels": {"app": app}},
                 "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from}}},
                                       {"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 10)}},
                                        "podSelector": {"matchLabels": {"tier": "frontend"}}}],
                              "ports": [{"port": "http"}, {"port": 9090, "protocol": "TCP"}]}],
                 "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]},
                            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]}})
}

/// The child: serve, seed the first half, stream the rest on "stream".
fn serve(size: Size) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = FakeApiServer::start(Duration::from_secs(1)).await.unwrap();
        for i in 0..size.namespaces {
            server.apply(namespace(i)).unwrap();
        }
        for i in 0..size.nodes {
            server.apply(node(i)).unwrap();
        }
        server
            .apply(json!({"apiVersion": "tortie.io/v1alpha1", "kind": "BGPConfiguration",
                          "metadata": {"name": "default"}, "spec": {"asNumber": 64512}}))
            .unwrap();
        server
            .apply(json!({"apiVersion": "tortie.io/v1alpha1", "kind": "IPPool",
                          "metadata": {"name": "pods"}, "spec": {"cidr": "10.244.0.0/14", "natOutgoing": true}}))
            .unwrap();
        for i in 0..size.pods / 2 {
            server.apply(pod(i, size, 0)).unwrap();
        }
        for i in 0..size.policies / 2 {
            server.apply(policy(i, size, 0)).unwrap();
        }
        println!("PORT {}", server.addr().port());
        let mut lines = BufReader::new(std::io::stdin()).lines();
        while let Some(Ok(line)) = tokio::task::block_in_place(|| lines.next()) {
            if line.trim() != "stream" {
                continue;
            }
            // The rest arrives over the open watches, interleaved with
            // churn: relabelled pods, changed policies, deleted pods.
            for i in size.pods / 2..size.pods {
                server.apply(pod(i, size, 0)).unwrap();
                if i.is_multiple_of(10) {
                    server.apply(pod(i - size.pods / 2, size, 1)).unwrap();
                }
            }
            for i in size.policies / 2..size.policies {
                server.apply(policy(i, size, 0)).unwrap();
            }
            for i in 0..size.policies / 10 {
                server.apply(policy(i, size, 1)).unwrap();
            }
            for i in 0..size.pods / 100 {
                let p = pod(i * 7, size, 0);
                server.delete(
                    "v1",
                    "Pod",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap(),
                );
            }
            println!("DONE {}", server.resource_version());
        }
    });
}

/// (RSS now, peak RSS) in KiB, from /proc/self/status.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU seconds of this process.
fn cpu_secs() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(usage.user_time()) + tv(usage.system_time())
}

struct Row {
    step: String,
    wall: Duration,
    cpu: f64,
    rss: u64,
    hwm: u64,
    heap: u64,
    note: String,
}

fn main() {
    let (is_server, size) = parse_args();
    if is_server {
        serve(size);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .arg("--serve")
        .args(["--pods", &size.pods.to_string()])
        .args(["--policies", &size.policies.to_string()])
        .args(["--nodes", &size.nodes.to_string()])
        .args(["--namespaces", &size.namespaces.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fake API server child");
    let mut child_out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut child_in = child.stdin.take().unwrap();
    let port: u16 = loop {
        let line = child_out.next().expect("child output").unwrap();
        if let Some(p) = line.strip_prefix("PORT ") {
            break p.parse().unwrap();
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: f\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: f\n  context:\n    cluster: f\n    user: f\ncurrent-context: f\nusers:\n- name: f\n  user: {{}}\n"
        ),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let (base_rss, _) = rss_kib();
    eprintln!(
        "inline sizes: Pod {} B (ObjectMeta {}, PodSpec {}, PodStatus {}), Container {} B, NetworkPolicy {} B",
        std::mem::size_of::<k8s_openapi::api::core::v1::Pod>(),
        std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
        std::mem::size_of::<k8s_openapi::api::core::v1::PodSpec>(),
        std::mem::size_of::<k8s_openapi::api::core::v1::PodStatus>(),
        std::mem::size_of::<k8s_openapi::api::core::v1::Container>(),
        std::mem::size_of::<k8s_openapi::api::networking::v1::NetworkPolicy>(),
    );
    let measure = |rows: &mut Vec<Row>, step: &str, t0: Instant, c0: f64, note: String| {
        let (rss, hwm) = rss_kib();
        rows.push(Row {
            step: step.to_string(),
            wall: t0.elapsed(),
            cpu: cpu_secs() - c0,
            rss,
            hwm,
            heap: heap_bytes(),
            note,
        });
    };
    let node = "node-0";
    let expected_pods = size.pods - size.pods / 100;
    rt.block_on(async {
        let client = kds::connect(Some(&kubeconfig)).await.unwrap();
        let settings = KubeSettings {
            secrets_namespace: "tortie-system".into(),
            ..KubeSettings::default()
        };
        let (t0, c0) = (Instant::now(), cpu_secs());
        let mut rx = kds::spawn_with_client(client, settings);
        let first = wait(&mut rx, |s| s.generation > 0 && s.connected).await;
        let s = &first;
        measure(
            &mut rows,
            "initial list (half the objects, pages of 500)",
            t0,
            c0,
            format!("{} pods, {} policies", s.manifests.pods.len(), s.manifests.network_policies.len()),
        );

        drop(first);
        let (t0, c0) = (Instant::now(), cpu_secs());
        writeln!(child_in, "stream").unwrap();
        let done = tokio::task::spawn_blocking(move || {
            for line in child_out.by_ref() {
                if line.unwrap().starts_with("DONE") {
                    return;
                }
            }
        });
        let s = wait(&mut rx, |s| {
            s.manifests.pods.len() == expected_pods
                && s.manifests.network_policies.len() == size.policies
        })
        .await;
        done.await.unwrap();
        measure(
            &mut rows,
            "watch: the other half + churn streamed in",
            t0,
            c0,
            format!(
                "{} pods, {} policies, generation {}",
                s.manifests.pods.len(),
                s.manifests.network_policies.len(),
                s.generation
            ),
        );

        let (t0, c0) = (Instant::now(), cpu_secs());
        let model = tortie::model::Model::build(&s.manifests, None);
        let routing = model.node_routing(node).expect("node routing");
        let snapshot = model.policy_snapshot(node, &Default::default());
        let compiled = tortie_policy::compile(&snapshot);
        measure(
            &mut rows,
            &format!("Model::build + node_routing + policy compile for {node}"),
            t0,
            c0,
            format!(
                "{} model errors, {} mesh peers, {} local workloads, {} compile errors",
                model.errors.len(),
                routing.peer_sources.len(),
                snapshot.local.len(),
                compiled.errors.len()
            ),
        );
        // Hold everything (the daemon keeps the snapshot and the compiled
        // ruleset) while RSS is read.
        let (rss, hwm) = rss_kib();
        drop((model, snapshot, compiled, s));
        // Stop the datastore (it notices the dropped receiver at its next
        // event; the server sends a bookmark every second) and see what it
        // held: its cache, the client and the last snapshot.
        let h0 = heap_bytes();
        drop(rx);
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "the datastore (cache, client, last snapshot) held {:.1} MiB of live heap; {:.1} MiB left after it stopped",
            h0.saturating_sub(heap_bytes()) as f64 / 1048576.0,
            heap_bytes() as f64 / 1048576.0
        );
        println!(
            "\nsteady state with snapshot, model and compiled ruleset held: RSS {:.1} MiB (peak {:.1} MiB, {:.1} MiB before the datastore started)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            base_rss as f64 / 1024.0
        );
    });
    drop(child_in);
    let _ = child.wait();

    println!(
        "\n{} pods, {} policies, {} nodes, {} namespaces (the datastore's process only)\n",
        size.pods, size.policies, size.nodes, size.namespaces
    );
    println!("| step | wall | CPU (user+sys) | RSS after | peak RSS | live heap | |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} s | {:.2} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} |",
            r.step,
            r.wall.as_secs_f64(),
            r.cpu,
            r.rss as f64 / 1024.0,
            r.hwm as f64 / 1024.0,
            r.heap as f64 / 1048576.0,
            r.note
        );
    }
    let peak = rows.iter().map(|r| r.hwm).max().unwrap_or(0);
    let target_mib = match size.target_mib {
        0 if size.pods <= 5000 => 200,
        0 => 1024,
        t => t,
    };
    let target = target_mib * 1024;
    println!(
        "\npeak RSS {:.1} MiB: {} the {target_mib} MiB target",
        peak as f64 / 1024.0,
        if peak < target { "under" } else { "OVER" }
    );
    if peak >= target {
        std::process::exit(1);
    }
}

async fn wait(
    rx: &mut tokio::sync::watch::Receiver<Arc<DatastoreSnapshot>>,
    pred: impl FnMut(&Arc<DatastoreSnapshot>) -> bool,
) -> Arc<DatastoreSnapshot> {
    tokio::time::timeout(Duration::from_secs(1800), rx.wait_for(pred))
        .await
        .expect("timed out")
        .expect("datastore stopped")
        .clone()
}
