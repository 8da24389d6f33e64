//! The IPAM state file: `STATE_DIR/ipam.json`.
//!
//! Every change is on disk before the caller sees its result, so an address
//! handed to a pod survives a crash of the agent at any point: the table is
//! written to `ipam.json.tmp`, fsynced, renamed over `ipam.json`, and the
//! directory is fsynced so the rename itself is durable. A failed write
//! rolls the in-memory table back and fails the call.
//!
//! Recovery: a missing file is a fresh node (empty table). A file that does
//! not parse, is empty, has an unknown version or holds an address twice is
//! *not* replaced: [`Ipam::open`] keeps a copy next to it
//! (`ipam.json.corrupt-<unix seconds>`) and fails with an error naming both
//! files. Handing out addresses from an empty table would give running
//! pods' addresses to new ones; the operator decides (repair the JSON, or
//! delete it after checking which pods run on the node).
//!
//! A second agent on the same state dir is refused: the open table holds an
//! exclusive `flock` on `STATE_DIR/ipam.lock`.
//!
//! Group commit ([`SharedIpam`], what the CNI server uses): concurrent
//! callers change the table in memory under one short lock, then wait
//! until a write that includes their change is on disk. One write at a
//! time; whoever takes the writer next writes the table *as it is then*,
//! so every change that arrived while the previous write and its two
//! fsyncs were in flight is made durable by one write:
//!
//! ```text
//!  ADD a ─ change (gen 1) ─ write gen 1 ──────────── durable ─► a returns
//!  ADD b ─ change (gen 2) ─ wait writer ┐
//!  ADD c ─ change (gen 3) ─ wait writer ┴ write gen 3 ─ durable ─► b, c return
//! ```
//!
//! Nobody learns of an address before the write holding it is durable, and
//! the in-memory table, which every assignment consults, never holds an
//! address twice: a crash at any point loses only changes whose callers
//! have not returned.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};

use super::alloc::{AllocError, Allocation, IpamState, Owner, PodKey};

/// The state file's name inside the state dir.
pub const STATE_FILE: &str = "ipam.json";
const LOCK_FILE: &str = "ipam.lock";

/// Errors of the persistent IPAM.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("IPAM state {path} is unreadable: {reason}; a copy is kept at {backup}. No address is assigned until it is repaired or removed (removing it forgets the addresses of running pods, which may then be given out twice)")]
    Corrupt {
        path: PathBuf,
        backup: PathBuf,
        reason: String,
    },
    #[error("IPAM state dir {dir} is in use by another tortie agent (lock {lock} is held); give each agent its own --state-dir")]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("IPAM state {path}: {what}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl IpamError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IpamError {
        let path = path.to_path_buf();
        move |source| IpamError::Io { what, path, source }
    }
}

/// The persistent allocator of one node.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    path: PathBuf,
    state: IpamState,
    _lock: Flock<File>,
}

impl Ipam {
    /// Opens (or starts) the table in `state_dir`, creating the dir.
    pub fn open(state_dir: &Path) -> Result<Ipam, IpamError> {
        std::fs::create_dir_all(state_dir)
            .map_err(IpamError::io("creating the state dir", state_dir))?;
        let lock_path = state_dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(IpamError::io("opening the lock file", &lock_path))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    IpamError::Locked {
                        dir: state_dir.to_path_buf(),
                        lock: lock_path.clone(),
                    }
                } else {
                    IpamError::Io {
                        what: "locking",
                        path: lock_path.clone(),
                        source: io::Error::from(errno),
                    }
                }
            })?;
        let path = state_dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => IpamState::new(),
            Err(e) => return Err(IpamError::io("reading", &path)(e)),
            Ok(bytes) => match parse(&bytes) {
                Ok(s) => s,
                Err(reason) => {
                    let backup = keep_copy(&path, &bytes)?;
                    return Err(IpamError::Corrupt {
                        path,
                        backup,
                        reason,
                    });
                }
            },
        };
        Ok(Ipam {
            dir: state_dir.to_path_buf(),
            path,
            state,
            _lock: lock,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table as loaded and changed.
    pub fn state(&self) -> &IpamState {
        &self.state
    }

    /// [`IpamState::assign`] for a pod, without sandbox details.
    pub fn assign(
        &mut self,
        key: PodKey,
        container_id: &str,
        cidrs: &[IpNet],
        requested: Option<&[IpAddr]>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        self.assign_for(Owner::new(key, container_id), cidrs, requested)
    }

    /// Assigns and persists; idempotent per container id (no write when
    /// nothing changed).
    pub fn assign_for(
        &mut self,
        owner: Owner,
        cidrs: &[IpNet],
        requested: Option<&[IpAddr]>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let before = self.state.clone();
        let ips = self.state.assign(owner, cidrs, requested)?;
        if self.state != before {
            self.commit(before)?;
        }
        Ok(ips)
    }

    /// Releases a container's addresses (persisted); `None` when it had
    /// none, which is not an error (DEL is idempotent).
    pub fn release(&mut self, container_id: &str) -> Result<Option<Allocation>, IpamError> {
        let before = self.state.clone();
        let gone = self.state.release(container_id);
        if gone.is_some() {
            self.commit(before)?;
        }
        Ok(gone)
    }

    /// Releases every allocation `keep(pod, container id)` rejects.
    pub fn gc(
        &mut self,
        keep: impl FnMut(&PodKey, &str) -> bool,
    ) -> Result<Vec<Allocation>, IpamError> {
        let before = self.state.clone();
        let gone = self.state.gc(keep);
        if !gone.is_empty() {
            self.commit(before)?;
        }
        Ok(gone)
    }

    /// Addresses per `(namespace, pod)`.
    pub fn assigned(&self) -> BTreeMap<(String, String), Vec<IpAddr>> {
        self.state.assigned()
    }

    /// Writes the table; on failure restores `before` in memory.
    fn commit(&mut self, before: IpamState) -> Result<(), IpamError> {
        match write_atomic(&self.dir, &self.path, &self.state) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.state = before;
                Err(e)
            }
        }
    }
}

/// An [`Ipam`] shared by concurrent callers, with group commit (module
/// docs). Blocking: call it from a blocking thread.
#[derive(Debug)]
pub struct SharedIpam {
    table: Mutex<Table>,
    /// The generation known to be on disk. Held for the whole of a write,
    /// so one write runs at a time. Lock order: `writer`, then `table`.
    writer: Mutex<u64>,
    /// Writes done, for tests and logs.
    writes: AtomicU64,
}

/// A state of the table, from [`SharedIpam::change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the change is not durable until SharedIpam::durable returns"]
pub struct Ticket(u64);

#[derive(Debug)]
struct Table {
    ipam: Ipam,
    /// Bumped by every change in memory.
    generation: u64,
}

impl SharedIpam {
    /// [`Ipam::open`], shared.
    pub fn open(state_dir: &Path) -> Result<SharedIpam, IpamError> {
        Ok(SharedIpam {
            table: Mutex::new(Table {
                ipam: Ipam::open(state_dir)?,
                generation: 0,
            }),
            writer: Mutex::new(0),
            writes: AtomicU64::new(0),
        })
    }

    /// How many times the table was written.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the table (with changes not yet durable: they are taken).
    pub fn read<T>(&self, f: impl FnOnce(&IpamState) -> T) -> T {
        f(&self.table().ipam.state)
    }

    /// Runs `change` on the table, then returns once the table as it was
    /// after the change is on disk. When the write fails, `undo` gets the
    /// table and `change`'s result back to remove what the change added
    /// (what it removed may stay removed: a retry writes again), and the
    /// call fails.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut IpamState) -> Result<T, AllocError>,
        undo: impl FnOnce(&mut IpamState, &T),
    ) -> Result<T, IpamError> {
        let (out, ticket) = self.change(change)?;
        match self.durable(ticket) {
            Ok(()) => Ok(out),
            Err(e) => {
                let mut t = self.table();
                let before = t.ipam.state.clone();
                undo(&mut t.ipam.state, &out);
                if t.ipam.state != before {
                    t.generation += 1;
                }
                Err(e)
            }
        }
    }

    /// The first half of [`SharedIpam::update`]: runs `change` on the
    /// table in memory and returns its result with the ticket to pass to
    /// [`SharedIpam::durable`]. Until that returns `Ok`, nothing of the
    /// change may be told to anyone outside the agent; when it fails, the
    /// caller undoes the change.
    pub fn change<T>(
        &self,
        change: impl FnOnce(&mut IpamState) -> Result<T, AllocError>,
    ) -> Result<(T, Ticket), IpamError> {
        let mut t = self.table();
        let before = t.ipam.state.clone();
        let out = change(&mut t.ipam.state)?;
        if t.ipam.state != before {
            t.generation += 1;
        }
        // Also when nothing changed: the caller saw the table at this
        // generation (say a release whose write failed), so it waits for
        // it to be durable too.
        Ok((out, Ticket(t.generation)))
    }

    /// Returns once the table as of `ticket` (or later) is on disk.
    pub fn durable(&self, ticket: Ticket) -> Result<(), IpamError> {
        self.flush(ticket.0)
    }

    fn flush(&self, ticket: u64) -> Result<(), IpamError> {
        let mut durable = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if *durable >= ticket {
            return Ok(());
        }
        let (generation, json, dir, path) = {
            let t = self.table();
            (
                t.generation,
                encode(&t.ipam.path, &t.ipam.state)?,
                t.ipam.dir.clone(),
                t.ipam.path.clone(),
            )
        };
        write_bytes(&dir, &path, &json)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        *durable = generation;
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Result<IpamState, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".into());
    }
    let state: IpamState =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid IPAM JSON: {e}"))?;
    state.validate().map_err(|e| e.to_string())?;
    Ok(state)
}

/// Copies an unreadable state file aside, keeping every distinct copy.
fn keep_copy(path: &Path, bytes: &[u8]) -> Result<PathBuf, IpamError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("{STATE_FILE}.corrupt-{secs}");
    let backup = path.with_file_name(name);
    // The same bad file seen again (the agent retries opening) is not
    // copied again.
    if let Some(dir) = path.parent() {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name();
                if n.to_string_lossy()
                    .starts_with(&format!("{STATE_FILE}.corrupt-"))
                    && std::fs::read(e.path()).is_ok_and(|b| b == bytes)
                {
                    return Ok(e.path());
                }
            }
        }
    }
    std::fs::write(&backup, bytes).map_err(IpamError::io(
        "keeping a copy of the unreadable state",
        &backup,
    ))?;
    Ok(backup)
}

fn encode(path: &Path, state: &IpamState) -> Result<Vec<u8>, IpamError> {
    let mut json = serde_json::to_vec_pretty(state).map_err(|e| IpamError::Io {
        what: "encoding",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    json.push(b'\n');
    Ok(json)
}

/// temp file, fsync, rename, fsync dir.
fn write_atomic(dir: &Path, path: &Path, state: &IpamState) -> Result<(), IpamError> {
    write_bytes(dir, path, &encode(path, state)?)
}

/// temp file, fsync, rename, fsync dir. One writer at a time (the temp
/// file's name is fixed).
fn write_bytes(dir: &Path, path: &Path, json: &[u8]) -> Result<(), IpamError> {
    let tmp = path.with_file_name(format!("{STATE_FILE}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(IpamError::io("creating the temp file", &tmp))?;
        f.write_all(json)
            .map_err(IpamError::io("writing the temp file", &tmp))?;
        f.sync_all()
            .map_err(IpamError::io("fsync of the temp file", &tmp))?;
    }
    std::fs::rename(&tmp, path)
        .map_err(IpamError::io("renaming the temp file into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IpamError::io("fsync of the state dir", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    #[test]
    fn survives_reopen_and_releases_persist() {
        let dir = tempfile::tempdir().expect("tmp");
        let cidrs = [net("10.244.1.0/24"), net("fd00:1::/64")];
        let a;
        {
            let mut ipam = Ipam::open(dir.path()).expect("open");
            a = ipam
                .assign(PodKey::new("ns", "a"), "c1", &cidrs, None)
                .expect("a");
            ipam.assign(PodKey::new("ns", "b"), "c2", &cidrs, None)
                .expect("b");
            ipam.release("c2").expect("release");
        }
        let mut ipam = Ipam::open(dir.path()).expect("reopen");
        assert_eq!(
            ipam.assigned(),
            BTreeMap::from([(("ns".to_string(), "a".to_string()), a.clone())])
        );
        assert_eq!(
            ipam.assign(PodKey::new("ns", "a"), "c1", &cidrs, None)
                .expect("idempotent"),
            a
        );
        let c = ipam
            .assign(PodKey::new("ns", "c"), "c3", &cidrs, None)
            .expect("c");
        assert!(c.iter().all(|x| !a.contains(x)));
        assert!(!dir.path().join("ipam.json.tmp").exists());
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let _first = Ipam::open(dir.path()).expect("open");
        let e = Ipam::open(dir.path()).expect_err("locked");
        assert!(matches!(e, IpamError::Locked { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("give each agent its own --state-dir"),
            "{e}"
        );
    }

    #[test]
    fn corrupt_state_is_kept_and_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(STATE_FILE);
        for bad in [&b"{\"version\":1,\"allocations\":[{"[..], b"", b"  \n"] {
            std::fs::write(&path, bad).expect("write");
            let e = Ipam::open(dir.path()).expect_err("corrupt");
            let IpamError::Corrupt { backup, .. } = &e else {
                panic!("{e}");
            };
            assert_eq!(std::fs::read(backup).expect("backup"), bad);
            assert!(e.to_string().contains("No address is assigned"), "{e}");
            // The original stays for the operator.
            assert_eq!(std::fs::read(&path).expect("original"), bad);
        }
        // Opening the same bad file again does not pile up copies.
        let copies = || {
            std::fs::read_dir(dir.path())
                .expect("ls")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().contains("corrupt"))
                })
                .count()
        };
        let n = copies();
        assert!(Ipam::open(dir.path()).is_err());
        assert_eq!(copies(), n);
    }

    #[test]
    fn duplicate_or_future_state_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(STATE_FILE);
        std::fs::write(
            &path,
            r#"{"version":1,"allocations":[
                {"containerId":"c1","pod":{"namespace":"n","name":"a"},"ips":["10.244.1.1"]},
                {"containerId":"c2","pod":{"namespace":"n","name":"b"},"ips":["10.244.1.1"]}]}"#,
        )
        .expect("write");
        let e = Ipam::open(dir.path()).expect_err("dup");
        assert!(
            e.to_string().contains("10.244.1.1 is assigned twice"),
            "{e}"
        );
        std::fs::write(&path, r#"{"version":2,"allocations":[]}"#).expect("write");
        let e = Ipam::open(dir.path()).expect_err("version");
        assert!(e.to_string().contains("version 2 is not supported"), "{e}");
    }

    #[test]
    fn failed_write_rolls_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut ipam = Ipam::open(dir.path()).expect("open");
        // A directory where the temp file should go makes the write fail.
        std::fs::create_dir(dir.path().join("ipam.json.tmp")).expect("mkdir");
        let e = ipam
            .assign(PodKey::new("n", "a"), "c1", &[net("10.244.1.0/24")], None)
            .expect_err("write fails");
        assert!(matches!(e, IpamError::Io { .. }), "{e}");
        assert!(ipam.state().allocations.is_empty());
    }

    fn shared_assign(
        ipam: &SharedIpam,
        pod: &str,
        cidrs: &[IpNet],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let cid = format!("c-{pod}");
        ipam.update(
            |s| {
                let existed = s.get(&cid).is_some();
                s.assign(
                    Owner::new(PodKey::new("ns", pod), cid.as_str()),
                    cidrs,
                    None,
                )
                .map(|ips| (ips, existed))
            },
            |s, (_, existed)| {
                if !existed {
                    s.release(&cid);
                }
            },
        )
        .map(|(ips, _)| ips)
    }

    #[test]
    fn group_commit_writes_once_for_changes_queued_behind_a_write() {
        let dir = tempfile::tempdir().expect("tmp");
        let ipam = SharedIpam::open(dir.path()).expect("open");
        let cidrs = [net("10.244.1.0/24")];
        let ips = std::thread::scope(|s| {
            // A write in flight: the writer is busy while 20 ADDs arrive.
            let busy = ipam.writer.lock().expect("writer");
            let handles: Vec<_> = (0..20)
                .map(|i| {
                    let (ipam, cidrs) = (&ipam, &cidrs);
                    s.spawn(move || shared_assign(ipam, &format!("p{i}"), cidrs))
                })
                .collect();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while ipam.table().generation < 20 {
                assert!(std::time::Instant::now() < deadline, "20 changes in memory");
                std::thread::yield_now();
            }
            assert!(
                !dir.path().join(STATE_FILE).exists(),
                "nothing returned before it was durable"
            );
            drop(busy);
            handles
                .into_iter()
                .map(|h| h.join().expect("join").expect("assigned"))
                .collect::<Vec<_>>()
        });
        assert_eq!(ipam.writes(), 1, "one write for the 20 queued changes");
        let mut all: Vec<IpAddr> = ips.into_iter().flatten().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 20, "20 distinct addresses");
        drop(ipam);
        let reopened = Ipam::open(dir.path()).expect("reopen");
        assert_eq!(reopened.state().allocations.len(), 20, "all 20 durable");
    }

    #[test]
    fn group_commit_failed_write_undoes_the_change_and_a_retry_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let ipam = SharedIpam::open(dir.path()).expect("open");
        let cidrs = [net("10.244.1.0/24")];
        let a = shared_assign(&ipam, "a", &cidrs).expect("a");
        let blocker = dir.path().join("ipam.json.tmp");
        std::fs::create_dir(&blocker).expect("mkdir");
        let e = shared_assign(&ipam, "b", &cidrs).expect_err("write fails");
        assert!(matches!(e, IpamError::Io { .. }), "{e}");
        assert!(ipam.read(|s| s.get("c-b").is_none()), "b undone");
        // A release whose write failed is retried by the next call.
        let e = ipam
            .update(|s| Ok(s.release("c-a")), |_, _| {})
            .expect_err("write fails");
        assert!(matches!(e, IpamError::Io { .. }), "{e}");
        std::fs::remove_dir(&blocker).expect("rmdir");
        let again = ipam
            .update(|s| Ok(s.release("c-a")), |_, _| {})
            .expect("retried");
        assert!(again.is_none(), "already released in memory");
        drop(ipam);
        let reopened = Ipam::open(dir.path()).expect("reopen");
        assert!(
            reopened.state().get("c-a").is_none(),
            "release durable: {a:?}"
        );
        assert!(reopened.state().allocations.is_empty());
    }
}
