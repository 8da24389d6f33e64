//! Snapshot to ruleset IR (pure).
pub use crate::error::PolicyError;
use crate::model::Snapshot;
use crate::ruleset::Ruleset;

/// The compiler's output for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub ruleset: Ruleset,
    /// Objects rejected, each naming object and field; they are left out,
    /// everything else compiles.
    pub errors: Vec<PolicyError>,
}

pub fn compile(snapshot: &Snapshot) -> Compiled {
    let _ = snapshot;
    Compiled::default()
}
