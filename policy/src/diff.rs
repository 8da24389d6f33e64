//! What to write to go from one ruleset to the next.
//!
//! Owns the minimal update: only chains whose rules changed are declared
//! and rewritten, only sets whose members changed get `add`/`del` lines.
//! Because chains never hold pod IPs, a pod relabelled, added or removed
//! changes sets only and the iptables payloads stay `None`. Pure: `old` is
//! what the applier last applied successfully; with `None` (first run, or
//! after a failure) the update is the full state.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::render::{ipset as ipset_text, iptables as iptables_text};
use crate::ruleset::{Family, IpSet, Ruleset, Table};

/// The payloads of one update, applied in field order: `ipset`, then the
/// iptables payloads, then `stale_sets` destroyed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// `ipset restore` payload for both families; empty if no set changed.
    pub ipset: String,
    /// `iptables-restore --noflush` payload; `None` if no chain changed.
    pub iptables_v4: Option<String>,
    pub iptables_v6: Option<String>,
    /// Sets to destroy once the iptables update no longer references them.
    pub stale_sets: Vec<String>,
}

impl Update {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ipset.is_empty()
            && self.iptables_v4.is_none()
            && self.iptables_v6.is_none()
            && self.stale_sets.is_empty()
    }

    /// Names of the chains an iptables payload declares (rewrites), for
    /// reports and tests.
    pub fn touched_chains(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for p in [&self.iptables_v4, &self.iptables_v6].into_iter().flatten() {
            for line in p.lines() {
                if let Some(rest) = line.strip_prefix(':') {
                    if let Some(name) = rest.split_whitespace().next() {
                        out.insert(name.to_string());
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Names of the sets the ipset payload writes to (temporaries excluded).
    pub fn touched_sets(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for line in self.ipset.lines() {
            let mut words = line.split_whitespace();
            if let (Some("create" | "add" | "del"), Some(name)) = (words.next(), words.next()) {
                if !name.starts_with(crate::naming::TEMP_SET_PREFIX) {
                    out.insert(name.to_string());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The update from `old` (last applied) to `new`.
pub fn diff(old: Option<&Ruleset>, new: &Ruleset) -> Update {
    let Some(old) = old else {
        let sets: Vec<_> = new.sets.iter().collect();
        return Update {
            ipset: ipset_text::full_payload(&sets),
            iptables_v4: Some(iptables_text::iptables_restore(new, Family::V4)),
            iptables_v6: Some(iptables_text::iptables_restore(new, Family::V6)),
            stale_sets: Vec::new(),
        };
    };
    let mut ipset = String::new();
    for (name, set) in &new.sets {
        match old.sets.get(name) {
            // A set new to us may still exist in the kernel (left over
            // from an earlier run, or stale but busy): fill a temporary
            // twin and swap, so nothing old survives in it.
            None => ipset.push_str(&ipset_text::full_payload(&[(name, set)])),
            Some(prev) if prev != set => set_delta(&mut ipset, name, prev, set),
            Some(_) => {}
        }
    }
    let stale_sets = old
        .sets
        .keys()
        .filter(|n| !new.sets.contains_key(*n))
        .cloned()
        .collect();
    Update {
        ipset,
        iptables_v4: table_delta(old.table(Family::V4), new.table(Family::V4)),
        iptables_v6: table_delta(old.table(Family::V6), new.table(Family::V6)),
        stale_sets,
    }
}

fn set_delta(out: &mut String, name: &str, old: &IpSet, new: &IpSet) {
    if old.kind != new.kind || old.family != new.family {
        // Names hash what a set holds, so this needs a hash collision or a
        // hand-made ruleset; replace the set wholesale rather than guess.
        let payload = ipset_text::full_payload(&[(&name.to_string(), new)]);
        out.push_str(&payload);
        return;
    }
    // Adds before deletes: an entry moving between sets is never absent
    // from both at once.
    for e in new.entries.difference(&old.entries) {
        ipset_text::add(out, name, e);
    }
    for e in old.entries.difference(&new.entries) {
        ipset_text::del(out, name, e);
    }
}

fn table_delta(old: &Table, new: &Table) -> Option<String> {
    let changed: Vec<(&String, _)> = new
        .chains
        .iter()
        .filter(|(n, c)| old.chains.get(*n) != Some(*c))
        .collect();
    let removed: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return None;
    }
    let mut out = String::from("*filter\n");
    for (name, _) in &changed {
        iptables_text::declare(&mut out, name);
    }
    for name in &removed {
        iptables_text::declare(&mut out, name);
    }
    for (name, chain) in &changed {
        iptables_text::append_chain(&mut out, name, chain);
    }
    for name in &removed {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}
