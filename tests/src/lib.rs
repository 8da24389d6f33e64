//! The network-namespace test harness shared by tortie's integration tests.
//!
//! Owns: creating and removing network namespaces and veth links with a
//! per-test name prefix, running commands inside them with a timeout,
//! starting daemons whose lifetime is tied to a guard (stopped by PID, never
//! by name), and polling conditions with a deadline.
//!
//! Must never: add an address or a route in the machine's own namespace, or
//! send traffic anywhere but loopback and the namespaces a test made.

pub mod agent_node;
pub mod bgp_testpeer;
pub mod bgp_util;
pub mod bird;
pub mod cluster;
pub mod cni_util;
pub mod fake_apiserver;
pub mod gobgp;
pub mod podnet;
pub mod tortie_bgp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Default timeout for one command run by the harness.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// True when running under CI (`CI=true`), where missing prerequisites fail.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks that the test can create network namespaces and run the given
/// tools. Returns `false` (and prints why) when the test should skip outside
/// CI; panics under `CI=true`, where a missing prerequisite is a failure.
pub fn require_netns(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    // `unsafe_code` is forbidden here, so ask id(1) rather than geteuid().
    let uid = Command::new("id").arg("-u").output().ok().and_then(|o| {
        String::from_utf8(o.stdout)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    });
    if uid != Some(0) {
        missing.push("root".to_string());
    }
    for tool in tools {
        if which(tool).is_none() {
            missing.push(format!("the `{tool}` program"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: needs {}", missing.join(", "));
    if in_ci() {
        panic!("{msg} (CI=true: missing prerequisites are failures)");
    }
    report_skip(&msg);
    false
}

/// Reports a skipped test on the real stderr: libtest captures what
/// `eprintln!` prints in a test that passes, so a skip reported that way
/// never reaches the log of a CI run.
pub fn report_skip(msg: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "skipped: {msg}");
}

/// Probes whether the kernel supports a link kind (`ipip`, `dummy`, ...)
/// by creating one inside a throwaway namespace. The one allowed skip.
pub fn kernel_has_link_kind(kind: &str) -> bool {
    let Ok(ns) = Netns::new("probe") else {
        return false;
    };
    let args: Vec<&str> = match kind {
        "ipip" => vec![
            "link",
            "add",
            "probe0",
            "type",
            "ipip",
            "remote",
            "192.0.2.1",
        ],
        "vxlan" => vec![
            "link", "add", "probe0", "type", "vxlan", "id", "1", "dstport", "4789",
        ],
        other => vec!["link", "add", "probe0", "type", other],
    };
    ns.run("ip", &args).is_ok()
}

/// Finds an executable on PATH (or in /usr/sbin, /sbin for root tools).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file());
    found
}

/// A unique, short prefix for this test's namespaces and interfaces.
/// Interface names are limited to 15 bytes, so prefixes stay short.
pub fn unique_prefix(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(6)
        .collect();
    format!("tt{pid}{tag}{n}")
}

/// Runs a command with a timeout; fails with its stderr when it exits
/// non-zero or runs too long.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let desc = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {desc}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out.with_context(|| format!("waiting for {desc}"))?;
            if !out.status.success() {
                bail!(
                    "{desc} failed ({}): {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                );
            }
            Ok(out)
        }
        Err(_) => {
            kill_pid(pid, libc::SIGKILL);
            bail!("{desc} timed out after {timeout:?}")
        }
    }
}

/// Sends a signal to one process by PID.
pub fn kill_pid(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Polls `cond` every 50 ms until it returns `Some`, or fails after
/// `timeout` (the lab's poll, a little faster: tests time what they wait
/// for).
pub fn wait_for<T>(what: &str, timeout: Duration, cond: impl FnMut() -> Option<T>) -> Result<T> {
    tortie::lab::exec::poll(what, timeout, Duration::from_millis(50), cond)
}

/// A network namespace owned by a test; removed on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<unique prefix>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        Self::named(&unique_prefix(tag))
    }

    /// Creates a namespace with an exact name (which must carry the test's
    /// prefix) with loopback up.
    pub fn named(name: &str) -> Result<Self> {
        run_with_timeout(
            Command::new("ip").args(["netns", "add", name]),
            COMMAND_TIMEOUT,
        )?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace with the default timeout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = run_with_timeout(self.command(program).args(args), COMMAND_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running process inside the namespace; it is killed by
    /// PID when the returned guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Daemon> {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program} in {}", self.name))?;
        Ok(Daemon {
            child: Some(child),
            what: program.to_string(),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            Command::new("ip").args(["netns", "del", &self.name]),
            COMMAND_TIMEOUT,
        );
    }
}

/// Connects two namespaces with a veth pair and addresses each end.
/// `a_addr`/`b_addr` are `ADDR/LEN` strings from the documentation ranges.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: &str,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) -> Result<()> {
    // The pair is created inside `a`, then one end moves to `b`: nothing is
    // ever created in the machine's own namespace.
    a.run(
        "ip",
        &["link", "add", a_if, "type", "veth", "peer", "name", b_if],
    )?;
    a.run("ip", &["link", "set", b_if, "netns", b.name()])?;
    a.run("ip", &["addr", "add", a_addr, "dev", a_if])?;
    b.run("ip", &["addr", "add", b_addr, "dev", b_if])?;
    a.run("ip", &["link", "set", a_if, "up"])?;
    b.run("ip", &["link", "set", b_if, "up"])?;
    Ok(())
}

/// A process started by a test, stopped by PID on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    what: String,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Stops the process (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill_pid(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
