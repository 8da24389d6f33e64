//! Metrics, health and readiness on `--metrics-addr`: `/metrics`
//! (Prometheus text format 0.0.4), `/healthz`, `/readyz`.
//!
//! Owns: the counters and histograms the agent's loops record into
//! ([`Metrics`]), the pure rendering of a scrape ([`render`]), the pure
//! health and readiness decisions ([`health`], [`readiness`]), and a
//! minimal HTTP/1.1 server (one request per connection, GET only).
//! Must never: block a loop that records (recording is a short lock), or
//! give per-peer series to node-mesh peers (a 1,000-node cluster would
//! have 1,000 series per node; the mesh is aggregated under
//! `source="mesh"`).
//!
//! Series:
//!
//! ```text
//! tortie_up                                        gauge    1
//! tortie_ready                                     gauge    0|1
//! tortie_datastore_connected                       gauge    0|1
//! tortie_bgp_sessions{kind="mesh"|"external",state="Idle"|...}           gauge
//! tortie_bgp_prefixes_received{source="mesh",peer="all"}                 gauge (sum over the mesh)
//! tortie_bgp_prefixes_received{source="BGPPeer NAME",peer="ADDR"}        gauge
//! tortie_bgp_prefixes_advertised{...same labels...}                      gauge
//! tortie_routes_installed                          gauge
//! tortie_routes_failed                             gauge
//! tortie_policy_workloads / tortie_policy_policies gauge
//! tortie_route_sync_duration_seconds               histogram
//! tortie_policy_sync_duration_seconds              histogram
//! tortie_cni_add_to_policy_seconds                 histogram
//! tortie_errors_total{kind="datastore"|"model"|"routing"|"policy"|"nat"|"fib"|"cni"}  counter
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Error kinds counted in `tortie_errors_total` (always all emitted, so
/// a rate() over a kind that never failed is 0, not absent).
pub const ERROR_KINDS: [&str; 7] = [
    "datastore",
    "model",
    "routing",
    "policy",
    "nat",
    "fib",
    "cni",
];

/// RFC 4271 state names, in order.
pub const STATES: [&str; 6] = [
    "Idle",
    "Connect",
    "Active",
    "OpenSent",
    "OpenConfirm",
    "Established",
];

/// Bucket bounds (seconds) of every duration histogram: 1 ms to 10 s.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket histogram's data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Non-cumulative counts per bucket of [`BUCKETS`], plus +Inf last.
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// What the loops record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    pub route_sync: Histogram,
    pub policy_sync: Histogram,
    pub cni_add: Histogram,
    pub errors: BTreeMap<String, u64>,
}

/// The recorder shared by the agent's tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Recorded>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Recorded)) {
        if let Ok(mut r) = self.inner.lock() {
            f(&mut r);
        }
    }

    pub fn route_sync(&self, d: Duration) {
        self.with(|r| r.route_sync.observe(d));
    }

    pub fn policy_sync(&self, d: Duration) {
        self.with(|r| r.policy_sync.observe(d));
    }

    pub fn cni_add(&self, d: Duration) {
        self.with(|r| r.cni_add.observe(d));
    }

    /// Counts one error of `kind` (one of [`ERROR_KINDS`]).
    pub fn error(&self, kind: &str) {
        self.with(|r| *r.errors.entry(kind.to_string()).or_default() += 1);
    }

    /// A copy for rendering.
    pub fn snapshot(&self) -> Recorded {
        self.inner.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// One BGP peer at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSample {
    pub address: String,
    /// `mesh` or `BGPPeer NAME` (anything not `mesh` is external).
    pub source: String,
    pub state: String,
    pub received: u64,
    pub advertised: u64,
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub ready: bool,
    pub datastore_connected: bool,
    pub peers: Vec<PeerSample>,
    pub routes_installed: u64,
    pub routes_failed: u64,
    pub policy_workloads: u64,
    pub policy_policies: u64,
}

/// The source label of mesh peers.
pub const MESH: &str = "mesh";

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, "histogram", help);
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// Renders one scrape (deterministic: sorted labels and series).
pub fn render(rec: &Recorded, g: &Gauges) -> String {
    let mut out = String::new();
    gauge(&mut out, "tortie_up", "The agent process is running.", 1);
    gauge(
        &mut out,
        "tortie_ready",
        "1 once the first full sync of routes and policy is done and the datastore is connected.",
        u64::from(g.ready),
    );
    gauge(
        &mut out,
        "tortie_datastore_connected",
        "1 while the datastore is connected.",
        u64::from(g.datastore_connected),
    );

    header(
        &mut out,
        "tortie_bgp_sessions",
        "gauge",
        "BGP sessions by kind (mesh or external) and RFC 4271 state.",
    );
    let mut sessions: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for kind in ["external", "mesh"] {
        for s in STATES {
            sessions.insert((kind, s), 0);
        }
    }
    for p in &g.peers {
        let kind = if p.source == MESH { "mesh" } else { "external" };
        *sessions.entry((kind, p.state.as_str())).or_default() += 1;
    }
    for ((kind, state), n) in &sessions {
        let _ = writeln!(
            out,
            "tortie_bgp_sessions{{kind=\"{kind}\",state=\"{}\"}} {n}",
            escape(state)
        );
    }

    // Per external peer; the mesh summed.
    let mut per_peer: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut mesh = (0u64, 0u64);
    let mut has_mesh = false;
    for p in &g.peers {
        if p.source == MESH {
            has_mesh = true;
            mesh.0 += p.received;
            mesh.1 += p.advertised;
        } else {
            let e = per_peer
                .entry((p.source.clone(), p.address.clone()))
                .or_default();
            e.0 += p.received;
            e.1 += p.advertised;
        }
    }
    for (name, help, pick) in [
        (
            "tortie_bgp_prefixes_received",
            "Prefixes received: per external peer, summed over the node mesh.",
            0usize,
        ),
        (
            "tortie_bgp_prefixes_advertised",
            "Prefixes advertised: per external peer, summed over the node mesh.",
            1,
        ),
    ] {
        header(&mut out, name, "gauge", help);
        let v = |t: (u64, u64)| if pick == 0 { t.0 } else { t.1 };
        if has_mesh {
            let _ = writeln!(out, "{name}{{source=\"mesh\",peer=\"all\"}} {}", v(mesh));
        }
        for ((source, addr), t) in &per_peer {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\",peer=\"{}\"}} {}",
                escape(source),
                escape(addr),
                v(*t)
            );
        }
    }

    gauge(
        &mut out,
        "tortie_routes_installed",
        "Routes of tortie's protocol the kernel holds as wanted.",
        g.routes_installed,
    );
    gauge(
        &mut out,
        "tortie_routes_failed",
        "Routes the kernel refused at the last attempt (retried).",
        g.routes_failed,
    );
    gauge(
        &mut out,
        "tortie_policy_workloads",
        "Local workloads with policy chains.",
        g.policy_workloads,
    );
    gauge(
        &mut out,
        "tortie_policy_policies",
        "NetworkPolicies compiled.",
        g.policy_policies,
    );
    histogram(
        &mut out,
        "tortie_route_sync_duration_seconds",
        "Time to apply a routing change (speaker reconfigure and FIB pools).",
        &rec.route_sync,
    );
    histogram(
        &mut out,
        "tortie_policy_sync_duration_seconds",
        "Time to compile and apply the policy ruleset.",
        &rec.policy_sync,
    );
    histogram(
        &mut out,
        "tortie_cni_add_to_policy_seconds",
        "Time from a CNI ADD reaching the agent until its host route and policy are programmed.",
        &rec.cni_add,
    );
    header(
        &mut out,
        "tortie_errors_total",
        "counter",
        "Errors by kind.",
    );
    let mut errors: BTreeMap<&str, u64> = ERROR_KINDS.iter().map(|k| (*k, 0)).collect();
    for (k, v) in &rec.errors {
        *errors.entry(k.as_str()).or_default() += v;
    }
    for (k, v) in errors {
        let _ = writeln!(out, "tortie_errors_total{{kind=\"{}\"}} {v}", escape(k));
    }
    out
}

/// What readiness depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadyInputs {
    /// The node's routing config was applied once (speaker running, FIB
    /// pools set).
    pub routes_synced: bool,
    /// A policy ruleset was applied once.
    pub policy_synced: bool,
    /// The datastore is connected now.
    pub datastore_connected: bool,
}

/// `Ok` when ready, else why not (the `/readyz` body).
pub fn readiness(r: &ReadyInputs) -> Result<(), String> {
    let mut why = Vec::new();
    if !r.datastore_connected {
        why.push("the datastore is disconnected");
    }
    if !r.routes_synced {
        why.push("routes are not synced yet");
    }
    if !r.policy_synced {
        why.push("policy is not applied yet");
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// A loop that has not ticked for longer than this is stuck (the policy
/// worker ticks at least every 60 s resync; three missed ones is stuck).
pub const STUCK_AFTER: Duration = Duration::from_secs(180);

/// `Ok` when healthy: every loop ticked within [`STUCK_AFTER`]
/// (`ages`: time since each loop's last tick), and the speaker runs.
pub fn health(ages: &[(&str, Duration)], speaker_running: bool) -> Result<(), String> {
    let mut why: Vec<String> = ages
        .iter()
        .filter(|(_, age)| *age > STUCK_AFTER)
        .map(|(name, age)| format!("the {name} loop has not run for {}s", age.as_secs()))
        .collect();
    if !speaker_running {
        why.push("the BGP speaker stopped".into());
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            400 => "Bad Request",
            _ => "Service Unavailable",
        };
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// Which endpoint a request line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
}

/// Parses the request line (`GET /metrics HTTP/1.1`); `Err` is the
/// answer to give.
pub fn route(request_line: &str) -> Result<Endpoint, Response> {
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(Response::text(400, "bad request\n"));
    };
    if method != "GET" && method != "HEAD" {
        return Err(Response::text(405, "only GET\n"));
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/metrics" => Ok(Endpoint::Metrics),
        "/healthz" => Ok(Endpoint::Healthz),
        "/readyz" => Ok(Endpoint::Readyz),
        _ => Err(Response::text(
            404,
            "not found; try /metrics, /healthz or /readyz\n",
        )),
    }
}

/// Serves HTTP on `listener`; `answer` builds the response of an
/// endpoint (called per request).
pub async fn serve<F, Fut>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(Endpoint) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = std::sync::Arc::new(answer);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let answer = std::sync::Arc::clone(&answer);
        tokio::spawn(async move {
            // Read the head only (capped): GET has no body.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n")
                    && !buf.windows(2).any(|w| w == b"\n\n")
                    && buf.len() < 16 * 1024
                {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                    }
                }
            })
            .await;
            if read.is_err() || buf.is_empty() {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let line = head.lines().next().unwrap_or_default().to_string();
            let head_only = line.starts_with("HEAD ");
            let resp = match route(&line) {
                Ok(ep) => answer(ep).await,
                Err(r) => r,
            };
            let mut bytes = resp.to_bytes();
            if head_only {
                let body_len = resp.body.len();
                bytes.truncate(bytes.len().saturating_sub(body_len));
            }
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str, source: &str, state: &str, rx: u64, tx: u64) -> PeerSample {
        PeerSample {
            address: addr.into(),
            source: source.into(),
            state: state.into(),
            received: rx,
            advertised: tx,
        }
    }

    #[test]
    fn mesh_is_aggregated_external_peers_are_not() {
        let g = Gauges {
            ready: true,
            datastore_connected: true,
            peers: vec![
                peer("192.0.2.12", MESH, "Established", 1, 1),
                peer("192.0.2.13", MESH, "Established", 2, 1),
                peer("192.0.2.14", MESH, "Active", 0, 0),
                peer("192.0.2.1", "BGPPeer tor-a", "Established", 5, 3),
            ],
            routes_installed: 4,
            ..Gauges::default()
        };
        let t = render(&Recorded::default(), &g);
        assert!(
            t.contains("tortie_bgp_sessions{kind=\"mesh\",state=\"Established\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("tortie_bgp_sessions{kind=\"mesh\",state=\"Active\"} 1\n"));
        assert!(t.contains("tortie_bgp_sessions{kind=\"external\",state=\"Established\"} 1\n"));
        assert!(t.contains("tortie_bgp_sessions{kind=\"external\",state=\"Idle\"} 0\n"));
        assert!(t.contains("tortie_bgp_prefixes_received{source=\"mesh\",peer=\"all\"} 3\n"));
        assert!(t.contains("tortie_bgp_prefixes_advertised{source=\"mesh\",peer=\"all\"} 2\n"));
        assert!(t.contains(
            "tortie_bgp_prefixes_received{source=\"BGPPeer tor-a\",peer=\"192.0.2.1\"} 5\n"
        ));
        assert!(!t.contains("192.0.2.12"), "mesh peers must not get series");
        assert!(t.contains("tortie_routes_installed 4\n"));
        assert!(t.contains("tortie_ready 1\n"));
        assert!(t.contains("tortie_errors_total{kind=\"policy\"} 0\n"));
    }

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.policy_sync(Duration::from_millis(3));
        m.policy_sync(Duration::from_millis(40));
        m.policy_sync(Duration::from_secs(30));
        m.error("policy");
        m.error("policy");
        let t = render(&m.snapshot(), &Gauges::default());
        assert!(
            t.contains("tortie_policy_sync_duration_seconds_bucket{le=\"0.001\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("tortie_policy_sync_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(t.contains("tortie_policy_sync_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(t.contains("tortie_policy_sync_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(t.contains("tortie_policy_sync_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(t.contains("tortie_policy_sync_duration_seconds_count 3\n"));
        assert!(t.contains("tortie_errors_total{kind=\"policy\"} 2\n"));
        assert!(t.contains("# TYPE tortie_cni_add_to_policy_seconds histogram\n"));
    }

    #[test]
    fn every_sample_line_is_well_formed() {
        let t = render(
            &Recorded::default(),
            &Gauges {
                peers: vec![peer("2001:db8::1", "BGPPeer a\"b", "Idle", 0, 0)],
                ..Gauges::default()
            },
        );
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("tortie_"), "{line}");
        }
        assert!(t.contains("source=\"BGPPeer a\\\"b\""));
    }

    #[test]
    fn readiness_and_health() {
        let mut r = ReadyInputs {
            routes_synced: true,
            policy_synced: true,
            datastore_connected: true,
        };
        assert_eq!(readiness(&r), Ok(()));
        r.datastore_connected = false;
        r.policy_synced = false;
        assert_eq!(
            readiness(&r),
            Err("the datastore is disconnected; policy is not applied yet".into())
        );
        assert_eq!(health(&[("main", Duration::from_secs(1))], true), Ok(()));
        let e = health(&[("main", Duration::from_secs(181))], false).expect_err("stuck");
        assert!(e.contains("main loop has not run for 181s"), "{e}");
        assert!(e.contains("speaker stopped"), "{e}");
    }

    #[test]
    fn routes_requests() {
        assert_eq!(route("GET /metrics HTTP/1.1"), Ok(Endpoint::Metrics));
        assert_eq!(route("GET /readyz?verbose HTTP/1.1"), Ok(Endpoint::Readyz));
        assert_eq!(route("GET /nope HTTP/1.1").map_err(|r| r.status), Err(404));
        assert_eq!(
            route("POST /metrics HTTP/1.1").map_err(|r| r.status),
            Err(405)
        );
        assert_eq!(route("").map_err(|r| r.status), Err(400));
        let b = Response::text(503, "no\n").to_bytes();
        assert!(String::from_utf8_lossy(&b).starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(serve(l, |ep| async move {
            Response::text(200, format!("{ep:?}\n"))
        }));
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        })
        .await
        .expect("join");
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.ends_with("\r\n\r\nReadyz\n"), "{body}");
        task.abort();
    }
}
