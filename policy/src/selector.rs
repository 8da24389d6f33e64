//! Kubernetes label selectors: validation, canonical form, matching.
//!
//! A [`Selector`] is the validated, canonical (sorted) form of a
//! `LabelSelector`; its [`Selector::canonical`] text is the identity used to
//! share one ipset between identical peers. The empty selector matches
//! everything, as the API documents.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::FieldError;

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A validated label selector (matchLabels AND matchExpressions).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    requirements: BTreeSet<Requirement>,
}

impl Selector {
    /// The empty selector: matches every object.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Validates `sel` (found at `field`) as the API server would.
    pub fn parse(sel: &LabelSelector, field: &str) -> Result<Selector, FieldError> {
        let mut out = Selector::default();
        if let Some(labels) = &sel.match_labels {
            for (k, v) in labels {
                let f = format!("{field}.matchLabels");
                check_key(k).map_err(|p| FieldError::new(&f, format!("key {k:?}: {p}")))?;
                check_value(v)
                    .map_err(|p| FieldError::new(&f, format!("value {v:?} of key {k:?}: {p}")))?;
                out.labels.insert(k.clone(), v.clone());
            }
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            check_key(&e.key)
                .map_err(|p| FieldError::new(format!("{f}.key"), format!("{:?}: {p}", e.key)))?;
            let values = e.values.as_deref().unwrap_or(&[]);
            let set = || -> Result<BTreeSet<String>, FieldError> {
                if values.is_empty() {
                    return Err(FieldError::new(
                        format!("{f}.values"),
                        format!("operator {} needs at least one value", e.operator),
                    ));
                }
                for (j, v) in values.iter().enumerate() {
                    check_value(v).map_err(|p| {
                        FieldError::new(format!("{f}.values[{j}]"), format!("{v:?}: {p}"))
                    })?;
                }
                Ok(values.iter().cloned().collect())
            };
            let no_values = || -> Result<(), FieldError> {
                if values.is_empty() {
                    Ok(())
                } else {
                    Err(FieldError::new(
                        format!("{f}.values"),
                        format!("operator {} takes no values", e.operator),
                    ))
                }
            };
            let req = match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), set()?),
                "NotIn" => Requirement::NotIn(e.key.clone(), set()?),
                "Exists" => {
                    no_values()?;
                    Requirement::Exists(e.key.clone())
                }
                "DoesNotExist" => {
                    no_values()?;
                    Requirement::DoesNotExist(e.key.clone())
                }
                other => {
                    return Err(FieldError::new(
                        format!("{f}.operator"),
                        format!(
                            "{other:?} is not a valid operator (In, NotIn, Exists, DoesNotExist)"
                        ),
                    ))
                }
            };
            out.requirements.insert(req);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Canonical text, e.g. `app=web,tier in (a,b),!legacy`; `{}` when empty.
    pub fn canonical(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("{}");
        }
        let mut parts: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.requirements {
            parts.push(match r {
                Requirement::In(k, vs) => format!("{k} in ({})", join(vs)),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", join(vs)),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            });
        }
        f.write_str(&parts.join(","))
    }
}

fn join(vs: &BTreeSet<String>) -> String {
    vs.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn check_name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let ok = match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first)
                && alnum(last)
                && bytes
                    .iter()
                    .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into())
    }
}

/// DNS-1123 subdomain: lowercase labels of `[a-z0-9-]` joined by '.', <= 253.
fn check_dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(e)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (e.is_ascii_lowercase() || e.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        });
    if ok {
        Ok(())
    } else {
        Err("prefix must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253 characters)".into())
    }
}

/// A label key: `[prefix/]name`.
pub fn check_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            check_dns_subdomain(prefix)?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("name part must not be empty".into());
    }
    check_name_part(name)
}

/// A label value: empty, or a name part.
pub fn check_value(value: &str) -> Result<(), String> {
    check_name_part(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|vs| vs.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: if ml.is_empty() {
                None
            } else {
                Some(labels(ml))
            },
            match_expressions: if exprs.is_empty() { None } else { Some(exprs) },
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::parse(&LabelSelector::default(), "spec.podSelector").expect("valid");
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
        assert_eq!(s.canonical(), "{}");
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = Selector::parse(
            &sel(
                &[("app", "web")],
                vec![
                    expr("tier", "In", Some(&["a", "b"])),
                    expr("env", "NotIn", Some(&["prod"])),
                    expr("team", "Exists", None),
                    expr("legacy", "DoesNotExist", Some(&[])),
                ],
            ),
            "f",
        )
        .expect("valid");
        let good = labels(&[("app", "web"), ("tier", "a"), ("team", "x")]);
        assert!(s.matches(&good));
        let mut l = good.clone();
        l.insert("env".into(), "prod".into());
        assert!(!s.matches(&l), "NotIn excludes the value");
        l.insert("env".into(), "dev".into());
        assert!(s.matches(&l), "NotIn allows other values");
        let mut l = good.clone();
        l.insert("legacy".into(), "".into());
        assert!(!s.matches(&l), "DoesNotExist");
        let mut l = good.clone();
        l.remove("team");
        assert!(!s.matches(&l), "Exists");
        let mut l = good;
        l.insert("tier".into(), "c".into());
        assert!(!s.matches(&l), "In");
        assert_eq!(
            s.canonical(),
            "app=web,tier in (a,b),env notin (prod),team,!legacy"
        );
    }

    #[test]
    fn invalid_selectors_name_the_field() {
        let cases = [
            (
                sel(&[], vec![expr("a", "Equals", Some(&["x"]))]),
                "f.matchExpressions[0].operator",
            ),
            (
                sel(&[], vec![expr("a", "In", Some(&[]))]),
                "f.matchExpressions[0].values",
            ),
            (
                sel(&[], vec![expr("a", "NotIn", None)]),
                "f.matchExpressions[0].values",
            ),
            (
                sel(&[], vec![expr("a", "Exists", Some(&["x"]))]),
                "f.matchExpressions[0].values",
            ),
            (
                sel(&[], vec![expr("-a", "Exists", None)]),
                "f.matchExpressions[0].key",
            ),
            (
                sel(&[], vec![expr("a", "In", Some(&["ok", "bad value"]))]),
                "f.matchExpressions[0].values[1]",
            ),
            (sel(&[("Bad_Prefix/x", "v")], vec![]), "f.matchLabels"),
            (sel(&[("k", &"v".repeat(64))], vec![]), "f.matchLabels"),
            (sel(&[("", "v")], vec![]), "f.matchLabels"),
        ];
        for (s, field) in cases {
            let e = Selector::parse(&s, "f").expect_err("invalid");
            assert_eq!(e.field, field, "{e:?}");
        }
        // Valid edge cases: prefixed keys, empty values.
        Selector::parse(
            &sel(
                &[("kubernetes.io/metadata.name", ""), ("a_b.c-d", "X.y_z-1")],
                vec![],
            ),
            "f",
        )
        .expect("valid");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(key in ".{0,80}", value in ".{0,80}", op in "(In|NotIn|Exists|DoesNotExist|x)") {
            let _ = Selector::parse(&sel(&[(&key, &value)], vec![expr(&key, &op, Some(&[&value]))]), "f");
        }
    }
}
