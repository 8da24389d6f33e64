//! Small pieces the BGP drivers share: a per-daemon work directory, daemons
//! whose output goes to a log file, and running code inside a namespace.
//!
//! Must never: stop a process other than by its PID, or leave a thread in a
//! foreign namespace (the thread that enters one ends right after).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::{Daemon, Netns};

/// Timeout for one quick CLI call (`birdc`, `gobgp`, `tortie status`).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// A work directory for one daemon: config, control socket, log. Kept on
/// disk when `TORTIE_KEEP_WORKDIRS` is set, so a failed run can be read.
#[derive(Debug)]
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl WorkDir {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tortie-{tag}-"))
            .tempdir()
            .context("creating a work directory")?;
        let path = dir.path().to_path_buf();
        let dir = if std::env::var_os("TORTIE_KEEP_WORKDIRS").is_some() {
            eprintln!("keeping work directory {}", path.display());
            let _ = dir.keep();
            None
        } else {
            Some(dir)
        };
        Ok(Self { dir, path })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(&self.path, |d| d.path())
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

/// Starts `program args..` inside `ns` with stdout and stderr appended to
/// `log`. `sh -c exec` keeps the PID: the guard's PID is the daemon's own,
/// so signals (SIGSTOP, SIGKILL) reach the daemon and nothing else.
pub fn spawn_logged(ns: &Netns, program: &str, args: &[&str], log: &Path) -> Result<Daemon> {
    let script = format!(
        "exec \"$0\" \"$@\" >>'{}' 2>&1",
        log.display().to_string().replace('\'', "")
    );
    let mut all = vec!["-c", script.as_str(), program];
    all.extend_from_slice(args);
    ns.spawn("sh", &all)
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`
/// (`/var/run/netns/NAME`). Sockets made by `f` belong to that namespace
/// and keep working from any thread afterwards.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path = PathBuf::from("/var/run/netns").join(ns);
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path)
            .with_context(|| format!("opening namespace {}", path.display()))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering namespace {}", path.display()))?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("thread in namespace {ns} panicked"))?
}

/// Connects `a` and `b` with a veth pair addressed `192.0.2.A/24` +
/// `2001:db8::A/64` and `192.0.2.B/24` + `2001:db8::B/64` (IPv6 without
/// DAD, so it is usable at once), and waits until `a` reaches `b` over
/// both families.
pub fn link(a: &Netns, a_if: &str, a_n: u8, b: &Netns, b_if: &str, b_n: u8) -> Result<()> {
    a.run(
        "ip",
        &["link", "add", a_if, "type", "veth", "peer", "name", b_if],
    )?;
    a.run("ip", &["link", "set", b_if, "netns", b.name()])?;
    for (ns, ifname, n) in [(a, a_if, a_n), (b, b_if, b_n)] {
        ns.run(
            "ip",
            &["addr", "add", &format!("192.0.2.{n}/24"), "dev", ifname],
        )?;
        ns.run(
            "ip",
            &[
                "addr",
                "add",
                &format!("2001:db8::{n}/64"),
                "dev",
                ifname,
                "nodad",
            ],
        )?;
        ns.run("ip", &["link", "set", ifname, "up"])?;
    }
    let v4 = format!("192.0.2.{b_n}");
    let v6 = format!("2001:db8::{b_n}");
    crate::wait_for("veth up", Duration::from_secs(10), || {
        (a.run("ping", &["-c1", "-W1", &v4]).is_ok() && a.run("ping", &["-c1", "-W1", &v6]).is_ok())
            .then_some(())
    })
}

/// A bridge `br0` inside `hub` with one veth per spoke: spoke `i` gets
/// `192.0.2.N/24` + `2001:db8::N/64`, the hub's bridge gets
/// `192.0.2.H/24`. Every namespace reaches every other over the bridge.
pub fn bridge(hub: &Netns, hub_n: u8, spokes: &[(&Netns, u8)]) -> Result<()> {
    hub.run("ip", &["link", "add", "br0", "type", "bridge"])?;
    hub.run(
        "ip",
        &["addr", "add", &format!("192.0.2.{hub_n}/24"), "dev", "br0"],
    )?;
    hub.run(
        "ip",
        &[
            "addr",
            "add",
            &format!("2001:db8::{hub_n}/64"),
            "dev",
            "br0",
            "nodad",
        ],
    )?;
    hub.run("ip", &["link", "set", "br0", "up"])?;
    for (i, (ns, n)) in spokes.iter().enumerate() {
        let h = format!("h{i}");
        let s = "eth0";
        hub.run(
            "ip",
            &["link", "add", &h, "type", "veth", "peer", "name", s],
        )?;
        hub.run("ip", &["link", "set", s, "netns", ns.name()])?;
        hub.run("ip", &["link", "set", &h, "master", "br0"])?;
        hub.run("ip", &["link", "set", &h, "up"])?;
        ns.run("ip", &["addr", "add", &format!("192.0.2.{n}/24"), "dev", s])?;
        ns.run(
            "ip",
            &[
                "addr",
                "add",
                &format!("2001:db8::{n}/64"),
                "dev",
                s,
                "nodad",
            ],
        )?;
        ns.run("ip", &["link", "set", s, "up"])?;
    }
    for (ns, _) in spokes {
        let v4 = format!("192.0.2.{hub_n}");
        crate::wait_for("bridge up", Duration::from_secs(10), || {
            ns.run("ping", &["-c1", "-W1", &v4]).is_ok().then_some(())
        })?;
    }
    Ok(())
}
