//! Import and export filters, and the max-prefix limit.
//!
//! A [`Filter`] is an ordered list of rules; the first rule whose every
//! condition holds decides, else the filter's default. Conditions: the
//! prefix (exact, or inside a CIDR with a length between `ge` and `le`),
//! a community, a large community. An accepting rule may add communities
//! and large communities (used on export; on import the RIB ignores them
//! so that all NLRI of one UPDATE keep sharing one attribute set).

use super::attrs::PathAttrs;
use super::prefix::contains;
use super::PeerId;
use crate::wire::{CeaseSubcode, Community, Family, LargeCommunity, Notification, Prefix};

/// What a rule or a filter's default does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Action {
    /// Let the route through.
    #[default]
    Accept,
    /// Drop it.
    Reject,
}

/// A prefix condition.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PrefixMatch {
    /// Exactly this prefix.
    Exact(Prefix),
    /// Inside `cidr` (or `cidr` itself) with length in `ge..=le`.
    Within {
        /// The covering prefix.
        cidr: Prefix,
        /// Shortest length matched.
        ge: u8,
        /// Longest length matched.
        le: u8,
    },
}

impl PrefixMatch {
    /// `cidr` with `ge` defaulting to its length and `le` to the family
    /// maximum, as router configs spell "cidr le 32".
    pub fn within(cidr: Prefix, ge: Option<u8>, le: Option<u8>) -> Self {
        let max = if cidr.is_ipv6() { 128 } else { 32 };
        PrefixMatch::Within {
            cidr,
            ge: ge.unwrap_or(cidr.prefix_len()),
            le: le.unwrap_or(max),
        }
    }

    /// Whether `p` matches.
    pub fn matches(&self, p: Prefix) -> bool {
        match *self {
            PrefixMatch::Exact(q) => p == q,
            PrefixMatch::Within { cidr, ge, le } => {
                contains(cidr, p) && (ge..=le).contains(&p.prefix_len())
            }
        }
    }
}

/// The conditions of a rule; all that are set must hold.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Match {
    /// Prefix condition.
    pub prefix: Option<PrefixMatch>,
    /// The route carries this community.
    pub community: Option<Community>,
    /// The route carries this large community.
    pub large_community: Option<LargeCommunity>,
}

impl Match {
    /// Whether the route matches.
    pub fn matches(&self, prefix: Prefix, attrs: &PathAttrs) -> bool {
        self.prefix.is_none_or(|m| m.matches(prefix))
            && self
                .community
                .is_none_or(|c| attrs.communities.contains(&c))
            && self
                .large_community
                .is_none_or(|c| attrs.large_communities.contains(&c))
    }

    /// Whether the condition looks at attributes (not only the prefix).
    fn uses_attrs(&self) -> bool {
        self.community.is_some() || self.large_community.is_some()
    }
}

/// One filter rule.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Rule {
    /// When the rule applies.
    pub matches: Match,
    /// What it does.
    pub action: Action,
    /// Communities added to an accepted route (export).
    pub add_communities: Vec<Community>,
    /// Large communities added to an accepted route (export).
    pub add_large_communities: Vec<LargeCommunity>,
}

impl Rule {
    /// A rule with only a prefix condition.
    pub fn prefix(m: PrefixMatch, action: Action) -> Self {
        Rule {
            matches: Match {
                prefix: Some(m),
                ..Match::default()
            },
            action,
            ..Rule::default()
        }
    }

    fn modifies(&self) -> bool {
        !self.add_communities.is_empty() || !self.add_large_communities.is_empty()
    }
}

/// An import or export filter.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Filter {
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Action when no rule matches.
    pub default: Action,
}

/// A filter's decision on one route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict<'a> {
    /// Accepted, by this rule (None: by the default).
    Accept(Option<&'a Rule>),
    /// Rejected.
    Reject,
}

impl Filter {
    /// The filter that accepts everything.
    pub fn accept_all() -> Self {
        Filter::default()
    }

    /// The filter that rejects everything.
    pub fn reject_all() -> Self {
        Filter {
            rules: Vec::new(),
            default: Action::Reject,
        }
    }

    /// Whether the filter accepts everything without looking.
    pub fn is_accept_all(&self) -> bool {
        self.rules.is_empty() && self.default == Action::Accept
    }

    /// Whether any rule reads attributes (if not, one verdict per prefix
    /// holds for every attribute set).
    pub fn uses_attrs(&self) -> bool {
        self.rules.iter().any(|r| r.matches.uses_attrs())
    }

    /// Evaluates the route.
    pub fn evaluate(&self, prefix: Prefix, attrs: &PathAttrs) -> Verdict<'_> {
        for r in &self.rules {
            if r.matches.matches(prefix, attrs) {
                return match r.action {
                    Action::Accept => Verdict::Accept(Some(r)),
                    Action::Reject => Verdict::Reject,
                };
            }
        }
        match self.default {
            Action::Accept => Verdict::Accept(None),
            Action::Reject => Verdict::Reject,
        }
    }

    /// Applies an accepting rule's modifications; `None` when the rule
    /// changes nothing (the caller keeps its shared attribute set).
    pub fn modify(rule: Option<&Rule>, attrs: &PathAttrs) -> Option<PathAttrs> {
        let rule = rule.filter(|r| r.modifies())?;
        let mut out = attrs.clone();
        for c in &rule.add_communities {
            if !out.communities.contains(c) {
                out.communities.push(*c);
            }
        }
        for c in &rule.add_large_communities {
            if !out.large_communities.contains(c) {
                out.large_communities.push(*c);
            }
        }
        Some(out)
    }
}

/// What to do when a peer sends more prefixes than allowed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum MaxPrefixAction {
    /// Close the session with Cease / Maximum Number of Prefixes Reached
    /// (RFC 4486 §4).
    #[default]
    Cease,
    /// Only report it (log, status); keep the session and the routes.
    Warn,
}

/// The max-prefix limit of a peer: accepted routes (after import policy,
/// all families, all path ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MaxPrefix {
    /// The most routes allowed.
    pub limit: u32,
    /// What crossing it does.
    pub action: MaxPrefixAction,
}

/// A peer crossed its max-prefix limit. Reported once per crossing; the
/// speaker acts on it (sends the NOTIFICATION and closes, or warns).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MaxPrefixExceeded {
    /// The peer.
    pub peer: PeerId,
    /// The family of the route that crossed the limit.
    pub family: Family,
    /// The configured limit.
    pub limit: u32,
    /// The count that crossed it.
    pub count: u32,
    /// The configured action.
    pub action: MaxPrefixAction,
}

impl MaxPrefixExceeded {
    /// The NOTIFICATION to send when the action is Cease: Cease / Maximum
    /// Number of Prefixes Reached with AFI (2 octets), SAFI (1) and the
    /// upper bound (4), as RFC 4486 §4 suggests.
    pub fn notification(&self) -> Option<Notification> {
        if self.action != MaxPrefixAction::Cease {
            return None;
        }
        let mut n = Notification::cease(CeaseSubcode::MaxPrefixesReached);
        n.data = self.family.afi.0.to_be_bytes().to_vec();
        n.data.push(self.family.safi.0);
        n.data.extend_from_slice(&self.limit.to_be_bytes());
        Some(n)
    }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn exact_and_ge_le() {
        let exact = PrefixMatch::Exact(p("10.0.0.0/8"));
        assert!(exact.matches(p("10.0.0.0/8")));
        assert!(!exact.matches(p("10.0.0.0/9")));
        let range = PrefixMatch::within(p("10.244.0.0/16"), Some(24), Some(26));
        assert!(range.matches(p("10.244.1.0/24")));
        assert!(range.matches(p("10.244.1.64/26")));
        assert!(!range.matches(p("10.244.1.0/27")));
        assert!(!range.matches(p("10.244.0.0/16")));
        assert!(!range.matches(p("10.245.0.0/24")));
        assert!(!range.matches(p("2001:db8::/32")));
        let le = PrefixMatch::within(p("2001:db8::/32"), None, None);
        assert!(le.matches(p("2001:db8:1::/48")));
        assert!(le.matches(p("2001:db8::/32")));
    }

    #[test]
    fn first_match_wins_then_default() {
        let f = Filter {
            rules: vec![
                Rule::prefix(PrefixMatch::Exact(p("10.0.0.0/24")), Action::Reject),
                Rule::prefix(
                    PrefixMatch::within(p("10.0.0.0/8"), None, None),
                    Action::Accept,
                ),
            ],
            default: Action::Reject,
        };
        let a = PathAttrs::local();
        assert_eq!(f.evaluate(p("10.0.0.0/24"), &a), Verdict::Reject);
        assert!(matches!(
            f.evaluate(p("10.0.1.0/24"), &a),
            Verdict::Accept(Some(_))
        ));
        assert_eq!(f.evaluate(p("11.0.0.0/24"), &a), Verdict::Reject);
    }

    #[test]
    fn community_and_large_community_match_and_set() {
        let c = Community::new(65000, 7);
        let lc = LargeCommunity {
            global_admin: 65000,
            local1: 1,
            local2: 2,
        };
        let f = Filter {
            rules: vec![Rule {
                matches: Match {
                    community: Some(c),
                    large_community: Some(lc),
                    ..Match::default()
                },
                action: Action::Accept,
                ..Rule::default()
            }],
            default: Action::Reject,
        };
        let mut a = PathAttrs {
            communities: vec![c],
            ..PathAttrs::local()
        };
        assert_eq!(f.evaluate(p("10.0.0.0/8"), &a), Verdict::Reject);
        a.large_communities.push(lc);
        assert!(matches!(
            f.evaluate(p("10.0.0.0/8"), &a),
            Verdict::Accept(_)
        ));

        let set = Rule {
            add_communities: vec![Community::new(1, 2), c],
            add_large_communities: vec![lc],
            ..Rule::default()
        };
        let out = Filter::modify(Some(&set), &PathAttrs::local()).unwrap();
        assert_eq!(out.communities, vec![Community::new(1, 2), c]);
        assert_eq!(out.large_communities, vec![lc]);
        assert_eq!(Filter::modify(None, &out), None);
    }

    #[test]
    fn max_prefix_notification_data() {
        let e = MaxPrefixExceeded {
            peer: PeerId(0),
            family: Family::IPV6_UNICAST,
            limit: 1000,
            count: 1001,
            action: MaxPrefixAction::Cease,
        };
        let n = e.notification().unwrap();
        assert_eq!(n.code, crate::wire::ErrorCode::Cease);
        assert_eq!(n.subcode, 1);
        assert_eq!(n.data, vec![0, 2, 1, 0, 0, 0x03, 0xe8]);
        let w = MaxPrefixExceeded {
            action: MaxPrefixAction::Warn,
            ..e
        };
        assert_eq!(w.notification(), None);
    }
}
