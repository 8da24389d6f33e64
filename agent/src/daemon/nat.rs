//! `natOutgoing`: pod traffic from a pool with `natOutgoing: true` to an
//! address outside every pool leaves the node masqueraded behind the
//! node's own address.
//!
//! Owns: the `nat` table chain [`NAT_CHAIN`], one jump into it from
//! `POSTROUTING`, and four ipsets (`tortie-masq4/6`: the natOutgoing
//! pools; `tortie-pools4/6`: every enabled pool). Must never: touch a
//! rule it did not make, or use the policy engine's `TORT-`/`tort-` names
//! (the policy applier removes chains and sets with those prefixes that
//! its ruleset does not hold).
//!
//! ```text
//!  POSTROUTING ─► TORTIE-NAT-OUTGOING:
//!     -m set --match-set tortie-masq4 src -m set ! --match-set tortie-pools4 dst -j MASQUERADE
//! ```
//!
//! [`render`] is pure; [`NatApplier`] runs `ipset restore` (fill a
//! temporary set, swap it in: never an empty set in between) and then one
//! `iptables-restore --noflush` per family (atomic per table; declaring
//! the chain flushes and rewrites it). A failure keeps the rules in force
//! and the next apply sends everything again.

use std::fmt::Write as _;

use ipnet::IpNet;
use tortie_policy::apply::{RunError, Runner};
use tortie_policy::backend::Backend;
use tortie_policy::Family;

/// Our chain in the `nat` table.
pub const NAT_CHAIN: &str = "TORTIE-NAT-OUTGOING";

/// One enabled pool as NAT sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPool {
    pub cidr: IpNet,
    pub nat_outgoing: bool,
}

/// The payloads of one NAT state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatPlan {
    /// `ipset restore -exist` payload (both families).
    pub ipset: String,
    /// `iptables-restore --noflush` payload for the nat table, without
    /// the POSTROUTING jump (see [`jump_payload`]).
    pub v4: String,
    pub v6: String,
}

/// Set of the natOutgoing pools of a family.
pub fn masq_set(f: Family) -> &'static str {
    match f {
        Family::V4 => "tortie-masq4",
        Family::V6 => "tortie-masq6",
    }
}

/// Set of every enabled pool of a family.
pub fn pools_set(f: Family) -> &'static str {
    match f {
        Family::V4 => "tortie-pools4",
        Family::V6 => "tortie-pools6",
    }
}

fn family_of(n: &IpNet) -> Family {
    match n {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

fn inet(f: Family) -> &'static str {
    match f {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    }
}

/// Renders the state for `pools` (sorted and deduplicated, so equal
/// inputs give equal payloads).
pub fn render(pools: &[NatPool]) -> NatPlan {
    let mut plan = NatPlan::default();
    for f in [Family::V4, Family::V6] {
        let mut all: Vec<IpNet> = pools
            .iter()
            .map(|p| p.cidr.trunc())
            .filter(|c| family_of(c) == f && c.prefix_len() > 0)
            .collect();
        all.sort();
        all.dedup();
        let mut masq: Vec<IpNet> = pools
            .iter()
            .filter(|p| p.nat_outgoing)
            .map(|p| p.cidr.trunc())
            .filter(|c| family_of(c) == f && c.prefix_len() > 0)
            .collect();
        masq.sort();
        masq.dedup();
        for (set, members) in [(masq_set(f), &masq), (pools_set(f), &all)] {
            let tmp = format!("{set}-new");
            let fam = inet(f);
            let _ = writeln!(plan.ipset, "create {set} hash:net family {fam}");
            let _ = writeln!(plan.ipset, "create {tmp} hash:net family {fam}");
            let _ = writeln!(plan.ipset, "flush {tmp}");
            for m in members.iter() {
                let _ = writeln!(plan.ipset, "add {tmp} {m}");
            }
            let _ = writeln!(plan.ipset, "swap {tmp} {set}");
            let _ = writeln!(plan.ipset, "destroy {tmp}");
        }
        let mut rules = String::new();
        let _ = writeln!(rules, "*nat");
        let _ = writeln!(rules, ":{NAT_CHAIN} - [0:0]");
        if !masq.is_empty() {
            let _ = writeln!(
                rules,
                "-A {NAT_CHAIN} -m set --match-set {} src -m set ! --match-set {} dst -j MASQUERADE",
                masq_set(f),
                pools_set(f)
            );
        }
        let _ = writeln!(rules, "COMMIT");
        match f {
            Family::V4 => plan.v4 = rules,
            Family::V6 => plan.v6 = rules,
        }
    }
    plan
}

/// Arguments of the `-C` check for our jump (after `-t nat`).
pub fn jump_check_args() -> [&'static str; 6] {
    ["-t", "nat", "-C", "POSTROUTING", "-j", NAT_CHAIN]
}

/// Inserts the jump at the top of POSTROUTING (before kube-proxy's
/// masquerade, which would otherwise decide first).
pub fn jump_payload() -> String {
    format!("*nat\n-I POSTROUTING 1 -j {NAT_CHAIN}\nCOMMIT\n")
}

/// Why NAT did not apply.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("natOutgoing: ipset restore failed, sets unchanged: {0}")]
    Ipset(#[source] RunError),
    #[error("natOutgoing: {family:?} iptables-restore failed, previous rules kept: {source}")]
    Iptables {
        family: Family,
        #[source]
        source: RunError,
    },
}

/// Applies [`NatPlan`]s through a [`Runner`].
#[derive(Debug)]
pub struct NatApplier {
    runner: Box<dyn Runner>,
    backend: Backend,
    families: Vec<Family>,
    last: Option<NatPlan>,
}

impl NatApplier {
    pub fn new(runner: Box<dyn Runner>, backend: Backend, families: &[Family]) -> Self {
        NatApplier {
            runner,
            backend,
            families: families.to_vec(),
            last: None,
        }
    }

    /// Applies `plan` unless it is what the kernel got last and `force`
    /// is off; the jump is checked every time. Returns whether anything
    /// was sent.
    pub fn apply(&mut self, plan: &NatPlan, force: bool) -> Result<bool, NatError> {
        let same = !force && self.last.as_ref() == Some(plan);
        let mut sent = false;
        if !same {
            // The sets first: the rules reference them.
            self.runner
                .run("ipset", &["restore", "-exist"], Some(&plan.ipset))
                .map_err(|e| {
                    self.last = None;
                    NatError::Ipset(e)
                })?;
            sent = true;
        }
        for &family in &self.families {
            let mut payload = String::new();
            if !same {
                payload.push_str(match family {
                    Family::V4 => &plan.v4,
                    Family::V6 => &plan.v6,
                });
            }
            let has_jump = self
                .runner
                .run(&self.backend.program(family), &jump_check_args(), None)
                .is_ok();
            if !has_jump {
                // The chain must exist before a rule can jump to it (it
                // may have been removed by hand): send it with its rules.
                if same {
                    payload.push_str(match family {
                        Family::V4 => &plan.v4,
                        Family::V6 => &plan.v6,
                    });
                }
                payload.push_str(&jump_payload());
            }
            if payload.is_empty() {
                continue;
            }
            self.runner
                .run(
                    &self.backend.restore_program(family),
                    &["--noflush", "--wait"],
                    Some(&payload),
                )
                .map_err(|source| {
                    self.last = None;
                    NatError::Iptables { family, source }
                })?;
            sent = true;
        }
        self.last = Some(plan.clone());
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn pool(c: &str, nat: bool) -> NatPool {
        NatPool {
            cidr: c.parse().expect("cidr"),
            nat_outgoing: nat,
        }
    }

    #[test]
    fn renders_masquerade_for_nat_pools_only() {
        let plan = render(&[
            pool("10.244.0.0/16", true),
            pool("10.96.0.0/16", false),
            pool("fd00:10::/64", false),
        ]);
        assert_eq!(
            plan.v4,
            "*nat\n:TORTIE-NAT-OUTGOING - [0:0]\n\
             -A TORTIE-NAT-OUTGOING -m set --match-set tortie-masq4 src -m set ! --match-set tortie-pools4 dst -j MASQUERADE\n\
             COMMIT\n"
        );
        // No natOutgoing v6 pool: the chain exists, empty.
        assert_eq!(plan.v6, "*nat\n:TORTIE-NAT-OUTGOING - [0:0]\nCOMMIT\n");
        assert!(plan.ipset.contains("add tortie-masq4-new 10.244.0.0/16\n"));
        assert!(!plan.ipset.contains("add tortie-masq4-new 10.96.0.0/16"));
        assert!(plan.ipset.contains("add tortie-pools4-new 10.96.0.0/16\n"));
        assert!(plan.ipset.contains("add tortie-pools6-new fd00:10::/64\n"));
        assert!(plan
            .ipset
            .contains("create tortie-pools6 hash:net family inet6\n"));
        assert!(plan.ipset.contains("swap tortie-masq4-new tortie-masq4\n"));
    }

    #[test]
    fn render_is_deterministic_and_never_uses_policy_prefixes() {
        let a = render(&[pool("10.244.1.0/24", true), pool("10.244.0.0/24", true)]);
        let b = render(&[
            pool("10.244.0.0/24", true),
            pool("10.244.1.0/24", true),
            pool("10.244.0.0/24", true),
        ]);
        assert_eq!(a, b);
        for name in [
            NAT_CHAIN,
            masq_set(Family::V4),
            pools_set(Family::V6),
            "tortie-masq4-new",
        ] {
            assert!(!name.starts_with(tortie_policy::naming::CHAIN_PREFIX));
            assert!(!name.starts_with(tortie_policy::naming::SET_PREFIX));
            assert!(name.len() <= 31);
        }
    }

    #[derive(Debug, Default, Clone)]
    struct Recorder {
        calls: Arc<Mutex<Vec<String>>>,
        jump_present: bool,
    }

    impl Runner for Recorder {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            stdin: Option<&str>,
        ) -> Result<String, RunError> {
            let line = format!("{program} {} <<{}", args.join(" "), stdin.unwrap_or(""));
            self.calls.lock().expect("lock").push(line);
            if args.contains(&"-C") && !self.jump_present {
                return Err(RunError::Failed {
                    command: program.into(),
                    status: "1".into(),
                    stderr: "no such rule".into(),
                });
            }
            Ok(String::new())
        }
    }

    #[test]
    fn applier_sends_sets_rules_and_missing_jump_then_only_checks() {
        let rec = Recorder::default();
        let calls = Arc::clone(&rec.calls);
        let mut a = NatApplier::new(Box::new(rec), Backend::Nft, &[Family::V4]);
        let plan = render(&[pool("10.244.0.0/16", true)]);
        assert!(a.apply(&plan, false).expect("apply"));
        let c = calls.lock().expect("lock").clone();
        assert_eq!(c.len(), 3, "{c:#?}");
        assert!(c[0].starts_with("ipset restore -exist <<create tortie-masq4"));
        assert!(c[1].starts_with("iptables-nft -t nat -C POSTROUTING -j TORTIE-NAT-OUTGOING"));
        assert!(
            c[2].starts_with("iptables-nft-restore --noflush --wait <<*nat\n:TORTIE-NAT-OUTGOING")
        );
        assert!(c[2].ends_with("-I POSTROUTING 1 -j TORTIE-NAT-OUTGOING\nCOMMIT\n"));

        // Same plan, jump present: only the check runs.
        let rec = Recorder {
            calls: Arc::clone(&calls),
            jump_present: true,
        };
        a.runner = Box::new(rec);
        calls.lock().expect("lock").clear();
        assert!(!a.apply(&plan, false).expect("apply"));
        assert_eq!(calls.lock().expect("lock").len(), 1);
    }
}
