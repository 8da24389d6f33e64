//! GoBGP driver: starts `gobgpd` inside a namespace with a generated TOML
//! config, and drives it with the `gobgp` CLI over the gRPC API.
//!
//! The API listens on 127.0.0.1 of the daemon's namespace (inside a netns
//! that loopback is the namespace's own), so the CLI runs inside the same
//! namespace through `ip netns exec`. Each daemon gets its own API port, so
//! two gobgpd may share a namespace.
//!
//! Must never: stop gobgpd other than by its PID, or wait without a
//! deadline.

use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::bgp_util::{log_tail, spawn_logged, WorkDir, CLI_TIMEOUT};
use crate::{kill_pid, run_with_timeout, wait_for, Daemon, Netns};

/// GoBGP's `session_state` value for ESTABLISHED.
pub const SESSION_ESTABLISHED: u64 = 6;

/// A running gobgpd.
#[derive(Debug)]
pub struct Gobgp {
    ns: String,
    dir: WorkDir,
    conf: std::path::PathBuf,
    log: std::path::PathBuf,
    port: u16,
    extra_args: Vec<String>,
    daemon: Option<Daemon>,
}

/// The parts of `gobgp neighbor ADDR -j` the tests read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GobgpNeighbor {
    pub address: String,
    pub peer_as: u64,
    /// 6 = ESTABLISHED.
    pub session_state: u64,
    /// Message counters: `sent`/`received` -> kind (`update`, `refresh`,
    /// `notification`, `keepalive`, `open`) -> count.
    pub sent: std::collections::BTreeMap<String, u64>,
    pub received: std::collections::BTreeMap<String, u64>,
    /// Per family (`ipv4`/`ipv6`): (received, accepted).
    pub prefixes: std::collections::BTreeMap<String, (u64, u64)>,
    /// Whether GoBGP got End-of-RIB from the peer, per family.
    pub end_of_rib: std::collections::BTreeMap<String, bool>,
    pub negotiated_hold_time: u64,
    /// Uptime timestamp (unix seconds) of the current session.
    pub uptime: u64,
    pub raw: Value,
}

impl GobgpNeighbor {
    pub fn established(&self) -> bool {
        self.session_state == SESSION_ESTABLISHED
    }
}

/// One path of `gobgp global rib -j` or `neighbor ADDR adj-in -j`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GobgpPath {
    pub prefix: String,
    pub best: bool,
    pub stale: bool,
    /// The peer it came from; `None` for locally originated paths.
    pub neighbor: Option<String>,
    pub origin: Option<u64>,
    pub as_path: Vec<u32>,
    pub next_hop: Option<String>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// `A:B`.
    pub communities: Vec<String>,
    /// `A:B:C`.
    pub large_communities: Vec<String>,
    pub originator_id: Option<String>,
    pub cluster_list: Vec<String>,
}

/// Programs a lab with GoBGP ToRs needs besides the tortie binaries.
pub const GOBGP_TOR_TOOLS: &[&str] = &[
    "ip", "gobgpd", "gobgp", "ping", "iptables", "ipset", "kill", "chown",
];

/// Checks root, the tools and FRR's zebra (the `frr` package) for a lab
/// with `--tor gobgp`: skips outside CI, fails under `CI=true`.
pub fn require_gobgp_tor(test: &str) -> bool {
    if !crate::require_netns(test, GOBGP_TOR_TOOLS) {
        return false;
    }
    let zebra = std::path::Path::new(tortie::lab::gobgp::ZEBRA_BIN);
    if zebra.is_file() {
        return true;
    }
    let msg = format!(
        "{test}: needs FRR's zebra at {} (apt-get install frr; scripts/deps.sh does)",
        zebra.display()
    );
    if crate::in_ci() {
        panic!("{msg} (CI=true: missing prerequisites are failures)");
    }
    crate::report_skip(&msg);
    false
}

fn next_port() -> u16 {
    static PORT: AtomicU16 = AtomicU16::new(50051);
    PORT.fetch_add(1, Ordering::Relaxed)
}

impl Gobgp {
    /// Writes `toml` and starts gobgpd in `ns`; returns once the API
    /// answers.
    pub fn start(ns: &Netns, toml: &str) -> Result<Self> {
        Self::start_with_args(ns, toml, &[])
    }

    /// As [`Gobgp::start`], with extra gobgpd flags (`-r` for a graceful
    /// restart with the Restart State bit set).
    pub fn start_with_args(ns: &Netns, toml: &str, args: &[&str]) -> Result<Self> {
        let dir = WorkDir::new("gobgp")?;
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, toml).context("writing gobgpd.toml")?;
        let conf_s = conf.display().to_string();
        run_with_timeout(
            Command::new("gobgpd").args(["-d", "-f", &conf_s]),
            CLI_TIMEOUT,
        )
        .with_context(|| format!("gobgpd rejected its config:\n{toml}"))?;
        let mut g = Self {
            ns: ns.name().to_string(),
            log: dir.join("gobgpd.log"),
            conf,
            dir,
            port: next_port(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            daemon: None,
        };
        g.launch(ns)?;
        Ok(g)
    }

    fn launch(&mut self, ns: &Netns) -> Result<()> {
        let conf = self.conf.display().to_string();
        let api = format!("--api-hosts=127.0.0.1:{}", self.port);
        let mut args: Vec<&str> = vec!["-f", &conf, &api, "--pprof-disable", "-p"];
        args.extend(self.extra_args.iter().map(String::as_str));
        self.daemon = Some(spawn_logged(ns, "gobgpd", &args, &self.log)?);
        wait_for("gobgpd API", Duration::from_secs(20), || {
            self.cli(&["global"]).ok()
        })
        .with_context(|| format!("gobgpd did not start:\n{}", log_tail(&self.log, 20)))?;
        Ok(())
    }

    /// Stops gobgpd by PID and starts it again (with `args` replacing the
    /// extra flags, e.g. `-r` to restart gracefully).
    pub fn restart(&mut self, ns: &Netns, args: &[&str]) -> Result<()> {
        self.stop();
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self.launch(ns)
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    /// SIGKILL by PID: no NOTIFICATION, no FIN handling by gobgpd itself.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut d) = self.daemon.take() {
            let _ = wait_for("gobgpd exit", Duration::from_secs(5), || {
                (!d.is_running()).then_some(())
            });
            d.stop();
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(d) = &self.daemon {
            kill_pid(d.pid(), sig);
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, Daemon::pid)
    }

    pub fn netns(&self) -> &str {
        &self.ns
    }

    pub fn work_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `gobgp -u 127.0.0.1 -p PORT ARGS..` inside the namespace.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let port = self.port.to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "gobgp", "-u", "127.0.0.1", "-p"])
            .arg(&port)
            .args(args);
        let out = run_with_timeout(&mut cmd, CLI_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let text = self.cli(&all)?;
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("gobgp {all:?}: not JSON: {text}"))
    }

    /// `gobgp neighbor ADDR -j`.
    pub fn neighbor(&self, addr: &str) -> Result<GobgpNeighbor> {
        let v = self.cli_json(&["neighbor", addr])?;
        Ok(parse_neighbor(&v))
    }

    pub fn established(&self, addr: &str) -> bool {
        self.neighbor(addr).is_ok_and(|n| n.established())
    }

    pub fn wait_established(&self, addr: &str, timeout: Duration) -> Result<GobgpNeighbor> {
        wait_for(
            &format!("GoBGP neighbor {addr} Established"),
            timeout,
            || self.neighbor(addr).ok().filter(GobgpNeighbor::established),
        )
        .with_context(|| self.describe(addr))
    }

    pub fn describe(&self, addr: &str) -> String {
        format!(
            "GoBGP neighbor {addr}: {}\nlog:\n{}",
            self.cli(&["neighbor", addr])
                .unwrap_or_else(|e| e.to_string()),
            log_tail(&self.log, 15)
        )
    }

    /// `gobgp global rib -a FAMILY -j` (`ipv4` / `ipv6`).
    pub fn rib(&self, family: &str) -> Result<Vec<GobgpPath>> {
        let v = self.cli_json(&["global", "rib", "-a", family])?;
        Ok(parse_rib(&v))
    }

    /// `gobgp neighbor ADDR adj-in -a FAMILY -j`.
    pub fn adj_in(&self, addr: &str, family: &str) -> Result<Vec<GobgpPath>> {
        let v = self.cli_json(&["neighbor", addr, "adj-in", "-a", family])?;
        Ok(parse_rib(&v))
    }

    /// Paths in the global RIB for `family` (`gobgp global rib summary`).
    pub fn rib_paths(&self, family: &str) -> Result<u64> {
        let v = self.cli_json(&["global", "rib", "summary", "-a", family])?;
        v.get("num_path")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("gobgp rib summary without num_path: {v}"))
    }

    /// `gobgp global rib add -a FAMILY PREFIX ARGS..` (e.g. `nexthop X`,
    /// `med 10`, `community 65000:1`, `aspath "65010 65011"`).
    pub fn add_route(&self, family: &str, prefix: &str, args: &[&str]) -> Result<()> {
        let mut all = vec!["global", "rib", "add", "-a", family, prefix];
        all.extend_from_slice(args);
        self.cli(&all).map(drop)
    }

    pub fn del_route(&self, family: &str, prefix: &str) -> Result<()> {
        self.cli(&["global", "rib", "del", "-a", family, prefix])
            .map(drop)
    }

    /// `gobgp neighbor ADDR softresetin`: asks the peer for a ROUTE-REFRESH
    /// only when GoBGP keeps no Adj-RIB-In copy; use BIRD for that.
    pub fn softreset_out(&self, addr: &str) -> Result<()> {
        self.cli(&["neighbor", addr, "softresetout"]).map(drop)
    }

    pub fn disable(&self, addr: &str) -> Result<()> {
        self.cli(&["neighbor", addr, "disable"]).map(drop)
    }

    pub fn enable(&self, addr: &str) -> Result<()> {
        self.cli(&["neighbor", addr, "enable"]).map(drop)
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.stop();
    }
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(n) => cur = n,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

fn counters(v: Option<&Value>) -> std::collections::BTreeMap<String, u64> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn family_name(f: &Value) -> String {
    match (u64_at(f, &["afi"]), u64_at(f, &["safi"])) {
        (1, 1) => "ipv4".into(),
        (2, 1) => "ipv6".into(),
        (a, s) => format!("{a}/{s}"),
    }
}

/// Parses `gobgp neighbor ADDR -j` (an object, or a one-element array).
pub fn parse_neighbor(v: &Value) -> GobgpNeighbor {
    let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
    let state = v.get("state").cloned().unwrap_or(Value::Null);
    let mut n = GobgpNeighbor {
        address: state
            .get("neighbor_address")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        peer_as: u64_at(&state, &["peer_asn"]),
        session_state: u64_at(&state, &["session_state"]),
        sent: counters(state.get("messages").and_then(|m| m.get("sent"))),
        received: counters(state.get("messages").and_then(|m| m.get("received"))),
        negotiated_hold_time: u64_at(v, &["timers", "state", "negotiated_hold_time"]),
        uptime: u64_at(v, &["timers", "state", "uptime", "seconds"]),
        raw: v.clone(),
        ..Default::default()
    };
    for af in v
        .get("afi_safis")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(st) = af.get("state") else { continue };
        let name = st.get("family").map(family_name).unwrap_or_default();
        n.prefixes.insert(
            name.clone(),
            (u64_at(st, &["received"]), u64_at(st, &["accepted"])),
        );
        let eor = af
            .get("mp_graceful_restart")
            .and_then(|g| g.get("state"))
            .and_then(|s| s.get("end_of_rib_received"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        n.end_of_rib.insert(name, eor);
    }
    n
}

fn u32_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Parses `gobgp global rib -j` / `adj-in -j`: `{prefix: [path..]}`.
pub fn parse_rib(v: &Value) -> Vec<GobgpPath> {
    let mut out = Vec::new();
    let Some(map) = v.as_object() else {
        return out;
    };
    for (prefix, paths) in map {
        for p in paths.as_array().into_iter().flatten() {
            let mut g = GobgpPath {
                prefix: prefix.clone(),
                best: p.get("best").and_then(Value::as_bool).unwrap_or(false),
                stale: p.get("stale").and_then(Value::as_bool).unwrap_or(false),
                neighbor: p
                    .get("neighbor-ip")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                ..Default::default()
            };
            for a in p
                .get("attrs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match a.get("type").and_then(Value::as_u64) {
                    Some(1) => g.origin = a.get("value").and_then(Value::as_u64),
                    Some(2) => {
                        for seg in a
                            .get("as_paths")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            g.as_path.extend(
                                seg.get("asns")
                                    .and_then(Value::as_array)
                                    .into_iter()
                                    .flatten()
                                    .filter_map(u32_of),
                            );
                        }
                    }
                    Some(3) | Some(14) => {
                        g.next_hop = a.get("nexthop").and_then(Value::as_str).map(str::to_string);
                    }
                    Some(4) => g.med = a.get("metric").and_then(u32_of),
                    Some(5) => g.local_pref = a.get("value").and_then(u32_of),
                    Some(8) => {
                        g.communities = a
                            .get("communities")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(u32_of)
                            .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                            .collect();
                    }
                    Some(9) => {
                        g.originator_id =
                            a.get("value").and_then(Value::as_str).map(str::to_string);
                    }
                    Some(10) => {
                        g.cluster_list = a
                            .get("value")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect();
                    }
                    Some(32) => {
                        g.large_communities = a
                            .get("value")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .map(|l| {
                                format!(
                                    "{}:{}:{}",
                                    u64_at(l, &["ASN"]),
                                    u64_at(l, &["LocalData1"]),
                                    u64_at(l, &["LocalData2"])
                                )
                            })
                            .collect();
                    }
                    _ => {}
                }
            }
            out.push(g);
        }
    }
    out
}

/// Fails unless `paths` holds `prefix`.
pub fn path_for<'a>(paths: &'a [GobgpPath], prefix: &str) -> Result<&'a GobgpPath> {
    match paths.iter().find(|p| p.prefix == prefix) {
        Some(p) => Ok(p),
        None => bail!(
            "GoBGP has no path for {prefix}; it has {:?}",
            paths.iter().map(|p| &p.prefix).collect::<Vec<_>>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rib() -> Result<()> {
        let v: Value = serde_json::from_str(
            r#"{"10.245.1.0/24":[{"nlri":{"prefix":"10.245.1.0/24"},"age":1,"best":true,"attrs":[{"type":1,"value":2},{"type":2,"as_paths":[{"segment_type":2,"num":2,"asns":[65010,4200000010]}]},{"type":4,"metric":5},{"type":5,"value":200},{"type":8,"communities":[4259840002]},{"type":32,"value":[{"ASN":4200000002,"LocalData1":3,"LocalData2":4}]},{"type":3,"nexthop":"192.0.2.2"}],"stale":true,"neighbor-ip":"192.0.2.1"}],
                "fd00:1::/64":[{"nlri":{"prefix":"fd00:1::/64"},"best":false,"attrs":[{"type":14,"nexthop":"2001:db8::1","afi":2,"safi":1,"value":[]}]}]}"#,
        )?;
        let r = parse_rib(&v);
        assert_eq!(r.len(), 2);
        let p = path_for(&r, "10.245.1.0/24")?;
        assert!(p.best && p.stale);
        assert_eq!(p.as_path, vec![65010, 4_200_000_010]);
        assert_eq!(p.med, Some(5));
        assert_eq!(p.local_pref, Some(200));
        assert_eq!(p.communities, vec!["65000:2"]);
        assert_eq!(p.large_communities, vec!["4200000002:3:4"]);
        assert_eq!(p.next_hop.as_deref(), Some("192.0.2.2"));
        assert_eq!(p.neighbor.as_deref(), Some("192.0.2.1"));
        assert_eq!(
            path_for(&r, "fd00:1::/64")?.next_hop.as_deref(),
            Some("2001:db8::1")
        );
        Ok(())
    }

    #[test]
    fn parses_neighbor() -> Result<()> {
        let v: Value = serde_json::from_str(
            r#"[{"conf":{"peer_asn":4200000001},"state":{"messages":{"received":{"update":4,"refresh":1},"sent":{"update":2}},"neighbor_address":"192.0.2.1","peer_asn":4200000001,"session_state":6},"timers":{"state":{"negotiated_hold_time":6,"uptime":{"seconds":17}}},"afi_safis":[{"mp_graceful_restart":{"state":{"end_of_rib_received":true}},"state":{"family":{"afi":1,"safi":1},"received":3,"accepted":2}}]}]"#,
        )?;
        let n = parse_neighbor(&v);
        assert!(n.established());
        assert_eq!(n.peer_as, 4_200_000_001);
        assert_eq!(n.received.get("refresh"), Some(&1));
        assert_eq!(n.prefixes.get("ipv4"), Some(&(3, 2)));
        assert_eq!(n.end_of_rib.get("ipv4"), Some(&true));
        assert_eq!(n.negotiated_hold_time, 6);
        assert_eq!(n.uptime, 17);
        Ok(())
    }
}
