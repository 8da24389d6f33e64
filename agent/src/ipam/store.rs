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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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

/// temp file, fsync, rename, fsync dir.
fn write_atomic(dir: &Path, path: &Path, state: &IpamState) -> Result<(), IpamError> {
    let mut json = serde_json::to_vec_pretty(state).map_err(|e| IpamError::Io {
        what: "encoding",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    json.push(b'\n');
    let tmp = path.with_file_name(format!("{STATE_FILE}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(IpamError::io("creating the temp file", &tmp))?;
        f.write_all(&json)
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
}
