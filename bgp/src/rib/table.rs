//! Per-prefix storage: the candidate paths of one prefix (the union of
//! every peer's Adj-RIB-In for it) with the Loc-RIB selection in front.
//!
//! Memory is the point of this file. A route costs one hash-table slot:
//! an 8-byte key (IPv4) and a 24-byte [`Entry`], whose single-path case
//! keeps the path inline (attribute `Arc` + peer + path id = 16 bytes);
//! only prefixes with two or more paths allocate a `Vec`.

use std::sync::Arc;

use super::attrs::PathAttrs;
use super::PeerId;

/// Bit of [`Path::peer`] marking a graceful-restart stale route.
const STALE: u32 = 1 << 31;

/// One candidate path.
#[derive(Clone, Debug)]
pub(crate) struct Path {
    pub(crate) attrs: Arc<PathAttrs>,
    /// Peer index, with [`STALE`] folded in to keep the struct at 16 bytes.
    peer: u32,
    pub(crate) path_id: u32,
}

impl Path {
    pub(crate) fn new(attrs: Arc<PathAttrs>, peer: PeerId, path_id: u32) -> Self {
        Path {
            attrs,
            peer: peer.0 & !STALE,
            path_id,
        }
    }
    pub(crate) fn peer(&self) -> PeerId {
        PeerId(self.peer & !STALE)
    }
    pub(crate) fn is_stale(&self) -> bool {
        self.peer & STALE != 0
    }
    pub(crate) fn set_stale(&mut self) {
        self.peer |= STALE;
    }
    pub(crate) fn path_id(&self) -> u32 {
        self.path_id
    }
}

/// The paths of one prefix; `Many` also covers zero paths (an entry kept
/// only until its "gone" FIB change is taken).
#[derive(Debug)]
pub(crate) enum Paths {
    One(Path),
    // Boxed so the enum (and the table slot) stays 16 bytes: a bare Vec
    // would make every single-path prefix pay 8 more.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Path>>),
}

/// A Loc-RIB entry. `paths[..selected]` is the ECMP set, best first.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) paths: Paths,
    pub(crate) selected: u8,
    /// Queued in the FIB change list.
    pub(crate) fib_dirty: bool,
}

impl Entry {
    pub(crate) fn new(path: Path) -> Self {
        Entry {
            paths: Paths::One(path),
            selected: 0,
            fib_dirty: false,
        }
    }

    pub(crate) fn as_slice(&self) -> &[Path] {
        match &self.paths {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v.as_slice(),
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [Path] {
        match &mut self.paths {
            Paths::One(p) => std::slice::from_mut(p),
            Paths::Many(v) => v.as_mut_slice(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub(crate) fn best(&self) -> Option<&Path> {
        if self.selected == 0 {
            None
        } else {
            self.as_slice().first()
        }
    }

    pub(crate) fn selected(&self) -> &[Path] {
        let s = self.as_slice();
        s.get(..usize::from(self.selected)).unwrap_or(s)
    }

    /// Inserts or replaces the path of (peer, path id); true if it is new.
    pub(crate) fn upsert(&mut self, path: Path) -> bool {
        if let Some(old) = self
            .as_mut_slice()
            .iter_mut()
            .find(|p| p.peer() == path.peer() && p.path_id == path.path_id)
        {
            *old = path;
            return false;
        }
        match &mut self.paths {
            Paths::Many(v) if v.is_empty() => self.paths = Paths::One(path),
            Paths::Many(v) => v.push(path),
            Paths::One(_) => {
                let old = std::mem::replace(&mut self.paths, Paths::Many(Box::default()));
                if let (Paths::One(first), Paths::Many(v)) = (old, &mut self.paths) {
                    v.reserve_exact(2);
                    v.push(first);
                    v.push(path);
                }
            }
        }
        true
    }

    /// Removes paths for which `remove` holds; returns how many went.
    pub(crate) fn remove_where(&mut self, remove: impl Fn(&Path) -> bool) -> usize {
        match &mut self.paths {
            Paths::One(p) => {
                if remove(p) {
                    self.paths = Paths::Many(Box::default());
                    self.selected = 0;
                    1
                } else {
                    0
                }
            }
            Paths::Many(v) => {
                let before = v.len();
                v.retain(|p| !remove(p));
                let gone = before - v.len();
                if v.len() == 1 {
                    if let Some(p) = v.pop() {
                        self.paths = Paths::One(p);
                    }
                }
                gone
            }
        }
    }

    /// Puts the paths in `order` (indices into the current slice).
    pub(crate) fn reorder(&mut self, order: &[usize]) {
        if let Paths::Many(v) = &mut self.paths {
            let old = std::mem::take(&mut **v);
            let mut slots: Vec<Option<Path>> = old.into_iter().map(Some).collect();
            v.extend(
                order
                    .iter()
                    .filter_map(|&i| slots.get_mut(i).and_then(Option::take)),
            );
        }
    }
}

/// What the selection was, to tell whether it changed. The single-path
/// case (nearly all prefixes) does not allocate.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    best: Option<PathKey>,
    rest: Vec<PathKey>,
}

type PathKey = (PeerId, u32, usize);

fn path_key(p: &Path) -> PathKey {
    (p.peer(), p.path_id, Arc::as_ptr(&p.attrs) as usize)
}

impl Selection {
    pub(crate) fn of(e: Option<&Entry>) -> Self {
        let s = e.map(Entry::selected).unwrap_or(&[]);
        Selection {
            best: s.first().map(path_key),
            rest: s.iter().skip(1).map(path_key).collect(),
        }
    }
    pub(crate) fn best(&self) -> Option<PathKey> {
        self.best
    }
    pub(crate) fn same_as(&self, e: Option<&Entry>) -> bool {
        let s = e.map(Entry::selected).unwrap_or(&[]);
        s.first().map(path_key) == self.best
            && s.len().saturating_sub(1) == self.rest.len()
            && s.iter()
                .skip(1)
                .zip(&self.rest)
                .all(|(p, k)| path_key(p) == *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_stay_small() {
        // The per-route budget: these sizes are what the 1M-route bench
        // pays per slot.
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert!(
            std::mem::size_of::<Entry>() <= 24,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn upsert_remove_and_shrink_back_to_one() {
        let a = Arc::new(PathAttrs::default());
        let mut e = Entry::new(Path::new(a.clone(), PeerId(1), 0));
        assert!(!e.upsert(Path::new(a.clone(), PeerId(1), 0)));
        assert!(e.upsert(Path::new(a.clone(), PeerId(2), 0)));
        assert!(e.upsert(Path::new(a.clone(), PeerId(2), 7)));
        assert_eq!(e.as_slice().len(), 3);
        assert_eq!(e.remove_where(|p| p.peer() == PeerId(2)), 2);
        assert!(matches!(e.paths, Paths::One(_)));
        e.as_mut_slice()[0].set_stale();
        assert!(e.as_slice()[0].is_stale());
        assert_eq!(e.as_slice()[0].peer(), PeerId(1));
        assert_eq!(e.remove_where(|p| p.is_stale()), 1);
        assert!(e.is_empty());
        assert!(e.upsert(Path::new(a, PeerId(3), 0)));
        assert!(matches!(e.paths, Paths::One(_)));
    }
}
