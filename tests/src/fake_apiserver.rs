//! An in-process Kubernetes API server that speaks just enough list/watch
//! for tortie's Kubernetes datastore, because no real API server can be
//! installed here (DESIGN.md, principle 5).
//!
//! Owns: an object store with a global resourceVersion, an event log per
//! change, and HTTP/1.1 on loopback:
//!
//! ```text
//!   GET   /version
//!   GET   /api/v1/{nodes,namespaces,pods}            list (limit/continue) or ?watch=1
//!   GET   /api/v1/namespaces/NS/{pods,secrets}       same, one namespace
//!   GET   /apis/networking.k8s.io/v1/networkpolicies
//!   GET   /apis/tortie.io/v1alpha1/{bgpconfigurations,bgppeers,ippools}
//!   PATCH /api/v1/nodes/NAME/status                  strategic merge of conditions (by type)
//!   POST  /apis/events.k8s.io/v1/namespaces/NS/events  stored as objects
//! ```
//!
//! Watches are chunked JSON lines from the requested resourceVersion: the
//! log's later events, then live ones, BOOKMARKs when asked
//! (`allowWatchBookmarks`), and for a resourceVersion older than the
//! compacted history an `ERROR` event with code 410 (Expired), as the real
//! server sends it. Tests can drop every connection and refuse new ones
//! ([`FakeApiServer::set_down`]) and expire history ([`FakeApiServer::gone`]).
//!
//! Every response closes its connection (`Connection: close`), which keeps
//! the server a page long; clients reconnect per request, as they may.
//!
//! Objects are stored as their JSON text (shared by the store, the event
//! log and list pages), not as `serde_json::Value` trees, so the soak can
//! hold a 150,000-pod cluster in a few GB rather than tens.
//!
//! Must never: listen anywhere but 127.0.0.1.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A resource the server knows.
#[derive(Debug, Clone, Copy)]
struct ResourceType {
    /// `api/v1` or `apis/GROUP/VERSION`.
    prefix: &'static str,
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
}

const RESOURCES: &[ResourceType] = &[
    ResourceType {
        prefix: "api/v1",
        api_version: "v1",
        kind: "Node",
        plural: "nodes",
        namespaced: false,
    },
    ResourceType {
        prefix: "api/v1",
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    ResourceType {
        prefix: "api/v1",
        api_version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
    },
    ResourceType {
        prefix: "api/v1",
        api_version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
    },
    ResourceType {
        prefix: "apis/networking.k8s.io/v1",
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        namespaced: true,
    },
    ResourceType {
        prefix: "apis/tortie.io/v1alpha1",
        api_version: "tortie.io/v1alpha1",
        kind: "BGPConfiguration",
        plural: "bgpconfigurations",
        namespaced: false,
    },
    ResourceType {
        prefix: "apis/tortie.io/v1alpha1",
        api_version: "tortie.io/v1alpha1",
        kind: "BGPPeer",
        plural: "bgppeers",
        namespaced: false,
    },
    ResourceType {
        prefix: "apis/tortie.io/v1alpha1",
        api_version: "tortie.io/v1alpha1",
        kind: "IPPool",
        plural: "ippools",
        namespaced: false,
    },
    ResourceType {
        prefix: "apis/events.k8s.io/v1",
        api_version: "events.k8s.io/v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
    },
];

fn by_kind(api_version: &str, kind: &str) -> Option<ResourceType> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.api_version == api_version && r.kind == kind)
}

fn by_path(prefix: &str, plural: &str) -> Option<ResourceType> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.prefix == prefix && r.plural == plural)
}

/// (plural, namespace or "", name).
type Key = (String, String, String);

enum WatchMsg {
    /// One JSON line.
    Line(String),
    /// End the stream cleanly (terminating chunk).
    End,
    /// Cut the connection without ending the chunked body.
    Drop,
}

struct Watcher {
    plural: &'static str,
    namespace: Option<String>,
    bookmarks: bool,
    kind: &'static str,
    api_version: &'static str,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

struct LogEntry {
    rv: u64,
    plural: &'static str,
    namespace: String,
    type_: &'static str,
    object: Arc<str>,
}

/// A stored object: its JSON text and uid (kept across updates).
#[derive(Clone)]
struct Stored {
    json: Arc<str>,
    uid: String,
}

/// `{"type": TYPE, "object": OBJECT}` without re-parsing the object.
fn event_line(type_: &str, object: &str) -> String {
    format!("{{\"type\":\"{type_}\",\"object\":{object}}}")
}

fn parse_stored(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Stored>,
    log: Vec<LogEntry>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    watchers: Vec<Watcher>,
    down: bool,
    /// false: tortie.io paths answer 404, as before `kubectl apply -k deploy/`.
    crds_missing: bool,
    requests: Vec<String>,
    /// Remaining pages of lists: token -> (list resourceVersion, items).
    pages: BTreeMap<String, (u64, VecDeque<Arc<str>>)>,
    next_token: u64,
}

impl State {
    fn notify(&mut self, entry: &LogEntry) {
        let line = event_line(entry.type_, &entry.object);
        self.watchers.retain(|w| {
            let matches = w.plural == entry.plural
                && w.namespace.as_ref().is_none_or(|ns| *ns == entry.namespace);
            !matches || w.tx.send(WatchMsg::Line(line.clone())).is_ok()
        });
    }

    fn record(
        &mut self,
        plural: &'static str,
        namespace: String,
        type_: &'static str,
        object: Arc<str>,
    ) {
        let entry = LogEntry {
            rv: self.rv,
            plural,
            namespace,
            type_,
            object,
        };
        self.notify(&entry);
        self.log.push(entry);
    }
}

/// The server; dropping it stops the listener and cuts every watch.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let mut st = self.lock();
        for w in st.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Drop);
        }
    }
}

impl FakeApiServer {
    /// Listens on 127.0.0.1 (a free port) on the current tokio runtime and
    /// sends a BOOKMARK on every bookmark-enabled watch each
    /// `bookmark_interval`.
    pub async fn start(bookmark_interval: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake API server")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            rv: 1,
            ..State::default()
        }));
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accept_state.clone();
                let down = state.lock().unwrap_or_else(|e| e.into_inner()).down;
                if down {
                    // A dead API server: the connection closes at once.
                    drop(stream);
                    continue;
                }
                tokio::spawn(async move {
                    let _ = serve_connection(stream, state).await;
                });
            }
        });
        let tick_state = state.clone();
        let bookmarks = tokio::spawn(async move {
            let mut tick = tokio::time::interval(bookmark_interval);
            loop {
                tick.tick().await;
                let mut st = tick_state.lock().unwrap_or_else(|e| e.into_inner());
                let rv = st.rv.to_string();
                st.watchers.retain(|w| {
                    !w.bookmarks
                        || w.tx
                            .send(WatchMsg::Line(
                                json!({
                                    "type": "BOOKMARK",
                                    "object": {"apiVersion": w.api_version, "kind": w.kind,
                                               "metadata": {"resourceVersion": rv}}
                                })
                                .to_string(),
                            ))
                            .is_ok()
                });
            }
        });
        Ok(FakeApiServer {
            addr,
            state,
            tasks: vec![accept, bookmarks],
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (plain HTTP, no credentials)
    /// into `dir` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
                self.url()
            ),
        )?;
        Ok(path)
    }

    /// Creates or replaces an object (ADDED or MODIFIED to watchers).
    /// Namespaced objects without a namespace go to `default`. Returns its
    /// new resourceVersion.
    pub fn apply(&self, obj: Value) -> Result<u64> {
        apply_in(&self.state, obj)
    }

    /// Applies every document of a YAML stream.
    pub fn apply_yaml(&self, text: &str) -> Result<()> {
        for (_, doc) in tortie::manifests::split_documents(text) {
            let value: Value = serde_norway::from_str(&doc).context("fake API server: YAML")?;
            if !value.is_null() {
                self.apply(value)?;
            }
        }
        Ok(())
    }

    /// Deletes an object (DELETED to watchers); false if it did not exist.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(rt) = by_kind(api_version, kind) else {
            return false;
        };
        let ns = if rt.namespaced { namespace } else { "" };
        let mut st = self.lock();
        let key = (rt.plural.to_string(), ns.to_string(), name.to_string());
        let Some(stored) = st.objects.remove(&key) else {
            return false;
        };
        st.rv += 1;
        let mut obj = parse_stored(&stored.json);
        obj["metadata"]["resourceVersion"] = st.rv.to_string().into();
        st.record(rt.plural, ns.to_string(), "DELETED", obj.to_string().into());
        true
    }

    /// One stored object.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(plural.to_string(), namespace.to_string(), name.to_string()))
            .map(|s| parse_stored(&s.json))
    }

    /// Every stored object of a resource (e.g. the `events` the agent wrote).
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|(_, v)| parse_stored(&v.json))
            .collect()
    }

    /// Forgets the history: every open watch gets an ERROR 410 (Expired)
    /// and ends, and any watch from a resourceVersion before now gets the
    /// same, so clients must relist.
    pub fn gone(&self) {
        let mut st = self.lock();
        st.compacted = st.rv + 1;
        st.log.clear();
        let rv = st.rv;
        for w in st.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Line(expired(rv).to_string()));
            let _ = w.tx.send(WatchMsg::End);
        }
    }

    /// `true`: cut every open connection and close new ones at once (a
    /// crashed or unreachable API server). `false`: serve again.
    pub fn set_down(&self, down: bool) {
        let mut st = self.lock();
        st.down = down;
        if down {
            for w in st.watchers.drain(..) {
                let _ = w.tx.send(WatchMsg::Drop);
            }
        }
    }

    /// `false`: the tortie.io resources answer 404 Not Found, as on a
    /// cluster where the CRDs are not installed.
    pub fn set_crds_installed(&self, installed: bool) {
        self.lock().crds_missing = !installed;
    }

    /// Open watch streams (of a resource, or all).
    pub fn watch_count(&self, plural: Option<&str>) -> usize {
        self.lock()
            .watchers
            .iter()
            .filter(|w| !w.tx.is_closed() && plural.is_none_or(|p| p == w.plural))
            .count()
    }

    /// Every request line served so far (`GET /api/v1/pods?...`).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }
}

fn apply_in(state: &Mutex<State>, mut obj: Value) -> Result<u64> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let Some(rt) = by_kind(&api_version, &kind) else {
        bail!("fake API server: unknown kind {api_version} {kind}");
    };
    let Some(name) = obj["metadata"]["name"].as_str().map(String::from) else {
        bail!("fake API server: {kind} without metadata.name");
    };
    let namespace = if rt.namespaced {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        obj["metadata"]["namespace"] = ns.clone().into();
        ns
    } else {
        String::new()
    };
    if rt.kind == "Namespace" {
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name.clone().into();
    }
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.rv += 1;
    let rv = st.rv;
    obj["metadata"]["resourceVersion"] = rv.to_string().into();
    let key = (rt.plural.to_string(), namespace.clone(), name);
    let existing = st.objects.get(&key).map(|s| s.uid.clone());
    let type_ = if existing.is_some() {
        "MODIFIED"
    } else {
        "ADDED"
    };
    let uid = existing.unwrap_or_else(|| format!("00000000-0000-4000-8000-{rv:012}"));
    obj["metadata"]["uid"] = uid.clone().into();
    let json: Arc<str> = obj.to_string().into();
    st.objects.insert(
        key,
        Stored {
            json: json.clone(),
            uid,
        },
    );
    st.record(rt.plural, namespace, type_, json);
    Ok(rv)
}

fn expired(rv: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: history compacted at {rv}"),
        "reason": "Expired", "code": 410}})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Vec<u8>,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

async fn read_request(stream: &mut TcpStream) -> Result<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            bail!("request head too long");
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the request head");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let head = String::from_utf8_lossy(buf.get(..head_end).unwrap_or_default()).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut content_length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    if content_length > MAX_BODY {
        bail!("request body too long");
    }
    let mut body = buf.get(head_end + 4..).unwrap_or_default().to_vec();
    while body.len() < content_length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let (path, query_text) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let query = query_text
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect();
    Ok(Request {
        method,
        path: path.to_string(),
        query,
        body,
    })
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let decoded = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match decoded {
                    Some(d) => out.push(d),
                    None => {
                        out.push(b'%');
                        out.extend_from_slice(&hex);
                    }
                }
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

async fn respond(stream: &mut TcpStream, code: u16, body: &Value) -> Result<()> {
    respond_text(stream, code, &serde_json::to_vec(body)?).await
}

async fn respond_text(stream: &mut TcpStream, code: u16, text: &[u8]) -> Result<()> {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        410 => "Gone",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(text).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

async fn write_chunk(stream: &mut TcpStream, line: &str) -> Result<()> {
    let mut text = line.as_bytes().to_vec();
    text.push(b'\n');
    stream
        .write_all(format!("{:x}\r\n", text.len()).as_bytes())
        .await?;
    stream.write_all(&text).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await?;
    Ok(())
}

/// Where a path points.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest): (String, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("api/v1".to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("apis/{group}/{version}"), rest),
        _ => return None,
    };
    let find = |plural: &str| by_path(&prefix, plural);
    let s = |x: &&str| x.to_string();
    match rest {
        [plural] => Some(Target {
            rt: find(plural)?,
            namespace: None,
            name: None,
            subresource: None,
        }),
        ["namespaces", ns, plural] if find(plural).is_some_and(|r| r.namespaced) => Some(Target {
            rt: find(plural)?,
            namespace: Some(s(ns)),
            name: None,
            subresource: None,
        }),
        [plural, name] => Some(Target {
            rt: find(plural)?,
            namespace: None,
            name: Some(s(name)),
            subresource: None,
        }),
        [plural, name, sub] => Some(Target {
            rt: find(plural)?,
            namespace: None,
            name: Some(s(name)),
            subresource: Some(s(sub)),
        }),
        ["namespaces", ns, plural, name] => Some(Target {
            rt: find(plural)?,
            namespace: Some(s(ns)),
            name: Some(s(name)),
            subresource: None,
        }),
        _ => None,
    }
}

async fn serve_connection(mut stream: TcpStream, state: Arc<Mutex<State>>) -> Result<()> {
    let req = read_request(&mut stream).await?;
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    {
        let query: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lock()
            .requests
            .push(format!("{} {}?{}", req.method, req.path, query.join("&")));
    }
    if req.path == "/version" {
        let v = json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-tortie-fake",
                       "platform": "linux/amd64"});
        return respond(&mut stream, 200, &v).await;
    }
    let crds_missing = lock().crds_missing;
    let target = parse_path(&req.path)
        .filter(|t| !(crds_missing && t.rt.prefix.starts_with("apis/tortie.io/")));
    let Some(target) = target else {
        return respond(&mut stream, 404, &status(404, "NotFound", "no such path")).await;
    };
    match (req.method.as_str(), &target.name) {
        ("GET", None) => {
            let watch = matches!(
                req.query.get("watch").map(String::as_str),
                Some("1" | "true")
            );
            if watch {
                serve_watch(stream, state, &target, &req.query).await
            } else {
                let body = list(&mut lock(), &target, &req.query);
                respond_text(&mut stream, 200, body.as_bytes()).await
            }
        }
        ("GET", Some(name)) => {
            let key = (
                target.rt.plural.to_string(),
                target.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let found = lock().objects.get(&key).map(|s| s.json.clone());
            match found {
                Some(obj) => respond_text(&mut stream, 200, obj.as_bytes()).await,
                None => respond(&mut stream, 404, &status(404, "NotFound", "not found")).await,
            }
        }
        ("PATCH", Some(name))
            if target.rt.plural == "nodes" && target.subresource.as_deref() == Some("status") =>
        {
            let patch: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let key = ("nodes".to_string(), String::new(), name.clone());
            let node = lock().objects.get(&key).map(|s| parse_stored(&s.json));
            let Some(mut node) = node else {
                return respond(&mut stream, 404, &status(404, "NotFound", "no such node")).await;
            };
            merge_conditions(&mut node, &patch);
            node["metadata"]["resourceVersion"] = Value::Null;
            let rv = apply_in(&state, node.clone()).unwrap_or(0);
            node["metadata"]["resourceVersion"] = rv.to_string().into();
            respond(&mut stream, 200, &node).await
        }
        ("POST", None) if target.rt.plural == "events" => {
            let mut ev: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            ev["apiVersion"] = "events.k8s.io/v1".into();
            ev["kind"] = "Event".into();
            if let Some(ns) = &target.namespace {
                ev["metadata"]["namespace"] = ns.clone().into();
            }
            let rv = apply_in(&state, ev.clone()).unwrap_or(0);
            ev["metadata"]["resourceVersion"] = rv.to_string().into();
            respond(&mut stream, 201, &ev).await
        }
        _ => {
            respond(
                &mut stream,
                404,
                &status(404, "NotFound", "not supported by the fake"),
            )
            .await
        }
    }
}

/// Strategic merge of `status.conditions` by `type`, as the API server
/// does for Node conditions.
fn merge_conditions(node: &mut Value, patch: &Value) {
    let Some(new) = patch["status"]["conditions"].as_array() else {
        return;
    };
    if !node["status"]["conditions"].is_array() {
        node["status"]["conditions"] = json!([]);
    }
    if let Some(existing) = node["status"]["conditions"].as_array_mut() {
        for c in new {
            match existing.iter_mut().find(|e| e["type"] == c["type"]) {
                Some(e) => *e = c.clone(),
                None => existing.push(c.clone()),
            }
        }
    }
}

/// The list response's JSON text (items spliced in as stored).
fn list(st: &mut State, target: &Target, query: &BTreeMap<String, String>) -> String {
    let rt = target.rt;
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let (rv, mut items) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match st.pages.remove(token) {
            Some(page) => page,
            None => return status(410, "Expired", "continue token expired").to_string(),
        },
        None => {
            let items: VecDeque<Arc<str>> = st
                .objects
                .iter()
                .filter(|((p, ns, _), _)| {
                    p == rt.plural && target.namespace.as_ref().is_none_or(|n| n == ns)
                })
                .map(|(_, v)| v.json.clone())
                .collect();
            (st.rv, items)
        }
    };
    let rest = if items.len() > limit {
        items.split_off(limit)
    } else {
        VecDeque::new()
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if !rest.is_empty() {
        st.next_token += 1;
        let token = format!("page-{}", st.next_token);
        metadata["continue"] = token.clone().into();
        metadata["remainingItemCount"] = rest.len().into();
        st.pages.insert(token, (rv, rest));
    }
    let head = json!({
        "apiVersion": rt.api_version,
        "kind": format!("{}List", rt.kind),
        "metadata": metadata,
    })
    .to_string();
    let mut body =
        String::with_capacity(head.len() + 16 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    // `{...,"items":[a,b]}`: the head without its closing brace.
    body.push_str(head.strip_suffix('}').unwrap_or(&head));
    body.push_str(",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    body
}

async fn serve_watch(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    target: &Target,
    query: &BTreeMap<String, String>,
) -> Result<()> {
    let rt = target.rt;
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = matches!(
        query.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if from < st.compacted {
            let _ = tx.send(WatchMsg::Line(expired(st.rv).to_string()));
            let _ = tx.send(WatchMsg::End);
        } else {
            for e in st.log.iter().filter(|e| {
                e.rv > from
                    && e.plural == rt.plural
                    && target.namespace.as_ref().is_none_or(|n| *n == e.namespace)
            }) {
                let _ = tx.send(WatchMsg::Line(event_line(e.type_, &e.object)));
            }
            st.watchers.push(Watcher {
                plural: rt.plural,
                namespace: target.namespace.clone(),
                bookmarks,
                kind: rt.kind,
                api_version: rt.api_version,
                tx,
            });
        }
    }
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::time::sleep_until(deadline) => Some(WatchMsg::End),
        };
        match msg {
            Some(WatchMsg::Line(line)) => write_chunk(&mut stream, &line).await?,
            Some(WatchMsg::End) | None => {
                stream.write_all(b"0\r\n\r\n").await?;
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Some(WatchMsg::Drop) => {
                // No terminating chunk: the client sees a broken stream.
                drop(stream);
                return Ok(());
            }
        }
    }
}
