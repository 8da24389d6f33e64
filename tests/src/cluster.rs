//! Clusters for the integration tests, made with the lab
//! (`tortie::lab`): BIRD ToRs, `tortie agent` per node namespace, pods
//! through `tortie-cni`, all under a per-test prefix and run directory,
//! removed on drop (also when the test panics, after printing the agents'
//! log tails).
//!
//! Must never: share names with another test, or leave a namespace or a
//! process behind.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tortie::lab::{down, Binaries, Lab, LabOptions};

use crate::tortie_bgp::tortie_binary;
use crate::{kill_pid, require_netns, unique_prefix, wait_for};

/// Programs a cluster test needs besides the tortie binaries.
pub const CLUSTER_TOOLS: &[&str] = &["ip", "bird", "birdc", "ping", "iptables", "ipset", "kill"];

/// Checks root and the tools (skips outside CI, fails under `CI=true`).
pub fn require_cluster(test: &str) -> bool {
    require_netns(test, CLUSTER_TOOLS)
}

/// `tortie` and `tortie-cni`: `$TORTIE_BIN` / `$TORTIE_CNI_BIN`, else next
/// to each other (see [`tortie_binary`]).
pub fn binaries() -> Result<Binaries> {
    let tortie = tortie_binary()?;
    let cni = match std::env::var_os("TORTIE_CNI_BIN") {
        Some(p) => PathBuf::from(p),
        None => tortie.with_file_name("tortie-cni"),
    };
    if !cni.is_file() && std::env::var_os("TORTIE_CNI_BIN").is_none() {
        // `cargo test` builds the `tortie` binary only when a test asks
        // for it (tortie_binary); the plugin likewise.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!(
            "{} missing; running cargo build -p tortie --bin tortie-cni",
            cni.display()
        );
        crate::run_with_timeout(
            Command::new(cargo).args(["build", "-p", "tortie", "--bin", "tortie-cni"]),
            Duration::from_secs(900),
        )
        .context("building tortie-cni")?;
    }
    if !cni.is_file() {
        bail!(
            "no tortie-cni at {} (cargo build -p tortie --bins, or set TORTIE_CNI_BIN)",
            cni.display()
        );
    }
    Ok(Binaries { tortie, cni })
}

/// A lab owned by one test.
#[derive(Debug)]
pub struct TestLab {
    lab: Option<Lab>,
    prefix: String,
    run_dir: PathBuf,
}

impl TestLab {
    /// Brings a lab up with `opts` (its prefix and run dir are replaced by
    /// unique ones derived from `tag`), without the example policies.
    pub fn up(tag: &str, opts: LabOptions) -> Result<TestLab> {
        let prefix = unique_prefix(tag);
        let run_dir = std::env::temp_dir().join(format!("tortie-lab-{prefix}"));
        let opts = LabOptions {
            prefix: prefix.clone(),
            run_dir: run_dir.clone(),
            ..opts
        };
        let bins = binaries()?;
        let mut progress = std::io::stderr();
        let lab = Lab::up_with(&opts, &bins, false, &mut progress)
            .with_context(|| format!("lab {prefix} up"))?;
        Ok(TestLab {
            lab: Some(lab),
            prefix,
            run_dir,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `e` followed by the lab's state (agent logs, sessions, routes).
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!("{e:#}\n--- the lab at that moment:\n{}", self.describe())
    }

    /// Agent log tails and ToR sessions, for failure messages.
    pub fn describe(&self) -> String {
        let Some(lab) = &self.lab else {
            return String::new();
        };
        let mut s = String::new();
        for n in &lab.plan().nodes {
            s.push_str(&format!(
                "--- agent {} ({}) log tail:\n{}\n",
                n.name,
                lab.agent_liveness(&n.name),
                tortie::lab::exec::log_tail(&lab.agent_log(&n.name), 25)
            ));
        }
        s.push_str(&lab.summary(false));
        s
    }
}

impl Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        self.lab.as_ref().expect("lab present until drop")
    }
}

impl DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("lab present until drop")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
        self.lab = None;
        if let Err(e) = down(&self.run_dir, &self.prefix) {
            eprintln!("lab {} down: {e:#}", self.prefix);
        }
    }
}

/// `ping -i INTERVAL` from a namespace, running until [`IntervalPing::stop`].
#[derive(Debug)]
pub struct IntervalPing {
    child: Option<Child>,
}

/// What an interval ping counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingCount {
    pub transmitted: u64,
    pub received: u64,
}

impl IntervalPing {
    pub fn start(netns: &str, to: &str, interval: &str) -> Result<IntervalPing> {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-q", "-i", interval, to])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the interval ping")?;
        Ok(IntervalPing { child: Some(child) })
    }

    /// Stops the ping (SIGINT, so it prints its summary) and returns what
    /// it counted.
    pub fn stop(mut self) -> Result<PingCount> {
        let Some(child) = self.child.take() else {
            bail!("ping already stopped");
        };
        kill_pid(child.id(), libc::SIGINT);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = rx
            .recv_timeout(Duration::from_secs(10))
            .context("ping did not stop")??;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_ping(&text).with_context(|| format!("ping printed no summary: {text}"))
    }
}

impl Drop for IntervalPing {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `N packets transmitted, M received` of ping's summary.
pub fn parse_ping(text: &str) -> Option<PingCount> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok());
    Some(PingCount {
        transmitted: nums.next()?,
        received: nums.next()?,
    })
}

/// Waits until `cond` holds, with the lab's state in the failure message.
pub fn wait_lab(
    lab: &TestLab,
    what: &str,
    secs: u64,
    mut cond: impl FnMut() -> bool,
) -> Result<()> {
    wait_for(what, Duration::from_secs(secs), || cond().then_some(())).map_err(|e| lab.explain(e))
}

/// The repository's root (where `scripts/lab.sh` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Runs `scripts/lab.sh ARGS` as the README shows it, with this build's
/// binaries; its stdout.
pub fn lab_sh(args: &[&str], timeout: u64) -> Result<String> {
    let bins = binaries()?;
    let out = crate::run_with_timeout(
        Command::new(repo_root().join("scripts/lab.sh"))
            .args(args)
            .env("TORTIE_BIN", &bins.tortie)
            .env("TORTIE_CNI_BIN", &bins.cni)
            .current_dir(repo_root()),
        Duration::from_secs(timeout),
    )
    .with_context(|| format!("scripts/lab.sh {}", args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The network namespaces named `PREFIX-*`.
pub fn namespaces(prefix: &str) -> Result<Vec<String>> {
    let out = crate::run_with_timeout(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(10),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect())
}

/// Whether `pid` is a live process (not a zombie), by `/proc/PID/stat`.
pub fn pid_running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_parses() {
        let t = "--- 10.244.3.2 ping statistics ---\n\
                 212 packets transmitted, 212 received, 0% packet loss, time 10573ms\n";
        assert_eq!(
            parse_ping(t),
            Some(PingCount {
                transmitted: 212,
                received: 212
            })
        );
        let t = "5 packets transmitted, 3 received, +2 errors, 40% packet loss, time 4ms";
        assert_eq!(parse_ping(t).map(|c| c.received), Some(3));
    }
}
