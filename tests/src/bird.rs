//! BIRD 2 driver: starts `bird -f` inside a namespace with a generated
//! config, and reads its state through `birdc` on a per-daemon control
//! socket.
//!
//! Owns: the daemon's work directory (config, control socket, PID file,
//! log), parsing `show protocols all NAME` and `show route all`, and the
//! `birdc` commands tests use (reload in/out, disable/enable, configure).
//!
//! Must never: stop BIRD other than by its PID, or wait without a deadline.
//! The control socket is a file, so `birdc` runs in the machine's own
//! namespace and touches no network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bgp_util::{log_tail, spawn_logged, WorkDir, CLI_TIMEOUT};
use crate::{kill_pid, run_with_timeout, wait_for, Daemon, Netns};

/// Timer settings every generated BIRD BGP protocol should carry so that
/// sessions come up, and come back, within a second or two.
pub const FAST_TIMERS: &str =
    "connect delay time 1; connect retry time 1; error wait time 1,5; error forget time 10;";

/// A running BIRD.
#[derive(Debug)]
pub struct Bird {
    ns: String,
    dir: WorkDir,
    conf: PathBuf,
    ctl: PathBuf,
    log: PathBuf,
    /// Extra `bird` flags for the next start (`-R`: graceful restart
    /// recovery).
    flags: Vec<String>,
    daemon: Option<Daemon>,
}

/// One protocol of `show protocols all NAME`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BirdProtocol {
    pub name: String,
    /// Protocol state column: `up`, `start`, `down`.
    pub state: String,
    /// The info column (for BGP: `Established`, `Active`, `Connect`, ...).
    pub info: String,
    /// The "Since" column: when the protocol entered its state. Unchanged
    /// across a route refresh, new after a session reset.
    pub since: String,
    /// `BGP state:` line.
    pub bgp_state: String,
    pub neighbor_as: Option<u32>,
    pub local_as: Option<u32>,
    pub last_error: Option<String>,
    /// "Neighbor graceful restart active": BIRD is keeping the peer's
    /// routes as stale while it waits for the peer to come back.
    pub graceful_restart_active: bool,
    /// Negotiated hold time (the part after `/` of `Hold timer:`).
    pub hold_time: Option<u32>,
    /// Lines under `Neighbor capabilities`, trimmed.
    pub neighbor_capabilities: Vec<String>,
    pub channels: Vec<BirdChannel>,
}

/// One channel (`ipv4`, `ipv6`) of a BGP protocol.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BirdChannel {
    pub name: String,
    pub state: String,
    pub imported: u64,
    pub exported: u64,
    pub preferred: u64,
    /// `Import updates:` received.
    pub import_updates: u64,
    /// `Import withdraws:` received.
    pub import_withdraws: u64,
    /// `Export updates:` (first column: updates the channel exported).
    pub export_updates: u64,
    /// `Neighbor GR:` (Regular, Aware, None ...), when shown.
    pub neighbor_gr: Option<String>,
}

/// One route of `show route all`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BirdRoute {
    pub table: String,
    pub prefix: String,
    /// `unicast`, `blackhole`, `unreachable` ...
    pub kind: String,
    /// The protocol the route came from.
    pub proto: String,
    /// Whether BIRD selected it (`*`).
    pub primary: bool,
    /// Gateways of the `via` lines (two or more for ECMP).
    pub via: Vec<String>,
    pub origin: Option<String>,
    /// `BGP.as_path`, leftmost first.
    pub as_path: Vec<u32>,
    pub next_hop: Vec<String>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// `BGP.community` as `A:B`.
    pub communities: Vec<String>,
    /// `BGP.large_community` as `A:B:C`.
    pub large_communities: Vec<String>,
    pub originator_id: Option<String>,
    pub cluster_list: Vec<String>,
    /// Every `NAME: VALUE` attribute line, as printed.
    pub attrs: BTreeMap<String, String>,
}

impl Bird {
    /// Writes `config` and starts BIRD in `ns`; returns once the control
    /// socket answers.
    pub fn start(ns: &Netns, config: &str) -> Result<Self> {
        let dir = WorkDir::new("bird")?;
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).context("writing bird.conf")?;
        let mut bird = Self {
            ns: ns.name().to_string(),
            ctl: dir.join("bird.ctl"),
            log: dir.join("bird.log"),
            conf,
            dir,
            flags: Vec::new(),
            daemon: None,
        };
        bird.check_config()?;
        bird.launch(ns)?;
        Ok(bird)
    }

    fn check_config(&self) -> Result<()> {
        let conf = self.conf.display().to_string();
        run_with_timeout(Command::new("bird").args(["-p", "-c", &conf]), CLI_TIMEOUT)
            .with_context(|| format!("bird rejected its config:\n{}", self.config_text()))?;
        Ok(())
    }

    fn launch(&mut self, ns: &Netns) -> Result<()> {
        let _ = std::fs::remove_file(&self.ctl);
        let conf = self.conf.display().to_string();
        let ctl = self.ctl.display().to_string();
        let pid = self.dir.join("bird.pid").display().to_string();
        let mut args = vec!["-f", "-c", &conf, "-s", &ctl, "-P", &pid];
        args.extend(self.flags.iter().map(String::as_str));
        let daemon = spawn_logged(ns, "bird", &args, &self.log)?;
        self.daemon = Some(daemon);
        wait_for("BIRD control socket", Duration::from_secs(15), || {
            self.birdc(&["show", "status"]).ok()
        })
        .with_context(|| format!("BIRD did not start:\n{}", log_tail(&self.log, 20)))?;
        Ok(())
    }

    /// Stops BIRD (SIGTERM, then SIGKILL) and starts it again with the
    /// same config and control socket.
    pub fn restart(&mut self, ns: &Netns) -> Result<()> {
        self.stop();
        self.launch(ns)
    }

    /// Kills BIRD with SIGKILL (a crash: no NOTIFICATION), runs `while_down`,
    /// optionally installs `config`, and starts it with `-R` (graceful
    /// restart recovery), as a restarting speaker of RFC 4724.
    pub fn crash_and_restart_graceful(
        &mut self,
        ns: &Netns,
        config: Option<&str>,
        while_down: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.signal(libc::SIGKILL);
        if let Some(mut d) = self.daemon.take() {
            let _ = wait_for("BIRD exit", Duration::from_secs(5), || {
                (!d.is_running()).then_some(())
            });
            d.stop();
        }
        while_down()?;
        if let Some(c) = config {
            std::fs::write(&self.conf, c).context("writing bird.conf")?;
            self.check_config()?;
        }
        self.flags = vec!["-R".into()];
        let r = self.launch(ns);
        self.flags.clear();
        r
    }

    /// Stops BIRD by PID.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    /// Sends a signal (SIGSTOP, SIGCONT, SIGKILL ...) to BIRD's PID.
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

    pub fn ctl(&self) -> &Path {
        &self.ctl
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.conf).unwrap_or_default()
    }

    /// Runs `birdc -s CTL ARGS..`; fails on BIRD's error replies (syntax
    /// error, unknown protocol ...), which birdc prints with exit status 0.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let ctl = self.ctl.display().to_string();
        let out = run_with_timeout(
            Command::new("birdc").arg("-s").arg(&ctl).args(args),
            CLI_TIMEOUT,
        )?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let first_err = text.lines().find(|l| {
            let l = l.trim_start();
            l.starts_with("syntax error")
                || l.starts_with("No protocols match")
                || l.starts_with("Unable to connect")
                || l.starts_with("Network not found")
                || l.starts_with("Reconfiguration rejected")
                || l.contains("Unknown command")
        });
        if let Some(e) = first_err {
            // "Network not found" is an answer, not a failure.
            if !e.contains("Network not found") {
                bail!("birdc {}: {}", args.join(" "), e.trim());
            }
        }
        Ok(text)
    }

    /// `show protocols all NAME`.
    pub fn protocol(&self, name: &str) -> Result<BirdProtocol> {
        let text = self.birdc(&["show", "protocols", "all", name])?;
        parse_protocol(&text).with_context(|| format!("parsing show protocols all {name}"))
    }

    /// Whether protocol `name` is Established.
    pub fn established(&self, name: &str) -> bool {
        self.protocol(name)
            .is_ok_and(|p| p.bgp_state == "Established")
    }

    /// Waits until protocol `name` is Established.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<BirdProtocol> {
        wait_for(
            &format!("BIRD protocol {name} Established"),
            timeout,
            || {
                self.protocol(name)
                    .ok()
                    .filter(|p| p.bgp_state == "Established")
            },
        )
        .with_context(|| self.describe(name))
    }

    /// Protocol state and log tail, for failure messages.
    pub fn describe(&self, name: &str) -> String {
        format!(
            "BIRD {name}: {}\nlog:\n{}",
            self.birdc(&["show", "protocols", "all", name])
                .unwrap_or_else(|e| e.to_string()),
            log_tail(&self.log, 15)
        )
    }

    /// `show route all ARGS..` (e.g. `["protocol", "tortie"]`,
    /// `["table", "master6"]`, `["10.0.0.0/24"]`).
    pub fn routes(&self, args: &[&str]) -> Result<Vec<BirdRoute>> {
        let mut all = vec!["show", "route"];
        all.extend_from_slice(args);
        all.push("all");
        let text = self.birdc(&all)?;
        Ok(parse_routes(&text))
    }

    /// Routes for one prefix (all tables searched), in BIRD's order.
    pub fn routes_for(&self, prefix: &str) -> Result<Vec<BirdRoute>> {
        let table = if prefix.contains(':') {
            "master6"
        } else {
            "master4"
        };
        self.routes(&[prefix, "table", table])
    }

    /// `show route [ARGS..] count`, summed over tables.
    pub fn route_count(&self, args: &[&str]) -> Result<u64> {
        let mut all = vec!["show", "route"];
        all.extend_from_slice(args);
        all.push("count");
        let text = self.birdc(&all)?;
        Ok(parse_route_count(&text))
    }

    /// Routes imported from protocol `name` (both channels).
    pub fn imported(&self, name: &str) -> Result<u64> {
        self.route_count(&["protocol", name])
    }

    /// `reload in NAME`: BIRD sends ROUTE-REFRESH to the peer.
    pub fn reload_in(&self, name: &str) -> Result<()> {
        self.birdc(&["reload", "in", name]).map(drop)
    }

    /// `reload out NAME`: BIRD re-sends its routes to the peer.
    pub fn reload_out(&self, name: &str) -> Result<()> {
        self.birdc(&["reload", "out", name]).map(drop)
    }

    pub fn disable(&self, name: &str) -> Result<()> {
        self.birdc(&["disable", name]).map(drop)
    }

    pub fn enable(&self, name: &str) -> Result<()> {
        self.birdc(&["enable", name]).map(drop)
    }

    /// Replaces the config file and runs `configure` (checked first, so a
    /// rejected config fails here rather than leaving BIRD running the old).
    pub fn configure(&self, config: &str) -> Result<()> {
        std::fs::write(&self.conf, config).context("writing bird.conf")?;
        self.check_config()?;
        let out = self.birdc(&["configure"])?;
        if !(out.contains("Reconfigured") || out.contains("Reconfiguration in progress")) {
            bail!("birdc configure: {}", out.trim());
        }
        Ok(())
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        // A SIGSTOPped BIRD ignores SIGTERM until continued.
        self.signal(libc::SIGCONT);
        self.stop();
    }
}

fn num_after(line: &str, key: &str) -> Option<u64> {
    line.split_once(key)?
        .1
        .split_whitespace()
        .next()?
        .trim_end_matches(',')
        .parse()
        .ok()
}

/// Parses one protocol of `birdc show protocols all NAME`.
pub fn parse_protocol(text: &str) -> Result<BirdProtocol> {
    let mut p = BirdProtocol::default();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("Name "));
    if lines.next().is_none() {
        bail!("no protocol table in: {text}");
    }
    let Some(head) = lines.next() else {
        bail!("no protocol line in: {text}");
    };
    let cols: Vec<&str> = head.split_whitespace().collect();
    p.name = cols.first().copied().unwrap_or_default().to_string();
    p.state = cols.get(3).copied().unwrap_or_default().to_string();
    p.since = cols.get(4).copied().unwrap_or_default().to_string();
    p.info = cols.get(5..).map(|c| c.join(" ")).unwrap_or_default();
    let mut in_neighbor_caps = false;
    let mut channel: Option<BirdChannel> = None;
    for line in lines {
        let t = line.trim();
        let indent = line.len() - line.trim_start().len();
        if let Some(rest) = t.strip_prefix("Channel ") {
            if let Some(c) = channel.take() {
                p.channels.push(c);
            }
            channel = Some(BirdChannel {
                name: rest.trim().to_string(),
                ..Default::default()
            });
            in_neighbor_caps = false;
            continue;
        }
        if in_neighbor_caps {
            if indent > 4 {
                p.neighbor_capabilities.push(t.to_string());
                continue;
            }
            in_neighbor_caps = false;
        }
        if let Some(c) = channel.as_mut() {
            if let Some(v) = t.strip_prefix("State:") {
                c.state = v.trim().to_string();
            } else if t.starts_with("Routes:") {
                c.imported = num_after(t, "Routes:").unwrap_or(0);
                c.exported = t
                    .split(',')
                    .find(|s| s.contains("exported"))
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                c.preferred = t
                    .split(',')
                    .find(|s| s.contains("preferred"))
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
            } else if t.starts_with("Import updates:") {
                c.import_updates = num_after(t, "Import updates:").unwrap_or(0);
            } else if t.starts_with("Export updates:") {
                c.export_updates = num_after(t, "Export updates:").unwrap_or(0);
            } else if t.starts_with("Import withdraws:") {
                c.import_withdraws = num_after(t, "Import withdraws:").unwrap_or(0);
            } else if let Some(v) = t.strip_prefix("Neighbor GR:") {
                c.neighbor_gr = Some(v.trim().to_string());
            }
            continue;
        }
        if let Some(v) = t.strip_prefix("BGP state:") {
            p.bgp_state = v.trim().to_string();
        } else if t.starts_with("Neighbor AS:") {
            p.neighbor_as = num_after(t, "Neighbor AS:").and_then(|v| u32::try_from(v).ok());
        } else if t.starts_with("Local AS:") {
            p.local_as = num_after(t, "Local AS:").and_then(|v| u32::try_from(v).ok());
        } else if let Some(v) = t.strip_prefix("Last error:") {
            p.last_error = Some(v.trim().to_string());
        } else if t.starts_with("Neighbor graceful restart active") {
            p.graceful_restart_active = true;
        } else if let Some(v) = t.strip_prefix("Hold timer:") {
            p.hold_time = v
                .trim()
                .split('/')
                .nth(1)
                .and_then(|h| h.trim().parse().ok());
        } else if t == "Neighbor capabilities" {
            in_neighbor_caps = true;
        }
    }
    if let Some(c) = channel.take() {
        p.channels.push(c);
    }
    Ok(p)
}

/// `(65000,1) (65000,2)` -> `["65000:1", "65000:2"]`; also the large form.
fn parse_tuples(v: &str) -> Vec<String> {
    v.split(')')
        .filter_map(|t| {
            let t = t.trim().trim_start_matches('(');
            if t.is_empty() {
                return None;
            }
            Some(t.split(',').map(str::trim).collect::<Vec<_>>().join(":"))
        })
        .collect()
}

/// Parses `birdc show route all`.
pub fn parse_routes(text: &str) -> Vec<BirdRoute> {
    let mut out: Vec<BirdRoute> = Vec::new();
    let mut table = String::new();
    let mut last_prefix = String::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("Table ") {
            table = t.trim_end_matches(':').trim().to_string();
            continue;
        }
        if line.starts_with("BIRD ") || line.trim().is_empty() {
            continue;
        }
        if line.starts_with('\t') {
            let Some(r) = out.last_mut() else { continue };
            let t = line.trim();
            if let Some(v) = t.strip_prefix("via ") {
                if let Some(gw) = v.split_whitespace().next() {
                    r.via.push(gw.to_string());
                }
                continue;
            }
            let Some((k, v)) = t.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "BGP.origin" => r.origin = Some(v.to_string()),
                "BGP.as_path" => {
                    r.as_path = v
                        .split_whitespace()
                        .filter_map(|a| a.trim_matches(|c| c == '{' || c == '}').parse().ok())
                        .collect();
                }
                "BGP.next_hop" => {
                    r.next_hop = v.split_whitespace().map(str::to_string).collect();
                }
                "BGP.med" => r.med = v.parse().ok(),
                "BGP.local_pref" => r.local_pref = v.parse().ok(),
                "BGP.community" => r.communities = parse_tuples(v),
                "BGP.large_community" => r.large_communities = parse_tuples(v),
                "BGP.originator_id" => r.originator_id = Some(v.to_string()),
                "BGP.cluster_list" => {
                    r.cluster_list = v.split_whitespace().map(str::to_string).collect();
                }
                _ => {}
            }
            r.attrs.insert(k.to_string(), v.to_string());
            continue;
        }
        // A route line: `PREFIX KIND [PROTO TIME (from X)] * (PREF) ...`;
        // further routes of the same prefix start with blanks.
        let (prefix, rest) = if line.starts_with(' ') {
            (last_prefix.clone(), line.trim_start())
        } else {
            let mut it = line.splitn(2, char::is_whitespace);
            let p = it.next().unwrap_or_default().to_string();
            (p, it.next().unwrap_or_default().trim_start())
        };
        last_prefix.clone_from(&prefix);
        let kind = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let proto = rest
            .split_once('[')
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        let primary = rest
            .split_once(']')
            .is_some_and(|(_, r)| r.trim_start().starts_with('*'));
        out.push(BirdRoute {
            table: table.clone(),
            prefix,
            kind,
            proto,
            primary,
            ..Default::default()
        });
    }
    out
}

/// Sums the `N of M routes` lines of `show route count` (one per table).
pub fn parse_route_count(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.contains(" of ") && l.contains(" routes") && !l.starts_with("Total"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTO: &str = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
gobgp      BGP        ---        up     06:26:02.059  Established   
  BGP state:          Established
    Neighbor address: 192.0.2.2
    Neighbor AS:      4200000002
    Local AS:         4200000001
    Neighbor ID:      192.0.2.2
    Local capabilities
      Multiprotocol
        AF announced: ipv4 ipv6
      Route refresh
    Neighbor capabilities
      Multiprotocol
        AF announced: ipv4 ipv6
      Route refresh
      4-octet AS numbers
    Session:          external AS4
    Source address:   192.0.2.1
    Hold timer:       5.302/6
    Keepalive timer:  0.769/2
  Channel ipv4
    State:          UP
    Table:          master4
    Preference:     100
    Input filter:   ACCEPT
    Output filter:  (unnamed)
    Routes:         1 imported, 2 exported, 1 preferred
    Route change stats:     received   rejected   filtered    ignored   accepted
      Import updates:              3          0          0          0          1
      Import withdraws:            4          0        ---          0          0
      Export updates:              2          1          0        ---          1
      Export withdraws:            0        ---        ---        ---          0
    BGP Next hop:   192.0.2.1
  Channel ipv6
    State:          UP
    Routes:         5 imported, 0 exported, 5 preferred
";

    #[test]
    fn parses_protocol() -> Result<()> {
        let p = parse_protocol(PROTO)?;
        assert_eq!(p.name, "gobgp");
        assert_eq!(p.state, "up");
        assert_eq!(p.info, "Established");
        assert_eq!(p.bgp_state, "Established");
        assert_eq!(p.neighbor_as, Some(4_200_000_002));
        assert_eq!(p.local_as, Some(4_200_000_001));
        assert_eq!(p.hold_time, Some(6));
        assert!(p
            .neighbor_capabilities
            .contains(&"4-octet AS numbers".to_string()));
        assert!(!p
            .neighbor_capabilities
            .iter()
            .any(|c| c.starts_with("Session")));
        assert_eq!(p.channels.len(), 2);
        let c = &p.channels[0];
        assert_eq!((c.imported, c.exported, c.preferred), (1, 2, 1));
        assert_eq!((c.import_updates, c.import_withdraws), (3, 4));
        assert_eq!(p.channels[1].imported, 5);
        Ok(())
    }

    const ROUTES: &str = "BIRD 2.0.12 ready.
Table master4:
10.244.1.0/24        blackhole [s4 06:26:01.283] * (200)
\tType: static univ
10.245.1.0/24        unicast [gobgp 06:26:03.304] * (100) [AS4200000010?]
\tvia 192.0.2.2 on va
\tType: BGP univ
\tBGP.origin: Incomplete
\tBGP.as_path: 4200000002 65010 4200000010
\tBGP.next_hop: 192.0.2.2
\tBGP.med: 5
\tBGP.local_pref: 100
\tBGP.community: (65000,2) (65535,65281)
\tBGP.large_community: (4200000002, 3, 4)
                     unicast [other 06:26:03.304 from 192.0.2.9] (100) [AS65001i]
\tvia 192.0.2.9 on va
\tBGP.as_path: 65001

Table master6:
fd00:2::/64          unicast [gobgp 06:26:03.318 from 192.0.2.2] * (100) [AS4200000002?]
\tvia 2001:db8::2 on va
\tBGP.next_hop: 2001:db8::2 fe80::1
";

    #[test]
    fn parses_routes() {
        let r = parse_routes(ROUTES);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].kind, "blackhole");
        let g = &r[1];
        assert_eq!(g.prefix, "10.245.1.0/24");
        assert_eq!(g.proto, "gobgp");
        assert!(g.primary);
        assert_eq!(g.as_path, vec![4_200_000_002, 65010, 4_200_000_010]);
        assert_eq!(g.med, Some(5));
        assert_eq!(g.local_pref, Some(100));
        assert_eq!(g.communities, vec!["65000:2", "65535:65281"]);
        assert_eq!(g.large_communities, vec!["4200000002:3:4"]);
        assert_eq!(g.via, vec!["192.0.2.2"]);
        assert_eq!(r[2].prefix, "10.245.1.0/24");
        assert_eq!(r[2].proto, "other");
        assert!(!r[2].primary);
        assert_eq!(r[3].table, "master6");
        assert_eq!(r[3].next_hop, vec!["2001:db8::2", "fe80::1"]);
    }

    #[test]
    fn counts_routes() {
        let t = "BIRD 2.0.12 ready.
2 of 2 routes for 2 networks in table master4
3 of 3 routes for 3 networks in table master6
Total: 5 of 5 routes for 5 networks in 2 tables
";
        assert_eq!(parse_route_count(t), 5);
        assert_eq!(
            parse_route_count(
                "BIRD 2.0.12 ready.\n7 of 9 routes for 9 networks in table master4\n"
            ),
            7
        );
    }
}
