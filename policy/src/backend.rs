//! Which iptables backend tortie programs: iptables-nft or iptables-legacy.
//!
//! Owns the choice, made like the host's other iptables users do it
//! (kubelet, kube-proxy and the `iptables-wrapper` convention): the backend
//! holding the kube canary chains (`KUBE-KUBELET-CANARY`,
//! `KUBE-PROXY-CANARY`) in the mangle table wins; else the backend that
//! holds rules; else the one `iptables` points to (nft on current distros).
//! Rules in both backends at once cannot work (each backend's verdict is
//! final only for itself, so a packet must pass both), so that is reported as
//! a [`BackendError::Conflict`] for status and logs instead of a guess.
//!
//! [`decide`] is pure and takes what each backend's save output contains;
//! [`detect`] is the thin edge that runs the save tools through a
//! [`Runner`](crate::apply::Runner).

use std::fmt;

use crate::apply::Runner;
use crate::ruleset::Family;

/// The kube canary chains that mark the backend kubelet and kube-proxy use.
pub const KUBE_CANARIES: [&str; 2] = ["KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"];

/// An iptables backend: the kernel interface the `iptables*` tools drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `iptables-nft`: the nf_tables kernel API with iptables syntax.
    Nft,
    /// `iptables-legacy`: the x_tables kernel API.
    Legacy,
}

impl Backend {
    /// The backend's name as the `--iptables-backend` flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// `iptables-nft-restore`, `ip6tables-legacy-restore`, ...
    pub fn restore_program(self, family: Family) -> String {
        format!("{}-{}-restore", family_tool(family), self.as_str())
    }

    /// `iptables-nft-save`, `ip6tables-legacy-save`, ...
    pub fn save_program(self, family: Family) -> String {
        format!("{}-{}-save", family_tool(family), self.as_str())
    }

    /// `iptables-nft`, `ip6tables-legacy`, ... (for `-C` checks)
    pub fn program(self, family: Family) -> String {
        format!("{}-{}", family_tool(family), self.as_str())
    }
}

fn family_tool(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nft" => Ok(Backend::Nft),
            "legacy" => Ok(Backend::Legacy),
            other => Err(BackendError::UnknownName(other.to_string())),
        }
    }
}

/// What one backend's save output shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The backend's tools ran (a missing `iptables-legacy-save` is "empty").
    pub available: bool,
    /// Kube canary chains found in the mangle table.
    pub canaries: Vec<String>,
    /// Rules (`-A` lines) that are not tortie's own.
    pub foreign_rules: usize,
    /// tortie's own chains (`TORT-*`) exist.
    pub has_tortie_chains: bool,
}

impl Observation {
    /// Reads an `iptables-save` output (any tables, typically the mangle
    /// table plus the full dump concatenated).
    pub fn from_save_output(save: &str) -> Self {
        let mut obs = Observation {
            available: true,
            ..Observation::default()
        };
        for line in save.lines() {
            if let Some(chain) = line.strip_prefix(':') {
                let name = chain.split_whitespace().next().unwrap_or_default();
                if KUBE_CANARIES.contains(&name) && !obs.canaries.iter().any(|c| c == name) {
                    obs.canaries.push(name.to_string());
                }
                if name.starts_with("TORT-") {
                    obs.has_tortie_chains = true;
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let mut words = rule.split_whitespace();
                let chain = words.next().unwrap_or_default();
                let ours = chain.starts_with("TORT-") || words.any(|w| w.starts_with("TORT-"));
                if !ours {
                    obs.foreign_rules += 1;
                }
            }
        }
        obs.canaries.sort();
        obs
    }

    fn has_foreign(&self) -> bool {
        !self.canaries.is_empty() || self.foreign_rules > 0
    }
}

/// The backend chosen and why (for logs and status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backend: Backend,
    pub reason: String,
}

/// Errors choosing a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Both backends hold state that a single choice cannot serve.
    #[error("iptables backend conflict: {0}; fix the host or pass --iptables-backend nft|legacy")]
    Conflict(String),
    #[error("unknown iptables backend {0:?} (expected nft or legacy)")]
    UnknownName(String),
}

/// Chooses the backend from what each backend holds. `default` is what the
/// plain `iptables` command points to; `forced` is the operator's override.
pub fn decide(
    nft: &Observation,
    legacy: &Observation,
    default: Backend,
    forced: Option<Backend>,
) -> Result<Decision, BackendError> {
    if let Some(backend) = forced {
        return Ok(Decision {
            backend,
            reason: format!("forced by --iptables-backend {backend}"),
        });
    }
    match (nft.canaries.is_empty(), legacy.canaries.is_empty()) {
        (false, false) => {
            return Err(BackendError::Conflict(format!(
                "kube canary chains in both backends (nft: {}; legacy: {})",
                nft.canaries.join(","),
                legacy.canaries.join(",")
            )))
        }
        (false, true) => return with_canaries(Backend::Nft, nft, legacy),
        (true, false) => return with_canaries(Backend::Legacy, legacy, nft),
        (true, true) => {}
    }
    match (nft.foreign_rules > 0, legacy.foreign_rules > 0) {
        (true, true) => Err(BackendError::Conflict(format!(
            "both backends hold rules (nft: {}, legacy: {}) and neither has kube canary chains",
            nft.foreign_rules, legacy.foreign_rules
        ))),
        (true, false) => Ok(Decision {
            backend: Backend::Nft,
            reason: format!("only nft holds rules ({})", nft.foreign_rules),
        }),
        (false, true) => Ok(Decision {
            backend: Backend::Legacy,
            reason: format!("only legacy holds rules ({})", legacy.foreign_rules),
        }),
        (false, false) => match (nft.has_tortie_chains, legacy.has_tortie_chains) {
            // Our own chains from a previous run: stay where they are.
            (true, false) => Ok(Decision {
                backend: Backend::Nft,
                reason: "no other rules; tortie's chains already in nft".to_string(),
            }),
            (false, true) => Ok(Decision {
                backend: Backend::Legacy,
                reason: "no other rules; tortie's chains already in legacy".to_string(),
            }),
            _ => Ok(Decision {
                backend: default,
                reason: format!("no rules in either backend; `iptables` points to {default}"),
            }),
        },
    }
}

fn with_canaries(
    backend: Backend,
    chosen: &Observation,
    other: &Observation,
) -> Result<Decision, BackendError> {
    if other.has_foreign() {
        let other_name = match backend {
            Backend::Nft => Backend::Legacy,
            Backend::Legacy => Backend::Nft,
        };
        return Err(BackendError::Conflict(format!(
            "kube canary chains in {backend} but {} rules in {other_name}",
            other.foreign_rules
        )));
    }
    Ok(Decision {
        backend,
        reason: format!(
            "kube canary chains in {backend} ({})",
            chosen.canaries.join(",")
        ),
    })
}

/// Probes both backends through `runner` (the edge) and decides.
pub fn detect(runner: &dyn Runner, forced: Option<Backend>) -> Result<Decision, BackendError> {
    if let Some(backend) = forced {
        return decide(
            &Observation::default(),
            &Observation::default(),
            backend,
            Some(backend),
        );
    }
    let observe = |backend: Backend| -> Observation {
        let program = backend.save_program(Family::V4);
        let Ok(all) = runner.run(&program, &[], None) else {
            return Observation::default();
        };
        Observation::from_save_output(&all)
    };
    let default = match runner.run("iptables", &["--version"], None) {
        Ok(v) if v.contains("legacy") => Backend::Legacy,
        _ => Backend::Nft,
    };
    decide(
        &observe(Backend::Nft),
        &observe(Backend::Legacy),
        default,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE_MANGLE: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n\
        :KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n";
    const SOME_RULES: &str = "*filter\n:INPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
        -A INPUT -j DOCKER\n-A DOCKER -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
    const OURS: &str = "*filter\n:INPUT ACCEPT [0:0]\n:TORT-INPUT - [0:0]\n\
        -A INPUT -j TORT-INPUT\n-A TORT-INPUT -j ACCEPT\nCOMMIT\n";
    const EMPTY: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n";

    fn obs(s: &str) -> Observation {
        Observation::from_save_output(s)
    }

    #[test]
    fn observation_reads_canaries_and_rules() {
        let o = obs(&format!("{KUBE_MANGLE}{SOME_RULES}{OURS}"));
        assert_eq!(o.canaries, vec!["KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"]);
        assert_eq!(o.foreign_rules, 2);
        assert!(o.has_tortie_chains);
        let e = obs(EMPTY);
        assert!(e.canaries.is_empty() && e.foreign_rules == 0 && !e.has_tortie_chains);
    }

    #[test]
    fn canaries_win_over_default() {
        let d = decide(&obs(EMPTY), &obs(KUBE_MANGLE), Backend::Nft, None).unwrap();
        assert_eq!(d.backend, Backend::Legacy);
        let d = decide(&obs(KUBE_MANGLE), &obs(EMPTY), Backend::Legacy, None).unwrap();
        assert_eq!(d.backend, Backend::Nft);
    }

    #[test]
    fn canaries_in_both_is_a_conflict() {
        let e = decide(&obs(KUBE_MANGLE), &obs(KUBE_MANGLE), Backend::Nft, None).unwrap_err();
        assert!(e.to_string().contains("both backends"), "{e}");
    }

    #[test]
    fn canaries_in_one_rules_in_other_is_a_conflict() {
        let e = decide(&obs(KUBE_MANGLE), &obs(SOME_RULES), Backend::Nft, None).unwrap_err();
        assert!(e.to_string().contains("canary chains in nft"), "{e}");
        assert!(e.to_string().contains("--iptables-backend"), "{e}");
    }

    #[test]
    fn our_own_chains_elsewhere_are_not_a_conflict() {
        let d = decide(&obs(KUBE_MANGLE), &obs(OURS), Backend::Nft, None).unwrap();
        assert_eq!(d.backend, Backend::Nft);
    }

    #[test]
    fn rules_decide_without_canaries() {
        let d = decide(&obs(EMPTY), &obs(SOME_RULES), Backend::Nft, None).unwrap();
        assert_eq!(d.backend, Backend::Legacy);
        assert!(decide(&obs(SOME_RULES), &obs(SOME_RULES), Backend::Nft, None).is_err());
    }

    #[test]
    fn empty_hosts_use_default_or_our_previous_choice() {
        let d = decide(&obs(EMPTY), &Observation::default(), Backend::Nft, None).unwrap();
        assert_eq!(d.backend, Backend::Nft);
        let d = decide(&obs(EMPTY), &obs(EMPTY), Backend::Legacy, None).unwrap();
        assert_eq!(d.backend, Backend::Legacy);
        let d = decide(&obs(EMPTY), &obs(OURS), Backend::Nft, None).unwrap();
        assert_eq!(d.backend, Backend::Legacy);
    }

    #[test]
    fn override_wins_even_over_conflicts() {
        let d = decide(
            &obs(KUBE_MANGLE),
            &obs(KUBE_MANGLE),
            Backend::Nft,
            Some(Backend::Legacy),
        )
        .unwrap();
        assert_eq!(d.backend, Backend::Legacy);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!("nft".parse::<Backend>().unwrap(), Backend::Nft);
        assert_eq!("legacy".parse::<Backend>().unwrap(), Backend::Legacy);
        assert!("xt".parse::<Backend>().is_err());
        assert_eq!(
            Backend::Legacy.restore_program(Family::V6),
            "ip6tables-legacy-restore"
        );
    }
}
