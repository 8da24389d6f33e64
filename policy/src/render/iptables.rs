//! `iptables-restore --noflush` payloads.
//!
//! Owns the text form of the IR's filter table. Only tortie's chains are
//! declared (a declaration flushes the chain in `--noflush` mode, so each
//! is rewritten whole) and builtin chains are never declared, so nothing
//! else in the table is touched. The jump from each builtin chain is not
//! part of the main payload: `--noflush` cannot insert a rule only if it is
//! missing, so the applier checks with `iptables -C` and adds
//! [`jumps_restore`] (or [`RenderOptions::insert_jumps`]) for the missing ones.

use std::fmt::Write as _;

use crate::ruleset::{Action, BuiltinChain, Chain, Family, Match, Note, Rule, Ruleset};

/// Options for [`iptables_restore_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Builtin chains whose jump into tortie's chain is missing (checked by
    /// the applier with `iptables -C`, see [`BuiltinChain::check_args`]):
    /// the payload inserts `-I <chain> 1 -j TORT-<chain>` for each.
    pub insert_jumps: Vec<BuiltinChain>,
}

/// The full payload for one family: every tortie chain declared (flushed)
/// and rewritten. No builtin jumps (see the module doc).
pub fn iptables_restore(ruleset: &Ruleset, family: Family) -> String {
    iptables_restore_with(ruleset, family, &RenderOptions::default())
}

/// [`iptables_restore`], plus the builtin jumps `options` asks for.
pub fn iptables_restore_with(ruleset: &Ruleset, family: Family, options: &RenderOptions) -> String {
    let chains: Vec<(&String, &Chain)> = ruleset.table(family).chains.iter().collect();
    let mut out = String::from("*filter\n");
    for (name, _) in &chains {
        declare(&mut out, name);
    }
    for (name, chain) in &chains {
        append_chain(&mut out, name, chain);
    }
    for b in &options.insert_jumps {
        push_jump(&mut out, *b);
    }
    out.push_str("COMMIT\n");
    out
}

/// A payload that only inserts the given builtin jumps (run after the main
/// payload created the target chains).
pub fn jumps_restore(missing: &[BuiltinChain]) -> String {
    let mut out = String::from("*filter\n");
    for b in missing {
        push_jump(&mut out, *b);
    }
    out.push_str("COMMIT\n");
    out
}

/// Payload that flushes and deletes the given tortie chains (stale chains
/// found in the kernel). Run after the main payload dropped references.
pub fn remove_chains(names: &[String]) -> String {
    let mut out = String::from("*filter\n");
    for n in names {
        declare(&mut out, n);
    }
    for n in names {
        let _ = writeln!(out, "-X {n}");
    }
    out.push_str("COMMIT\n");
    out
}

fn push_jump(out: &mut String, b: BuiltinChain) {
    let _ = writeln!(out, "-I {} 1 -j {}", b.name(), b.target());
}

pub(crate) fn declare(out: &mut String, name: &str) {
    let _ = writeln!(out, ":{name} - [0:0]");
}

pub(crate) fn append_chain(out: &mut String, name: &str, chain: &Chain) {
    for r in &chain.rules {
        out.push_str(&render_rule(name, r));
        out.push('\n');
    }
}

/// One `-A` line, spelled exactly as `iptables-save` prints it (interfaces,
/// then `-p`, then the other matches in order), so the kernel's dump can be
/// compared with the desired rules line by line.
pub fn render_rule(chain: &str, rule: &Rule) -> String {
    let mut s = format!("-A {chain}");
    for m in &rule.matches {
        match m {
            Match::InIface(i) => {
                let _ = write!(s, " -i {i}");
            }
            Match::OutIface(i) => {
                let _ = write!(s, " -o {i}");
            }
            _ => {}
        }
    }
    for m in &rule.matches {
        if let Match::Proto { protocol, .. } = m {
            let _ = write!(s, " -p {}", protocol.as_str());
        }
    }
    for m in &rule.matches {
        match m {
            Match::InIface(_) | Match::OutIface(_) => {}
            Match::CtState(states) => {
                let names: Vec<&str> = states.iter().map(|c| c.as_str()).collect();
                let _ = write!(s, " -m conntrack --ctstate {}", names.join(","));
            }
            Match::Proto { protocol, ports } => {
                let p = protocol.as_str();
                match ports {
                    Some((a, b)) if a == b => {
                        let _ = write!(s, " -m {p} --dport {a}");
                    }
                    Some((a, b)) => {
                        let _ = write!(s, " -m {p} --dport {a}:{b}");
                    }
                    None => {}
                }
            }
            Match::Set { set, addr } => {
                let _ = write!(s, " -m set --match-set {set} {}", addr.as_str());
            }
            Match::DstIpPortSet { set } => {
                let _ = write!(s, " -m set --match-set {set} dst,dst");
            }
            Match::Mark { value, mask } => {
                let _ = write!(s, " -m mark --mark {value:#x}/{mask:#x}");
            }
        }
    }
    if let Some(c) = comment(&rule.note) {
        let _ = write!(s, " -m comment --comment \"{c}\"");
    }
    match &rule.action {
        Action::Accept => s.push_str(" -j ACCEPT"),
        Action::Drop => s.push_str(" -j DROP"),
        Action::Return => s.push_str(" -j RETURN"),
        Action::Jump(c) => {
            let _ = write!(s, " -j {c}");
        }
        Action::Goto(c) => {
            let _ = write!(s, " -g {c}");
        }
        Action::SetMark { value, mask } => {
            let _ = write!(s, " -j MARK --set-xmark {value:#x}/{mask:#x}");
        }
    }
    s
}

/// The rule's comment: who asked for it, in words an operator can grep.
fn comment(note: &Note) -> Option<String> {
    let text = match note {
        Note::PolicyRule {
            namespace,
            name,
            direction,
            index,
        } => {
            format!("{namespace}/{name} {}[{index}]", direction.as_str())
        }
        Note::PolicyJump { namespace, name } => format!("policy {namespace}/{name}"),
        Note::DefaultDeny {
            namespace,
            pod,
            direction,
        } => {
            format!(
                "{namespace}/{pod} isolated for {}: default deny",
                direction.as_str()
            )
        }
        Note::NotIsolated {
            namespace,
            pod,
            direction,
        } => {
            format!("{namespace}/{pod} not isolated for {}", direction.as_str())
        }
        Note::UnknownInterface { interface: Some(_) } => {
            "workload interface without a pod".to_string()
        }
        Note::UnknownInterface { interface: None } => {
            "unknown workload interface: fail closed".to_string()
        }
        Note::HostToPod => "a node may always reach its own pods".to_string(),
        Note::Conntrack | Note::Plumbing => return None,
    };
    Some(sanitize_comment(&text))
}

/// Keeps a comment inside iptables' limits (255 bytes) and free of quotes
/// or anything a restore parser could split on. Kubernetes names are DNS
/// names, so this only bites on hand-made snapshots.
fn sanitize_comment(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ./_-[]:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(255);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::Direction;

    #[test]
    fn jumps_are_separate_and_explicit() {
        assert_eq!(
            jumps_restore(&[BuiltinChain::Forward, BuiltinChain::Output]),
            "*filter\n-I FORWARD 1 -j TORT-FORWARD\n-I OUTPUT 1 -j TORT-OUTPUT\nCOMMIT\n"
        );
        let rs = Ruleset::default();
        assert_eq!(iptables_restore(&rs, Family::V4), "*filter\nCOMMIT\n");
        let with = iptables_restore_with(
            &rs,
            Family::V4,
            &RenderOptions {
                insert_jumps: vec![BuiltinChain::Input],
            },
        );
        assert_eq!(with, "*filter\n-I INPUT 1 -j TORT-INPUT\nCOMMIT\n");
    }

    #[test]
    fn stale_chains_are_flushed_then_deleted() {
        assert_eq!(
            remove_chains(&["TORT-PI-0123".to_string()]),
            "*filter\n:TORT-PI-0123 - [0:0]\n-X TORT-PI-0123\nCOMMIT\n"
        );
    }

    #[test]
    fn comments_are_bounded_and_unquoted() {
        let note = Note::PolicyRule {
            namespace: "a\"b".into(),
            name: "x".repeat(400),
            direction: Direction::Ingress,
            index: 3,
        };
        let c = comment(&note).expect("comment");
        assert!(c.len() <= 255);
        assert!(!c.contains('"'));
    }
}
