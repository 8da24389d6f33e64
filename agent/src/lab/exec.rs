//! Running commands for the lab: every command has a timeout, every
//! process the lab starts is recorded by PID and stopped by that PID only,
//! and every wait polls a condition against a deadline.
//!
//! Must never: signal a process by name, or a PID whose command line is
//! no longer the program the lab started there (PIDs get reused).

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Timeout of one short command (`ip`, `birdc`, `sysctl`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Daemons this process started. Kept so that a stopped child of a
/// long-lived caller (a test) does not stay a zombie, and because for our
/// own children `waitpid` is the truth about whether they run: `/proc`
/// is not (see [`is_running`]).
static CHILDREN: Mutex<Vec<Spawned>> = Mutex::new(Vec::new());

/// Exited children whose status is kept for failure messages.
const KEEP_EXITED: usize = 64;

#[derive(Debug)]
struct Spawned {
    child: Child,
    pid: u32,
    /// The command line as spawned (`ip netns exec NS tortie agent ..`).
    command: String,
    /// Set once reaped; the PID may be reused from then on.
    exited: Option<ExitStatus>,
}

/// Runs `cmd` with `input` on stdin; fails when it exits non-zero (with its
/// output in the error) or runs longer than `timeout` (then it is killed).
pub fn run_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let desc = describe(cmd);
    let out = run_unchecked(cmd, input, timeout)?;
    if !out.status.success() {
        bail!(
            "`{desc}` failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// Like [`run_input`] but returns the output whatever the exit status.
pub fn run_unchecked(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let desc = describe(cmd);
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{desc}`"))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // A child that exits without reading is reported by its status.
        let _ = stdin.write_all(data);
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.with_context(|| format!("waiting for `{desc}`")),
        Err(_) => {
            // Our own child, still unreaped (the waiting thread holds it),
            // so the PID cannot have been reused.
            signal(pid, "KILL");
            bail!("`{desc}` timed out after {timeout:?}")
        }
    }
}

/// Runs `cmd` with the default timeout; returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = run_input(cmd, None, COMMAND_TIMEOUT)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip netns exec NETNS PROGRAM ARGS..` with the default timeout.
pub fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    run(netns_command(netns, program).args(args))
}

/// A command that runs `program` inside `netns`. `ip netns exec` execs the
/// program, so a spawned child's PID is the program's own.
pub fn netns_command(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.arg("netns").arg("exec").arg(netns).arg(program);
    c
}

/// Starts a long-running `cmd` in its own process group (a Ctrl-C at the
/// terminal of `tortie lab up` must not stop the lab's daemons), output
/// appended to `log`; returns its PID.
pub fn spawn_daemon(mut cmd: Command, log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let desc = describe(&cmd);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = file.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting `{desc}`"))?;
    let pid = child.id();
    if let Ok(mut v) = CHILDREN.lock() {
        // An earlier child with this PID was reaped: its record is stale.
        v.retain(|c| c.pid != pid);
        v.push(Spawned {
            child,
            pid,
            command: desc,
            exited: None,
        });
    }
    Ok(pid)
}

/// Reaps the children of this process that have exited, keeping their
/// exit status for [`exit_description`].
pub fn reap() {
    if let Ok(mut v) = CHILDREN.lock() {
        v.retain_mut(|c| {
            if c.exited.is_none() {
                match c.child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => c.exited = Some(status),
                    // Reaped by someone else: we no longer know this PID.
                    Err(_) => return false,
                }
            }
            true
        });
        let exited = v.iter().filter(|c| c.exited.is_some()).count();
        let mut drop = exited.saturating_sub(KEEP_EXITED);
        v.retain(|c| {
            let old = drop > 0 && c.exited.is_some();
            drop -= usize::from(old);
            !old
        });
    }
}

/// What this process knows about its child `pid`: `None` when `pid` is not
/// (or no longer) a child it spawned with [`spawn_daemon`].
fn child_state(pid: u32) -> Option<(Option<ExitStatus>, String)> {
    reap();
    let v = CHILDREN.lock().ok()?;
    let c = v.iter().find(|c| c.pid == pid)?;
    Some((c.exited, c.command.clone()))
}

/// Whether `pid` runs (a zombie does not) the `program` the lab started
/// there (a reused PID does not count).
///
/// For a daemon this process spawned, `waitpid` decides and the program is
/// matched against the command line it was spawned with. `/proc` cannot
/// decide that: while a process execs (twice for `ip netns exec NS tortie`:
/// `ip`, then `tortie`), the kernel has switched to the new image but not
/// yet set up its arguments, and `/proc/PID/cmdline` reads empty; a check
/// right after `spawn` (or a poll that lands in the second exec, which for a
/// 300 MB debug binary is not short) then took a starting agent for gone.
/// For other PIDs (a lab recorded by another `tortie lab` process) `/proc`
/// is all there is: the executable's path counts as well as the command
/// line, since the former is set before the latter during an exec.
pub fn is_running(pid: u32, program: &str) -> bool {
    if let Some((exited, command)) = child_state(pid) {
        return exited.is_none() && command.contains(program);
    }
    proc_runs(pid, program)
}

fn proc_runs(pid: u32, program: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3, after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(program)
        || exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(program))
}

/// How `pid` ended, for failure messages: its exit status (`exit status: 1`,
/// `signal: 9 (SIGKILL)`) and the command it ran when it was our child.
pub fn exit_description(pid: u32) -> String {
    match child_state(pid) {
        Some((Some(status), command)) => format!("pid {pid} exited ({status}) running `{command}`"),
        Some((None, command)) => format!("pid {pid} still runs `{command}`"),
        None => format!("pid {pid} is gone (not started by this process: exit status unknown)"),
    }
}

/// Sends `sig` (`TERM`, `KILL`, `STOP`, `CONT`) to one PID.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg("-s")
        .arg(sig)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops `pid` if it still runs `program`: SIGTERM, then SIGKILL after
/// `grace`. Returns whether it had to be signalled.
pub fn stop(pid: u32, program: &str, grace: Duration) -> bool {
    if pid == 0 || !is_running(pid, program) {
        return false;
    }
    signal(pid, "CONT");
    signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_running(pid, program) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(pid, "KILL");
    let _ = wait_for("process exit", Duration::from_secs(5), || {
        (!is_running(pid, program)).then_some(())
    });
    true
}

/// Polls `cond` every 100 ms until it returns `Some`, or fails after
/// `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, cond: impl FnMut() -> Option<T>) -> Result<T> {
    poll(what, timeout, Duration::from_millis(100), cond)
}

/// Polls `cond` every `every` until it returns `Some`, or fails after
/// `timeout` naming `what`. `cond` runs at least once, also with a zero
/// timeout.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(every);
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes `text` to `path` through a temp file and a rename, so a watcher
/// never reads half a file. The temp name starts with a dot: the file
/// datastore skips hidden files.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_time_out_and_report_failures() {
        let e = run_input(
            Command::new("sleep").arg("5"),
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        let e = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        let out = run_input(Command::new("cat").arg("-"), Some(b"hi"), COMMAND_TIMEOUT).unwrap();
        assert_eq!(out.stdout, b"hi");
    }

    /// `ip netns exec NS PROGRAM` is two execs; during each the kernel
    /// shows an empty `/proc/PID/cmdline` (the new image's argument area is
    /// set up after the old one is gone). A daemon must count as running
    /// from the moment it is spawned, through both, until it exits.
    #[test]
    fn a_daemon_runs_from_spawn_through_its_execs() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let mut c = Command::new("env");
            c.args(["sleep", "30"]);
            let pid = spawn_daemon(c, &dir.path().join("log")).unwrap();
            let until = Instant::now() + Duration::from_millis(100);
            while Instant::now() < until {
                assert!(
                    is_running(pid, "sleep"),
                    "round {round}: {}",
                    exit_description(pid)
                );
            }
            assert!(stop(pid, "sleep", Duration::from_secs(2)));
            assert!(!is_running(pid, "sleep"));
        }
    }

    #[test]
    fn a_daemon_that_exits_reports_its_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut c = Command::new("sh");
        c.args(["-c", "echo boom >&2; exit 3"]);
        let pid = spawn_daemon(c, &log).unwrap();
        wait_for("sh to exit", Duration::from_secs(10), || {
            (!is_running(pid, "sh")).then_some(())
        })
        .unwrap();
        let d = exit_description(pid);
        assert!(d.contains("exit status: 3") && d.contains("sh -c"), "{d}");
        assert_eq!(log_tail(&log, 5), "boom");
    }

    #[test]
    fn another_process_s_pid_is_judged_by_proc() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        wait_for("sleep to exec", Duration::from_secs(5), || {
            is_running(pid, "sleep").then_some(())
        })
        .unwrap();
        assert!(!is_running(pid, "bird"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_running(pid, "sleep"));
        assert!(exit_description(pid).contains("exit status unknown"));
    }

    #[test]
    fn stop_by_pid_checks_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new("sleep");
        c.arg("30");
        let pid = spawn_daemon(c, &dir.path().join("log")).unwrap();
        // Running from the start, even before the child has exec'd.
        assert!(is_running(pid, "sleep"));
        // A PID whose command line is another program is left alone.
        assert!(!stop(pid, "bird", Duration::from_millis(100)));
        assert!(is_running(pid, "sleep"));
        assert!(stop(pid, "sleep", Duration::from_secs(2)));
        assert!(!is_running(pid, "sleep"));
    }
}
