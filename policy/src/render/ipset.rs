//! `ipset restore` payloads.
//!
//! Owns the text form of the IR's sets. A full payload fills a temporary
//! twin of every set and swaps them all in at the end: `ipset restore`
//! stops at the first bad line, and with this order that leaves the live
//! sets untouched; each `swap` is atomic, so no packet ever sees a set half
//! filled.

use std::fmt::Write as _;

use crate::naming;
use crate::ruleset::{Family, IpSet, Ruleset, SetEntry};

/// Full payload for the sets of one family.
pub fn ipset_restore(ruleset: &Ruleset, family: Family) -> String {
    let sets: Vec<(&String, &IpSet)> = ruleset.sets_of(family).collect();
    full_payload(&sets)
}

/// Full payload for the given sets (any family mix).
pub(crate) fn full_payload(sets: &[(&String, &IpSet)]) -> String {
    let mut out = String::new();
    for (name, set) in sets {
        let tmp = naming::temp_set_name(name);
        create(&mut out, name, set);
        create(&mut out, &tmp, set);
        let _ = writeln!(out, "flush {tmp}");
        for e in &set.entries {
            let _ = writeln!(out, "add {tmp} {}", entry_text(e));
        }
    }
    for (name, _) in sets {
        let tmp = naming::temp_set_name(name);
        let _ = writeln!(out, "swap {tmp} {name}");
        let _ = writeln!(out, "destroy {tmp}");
    }
    out
}

/// Room for every pod of a large cluster in one set (the default, 65536,
/// is below Kubernetes' 150,000-pod limit). Fixed, because `create -exist`
/// fails on a set that exists with other parameters. Memory follows the
/// entries, not this limit.
pub const MAX_ELEM: u32 = 1_048_576;

pub(crate) fn create(out: &mut String, name: &str, set: &IpSet) {
    let _ = writeln!(
        out,
        "create {name} {} family {} maxelem {MAX_ELEM} -exist",
        set.kind.ipset_type(),
        set.family.ipset_family()
    );
}

/// `add` that tolerates an entry already present (delta updates).
pub(crate) fn add(out: &mut String, name: &str, entry: &SetEntry) {
    let _ = writeln!(out, "add {name} {} -exist", entry_text(entry));
}

/// `del` that tolerates an entry already gone (delta updates).
pub(crate) fn del(out: &mut String, name: &str, entry: &SetEntry) {
    let _ = writeln!(out, "del {name} {} -exist", entry_text(entry));
}

/// An entry as `ipset` spells it: `10.0.0.1`, `10.0.0.0/8 nomatch`,
/// `fd00::1,tcp:8080`.
pub fn entry_text(entry: &SetEntry) -> String {
    match entry {
        SetEntry::Ip(ip) => ip.to_string(),
        SetEntry::Net {
            net,
            nomatch: false,
        } => net.to_string(),
        SetEntry::Net { net, nomatch: true } => format!("{net} nomatch"),
        SetEntry::IpPort { ip, protocol, port } => format!("{ip},{}:{port}", protocol.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Protocol, SetKind};
    use std::collections::BTreeSet;

    #[test]
    fn full_payload_swaps_after_every_fill() {
        let mut rs = Ruleset::default();
        let entries: BTreeSet<SetEntry> = [
            SetEntry::Net {
                net: "10.0.0.0/8".parse().unwrap(),
                nomatch: false,
            },
            SetEntry::Net {
                net: "10.1.0.0/16".parse().unwrap(),
                nomatch: true,
            },
        ]
        .into();
        rs.sets.insert(
            "tort-n4-a".into(),
            IpSet {
                family: Family::V4,
                kind: SetKind::HashNet,
                describe: String::new(),
                entries,
            },
        );
        let entries: BTreeSet<SetEntry> = [SetEntry::IpPort {
            ip: "fd00::1".parse().unwrap(),
            protocol: Protocol::Sctp,
            port: 9,
        }]
        .into();
        rs.sets.insert(
            "tort-q6-b".into(),
            IpSet {
                family: Family::V6,
                kind: SetKind::HashIpPort,
                describe: String::new(),
                entries,
            },
        );
        assert_eq!(
            ipset_restore(&rs, Family::V4),
            "create tort-n4-a hash:net family inet maxelem 1048576 -exist\n\
             create tort-tmp-n4-a hash:net family inet maxelem 1048576 -exist\n\
             flush tort-tmp-n4-a\n\
             add tort-tmp-n4-a 10.0.0.0/8\n\
             add tort-tmp-n4-a 10.1.0.0/16 nomatch\n\
             swap tort-tmp-n4-a tort-n4-a\n\
             destroy tort-tmp-n4-a\n"
        );
        assert!(ipset_restore(&rs, Family::V6).contains("add tort-tmp-q6-b fd00::1,sctp:9\n"));
    }
}
