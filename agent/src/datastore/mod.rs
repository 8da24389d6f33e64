//! TEMPORARY stand-in until h-model's datastore/mod.rs lands (interfaces.md
//! names); replaced by theirs at merge, keeping the `pub mod kube;` line.

use std::time::SystemTime;

use crate::manifests::Manifests;

pub mod kube;

#[derive(Debug, Clone, Default)]
pub struct DatastoreSnapshot {
    pub manifests: Manifests,
    pub connected: bool,
    pub disconnected_since: Option<SystemTime>,
    pub errors: Vec<String>,
    pub generation: u64,
}
