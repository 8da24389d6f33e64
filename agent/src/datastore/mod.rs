//! Where the cluster's objects come from: one interface, two sources (a
//! directory of manifests here, the Kubernetes API in `kube`), both
//! publishing the same [`DatastoreSnapshot`] on a tokio watch channel.
//!
//! Owns: the snapshot type and the sources' tasks. Must never: interpret
//! the objects (the model does) or publish a snapshot when nothing changed
//! (every consumer rebuilds on each one).

pub mod file;
pub mod kube;
pub mod wire;

use std::sync::Arc;
use std::time::SystemTime;

use crate::manifests::Manifests;

pub use file::spawn_file;

/// Everything the datastore holds right now.
#[derive(Debug, Clone, Default)]
pub struct DatastoreSnapshot {
    /// The objects (for the file datastore: each file's last good version).
    pub manifests: Manifests,
    /// The source is readable (file) or the API watch is up (kubernetes).
    pub connected: bool,
    /// Since when it is not (the last objects stay in force meanwhile).
    pub disconnected_since: Option<SystemTime>,
    /// Problems loading the objects, one operator-facing line each (file,
    /// document, object, field and reason).
    pub errors: Vec<String>,
    /// Increases by one with every published snapshot.
    pub generation: u64,
}

/// What the datastore tasks hand out.
pub type SnapshotReceiver = tokio::sync::watch::Receiver<Arc<DatastoreSnapshot>>;
