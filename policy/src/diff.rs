//! What to write to go from one ruleset to the next.
use crate::ruleset::Ruleset;

/// The payloads of one update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub ipset: String,
    pub iptables_v4: Option<String>,
    pub iptables_v6: Option<String>,
    pub stale_sets: Vec<String>,
}

pub fn diff(old: Option<&Ruleset>, new: &Ruleset) -> Update {
    let _ = (old, new);
    Update::default()
}
