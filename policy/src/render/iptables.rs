//! `iptables-restore --noflush` payloads.
use crate::ruleset::{BuiltinChain, Family, Ruleset};

/// Options for [`iptables_restore_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Builtin chains whose jump into tortie's chain is missing (checked by
    /// the applier with `iptables -C`, see [`BuiltinChain::check_args`]):
    /// the payload inserts `-I <chain> 1 -j TORT-<chain>` for each.
    pub insert_jumps: Vec<BuiltinChain>,
}

pub fn iptables_restore(ruleset: &Ruleset, family: Family) -> String {
    iptables_restore_with(ruleset, family, &RenderOptions::default())
}

pub fn iptables_restore_with(ruleset: &Ruleset, family: Family, options: &RenderOptions) -> String {
    let _ = (ruleset, family, options);
    String::new()
}

pub fn jumps_restore(missing: &[BuiltinChain]) -> String {
    let _ = missing;
    String::new()
}

/// Payload that flushes and deletes the given tortie chains (stale chains
/// found in the kernel). Run after the main payload dropped references.
pub fn remove_chains(names: &[String]) -> String {
    let _ = names;
    String::new()
}
