//! The file datastore: every `*.yaml`/`*.yml` under a directory, watched.
//!
//! Owns: turning directory scans into [`DatastoreSnapshot`]s. The pure part,
//! [`FileState::apply`], keeps each file's last good text: a file whose new
//! text does not load cleanly keeps its previous version in force and its
//! errors (file, document, object, reason) are reported; a file that never
//! loaded cleanly contributes the documents that do load. A snapshot is
//! published only when the chosen texts, the errors or the connection
//! changed, with the generation one higher.
//!
//! The shell, [`spawn_file`], is a thread: inotify (through `notify`,
//! recursive, so editors' write-to-temp-and-rename, deletions and
//! ConfigMap-style symlink swaps all show up as events), a short debounce
//! that coalesces an editor's burst into one scan, and a full rescan every
//! 30 s in case an event was lost (inotify queue overflow, a directory
//! replaced under the watch). It is a thread rather than a task because it
//! does blocking file I/O and nothing else; the watch channel is the only
//! link to async code.
//!
//! Must never: drop objects because a file is half-written (a file that
//! disappears is confirmed by a second scan before its objects go), or
//! block the caller's runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{DatastoreSnapshot, SnapshotReceiver};
use crate::manifests::{list_files, Manifests};

/// Quiet time after an event before scanning: an editor's save is a
/// burst of events within a few milliseconds. Small, because a pod's IP
/// written here should reach remote policy within 200 ms end to end.
pub const DEBOUNCE: Duration = Duration::from_millis(15);
/// Longest a stream of events can postpone a scan.
pub const MAX_DEBOUNCE: Duration = Duration::from_millis(100);
/// Safety-net rescan period.
pub const RESCAN: Duration = Duration::from_secs(30);
/// Retry period while the directory cannot be read.
pub const RETRY: Duration = Duration::from_secs(1);
/// A file that vanished is looked for again after this long before its
/// objects are dropped (a non-atomic save deletes, then writes).
pub const REMOVAL_GRACE: Duration = Duration::from_millis(50);

/// One file at one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRead {
    /// Its text (new, or re-read by a full scan).
    Text(String),
    /// Same inode, size and change time as when last read: not re-read.
    Unchanged,
    /// It could not be read.
    Failed(String),
}

/// The result of reading the directory once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Each manifest file, read or not.
    Listed(BTreeMap<PathBuf, FileRead>),
    /// The directory itself could not be read.
    Failed(String),
}

/// What identifies a file's content without reading it: inode, size and
/// change time (ctime moves on every write and on a rename into place).
type Stamp = (u64, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
}

/// Reads the directory, skipping files whose stamp has not moved since
/// the last read unless `full` (the periodic rescan re-reads everything,
/// in case a file system's timestamps are too coarse to see a change).
#[derive(Debug, Default)]
pub struct Scanner {
    stamps: BTreeMap<PathBuf, Stamp>,
}

impl Scanner {
    pub fn scan(&mut self, dir: &Path, full: bool) -> Scan {
        let files = match list_files(dir) {
            Err(e) => {
                self.stamps.clear();
                return Scan::Failed(format!("{e}: {}", e.source));
            }
            Ok(files) => files,
        };
        self.stamps.retain(|p, _| files.binary_search(p).is_ok());
        let mut out = BTreeMap::new();
        for f in files {
            let now = stamp(&f);
            if !full && now.is_some() && self.stamps.get(&f) == now.as_ref() {
                out.insert(f, FileRead::Unchanged);
                continue;
            }
            let read = match std::fs::read_to_string(&f) {
                Ok(text) => {
                    match now {
                        Some(st) => self.stamps.insert(f.clone(), st),
                        None => self.stamps.remove(&f),
                    };
                    FileRead::Text(text)
                }
                Err(e) => {
                    self.stamps.remove(&f);
                    FileRead::Failed(e.to_string())
                }
            };
            out.insert(f, read);
        }
        Scan::Listed(out)
    }
}

/// Reads every manifest file under `dir` (no stamps: everything).
pub fn scan(dir: &Path) -> Scan {
    Scanner::default().scan(dir, true)
}

#[derive(Debug, Default, Clone)]
struct FileEntry {
    /// The text read last time (to skip re-parsing an unchanged file).
    seen: Option<String>,
    /// The text in force, loaded.
    good: Option<Manifests>,
    /// Why the text read last time is not in force.
    rejected: Vec<String>,
}

/// The file datastore's state between scans (pure).
#[derive(Debug)]
pub struct FileState {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
    dir_error: Option<String>,
    disconnected_since: Option<SystemTime>,
    generation: u64,
    /// Something changed since the last published snapshot.
    dirty: bool,
}

impl FileState {
    pub fn new(dir: PathBuf) -> Self {
        FileState {
            dir,
            files: BTreeMap::new(),
            dir_error: None,
            disconnected_since: None,
            generation: 0,
            dirty: true,
        }
    }

    /// Whether the directory could be read at the last scan.
    pub fn connected(&self) -> bool {
        self.dir_error.is_none()
    }

    /// Whether `scan` no longer lists a file whose objects are in force.
    pub fn removes_files(&self, scan: &Scan) -> bool {
        match scan {
            Scan::Failed(_) => false,
            Scan::Listed(files) => self
                .files
                .iter()
                .any(|(p, e)| e.good.is_some() && !files.contains_key(p)),
        }
    }

    /// Takes one scan; returns the snapshot to publish when anything
    /// changed. Only files read anew are parsed; the snapshot merges
    /// every file's loaded objects in path order.
    pub fn apply(&mut self, scan: Scan, now: SystemTime) -> Option<DatastoreSnapshot> {
        match scan {
            Scan::Failed(reason) => {
                if self.dir_error.is_none() {
                    self.disconnected_since = Some(now);
                    self.dirty = true;
                }
                let e = format!(
                    "{}: cannot read the manifest directory ({reason}); the last objects stay in force",
                    self.dir.display()
                );
                if self.dir_error.as_ref() != Some(&e) {
                    self.dir_error = Some(e);
                    self.dirty = true;
                }
            }
            Scan::Listed(listed) => {
                if self.dir_error.take().is_some() {
                    self.dirty = true;
                }
                self.disconnected_since = None;
                let before = self.files.len();
                self.files.retain(|p, _| listed.contains_key(p));
                self.dirty |= self.files.len() != before;
                for (path, read) in listed {
                    let entry = self.files.entry(path.clone()).or_default();
                    self.dirty |= update_entry(&path, entry, read);
                }
            }
        }
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let mut manifests = Manifests::default();
        for e in self.files.values() {
            if let Some(m) = &e.good {
                manifests.extend_from(m);
            }
        }
        let mut errors: Vec<String> = manifests.errors.iter().map(ToString::to_string).collect();
        for e in self.files.values() {
            errors.extend(e.rejected.iter().cloned());
        }
        errors.extend(self.dir_error.clone());
        self.generation += 1;
        Some(DatastoreSnapshot {
            manifests,
            connected: self.connected(),
            disconnected_since: self.disconnected_since,
            errors,
            generation: self.generation,
        })
    }
}

/// Applies one file's read to its entry; true when what is in force or
/// what is reported changed.
fn update_entry(path: &Path, entry: &mut FileEntry, read: FileRead) -> bool {
    const KEPT: &str = " (the file's previous version stays in force)";
    match read {
        FileRead::Unchanged => false,
        FileRead::Text(text) => {
            if entry.seen.as_ref() == Some(&text) {
                return false;
            }
            let mut alone = Manifests::default();
            alone.add_str(path, &text);
            entry.seen = Some(text);
            if alone.errors.is_empty() || entry.good.is_none() {
                // Clean, or never loaded before: the documents that load
                // are better than none (their errors travel with them).
                entry.good = Some(alone);
                entry.rejected.clear();
            } else {
                entry.rejected = alone.errors.iter().map(|e| format!("{e}{KEPT}")).collect();
            }
            true
        }
        FileRead::Failed(reason) => {
            entry.seen = None;
            let kept = if entry.good.is_some() { KEPT } else { "" };
            let rejected = vec![format!(
                "{}: cannot read file: {reason}{kept}",
                path.display()
            )];
            let changed = entry.rejected != rejected;
            entry.rejected = rejected;
            changed
        }
    }
}

/// Starts the file datastore on `dir`: the first snapshot is in the
/// receiver when this returns; later ones follow changes. The thread ends
/// once every receiver is dropped (at its next wake-up).
pub fn spawn_file(dir: PathBuf) -> anyhow::Result<SnapshotReceiver> {
    let mut state = FileState::new(dir.clone());
    let mut scanner = Scanner::default();
    let first = scanner.scan(&dir, true);
    if let Scan::Failed(reason) = &first {
        return Err(anyhow!("cannot read the manifest directory: {reason}"));
    }
    let snapshot = state.apply(first, SystemTime::now()).unwrap_or_default();
    log_snapshot(&snapshot);
    let (tx, rx) = watch::channel(Arc::new(snapshot));
    let (events_tx, events) = mpsc::channel();
    let rewatch = Rewatch::default();
    let watcher = make_watcher(&dir, events_tx.clone(), rewatch.clone())
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    std::thread::Builder::new()
        .name("datastore-file".into())
        .spawn(move || {
            let link = Link {
                tx,
                events,
                events_tx,
                rewatch,
            };
            run(state, scanner, dir, link, watcher)
        })
        .context("cannot start the file datastore thread")?;
    Ok(rx)
}

/// Set by the watcher when the watched directory itself was removed or
/// moved away: its inotify watch went with it (a directory recreated at
/// once may even get the same inode, so this cannot be told by a stat).
type Rewatch = Arc<std::sync::atomic::AtomicBool>;

fn make_watcher(
    dir: &Path,
    events: mpsc::Sender<()>,
    rewatch: Rewatch,
) -> notify::Result<RecommendedWatcher> {
    let roots: Vec<PathBuf> = std::iter::once(dir.to_path_buf())
        .chain(dir.canonicalize().ok())
        .collect();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = &res {
            // Our own reads must not wake us.
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            let root_gone = matches!(
                ev.kind,
                EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
            ) && ev.paths.iter().any(|p| roots.contains(p));
            if root_gone {
                rewatch.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        // Anything else (including a watcher error such as a queue
        // overflow) means "rescan". The thread is gone when this fails:
        // nothing to tell.
        let _ = events.send(());
    })?;
    w.watch(dir, RecursiveMode::Recursive)?;
    Ok(w)
}

/// The thread's channels.
struct Link {
    tx: watch::Sender<Arc<DatastoreSnapshot>>,
    events: mpsc::Receiver<()>,
    events_tx: mpsc::Sender<()>,
    rewatch: Rewatch,
}

fn run(
    mut state: FileState,
    mut scanner: Scanner,
    dir: PathBuf,
    link: Link,
    watcher: RecommendedWatcher,
) {
    use std::sync::atomic::Ordering;
    let Link {
        tx,
        events,
        events_tx,
        rewatch,
    } = link;
    let mut watcher = Some(watcher);
    loop {
        let wait = if state.connected() { RESCAN } else { RETRY };
        let full = match events.recv_timeout(wait) {
            Ok(()) => {
                debounce(&events);
                false
            }
            Err(RecvTimeoutError::Timeout) => true,
            // We hold a sender ourselves; cannot happen.
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if tx.is_closed() {
            debug!(dir = %dir.display(), "file datastore: no receivers left, stopping");
            return;
        }
        // Watch again before scanning, so a change is either in the scan
        // or raises an event.
        if rewatch.swap(false, Ordering::SeqCst) {
            watcher = None;
        }
        if watcher.is_none() && dir.is_dir() {
            match make_watcher(&dir, events_tx.clone(), rewatch.clone()) {
                Ok(w) => watcher = Some(w),
                Err(e) => warn!(dir = %dir.display(), "file datastore: cannot watch: {e}"),
            }
        }
        let mut s = scanner.scan(&dir, full);
        if state.removes_files(&s) {
            std::thread::sleep(REMOVAL_GRACE);
            while events.try_recv().is_ok() {}
            s = rescan_after(s, scanner.scan(&dir, full));
        }
        if let Some(snapshot) = state.apply(s, SystemTime::now()) {
            log_snapshot(&snapshot);
            tx.send_replace(Arc::new(snapshot));
        }
        if !state.connected() {
            watcher = None;
        }
    }
}

/// The second of two scans, with what the first one read where the
/// second found the file unchanged since (the state has not seen the
/// first scan).
fn rescan_after(first: Scan, mut second: Scan) -> Scan {
    if let (Scan::Listed(mut old), Scan::Listed(new)) = (first, &mut second) {
        for (path, read) in new.iter_mut() {
            if *read == FileRead::Unchanged {
                if let Some(earlier) = old.remove(path) {
                    *read = earlier;
                }
            }
        }
    }
    second
}

/// Waits until events stop for [`DEBOUNCE`] (at most [`MAX_DEBOUNCE`]).
fn debounce(events: &mpsc::Receiver<()>) {
    let start = Instant::now();
    while start.elapsed() < MAX_DEBOUNCE {
        match events.recv_timeout(DEBOUNCE) {
            Ok(()) => continue,
            Err(_) => break,
        }
    }
}

fn log_snapshot(s: &DatastoreSnapshot) {
    info!(
        generation = s.generation,
        objects = s.manifests.len(),
        errors = s.errors.len(),
        connected = s.connected,
        "file datastore: new snapshot"
    );
    for e in &s.errors {
        warn!("datastore: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS_A: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    const NS_B: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
    const BROKEN: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: [\n";

    fn listed(files: &[(&str, &str)]) -> Scan {
        Scan::Listed(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), FileRead::Text(t.to_string())))
                .collect(),
        )
    }

    fn names(s: &DatastoreSnapshot) -> Vec<String> {
        s.manifests
            .namespaces
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }

    #[test]
    fn publishes_only_on_change_with_increasing_generation() {
        let mut st = FileState::new("/m".into());
        let now = SystemTime::UNIX_EPOCH;
        let s1 = st
            .apply(listed(&[("/m/a.yaml", NS_A)]), now)
            .expect("first");
        assert_eq!(s1.generation, 1);
        assert!(s1.connected && s1.errors.is_empty());
        assert!(st.apply(listed(&[("/m/a.yaml", NS_A)]), now).is_none());
        let s2 = st
            .apply(listed(&[("/m/a.yaml", NS_A), ("/m/b.yaml", NS_B)]), now)
            .expect("added file");
        assert_eq!(s2.generation, 2);
        assert_eq!(names(&s2), ["a", "b"]);
        let s3 = st
            .apply(listed(&[("/m/b.yaml", NS_B)]), now)
            .expect("deleted");
        assert_eq!(names(&s3), ["b"]);
        assert_eq!(s3.generation, 3);
    }

    #[test]
    fn a_broken_file_keeps_its_previous_version_and_reports_why() {
        let mut st = FileState::new("/m".into());
        let now = SystemTime::UNIX_EPOCH;
        st.apply(listed(&[("/m/a.yaml", NS_A)]), now)
            .expect("first");
        let s = st
            .apply(
                listed(&[("/m/a.yaml", &format!("{NS_B}---\n{BROKEN}"))]),
                now,
            )
            .expect("errors changed");
        assert_eq!(names(&s), ["a"], "the previous text stays in force");
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        assert!(
            s.errors[0].starts_with("/m/a.yaml document 2: not valid YAML"),
            "{}",
            s.errors[0]
        );
        assert!(s.errors[0].ends_with("(the file's previous version stays in force)"));
        // Fixed: the new text wins and the error goes.
        let s = st
            .apply(listed(&[("/m/a.yaml", NS_B)]), now)
            .expect("fixed");
        assert_eq!(names(&s), ["b"]);
        assert!(s.errors.is_empty());
    }

    #[test]
    fn a_file_broken_from_the_start_loads_what_it_can() {
        let mut st = FileState::new("/m".into());
        let s = st
            .apply(
                listed(&[("/m/a.yaml", &format!("{NS_A}---\n{BROKEN}"))]),
                SystemTime::UNIX_EPOCH,
            )
            .expect("first");
        assert_eq!(names(&s), ["a"]);
        assert_eq!(s.errors.len(), 1);
        assert!(!s.errors[0].contains("previous version"), "{}", s.errors[0]);
    }

    #[test]
    fn duplicates_across_files_and_unreadable_files_are_errors() {
        let mut st = FileState::new("/m".into());
        let now = SystemTime::UNIX_EPOCH;
        let mut files: BTreeMap<PathBuf, FileRead> = BTreeMap::new();
        files.insert("/m/a.yaml".into(), FileRead::Text(NS_A.into()));
        files.insert("/m/b.yaml".into(), FileRead::Text(NS_A.into()));
        files.insert(
            "/m/c.yaml".into(),
            FileRead::Failed("permission denied".into()),
        );
        let s = st.apply(Scan::Listed(files), now).expect("first");
        assert_eq!(names(&s), ["a"]);
        assert_eq!(s.errors.len(), 2, "{:?}", s.errors);
        assert!(s.errors[0].contains("/m/b.yaml document 1 (Namespace a): duplicate object"));
        assert_eq!(
            s.errors[1],
            "/m/c.yaml: cannot read file: permission denied"
        );
    }

    #[test]
    fn an_unreadable_directory_keeps_the_objects_and_says_since_when() {
        let mut st = FileState::new("/m".into());
        let t0 = SystemTime::UNIX_EPOCH;
        let t1 = t0 + Duration::from_secs(5);
        st.apply(listed(&[("/m/a.yaml", NS_A)]), t0).expect("first");
        let s = st.apply(Scan::Failed("gone".into()), t1).expect("lost");
        assert!(!s.connected);
        assert_eq!(s.disconnected_since, Some(t1));
        assert_eq!(names(&s), ["a"]);
        assert!(s.errors[0].contains("cannot read the manifest directory (gone)"));
        assert!(st
            .apply(Scan::Failed("gone".into()), t1 + Duration::from_secs(1))
            .is_none());
        let s = st.apply(listed(&[("/m/a.yaml", NS_A)]), t1).expect("back");
        assert!(s.connected && s.disconnected_since.is_none() && s.errors.is_empty());
    }

    #[test]
    fn unchanged_files_are_not_reparsed_and_publish_nothing() {
        let mut st = FileState::new("/m".into());
        let now = SystemTime::UNIX_EPOCH;
        st.apply(listed(&[("/m/a.yaml", NS_A)]), now)
            .expect("first");
        let mut same = BTreeMap::new();
        same.insert(PathBuf::from("/m/a.yaml"), FileRead::Unchanged);
        assert!(st.apply(Scan::Listed(same.clone()), now).is_none());
        same.insert(PathBuf::from("/m/b.yaml"), FileRead::Text(NS_B.into()));
        let s = st.apply(Scan::Listed(same), now).expect("b added");
        assert_eq!(names(&s), ["a", "b"]);
    }

    #[test]
    fn the_scanner_rereads_only_changed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, NS_A).expect("write");
        std::fs::write(&b, NS_B).expect("write");
        let mut sc = Scanner::default();
        let Scan::Listed(first) = sc.scan(dir.path(), false) else {
            panic!("listed")
        };
        assert!(first.values().all(|r| matches!(r, FileRead::Text(_))));
        let tmp = dir.path().join(".b.tmp");
        std::fs::write(&tmp, NS_A).expect("write");
        std::fs::rename(&tmp, &b).expect("rename");
        let Scan::Listed(second) = sc.scan(dir.path(), false) else {
            panic!("listed")
        };
        assert_eq!(second[&a], FileRead::Unchanged);
        assert_eq!(second[&b], FileRead::Text(NS_A.into()));
        let Scan::Listed(full) = sc.scan(dir.path(), true) else {
            panic!("listed")
        };
        assert_eq!(full[&a], FileRead::Text(NS_A.into()));
    }

    #[test]
    fn the_grace_rescan_keeps_what_the_first_scan_read() {
        let mut first = BTreeMap::new();
        first.insert(PathBuf::from("/m/b.yaml"), FileRead::Text(NS_B.into()));
        let mut second = BTreeMap::new();
        second.insert(PathBuf::from("/m/b.yaml"), FileRead::Unchanged);
        second.insert(PathBuf::from("/m/c.yaml"), FileRead::Unchanged);
        let Scan::Listed(merged) = rescan_after(Scan::Listed(first), Scan::Listed(second)) else {
            panic!("listed")
        };
        assert_eq!(merged[Path::new("/m/b.yaml")], FileRead::Text(NS_B.into()));
        assert_eq!(merged[Path::new("/m/c.yaml")], FileRead::Unchanged);
    }

    #[test]
    fn removal_is_detected_for_the_grace_rescan() {
        let mut st = FileState::new("/m".into());
        st.apply(listed(&[("/m/a.yaml", NS_A)]), SystemTime::UNIX_EPOCH);
        assert!(st.removes_files(&listed(&[])));
        assert!(!st.removes_files(&listed(&[("/m/a.yaml", NS_B)])));
        assert!(!st.removes_files(&Scan::Failed("x".into())));
    }

    /// Waits (polling the channel, with a deadline) for a snapshot that
    /// satisfies `ok`.
    async fn wait_for(
        rx: &mut SnapshotReceiver,
        ok: impl Fn(&DatastoreSnapshot) -> bool,
    ) -> Arc<DatastoreSnapshot> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let s = rx.borrow_and_update().clone();
            if ok(&s) {
                return s;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("no matching snapshot; last: {s:?}"),
            }
        }
    }

    #[tokio::test]
    async fn watches_writes_renames_into_place_and_deletions() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), NS_A).expect("write");
        let mut rx = spawn_file(dir.path().to_path_buf()).expect("spawn");
        let first = rx.borrow_and_update().clone();
        assert_eq!(names(&first), ["a"]);
        assert_eq!(first.generation, 1);

        // A new file in a new subdirectory.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        let started = Instant::now();
        std::fs::write(sub.join("b.yml"), NS_B).expect("write");
        let s = wait_for(&mut rx, |s| names(s) == ["a", "b"]).await;
        let latency = started.elapsed();
        eprintln!("write to snapshot: {latency:?}");
        assert!(latency < Duration::from_millis(500), "{latency:?}");

        // An editor's save: write a temp file, rename it over the old one.
        let tmp = dir.path().join(".a.yaml.swp");
        std::fs::write(&tmp, NS_B.replace("name: b", "name: c")).expect("write");
        std::fs::rename(&tmp, dir.path().join("a.yaml")).expect("rename");
        let s2 = wait_for(&mut rx, |s| names(s) == ["c", "b"]).await;
        assert!(s2.generation > s.generation);

        // A broken save keeps the old objects and reports the error.
        std::fs::write(dir.path().join("a.yaml"), BROKEN).expect("write");
        let s3 = wait_for(&mut rx, |s| !s.errors.is_empty()).await;
        assert_eq!(names(&s3), ["c", "b"]);

        // Deletion.
        std::fs::remove_file(sub.join("b.yml")).expect("rm");
        wait_for(&mut rx, |s| names(s) == ["c"]).await;
    }

    /// A Kubernetes ConfigMap volume: `a.yaml -> ..data/a.yaml`, and an
    /// update swaps the `..data` symlink to a new hidden directory.
    #[tokio::test]
    async fn follows_a_configmap_style_symlink_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let v1 = root.join("..2026_v1");
        std::fs::create_dir(&v1).expect("mkdir");
        std::fs::write(v1.join("a.yaml"), NS_A).expect("write");
        std::os::unix::fs::symlink("..2026_v1", root.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/a.yaml", root.join("a.yaml")).expect("link");
        let mut rx = spawn_file(root.to_path_buf()).expect("spawn");
        assert_eq!(names(&rx.borrow_and_update()), ["a"]);

        let v2 = root.join("..2026_v2");
        std::fs::create_dir(&v2).expect("mkdir");
        std::fs::write(v2.join("a.yaml"), NS_B).expect("write");
        std::os::unix::fs::symlink("..2026_v2", root.join("..data_tmp")).expect("link");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        std::fs::remove_dir_all(&v1).expect("rm old");
        let s = wait_for(&mut rx, |s| names(s) == ["b"]).await;
        assert!(s.errors.is_empty(), "{:?}", s.errors);
    }

    /// How long one change costs with many files (the lab writes one file
    /// per pod): `cargo test -p tortie --lib -- --ignored --nocapture scan_cost`.
    #[test]
    #[ignore = "measurement, not a check"]
    fn scan_cost_with_many_files() {
        let mut files = BTreeMap::new();
        for i in 0..2000 {
            files.insert(
                PathBuf::from(format!("/m/pod-{i}.yaml")),
                FileRead::Text(format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: x, labels: {{app: a{}}}}}\n\
                     spec: {{nodeName: n{}, containers: [{{name: c, image: i}}]}}\n\
                     status: {{podIPs: [{{ip: 10.244.{}.{}}}]}}\n",
                    i % 7,
                    i % 10,
                    i / 250,
                    i % 250
                )),
            );
        }
        let mut st = FileState::new("/m".into());
        let t = Instant::now();
        st.apply(Scan::Listed(files.clone()), SystemTime::UNIX_EPOCH)
            .expect("first");
        eprintln!("first scan of 2000 files: {:?}", t.elapsed());
        for read in files.values_mut() {
            *read = FileRead::Unchanged;
        }
        files.insert(PathBuf::from("/m/pod-0.yaml"), FileRead::Text(NS_A.into()));
        let t = Instant::now();
        st.apply(Scan::Listed(files), SystemTime::UNIX_EPOCH)
            .expect("changed");
        eprintln!("one file changed among 2000: {:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_directory_removed_and_recreated_is_watched_again() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("m");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("a.yaml"), NS_A).expect("write");
        let mut rx = spawn_file(dir.clone()).expect("spawn");
        std::fs::remove_dir_all(&dir).expect("rm");
        let s = wait_for(&mut rx, |s| !s.connected).await;
        assert_eq!(names(&s), ["a"], "the last objects stay");
        assert!(s.disconnected_since.is_some());
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("b.yaml"), NS_B).expect("write");
        wait_for(&mut rx, |s| s.connected && names(s) == ["b"]).await;
        // Watched again: a change shows up without waiting for a rescan.
        std::fs::write(dir.join("a.yaml"), NS_A).expect("write");
        wait_for(&mut rx, |s| names(s) == ["a", "b"]).await;
    }

    #[tokio::test]
    async fn a_directory_replaced_at_once_is_watched_again() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("m");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("a.yaml"), NS_A).expect("write");
        let mut rx = spawn_file(dir.clone()).expect("spawn");
        std::fs::remove_dir_all(&dir).expect("rm");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("b.yaml"), NS_B).expect("write");
        wait_for(&mut rx, |s| s.connected && names(s) == ["b"]).await;
        std::fs::write(dir.join("a.yaml"), NS_A).expect("write");
        wait_for(&mut rx, |s| names(s) == ["a", "b"]).await;
    }

    #[test]
    fn a_missing_directory_fails_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = spawn_file(dir.path().join("nope")).expect_err("missing");
        assert!(
            e.to_string().contains("cannot read the manifest directory"),
            "{e}"
        );
    }
}
