//! The Kubernetes datastore (agent/src/datastore/kube.rs) against the
//! in-process fake API server (tests/src/fake_apiserver.rs):
//!
//! ```text
//!   FakeApiServer (127.0.0.1:PORT, list/watch, bookmarks, 410, drops)
//!        ▲  HTTP/1.1, kubeconfig with http://127.0.0.1:PORT
//!        │
//!   kube::Client ─► spawn_with_client ─► watch::Receiver<DatastoreSnapshot>
//!                    KubeWriter ─► PATCH nodes/n1/status, POST events
//! ```
//!
//! No root and no network namespace: loopback only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tortie::datastore::kube::{self as kds, KubeSettings, KubeWriter, PeerReport};
use tortie::datastore::DatastoreSnapshot;
use tortie::model::{Model, ObjectError};
use tortie_integration::fake_apiserver::FakeApiServer;

const WAIT: Duration = Duration::from_secs(20);

fn settings() -> KubeSettings {
    KubeSettings {
        secrets_namespace: "tortie-system".into(),
        debounce: Duration::from_millis(50),
        probe_interval: Duration::from_millis(200),
        // Small pages, so lists are paginated (limit/continue) here too.
        page_size: 2,
    }
}

fn namespace(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn node(name: &str, cidr: &str, addr: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"rack": "rack-1"},
                        "annotations": {"tortie.io/asn": "64512", "node.alpha.kubernetes.io/ttl": "0"}},
           "spec": {"podCIDRs": [cidr], "providerID": "metal://x"},
           "status": {"addresses": [{"type": "InternalIP", "address": addr}],
                      "conditions": [{"type": "Ready", "status": "True"}],
                      "nodeInfo": {"kubeletVersion": "v1.33.0", "machineID": "m", "systemUUID": "u",
                                   "bootID": "b", "kernelVersion": "6", "osImage": "d",
                                   "containerRuntimeVersion": "c", "kubeProxyVersion": "k",
                                   "operatingSystem": "linux", "architecture": "amd64"}}})
}

fn pod(ns: &str, name: &str, node: &str, app: &str, ip: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}"},
                        "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
           "spec": {"nodeName": node,
                    "containers": [{"name": "c", "image": "nginx:1",
                                    "ports": [{"name": "http", "containerPort": 80}],
                                    "env": [{"name": "A", "value": "b"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn policy(ns: &str, name: &str, from_app: &str) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from_app}}}],
                                 "ports": [{"port": "http"}]}]}})
}

/// A small cluster: two namespaces, one node, three pods, one policy,
/// tortie's objects and two Secrets (one outside tortie-system).
fn seed(server: &FakeApiServer) {
    let objects = vec![
        namespace("shop", json!({"team": "a"})),
        namespace("tortie-system", json!({})),
        node("n1", "10.244.1.0/24", "192.0.2.11"),
        pod("shop", "web-1", "n1", "web", "10.244.1.10"),
        pod("shop", "web-2", "n1", "web", "10.244.1.11"),
        pod("shop", "client", "n1", "client", "10.244.1.12"),
        policy("shop", "web-from-client", "client"),
        json!({"apiVersion": "tortie.io/v1alpha1", "kind": "BGPConfiguration",
               "metadata": {"name": "default"}, "spec": {"asNumber": 64512, "nodeToNodeMesh": true}}),
        json!({"apiVersion": "tortie.io/v1alpha1", "kind": "IPPool",
               "metadata": {"name": "pool"}, "spec": {"cidr": "10.244.0.0/16", "natOutgoing": true}}),
        json!({"apiVersion": "tortie.io/v1alpha1", "kind": "BGPPeer",
               "metadata": {"name": "tor"}, "spec": {"peerIP": "192.0.2.1", "asNumber": 65001}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "tor-pw", "namespace": "tortie-system"},
               "data": {"password": "czNjcmV0"}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "elsewhere", "namespace": "shop"}, "data": {"x": "eA=="}}),
    ];
    for o in objects {
        server.apply(o).expect("seed object");
    }
}

struct Setup {
    server: FakeApiServer,
    rx: watch::Receiver<Arc<DatastoreSnapshot>>,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let server = FakeApiServer::start(Duration::from_millis(200))
        .await
        .expect("fake API server");
    seed(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.write_kubeconfig(dir.path()).expect("kubeconfig");
    let client = kds::connect(Some(&kubeconfig)).await.expect("client");
    let rx = kds::spawn_with_client(client.clone(), settings());
    Setup {
        server,
        rx,
        client,
        _dir: dir,
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<DatastoreSnapshot>>,
    what: &str,
    pred: impl FnMut(&Arc<DatastoreSnapshot>) -> bool,
) -> Arc<DatastoreSnapshot> {
    let result = tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .map(|r| r.map(|s| s.clone()));
    match result {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("datastore stopped while waiting for {what}"),
        Err(_) => {
            let s = rx.borrow().clone();
            panic!(
                "timed out waiting for {what}; last snapshot: generation {} connected {} errors {:?}",
                s.generation, s.connected, s.errors
            )
        }
    }
}

fn pod_names(s: &DatastoreSnapshot) -> Vec<String> {
    s.manifests
        .pods
        .iter()
        .map(|p| p.name.to_string())
        .collect()
}

/// The watcher's list requests (pages of `settings().page_size`), not the
/// one-item probes the datastore sends while disconnected.
fn list_requests(server: &FakeApiServer, path: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with(&format!("GET {path}?"))
                && !r.contains("watch=true")
                && !r.contains("limit=1&")
                && !r.ends_with("limit=1")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_snapshot_holds_every_kind_slimmed() {
    let mut t = setup().await;
    let before = t.rx.borrow().clone();
    assert_eq!(
        before.generation, 0,
        "a placeholder until everything is listed"
    );
    let s = wait_for(&mut t.rx, "first sync", |s| s.generation > 0 && s.connected).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.disconnected_since, None);
    let m = &s.manifests;
    assert_eq!(pod_names(&s), vec!["client", "web-1", "web-2"]);
    assert_eq!(m.namespaces.len(), 2);
    assert_eq!(m.nodes.len(), 1);
    assert_eq!(m.network_policies.len(), 1);
    // Only tortie-system's Secrets are watched.
    let secrets: Vec<_> = m
        .secrets
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(secrets, vec!["tor-pw"]);
    let mut kinds: Vec<_> = m.other.iter().map(|o| o.kind.clone()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["BGPConfiguration", "BGPPeer", "IPPool"]);
    let peer = m.other.iter().find(|o| o.kind == "BGPPeer").expect("peer");
    assert_eq!(peer.value["spec"]["peerIP"], "192.0.2.1");
    // Slimmed: labels and IPs stay, managedFields, foreign annotations,
    // images and env go.
    let web = &m.pods[1];
    assert_eq!(web.labels["app"], "web");
    assert!(web.annotations.is_empty());
    assert_eq!(&*web.named_ports[0].name, "http");
    assert_eq!(
        tortie_policy::model::pod_ips(web),
        vec!["10.244.1.10".parse::<std::net::IpAddr>().expect("ip")]
    );
    let n1 = &m.nodes[0];
    assert_eq!(
        n1.metadata
            .annotations
            .as_ref()
            .expect("ours kept")
            .keys()
            .collect::<Vec<_>>(),
        vec!["tortie.io/asn"]
    );
    assert!(n1.status.as_ref().expect("status").node_info.is_none());
    // Namespaces carry the label the API server adds.
    let shop = m
        .namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("shop"))
        .expect("shop");
    assert_eq!(
        shop.metadata.labels.as_ref().expect("labels")["kubernetes.io/metadata.name"],
        "shop"
    );
    // The lists were paginated (page size 2, three pods).
    assert!(t
        .server
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("continue=page-")));
    // Secrets were only ever asked for in tortie-system.
    assert!(t
        .server
        .requests()
        .iter()
        .filter(|r| r.contains("secrets"))
        .all(|r| r.starts_with("GET /api/v1/namespaces/tortie-system/secrets?")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_policies_and_nodes_follow_the_api() {
    let mut t = setup().await;
    let s0 = wait_for(&mut t.rx, "first sync", |s| s.generation > 0 && s.connected).await;

    // A pod appears with its labels and IP.
    t.server
        .apply(pod("shop", "web-3", "n1", "web", "10.244.1.13"))
        .expect("apply");
    let s = wait_for(&mut t.rx, "web-3", |s| {
        pod_names(s).contains(&"web-3".to_string())
    })
    .await;
    assert!(s.generation > s0.generation);
    let web3 = s
        .manifests
        .pods
        .iter()
        .find(|p| &*p.name == "web-3")
        .expect("web-3");
    assert_eq!(
        tortie_policy::model::pod_ips(web3),
        vec!["10.244.1.13".parse::<std::net::IpAddr>().expect("ip")]
    );

    // A policy changes.
    t.server
        .apply(policy("shop", "web-from-client", "monitoring"))
        .expect("apply");
    wait_for(&mut t.rx, "policy change", |s| {
        s.manifests.network_policies.iter().any(|p| {
            serde_json::to_value(p).expect("json")["spec"]["ingress"][0]["from"][0]["podSelector"]
                ["matchLabels"]["app"]
                == "monitoring"
        })
    })
    .await;

    // A node joins.
    t.server
        .apply(node("n2", "10.244.2.0/24", "192.0.2.12"))
        .expect("apply");
    wait_for(&mut t.rx, "node n2", |s| s.manifests.nodes.len() == 2).await;

    // A pod goes.
    assert!(t.server.delete("v1", "Pod", "shop", "web-1"));
    wait_for(&mut t.rx, "web-1 gone", |s| {
        !pod_names(s).contains(&"web-1".to_string())
    })
    .await;

    // An update to fields the agent drops publishes nothing new.
    let settled = t.rx.borrow().generation;
    let mut noisy = pod("shop", "web-2", "n1", "web", "10.244.1.11");
    noisy["status"]["conditions"][0]["lastProbeTime"] = json!("2026-11-27T10:00:00Z");
    noisy["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = json!("now");
    t.server.apply(noisy).expect("apply");
    // Then a real change; the generation must go up by exactly one.
    t.server
        .apply(pod("shop", "web-4", "n1", "web", "10.244.1.14"))
        .expect("apply");
    let s = wait_for(&mut t.rx, "web-4", |s| {
        pod_names(s).contains(&"web-4".to_string())
    })
    .await;
    assert!(
        s.generation <= settled + 2,
        "noise published: {} -> {}",
        settled,
        s.generation
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_keeps_the_objects_and_resumes_without_relisting() {
    let mut t = setup().await;
    wait_for(&mut t.rx, "first sync", |s| s.generation > 0 && s.connected).await;
    // Let a bookmark or two arrive, so the resume point is current.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pod_lists = list_requests(&t.server, "/api/v1/pods");

    t.server.set_down(true);
    let s = wait_for(&mut t.rx, "disconnected", |s| !s.connected).await;
    assert!(s.disconnected_since.is_some());
    assert!(!s.errors.is_empty());
    assert_eq!(pod_names(&s).len(), 3, "the last objects stay in force");

    // Changes made while the agent cannot see them arrive on resume.
    t.server
        .apply(pod("shop", "late", "n1", "web", "10.244.1.20"))
        .expect("apply");
    t.server.set_down(false);
    let s = wait_for(&mut t.rx, "reconnected with the change", |s| {
        s.connected && pod_names(s).contains(&"late".to_string())
    })
    .await;
    assert_eq!(s.disconnected_since, None);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(
        list_requests(&t.server, "/api/v1/pods"),
        pod_lists,
        "resumed from the last resourceVersion, no relist"
    );
    assert!(t
        .server
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("allowWatchBookmarks=true")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_forces_a_relist_that_replaces_the_objects() {
    let mut t = setup().await;
    wait_for(&mut t.rx, "first sync", |s| s.generation > 0 && s.connected).await;
    let pod_lists = list_requests(&t.server, "/api/v1/pods");
    // History is compacted and the watches expire. While the watcher
    // relists, a pod goes and another comes.
    t.server.gone();
    assert!(t.server.delete("v1", "Pod", "shop", "client"));
    t.server
        .apply(pod("shop", "after-gone", "n1", "web", "10.244.1.30"))
        .expect("apply");
    let s = wait_for(&mut t.rx, "relisted", |s| {
        s.connected
            && pod_names(s).contains(&"after-gone".to_string())
            && !pod_names(s).contains(&"client".to_string())
    })
    .await;
    assert_eq!(pod_names(&s), vec!["after-gone", "web-1", "web-2"]);
    assert!(
        list_requests(&t.server, "/api/v1/pods") > pod_lists,
        "410 Gone must force a new list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_down_from_the_start_is_reported_then_synced() {
    let server = FakeApiServer::start(Duration::from_millis(200))
        .await
        .expect("server");
    server.set_down(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.write_kubeconfig(dir.path()).expect("kubeconfig");
    let client = kds::connect(Some(&kubeconfig)).await.expect("client");
    let mut rx = kds::spawn_with_client(client, settings());
    let s = wait_for(&mut rx, "watch errors", |s| {
        s.errors.iter().any(|e| e.contains("watching pods"))
    })
    .await;
    assert_eq!(s.generation, 0);
    assert!(!s.connected && s.disconnected_since.is_some());
    seed(&server);
    server.set_down(false);
    let s = wait_for(&mut rx, "first sync after the API came up", |s| {
        s.generation > 0 && s.connected
    })
    .await;
    assert_eq!(pod_names(&s).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_sets_the_node_condition_and_events_on_our_objects() {
    let t = setup().await;
    let writer = KubeWriter::new(t.client.clone(), "n1");
    let peers = vec![
        PeerReport {
            address: "192.0.2.1".into(),
            state: "Established".into(),
            last_error: None,
        },
        PeerReport {
            address: "192.0.2.2".into(),
            state: "Active".into(),
            last_error: Some("connection refused".into()),
        },
    ];
    writer.report_bgp(&peers, false).await.expect("patch");
    let n1 = t.server.get("nodes", "", "n1").expect("n1");
    let conditions = n1["status"]["conditions"].as_array().expect("conditions");
    assert_eq!(
        conditions.len(),
        2,
        "the kubelet's Ready condition stays: {conditions:?}"
    );
    let bgp = conditions
        .iter()
        .find(|c| c["type"] == kds::BGP_CONDITION)
        .expect("ours");
    assert_eq!(bgp["status"], "False");
    assert_eq!(bgp["reason"], "SessionsDown");
    assert_eq!(
        bgp["message"],
        "1/2 BGP sessions Established; 192.0.2.2 Active: connection refused"
    );
    let rv = n1["metadata"]["resourceVersion"].clone();
    // Unchanged: not written again.
    writer.report_bgp(&peers, false).await.expect("patch");
    assert_eq!(
        t.server.get("nodes", "", "n1").expect("n1")["metadata"]["resourceVersion"],
        rv
    );

    let err = |kind: &str, name: &str| ObjectError {
        kind: kind.into(),
        name: name.into(),
        field: "spec.peerIP".into(),
        problem: "\"192.0.2.300\" is not an IP address".into(),
        source: None,
        kept_previous: false,
    };
    let errors = vec![err("BGPPeer", "tor"), err("Pod", "web-1")];
    assert!(writer.report_object_errors(&errors).await.is_empty());
    assert!(
        writer.report_object_errors(&errors).await.is_empty(),
        "reported once"
    );
    let events = t.server.objects("events");
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev["regarding"]["kind"], "BGPPeer");
    assert_eq!(ev["regarding"]["name"], "tor");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "InvalidObject");
    assert_eq!(ev["reportingController"], "tortie-agent");
    assert_eq!(ev["reportingInstance"], "n1");
    assert_eq!(
        ev["note"],
        "spec.peerIP: \"192.0.2.300\" is not an IP address"
    );
}

/// The same scenario as the file datastore's: the model built from the
/// Kubernetes snapshot routes and polices the node, and follows changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_follows_the_api() {
    let mut t = setup().await;
    let s = wait_for(&mut t.rx, "first sync", |s| s.generation > 0 && s.connected).await;
    let model = Model::build(&s.manifests, None);
    assert!(model.errors.is_empty(), "{:?}", model.errors);
    let routing = model.node_routing("n1").expect("n1 routes");
    assert_eq!(routing.bgp_address.to_string(), "192.0.2.11/24");
    assert_eq!(routing.pod_cidrs[0].to_string(), "10.244.1.0/24");
    assert_eq!(routing.pools.len(), 1);
    assert!(routing
        .peer_sources
        .values()
        .any(|source| source == "BGPPeer tor"));
    let compiled = tortie_policy::compile(&model.policy_snapshot("n1", &Default::default()));
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);

    // A second node joins: n1 meshes with it.
    t.server
        .apply(node("n2", "10.244.2.0/24", "192.0.2.12"))
        .expect("apply");
    let s = wait_for(&mut t.rx, "n2", |s| s.manifests.nodes.len() == 2).await;
    let model = Model::build(&s.manifests, Some(&model));
    let routing = model.node_routing("n1").expect("n1 routes");
    assert_eq!(
        routing
            .peer_sources
            .get(&"192.0.2.12".parse().expect("ip"))
            .map(String::as_str),
        Some("mesh")
    );

    // A broken BGPPeer keeps its previous version and says so.
    t.server
        .apply(json!({"apiVersion": "tortie.io/v1alpha1", "kind": "BGPPeer",
                      "metadata": {"name": "tor"}, "spec": {"peerIP": "192.0.2.300", "asNumber": 65001}}))
        .expect("apply");
    let s = wait_for(&mut t.rx, "broken peer", |s| {
        s.manifests
            .other
            .iter()
            .any(|o| o.value["spec"]["peerIP"] == "192.0.2.300")
    })
    .await;
    let model = Model::build(&s.manifests, Some(&model));
    assert!(
        model
            .errors
            .iter()
            .any(|e| e.starts_with("BGPPeer tor: spec.peerIP")),
        "{:?}",
        model.errors
    );
    assert!(model.object_errors.iter().all(|e| e.kept_previous));
    assert!(model
        .node_routing("n1")
        .expect("routes")
        .peer_sources
        .values()
        .any(|v| v == "BGPPeer tor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_are_named_in_the_errors() {
    let server = FakeApiServer::start(Duration::from_millis(200))
        .await
        .expect("server");
    server.set_crds_installed(false);
    seed(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.write_kubeconfig(dir.path()).expect("kubeconfig");
    let client = kds::connect(Some(&kubeconfig)).await.expect("client");
    let mut rx = kds::spawn_with_client(client, settings());
    let s = wait_for(&mut rx, "CRD errors", |s| {
        s.errors
            .iter()
            .any(|e| e.contains("watching bgppeers") && e.contains("kubectl apply -k deploy/"))
    })
    .await;
    assert_eq!(s.generation, 0, "no model without tortie's objects");
    server.set_crds_installed(true);
    wait_for(&mut rx, "synced once the CRDs exist", |s| {
        s.generation > 0 && s.connected
    })
    .await;
}
