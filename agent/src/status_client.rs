//! The status socket `RUN_DIR/agent.sock`: server (for `tortie bgp`; the
//! agent can reuse [`serve_with`]) and client (`tortie status`).
//!
//! # Protocol
//!
//! A Unix stream socket. The client writes one JSON line, the server
//! answers one JSON line and closes:
//!
//! ```text
//! -> {"get":"status"}
//! <- {"node":"...","asn":64512,"routerId":"...","peers":[...],"routes":{...},...}
//! -> {"get":"status","routes":true}
//! <- {...the same..., "rib":[{"prefix":"10.244.1.0/24","paths":[{"peer":"192.0.2.1",
//!      "nextHop":"192.0.2.1","asPath":"65001","med":null,"localPref":null,
//!      "communities":["65000:1"],"largeCommunities":[],"best":true}]}]}
//! <- {"error":"..."}                      (a request it does not understand)
//! ```
//!
//! The answer is the [`Status`] document (agent/src/status.rs), plus `rib`
//! when asked for. `peer` is `null` for a route this speaker originates.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tortie_bgp::runtime::{Handle, StatusReport};
use tortie_bgp::wire::NextHop;

use crate::status::{PeerStatus, Status};

/// A request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// What to get: `"status"`.
    pub get: String,
    /// Add the RIB (`rib`).
    #[serde(default)]
    pub routes: bool,
}

/// One prefix of `rib`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RibEntry {
    /// `ADDR/LEN`.
    pub prefix: String,
    /// Paths, selected first.
    pub paths: Vec<RibPath>,
}

/// One path of a prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RibPath {
    /// Source peer; `None` = originated here.
    pub peer: Option<String>,
    /// Next hop (`None` for a local route: set per session on export).
    pub next_hop: Option<String>,
    /// AS_PATH as text (`"65002 65001"`).
    pub as_path: String,
    /// MED.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// Communities `ASN:VALUE`.
    pub communities: Vec<String>,
    /// Large communities.
    pub large_communities: Vec<String>,
    /// In the selected set.
    pub best: bool,
    /// Kept for a gracefully restarting peer (RFC 4724).
    #[serde(default)]
    pub stale: bool,
}

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Table,
    /// The document as served.
    Json,
}

/// The status document of a standalone speaker.
pub fn status_document(r: &StatusReport) -> Status {
    Status {
        node: r.speaker.router_id.to_string(),
        asn: r.speaker.asn.0,
        router_id: r.speaker.router_id.to_string(),
        peers: r
            .peers
            .iter()
            .map(|p| PeerStatus {
                address: p.address.to_string(),
                asn: p.asn,
                state: p.state.to_string(),
                prefixes_received: p.prefixes_received,
                prefixes_accepted: p.prefixes_accepted,
                prefixes_advertised: p.prefixes_advertised,
                last_error: p.last_error.clone(),
                uptime_seconds: p.since.as_secs(),
                source: if p.name.is_empty() {
                    "speaker config".into()
                } else {
                    format!("speaker config {}", p.name)
                },
            })
            .collect(),
        ..Status::default()
    }
}

fn next_hop(n: &NextHop) -> String {
    match n {
        NextHop::V4(a) => a.to_string(),
        NextHop::V6 { global, .. } => global.to_string(),
    }
}

/// The `rib` list.
pub fn rib_document(r: &StatusReport) -> Vec<RibEntry> {
    r.routes
        .iter()
        .flatten()
        .map(|route| RibEntry {
            prefix: route.prefix.to_string(),
            paths: route
                .paths
                .iter()
                .map(|p| RibPath {
                    peer: p.peer.map(|a| a.to_string()),
                    next_hop: p.attrs.next_hop.as_ref().map(next_hop),
                    as_path: p.attrs.as_path.to_string(),
                    med: p.attrs.med,
                    local_pref: p.attrs.local_pref,
                    communities: p
                        .attrs
                        .communities
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    large_communities: p
                        .attrs
                        .large_communities
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    best: p.best,
                    stale: p.stale,
                })
                .collect(),
        })
        .collect()
}

/// Answers one request line.
async fn answer(line: &str, handle: &Handle) -> String {
    let req: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => return serde_json::json!({"error": format!("bad request: {e}")}).to_string(),
    };
    if req.get != "status" {
        return serde_json::json!({"error": format!("unknown request {:?}; try {{\"get\":\"status\"}}", req.get)}).to_string();
    }
    let report = match handle.status(req.routes).await {
        Ok(r) => r,
        Err(e) => return serde_json::json!({"error": e.to_string()}).to_string(),
    };
    let mut doc = match serde_json::to_value(status_document(&report)) {
        Ok(v) => v,
        Err(e) => return serde_json::json!({"error": e.to_string()}).to_string(),
    };
    if req.routes {
        if let (Some(obj), Ok(rib)) = (
            doc.as_object_mut(),
            serde_json::to_value(rib_document(&report)),
        ) {
            obj.insert("rib".into(), rib);
        }
    }
    doc.to_string()
}

/// Serves the speaker's status on `path` (replacing a stale socket file).
pub fn serve(path: &Path, handle: Handle) -> Result<JoinHandle<()>> {
    serve_with(path, move |line| {
        let handle = handle.clone();
        async move { answer(&line, &handle).await }
    })
}

/// Serves `answer(request_line) -> response_line` on `path`.
pub fn serve_with<F, Fut>(path: &Path, answer: F) -> Result<JoinHandle<()>>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)?;
    let answer = std::sync::Arc::new(answer);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = std::sync::Arc::clone(&answer);
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                // A request line is small; do not buffer a misbehaving
                // client's bytes.
                let mut rd = tokio::io::BufReader::new(rd.take(64 * 1024));
                let read =
                    tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line)).await;
                if !matches!(read, Ok(Ok(n)) if n > 0) {
                    return;
                }
                let mut out = answer(line).await;
                out.push('\n');
                let _ = wr.write_all(out.as_bytes()).await;
                let _ = wr.shutdown().await;
            });
        }
    }))
}

/// Asks the agent or speaker listening on `RUN_DIR/agent.sock`; returns
/// the raw JSON answer.
pub fn fetch(run_dir: &Path, routes: bool) -> Result<String> {
    let path = run_dir.join("agent.sock");
    let mut s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow!(
            "no tortie agent is listening on {}: is it running?",
            path.display()
        ),
        _ => anyhow!("cannot connect to {}: {e}", path.display()),
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let req = serde_json::to_string(&Request {
        get: "status".into(),
        routes,
    })?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .with_context(|| format!("no answer from {}", path.display()))?;
    if line.trim().is_empty() {
        return Err(anyhow!("{} closed without answering", path.display()));
    }
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("{} answered something that is not JSON", path.display()))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(anyhow!("{}: {e}", path.display()));
    }
    Ok(line.trim().to_string())
}

/// `tortie status --run-dir DIR -o table|json [--routes]`.
pub fn status_cmd(run_dir: &Path, format: OutputFormat, routes: bool) -> Result<()> {
    let raw = fetch(run_dir, routes)?;
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            let v: serde_json::Value = serde_json::from_str(&raw)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        OutputFormat::Table => {
            let status: Status =
                serde_json::from_str(&raw).context("the status document does not parse")?;
            write!(out, "{}", status.to_table())?;
            if routes {
                let v: serde_json::Value = serde_json::from_str(&raw)?;
                let rib: Vec<RibEntry> = v
                    .get("rib")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()?
                    .unwrap_or_default();
                write!(out, "{}", rib_table(&rib))?;
            }
        }
    }
    Ok(())
}

/// The RIB for people: one line per path, `*` on selected ones.
pub fn rib_table(rib: &[RibEntry]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{} prefixes", rib.len());
    for e in rib {
        for p in &e.paths {
            let _ = writeln!(
                s,
                "{} {:<20} via {:<16} from {:<16} as-path [{}]{}{}",
                if p.best { "*" } else { " " },
                e.prefix,
                p.next_hop.as_deref().unwrap_or("-"),
                p.peer.as_deref().unwrap_or("local"),
                p.as_path,
                p.local_pref
                    .map(|l| format!(" local-pref {l}"))
                    .unwrap_or_default(),
                p.med.map(|m| format!(" med {m}")).unwrap_or_default(),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_agent_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = fetch(dir.path(), false).expect_err("nobody listens");
        assert!(
            e.to_string().contains("no tortie agent is listening on"),
            "{e}"
        );
        assert!(e.to_string().contains("is it running?"), "{e}");
    }

    #[tokio::test]
    async fn serve_with_answers_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let task = serve_with(&path, |line| async move {
            format!("{{\"echo\":{}}}", line.trim())
        })
        .expect("serve");
        let p = dir.path().to_path_buf();
        let raw = tokio::task::spawn_blocking(move || fetch(&p, true))
            .await
            .expect("join")
            .expect("answer");
        assert_eq!(raw, r#"{"echo":{"get":"status","routes":true}}"#);
        task.abort();
    }
}
