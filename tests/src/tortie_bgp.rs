//! Driver for tortie's standalone speaker, `tortie bgp --config FILE`
//! (contract: docs/speaker-config.md), run inside a namespace.
//!
//! Owns: locating the `tortie` binary, the speaker's work directory
//! (config, run dir with the status socket, state dir for graceful
//! restart, log), reading `tortie status -o json --routes`, and the
//! signals tests send (SIGHUP reload, SIGKILL, SIGSTOP).
//!
//! # Which binary
//!
//! `CARGO_BIN_EXE_tortie` only exists for the agent crate's own tests, so
//! [`tortie_binary`] looks for it in this order: `$TORTIE_BIN`, then
//! `tortie` next to the test executable's `deps/` directory (that is
//! `target/debug/tortie` when the tests run from `target/debug/deps`). When
//! none is there it runs `cargo build -p tortie --bin tortie` once (with a
//! timeout). Building the agent from here rather than making it a
//! dependency keeps the tests crate from linking the whole agent; run
//! `cargo build -p tortie` before `cargo test` so the binary is current.
//!
//! Must never: stop the speaker other than by its PID, or wait without a
//! deadline. `tortie status` talks to a socket file, so it runs in the
//! machine's own namespace and touches no network.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::bgp_util::{log_tail, spawn_logged, WorkDir, CLI_TIMEOUT};
use crate::{kill_pid, run_with_timeout, wait_for, Daemon, Netns};

/// Finds (or builds) the `tortie` binary; see the module docs.
pub fn tortie_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TORTIE_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("TORTIE_BIN={} is not a file", p.display());
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/debug/deps/bgp_x-HASH -> target/debug/tortie;
    // target/debug/bgp_bench -> target/debug/tortie.
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("tortie"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("tortie"));
        }
    }
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("tortie binary not found in {candidates:?}; running cargo build -p tortie");
    run_with_timeout(
        Command::new(cargo).args(["build", "-p", "tortie", "--bin", "tortie"]),
        Duration::from_secs(900),
    )
    .context("building the tortie binary")?;
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("cargo build -p tortie produced no binary next to {exe:?}"))
}

/// Checks the prerequisites of a test that runs tortie's speaker: root,
/// network namespaces, BIRD and GoBGP (as [`crate::require_netns`]), and a
/// `tortie` binary whose `bgp` subcommand takes `--config` (until the
/// speaker is wired into the binary, `TORTIE_BIN` may point at
/// `target/debug/examples/bgp`). Skips with a printed reason outside CI;
/// panics under `CI=true`.
pub fn require(test: &str) -> bool {
    if !crate::require_netns(test, TOOLS) {
        return false;
    }
    let why = match tortie_binary() {
        Err(e) => format!("no tortie binary: {e:#}"),
        Ok(bin) => {
            match run_with_timeout(Command::new(&bin).args(["bgp", "--help"]), CLI_TIMEOUT) {
                Ok(out) if String::from_utf8_lossy(&out.stdout).contains("--config") => {
                    return true
                }
                Ok(_) => format!(
                    "{} has no `bgp --config` yet (set TORTIE_BIN to a build that has)",
                    bin.display()
                ),
                Err(e) => format!("{} bgp --help failed: {e:#}", bin.display()),
            }
        }
    };
    let msg = format!("{test}: needs tortie's standalone speaker: {why}");
    if crate::in_ci() {
        panic!("{msg} (CI=true: missing prerequisites are failures)");
    }
    crate::report_skip(&msg);
    false
}

/// A running `tortie bgp`.
#[derive(Debug)]
pub struct Tortie {
    ns: String,
    dir: WorkDir,
    bin: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    daemon: Option<Daemon>,
}

/// One peer of the status document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TortiePeer {
    pub address: String,
    pub asn: u64,
    pub state: String,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    pub last_error: String,
    pub uptime_seconds: u64,
    pub raw: Value,
}

impl TortiePeer {
    pub fn established(&self) -> bool {
        self.state == "Established"
    }
}

/// One path of a RIB entry (`rib[].paths[]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TortiePath {
    pub peer: String,
    pub next_hop: String,
    pub as_path: Vec<u32>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
    pub best: bool,
    /// `stale` when the status document shows it (graceful restart).
    pub stale: Option<bool>,
    pub raw: Value,
}

/// One prefix of the RIB (`rib[]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TortieRoute {
    pub prefix: String,
    pub paths: Vec<TortiePath>,
}

impl TortieRoute {
    pub fn best(&self) -> impl Iterator<Item = &TortiePath> {
        self.paths.iter().filter(|p| p.best)
    }
}

/// The status document, as far as the tests read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TortieStatus {
    pub asn: u64,
    pub router_id: String,
    pub peers: Vec<TortiePeer>,
    pub rib: Vec<TortieRoute>,
    pub raw: Value,
}

impl TortieStatus {
    pub fn peer(&self, addr: &str) -> Option<&TortiePeer> {
        self.peers.iter().find(|p| p.address == addr)
    }

    pub fn route(&self, prefix: &str) -> Option<&TortieRoute> {
        self.rib.iter().find(|r| r.prefix == prefix)
    }

    /// Paths learned from `peer`, over all prefixes.
    pub fn paths_from(&self, peer: &str) -> usize {
        self.rib
            .iter()
            .flat_map(|r| &r.paths)
            .filter(|p| p.peer == peer)
            .count()
    }
}

impl Tortie {
    /// Writes `config` (the YAML of docs/speaker-config.md) and starts
    /// `tortie bgp` in `ns`; returns once the status socket answers.
    pub fn start(ns: &Netns, config: &str) -> Result<Self> {
        let bin = tortie_binary()?;
        let dir = WorkDir::new("tortie")?;
        let conf = dir.join("tortie.yaml");
        std::fs::write(&conf, config).context("writing tortie.yaml")?;
        std::fs::create_dir_all(dir.join("run")).context("creating run dir")?;
        std::fs::create_dir_all(dir.join("state")).context("creating state dir")?;
        let mut t = Self {
            ns: ns.name().to_string(),
            log: dir.join("tortie.log"),
            conf,
            bin,
            dir,
            daemon: None,
        };
        t.launch(ns)?;
        Ok(t)
    }

    fn launch(&mut self, ns: &Netns) -> Result<()> {
        let bin = self.bin.display().to_string();
        let conf = self.conf.display().to_string();
        let run = self.run_dir().display().to_string();
        let state = self.dir.join("state").display().to_string();
        let _ = std::fs::remove_file(self.run_dir().join("agent.sock"));
        let daemon = spawn_logged(
            ns,
            &bin,
            &[
                "bgp",
                "--config",
                &conf,
                "--run-dir",
                &run,
                "--state-dir",
                &state,
            ],
            &self.log,
        )?;
        self.daemon = Some(daemon);
        let res = wait_for("tortie status socket", Duration::from_secs(15), || {
            if !self.daemon.as_mut().is_some_and(Daemon::is_running) {
                return Some(Err(anyhow!("tortie bgp exited")));
            }
            self.status().ok().map(|_| Ok(()))
        });
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => Err(e.context(format!(
                "tortie bgp did not start:\n{}",
                log_tail(&self.log, 30)
            ))),
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn config_path(&self) -> &Path {
        &self.conf
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, Daemon::pid)
    }

    pub fn netns(&self) -> &str {
        &self.ns
    }

    pub fn signal(&self, sig: i32) {
        if let Some(d) = &self.daemon {
            kill_pid(d.pid(), sig);
        }
    }

    /// Rewrites the config and sends SIGHUP (reload without restart).
    pub fn reload(&self, config: &str) -> Result<()> {
        std::fs::write(&self.conf, config).context("writing tortie.yaml")?;
        self.signal(libc::SIGHUP);
        Ok(())
    }

    /// Replaces the config file without signalling (for a restart).
    pub fn write_config(&self, config: &str) -> Result<()> {
        std::fs::write(&self.conf, config).context("writing tortie.yaml")
    }

    /// SIGKILL by PID, waiting until the process is gone: sessions drop
    /// without a NOTIFICATION, as in a crash.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut d) = self.daemon.take() {
            let _ = wait_for("tortie exit", Duration::from_secs(5), || {
                (!d.is_running()).then_some(())
            });
            d.stop();
        }
    }

    /// SIGTERM (Cease NOTIFICATIONs), then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    /// Starts the speaker again with the same work directory (and so the
    /// same graceful-restart state dir).
    pub fn restart(&mut self, ns: &Netns) -> Result<()> {
        self.stop();
        self.launch(ns)
    }

    /// `tortie status --run-dir DIR -o json --routes`.
    pub fn status(&self) -> Result<TortieStatus> {
        self.status_with(true)
    }

    /// `tortie status --run-dir DIR -o json` without the RIB (cheap with a
    /// full table).
    pub fn status_summary(&self) -> Result<TortieStatus> {
        self.status_with(false)
    }

    fn status_with(&self, routes: bool) -> Result<TortieStatus> {
        let run = self.run_dir().display().to_string();
        let mut args = vec!["status", "--run-dir", &run, "-o", "json"];
        if routes {
            args.push("--routes");
        }
        let out = run_with_timeout(Command::new(&self.bin).args(&args), CLI_TIMEOUT)?;
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "tortie status: not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        Ok(parse_status(&v))
    }

    pub fn peer(&self, addr: &str) -> Result<TortiePeer> {
        self.status()?
            .peer(addr)
            .cloned()
            .ok_or_else(|| anyhow!("tortie has no peer {addr}"))
    }

    pub fn wait_established(&self, addr: &str, timeout: Duration) -> Result<TortiePeer> {
        wait_for(&format!("tortie peer {addr} Established"), timeout, || {
            self.peer(addr).ok().filter(TortiePeer::established)
        })
        .with_context(|| self.describe())
    }

    /// Waits until `cond` holds on a status document; returns it.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&TortieStatus) -> bool,
    ) -> Result<TortieStatus> {
        wait_for(what, timeout, || self.status().ok().filter(|s| cond(s)))
            .with_context(|| self.describe())
    }

    /// Waits until the RIB holds `prefix` with at least one path for which
    /// `cond` holds; returns the route.
    pub fn wait_route(
        &self,
        prefix: &str,
        timeout: Duration,
        cond: impl Fn(&TortiePath) -> bool,
    ) -> Result<TortieRoute> {
        let st = self.wait_status(&format!("tortie RIB has {prefix}"), timeout, |s| {
            s.route(prefix).is_some_and(|r| r.paths.iter().any(&cond))
        })?;
        st.route(prefix)
            .cloned()
            .ok_or_else(|| anyhow!("route {prefix} vanished"))
    }

    /// Waits until the RIB no longer holds `prefix`.
    pub fn wait_no_route(&self, prefix: &str, timeout: Duration) -> Result<()> {
        self.wait_status(&format!("tortie RIB without {prefix}"), timeout, |s| {
            s.route(prefix).is_none_or(|r| r.paths.is_empty())
        })
        .map(drop)
    }

    /// Status and log tail, for failure messages.
    pub fn describe(&self) -> String {
        let st = match self.status() {
            Ok(s) => serde_json::to_string_pretty(&s.raw).unwrap_or_default(),
            Err(e) => format!("{e:#}"),
        };
        format!(
            "tortie status: {st}\ntortie log:\n{}",
            log_tail(&self.log, 30)
        )
    }
}

impl Drop for Tortie {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.stop();
    }
}

fn str_of(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn u64_of(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn opt_u32(v: &Value, k: &str) -> Option<u32> {
    v.get(k)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// An AS path given as `[65001, 65002]`, `"65001 65002"` or
/// `[{"asns": [..]}]` segments.
fn as_path_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::String(s)) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter_map(|a| a.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .flat_map(|x| match x {
                Value::Number(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .into_iter()
                    .collect::<Vec<_>>(),
                Value::Object(_) => as_path_of(x.get("asns")),
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn strings_of(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Parses the status document (camelCase, docs/speaker-config.md).
pub fn parse_status(v: &Value) -> TortieStatus {
    let peers = v
        .get("peers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| TortiePeer {
            address: str_of(p, "address"),
            asn: u64_of(p, "asn"),
            state: str_of(p, "state"),
            prefixes_received: u64_of(p, "prefixesReceived"),
            prefixes_accepted: u64_of(p, "prefixesAccepted"),
            prefixes_advertised: u64_of(p, "prefixesAdvertised"),
            last_error: str_of(p, "lastError"),
            uptime_seconds: u64_of(p, "uptimeSeconds"),
            raw: p.clone(),
        })
        .collect();
    let rib = v
        .get("rib")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| TortieRoute {
            prefix: str_of(r, "prefix"),
            paths: r
                .get("paths")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| TortiePath {
                    peer: str_of(p, "peer"),
                    next_hop: str_of(p, "nextHop"),
                    as_path: as_path_of(p.get("asPath")),
                    med: opt_u32(p, "med"),
                    local_pref: opt_u32(p, "localPref"),
                    communities: strings_of(p.get("communities")),
                    large_communities: strings_of(p.get("largeCommunities")),
                    best: p.get("best").and_then(Value::as_bool).unwrap_or(false),
                    stale: p.get("stale").and_then(Value::as_bool),
                    raw: p.clone(),
                })
                .collect(),
        })
        .collect();
    TortieStatus {
        asn: u64_of(v, "asn"),
        router_id: str_of(v, "routerId"),
        peers,
        rib,
        raw: v.clone(),
    }
}

/// A minimal speaker config: AS, router id, fast timers; `peers` and
/// `originate` are YAML list items (already indented by two spaces).
pub fn config(asn: u32, router_id: &str, originate: &str, peers: &str) -> String {
    let originate = if originate.trim().is_empty() {
        "originate: []\n".to_string()
    } else {
        format!("originate:\n{originate}")
    };
    let peers = if peers.trim().is_empty() {
        "peers: []\n".to_string()
    } else {
        format!("peers:\n{peers}")
    };
    format!(
        "asNumber: {asn}\nrouterId: {router_id}\nholdTime: 9\nkeepaliveTime: 3\nlogNeighborChanges: true\n{originate}{peers}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() -> Result<()> {
        let v: Value = serde_json::from_str(
            r#"{"node":"n","asn":4200000001,"routerId":"192.0.2.11",
                "peers":[{"address":"192.0.2.1","asn":65001,"state":"Established","prefixesReceived":3,"prefixesAccepted":2,"prefixesAdvertised":1,"lastError":"","uptimeSeconds":5}],
                "rib":[{"prefix":"10.0.0.0/24","paths":[
                    {"peer":"192.0.2.1","nextHop":"192.0.2.1","asPath":[65001,4200000009],"med":5,"localPref":100,"communities":["65000:1"],"largeCommunities":["1:2:3"],"best":true},
                    {"peer":"192.0.2.2","nextHop":"192.0.2.2","asPath":"65002 65003","best":false,"stale":true}]}]}"#,
        )?;
        let s = parse_status(&v);
        assert_eq!(s.asn, 4_200_000_001);
        let p = s.peer("192.0.2.1").ok_or_else(|| anyhow!("peer"))?;
        assert!(p.established());
        assert_eq!(p.prefixes_accepted, 2);
        let r = s.route("10.0.0.0/24").ok_or_else(|| anyhow!("route"))?;
        assert_eq!(r.paths[0].as_path, vec![65001, 4_200_000_009]);
        assert_eq!(r.paths[0].communities, vec!["65000:1"]);
        assert_eq!(r.paths[1].as_path, vec![65002, 65003]);
        assert_eq!(r.paths[1].stale, Some(true));
        assert_eq!(r.best().count(), 1);
        assert_eq!(s.paths_from("192.0.2.2"), 1);
        Ok(())
    }
}

// --- the sample configs of examples/bgp, filled in ------------------------

/// examples/bgp/bird-tor.conf: BIRD as a ToR, eBGP to one tortie node.
pub const BIRD_TOR: &str = include_str!("../../examples/bgp/bird-tor.conf");
/// examples/bgp/tortie-node.yaml: tortie's speaker on a node.
pub const TORTIE_NODE: &str = include_str!("../../examples/bgp/tortie-node.yaml");
/// examples/bgp/gobgpd-tor.toml: GoBGP as a ToR.
pub const GOBGP_TOR: &str = include_str!("../../examples/bgp/gobgpd-tor.toml");

/// The ToR end of the standard two-namespace topology.
pub const TOR_V4: &str = "192.0.2.1";
pub const TOR_V6: &str = "2001:db8::1";
/// The node (tortie) end.
pub const NODE_V4: &str = "192.0.2.11";
pub const NODE_V6: &str = "2001:db8::11";

/// Replaces every `@NAME@` of `template`; fails if one is left unfilled.
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String> {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    if let Some(line) = out
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && l.matches('@').count() >= 2)
    {
        bail!("unfilled placeholder in: {line}");
    }
    Ok(out)
}

/// BIRD ToR config (AS `tor_as`) for a tortie node in AS `node_as`;
/// `extra` goes into the BGP template (`password "x";`, `graceful restart
/// on;`), `static4` adds IPv4 static route lines.
pub fn bird_tor(
    tor_as: u32,
    node_as: u32,
    hold: u32,
    extra: &str,
    static4: &str,
) -> Result<String> {
    render_side(
        BIRD_TOR,
        Side::Tor,
        (tor_as, node_as, hold),
        &[("EXTRA", extra), ("STATIC4", static4)],
    )
}

/// tortie node config (AS `node_as`) peering the ToR in AS `tor_as`;
/// `peer_extra` is added to both peers (four-space indented YAML lines),
/// `originate` adds originate list items (two-space indented).
pub fn tortie_node(
    node_as: u32,
    tor_as: u32,
    hold: u32,
    peer_extra: &str,
    originate: &str,
) -> Result<String> {
    let keepalive = (hold / 3).max(1).to_string();
    render_side(
        TORTIE_NODE,
        Side::Node,
        (node_as, tor_as, hold),
        &[
            ("KEEPALIVE", &keepalive),
            ("PEER_EXTRA", peer_extra),
            ("ORIGINATE", originate),
        ],
    )
}

/// GoBGP ToR config (AS `tor_as`) for a tortie node in AS `node_as`.
pub fn gobgp_tor(
    tor_as: u32,
    node_as: u32,
    hold: u32,
    neighbor_extra: &str,
    sections_extra: &str,
    afi_extra: &str,
) -> Result<String> {
    render_side(
        GOBGP_TOR,
        Side::Tor,
        (tor_as, node_as, hold),
        &[
            ("NEIGHBOR_EXTRA", neighbor_extra),
            ("SECTIONS_EXTRA", sections_extra),
            ("AFI_EXTRA", afi_extra),
        ],
    )
}

/// Which end of [`tor_and_node`] a template configures.
#[derive(Debug, Clone, Copy)]
enum Side {
    Tor,
    Node,
}

/// Renders `template` for one side: `ROUTER_ID`, `LOCAL_V4/V6` (this
/// side's addresses), `PEER_V4/V6` (the other side's), `LOCAL_AS`,
/// `PEER_AS` and `HOLD` from `(local_as, peer_as, hold)`, then `extra`.
fn render_side(
    template: &str,
    side: Side,
    (local_as, peer_as, hold): (u32, u32, u32),
    extra: &[(&str, &str)],
) -> Result<String> {
    let ((local_v4, local_v6), (peer_v4, peer_v6)) = match side {
        Side::Tor => ((TOR_V4, TOR_V6), (NODE_V4, NODE_V6)),
        Side::Node => ((NODE_V4, NODE_V6), (TOR_V4, TOR_V6)),
    };
    let (local_as, peer_as, hold) = (local_as.to_string(), peer_as.to_string(), hold.to_string());
    let mut vars = vec![
        ("ROUTER_ID", local_v4),
        ("LOCAL_AS", local_as.as_str()),
        ("PEER_AS", peer_as.as_str()),
        ("LOCAL_V4", local_v4),
        ("PEER_V4", peer_v4),
        ("LOCAL_V6", local_v6),
        ("PEER_V6", peer_v6),
        ("HOLD", hold.as_str()),
    ];
    vars.extend_from_slice(extra);
    render(template, &vars)
}

/// Whether a RIB path came from `peer` (status may name it by address or
/// by the configured name).
pub fn path_from(p: &TortiePath, peer: &str, name: &str) -> bool {
    p.peer == peer || p.peer == name || p.peer.starts_with(&format!("{peer}:"))
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn samples_render_and_parse() -> Result<()> {
        let b = bird_tor(4_200_000_001, 4_200_000_011, 6, "", "")?;
        assert!(b.contains("neighbor 192.0.2.11;"));
        let t = tortie_node(4_200_000_011, 4_200_000_001, 6, "    passive: false", "")?;
        let y: serde_json::Value = serde_norway::from_str(&t)?;
        assert_eq!(y["peers"][1]["peerIP"], "2001:db8::1");
        assert_eq!(y["peers"][0]["passive"], false);
        let g = gobgp_tor(4_200_000_001, 4_200_000_011, 6, "", "", "")?;
        assert!(g.contains("neighbor-address = \"2001:db8::11\""));
        assert!(render("a @X@", &[]).is_err());
        Ok(())
    }
}

/// The standard two-namespace topology of the tortie tests:
///
/// ```text
///   ns TAG-t (ToR: BIRD or GoBGP)          ns TAG-n (node: tortie)
///   tor0 192.0.2.1  2001:db8::1  ─veth─  node0 192.0.2.11  2001:db8::11
/// ```
pub fn tor_and_node(tag: &str) -> Result<(Netns, Netns)> {
    let tor = Netns::new(&format!("{tag}t"))?;
    let node = Netns::new(&format!("{tag}n"))?;
    crate::bgp_util::link(&tor, "tor0", 1, &node, "node0", 11)?;
    Ok((tor, node))
}

/// The tools every tortie interop test needs.
pub const TOOLS: &[&str] = &["bird", "birdc", "gobgpd", "gobgp"];
