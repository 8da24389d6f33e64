//! Errors of the policy core: one object rejected, with the field that made
//! it invalid. A rejected policy is left out whole; everything else compiles.

/// A NetworkPolicy (or other object) the compiler refused.
///
/// Display: `NetworkPolicy x/deny-all: spec.ingress[0].from[1].ipBlock.cidr: "10.0.0.300/8" is not a CIDR`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {field}: {problem}")]
pub struct PolicyError {
    /// `NetworkPolicy`, `Pod`, ...
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// JSON-ish path of the offending field, e.g. `spec.ingress[0].ports[1].endPort`.
    pub field: String,
    /// What is wrong and, where useful, what would be accepted.
    pub problem: String,
}

impl PolicyError {
    pub fn policy(
        namespace: &str,
        name: &str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        PolicyError {
            kind: "NetworkPolicy",
            namespace: namespace.to_string(),
            name: name.to_string(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A field-local problem, before the object identity is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
