//! The thin applier: the only place in this crate that runs processes.
//!
//! Owns: running `ipset restore` and `iptables-restore --noflush` (and
//! `ip6tables-restore`) with the payloads the pure core rendered, the single
//! jump from each builtin chain into tortie's chains, destroying stale sets,
//! and removing everything tortie made. Must never: decide what the rules
//! are (the compiler does), touch a rule it did not make (kube-proxy and
//! others share the builtin chains), or leave a half-applied update in force.
//!
//! Order of one update, and why:
//!
//! ```text
//!  ipset restore   (fill temporary sets, then `swap` each into place)
//!      │ fails → real sets untouched, temporary sets destroyed, error
//!  iptables-restore --noflush  (v4 and v6 at once; atomic per table)
//!      │ fails → sets rolled back to the last good state, error,
//!      │         the next apply re-sends the full state
//!  ipset destroy <stale sets>  (only once no rule references them)
//! ```
//!
//! Speed: an update's cost is the processes it runs (a CNI ADD waits for
//! one), so [`Applier::apply`] runs what does not depend on each other at
//! the same time, in two steps, and nothing it does not need:
//!
//! ```text
//!  1. *-save -t filter (v4) ┐ one read per family: our chains there?
//!     *-save -t filter (v6) │ jumps from the builtins right?
//!     ipset restore         ┘ the update's sets (as if the chains are)
//!  2. *-restore --noflush (v4)   only the chains that changed, plus the
//!     *-restore --noflush (v6)   jump fixes; a family with neither: none
//! ```
//!
//! Step 2 runs the families one after the other and stops at the first
//! failure: at the same time, one family could commit while the other
//! failed, leaving the update half in force.
//!
//! Should step 1 find our chains gone (a flush by hand), the full state is
//! sent instead (sets again, then every chain). The sweep of sets left by
//! an earlier process (`ipset list`) runs with full updates only: the first
//! one, the one after a failure and each resync.
//!
//! Every command goes through a [`Runner`], so tests can target a network
//! namespace (`ip netns exec NODE ...`) or record commands in memory.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::compile::Compiled;
use crate::diff::diff;
use crate::render::ipset_restore;
use crate::ruleset::Ruleset;
use crate::ruleset::{BuiltinChain, Family};

pub use crate::naming::{CHAIN_PREFIX, SET_PREFIX};
/// Prefix of the temporary sets an update fills before swapping them in.
pub const TMP_SET_PREFIX: &str = "tort-tmp-";

/// Default timeout for one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },
}

impl RunError {
    /// The tool's stderr, if it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            RunError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Runs one external command, with `stdin` fed to it, and returns stdout.
pub trait Runner: fmt::Debug + Send + Sync {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, RunError>;
}

impl<R: Runner + ?Sized> Runner for std::sync::Arc<R> {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, RunError> {
        (**self).run(program, args, stdin)
    }
}

/// Runs real processes, optionally behind a prefix such as
/// `ip netns exec NODE` (ipset and iptables state are per network namespace).
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    prefix: Vec<String>,
    timeout: Duration,
}

impl Default for ProcessRunner {
    fn default() -> Self {
        Self::host()
    }
}

impl ProcessRunner {
    /// Runs commands in the current network namespace.
    pub fn host() -> Self {
        ProcessRunner {
            prefix: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs commands inside a named network namespace.
    pub fn in_netns(name: &str) -> Self {
        Self::with_prefix(["ip", "netns", "exec", name])
    }

    /// Runs every command as `PREFIX... program args...`.
    pub fn with_prefix<S: Into<String>>(prefix: impl IntoIterator<Item = S>) -> Self {
        ProcessRunner {
            prefix: prefix.into_iter().map(Into::into).collect(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Runner for ProcessRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, RunError> {
        let mut argv: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        argv.push(program);
        argv.extend_from_slice(args);
        let command = argv.join(" ");
        let (first, rest) = argv.split_first().unwrap_or((&program, &[]));
        let mut child = Command::new(first)
            .args(rest)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn {
                command: command.clone(),
                source,
            })?;
        // Feed and drain in threads so a large payload or output never
        // deadlocks against a full pipe, and the deadline below still holds.
        let writer = match (stdin, child.stdin.take()) {
            (Some(data), Some(mut pipe)) => {
                let data = data.to_string();
                Some(std::thread::spawn(move || {
                    let _ = pipe.write_all(data.as_bytes());
                }))
            }
            _ => None,
        };
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        let deadline = Instant::now() + self.timeout;
        // Most tools exit within a few milliseconds and an update waits
        // for each: poll finely first, then back off to 2 ms.
        let mut pause = Duration::from_micros(50);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RunError::Timeout {
                        command,
                        timeout: self.timeout,
                    });
                }
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(RunError::Failed {
                command,
                status: status.to_string(),
                stderr: stderr.trim().to_string(),
            });
        }
        Ok(stdout)
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Why an update did not apply. The previous state stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("ipset restore failed, sets unchanged: {0}")]
    Ipset(#[source] RunError),
    #[error("{family:?} iptables-restore failed, previous rules kept: {source}")]
    Iptables {
        family: Family,
        #[source]
        source: RunError,
    },
    #[error("reading the current {family:?} rules failed: {source}")]
    Save {
        family: Family,
        #[source]
        source: RunError,
    },
    #[error("removing tortie's state failed: {0}")]
    Remove(#[source] RunError),
}

/// One update's payloads, as the core rendered them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Payloads<'a> {
    /// `ipset restore` payload, empty when no set changed.
    pub ipset: &'a str,
    /// `iptables-restore --noflush` payload, `None` when no chain changed.
    pub iptables_v4: Option<&'a str>,
    pub iptables_v6: Option<&'a str>,
    /// Sets to destroy once the rules no longer reference them.
    pub stale_sets: &'a [String],
}

/// What an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub ipset_changed: bool,
    pub iptables_v4_changed: bool,
    pub iptables_v6_changed: bool,
    /// Jumps from builtin chains that were missing or duplicated and fixed.
    pub jumps_fixed: Vec<String>,
    pub sets_destroyed: Vec<String>,
    /// Problems that did not fail the update (a stale set still busy ...).
    pub warnings: Vec<String>,
}

/// Drives one network namespace's ipset and iptables state.
#[derive(Debug)]
pub struct Dataplane {
    runner: Box<dyn Runner>,
    backend: Backend,
    families: Vec<Family>,
}

impl Dataplane {
    pub fn new(runner: Box<dyn Runner>, backend: Backend) -> Self {
        Dataplane {
            runner,
            backend,
            families: vec![Family::V4, Family::V6],
        }
    }

    /// Limits the families programmed (e.g. a host without IPv6).
    pub fn with_families(mut self, families: &[Family]) -> Self {
        self.families = families.to_vec();
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    pub fn runner(&self) -> &dyn Runner {
        self.runner.as_ref()
    }

    /// The filter table as the backend's save tool prints it.
    pub fn save_filter(&self, family: Family) -> Result<String, ApplyError> {
        self.runner
            .run(&self.backend.save_program(family), &["-t", "filter"], None)
            .map_err(|source| ApplyError::Save { family, source })
    }

    /// Runs the ipset stage: the payload is rewritten to fill temporary sets
    /// and swap them in, so a failure leaves the real sets as they were.
    pub fn restore_sets(&self, payload: &str) -> Result<(), ApplyError> {
        if payload.trim().is_empty() {
            return Ok(());
        }
        let tx = transactional_ipset(payload);
        if let Err(e) = self.runner.run("ipset", &["restore", "-exist"], Some(&tx)) {
            self.destroy_tmp_sets();
            return Err(ApplyError::Ipset(e));
        }
        Ok(())
    }

    fn destroy_tmp_sets(&self) {
        for set in self.list_sets().unwrap_or_default() {
            if set.starts_with(TMP_SET_PREFIX) {
                let _ = self.runner.run("ipset", &["destroy", &set], None);
            }
        }
    }

    /// Names of all sets in the namespace.
    pub fn list_sets(&self) -> Result<Vec<String>, RunError> {
        let out = self.runner.run("ipset", &["list", "-n"], None)?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Applies one family's payload (or `None`: only repairs the jumps),
    /// adding the jump fixes inside the same transaction.
    pub fn restore_rules(
        &self,
        family: Family,
        payload: Option<&str>,
    ) -> Result<(bool, Vec<String>), ApplyError> {
        let current = self.save_filter(family)?;
        self.restore_rules_over(family, payload, &current)
    }

    /// [`Dataplane::restore_rules`] over a filter table read before
    /// (`current`, this update's own read).
    fn restore_rules_over(
        &self,
        family: Family,
        payload: Option<&str>,
        current: &str,
    ) -> Result<(bool, Vec<String>), ApplyError> {
        let fixes = jump_fixes(current);
        let text = match payload {
            Some(p) => with_jump_fixes(&strip_builtin_jumps(p), &fixes),
            None if fixes.is_empty() => return Ok((false, Vec::new())),
            None => with_jump_fixes("", &fixes),
        };
        self.runner
            .run(
                &self.backend.restore_program(family),
                &["--noflush", "--wait"],
                Some(&text),
            )
            .map_err(|source| ApplyError::Iptables { family, source })?;
        Ok((payload.is_some(), fixes))
    }

    /// Applies one update in the safe order (see the module docs). On an
    /// iptables failure `rollback_sets` (the last good state's full ipset
    /// payload) is restored so the old rules see their old sets.
    pub fn commit(
        &self,
        p: &Payloads<'_>,
        rollback_sets: Option<&str>,
    ) -> Result<ApplyReport, ApplyError> {
        self.restore_sets(p.ipset)?;
        self.commit_rules(p, rollback_sets, None)
    }

    /// The rest of [`Dataplane::commit`] once the sets are in: each
    /// family's rules in turn (over `saves`, this update's reads of the
    /// filter tables, when given), then the stale sets.
    fn commit_rules(
        &self,
        p: &Payloads<'_>,
        rollback_sets: Option<&str>,
        saves: Option<&[(Family, String)]>,
    ) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport {
            ipset_changed: !p.ipset.trim().is_empty(),
            ..ApplyReport::default()
        };
        // One family after the other, stopping at the first failure: were
        // they restored at the same time, one family could commit the new
        // rules (and with them new sets) while the other failed, and the
        // update would be half in force, which no rollback here undoes.
        let mut failed = None;
        for &family in &self.families {
            let payload = match family {
                Family::V4 => p.iptables_v4,
                Family::V6 => p.iptables_v6,
            };
            let r = match saves.and_then(|s| s.iter().find(|(f, _)| *f == family)) {
                Some((_, current)) => self.restore_rules_over(family, payload, current),
                None => self.restore_rules(family, payload),
            };
            match r {
                Ok((changed, fixes)) => {
                    match family {
                        Family::V4 => report.iptables_v4_changed = changed,
                        Family::V6 => report.iptables_v6_changed = changed,
                    }
                    report.jumps_fixed.extend(fixes);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            if let Some(old) = rollback_sets {
                let _ = self.restore_sets(old);
            }
            return Err(e);
        }
        for set in p.stale_sets {
            match self.runner.run("ipset", &["destroy", set], None) {
                Ok(_) => report.sets_destroyed.push(set.clone()),
                Err(e) => report.warnings.push(format!("stale set {set} kept: {e}")),
            }
        }
        Ok(report)
    }

    /// Removes tortie's jumps, chains and sets; leaves everything else.
    pub fn remove(&self) -> Result<(), ApplyError> {
        for &family in &self.families {
            let current = self.save_filter(family)?;
            let payload = removal_payload(&current);
            if payload.is_empty() {
                continue;
            }
            self.runner
                .run(
                    &self.backend.restore_program(family),
                    &["--noflush", "--wait"],
                    Some(&payload),
                )
                .map_err(|source| ApplyError::Iptables { family, source })?;
        }
        for set in self.list_sets().map_err(ApplyError::Remove)? {
            if set.starts_with(SET_PREFIX) {
                self.runner
                    .run("ipset", &["destroy", &set], None)
                    .map_err(ApplyError::Remove)?;
            }
        }
        Ok(())
    }
}

/// Applies compiled rulesets to one network namespace, remembering the last
/// one that fully applied so the next update is a diff against it.
///
/// On any failure the previous state stays in force and the next
/// [`Applier::apply`] re-sends the full state (the kernel may hold part of
/// the failed update, e.g. the v4 table when v6 failed).
#[derive(Debug)]
pub struct Applier {
    dataplane: Dataplane,
    last: Option<Ruleset>,
    full_next: bool,
}

impl Applier {
    pub fn new(dataplane: Dataplane) -> Self {
        Applier {
            dataplane,
            last: None,
            full_next: true,
        }
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// The last ruleset that applied completely.
    pub fn last_applied(&self) -> Option<&Ruleset> {
        self.last.as_ref()
    }

    /// Makes the next apply send the full state (periodic resync).
    pub fn resync(&mut self) {
        self.full_next = true;
    }

    /// Applies `compiled.ruleset` (rejected policies are already left out
    /// of it; their errors are the caller's to report). Two steps of
    /// processes run at the same time (module docs).
    pub fn apply(&mut self, compiled: &Compiled) -> Result<ApplyReport, ApplyError> {
        let new = &compiled.ruleset;
        let dp = &self.dataplane;
        let families = dp.families().to_vec();
        // The update as if the kernel holds what we last applied; its sets
        // go in while the tables are read.
        let guessed_full = self.full_next || self.last.is_none();
        let guess = diff(
            if guessed_full {
                None
            } else {
                self.last.as_ref()
            },
            new,
        );
        let (saves, sets) = std::thread::scope(|s| {
            let sets = s.spawn(|| dp.restore_sets(&guess.ipset));
            let saves = per_family(&families, |f| dp.save_filter(f));
            let sets = sets.join().unwrap_or_else(|_| {
                Err(ApplyError::Ipset(RunError::Spawn {
                    command: "ipset restore".into(),
                    source: std::io::Error::other("the ipset thread panicked"),
                }))
            });
            (saves, sets)
        });
        // Never trust memory about the kernel: if our chains vanished (a
        // flush by hand, a reboot of the netns), send everything.
        let mut kernel_chains = Vec::new();
        let mut saved = Vec::new();
        for (family, save) in saves {
            let save = match save {
                Ok(s) => s,
                Err(e) => return Err(self.failed(new, e)),
            };
            let chains = chains_with_prefix(&save, CHAIN_PREFIX);
            let has_ours = BuiltinChain::ALL
                .iter()
                .all(|b| chains.iter().any(|c| c == b.target()));
            if !has_ours {
                self.full_next = true;
            }
            kernel_chains.push((family, chains));
            saved.push((family, save));
        }
        let full = self.full_next || self.last.is_none();
        let update = if full == guessed_full {
            // The sets went in with the guess.
            if let Err(e) = sets {
                return Err(self.failed(new, e));
            }
            guess
        } else {
            // Our chains are gone, so are the sets the guess assumed (a
            // failure of its `ipset restore` says nothing then): the full
            // state, sets first.
            let update = diff(None, new);
            if let Err(e) = self.dataplane.restore_sets(&update.ipset) {
                return Err(self.failed(new, e));
            }
            update
        };
        let rollback = self.last.as_ref().map(|old| {
            families
                .iter()
                .map(|&f| ipset_restore(old, f))
                .collect::<String>()
        });
        let payloads = Payloads {
            ipset: &update.ipset,
            iptables_v4: update.iptables_v4.as_deref(),
            iptables_v6: update.iptables_v6.as_deref(),
            stale_sets: &update.stale_sets,
        };
        let committed = self
            .dataplane
            .commit_rules(&payloads, rollback.as_deref(), Some(&saved));
        let mut report = match committed {
            Ok(r) => r,
            Err(e) => return Err(self.failed(new, e)),
        };
        // Chains of a previous process that the new ruleset no longer has:
        // nothing references them after the commit, so they can go.
        for (family, chains) in kernel_chains {
            let wanted = new.table(family);
            let stale: Vec<String> = chains
                .into_iter()
                .filter(|c| !wanted.chains.contains_key(c))
                .collect();
            if stale.is_empty() {
                continue;
            }
            let payload = remove_chains_payload(&stale);
            if let Err(e) = self.dataplane.runner().run(
                &self.dataplane.backend().restore_program(family),
                &["--noflush", "--wait"],
                Some(&payload),
            ) {
                report
                    .warnings
                    .push(format!("{family:?}: stale chains {stale:?} kept: {e}"));
            }
        }
        // Likewise sets, after a full update: its diff knows no old sets,
        // and a crashed run may have left temporary ones. An incremental
        // update destroyed the ones it dropped itself.
        if full {
            match self.dataplane.list_sets() {
                Ok(sets) => {
                    for set in sets {
                        if !set.starts_with(SET_PREFIX) || new.sets.contains_key(&set) {
                            continue;
                        }
                        match self
                            .dataplane
                            .runner()
                            .run("ipset", &["destroy", &set], None)
                        {
                            Ok(_) => report.sets_destroyed.push(set),
                            Err(e) => report.warnings.push(format!("stale set {set} kept: {e}")),
                        }
                    }
                }
                Err(e) => report.warnings.push(format!("listing sets: {e}")),
            }
        }
        self.last = Some(new.clone());
        self.full_next = false;
        Ok(report)
    }

    /// After a failed update: the next one sends the full state, and sets
    /// this one created, which no committed rule references, go (a set a
    /// committed table does use refuses to, which is right).
    fn failed(&mut self, new: &Ruleset, e: ApplyError) -> ApplyError {
        self.full_next = true;
        for set in new.sets.keys() {
            let known = self.last.as_ref().is_some_and(|l| l.sets.contains_key(set));
            if !known {
                let _ = self
                    .dataplane
                    .runner()
                    .run("ipset", &["destroy", set], None);
            }
        }
        e
    }

    /// Removes tortie's jumps, chains and sets (tests, `--remove`).
    pub fn remove(&mut self) -> Result<(), ApplyError> {
        self.last = None;
        self.full_next = true;
        self.dataplane.remove()
    }
}

/// Runs `f` for each family, at the same time when there are several (the
/// tools of different families do not wait for each other); results in
/// `families` order.
fn per_family<T: Send>(families: &[Family], f: impl Fn(Family) -> T + Sync) -> Vec<(Family, T)> {
    match families {
        [one] => vec![(*one, f(*one))],
        _ => std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = families
                .iter()
                .map(|&family| (family, s.spawn(move || f(family))))
                .collect();
            handles
                .into_iter()
                .map(|(family, h)| match h.join() {
                    Ok(v) => (family, v),
                    // Only a panic in `f`: pass it on.
                    Err(p) => std::panic::resume_unwind(p),
                })
                .collect()
        }),
    }
}

fn chains_with_prefix(save: &str, prefix: &str) -> Vec<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|decl| decl.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn remove_chains_payload(chains: &[String]) -> String {
    let mut out = String::from("*filter\n");
    for c in chains {
        out.push_str(&format!("-F {c}\n"));
    }
    for c in chains {
        out.push_str(&format!("-X {c}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// Rewrites an `ipset restore` payload so that every set it creates is
/// filled as a temporary twin and swapped into place at the end: `ipset
/// restore` stops at the first bad line, and with this shape that leaves the
/// real sets untouched. Payloads that already swap pass through.
pub fn transactional_ipset(payload: &str) -> String {
    if payload.lines().any(|l| l.trim_start().starts_with("swap ")) {
        return payload.to_string();
    }
    let mut tmp_names: Vec<(String, String)> = Vec::new();
    let tmp_for = |name: &str, tmp_names: &Vec<(String, String)>| {
        tmp_names
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    };
    let mut body = Vec::new();
    // The real sets are created only after every temporary set filled, so
    // a failure creates nothing visible either.
    let mut creates = Vec::new();
    let mut tail = Vec::new();
    for line in payload.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, rest @ ..] => {
                let tmp = format!("{TMP_SET_PREFIX}{}", tmp_names.len());
                tmp_names.push((name.to_string(), tmp.clone()));
                creates.push(line.to_string());
                body.push(format!("create {tmp} {}", rest.join(" ")));
                body.push(format!("flush {tmp}"));
            }
            ["flush", name] if tmp_for(name, &tmp_names).is_some() => {}
            ["add", name, rest @ ..] => match tmp_for(name, &tmp_names) {
                Some(tmp) => body.push(format!("add {tmp} {}", rest.join(" "))),
                None => body.push(line.to_string()),
            },
            ["destroy", ..] => tail.push(line.to_string()),
            _ => body.push(line.to_string()),
        }
    }
    body.extend(creates);
    for (name, tmp) in &tmp_names {
        body.push(format!("swap {tmp} {name}"));
        body.push(format!("destroy {tmp}"));
    }
    body.extend(tail);
    let mut out = body.join("\n");
    out.push('\n');
    out
}

/// The lines that make each builtin chain jump exactly once into tortie's
/// chain, read from the current `iptables-save -t filter` output.
pub fn jump_fixes(save_filter: &str) -> Vec<String> {
    let mut fixes = Vec::new();
    for chain in BuiltinChain::ALL {
        let (builtin, target) = (chain.name(), chain.target());
        let rule = format!("-A {builtin} -j {target}");
        let count = save_filter.lines().filter(|l| l.trim() == rule).count();
        if count == 0 {
            fixes.push(format!("-I {builtin} 1 -j {target}"));
        }
        for _ in 1..count.max(1) {
            fixes.push(format!("-D {builtin} -j {target}"));
        }
    }
    fixes
}

/// Drops lines of a payload that touch builtin chains' jumps: the applier
/// owns them (a blind `-I` in every update would stack duplicates).
fn strip_builtin_jumps(payload: &str) -> String {
    let mut out = String::new();
    for line in payload.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let touches_builtin = matches!(
            words.as_slice(),
            [op, chain, ..] if (*op == "-A" || *op == "-I" || *op == "-D")
                && BuiltinChain::ALL.iter().any(|b| b.name() == *chain)
        );
        if !touches_builtin {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Adds the jump fixes just before the filter table's COMMIT (or as a
/// filter table of their own when the payload has none).
fn with_jump_fixes(payload: &str, fixes: &[String]) -> String {
    if fixes.is_empty() {
        return payload.to_string();
    }
    let mut out = String::new();
    let mut in_filter = false;
    let mut placed = false;
    for line in payload.lines() {
        if line.trim() == "*filter" {
            in_filter = true;
        }
        if in_filter && line.trim() == "COMMIT" && !placed {
            for f in fixes {
                out.push_str(f);
                out.push('\n');
            }
            placed = true;
            in_filter = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !placed {
        out.push_str("*filter\n");
        for f in fixes {
            out.push_str(f);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The `iptables-restore --noflush` payload that deletes tortie's jumps and
/// chains from a filter table dump; empty when there is nothing of ours.
pub fn removal_payload(save_filter: &str) -> String {
    let mut deletes = Vec::new();
    let mut chains = Vec::new();
    for line in save_filter.lines() {
        let line = line.trim();
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with(CHAIN_PREFIX) {
                chains.push(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let mut words = rule.split_whitespace();
            let chain = words.next().unwrap_or_default();
            let ours = words.any(|w| w.starts_with(CHAIN_PREFIX));
            if !chain.starts_with(CHAIN_PREFIX) && ours {
                deletes.push(format!("-D {rule}"));
            }
        }
    }
    if deletes.is_empty() && chains.is_empty() {
        return String::new();
    }
    let mut out = String::from("*filter\n");
    for d in deletes {
        out.push_str(&d);
        out.push('\n');
    }
    // Flush all first: chains may reference each other.
    for c in &chains {
        out.push_str(&format!("-F {c}\n"));
    }
    for c in &chains {
        out.push_str(&format!("-X {c}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// One recorded command: program, arguments, stdin.
    type Call = (String, Vec<String>, Option<String>);

    /// Records commands; fails the ones whose program matches `fail`.
    #[derive(Debug, Default)]
    pub(crate) struct FakeRunner {
        pub calls: Mutex<Vec<Call>>,
        pub fail: Mutex<Option<String>>,
        pub save: Mutex<String>,
    }

    impl Runner for FakeRunner {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            stdin: Option<&str>,
        ) -> Result<String, RunError> {
            self.calls.lock().unwrap().push((
                program.to_string(),
                args.iter().map(|s| s.to_string()).collect(),
                stdin.map(String::from),
            ));
            if self.fail.lock().unwrap().as_deref() == Some(program) {
                return Err(RunError::Failed {
                    command: program.to_string(),
                    status: "exit status: 1".into(),
                    stderr: "line 3 failed".into(),
                });
            }
            if program.ends_with("-save") {
                return Ok(self.save.lock().unwrap().clone());
            }
            Ok(String::new())
        }
    }

    #[test]
    fn ipset_payload_becomes_swap_transaction() {
        let p = "create tort-a hash:net family inet -exist\nflush tort-a\nadd tort-a 10.0.0.0/8\n\
                 destroy tort-old\n";
        let tx = transactional_ipset(p);
        assert_eq!(
            tx,
            "create tort-tmp-0 hash:net family inet -exist\nflush tort-tmp-0\n\
             add tort-tmp-0 10.0.0.0/8\ncreate tort-a hash:net family inet -exist\n\
             swap tort-tmp-0 tort-a\ndestroy tort-tmp-0\ndestroy tort-old\n"
        );
        let already = "create x hash:ip\nswap x y\n";
        assert_eq!(transactional_ipset(already), already);
    }

    #[test]
    fn jumps_are_added_once_and_duplicates_removed() {
        let save =
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A INPUT -j TORT-INPUT\n\
                    -A FORWARD -j TORT-FORWARD\n-A FORWARD -j TORT-FORWARD\nCOMMIT\n";
        assert_eq!(
            jump_fixes(save),
            vec!["-D FORWARD -j TORT-FORWARD", "-I OUTPUT 1 -j TORT-OUTPUT"]
        );
        let ok = "-A INPUT -j TORT-INPUT\n-A FORWARD -j TORT-FORWARD\n-A OUTPUT -j TORT-OUTPUT\n";
        assert!(jump_fixes(ok).is_empty());
    }

    #[test]
    fn fixes_go_inside_the_filter_transaction() {
        let payload = "*filter\n:TORT-INPUT - [0:0]\n-I INPUT 1 -j TORT-INPUT\n-A TORT-INPUT -j ACCEPT\nCOMMIT\n";
        let out = with_jump_fixes(
            &strip_builtin_jumps(payload),
            &["-I INPUT 1 -j TORT-INPUT".into()],
        );
        assert_eq!(
            out,
            "*filter\n:TORT-INPUT - [0:0]\n-A TORT-INPUT -j ACCEPT\n-I INPUT 1 -j TORT-INPUT\nCOMMIT\n"
        );
        assert_eq!(
            with_jump_fixes("", &["-D INPUT -j TORT-INPUT".into()]),
            "*filter\n-D INPUT -j TORT-INPUT\nCOMMIT\n"
        );
    }

    #[test]
    fn removal_touches_only_our_rules() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n:TORT-INPUT - [0:0]\n\
                    :TORT-PI-1 - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A INPUT -j TORT-INPUT\n\
                    -A TORT-INPUT -j TORT-PI-1\nCOMMIT\n";
        assert_eq!(
            removal_payload(save),
            "*filter\n-D INPUT -j TORT-INPUT\n-F TORT-INPUT\n-F TORT-PI-1\n-X TORT-INPUT\n\
             -X TORT-PI-1\nCOMMIT\n"
        );
        assert_eq!(
            removal_payload("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"),
            ""
        );
    }

    #[test]
    fn a_family_that_fails_stops_the_other_from_committing() {
        // v4 fails: v6 must not take the new rules (and its new sets), or
        // the update would be half in force after the rollback.
        let fake = std::sync::Arc::new(FakeRunner::default());
        *fake.fail.lock().unwrap() = Some("iptables-nft-restore".into());
        let dp = Dataplane::new(Box::new(fake.clone()), Backend::Nft);
        let p = Payloads {
            ipset: "create tort-a hash:ip\n",
            iptables_v4: Some("*filter\nCOMMIT\n"),
            iptables_v6: Some("*filter\nCOMMIT\n"),
            stale_sets: &[],
        };
        assert!(dp.commit(&p, None).is_err());
        let calls = fake.calls.lock().unwrap();
        assert!(
            !calls.iter().any(|c| c.0 == "ip6tables-nft-restore"),
            "{calls:?}"
        );
    }

    #[test]
    fn iptables_failure_rolls_sets_back_and_reports_stderr() {
        let fake = std::sync::Arc::new(FakeRunner::default());
        *fake.fail.lock().unwrap() = Some("iptables-nft-restore".into());
        let dp = Dataplane::new(Box::new(fake.clone()), Backend::Nft).with_families(&[Family::V4]);
        let p = Payloads {
            ipset: "create tort-a hash:ip\nadd tort-a 10.0.0.1\n",
            iptables_v4: Some("*filter\nCOMMIT\n"),
            iptables_v6: None,
            stale_sets: &[],
        };
        let err = dp
            .commit(&p, Some("create tort-a hash:ip\nadd tort-a 10.0.0.9\n"))
            .unwrap_err();
        assert!(err.to_string().contains("line 3 failed"), "{err}");
        // The rollback restored the old member after the failed restore.
        let calls = fake.calls.lock().unwrap();
        let programs: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            programs,
            [
                "ipset",
                "iptables-nft-save",
                "iptables-nft-restore",
                "ipset"
            ]
        );
        assert!(calls[3]
            .2
            .as_deref()
            .unwrap()
            .contains("add tort-tmp-0 10.0.0.9"));
    }

    #[test]
    fn stale_sets_are_destroyed_only_after_rules() {
        let fake = std::sync::Arc::new(FakeRunner::default());
        let dp =
            Dataplane::new(Box::new(fake.clone()), Backend::Legacy).with_families(&[Family::V4]);
        let stale = vec!["tort-old".to_string()];
        let p = Payloads {
            ipset: "",
            iptables_v4: Some("*filter\nCOMMIT\n"),
            iptables_v6: None,
            stale_sets: &stale,
        };
        let report = dp.commit(&p, None).unwrap();
        assert_eq!(report.sets_destroyed, stale);
        assert!(report.iptables_v4_changed);
        let calls = fake.calls.lock().unwrap();
        let programs: Vec<String> = calls
            .iter()
            .map(|c| format!("{} {}", c.0, c.1.join(" ")))
            .collect();
        assert_eq!(
            programs,
            [
                "iptables-legacy-save -t filter",
                "iptables-legacy-restore --noflush --wait",
                "ipset destroy tort-old"
            ]
        );
    }

    #[test]
    fn applier_resends_the_full_state_after_a_failure_and_nothing_when_unchanged() {
        let compiled = crate::compile(&crate::Snapshot::default());
        let fake = std::sync::Arc::new(FakeRunner::default());
        // The kernel as a successful apply leaves it: our chains and jumps.
        let mut save = String::from("*filter\n");
        for chain in compiled.ruleset.table(Family::V4).chains.keys() {
            save.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for b in BuiltinChain::ALL {
            save.push_str(&format!("-A {} -j {}\n", b.name(), b.target()));
        }
        save.push_str("COMMIT\n");
        *fake.save.lock().unwrap() = save;
        *fake.fail.lock().unwrap() = Some("iptables-nft-restore".into());
        let dp = Dataplane::new(Box::new(fake.clone()), Backend::Nft).with_families(&[Family::V4]);
        let mut applier = Applier::new(dp);
        assert!(applier.apply(&compiled).is_err());
        assert!(applier.last_applied().is_none());

        *fake.fail.lock().unwrap() = None;
        fake.calls.lock().unwrap().clear();
        applier.apply(&compiled).unwrap();
        let restores: Vec<String> = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == "iptables-nft-restore")
            .filter_map(|c| c.2.clone())
            .collect();
        assert_eq!(restores.len(), 1, "{restores:?}");
        assert!(
            restores[0].contains(":TORT-FORWARD"),
            "full state re-sent: {}",
            restores[0]
        );

        fake.calls.lock().unwrap().clear();
        let report = applier.apply(&compiled).unwrap();
        assert!(
            !report.iptables_v4_changed && report.jumps_fixed.is_empty(),
            "{report:?}"
        );
        let calls = fake.calls.lock().unwrap();
        assert!(
            calls.iter().all(|c| c.0 != "iptables-nft-restore"),
            "an unchanged ruleset restores nothing: {calls:?}"
        );
    }

    /// The kernel as a successful apply of `compiled` leaves it, per the
    /// fake's one answer to every save: our chains and the jumps.
    fn kernel_after(compiled: &Compiled) -> String {
        let mut save = String::from("*filter\n");
        for chain in compiled.ruleset.table(Family::V4).chains.keys() {
            save.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for b in BuiltinChain::ALL {
            save.push_str(&format!("-A {} -j {}\n", b.name(), b.target()));
        }
        save.push_str("COMMIT\n");
        save
    }

    fn programs(fake: &FakeRunner) -> Vec<String> {
        let mut p: Vec<String> = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.0, c.1.join(" ")))
            .collect();
        // Steps run tools at the same time: compare as a multiset.
        p.sort();
        p
    }

    #[test]
    fn a_new_workload_costs_one_read_and_one_restore_per_family_and_no_listing() {
        use crate::testing::{mk_local, mk_ns, mk_pod};
        let one = crate::Snapshot {
            namespaces: vec![mk_ns("default", &[])],
            pods: vec![mk_pod("default", "a", &[("app", "web")], "10.244.1.2")],
            local: vec![mk_local("default", "a")],
            ..Default::default()
        };
        let mut two = one.clone();
        two.pods
            .push(mk_pod("default", "b", &[("app", "web")], "10.244.1.3"));
        two.local.push(mk_local("default", "b"));
        let (first, second) = (crate::compile(&one), crate::compile(&two));
        let fake = std::sync::Arc::new(FakeRunner::default());
        let dp = Dataplane::new(Box::new(fake.clone()), Backend::Nft);
        let mut applier = Applier::new(dp);
        applier.apply(&first).unwrap();
        assert!(
            programs(&fake).contains(&"ipset list -n".to_string()),
            "the first (full) update sweeps old sets"
        );
        *fake.save.lock().unwrap() = kernel_after(&first);
        fake.calls.lock().unwrap().clear();
        applier.apply(&second).unwrap();
        assert_eq!(
            programs(&fake),
            [
                "ip6tables-nft-restore --noflush --wait",
                "ip6tables-nft-save -t filter",
                "iptables-nft-restore --noflush --wait",
                "iptables-nft-save -t filter",
            ],
            "one read and one restore per family; no set changed, no listing"
        );
        assert_eq!(applier.last_applied(), Some(&second.ruleset));
    }

    #[test]
    fn chains_gone_from_the_kernel_send_the_full_state_sets_included() {
        let compiled = crate::compile(&crate::Snapshot::default());
        let fake = std::sync::Arc::new(FakeRunner::default());
        let dp = Dataplane::new(Box::new(fake.clone()), Backend::Nft).with_families(&[Family::V4]);
        let mut applier = Applier::new(dp);
        applier.apply(&compiled).unwrap();
        // A flush by hand: the save shows none of our chains.
        *fake.save.lock().unwrap() = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n".into();
        fake.calls.lock().unwrap().clear();
        applier.apply(&compiled).unwrap();
        let calls = fake.calls.lock().unwrap();
        let restore = calls
            .iter()
            .find(|c| c.0 == "iptables-nft-restore")
            .and_then(|c| c.2.clone())
            .unwrap();
        assert!(restore.contains(":TORT-FORWARD"), "full state: {restore}");
        assert!(
            restore.contains("-I FORWARD 1 -j TORT-FORWARD"),
            "{restore}"
        );
        assert!(calls
            .iter()
            .any(|c| c.0 == "ipset" && c.1 == ["list", "-n"]));
    }

    #[test]
    fn process_runner_times_out_and_reports_stderr() {
        let r = ProcessRunner::host().with_timeout(Duration::from_millis(200));
        let t = Instant::now();
        let e = r.run("sleep", &["5"], None).unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        let e = r
            .run("sh", &["-c", "echo boom >&2; exit 3"], None)
            .unwrap_err();
        assert_eq!(e.stderr(), Some("boom"));
        assert_eq!(r.run("cat", &[], Some("payload")).unwrap(), "payload");
    }
}
