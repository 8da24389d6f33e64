//! Running code inside a network namespace.
//!
//! `setns(2)` changes the namespace of the calling *thread*. Pod wiring
//! therefore runs on a fresh thread that enters the namespace and ends with
//! its work: a pooled thread (tokio's blocking pool) would be handed back in
//! the pod's namespace if anything failed half-way. Netlink sockets belong
//! to the namespace they were opened in and stay there whatever thread uses
//! them later; `/proc/sys/net` is resolved per thread at open time.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};

/// An open network namespace (a file descriptor on `/proc/.../ns/net` or a
/// bind mount like `/var/run/netns/NAME`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct NetnsHandle {
    file: Arc<File>,
    path: PathBuf,
}

impl NetnsHandle {
    /// The calling thread's namespace: the "host" side of the pods the
    /// caller wires (the agent's own namespace in production, a test's
    /// node namespace in tests).
    pub fn current() -> io::Result<Self> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// Opens a namespace by path (`CNI_NETNS`).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(NetnsHandle {
            file: Arc::new(file),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Moves the calling thread into this namespace. Only for threads made
    /// for it (see the module docs).
    pub fn enter(&self) -> io::Result<()> {
        setns(&*self.file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    }
}

/// Runs `f` on a fresh thread that first enters `ns`; the thread ends with
/// `f`. Blocking: call it from a blocking context.
pub fn run_in<T, F>(ns: &NetnsHandle, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = ns.clone();
    std::thread::Builder::new()
        .name("tortie-netns".into())
        .spawn(move || -> io::Result<T> {
            ns.enter().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("entering network namespace {}: {e}", ns.path().display()),
                )
            })?;
            Ok(f())
        })?
        .join()
        .map_err(|_| io::Error::other("the network namespace worker thread panicked"))?
}
